"""The real py-tgcalls backend's wiring, offline: a kurigram Client that never connects,
py-tgcalls' own update dispatch (filters included) fed with real py-tgcalls update types."""
import asyncio
import types

import ntgcalls
import pytest
from pytgcalls.types import ChatUpdate, Device, Direction, Frame, StreamFrames

from tgvoice_bridge.backend import PyTgCallsBackend
from tgvoice_bridge.telegram import make_client


@pytest.fixture
def backend(tmp_path):
    async def build():      # kurigram wants an event loop at construction
        client = make_client(12345, "0123456789abcdef0123456789abcdef", tmp_path / "t.session")
        return PyTgCallsBackend(client)
    loop = asyncio.new_event_loop()
    b = loop.run_until_complete(build())
    yield b, loop
    loop.close()


def test_updates_reach_the_bridge_callbacks(backend):
    b, loop = backend
    seen = []

    async def incoming(user):
        seen.append(("incoming", user))

    async def ended(chat, reason):
        seen.append(("ended", chat, reason))
    b.on_incoming_call, b.on_call_ended = incoming, ended
    b.on_frames = lambda chat, frames: seen.append(("frames", chat, [(f.ssrc, f.frame) for f in frames]))

    async def feed():
        p = b.calls._propagate
        await p(ChatUpdate(42, ChatUpdate.Status.INCOMING_CALL), b.calls)
        await p(ChatUpdate(42, ChatUpdate.Status.DISCARDED_CALL), b.calls)
        await p(ChatUpdate(42, ChatUpdate.Status.DISCARDED_CALL | ChatUpdate.Status.BUSY_CALL), b.calls)
        await p(ChatUpdate(-100, ChatUpdate.Status.CLOSED_VOICE_CHAT), b.calls)
        await p(StreamFrames(42, Direction.INCOMING, Device.MICROPHONE, [Frame(7, b"\x01\x02" * 480, Frame.Info())]), b.calls)
        await p(StreamFrames(42, Direction.OUTGOING, Device.MICROPHONE, [Frame(8, b"\x03\x04" * 480, Frame.Info())]), b.calls)
        await asyncio.sleep(0.01)       # incoming calls are handled in their own task
    loop.run_until_complete(feed())
    assert seen.count(("incoming", 42)) == 1
    assert [x for x in seen if x[0] != "incoming"] == [
        ("ended", 42, "hung-up"), ("ended", 42, "busy"), ("ended", -100, "voice-chat-closed"),
        ("frames", 42, [(7, b"\x01\x02" * 480)])]


def test_a_failed_connection_counts_as_dropped_when_polling(backend):
    b, loop = backend

    async def scenario():
        state = types.SimpleNamespace(state=ntgcalls.ConnectionState.FAILED)
        await b.calls._handle_connection_changed(-100, state)       # py-tgcalls' own handler runs too
        assert -100 in b.lost
        await b.calls._handle_connection_changed(-100, types.SimpleNamespace(state=ntgcalls.ConnectionState.CONNECTED))
        assert -100 not in b.lost
    loop.run_until_complete(scenario())


def test_stream_descriptions_are_external_48k_mono(backend):
    from pytgcalls.methods.utilities.stream_params import StreamParams
    send, record = PyTgCallsBackend._streams()
    loop = backend[1]
    s = loop.run_until_complete(StreamParams.get_stream_params(send))
    r = loop.run_until_complete(StreamParams.get_record_params(record))
    for d in (s.microphone, r.microphone):
        assert d.media_source == ntgcalls.MediaSource.EXTERNAL
        assert d.sample_rate == 48000 and d.channel_count == 1
    assert s.camera is None and s.screen is None and r.camera is None


def test_voice_notes_and_text_reach_on_message_with_their_chat_facts(backend):
    """kurigram's own MessageHandler and filters, fed real pyrogram Message objects."""
    from pyrogram import enums, types as pt
    from pyrogram.handlers import MessageHandler
    b, loop = backend
    seen = []

    async def on_message(m):
        seen.append(m)
    b.on_message = on_message
    handlers = [h for group in b.client.dispatcher.groups.values() for h in group if isinstance(h, MessageHandler)]
    assert len(handlers) == 1

    def msg(mid, chat, ctype, **kw):
        return pt.Message(id=mid, chat=pt.Chat(id=chat, type=ctype), from_user=pt.User(id=111), **kw)
    voice = pt.Voice(file_id="f", file_unique_id="u", duration=4)
    updates = [msg(1, 111, enums.ChatType.PRIVATE, voice=voice, outgoing=False),
               msg(2, -100, enums.ChatType.SUPERGROUP, voice=voice, mentioned=True, outgoing=False),
               msg(3, 111, enums.ChatType.PRIVATE, text="/reset", outgoing=False),
               msg(4, 111, enums.ChatType.PRIVATE, voice=voice, outgoing=True)]     # our own reply: ignored

    async def feed():
        for u in updates:
            if await handlers[0].check(b.client, u):
                await handlers[0].callback(b.client, u)
    loop.run_until_complete(feed())
    got = [(m.message_id, m.chat_id, m.sender_id, m.private, m.addressed, m.voice, m.duration, m.text) for m in seen]
    assert got == [(1, 111, 111, True, False, True, 4.0, None),
                   (2, -100, 111, False, True, True, 4.0, None),
                   (3, 111, 111, True, False, False, None, "/reset")]
    assert seen[0].handle is updates[0]

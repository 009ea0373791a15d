"""The CallBackend seam: everything the bridge needs from a call stack, and its py-tgcalls
implementation for real Telegram calls.

A backend reports three things through callbacks the bridge sets:
``on_incoming_call(user_id)`` (async), ``on_call_ended(chat_id, reason)`` (async) and
``on_frames(chat_id, frames)`` (sync; ``frames`` are py-tgcalls ``Frame`` objects with
``.ssrc`` and ``.frame``). Chat ids follow py-tgcalls: negative = group voice chat,
positive = private call with that user.

Voice messages (optional, see voicemsg.py): ``on_message(message)`` (async) gets an
``IncomingMessage`` for each incoming voice note or text message; ``download_voice``,
``send_voice`` and ``send_text`` fetch a note and reply in its chat.
"""
import asyncio
import logging
from abc import ABC, abstractmethod

log = logging.getLogger("tg-bridge")


class CallBackend(ABC):
    def __init__(self):
        self.on_incoming_call = None
        self.on_call_ended = None
        self.on_frames = None
        self.on_message = None

    @abstractmethod
    async def start(self): ...

    @abstractmethod
    async def stop(self): ...

    @abstractmethod
    async def join_group(self, chat_id, auto_start): ...

    @abstractmethod
    async def place_call(self, user_id, timeout_s): ...

    @abstractmethod
    async def answer(self, user_id): ...

    @abstractmethod
    async def decline(self, user_id): ...

    @abstractmethod
    async def hang_up(self, chat_id): ...

    @abstractmethod
    async def send_frame(self, chat_id, pcm): ...

    async def resolve(self, peer):
        """A user/chat id for ``peer`` (an id, or a @username where the backend can look it up)."""
        return int(peer)

    async def download_voice(self, message):
        """The voice note's file (bytes)."""
        raise NotImplementedError

    async def send_voice(self, chat_id, ogg, reply_to=None, caption=None, duration=None, waveform=None):
        """Send OGG/Opus bytes as a voice note, as a reply to message ``reply_to``."""
        raise NotImplementedError

    async def send_text(self, chat_id, text, reply_to=None):
        raise NotImplementedError

    @abstractmethod
    async def connected_calls(self):
        """Chat ids the call stack currently holds (polled: py-tgcalls emits no drop event)."""


class PyTgCallsBackend(CallBackend):
    """Real Telegram calls: a kurigram (Pyrogram) user client driven by py-tgcalls 3."""

    def __init__(self, client):
        super().__init__()
        from pytgcalls import PyTgCalls, filters
        from pytgcalls.types import ChatUpdate, Device, Direction

        self.client = client
        self.calls = PyTgCalls(client)
        self.lost = set()     # chats whose connection ntgcalls reported FAILED/TIMEOUT/CLOSED
        self._watch_connection_state()
        self._watch_messages()

        @self.calls.on_update(filters.chat_update(ChatUpdate.Status.INCOMING_CALL))
        async def _incoming(_, update):
            # answering waits for further Telegram updates (the caller's key): never do that
            # inside the update handler that delivered the call
            if self.on_incoming_call:
                asyncio.ensure_future(self.on_incoming_call(update.chat_id))

        @self.calls.on_update(filters.chat_update(ChatUpdate.Status.LEFT_CALL))
        async def _ended(_, update):
            if self.on_call_ended:
                await self.on_call_ended(update.chat_id, _reason(update.status))

        @self.calls.on_update(filters.stream_frame(Direction.INCOMING, Device.MICROPHONE))
        async def _frames(_, update):
            # never str() a StreamFrames: it holds a circular reference
            if self.on_frames:
                self.on_frames(update.chat_id, update.frames)

    def _watch_messages(self):
        """Incoming voice notes and text (for /reset) become ``IncomingMessage``s."""
        from pyrogram import enums, filters as pf
        from pyrogram.handlers import MessageHandler
        from .voicemsg import IncomingMessage

        async def handler(_, message):
            if self.on_message is None or message.from_user is None:
                return
            voice = message.voice
            await self.on_message(IncomingMessage(
                chat_id=message.chat.id, message_id=message.id, sender_id=message.from_user.id,
                private=message.chat.type == enums.ChatType.PRIVATE, addressed=bool(message.mentioned),
                voice=voice is not None, duration=float(voice.duration) if voice and voice.duration else None,
                text=message.text, handle=message))
        self.client.add_handler(MessageHandler(handler, pf.incoming & (pf.voice | pf.text)))

    async def download_voice(self, message):
        f = await self.client.download_media(message.handle, in_memory=True)
        return bytes(f.getbuffer())

    async def send_voice(self, chat_id, ogg, reply_to=None, caption=None, duration=None, waveform=None):
        import io
        from pyrogram.types import ReplyParameters
        f = io.BytesIO(ogg)
        f.name = "reply.ogg"
        await self.client.send_voice(chat_id, f, caption=caption or "", duration=duration or 0, waveform=waveform,
                                     reply_parameters=ReplyParameters(message_id=reply_to) if reply_to else None)

    async def send_text(self, chat_id, text, reply_to=None):
        from pyrogram.types import ReplyParameters
        await self.client.send_message(chat_id, text,
                                       reply_parameters=ReplyParameters(message_id=reply_to) if reply_to else None)

    def _watch_connection_state(self):
        """py-tgcalls turns ntgcalls' connection changes into no public update. Its handler is
        looked up on the instance each time (``start()`` registers a lambda calling
        ``self._handle_connection_changed``), so wrap it to remember lost connections for
        ``connected_calls()``. If a later py-tgcalls renames it, only this extra signal goes:
        polling ``calls`` still works."""
        original = getattr(self.calls, "_handle_connection_changed", None)
        if original is None:
            log.warning("py-tgcalls has no _handle_connection_changed: drops are seen only when the call disappears")
            return
        import ntgcalls
        dead = {ntgcalls.ConnectionState.FAILED, ntgcalls.ConnectionState.TIMEOUT, ntgcalls.ConnectionState.CLOSED}

        async def watched(chat_id, net_state):
            if net_state.state in dead:
                self.lost.add(chat_id)
            elif net_state.state == ntgcalls.ConnectionState.CONNECTED:
                self.lost.discard(chat_id)
            await original(chat_id, net_state)
        self.calls._handle_connection_changed = watched

    @staticmethod
    def _streams():
        from pytgcalls.types import ExternalMedia, MediaStream, RecordStream
        from pytgcalls.types.raw import AudioParameters
        params = AudioParameters(48000, 1)
        return (MediaStream(ExternalMedia.AUDIO, params, video_flags=MediaStream.Flags.IGNORE),
                RecordStream(True, params))

    async def start(self):
        # An unauthorised session would make Pyrogram prompt for a phone number on stdin;
        # a daemon must say what to do instead.
        if not await self.client.connect():
            await self.client.disconnect()
            from .telegram import SessionMissing
            raise SessionMissing("the Telegram session is not logged in (expired or revoked?): run `tg-bridge login`")
        await self.client.disconnect()
        await self.calls.start()

    async def stop(self):
        if self.client.is_connected:
            await self.client.stop()

    async def _play_and_record(self, chat_id, config):
        self.lost.discard(chat_id)
        send, record = self._streams()
        await self.calls.play(chat_id, send, config)
        await self.calls.record(chat_id, record)

    async def join_group(self, chat_id, auto_start):
        from pytgcalls.types import GroupCallConfig
        await self._play_and_record(chat_id, GroupCallConfig(auto_start=auto_start))

    async def place_call(self, user_id, timeout_s):
        from pytgcalls.types import CallConfig
        await self._play_and_record(user_id, CallConfig(timeout=timeout_s))

    async def answer(self, user_id):
        from pytgcalls.types import CallConfig
        await self._play_and_record(user_id, CallConfig())

    async def decline(self, user_id):
        await self.calls.leave_call(user_id)

    async def hang_up(self, chat_id):
        await self.calls.leave_call(chat_id)

    async def send_frame(self, chat_id, pcm):
        from pytgcalls.types import Device
        await self.calls.send_frame(chat_id, Device.MICROPHONE, pcm)

    async def connected_calls(self):
        return set((await self.calls.calls).keys()) - self.lost

    async def resolve(self, peer):
        try:
            return int(peer)
        except ValueError:
            return await self.calls.resolve_chat_id(peer)


def _reason(status):
    from pytgcalls.types import ChatUpdate
    S = ChatUpdate.Status
    for flag, name in ((S.BUSY_CALL, "busy"), (S.DISCARDED_CALL, "hung-up"), (S.KICKED, "kicked"),
                       (S.CLOSED_VOICE_CHAT, "voice-chat-closed"), (S.LEFT_GROUP, "left-group")):
        if status & flag:
            return name
    return "ended"

"""Call lifecycle against the fake CallBackend: allowlist, call-start/end events, call end,
drop detection by polling, group rejoin, hang-up on stop, incoming audio routing."""
import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pytgcalls.types import Device, Direction, Frame, StreamFrames

from conftest import FakeCallBackend, FifoDrain
import tgvoice_frames
from tgvoice_bridge.bridge import Bridge
from tgvoice_bridge.media import mix


def events_in(data):
    out, buf = [], io.BytesIO(data)
    while (f := tgvoice_frames.read_frame(buf)) is not None:
        assert f[0] == "event"
        out.append(f[1])
    return out


async def settle(s=0.05):
    await asyncio.sleep(s)


def test_allowlist_answers_allowed_declines_others_and_declines_while_busy(fake_backend, run_dir, drain):
    control = drain(run_dir / "control.frames")

    async def scenario():
        b = Bridge(fake_backend, run_dir, mode="answer", allow=["111", "222"], greeting="Operator.")
        await b.start()
        await fake_backend.ring(999)            # stranger
        await fake_backend.ring(111)            # allowed
        await fake_backend.ring(222)            # allowed, but we are busy
        assert b.current.chat_id == 111
        await fake_backend.remote_hang_up(111)
        assert b.current is None
        await fake_backend.ring(222)            # now free
        await settle()
        await b.stop()
        return b
    b = asyncio.run(scenario())
    assert fake_backend.log == [("decline", 999), ("answer", 111), ("decline", 222),
                                ("answer", 222), ("hang_up", 222)]
    assert b.declined == [999, 222]
    time.sleep(0.15)
    ev = events_in(control.close())
    assert [e["type"] for e in ev] == ["call-start", "call-end", "call-start", "call-end"]
    assert ev[0]["peer"] == "111" and ev[0]["greeting"] == "Operator."
    assert ev[1] == {"type": "call-end", "call": ev[0]["call"], "reason": "hung-up"}
    assert ev[2]["peer"] == "222" and ev[2]["call"] != ev[0]["call"]
    assert ev[3]["reason"] == "shutdown"


def test_empty_allowlist_declines_everyone(fake_backend, run_dir):
    async def scenario():
        b = Bridge(fake_backend, run_dir, mode="answer")
        await b.start()
        for u in (1, 2, 3):
            await fake_backend.ring(u)
        await b.stop()
    asyncio.run(scenario())
    assert fake_backend.log == [("decline", 1), ("decline", 2), ("decline", 3)]


def test_group_and_call_modes_decline_incoming_private_calls(fake_backend, run_dir):
    async def scenario():
        b = Bridge(fake_backend, run_dir, mode="group", chat=-100, allow=["5"])
        await b.start()
        await fake_backend.ring(5)
        await b.stop()
    asyncio.run(scenario())
    assert ("decline", 5) in fake_backend.log and ("answer", 5) not in fake_backend.log


def test_outgoing_call_ends_the_run_when_the_peer_hangs_up(fake_backend, run_dir, drain):
    control = drain(run_dir / "control.frames")

    async def scenario():
        b = Bridge(fake_backend, run_dir, mode="call", call_user="77")
        await b.start()
        assert fake_backend.log == [("call", 77)] and b.current.chat_id == 77
        await fake_backend.remote_hang_up(77, "hung-up")
        await asyncio.wait_for(b.finished.wait(), 1)
        await b.stop()
    asyncio.run(scenario())
    assert ("hang_up", 77) not in fake_backend.log      # already gone: nothing to hang up
    time.sleep(0.15)
    assert [e["type"] for e in events_in(control.close())] == ["call-start", "call-end"]


def test_a_dropped_group_call_is_detected_by_polling_and_rejoined(run_dir, drain):
    backend = FakeCallBackend(fail_joins=1)
    control = drain(run_dir / "control.frames")

    async def scenario():
        b = Bridge(backend, run_dir, mode="group", chat=-1001, auto_start=True, poll_s=0.05,
                   rejoin_backoff=(0.05, 0.05))
        await b.start()                       # first join fails, retried after 50 ms
        assert b.current.chat_id == -1001
        first = b.current.call_id
        backend.drop(-1001)                   # no event from py-tgcalls
        for _ in range(100):
            await asyncio.sleep(0.02)
            if b.current is not None and backend.log.count(("join", -1001, True)) == 3:
                break
        assert b.current is not None and b.current.call_id == first
        await b.stop()
    asyncio.run(scenario())
    assert backend.log == [("join", -1001, True)] * 2 + [("hang_up", -1001), ("join", -1001, True),
                                                         ("hang_up", -1001)]
    time.sleep(0.15)
    ev = events_in(control.close())
    assert [(e["type"], e.get("reason"), e.get("rejoin")) for e in ev] == [
        ("call-start", None, None), ("call-end", "dropped", None), ("call-start", None, True),
        ("call-end", "shutdown", None)]


class SlowHangUpBackend(FakeCallBackend):
    """Like a real call stack: the call leaves the list at once, the hang-up returns later."""
    async def hang_up(self, chat_id):
        await super().hang_up(chat_id)
        await asyncio.sleep(0.3)


def test_a_call_hung_up_by_stop_ends_as_shutdown_even_when_polled_meanwhile(run_dir, drain):
    backend = SlowHangUpBackend()
    control = drain(run_dir / "control.frames")

    async def scenario():
        b = Bridge(backend, run_dir, mode="answer", allow=["111"], poll_s=0.02)
        await b.start()
        await backend.ring(111)
        await settle()
        await b.stop()                        # the poller runs while hang_up is awaited
    asyncio.run(scenario())
    time.sleep(0.15)
    ev = events_in(control.close())
    assert [(e["type"], e.get("reason")) for e in ev] == [("call-start", None), ("call-end", "shutdown")]


def test_a_closed_voice_chat_is_not_rejoined(fake_backend, run_dir):
    async def scenario():
        b = Bridge(fake_backend, run_dir, mode="group", chat=-5, poll_s=0.05)
        await b.start()
        await fake_backend.remote_hang_up(-5, "voice-chat-closed")
        await asyncio.wait_for(b.finished.wait(), 1)
        await b.stop()
    asyncio.run(scenario())
    assert fake_backend.log.count(("join", -5, False)) == 1


def stream_frames(chat, frames):
    return StreamFrames(chat, Direction.INCOMING, Device.MICROPHONE,
                        [Frame(ssrc, pcm, Frame.Info()) for ssrc, pcm in frames])


def test_incoming_audio_private_call_writes_the_callers_stream(fake_backend, run_dir, drain):
    tg_input = drain(run_dir / "tg_input.raw")
    a = b"\x10\x00" * 480

    async def scenario():
        br = Bridge(fake_backend, run_dir, mode="call", call_user=9)
        await br.start()
        await asyncio.sleep(0.15)            # the writer's retry (≤100 ms) finds the reader
        for _ in range(10):
            upd = stream_frames(9, [(1234, a)])
            fake_backend.on_frames(upd.chat_id, upd.frames)
        fake_backend.on_frames(8, stream_frames(8, [(1, b"\x7f\x00" * 480)]).frames)  # another chat
        await br.stop()
        return br
    br = asyncio.run(scenario())
    time.sleep(0.15)
    assert tg_input.close() == a * 10
    assert br.input.written == 10 and br.input.dropped == 0


def test_incoming_audio_group_call_writes_the_mix_of_all_speakers(fake_backend, run_dir, drain):
    tg_input = drain(run_dir / "tg_input.raw")
    one, two = (b"\xe8\x03" * 480), (b"\xd0\x07" * 480)        # 1000 and 2000
    loud = (b"\x00\x70" * 480)                                  # 28672: clips when doubled

    async def scenario():
        br = Bridge(fake_backend, run_dir, mode="group", chat=-77)
        await br.start()
        await asyncio.sleep(0.15)
        fake_backend.on_frames(-77, stream_frames(-77, [(1, one), (2, two)]).frames)
        fake_backend.on_frames(-77, stream_frames(-77, [(1, loud), (2, loud)]).frames)
        await br.stop()
    asyncio.run(scenario())
    time.sleep(0.15)
    assert tg_input.close() == b"\xb8\x0b" * 480 + b"\xff\x7f" * 480   # 3000, then 32767
    assert mix([b"\x00\x80", b"\x00\x80"]) == b"\x00\x80"               # -32768 clips too


def test_incoming_audio_with_no_reader_is_dropped_and_counted_without_blocking(fake_backend, run_dir):
    async def scenario():
        br = Bridge(fake_backend, run_dir, mode="call", call_user=9)
        await br.start()
        t = time.monotonic()
        for _ in range(500):
            fake_backend.on_frames(9, stream_frames(9, [(1, b"\x01\x00" * 480)]).frames)
        elapsed = time.monotonic() - t
        await br.stop()
        return br, elapsed
    br, elapsed = asyncio.run(scenario())
    assert br.input.written == 0 and br.input.dropped_no_reader == 500
    assert elapsed < 0.5


def test_incoming_audio_into_a_full_fifo_is_dropped_and_counted(fake_backend, run_dir):
    r = os.open(run_dir / "tg_input.raw", os.O_RDONLY | os.O_NONBLOCK)   # never reads

    async def scenario():
        br = Bridge(fake_backend, run_dir, mode="call", call_user=9)
        await br.start()
        for _ in range(200):                 # 192 KB into a 64 KiB pipe
            fake_backend.on_frames(9, stream_frames(9, [(1, b"\x01\x00" * 480)]).frames)
        await br.stop()
        return br
    try:
        br = asyncio.run(scenario())
    finally:
        os.close(r)
    assert br.input.written > 0 and br.input.dropped_full > 0
    assert br.input.written + br.input.dropped_full == 200


SIGTERM_CHILD = r"""
import asyncio, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from conftest import FakeCallBackend, FifoDrain
from tgvoice_bridge.cli import serve, setup_logging
setup_logging()
backend = FakeCallBackend()
code = asyncio.run(serve(backend, sys.argv[3], mode="call", call_user=31337))
print("LOG", backend.log, flush=True)
sys.exit(code)
"""


def test_sigterm_hangs_up_cleanly_and_exits_0(run_dir, drain):
    control = drain(run_dir / "control.frames")
    tests = Path(__file__).parent
    child = subprocess.Popen([sys.executable, "-c", SIGTERM_CHILD, str(tests), str(tests.parent / "src"),
                              str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=10)
    assert child.returncode == 0, err
    assert "LOG [('call', 31337), ('hang_up', 31337)]" in out
    time.sleep(0.15)
    ev = events_in(control.close())
    assert [(e["type"], e.get("reason")) for e in ev] == [("call-start", None), ("call-end", "shutdown")]
    assert "stats: sent" in err


def test_taps_get_a_copy_only_while_someone_reads_them(fake_backend, run_dir, drain):
    tg_input = drain(run_dir / "tg_input.raw")
    out_tap = drain(run_dir / "tg_output.tap")
    pcm = b"\x05\x00" * 480

    async def scenario():
        br = Bridge(fake_backend, run_dir, mode="call", call_user=9)
        await br.start()
        await asyncio.sleep(0.3)
        fd = os.open(run_dir / "tg_output.raw", os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"\x06\x00" * 480 * 3)
        for _ in range(5):                      # nobody on tg_input.tap: no effect, no block
            fake_backend.on_frames(9, stream_frames(9, [(1, pcm)]).frames)
        await asyncio.sleep(0.2)
        os.close(fd)
        await br.stop()
        return br
    br = asyncio.run(scenario())
    time.sleep(0.15)
    assert tg_input.close() == pcm * 5
    assert out_tap.close() == b"\x06\x00" * 480 * 3
    assert br.input_tap.written == 0 and br.input_tap.dropped_no_reader == 5


def test_events_wait_for_a_late_control_reader_in_order_and_bounded(fake_backend, run_dir):
    async def scenario():
        b = Bridge(fake_backend, run_dir, mode="call", call_user=5, greeting="Hi.")
        await b.start()                              # call-start while nobody reads control.frames
        assert len(b.control.queue) == 1
        await asyncio.sleep(0.2)
        d = FifoDrain(run_dir / "control.frames")    # tgcat --control comes up late
        await asyncio.sleep(0.3)
        await fake_backend.remote_hang_up(5)
        await asyncio.sleep(0.1)
        await b.stop()
        return b, d
    b, d = asyncio.run(scenario())
    time.sleep(0.15)
    ev = events_in(d.close())
    assert [(e["type"], e.get("greeting")) for e in ev] == [("call-start", "Hi."), ("call-end", None)]
    assert b.control.dropped == 0

    # with nobody ever reading, the queue stays bounded and the oldest events go first
    from tgvoice_bridge.bridge import ControlEvents
    from tgvoice_bridge.fifo import NonBlockingWriter
    c = ControlEvents(NonBlockingWriter(run_dir / "control.frames"), limit=4)
    for i in range(10):
        c.emit({"type": "x", "i": i})
    assert [e["i"] for e, _ in c.queue] == [6, 7, 8, 9] and c.dropped == 6


def test_a_second_call_while_answering_the_first_is_declined(run_dir):
    class SlowAnswer(FakeCallBackend):
        async def answer(self, user_id):
            await asyncio.sleep(0.2)          # waiting for the caller's key exchange
            await super().answer(user_id)

    backend = SlowAnswer()

    async def scenario():
        b = Bridge(backend, run_dir, mode="answer", allow=["1", "2"])
        await b.start()
        first = asyncio.ensure_future(backend.ring(1))
        await asyncio.sleep(0.05)
        await backend.ring(2)
        await first
        assert b.current.chat_id == 1
        await b.stop()
    asyncio.run(scenario())
    assert backend.log == [("decline", 2), ("answer", 1), ("hang_up", 1)]


def test_the_assistants_hangup_ends_a_private_call_after_the_goodbye_has_played(fake_backend, run_dir, drain):
    """Call control (fifo-layout.md "Call control"): a private call's call-start offers "end";
    tts-writer writes 0.5 s of goodbye into tg_output.raw, then `hangup` on line.frames at once
    (the goodbye is still in the pipe, as tts-writer writes ≤ 60 ms ahead, here all of it): the
    bridge sends every frame of it into the call, then hangs up (call-end "ended"). A `transfer`
    is one log line and the call goes on; a group voice chat offers no controls."""
    control = drain(run_dir / "control.frames")
    goodbye = b"\x10\x27" * 480 * 50                   # 50 frames of 10 ms, non-silent

    def line_event(event):
        fd = os.open(run_dir / "line.frames", os.O_WRONLY | os.O_NONBLOCK)
        buf = io.BytesIO()
        tgvoice_frames.write_event(buf, event)
        os.write(fd, buf.getvalue())
        os.close(fd)

    async def scenario():
        b = Bridge(fake_backend, run_dir, mode="answer", allow=["111"])
        await b.start()
        await fake_backend.ring(111)
        await settle(0.1)
        line_event({"type": "transfer", "turn": 3, "to": "+15550100", "name": "desk"})
        await settle(0.2)
        assert b.current is not None, "a transfer ended the call"
        fd = os.open(run_dir / "tg_output.raw", os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, goodbye)
        line_event({"type": "hangup", "turn": 3, "reason": "assistant"})
        t0 = time.monotonic()
        while b.current is not None and time.monotonic() - t0 < 5:
            await settle(0.01)
        hung_up_after = time.monotonic() - t0
        os.close(fd)
        await b.stop()
        return b, hung_up_after
    b, hung_up_after = asyncio.run(scenario())
    assert fake_backend.log == [("answer", 111), ("hang_up", 111)]
    said = [pcm for _, chat, pcm in fake_backend.sent if chat == 111 and pcm == goodbye[:960]]
    assert len(said) == 50, f"{len(said)} of the 50 goodbye frames were sent before the hang-up"
    assert 0.5 <= hung_up_after < 2.0, hung_up_after
    time.sleep(0.15)
    ev = events_in(control.close())
    assert ev[0]["type"] == "call-start" and ev[0]["controls"] == ["end"]
    assert [(e["type"], e.get("reason")) for e in ev[1:]] == [("call-end", "ended")]


def test_a_group_voice_chat_offers_no_call_control(fake_backend, run_dir, drain):
    control = drain(run_dir / "control.frames")

    async def scenario():
        b = Bridge(fake_backend, run_dir, mode="group", chat=-100)
        await b.start()
        await b.stop()
    asyncio.run(scenario())
    time.sleep(0.15)
    ev = events_in(control.close())
    assert ev[0]["type"] == "call-start" and "controls" not in ev[0]

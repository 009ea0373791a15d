"""Call lifecycle: which call the pipeline is in, and what the pipeline hears about it.

The ``Bridge`` owns the FIFO ends, the 10 ms ``SendPump`` and the ``IncomingAudio`` writer,
and drives a ``CallBackend``:
- mode ``group``: join ``chat`` (optionally starting its voice chat); after a drop (the
  backend no longer holds the call: polled every ``poll_s``, py-tgcalls emits no event) or a
  kick, rejoin with backoff 1, 2, 4 … 30 s;
- mode ``answer``: answer private calls from ``allow`` (user ids); everyone else, and anyone
  calling while a call is up, is declined (default deny);
- mode ``call``: place a private call to ``call_user``; the bridge exits when it ends.
Each call start/end goes to ``control.frames`` as an event frame
(``{"type":"call-start","call":…,"peer":…[,"greeting":…]}``, ``{"type":"call-end","call":…,
"reason":…}``), written without blocking (held in a small queue while nobody reads, see ControlEvents).
``stop()`` (SIGTERM/SIGINT) hangs up cleanly.

Call control (fifo-layout.md "Call control"): on a private call the call-start says
``"controls": ["end"]``; a ``hangup`` that tts-writer writes on ``line.frames`` after the
goodbye's last sample hangs the call up once the audio the bridge has taken from
``tg_output.raw`` has been sent and played (``call-end`` reason ``ended``). A group voice chat
offers no controls, and tg-bridge cannot transfer a call: such an event is one log line.

With ``voice`` (options of ``voicemsg.VoiceMessages``, e.g. ``{"pipeline": MessagePipeline(…)}``)
voice notes from the same allowlist are answered too, on a pipeline of their own.
"""
import asyncio
import collections
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import tgvoice_frames  # python/tgvoice_frames.py, installed beside the bridge (80-bridge.sh)
from .fifo import NonBlockingEventReader, NonBlockingFrameReader, NonBlockingWriter
from .media import FRAME_BYTES, IncomingAudio, SendPump

log = logging.getLogger("tg-bridge")


@dataclass
class ActiveCall:
    chat_id: int
    call_id: str
    counters: tuple = ()
    started: float = field(default_factory=time.monotonic)

    @property
    def private(self):
        return self.chat_id > 0


class ControlEvents:
    """Event frames to control.frames, never blocking. Events wait in a small queue (in
    order, at most ``limit``, oldest dropped with a log line) until a reader is there, so a
    call-start emitted a moment before ``tgcat --control`` opens the FIFO still arrives;
    ``flush()`` is retried every 50 ms by the bridge (opens at most every 100 ms)."""

    def __init__(self, writer, limit=32):
        self.writer = writer
        self.queue = collections.deque()
        self.limit = limit
        self.sent = []
        self.dropped = 0
        self._warned = False

    def emit(self, event):
        buf = io.BytesIO()
        tgvoice_frames.write_event(buf, event)
        if len(self.queue) >= self.limit:
            old = self.queue.popleft()
            self.dropped += 1
            log.warning("control.frames: nobody has read it for a while; dropped event %s", old[0])
        self.queue.append((event, buf.getvalue()))
        log.info("event %s", json.dumps(event))
        self.flush()

    def flush(self):
        while self.queue:
            event, data = self.queue[0]
            if not self.writer.write(data):
                if not self._warned:
                    self._warned = True
                    log.warning("control.frames: nobody is reading (is `tgcat --control` running?); "
                                "holding %d event(s)", len(self.queue))
                return False
            self.queue.popleft()
            self.sent.append(event)
            self._warned = False
        return True

    def close(self):
        if self.queue:
            self.dropped += len(self.queue)
            log.warning("control.frames: %d event(s) never delivered (no reader): %s",
                        len(self.queue), [e for e, _ in self.queue])
            self.queue.clear()
        self.writer.close()


class Bridge:
    def __init__(self, backend, run_dir, mode="answer", chat=None, call_user=None, allow=(),
                 greeting=None, auto_start=False, poll_s=1.0, call_timeout_s=60,
                 rejoin_backoff=(1, 2, 4, 8, 16, 30), clock=time.monotonic, voice=None):
        assert mode in ("group", "answer", "call")
        self.backend, self.mode = backend, mode
        self.chat, self.call_user = chat, call_user
        self.allow_spec = list(allow)
        self.allow = frozenset()
        self.greeting, self.auto_start = greeting, auto_start
        self.poll_s, self.call_timeout_s = poll_s, call_timeout_s
        self.rejoin_backoff = rejoin_backoff
        run_dir = Path(run_dir)
        self.input = NonBlockingWriter(run_dir / "tg_input.raw", retry_s=0.1, clock=clock)
        self.input_tap = NonBlockingWriter(run_dir / "tg_input.tap", retry_s=0.25, clock=clock)
        self.output_tap = NonBlockingWriter(run_dir / "tg_output.tap", retry_s=0.25, clock=clock)
        self.output = NonBlockingFrameReader(run_dir / "tg_output.raw", FRAME_BYTES)
        self.control = ControlEvents(NonBlockingWriter(run_dir / "control.frames", retry_s=0.1, clock=clock))
        # tts-writer's call control (hangup), when the run directory has line.frames.
        line = run_dir / "line.frames"
        self.line = NonBlockingEventReader(line) if line.is_fifo() and not line.is_symlink() else None
        self.incoming = IncomingAudio(self.input, self.input_tap)
        self.pump = SendPump(self.output, self._send, self.output_tap, clock=clock)
        self.current = None
        self.declined = []
        self.finished = asyncio.Event()   # set when mode "call" is over, or on stop()
        self._call_seq = 0
        self._answering = None        # user id while an answer is in progress (counts as busy)
        self._tasks = []
        backend.on_incoming_call = self._on_incoming_call
        backend.on_call_ended = self._on_call_ended
        backend.on_frames = self._on_frames
        self.voice = None
        if voice:
            from .voicemsg import VoiceMessages
            self.voice = VoiceMessages(backend, allow=lambda: self.allow, **voice)
            self.voice.pipeline.call_live = lambda: self.current is not None or self._answering is not None
            backend.on_message = self.voice.on_message

    # -- media -------------------------------------------------------------------------
    async def _send(self, pcm):
        call = self.current
        if call is not None:
            await self.backend.send_frame(call.chat_id, pcm)

    def _on_frames(self, chat_id, frames):
        call = self.current
        if call is not None and call.chat_id == chat_id:
            self.incoming.on_frames(frames, call.private)

    # -- lifecycle ---------------------------------------------------------------------
    def _new_call_id(self, chat_id):
        self._call_seq += 1
        return f"{chat_id}-{int(time.time() * 1000)}-{self._call_seq}"

    def _begin(self, chat_id, call_id=None, rejoin=False):
        self.current = ActiveCall(chat_id, call_id or self._new_call_id(chat_id), counters=self._counters())
        event = {"type": "call-start", "call": self.current.call_id, "peer": str(chat_id)}
        if self.greeting and not rejoin:
            event["greeting"] = self.greeting
        if rejoin:
            event["rejoin"] = True
        if self.line is not None and chat_id > 0:
            event["controls"] = ["end"]      # a private call can be hung up (not a group chat)
        self.control.emit(event)

    def _counters(self):
        return (self.incoming.batches, self.input.dropped, self.pump.audio_frames, self.pump.silence_frames)

    def _end(self, reason):
        call, self.current = self.current, None
        if call is not None:
            self.control.emit({"type": "call-end", "call": call.call_id, "reason": reason})
            heard, dropped, said, silent = (a - b for a, b in zip(self._counters(), call.counters))
            log.info("call %s (%s) lasted %.1f s: heard %d frames (%d dropped at tg_input.raw), "
                     "sent %d frames of speech and %d of silence", call.call_id, reason,
                     time.monotonic() - call.started, heard, dropped, said, silent)
        return call

    async def start(self):
        await self.backend.start()
        self.allow = frozenset([await self.backend.resolve(u) for u in self.allow_spec])
        if self.chat is not None:
            self.chat = await self.backend.resolve(self.chat)
        if self.call_user is not None:
            self.call_user = await self.backend.resolve(self.call_user)
        self._tasks.append(asyncio.ensure_future(self.pump.run()))
        self._tasks.append(asyncio.ensure_future(self._poll()))
        self._tasks.append(asyncio.ensure_future(self._flush_control()))
        if self.line is not None:
            self._tasks.append(asyncio.ensure_future(self._watch_line()))
        if self.voice is not None:
            await self.voice.start()
        if self.mode == "group":
            if not await self._join_group():
                self.finished.set()
        elif self.mode == "call":
            log.info("calling user %s", self.call_user)
            try:
                await self.backend.place_call(self.call_user, self.call_timeout_s)
            except Exception as e:
                log.error("call to %s failed: %s: %s", self.call_user, type(e).__name__, e)
                self.finished.set()
                return
            self._begin(self.call_user)
        else:
            log.info("waiting for private calls from %s",
                     ", ".join(map(str, sorted(self.allow))) or "nobody (empty allowlist: every call is declined)")

    async def _join_group(self, call_id=None):
        for attempt, backoff in enumerate(list(self.rejoin_backoff) + [None]):
            try:
                await self.backend.join_group(self.chat, self.auto_start)
                self._begin(self.chat, call_id, rejoin=call_id is not None)
                log.info("in the voice chat of %s", self.chat)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if backoff is None or self.finished.is_set():
                    log.error("cannot join the voice chat of %s: %s: %s", self.chat, type(e).__name__, e)
                    return False
                log.warning("joining the voice chat of %s failed (%s: %s); retrying in %s s",
                            self.chat, type(e).__name__, e, backoff)
                await asyncio.sleep(backoff)

    async def _on_incoming_call(self, user_id):
        busy = self.current is not None or self._answering is not None
        if self.mode != "answer" or user_id not in self.allow or busy:
            why = ("not in the allowlist" if user_id not in self.allow else
                   "busy in another call" if busy else f"mode is {self.mode}")
            log.info("declining a call from %s (%s)", user_id, why)
            self.declined.append(user_id)
            try:
                await self.backend.decline(user_id)
            except Exception as e:
                log.warning("declining %s failed: %s: %s", user_id, type(e).__name__, e)
            return
        log.info("answering a call from %s", user_id)
        self._answering = user_id
        try:
            await self.backend.answer(user_id)
        except Exception as e:
            log.error("answering %s failed: %s: %s", user_id, type(e).__name__, e)
            return
        finally:
            self._answering = None
        self._begin(user_id)

    async def _on_call_ended(self, chat_id, reason):
        if self.current is None or self.current.chat_id != chat_id:
            return
        call = self._end(reason)
        await self._after_end(call, reason)

    async def _after_end(self, call, reason):
        if self.finished.is_set():
            return
        if self.mode == "call":
            self.finished.set()
        elif self.mode == "group" and reason not in ("voice-chat-closed", "kicked", "left-group"):
            # rejoin in a task: never hold up the backend's update handler or the poller
            self._tasks.append(asyncio.ensure_future(self._join_group(call.call_id)))
        elif self.mode == "group":
            log.error("left the voice chat of %s for good (%s)", self.chat, reason)
            self.finished.set()

    async def _flush_control(self):
        while True:
            await asyncio.sleep(0.05)
            if self.control.queue:
                self.control.flush()

    async def _watch_line(self, every_s=0.02):
        """Call control from tts-writer (line.frames): hang up on ``hangup``."""
        while True:
            await asyncio.sleep(every_s)
            for event in self.line.poll():
                kind, call = event.get("type"), self.current
                if kind == "hangup" and call is not None and call.private:
                    log.info("the assistant hangs up (turn %s); once its goodbye has played", event.get("turn"))
                    self._tasks.append(asyncio.ensure_future(self._hang_up_after_audio(call)))
                elif kind in ("hangup", "transfer"):
                    why = ("tg-bridge cannot transfer a call" if kind == "transfer" else
                           "no call is up" if call is None else "a group voice chat is not hung up on")
                    log.warning("line.frames: %s asked for, but %s; ignored, the call goes on", kind, why)
                else:
                    log.debug("line.frames: ignoring %s", kind)

    async def _hang_up_after_audio(self, call, quiet_s=0.1, playout_s=0.2, limit_s=30.0):
        """Hang up ``call`` once the sender has taken nothing from tg_output.raw for ``quiet_s``
        (tts-writer wrote the hangup after the goodbye's last sample, so the goodbye has all
        been sent) and ``playout_s`` more has passed for the call stack to play it out."""
        t0 = time.monotonic()
        last, since = self.pump.audio_frames, time.monotonic()
        while time.monotonic() - since < quiet_s and time.monotonic() - t0 < limit_s:
            await asyncio.sleep(0.01)
            if self.pump.audio_frames != last:
                last, since = self.pump.audio_frames, time.monotonic()
        await asyncio.sleep(playout_s)
        if self.current is not call:
            return                      # ended meanwhile (the caller hung up first)
        self._end("ended")
        try:
            await self.backend.hang_up(call.chat_id)
        except Exception as e:
            log.warning("hanging up failed: %s: %s", type(e).__name__, e)
        await self._after_end(call, "ended")

    async def _poll(self):
        """py-tgcalls emits nothing when the connection drops: watch its list of calls."""
        while True:
            await asyncio.sleep(self.poll_s)
            call = self.current
            if call is None:
                continue
            try:
                held = await self.backend.connected_calls()
            except Exception as e:
                log.debug("polling calls failed: %s", e)
                continue
            if call.chat_id not in held and self.current is call:
                self._end("dropped")
                log.warning("call %s dropped (lost by the call stack)", call.call_id)
                try:   # clear what is left of it, or a rejoin would find the dead call "joined"
                    await self.backend.hang_up(call.chat_id)
                except Exception as e:
                    log.debug("clearing the dropped call: %s: %s", type(e).__name__, e)
                await self._after_end(call, "dropped")

    async def stop(self):
        """Hang up cleanly (SIGTERM/SIGINT) and stop the media tasks."""
        self.finished.set()
        # end the record first: while the hang-up is awaited, the poller or the call stack's
        # own event must not report our hang-up as a drop or as the peer's
        call = self._end("shutdown")
        if call is not None:
            try:
                await self.backend.hang_up(call.chat_id)
            except Exception as e:
                log.warning("hanging up failed: %s: %s", type(e).__name__, e)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _ in range(3):                     # a last chance for call-end (≤ 0.2 s)
            self.control.writer.next_open = 0
            if self.control.flush():
                break
            await asyncio.sleep(0.1)
        if self.voice is not None:
            await self.voice.stop()
        try:
            await self.backend.stop()
        except Exception as e:
            log.debug("backend stop: %s", e)
        for end in (self.input, self.input_tap, self.output_tap, self.control):
            end.close()
        self.output.close()
        if self.line is not None:
            self.line.close()
        log.info("stats: sent %d frames (%d audio, %d silence of which %d underruns, %d send errors, "
                 "%d resyncs); tg_input.raw: %d written, %d dropped (no reader %d, full %d)",
                 self.pump.ticks, self.pump.audio_frames, self.pump.silence_frames, self.pump.underruns,
                 self.pump.send_errors, self.pump.resyncs, self.input.written, self.input.dropped,
                 self.input.dropped_no_reader, self.input.dropped_full)

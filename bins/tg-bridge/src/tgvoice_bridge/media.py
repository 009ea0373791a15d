"""The call's media path: the 10 ms sender and the incoming-audio writer.

``SendPump`` sends exactly one 960-byte frame (10 ms, s16le 48 kHz mono) per tick, taken from
``tg_output.raw`` without blocking or silence when nothing is there. Tick n is due at
t0 + n * 10 ms on the monotonic clock (drift correction: a late tick is caught up at once,
not accumulated); after a stall of more than ``max_lag_s`` the schedule restarts instead of
bursting the backlog into the call. The pump also runs between calls so the pipe never holds
stale speech when a call starts.

``IncomingAudio`` turns a ``StreamFrames`` batch (one 10 ms frame per remote ssrc) into one
frame on ``tg_input.raw``: in a private call the caller's stream; in a group the mix of all
speakers (sum with clipping) — chosen over "active speaker" because it never cuts anyone off
and needs no speaker tracking; the VAD downstream sees whoever talks.
"""
import asyncio
import logging
import sys
import time
from array import array

log = logging.getLogger("tg-bridge")

FRAME_MS = 10
FRAME_BYTES = 960            # 10 ms of s16le mono at 48 kHz
SILENCE = bytes(FRAME_BYTES)


class SendPump:
    def __init__(self, reader, send, tap=None, clock=time.monotonic, sleep=asyncio.sleep,
                 frame_s=FRAME_MS / 1000, max_lag_s=0.1):
        self.reader, self.send, self.tap = reader, send, tap
        self.clock, self.sleep = clock, sleep
        self.frame_s, self.max_lag_s = frame_s, max_lag_s
        self.ticks = 0
        self.audio_frames = 0
        self.silence_frames = 0
        self.underruns = 0
        self.send_errors = 0
        self.resyncs = 0

    def next_frame(self):
        try:
            pcm = self.reader.read_frame()
        except OSError as e:
            log.warning("tg_output.raw: read failed (%s); sending silence", e)
            pcm = None
        if pcm is None:
            self.silence_frames += 1
            if getattr(self.reader, "writer_present", False):
                self.underruns += 1       # a writer is there but was late (or idle)
            return SILENCE
        self.audio_frames += 1
        if self.tap is not None:
            self.tap.write(pcm)
        return pcm

    async def run(self):
        t0 = self.clock()
        n = 0
        while True:
            pcm = self.next_frame()
            try:
                await self.send(pcm)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the call went away under us: keep the clock running
                self.send_errors += 1
                if self.send_errors in (1, 10, 100) or self.send_errors % 1000 == 0:
                    log.warning("send_frame failed (%s: %s); %d failures so far",
                                type(e).__name__, e, self.send_errors)
            self.ticks += 1
            n += 1
            delay = t0 + n * self.frame_s - self.clock()
            if delay < -self.max_lag_s:
                self.resyncs += 1
                log.warning("sender fell %.0f ms behind (event loop stalled); restarting the 10 ms schedule",
                            -delay * 1000)
                t0, n = self.clock(), 0
                delay = 0
            if delay > 0:
                await self.sleep(delay)
            else:
                await self.sleep(0)   # let the rest of the loop run even when catching up


def mix(frames):
    """Sum s16le buffers sample by sample with clipping (length of the longest)."""
    if len(frames) == 1:
        return bytes(frames[0])
    arrays = []
    for f in frames:
        a = array("h")
        a.frombytes(bytes(f)[: len(f) // 2 * 2])
        if sys.byteorder == "big":
            a.byteswap()
        arrays.append(a)
    n = max(len(a) for a in arrays)
    out = array("h", bytes(2 * n))
    for a in arrays:
        for i, v in enumerate(a):
            s = out[i] + v
            out[i] = 32767 if s > 32767 else -32768 if s < -32768 else s
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


class IncomingAudio:
    def __init__(self, writer, tap=None):
        self.writer, self.tap = writer, tap
        self.batches = 0

    def on_frames(self, frames, private):
        """``frames``: objects with ``.ssrc`` and ``.frame`` (py-tgcalls ``Frame``)."""
        frames = [f for f in frames if f.frame]
        if not frames:
            return
        if private:
            pcm = bytes(frames[0].frame)
        else:
            pcm = mix([f.frame for f in frames])
        if len(pcm) % 2:
            pcm = pcm[:-1]
        self.batches += 1
        self.writer.write(pcm)
        if self.tap is not None:
            self.tap.write(pcm)

"""Non-blocking FIFO ends for the bridge (fifo-layout.md §3).

The asyncio loop that carries the call never waits on a FIFO: every open, read and write here
uses O_NONBLOCK and returns at once. A writer with no reader (ENXIO/EPIPE) or a full pipe
(EAGAIN) drops and counts; it re-opens at most every ``retry_s``. The reader returns whatever
is there (up to one frame) and keeps a partial frame for the next tick.
"""
import errno
import logging
import os
import time

log = logging.getLogger("tg-bridge")


class NonBlockingWriter:
    """Writes whole chunks to a FIFO without ever blocking; drops (and counts) what it cannot.

    A chunk that the kernel accepts only partly (possible above PIPE_BUF, 512 bytes on macOS)
    keeps its tail in ``pending`` so the byte stream stays sample-aligned; new chunks are
    dropped until the tail is out.
    """

    def __init__(self, path, retry_s=0.1, name=None, clock=time.monotonic):
        self.path = str(path)
        self.name = name or os.path.basename(self.path)
        self.retry_s = retry_s
        self.clock = clock
        self.fd = None
        self.next_open = 0.0
        self.pending = b""
        self.written = 0          # chunks delivered
        self.dropped_no_reader = 0
        self.dropped_full = 0
        self._reader_seen = None  # for one log line per transition

    @property
    def dropped(self):
        return self.dropped_no_reader + self.dropped_full

    def _open(self):
        now = self.clock()
        if now < self.next_open:
            return False
        self.next_open = now + self.retry_s
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.ENXIO, errno.ENOENT):
                self._transition(False)
                return False
            raise
        self._transition(True)
        return True

    def _transition(self, present):
        if self._reader_seen != present:
            self._reader_seen = present
            level = logging.DEBUG if self.retry_s > 0.2 else logging.INFO
            if present:
                log.log(level, "%s: reader connected", self.name)
            else:
                log.log(level, "%s: no reader; dropping until one opens it (dropped so far: %d)",
                        self.name, self.dropped)

    def _close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.pending = b""
        self.next_open = self.clock() + self.retry_s
        self._transition(False)

    def write(self, chunk):
        """Deliver ``chunk`` or drop it; True when it was (fully or partly) handed to the pipe."""
        if self.fd is None and not self._open():
            self.dropped_no_reader += 1
            return False
        try:
            if self.pending:
                n = os.write(self.fd, self.pending)
                self.pending = self.pending[n:]
                if self.pending:
                    self.dropped_full += 1
                    return False
            n = os.write(self.fd, chunk)
        except BlockingIOError:
            self.dropped_full += 1
            return False
        except BrokenPipeError:
            self._close()
            self.dropped_no_reader += 1
            return False
        self.pending = bytes(chunk[n:])
        self.written += 1
        return True

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class NonBlockingFrameReader:
    """Reads fixed-size frames from a FIFO without blocking; ``None`` when no whole frame is
    ready yet. A partial frame is kept for the next call; when the writer goes away (EOF) a
    partial frame is discarded, because the next writer starts sample-aligned afresh."""

    def __init__(self, path, frame_bytes=960, name=None):
        self.path = str(path)
        self.name = name or os.path.basename(self.path)
        self.frame_bytes = frame_bytes
        self.fd = None
        self.partial = b""
        self.frames = 0
        self.discarded_partial_bytes = 0
        self.writer_present = False

    def _ensure_open(self):
        if self.fd is None:
            # O_RDONLY|O_NONBLOCK succeeds at once even with no writer (POSIX).
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def read_frame(self):
        self._ensure_open()
        want = self.frame_bytes - len(self.partial)
        try:
            data = os.read(self.fd, want)
        except BlockingIOError:   # a writer is there, nothing queued
            if not self.writer_present:
                self.writer_present = True
                log.info("%s: writer connected", self.name)
            return None
        if not data:              # EOF: no writer (yet, or any more)
            if self.writer_present:
                self.writer_present = False
                log.info("%s: writer gone; sending silence until it returns", self.name)
                if self.partial:
                    self.discarded_partial_bytes += len(self.partial)
                    self.partial = b""
                # The FIFO stays open: the next writer's bytes simply appear (closing here
                # would leave a window in which a non-blocking writer gets ENXIO).
            return None
        if not self.writer_present:
            self.writer_present = True
            log.info("%s: writer connected", self.name)
        self.partial += data
        if len(self.partial) < self.frame_bytes:
            return None
        frame, self.partial = self.partial, b""
        self.frames += 1
        return frame

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class NonBlockingEventReader:
    """Reads event frames (fifo-layout.md §2) from a FIFO without blocking: ``poll()`` returns
    the events that arrived since the last call (possibly none). A bad frame header is logged
    and skipped up to the next ``TGVF``; audio frames and undecodable events are logged and
    skipped. Used for ``line.frames`` (call control from tts-writer)."""

    MAGIC = b"TGVF"

    def __init__(self, path, name=None):
        self.path = str(path)
        self.name = name or os.path.basename(self.path)
        self.fd = None
        self.buf = b""

    def poll(self):
        import json
        import struct
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            self.buf += data
        events = []
        while len(self.buf) >= 12:
            magic, version, kind, flags, length = struct.unpack_from("<4sBBHI", self.buf)
            if magic != self.MAGIC or version != 1 or flags or kind not in (1, 2) or length > 1 << 20:
                skip = self.buf.find(self.MAGIC, 1)
                skip = len(self.buf) - 3 if skip < 0 else skip
                log.warning("%s: bad frame header; skipped %d bytes", self.name, skip)
                self.buf = self.buf[skip:]
                continue
            if len(self.buf) < 12 + length:
                break
            payload, self.buf = self.buf[12:12 + length], self.buf[12 + length:]
            if kind != 2:
                log.warning("%s: audio on an event link; skipped", self.name)
                continue
            try:
                event = json.loads(payload.decode("utf-8"))
            except ValueError as e:
                log.warning("%s: an event that is not JSON (%s); skipped", self.name, e)
                continue
            if isinstance(event, dict) and isinstance(event.get("type"), str):
                events.append(event)
            else:
                log.warning("%s: an event without a type; skipped", self.name)
        return events

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

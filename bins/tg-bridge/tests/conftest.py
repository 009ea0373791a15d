"""Shared fixtures: a fake CallBackend that records what the bridge asks for and lets a test
play the Telegram side (ring, hang up, drop, deliver py-tgcalls StreamFrames)."""
import asyncio
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
# The one frame helper (python/tgvoice_frames.py): the bridge imports it as a top-level module.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "python"))

from tgvoice_bridge import rundir  # noqa: E402
from tgvoice_bridge.backend import CallBackend  # noqa: E402


class FakeCallBackend(CallBackend):
    def __init__(self, fail_joins=0):
        super().__init__()
        self.log = []                 # ("answer", 42), ("decline", 7), …
        self.sent = []                # (monotonic time, chat_id, pcm)
        self.held = set()             # what connected_calls() reports
        self.fail_joins = fail_joins
        self.started = self.stopped = False
        self.voices = []              # voice notes sent: dicts with chat_id, ogg, reply_to, caption, …
        self.texts = []

    async def start(self):
        self.started = True

    async def stop(self):
        self.stopped = True

    async def join_group(self, chat_id, auto_start):
        self.log.append(("join", chat_id, auto_start))
        if self.fail_joins:
            self.fail_joins -= 1
            raise ConnectionError("fake: group call unreachable")
        self.held.add(chat_id)

    async def place_call(self, user_id, timeout_s):
        self.log.append(("call", user_id))
        self.held.add(user_id)

    async def answer(self, user_id):
        self.log.append(("answer", user_id))
        self.held.add(user_id)

    async def decline(self, user_id):
        self.log.append(("decline", user_id))

    async def hang_up(self, chat_id):
        self.log.append(("hang_up", chat_id))
        self.held.discard(chat_id)

    async def send_frame(self, chat_id, pcm):
        self.sent.append((asyncio.get_running_loop().time(), chat_id, pcm))

    async def connected_calls(self):
        return set(self.held)

    # voice messages (the fake's IncomingMessage.handle holds the file's bytes)
    async def download_voice(self, message):
        self.log.append(("download", message.message_id))
        return message.handle

    async def send_voice(self, chat_id, ogg, reply_to=None, caption=None, duration=None, waveform=None):
        self.log.append(("send_voice", chat_id, reply_to))
        self.voices.append(dict(chat_id=chat_id, ogg=ogg, reply_to=reply_to, caption=caption,
                                duration=duration, waveform=waveform))

    async def send_text(self, chat_id, text, reply_to=None):
        self.log.append(("send_text", chat_id, reply_to))
        self.texts.append(dict(chat_id=chat_id, text=text, reply_to=reply_to))

    # the Telegram side
    async def message(self, m):
        await self.on_message(m)

    async def ring(self, user_id):
        await self.on_incoming_call(user_id)

    async def remote_hang_up(self, chat_id, reason="hung-up"):
        self.held.discard(chat_id)
        await self.on_call_ended(chat_id, reason)

    def drop(self, chat_id):
        self.held.discard(chat_id)       # like py-tgcalls: no event, the call just vanishes


@pytest.fixture
def realtime_priority():
    """Real-time tests share the CPU with whatever else runs (CI builds, other stages): give
    this process the priority a live call would get (nice -10), when allowed, and restore it."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except PermissionError:
        pass
    yield
    try:
        os.setpriority(os.PRIO_PROCESS, 0, before)
    except PermissionError:
        pass


@pytest.fixture
def fake_backend():
    return FakeCallBackend()


@pytest.fixture
def run_dir(tmp_path):
    return rundir.prepare(tmp_path / "run")


class FifoDrain:
    """Reads a FIFO in a thread (like tgcat would) and keeps everything it got."""

    def __init__(self, path):
        import threading
        self.path, self.data, self.stop = str(path), bytearray(), False
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.opened.wait(5)

    def _run(self):
        import select
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.opened.set()
        try:
            while not self.stop:
                r, _, _ = select.select([fd], [], [], 0.05)
                if r:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        self.data += chunk
                    else:                      # EOF: no writer right now
                        import time
                        time.sleep(0.005)
        finally:
            os.close(fd)

    def close(self):
        self.stop = True
        self.thread.join(2)
        return bytes(self.data)


@pytest.fixture
def drain():
    drains = []

    def make(path):
        d = FifoDrain(path)
        drains.append(d)
        return d
    yield make
    for d in drains:
        d.close()

"""The bridge against the real first pipeline stage: `tgcat --control control.frames
tg_input.raw` (Rust) reads what the bridge writes — caller audio and call events — and
survives the bridge restarting, as fifo-layout.md §3 promises."""
import asyncio
import io
import os
import signal
import subprocess
from pathlib import Path

import pytest
from pytgcalls.types import Frame

from conftest import FakeCallBackend
import tgvoice_frames
from tgvoice_bridge.bridge import Bridge

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("TGVOICE_BIN", ROOT / "target" / "release"))


def test_tgcat_frames_the_bridge_output_across_a_bridge_restart(run_dir, tmp_path):
    tgcat = BIN / "tgcat"
    if not tgcat.exists():
        pytest.fail(f"{tgcat} missing: build it with `cargo build --release -p tgcat -p framecat`")
    out_path = tmp_path / "audio.frames"       # a file: a pipe nobody drains would stall tgcat
    out_file = open(out_path, "wb")
    proc = subprocess.Popen([str(tgcat), "--control", str(run_dir / "control.frames"),
                             str(run_dir / "tg_input.raw")], stdout=out_file, stderr=subprocess.PIPE)
    ramp = b"".join(int(v).to_bytes(2, "little", signed=True) for v in range(-480, 480, 2))  # 480 samples

    async def one_call(user, frames):
        backend = FakeCallBackend()
        bridge = Bridge(backend, run_dir, mode="call", call_user=user)
        await bridge.start()
        await asyncio.sleep(0.5)                 # tgcat has the FIFOs open by now
        for _ in range(frames):
            backend.on_frames(user, [Frame(1, ramp, Frame.Info())])
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        await bridge.stop()
        return bridge

    try:
        first = asyncio.run(one_call(101, 100))      # 1 s of audio
        second = asyncio.run(one_call(202, 50))      # the bridge restarted: tgcat carries on
        assert proc.poll() is None, "tgcat exited when the bridge restarted"
        import time
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        out_file.close()
    out = out_path.read_bytes()
    assert first.input.written == 100 and second.input.written == 50, (first.input.dropped, second.input.dropped)
    events, pcm = [], b""
    stream = io.BytesIO(out)
    while True:
        at = stream.tell()
        try:
            f = tgvoice_frames.read_frame(stream)
        except ValueError:                     # SIGTERM may cut tgcat's last write short
            assert len(out) - at < 12 + 32 + 1920, f"bad frame at byte {at} of {len(out)}: {out[at:at+16]!r}"
            break
        if f is None:
            break
        if f[0] == "event":
            events.append(f[1])
        else:
            assert f[1]["rate"] == 48000
            pcm += f[2]
    assert [(e["type"], e.get("peer"), e.get("reason")) for e in events] == [
        ("call-start", "101", None), ("call-end", None, "shutdown"),
        ("call-start", "202", None), ("call-end", None, "shutdown")], err.decode()[-2000:]
    assert pcm.count(ramp) >= 149          # 150 frames written; tgcat may hold back a partial 20 ms frame

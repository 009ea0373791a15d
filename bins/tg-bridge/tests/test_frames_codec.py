"""python/tgvoice_frames.py against the Rust codec in both directions (the foundation
issue's requirement); the bridge imports this one file (installed beside it by 80-bridge.sh)."""
import io
import json
import math
import os
import struct
import subprocess
import sys
import wave
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "python"))
import tgvoice_frames  # noqa: E402

BIN = Path(os.environ.get("TGVOICE_BIN", ROOT / "target" / "release"))


def binary(name):
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} missing: build it with `cargo build --release -p framecat -p tgcat`")
    return str(path)


def test_the_bridge_reads_and_writes_frames_with_this_one_helper():
    from tgvoice_bridge import msgpipeline
    assert msgpipeline.tgvoice_frames is tgvoice_frames
    assert Path(tgvoice_frames.__file__).resolve() == (ROOT / "python" / "tgvoice_frames.py").resolve()
    assert not (ROOT / "bins" / "tg-bridge" / "src" / "tgvoice_bridge" / "tgvoice_frames.py").exists(), "no copy in the package"


def test_python_writer_to_rust_framecat():
    buf = io.BytesIO()
    tgvoice_frames.write_event(buf, {"type": "call-start", "call": "c1", "peer": "42", "greeting": "Operator."})
    pcm = struct.pack("<960h", *range(-480, 480))
    tgvoice_frames.write_audio(buf, pcm, rate=48000, turn=7, capture_us=1_700_000_000_000_000, index=960)
    tgvoice_frames.write_audio(buf, b"\x01\x00" * 160, rate=16000, turn=8)
    tgvoice_frames.write_event(buf, {"type": "call-end", "call": "c1", "reason": "hung-up", "ünï": "ok"})
    r = subprocess.run([binary("framecat")], input=buf.getvalue(), capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    lines = [json.loads(l) for l in r.stdout.decode().splitlines()]
    assert len(lines) == 4
    assert lines[0] == {"type": "call-start", "call": "c1", "peer": "42", "greeting": "Operator."}
    assert lines[1]["type"] == "audio" and lines[1]["rate"] == 48000 and lines[1]["samples"] == 960
    assert lines[1]["turn"] == 7 and lines[1]["channels"] == 1
    assert lines[2]["rate"] == 16000 and lines[2]["samples"] == 160 and lines[2]["turn"] == 8
    assert lines[3]["ünï"] == "ok" and lines[3]["reason"] == "hung-up"
    # and the PCM payload survives byte for byte
    r = subprocess.run([binary("framecat"), "--pcm"], input=buf.getvalue(), capture_output=True, timeout=30)
    assert r.stdout.startswith(pcm)


def test_rust_tgcat_to_python_reader(tmp_path):
    wav = tmp_path / "tone.wav"
    samples = [int(10000 * math.sin(2 * math.pi * 440 * i / 48000)) for i in range(48000 // 2)]
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    r = subprocess.run([binary("tgcat"), str(wav)], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    stream = io.BytesIO(r.stdout)
    got, index = b"", 0
    while (frame := tgvoice_frames.read_frame(stream)) is not None:
        kind, meta, data = frame
        assert kind == "audio" and meta["rate"] == 48000 and meta["channels"] == 1
        assert meta["index"] == index and len(data) == 960 * 2      # 20 ms frames
        index += len(data) // 2
        got += data
    assert struct.unpack(f"<{len(samples)}h", got[: 2 * len(samples)]) == tuple(samples)
    assert not got[2 * len(samples):].strip(b"\0")


def test_python_reader_rejects_raw_pcm_clearly():
    with pytest.raises(ValueError, match="raw PCM"):
        tgvoice_frames.read_frame(io.BytesIO(b"\x00\x01" * 100))

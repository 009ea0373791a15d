"""Benchmark: a 5 s voice note received → its voice-note reply sent, through the real stages on
the offline defaults (Silero, whisper tiny.en, SmolLM2-135M on the local llama.cpp server,
Piper), with the fake Telegram backend. Prints each message's steps, then median and p90 per
step and the machine's load (uptime).

    scripts/bench-voice-messages [N] [--gap S]

N messages (default 12), sent one after another: each ``--gap`` seconds (default 5: the time
it takes to record a 5 s question) after the previous reply went out, each from a chat of its
own (a conversation's growing history would make later requests slower: that is the LLM's
cost, not this path's; ``--same-chat`` measures it).
"""
import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))
ROOT = HERE.parents[2]
BIN = Path(os.environ.get("TGVOICE_BIN", ROOT / "target" / "release"))

from conftest import FakeCallBackend                                        # noqa: E402
from tgvoice_bridge import rundir, voicecodec                               # noqa: E402
from tgvoice_bridge.bridge import Bridge                                    # noqa: E402
from tgvoice_bridge.msgpipeline import MessagePipeline, stage_commands      # noqa: E402
from tgvoice_bridge.voicemsg import IncomingMessage                         # noqa: E402

QUESTION = "Hello there. I have a quick question for you today. What would be a good name for a small black cat?"
USER = 111
STEPS = ("download", "decode", "vad+stt", "llm first chunk", "llm", "tts+encode tail", "waveform", "send", "total")


def serving(port):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
        return True
    except OSError:
        return False


def start_llm_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(ROOT / "scripts" / "llm-server"), "--port", str(port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not serving(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit("scripts/llm-server did not start (run scripts/setup venv llm-server)")
        time.sleep(0.3)
    return port, proc


def question_note():
    p = subprocess.run([str(BIN / "tts-writer"), "--engine", "piper", "--unpaced", "-q",
                        "--state-dir", tempfile.mkdtemp()], input=(QUESTION + "\n").encode(), capture_output=True, check=True)
    return voicecodec.encode(p.stdout), voicecodec.seconds(p.stdout)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def run(n, gap, port, tmp, same_chat):
    ogg, secs = question_note()
    print(f"question: {secs:.1f} s of Piper speech, {len(ogg)} bytes OGG/Opus: {QUESTION!r}")
    backend = FakeCallBackend()
    pipeline = MessagePipeline(tmp / "state", stage_commands(BIN), env={"TGVOICE_LLM_PORT": str(port)})
    bridge = Bridge(backend, rundir.prepare(tmp / "run"), allow=[str(USER + i) for i in range(n)], voice={"pipeline": pipeline})
    await bridge.start()
    await asyncio.sleep(8)                       # tts-writer and the first vadseg | sttd load their models
    try:
        for i in range(n):
            user = USER if same_chat else USER + i
            await backend.message(IncomingMessage(chat_id=user, message_id=i + 1, sender_id=user, private=True,
                                                  voice=True, duration=secs, handle=ogg))
            while len(bridge.voice.replies) <= i:
                await asyncio.sleep(0.01)
            r = bridge.voice.replies[i]
            print(f"message {i + 1:2d}: {r.kind}, reply {r.seconds:4.1f} s: " +
                  " ".join(f"{k} {r.steps.get(k, 0):.0f}" for k in STEPS) + f" ms  ({r.text[:60]!r})")
            await asyncio.sleep(gap)
    finally:
        await bridge.stop()
    return bridge.voice.replies


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", nargs="?", type=int, default=12)
    ap.add_argument("--gap", type=float, default=5.0, help="seconds between a reply and the next message (default 5)")
    ap.add_argument("--same-chat", action="store_true", help="all messages in one chat (one growing conversation)")
    args = ap.parse_args()
    port = int(os.environ.get("TGVOICE_LLM_PORT", "8088"))
    server = None
    if not serving(port):
        port, server = start_llm_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            replies = asyncio.run(run(args.n, args.gap, port, Path(tmp), args.same_chat))
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    print(f"\nper step over {len(replies)} messages (ms):")
    for k in STEPS:
        v = [r.steps[k] for r in replies if k in r.steps]
        if v:
            print(f"  {k:16s} median {statistics.median(v):7.0f}   p90 {pct(v, 0.9):7.0f}")
    total = [r.steps["total"] for r in replies]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"summary: 5 s question received → reply sent: median {statistics.median(total):.0f} ms, "
          f"p90 {pct(total, 0.9):.0f} ms over {len(total)} messages (target median ≤ 3000 ms); "
          f"reply length median {statistics.median(r.seconds for r in replies):.1f} s; {load}")


if __name__ == "__main__":
    main()

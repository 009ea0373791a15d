"""Real media without an account: two bridges in one process joined by a local ntgcalls
private call (real Opus/WebRTC), inside a network namespace this test creates (a veth pair;
WebRTC ignores loopback, and nothing may leave the machine). Speech written to bridge A's
tg_output.raw must come out of bridge B's tg_input.raw with the same energy envelope; the
one-way latency (FIFO in → FIFO out) is printed."""
import io
import math
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import FifoDrain
import tgvoice_frames
from tgvoice_bridge import rundir

HERE = Path(__file__).resolve().parent
NETNS_SETUP = ("ip link set lo up && ip link add tgb0 type veth peer name tgb1 && "
               "ip addr add 10.77.0.1/24 dev tgb0 && ip addr add 10.77.0.2/24 dev tgb1 && "
               "ip link set tgb0 up && ip link set tgb1 up && exec \"$0\" \"$@\"")
LEAD = 10                      # frames (100 ms) queued ahead in tg_output.raw
TEXT = "Hello, this is the telegram bridge. One, two, three, four, five."


def netns_prefix():
    """`unshare` invocation that gives us a private network namespace, or skip with why."""
    for tool in ("unshare", "ip"):
        if not shutil.which(tool):
            pytest.skip(f"`{tool}` not found (util-linux / iproute2): run scripts/setup apt")
    errors = []
    for prefix in (["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"]):
        r = subprocess.run(prefix + ["sh", "-c", "ip link add tgbx type veth peer name tgby"],
                           capture_output=True, text=True, timeout=20)
        if r.returncode == 0:
            return prefix
        errors.append(f"{' '.join(prefix)}: {r.stderr.strip()}")
    pytest.skip("cannot create a network namespace with a veth pair here (needs root or "
                "unprivileged user namespaces): " + "; ".join(errors))


def speech_pcm(tmp_path):
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        pytest.fail("espeak-ng and sox are needed for the test speech: run scripts/setup apt")
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), TEXT], check=True, timeout=30)
    raw = subprocess.run(["sox", str(wav), "-t", "raw", "-r", "48000", "-e", "signed", "-b", "16",
                          "-c", "1", "-"], check=True, capture_output=True, timeout=30).stdout
    return raw[: len(raw) // 960 * 960]


def envelope(pcm, block=960):
    """dB energy per 10 ms block."""
    out = []
    for i in range(0, len(pcm) - block + 1, block):
        s = struct.unpack(f"<{block // 2}h", pcm[i:i + block])
        out.append(10 * math.log10(sum(v * v for v in s) / len(s) + 1.0))
    return out


def correlation(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else 0.0


class TimedDrain(FifoDrain):
    """A FIFO reader that also records when each byte arrived."""

    def __init__(self, path):
        self.arrivals = []              # (byte offset after the chunk, monotonic time)
        super().__init__(path)

    def _run(self):
        import select
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.opened.set()
        try:
            while not self.stop:
                r, _, _ = select.select([fd], [], [], 0.05)
                if not r:
                    continue
                chunk = os.read(fd, 65536)
                if chunk:
                    self.data += chunk
                    self.arrivals.append((len(self.data), time.monotonic()))
                else:
                    time.sleep(0.002)
        finally:
            os.close(fd)

    def arrival_of(self, offset):
        for end, t in self.arrivals:
            if end > offset:
                return t
        return None


def events_in(data):
    out, buf = [], io.BytesIO(data)
    while (f := tgvoice_frames.read_frame(buf)) is not None:
        out.append(f[1])
    return out


def test_speech_crosses_a_real_local_private_call(tmp_path, realtime_priority):
    prefix = netns_prefix()
    speech = speech_pcm(tmp_path)
    run_a, run_b = rundir.prepare(tmp_path / "a"), rundir.prepare(tmp_path / "b")
    b_input = TimedDrain(run_b / "tg_input.raw")
    a_control, b_control = FifoDrain(run_a / "control.frames"), FifoDrain(run_b / "control.frames")
    # nice is per thread on Linux: start the child (and so every ntgcalls/WebRTC thread) at the
    # priority a live call would get; `nice` only warns when not allowed
    child = subprocess.Popen(prefix + ["sh", "-c", NETNS_SETUP, "nice", "-n", "-10", sys.executable,
                                       str(HERE / "p2p_pair_child.py"), str(run_a), str(run_b)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.startswith("READY"), f"local call did not connect: {line!r}\n{child.stderr.read() if child.poll() is not None else ''}"
        time.sleep(2.0)     # let WebRTC settle (bandwidth estimate, jitter buffer) like a pickup
        # the tts-writer side: speech into A's tg_output.raw, paced in real time with a small
        # lead (LEAD frames queued in the pipe, as tts-writer keeps) so that a late wake-up of
        # this writer does not punch silence into the speech
        fd = os.open(run_a / "tg_output.raw", os.O_WRONLY | os.O_NONBLOCK)
        received_before = len(b_input.data)
        t0 = time.monotonic()
        due_times = []                 # when A's sender should take each frame from the pipe
        for i in range(0, len(speech), 960):
            n = i // 960
            due_times.append(max(time.monotonic(), t0 + n * 0.01))
            os.write(fd, speech[i:i + 960])
            d = t0 + (n + 1 - LEAD) * 0.01 - time.monotonic()
            if d > 0:
                time.sleep(d)
        os.close(fd)
        time.sleep(1.5)
        child.stdin.write("hangup\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    received = b_input.close()
    assert child.returncode == 0, err[-3000:]
    summary = [l for l in out.splitlines() if l.startswith("SUMMARY")]
    assert summary, out + err[-2000:]

    # find the speech in what B wrote to tg_input.raw: best envelope match over all lags
    sent_env = envelope(speech)
    recv = received[received_before // 960 * 960:]
    recv_env = envelope(recv)
    assert len(recv_env) > len(sent_env), f"B wrote only {len(recv_env)} 10 ms frames"
    best = max(range(0, len(recv_env) - len(sent_env) + 1),
               key=lambda lag: correlation(sent_env, recv_env[lag:lag + len(sent_env)]))
    r = correlation(sent_env, recv_env[best:best + len(sent_env)])
    # one-way latency: speech onset written into A's FIFO → the same onset arriving from B's FIFO
    onset = next(i for i, e in enumerate(sent_env) if e > max(sent_env) - 30)
    arrived = b_input.arrival_of(received_before // 960 * 960 + (best + onset) * 960)
    latency_ms = (arrived - due_times[onset]) * 1000
    silent_before = recv_env[max(0, best - 60):max(0, best - 10)]
    # The receiver's jitter buffer (WebRTC NetEq) legitimately stretches/shrinks audio by a few
    # 10 ms blocks, which slides a rigid alignment; so also score 500 ms windows, each at its
    # best lag within ±150 ms of the global one.
    def windowed(recv):
        scores = []
        for w in range(0, len(sent_env) - 50 + 1, 50):
            seg = sent_env[w:w + 50]
            lags = range(max(0, best + w - 15), min(len(recv) - 50, best + w + 15) + 1)
            scores.append(max(correlation(seg, recv[l:l + 50]) for l in lags))
        return scores
    windows = windowed(recv_env)
    r_windows = sum(windows) / len(windows)
    # control: the same scoring against the received audio played backwards (same energy
    # statistics, wrong speech) shows what an unrecognisable signal scores
    control = windowed(recv_env[::-1])
    r_control = sum(control) / len(control)
    print(f"\nreal local call: envelope correlation {r:.3f} rigid, {r_windows:.3f} in 500 ms windows "
          f"(min {min(windows):.3f}; time-reversed control {r_control:.3f}) over {len(sent_env) * 10} ms of speech; "
          f"one-way latency tg_output.raw(A) → tg_input.raw(B): {latency_ms:.0f} ms; {summary[0]}")
    assert r_windows > 0.85 and r_windows - r_control > 0.15, \
        f"speech envelope not recognisable through the call (windows {r_windows:.3f}, control {r_control:.3f})"
    assert 0 < latency_ms < 1000
    assert not silent_before or max(silent_before) < max(sent_env) - 30   # silence before speech

    ev_b = events_in(b_control.close())
    ev_a = events_in(a_control.close())
    assert [(e["type"], e.get("peer"), e.get("reason")) for e in ev_b] == [
        ("call-start", "1001", None), ("call-end", None, "hung-up")]
    assert ev_b[0]["greeting"] == "Operator."
    assert [(e["type"], e.get("peer"), e.get("reason")) for e in ev_a] == [
        ("call-start", "1002", None), ("call-end", None, "shutdown")]

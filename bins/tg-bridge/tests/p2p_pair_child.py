"""Child process of test_real_media.py, run inside a network namespace the test creates:
two bridges joined by a real local ntgcalls private call (LocalP2PPair). Bridge A places
the call, bridge B answers it (A is on B's allowlist). Prints READY once both sides are
CONNECTED, hangs A up when a line arrives on stdin, prints a JSON summary and exits."""
import asyncio
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "python"))  # tgvoice_frames

import ntgcalls  # noqa: E402

from tgvoice_bridge.bridge import Bridge  # noqa: E402
from tgvoice_bridge.cli import setup_logging  # noqa: E402
from tgvoice_bridge.local_p2p import LocalP2PPair  # noqa: E402


async def main(run_a, run_b):
    setup_logging()
    log = logging.getLogger("tg-bridge")
    pair = LocalP2PPair()
    a = Bridge(pair.a, run_a, mode="call", call_user=pair.b.user_id)
    b = Bridge(pair.b, run_b, mode="answer", allow=[str(pair.a.user_id)], greeting="Operator.")
    await b.start()
    await a.start()
    connected = ntgcalls.ConnectionState.CONNECTED
    for _ in range(200):
        if connected in pair.a.connection_states and connected in pair.b.connection_states:
            break
        await asyncio.sleep(0.05)
    else:
        print("NOT-CONNECTED", json.dumps({"a": [str(s) for s in pair.a.connection_states],
                                           "b": [str(s) for s in pair.b.connection_states]}), flush=True)
        await a.stop()
        await b.stop()
        return 3
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    log.info("hanging up A")
    await a.stop()
    await asyncio.wait_for(_wait_end(b), 5)
    summary = {
        "b_ended": b.current is None,
        "a_sent": a.pump.ticks, "a_audio": a.pump.audio_frames, "a_underruns": a.pump.underruns, "a_resyncs": a.pump.resyncs,
        "a_send_errors": a.pump.send_errors,
        "b_written": b.input.written, "b_dropped": b.input.dropped,
    }
    await b.stop()
    print("SUMMARY", json.dumps(summary), flush=True)
    return 0


async def _wait_end(bridge):
    while bridge.current is not None:
        await asyncio.sleep(0.02)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))

"""scripts/supervise caps and rotates a stage's log, as s6-log does (issue 25: logs grew
forever): with a LOGFILE, the service's output goes through a logger that renames LOGFILE to
LOGFILE.1 (… up to TGVOICE_LOG_KEEP old files) before it would pass TGVOICE_LOG_MAX_BYTES."""
import os
import pathlib
import re
import signal
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUPERVISE = ROOT / "scripts" / "supervise"


class Supervised:
    """scripts/supervise DIR LOG in a session of its own (so the test ends exactly its group)."""

    def __init__(self, tmp_path, run_script, env=None, old_log=None):
        self.svc = tmp_path / "svc" / "stage"
        self.svc.mkdir(parents=True)
        (self.svc / "run").write_text("#!/usr/bin/env bash\n" + run_script)
        (self.svc / "run").chmod(0o755)
        self.log = tmp_path / "logs" / "stage.log"
        self.log.parent.mkdir()
        if old_log is not None:
            self.log.write_text(old_log)
        self.err = open(tmp_path / "supervisor.log", "wb")
        self.proc = subprocess.Popen(["bash", str(SUPERVISE), str(self.svc), str(self.log)],
                                     env=dict(os.environ, **(env or {})), stdin=subprocess.DEVNULL,
                                     stdout=self.err, stderr=self.err, start_new_session=True)

    def wait_for(self, what, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what():
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        """As `voicecall stop`: the stopping mark, SIGTERM to the group; wait for all of it."""
        (self.svc.parent / "stopping").touch()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        # The logger exits once the last writer is gone: nothing of the group is left.
        assert self.wait_for(lambda: not _group_alive(self.proc.pid), 10), "the logger outlived its service"
        self.err.close()


def _group_alive(pgid):
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(") ", 1)[1].split()
        if fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def text(path):
    """The file's text, "" while it is not there (a rotation renames it for a moment)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def logs(log):
    return sorted(log.parent.glob(log.name + "*"))


def test_a_chatty_stage_keeps_its_log_under_the_cap_with_the_newest_lines(tmp_path):
    max_bytes, keep, lines = 65536, 2, 100_000
    # ~5.5 MB of log lines as fast as the stage can write them; then a mark that it got through.
    sup = Supervised(tmp_path, f"""seq 1 {lines} | sed 's/^/2026-12-07T00:00:00Z stage[1] info: line /'
echo "2026-12-07T00:00:00Z stage[1] warn: the last line" >&2
touch {tmp_path}/written
exec sleep 60
""", env={"TGVOICE_LOG_MAX_BYTES": str(max_bytes), "TGVOICE_LOG_KEEP": str(keep)})
    try:
        t0 = time.monotonic()
        assert sup.wait_for(lambda: (tmp_path / "written").exists()), "the stage blocked writing its log"
        took = time.monotonic() - t0
        assert sup.wait_for(lambda: "the last line" in text(sup.log)), "last line not logged"
        print(f"{lines} lines written in {took:.2f} s; files: {[(p.name, p.stat().st_size) for p in logs(sup.log)]}")
        assert took < 30, f"writing {lines} lines took {took:.1f} s: the logger holds the stage back"
        files = logs(sup.log)
        assert [p.name for p in files] == ["stage.log", "stage.log.1", "stage.log.2"], files
        assert all(p.stat().st_size <= max_bytes for p in files), [(p.name, p.stat().st_size) for p in files]
        # The newest lines, in order and with none missing, oldest file first.
        kept = "".join(p.read_text() for p in reversed(files)).splitlines()
        numbers = [int(m.group(1)) for m in map(re.compile(r"info: line (\d+)$").search, kept) if m]
        assert kept[-1].endswith("warn: the last line")
        assert numbers == list(range(numbers[0], lines + 1)), "lines lost or reordered between the files"
        assert numbers[0] > lines - 3 * max_bytes // 40, "older lines than the cap allows were kept"
    finally:
        sup.stop()


def test_the_log_outlives_restarts_and_keeps_a_stages_last_words(tmp_path):
    # Each start logs a line and dies; the third start stays and says goodbye on SIGTERM.
    sup = Supervised(tmp_path, f"""n=$(( $(cat {tmp_path}/starts 2>/dev/null || echo 0) + 1 )); echo $n > {tmp_path}/starts
echo "start $n"
[ $n -ge 3 ] || exit 1
trap 'echo "stopping on SIGTERM"; exit 0' TERM
while :; do sleep 0.1; done
""", env={"TGVOICE_LOG_MAX_BYTES": "4096", "TGVOICE_LOG_KEEP": "1"})
    try:
        assert sup.wait_for(lambda: "start 3" in text(sup.log), 20), (text(sup.log), text(tmp_path / "supervisor.log"))
    finally:
        sup.stop()
    lines = sup.log.read_text().splitlines()
    # (bash may report its `sleep` killed by the group's SIGTERM, "Terminated", in between.)
    assert lines[:3] == ["start 1", "start 2", "start 3"] and lines[-1] == "stopping on SIGTERM", lines


def test_a_log_left_over_the_cap_is_rotated_at_the_first_line(tmp_path):
    old = "2026-01-01T00:00:00Z stage[1] info: from before\n" * 500     # 24 kB, say from before this change
    sup = Supervised(tmp_path, "echo new; exec sleep 60\n", env={"TGVOICE_LOG_MAX_BYTES": "8192", "TGVOICE_LOG_KEEP": "1"},
                     old_log=old)
    try:
        assert sup.wait_for(lambda: text(sup.log) == "new\n", 20), text(sup.log)[:200]
        assert (sup.log.parent / "stage.log.1").read_text() == old
    finally:
        sup.stop()


@pytest.mark.parametrize("var,value", [("TGVOICE_LOG_MAX_BYTES", "1M"), ("TGVOICE_LOG_KEEP", "-1"),
                                       ("TGVOICE_LOG_MAX_BYTES", "100")])
def test_a_bad_setting_exits_78_naming_it(tmp_path, var, value):
    svc = tmp_path / "svc" / "stage"
    svc.mkdir(parents=True)
    (svc / "run").write_text("#!/bin/sh\nexit 0\n")
    (svc / "run").chmod(0o755)
    r = subprocess.run(["bash", str(SUPERVISE), str(svc), str(tmp_path / "stage.log")], env=dict(os.environ, **{var: value}),
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 78 and f"{var}={value}" in r.stderr, r.stderr

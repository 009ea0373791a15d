"""Readiness by protocol (fifo-layout.md §5, issue 25): scripts/supervise gives each run of a
stage fd 5 and TGVOICE_NOTIFY_FD=5, records a newline written there as supervise/<stage>/ready
(the stage's pid; gone when it exits); `voicecall status` shows it, `voicecall start --wait`
waits for it and names a stage that is not ready; a replacement counts as ready once started
(unless `replace --notify`). Stand-in programs (shell scripts) take the stages' places, so this
needs no build, model or network."""
import os
import pathlib
import signal
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
VOICECALL = ROOT / "scripts" / "voicecall"
SUPERVISE = ROOT / "scripts" / "supervise"

# A stage stand-in: signals readiness after a moment unless its name is in $NEVER_READY, then
# runs until stopped.
STAND_IN = """#!/bin/bash
name=$(basename "$0")
sleep 0.3
case " $NEVER_READY " in
    *" $name "*) ;;
    *) [ -n "$TGVOICE_NOTIFY_FD" ] && { printf '\\n' >&"$TGVOICE_NOTIFY_FD"; exec {TGVOICE_NOTIFY_FD}>&-; } ;;
esac
exec sleep 60
"""

RUNDIR = """#!/bin/sh
d=
while [ $# -gt 0 ]; do case "$1" in --dir) d=$2; shift 2 ;; --instance) d=$XDG_RUNTIME_DIR/tgvoice/$2; shift 2 ;; *) shift ;; esac; done
mkdir -p "$d" && chmod 700 "$d" && for l in speech.frames text.frames; do [ -p "$d/$l" ] || mkfifo -m 600 "$d/$l"; done && echo "$d"
"""

STAGES = ("tgcat", "vadseg", "sttd", "llm-relay", "tts-writer")


def write_exe(path, text):
    path.write_text(text)
    path.chmod(0o755)


def wait_for(what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.05)
    return False


class Instance:
    def __init__(self, tmp_path, never_ready=""):
        fake = tmp_path / "bin"
        fake.mkdir()
        for prog in STAGES + ("callsim",):
            write_exe(fake / prog, STAND_IN)
        write_exe(fake / "tgvoice-rundir", RUNDIR)
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "TGVOICE_LLM_BASE_URL", "TGVOICE_RUN_DIR",
                                                                 "TGVOICE_VOICECALL_ENV", "TGVOICE_SECRETS_FILE", "TGVOICE_PHONE_LINE",
                                                                 "TGVOICE_PHONE", "TGVOICE_NOTIFY_FD")}
        # A key: no local LLM server; no Telegram session: no tg-bridge.
        env.update(TGVOICE_BIN=str(fake), ANTHROPIC_API_KEY="sk-test-not-a-key", NEVER_READY=never_ready,
                   TGVOICE_STATE_DIR=str(tmp_path / "state"), XDG_RUNTIME_DIR=str(tmp_path / "xdg"),
                   TGVOICE_TG_SESSION=str(tmp_path / "no-session"), TGVOICE_START_CHECK_TICKS="3", TGVOICE_LLM_PROVIDER="auto")
        self.env = env
        self.run = tmp_path / "xdg" / "tgvoice" / "ready"

    def vc(self, *args, timeout=60):
        return subprocess.run(["bash", str(VOICECALL), "--instance", "ready", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def status(self):
        """{stage: READY column} from `voicecall status`."""
        out = self.vc("status").stdout
        rows = [line.split() for line in out.splitlines()]
        return {r[0]: r[4] for r in rows if r and r[0] in STAGES}


def test_start_wait_returns_once_every_stage_is_ready_and_status_shows_it(tmp_path):
    inst = Instance(tmp_path)
    r = inst.vc("start", "--wait", "30")
    try:
        assert r.returncode == 0, r.stderr
        assert "every stage ready" in r.stderr + r.stdout
        assert inst.status() == {s: "yes" for s in STAGES}, inst.vc("status").stdout
        for s in STAGES:
            d = inst.run / "supervise" / s
            assert (d / "ready").read_text().strip() == (d / "pid").read_text().strip()
        assert inst.vc("ready").returncode == 0
        # A restart: readiness goes with the old process and comes back with the new one.
        old = (inst.run / "supervise" / "sttd" / "pid").read_text().strip()
        assert inst.vc("restart", "sttd").returncode == 0
        assert wait_for(lambda: (inst.run / "supervise" / "sttd" / "pid").read_text().strip() != old)
        assert wait_for(lambda: inst.status().get("sttd") == "yes")
        assert (inst.run / "supervise" / "sttd" / "ready").read_text().strip() != old
    finally:
        assert inst.vc("stop").returncode == 0


def test_start_wait_names_the_stage_that_never_signals(tmp_path):
    inst = Instance(tmp_path, never_ready="sttd")
    t0 = time.monotonic()
    r = inst.vc("start", "--wait", "3")
    try:
        assert r.returncode == 1, r.stderr
        assert "not ready after 3 s: sttd" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 20
        st = inst.status()
        assert st["sttd"] == "no" and all(st[s] == "yes" for s in STAGES if s != "sttd"), st
        assert inst.vc("ready", "sttd").returncode == 1
        assert inst.vc("ready", "vadseg", "tgcat").returncode == 0
        # sttd's links held open both ways, so a replacement's opens of them never wait.
        held = [os.open(inst.run / link, os.O_RDWR) for link in ("speech.frames", "text.frames")]
        # A replacement that never signals counts as ready once started ...
        assert inst.vc("replace", "sttd", "--", "sleep", "60").returncode == 0
        assert wait_for(lambda: inst.status().get("sttd") == "yes"), inst.vc("status").stdout
        # ... unless it said it would (--notify): then only its own newline counts.
        assert inst.vc("replace", "sttd", "--notify", "--", "sleep", "60").returncode == 0
        time.sleep(1.5)
        assert inst.status()["sttd"] == "no", inst.vc("status").stdout
        assert inst.vc("replace", "sttd", "--notify", "--", "bash", "-c", 'printf "\\n" >&$TGVOICE_NOTIFY_FD; exec sleep 60').returncode == 0
        assert wait_for(lambda: inst.status().get("sttd") == "yes"), inst.vc("status").stdout
        for fd in held:
            os.close(fd)
    finally:
        assert inst.vc("stop").returncode == 0
    assert not list((inst.run / "supervise").glob("*/ready")), "readiness left after stop"


def test_supervise_records_readiness_per_run_and_clears_it_on_exit(tmp_path):
    svc = tmp_path / "svc" / "stage"
    svc.mkdir(parents=True)
    # Ready after 0.3 s, exits after 1.5 s: restarted, ready again under its new pid.
    write_exe(svc / "run", "#!/bin/bash\nsleep 0.3\nprintf '\\n' >&$TGVOICE_NOTIFY_FD\nexec 5>&-\nsleep 1.2\nexit 3\n")
    p = subprocess.Popen(["bash", str(SUPERVISE), str(svc)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ready = lambda: (svc / "ready").exists() and (svc / "ready").read_text().strip() == (svc / "pid").read_text().strip()
        assert wait_for(ready, 10)
        first = (svc / "pid").read_text().strip()
        assert wait_for(lambda: not (svc / "ready").exists(), 10), "readiness outlived the run"
        assert wait_for(lambda: ready() and (svc / "pid").read_text().strip() != first, 10)
    finally:
        (svc.parent / "stopping").touch()
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)
    assert not (svc / "ready").exists()


def test_supervise_never_records_a_service_that_does_not_signal(tmp_path):
    svc = tmp_path / "svc" / "stage"
    svc.mkdir(parents=True)
    write_exe(svc / "run", "#!/bin/bash\n[ \"$TGVOICE_NOTIFY_FD\" = 5 ] || exit 9\nexec sleep 60\n")
    p = subprocess.Popen(["bash", str(SUPERVISE), str(svc)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: (svc / "pid").exists(), 10)
        time.sleep(1.5)
        assert not (svc / "ready").exists()
        assert not (svc / "last-exit").exists(), "the service was not given TGVOICE_NOTIFY_FD=5"
    finally:
        (svc.parent / "stopping").touch()
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)

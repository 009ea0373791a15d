"""The API keys reach llm-relay alone (README "Running a call: the supervisor"), on a phone front
too: phone-bridge gets only the path of the front's secrets file (TGVOICE_SECRETS_FILE), and
the `voicecall start` of each phone line it runs reads the keys from there for the line's own
llm-relay. Stand-in programs (shell scripts that record their environment) take the stages'
places, so this needs no build, model or network."""
import os
import pathlib
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
VOICECALL = ROOT / "scripts" / "voicecall"
SECRET = "sk-ant-secrets-test-not-a-real-key"

STAND_IN = """#!/bin/sh
# Records its environment as <name>.env (or <name>.<instance>.env), then runs until stopped.
name=$(basename "$0"); inst=""
for a in "$@"; do [ "$prev" = --instance ] && inst=".$a"; prev=$a; done
tr '\\0' '\\n' < /proc/$$/environ > "$DUMP/$name$inst.env"
{extra}
exec sleep 60
"""

RUNDIR = """#!/bin/sh
# tgvoice-rundir stand-in: --dir D or --instance N ($XDG_RUNTIME_DIR/tgvoice/N), created 0700.
d=
while [ $# -gt 0 ]; do case "$1" in --dir) d=$2; shift 2 ;; --instance) d=$XDG_RUNTIME_DIR/tgvoice/$2; shift 2 ;; *) shift ;; esac; done
mkdir -p "$d" && chmod 700 "$d" && echo "$d"
"""

# What phone-bridge does for a call: start a phone line with scripts/voicecall (pool.rs).
START_LINE = 'env -u TGVOICE_PHONE -u TGVOICE_RUN_DIR TGVOICE_PHONE_LINE=1 "$FAKE_VOICECALL" --instance front-line1 start ' \
             '> "$DUMP/line-start.out" 2>&1'


def write_exe(path, text):
    path.write_text(text)
    path.chmod(0o755)


def wait_for(path, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear")


def test_phone_bridge_gets_the_secrets_file_not_the_keys_and_the_lines_llm_relay_gets_them(tmp_path):
    fake, dump = tmp_path / "bin", tmp_path / "dump"
    fake.mkdir()
    dump.mkdir()
    for prog in ("tgcat", "vadseg", "sttd", "llm-relay", "tts-writer", "callsim"):
        write_exe(fake / prog, STAND_IN.replace("{extra}", ""))
    write_exe(fake / "phone-bridge", STAND_IN.replace("{extra}", START_LINE))
    write_exe(fake / "tgvoice-rundir", RUNDIR)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "TGVOICE_LLM_BASE_URL", "TGVOICE_RUN_DIR",
                                                             "TGVOICE_VOICECALL_ENV", "TGVOICE_SECRETS_FILE", "TGVOICE_PHONE_LINE")}
    env.update(TGVOICE_BIN=str(fake), DUMP=str(dump), FAKE_VOICECALL=str(VOICECALL), ANTHROPIC_API_KEY=SECRET,
               TGVOICE_STATE_DIR=str(tmp_path / "state"), XDG_RUNTIME_DIR=str(tmp_path / "xdg"),
               TGVOICE_TG_SESSION=str(tmp_path / "no-session"), TGVOICE_START_CHECK_TICKS="3", TGVOICE_PHONE="1",
               TGVOICE_LLM_PROVIDER="auto")
    vc = lambda *args: subprocess.run(["bash", str(VOICECALL), "--instance", "front", *args], env=env,
                                      capture_output=True, text=True, timeout=60)
    r = vc("start")
    assert r.returncode == 0, r.stderr
    try:
        bridge_env = wait_for(dump / "phone-bridge.env")
        relay_env = wait_for(dump / "llm-relay.front-line1.env")
        tgcat_env = wait_for(dump / "tgcat.env")
    finally:
        r = vc("stop")
        assert r.returncode == 0, r.stderr
    print((dump / "line-start.out").read_text())
    assert SECRET not in bridge_env, "phone-bridge has the API key in its environment"
    secrets_file = [line.split("=", 1)[1] for line in bridge_env.splitlines() if line.startswith("TGVOICE_SECRETS_FILE=")]
    assert secrets_file and secrets_file[0].endswith("/supervise/secrets"), bridge_env
    assert f"ANTHROPIC_API_KEY={SECRET}" in relay_env.splitlines(), "the phone line's llm-relay did not get the key"
    assert SECRET not in tgcat_env and "TGVOICE_SECRETS_FILE" not in tgcat_env, "the line's tgcat sees the key or its file"
    # `stop` of the front took the line with it, and the secrets file is gone.
    assert not pathlib.Path(secrets_file[0]).exists()
    assert not (tmp_path / "state" / "front-line1").exists()

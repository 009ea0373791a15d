"""The command line: help texts, and one clear line plus the documented exit code when
credentials, the session or a safe run directory are missing."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
ROOT = Path(__file__).resolve().parents[3]
HASH = "0123456789abcdef0123456789abcdef"


def tg_bridge(*args, env=None, home=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("TG_", "TGVOICE_TG", "TGVOICE_ALLOW"))}
    e["PYTHONPATH"] = os.pathsep.join([SRC, str(ROOT / "python")])
    if home:
        e["HOME"] = str(home)
        e.pop("XDG_STATE_HOME", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "tgvoice_bridge", *args], capture_output=True,
                          text=True, env=e, timeout=60)


@pytest.mark.parametrize("args,needle", [
    (["--help"], "exit codes:"),
    (["login", "--help"], "--qr"),
    (["run", "--help"], "--allow"),
    (["run", "--help"], "--voice-messages"),
])
def test_help(args, needle):
    r = tg_bridge(*args)
    assert r.returncode == 0 and needle in r.stdout
    assert "69" in r.stdout and "78" in r.stdout


def test_no_command_prints_usage_and_exits_2():
    r = tg_bridge()
    assert r.returncode == 2 and "usage: tg-bridge" in r.stdout


@pytest.mark.parametrize("cmd", ["run", "login"])
def test_missing_credentials_is_one_line_and_exit_78(cmd, tmp_path):
    r = tg_bridge(cmd, home=tmp_path)
    assert r.returncode == 78
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "TG_API_ID and TG_API_HASH" in lines[0] and "my.telegram.org" in lines[0]


def test_malformed_api_hash_is_exit_78_and_not_echoed(tmp_path):
    r = tg_bridge("run", env={"TG_API_ID": "123", "TG_API_HASH": "secret-not-hex"}, home=tmp_path)
    assert r.returncode == 78 and "secret-not-hex" not in r.stderr + r.stdout


def test_missing_session_is_one_line_and_exit_69(tmp_path):
    r = tg_bridge("run", "--allow", "1", env={"TG_API_ID": "123", "TG_API_HASH": HASH}, home=tmp_path)
    assert r.returncode == 69
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "tg-bridge login" in lines[0]
    assert str(tmp_path / ".local/state/tgvoice/telegram.session") in lines[0]
    assert HASH not in r.stderr


def test_unsafe_run_directory_is_exit_78(tmp_path):
    session = tmp_path / "s.session"
    session.write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "link")
    r = tg_bridge("run", "--session", str(session), "--run-dir", str(tmp_path / "link"),
                  env={"TG_API_ID": "123", "TG_API_HASH": HASH}, home=tmp_path)
    assert r.returncode == 78 and "symlink" in r.stderr
    assert os.stat(session).st_mode & 0o777 == 0o600      # tightened to 0600


def test_bad_voice_stage_is_one_line_and_exit_78(tmp_path):
    session = tmp_path / "s.session"
    session.write_bytes(b"x")
    r = tg_bridge("run", "--session", str(session), "--run-dir", str(tmp_path / "run"), "--voice-messages",
                  "--voice-stage", "whisper=foo", "--voice-state-dir", str(tmp_path / "vm"),
                  env={"TG_API_ID": "123", "TG_API_HASH": HASH}, home=tmp_path)
    assert r.returncode == 78, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--voice-stage" in lines[0] and "vadseg, sttd, llm-relay, tts-writer" in lines[0]


def test_installed_console_script_if_present():
    exe = Path(sys.executable).parent / "tg-bridge"
    if not exe.exists():
        pytest.skip(f"{exe} not installed: run scripts/setup bridge")
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("tg-bridge ")


def test_exit_codes_are_the_projects():
    """tg-bridge's codes are rows of the one table (fifo-layout.md §4, tgvoice::cli::exit)."""
    import re
    from tgvoice_bridge import cli
    layout = (ROOT / "fifo-layout.md").read_text()
    table = {int(code): name for code, name in re.findall(r"^\| (\d+) \| (\w+) \|", layout, re.M)}
    names = {"EXIT_OK": "ok", "EXIT_FAILURE": "failure", "EXIT_USAGE": "usage", "EXIT_UNAVAILABLE": "unavailable",
             "EXIT_CONFIG": "config"}
    for const, name in names.items():
        assert table[getattr(cli, const)] == name, const
    listed = [int(c) for c in re.findall(r"^  (\d+) ", cli.EXIT_CODES, re.M)]
    assert listed and all(c in table for c in listed), listed


def test_exit_codes_module_is_generated_from_the_table():
    """exit_codes.py is fifo-layout.md §4's table (which the tgvoice crate checks against
    tgvoice::cli::exit::TABLE), so --help cannot drift from it."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("gen_exit_codes", ROOT / "bins/tg-bridge/gen_exit_codes.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    layout = (ROOT / "fifo-layout.md").read_text()
    assert len(gen.table_rows(layout)) >= 7
    assert gen.MODULE.read_text() == gen.render(layout), "run python3 bins/tg-bridge/gen_exit_codes.py"


def test_help_lists_each_code_with_the_tables_meaning():
    from tgvoice_bridge import cli, exit_codes
    r = tg_bridge("--help")
    for code, name, meaning in exit_codes.TABLE:
        if code in (cli.EXIT_OK, cli.EXIT_FAILURE, cli.EXIT_USAGE, cli.EXIT_UNAVAILABLE, cli.EXIT_CONFIG):
            assert f"  {code:<3} {name:<12} {meaning}" in r.stdout, code

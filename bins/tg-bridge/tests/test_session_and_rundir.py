"""Login stores a private session (0700 directory, 0600 file) and says who logged in without
secrets; the run directory and its FIFOs follow fifo-layout.md §1."""
import asyncio
import os
import stat
import types

import pytest

from tgvoice_bridge import rundir, telegram


def test_login_stores_the_session_0600_in_a_0700_directory(tmp_path, monkeypatch):
    session = tmp_path / "state" / "tgvoice" / "telegram.session"
    made = {}

    class StubClient:                 # stands in for kurigram's Client: no network here
        def __init__(self, name, **kw):
            made.update(kw, name=name)
            self.path = os.path.join(kw["workdir"], name + ".session")

        async def __aenter__(self):
            with open(self.path, "wb") as f:   # Pyrogram creates its SQLite file like this
                f.write(b"SQLite format 3\0")
            return self

        async def __aexit__(self, *exc):
            return False

        async def get_me(self):
            return types.SimpleNamespace(first_name="Ada", id=4242)

    import pyrogram
    monkeypatch.setattr(pyrogram, "Client", StubClient)
    who = asyncio.run(telegram.login(12345, "0123456789abcdef0123456789abcdef", session, phone="+100"))
    assert who == "Ada (id 4242)"
    assert stat.S_IMODE(os.stat(session).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(session.parent).st_mode) == 0o700
    assert made["name"] == "telegram" and made["phone_number"] == "+100" and made["hide_password"] is True
    assert telegram.require_session(session) == session


def test_session_path_must_end_in_dot_session(tmp_path):
    with pytest.raises(telegram.ConfigError, match=".session"):
        telegram.make_client(1, "0" * 32, tmp_path / "telegram.db")


def test_default_session_path_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TGVOICE_TG_SESSION", str(tmp_path / "x.session"))
    assert telegram.default_session_path() == tmp_path / "x.session"
    monkeypatch.delenv("TGVOICE_TG_SESSION")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "st"))
    assert telegram.default_session_path() == tmp_path / "st" / "tgvoice" / "telegram.session"


def test_run_dir_is_private_with_fifos_and_refuses_impostors(tmp_path):
    d = rundir.prepare(tmp_path / "run")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for name in ("tg_input.raw", "tg_output.raw", "control.frames", "line.frames", "tg_input.tap", "tg_output.tap"):
        st = os.lstat(d / name)
        assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    os.chmod(d, 0o755)
    rundir.prepare(d)                                   # our own directory: tightened again
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    os.unlink(d / "tg_input.raw")
    (d / "tg_input.raw").write_bytes(b"")               # a regular file where a FIFO belongs
    with pytest.raises(rundir.UnsafeRunDir, match="not a FIFO"):
        rundir.prepare(d)


def test_default_run_dir(monkeypatch):
    monkeypatch.setenv("TGVOICE_RUN_DIR", "/somewhere/run")
    assert str(rundir.default_run_dir()) == "/somewhere/run"
    monkeypatch.delenv("TGVOICE_RUN_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    if os.uname().sysname == "Linux":
        assert str(rundir.default_run_dir("x")) == "/run/user/1000/tgvoice/x"

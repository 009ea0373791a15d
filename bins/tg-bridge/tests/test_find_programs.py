"""The installed bridge finds the stage programs it runs for voice messages (issue 25): pip puts
the package in the venv's site-packages, where its own path says nothing about the checkout, so
scripts/setup records the checkout's target/release in the venv; then PATH; then the checkout
the sources are in. Nothing found is one error naming TGVOICE_BIN."""
import os
import stat
import sys
from pathlib import Path

import pytest

from tgvoice_bridge import cli, msgpipeline
from tgvoice_bridge.msgpipeline import STAGES, stage_commands

HASH = "0123456789abcdef0123456789abcdef"


def fake_programs(d, stages=STAGES):
    d.mkdir(parents=True, exist_ok=True)
    for s in stages:
        p = d / s
        p.write_text("#!/bin/sh\nexit 0\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return d


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The layout pip gives an installed bridge: <venv>/lib/pythonX.Y/site-packages/tgvoice_bridge,
    run by the venv's python (sys.prefix = the venv), no TGVOICE_BIN, and the programs not on PATH."""
    venv = tmp_path / "venv"
    pkg = venv / "lib" / "python3.11" / "site-packages" / "tgvoice_bridge"
    pkg.mkdir(parents=True)
    monkeypatch.setattr(msgpipeline, "__file__", str(pkg / "msgpipeline.py"))
    monkeypatch.setattr(sys, "prefix", str(venv))
    monkeypatch.delenv("TGVOICE_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    return venv


def record(venv, bin_dir):
    f = venv / "share" / "tgvoice" / "bin-dir"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(f"{bin_dir}\n")


def test_installed_bridge_runs_the_programs_setup_recorded(installed, tmp_path):
    built = fake_programs(tmp_path / "checkout" / "target" / "release")
    record(installed, built)
    cmds = stage_commands()
    assert cmds == {s: [str(built / s)] for s in STAGES}


def test_installed_bridge_falls_back_to_path(installed, tmp_path, monkeypatch):
    on_path = fake_programs(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'empty-path'}{os.pathsep}{on_path}")
    record(installed, tmp_path / "gone")            # a checkout that was deleted since
    assert stage_commands() == {s: [str(on_path / s)] for s in STAGES}


def test_tgvoice_bin_wins_and_is_checked(installed, tmp_path, monkeypatch):
    record(installed, fake_programs(tmp_path / "recorded"))
    mine = fake_programs(tmp_path / "mine")
    monkeypatch.setenv("TGVOICE_BIN", str(mine))
    assert stage_commands()["sttd"] == [str(mine / "sttd")]
    (mine / "sttd").unlink()
    with pytest.raises(msgpipeline.ProgramsNotFound, match=r"TGVOICE_BIN=.*mine has no sttd"):
        stage_commands()


def test_an_override_needs_no_program(installed, tmp_path):
    # Only tts-writer is left to find, and it is nowhere: the error names it alone.
    with pytest.raises(msgpipeline.ProgramsNotFound) as e:
        stage_commands(overrides=["vadseg=cat", "sttd=cat", "llm-relay=cat"])
    assert "tts-writer" in str(e.value) and "vadseg" not in str(e.value)
    built = fake_programs(tmp_path / "b", ["tts-writer"])
    record(installed, built)
    assert stage_commands(overrides=["vadseg=cat", "sttd=cat", "llm-relay=cat"])["tts-writer"] == [str(built / "tts-writer")]


def test_nothing_found_is_one_error_naming_tgvoice_bin(installed):
    with pytest.raises(msgpipeline.ProgramsNotFound) as e:
        stage_commands()
    msg = str(e.value)
    assert "TGVOICE_BIN" in msg and "scripts/setup" in msg
    assert str(installed / "share" / "tgvoice" / "bin-dir") in msg    # where it looked


def test_run_from_the_checkout_finds_target_release(tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    built = fake_programs(checkout / "target" / "release")
    src = checkout / "bins" / "tg-bridge" / "src" / "tgvoice_bridge" / "msgpipeline.py"
    found = msgpipeline.find_stage_programs(env={"PATH": ""}, prefix=tmp_path / "no-venv", package_file=src)
    assert found == {s: str(built / s) for s in STAGES}


def test_cli_voice_messages_without_programs_exits_69_naming_tgvoice_bin(installed, tmp_path, monkeypatch, capsys):
    pytest.importorskip("pytgcalls")          # `run` checks py-tgcalls before the voice options
    session = tmp_path / "s.session"
    session.write_bytes(b"x")
    monkeypatch.setenv("TG_API_ID", "123")
    monkeypatch.setenv("TG_API_HASH", HASH)
    rc = cli.main(["run", "--session", str(session), "--run-dir", str(tmp_path / "run"), "--voice-messages",
                   "--voice-state-dir", str(tmp_path / "vm")])
    assert rc == 69
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and " error: voice messages: " in lines[0] and "TGVOICE_BIN" in lines[0], lines


def test_stage_output_format_variables_never_reach_the_message_pipeline(tmp_path, monkeypatch):
    """A shell's `export STTD_FORMAT=text` (for sttd run by hand) would make the voice-message
    sttd write text into the pipe llm-relay reads frames from (issue 29)."""
    monkeypatch.setenv("STTD_FORMAT", "text")
    monkeypatch.setenv("TGVOICE_TTS_FORMAT", "jsonl")
    p = msgpipeline.MessagePipeline(tmp_path, commands={s: [s] for s in STAGES}, env={"VADSEG_FORMAT": "text", "TGVOICE_LLM_PORT": "1"})
    assert not [k for k in p.env if k.endswith("_FORMAT")]
    assert p.env["TGVOICE_LLM_PORT"] == "1"

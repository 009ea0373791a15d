"""The launchd plists and systemd units are well-formed and supervise every stage."""
import configparser
import pathlib
import plistlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
STAGES = ["llm-server", "tgcat", "vadseg", "sttd", "llm-relay", "tts-writer", "tg-bridge"]


def test_every_stage_has_a_valid_keepalive_plist():
    for stage in STAGES:
        path = ROOT / "launchd" / f"com.tgvoice.{stage}.plist"
        plist = plistlib.loads(path.read_bytes())
        assert plist["Label"] == f"com.tgvoice.@INSTANCE@.{stage}"
        argv = plist["ProgramArguments"]
        assert isinstance(argv, list) and argv[-2:] == ["exec", stage]
        assert argv[1] == "@ROOT@/scripts/voicecall"
        assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
        assert isinstance(plist["ThrottleInterval"], int) and 0 < plist["ThrottleInterval"] <= 10
        assert plist["StandardErrorPath"] == f"@LOGS@/{stage}.log"
        assert plist["EnvironmentVariables"]["TGVOICE_VOICECALL_ENV"].endswith("/.config/tgvoice/env")


def test_systemd_unit_restarts_the_stage():
    unit = configparser.ConfigParser(interpolation=None)
    unit.read(ROOT / "launchd" / "systemd" / "tgvoice-stage@.service")
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert service["ExecStart"].endswith("scripts/voicecall exec %i")
    assert float(service["RestartSec"]) <= 1
    assert unit["Install"]["WantedBy"] == "tgvoice.target"


def test_voicecall_knows_every_stage_it_is_asked_to_exec():
    text = (ROOT / "scripts" / "voicecall").read_text()
    for stage in STAGES:
        assert f"        {stage})" in text, stage

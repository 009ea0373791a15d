"""The service files follow pipeline.table: launchd/install.sh makes a well-formed keep-alive
plist for every stage of the table, the systemd unit restarts a stage, scripts/voicecall knows
how to start every stage, and the table's links are fifo-layout.md's links."""
import configparser
import os
import pathlib
import plistlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def table():
    """pipeline.table as a list of dicts (stage, inputs, outputs, starts, tap)."""
    rows = []
    for line in (ROOT / "pipeline.table").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        stage, inputs, outputs, starts, tap = line.split()
        split = lambda f: [] if f == "-" else f.split(",")
        rows.append({"stage": stage, "inputs": split(inputs), "outputs": split(outputs), "starts": starts, "tap": tap})
    return rows


# The stages a service manager runs: all but the phone front (which starts instances itself).
STAGES = [r["stage"] for r in table() if r["starts"] != "phone-front"]


def test_the_table_has_the_pipeline_stages():
    assert STAGES == ["llm-server", "tgcat", "vadseg", "sttd", "llm-relay", "tts-writer", "tg-bridge"]
    assert {r["starts"] for r in table()} == {"local-llm", "pipeline", "telegram", "phone-front"}


def test_every_stage_has_a_valid_keepalive_plist(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("TGVOICE_STATE_DIR", None)
    for stage in STAGES:
        out = subprocess.run(["bash", str(ROOT / "launchd" / "install.sh"), "--instance", "line1", "--print-plist", stage],
                             env=env, capture_output=True, check=True).stdout
        plist = plistlib.loads(out)
        assert plist["Label"] == f"com.tgvoice.line1.{stage}"
        argv = plist["ProgramArguments"]
        assert isinstance(argv, list) and argv[-2:] == ["exec", stage]
        assert argv[1] == f"{ROOT}/scripts/voicecall" and argv[2:4] == ["--instance", "line1"]
        assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
        assert isinstance(plist["ThrottleInterval"], int) and 0 < plist["ThrottleInterval"] <= 10
        assert plist["StandardErrorPath"] == f"{tmp_path}/state/tgvoice/line1/logs/{stage}.log"
        assert plist["EnvironmentVariables"]["TGVOICE_VOICECALL_ENV"] == f"{tmp_path}/.config/tgvoice/env"
        assert "@" not in out.decode(), "a placeholder was left in the plist"


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
    body = text[text.index("stage_argv() {"):text.index("phone_stage() {")]
    labels = {name for case in re.findall(r"^\s+([\w|-]+)\)", body, re.M) for name in case.split("|")}
    for row in table():
        assert row["stage"] in labels, row["stage"]


def test_the_tables_links_are_the_run_directory_links():
    layout = (ROOT / "fifo-layout.md").read_text()
    links = set(re.findall(r"^\| `([a-z_]+\.(?:raw|frames))` \|", layout, re.M))
    assert len(links) == 9, links  # the seven of the main path, played.frames and line.frames
    writers = [link for r in table() for link in r["outputs"]]
    readers = [link for r in table() for link in r["inputs"]]
    assert sorted(writers) == sorted(links), "each link has exactly one writer"
    assert sorted(readers) == sorted(links), "each link has exactly one reader"
    taps = re.search(r"^`tg_input\.tap`.*$", layout, re.M).group(0)
    for r in table():
        if r["outputs"]:
            stem = r["outputs"][0].split(".")[0]
            assert f"`{stem}.tap`" in taps, stem
            assert r["tap"] == "json" or re.fullmatch(r"pcm/\d+", r["tap"]), r
        else:
            assert r["tap"] == "-", r

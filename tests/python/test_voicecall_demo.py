"""`voicecall demo --tools` and TGVOICE_TRANSFER_TO reach llm-relay (issue 26 parts 5 and 6):
the demo's llm-relay runs with the tools file (TGVOICE_LLM_TOOLS, examples/mcp.json by default)
and the project's venv on its PATH (where scripts/setup installs mcp-server-time), and each
NAME=NUMBER of TGVOICE_TRANSFER_TO becomes one `--transfer-to`. Stand-in programs take the
stages' places (test_readiness.py), so this needs no build, model or network; the real tools
path is tested in bins/llm-relay/tests/tools.rs."""
import json
import os
import pathlib
import shutil

from test_readiness import ROOT, Instance, write_exe

RECORDING_RELAY = """#!/bin/bash
{ printf 'TOOLS=%s\\n' "${TGVOICE_LLM_TOOLS:-}"; printf 'PATH=%s\\n' "$PATH"; printf '%s\\n' "$@"; } > "$RECORD"
[ -n "$TGVOICE_NOTIFY_FD" ] && { printf '\\n' >&"$TGVOICE_NOTIFY_FD"; exec {TGVOICE_NOTIFY_FD}>&-; }
exec sleep 60
"""

CALLSIM = """#!/bin/bash
echo '{"turn":1,"heard":"what time is it in tokyo","answer":"It is nine in the evening.","voice_to_voice_ms":1234.0}'
"""


def demo(tmp_path, *args, **env):
    inst = Instance(tmp_path)
    record = tmp_path / "llm-relay.args"
    write_exe(tmp_path / "bin" / "llm-relay", RECORDING_RELAY)
    write_exe(tmp_path / "bin" / "callsim", CALLSIM)
    wav = tmp_path / "question.wav"
    wav.write_bytes(b"RIFF")
    inst.env.update(RECORD=str(record), TGVOICE_DEMO_SKIP_SETUP="1", TGVOICE_VENV=str(tmp_path / "venv"), **env)
    inst.env.pop("TGVOICE_LLM_TOOLS", None)
    r = inst.vc("demo", *args, str(wav), timeout=120)
    assert r.returncode == 0, r.stderr
    lines = record.read_text().splitlines()
    return r, lines[0].removeprefix("TOOLS="), lines[1].removeprefix("PATH="), lines[2:]


def test_demo_tools_gives_llm_relay_the_example_servers_and_the_venv(tmp_path):
    r, tools, path, argv = demo(tmp_path, "--tools", TGVOICE_TRANSFER_TO="desk=+15550100, sales=+15551230000")
    assert tools == str(ROOT / "examples" / "mcp.json")
    assert path.split(":")[0] == str(tmp_path / "venv" / "bin")
    assert "answered:  It is nine in the evening." in r.stdout
    # An API key is set (a tool-capable LLM): no warning about a model that cannot call tools.
    assert "cannot call tools" not in r.stderr
    i = argv.index("--transfer-to")
    assert argv[i:i + 4] == ["--transfer-to", "desk=+15550100", "--transfer-to", "sales=+15551230000"], argv
    # The example file names a server the project's setup installs (scripts/provision/llm-tools.pip).
    servers = json.loads((ROOT / "examples" / "mcp.json").read_text())["mcpServers"]
    assert servers["time"]["command"] == "mcp-server-time"
    assert "mcp-server-time" in (ROOT / "scripts" / "provision" / "llm-tools.pip").read_text()


def test_demo_without_tools_passes_no_tools_file_and_no_transfer_numbers(tmp_path):
    r, tools, _, argv = demo(tmp_path)
    assert tools == ""
    assert "--transfer-to" not in argv


def test_demo_tools_with_another_file(tmp_path):
    other = tmp_path / "mine.json"
    other.write_text('{"mcpServers": {}}')
    _, tools, _, _ = demo(tmp_path, "--tools", str(other))
    assert tools == str(other)


def test_demo_tools_says_in_one_line_when_the_llm_cannot_call_tools(tmp_path):
    r, tools, _, _ = demo(tmp_path, "--tools", TGVOICE_LLM_MODEL="SmolLM2-135M-Instruct")
    assert tools == str(ROOT / "examples" / "mcp.json")
    assert r.stderr.count("cannot call tools") == 1, r.stderr

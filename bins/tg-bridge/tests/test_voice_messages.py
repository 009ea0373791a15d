"""Voice messages end to end on the fake backend: real OGG/Opus voice notes made from Piper
speech go through the real stages (vadseg, sttd, whisper tiny.en; llm-relay with the local
llama.cpp server; tts-writer with Piper) and come back as voice notes, which are decoded again
with ffmpeg and transcribed by `tgcat | vadseg | sttd` to check what they say."""
import asyncio
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import FakeCallBackend
import tgvoice_frames
from tgvoice_bridge import voicecodec
from tgvoice_bridge.bridge import Bridge
from tgvoice_bridge.msgpipeline import MessagePipeline, stage_commands
from tgvoice_bridge.voicemsg import IncomingMessage, polite

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("TGVOICE_BIN", ROOT / "target" / "release"))
USER, STRANGER, GROUP = 111, 999, -100123
REPLY_TIMEOUT_S = 120


def need(*names):
    for n in names:
        if not (BIN / n).exists():
            pytest.fail(f"{BIN / n} missing: cargo build --release -p {n}")


@pytest.fixture(scope="module")
def llm_port(tmp_path_factory):
    """scripts/llm-server (SmolLM2-135M on llama.cpp) on a free loopback port."""
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("llm") / "server.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([str(ROOT / "scripts" / "llm-server"), "--port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=f, stderr=f)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"llm-server exited: {log.read_text()[-2000:]}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, f"llm-server not ready in 90 s: {log.read_text()[-2000:]}"
                time.sleep(0.3)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def piper_note(tmp_path_factory):
    """OGG/Opus voice notes of Piper speech: note(text) → bytes (cached)."""
    need("tts-writer")
    cache = {}

    def note(text):
        if text not in cache:
            state = tmp_path_factory.mktemp("piper")
            p = subprocess.run([str(BIN / "tts-writer"), "--engine", "piper", "--unpaced", "--state-dir", str(state), "-q"],
                               input=(text + "\n").encode(), capture_output=True, timeout=120)
            assert p.returncode == 0 and p.stdout, p.stderr.decode()[-2000:]
            cache[text] = voicecodec.encode(p.stdout)
        return cache[text]
    return note


def transcribe_note(ogg):
    """Decode a voice note with ffmpeg and transcribe it with tgcat | vadseg | sttd. (Read at file
    speed, a pause would let the next turn's speech-start make sttd drop the turn before it, so
    vadseg keeps pauses under 5 s inside one turn, as for messages.)"""
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "48000", "pipe:1"],
                         input=ogg, capture_output=True, timeout=60, check=True).stdout
    p = subprocess.run(f"'{BIN}/tgcat' - | '{BIN}/vadseg' -q --turn-model off --eot-silence 5000 | '{BIN}/sttd' -q", shell=True,
                       input=pcm, capture_output=True, timeout=180)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    import io
    buf, texts = io.BytesIO(p.stdout), []
    while (f := tgvoice_frames.read_frame(buf)) is not None:
        if f[0] == "event" and f[1].get("type") == "transcript" and f[1].get("final", True):
            texts.append(f[1]["text"])
    return " ".join(texts)


def words(text):
    return re.findall(r"[a-z0-9']+", text.lower().replace("’", "'"))


def recovered(said, heard):
    """Fraction of the words of ``said`` found in ``heard`` (as in tts-writer's roundtrip test)."""
    want, got = words(said), set(words(heard))
    return sum(w in got for w in want) / max(1, len(want))


def probe(ogg):
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".ogg") as f:       # (no duration from a pipe)
        f.write(ogg)
        f.flush()
        p = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                            "format=format_name,duration:stream=codec_name,sample_rate,channels",
                            "-of", "json", f.name], capture_output=True, timeout=30, check=True)
    info = json.loads(p.stdout)
    return info["format"], info["streams"][0]


# llm-relay's DEFAULT_SYSTEM_PROMPT (bins/llm-relay/src/config.rs).
GENERAL_PROMPT = ("You are a friendly voice assistant talking to someone on a phone call. "
                  "Your words are spoken aloud, so answer in one to three short, natural sentences. "
                  "Use plain spoken language only: no lists, no markdown, no code, no links, no emoji. "
                  "If you did not understand, ask a short question.")


def make_pipeline(state, llm_port):
    need("vadseg", "sttd", "llm-relay", "tts-writer")
    # The same words, the same reply: temperature 0 and a pinned system prompt (llm-relay's
    # general one, which these questions were calibrated with; SmolLM2-135M's answers to "What
    # is my dog called?" depend on the prompt, and the local default may be tuned again).
    return MessagePipeline(state, stage_commands(BIN), env={"TGVOICE_LLM_PORT": str(llm_port), "TGVOICE_LLM_PROVIDER": "local",
                                                                "TGVOICE_LLM_TEMPERATURE": "0",
                                                                "TGVOICE_LLM_SYSTEM_PROMPT": GENERAL_PROMPT})


def run_bridge(backend, run_dir, pipeline, messages, expect_replies, allow=(str(USER),), ring=None, **voice):
    """Start a bridge with voice messages (first answering a call from ``ring``, if given),
    deliver ``messages``, wait for ``expect_replies`` voice notes or texts (and then a moment for
    any extra one). ``b.call_at_end`` is the call still up at the end, if any."""
    async def scenario():
        b = Bridge(backend, run_dir, mode="answer", allow=list(allow), voice=dict(pipeline=pipeline, **voice))
        await b.start()
        if ring is not None:
            await backend.ring(ring)
        try:
            for m in messages:
                await backend.message(m)
            deadline = time.monotonic() + REPLY_TIMEOUT_S * max(1, expect_replies)
            while len(backend.voices) + len(backend.texts) < expect_replies and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            b.call_at_end = b.current
            return b
        finally:
            await b.stop()
    return asyncio.run(scenario())


def whisper_threads(state):
    """For each sttd of the message pipeline that transcribed something, in order: the thread
    count its start-up line gave."""
    threads, used = {}, []
    for line in (state / "logs" / "sttd.log").read_text().splitlines():
        pid = re.search(r"sttd\[(\d+)\]", line)
        if pid and (m := re.search(r"loaded .* (\d+) threads", line)):
            threads[pid[1]] = int(m[1])
        elif pid and re.search(r"info: turn \d+: \"", line) and pid[1] not in used:
            used.append(pid[1])
    return [threads.get(p) for p in used]


def voice_message(mid, ogg, sender=USER, chat=None, private=True, addressed=False, duration=None):
    return IncomingMessage(chat_id=chat or sender, message_id=mid, sender_id=sender, private=private,
                           addressed=addressed, voice=True, duration=duration, handle=ogg)


def test_a_voice_note_is_answered_with_a_voice_note_that_says_the_reply(run_dir, tmp_path, llm_port, piper_note, drain):
    ogg = piper_note("Why is the sky blue?")
    backend = FakeCallBackend()
    control = drain(run_dir / "control.frames")
    before = sorted(os.listdir(run_dir))
    # the sender is in a call with the account meanwhile: the note must not touch the call
    b = run_bridge(backend, run_dir, make_pipeline(tmp_path / "state", llm_port), [voice_message(7, ogg)], 1,
                   ring=USER, caption=True)
    assert b.call_at_end is not None and b.call_at_end.chat_id == USER, "the call did not survive the voice note"
    # whisper decoded the note on one thread, beside the call (two spin-waiting threads starve it)
    assert whisper_threads(tmp_path / "state") == [1]
    assert sorted(os.listdir(run_dir)) == before                  # nothing of the note's pipeline in $RUN
    time.sleep(0.2)
    events = []
    import io
    buf = io.BytesIO(control.close())
    while (f := tgvoice_frames.read_frame(buf)) is not None:
        events.append(f[1]["type"])
    assert events == ["call-start", "call-end"], events           # (call-end: the bridge's shutdown)
    assert len(backend.voices) == 1, backend.log
    sent = backend.voices[0]
    assert (sent["chat_id"], sent["reply_to"]) == (USER, 7)
    fmt, stream = probe(sent["ogg"])
    assert fmt["format_name"] == "ogg" and stream["codec_name"] == "opus", (fmt, stream)
    assert (int(stream["sample_rate"]), stream["channels"]) == (48000, 1)
    assert abs(float(fmt["duration"]) - sent["duration"]) <= 1.0
    assert len(sent["waveform"]) == 63 and max(sent["waveform"]) > 0       # 100 × 5 bits
    reply = b.voice.replies[0]
    print("steps", {k: round(v) for k, v in reply.steps.items()}, repr(reply.text))
    assert reply.kind == "answer" and reply.text, reply
    assert recovered("why is the sky blue", reply.transcript) >= 0.8, reply.transcript
    assert sent["caption"] == f"You said: {reply.transcript}\n\n{reply.text}"
    heard = transcribe_note(sent["ogg"])
    assert recovered(reply.text, heard) >= 0.8, f"reply {reply.text!r}, the voice note says {heard!r}"


def test_only_allowed_senders_and_addressed_group_messages_get_replies(run_dir, tmp_path, llm_port, piper_note):
    ogg = piper_note("Why is the sky blue?")
    backend = FakeCallBackend()
    msgs = [voice_message(1, ogg, sender=STRANGER),                                       # not allowed
            voice_message(2, ogg, chat=GROUP, private=False, addressed=False),          # group, not addressed
            voice_message(3, ogg, sender=STRANGER, chat=GROUP, private=False, addressed=True),
            voice_message(4, ogg, chat=GROUP, private=False, addressed=True)]           # the one to answer
    b = run_bridge(backend, run_dir, make_pipeline(tmp_path / "state", llm_port), msgs, 1, groups=True)
    assert [(v["chat_id"], v["reply_to"]) for v in backend.voices] == [(GROUP, 4)]
    assert [e for e in backend.log if e[0] == "download"] == [("download", 4)]   # strangers' files never fetched
    assert [m.message_id for m, _ in b.voice.ignored] == [1, 2, 3]

    backend = FakeCallBackend()           # groups are opt-in: without --voice-groups, nothing
    b = run_bridge(backend, run_dir, make_pipeline(tmp_path / "state2", llm_port), msgs[3:], 0)
    assert backend.voices == [] and [m.message_id for m, _ in b.voice.ignored] == [4]

    backend = FakeCallBackend()           # empty allowlist: default deny
    b = run_bridge(backend, run_dir, make_pipeline(tmp_path / "state3", llm_port), [voice_message(5, ogg)], 0, allow=())
    assert backend.voices == [] and len(b.voice.ignored) == 1


def test_corrupt_over_long_and_silent_notes_get_their_polite_spoken_replies(run_dir, tmp_path, llm_port, piper_note):
    good = piper_note("Why is the sky blue?")
    corrupt = good[:60] + bytes(range(256)) * 8                          # an OGG header, then garbage
    long_note = piper_note("This is a long voice message. " * 3 + "It goes on and on, well past the limit "
                           "that this test sets, so the assistant must decline it politely.")
    silence = voicecodec.encode(b"\0\0" * 48000 * 3)
    backend = FakeCallBackend()
    msgs = [voice_message(1, corrupt), voice_message(2, long_note),              # limit 6 s, found by decoding
            voice_message(3, good, duration=130.0), voice_message(4, silence)]  # declared too long: not fetched
    b = run_bridge(backend, run_dir, make_pipeline(tmp_path / "state", llm_port), msgs, 4, max_seconds=6)
    kinds = [(r.message.message_id, r.kind) for r in b.voice.replies]
    assert kinds == [(1, "undecodable"), (2, "too-long"), (3, "too-long"), (4, "no-speech")], kinds
    assert ("download", 3) not in backend.log
    assert [v["reply_to"] for v in backend.voices] == [1, 2, 3, 4]
    for v, kind in zip(backend.voices, ["undecodable", "too-long", "too-long", "no-speech"]):
        said = polite(kind, 6)
        heard = transcribe_note(v["ogg"])
        assert recovered(said, heard) >= 0.8, f"{kind}: should say {said!r}, says {heard!r}"


def history_sizes(state, chat):
    """Messages of history llm-relay sent with each request for ``chat`` (from its log)."""
    log = (state / "logs" / "llm-relay.log").read_text()
    return [int(n) for n in re.findall(r"turn \d+: (\d+) message\(s\) of history", log)]


def conversation(state, chat):
    d = state / "chats" / str(chat)
    current = (d / "current-conversation").read_text().strip()
    return [json.loads(line) for line in (d / "conversations" / f"{current}.jsonl").read_text().splitlines() if line.strip()]


def test_messages_are_answered_in_order_in_one_conversation_per_chat_across_restarts(run_dir, tmp_path, llm_port, piper_note):
    state = tmp_path / "state"
    questions = ["My dog is called Max.", "What is my dog called?", "Thank you very much."]
    notes = [piper_note(q) for q in questions]
    backend = FakeCallBackend()
    b = run_bridge(backend, run_dir, make_pipeline(state, llm_port),
                   [voice_message(i + 1, n) for i, n in enumerate(notes)], 3)
    assert [v["reply_to"] for v in backend.voices] == [1, 2, 3]
    assert [r.kind for r in b.voice.replies] == ["answer"] * 3
    conv = conversation(state, USER)
    assert [e["role"] for e in conv] == ["user", "assistant"] * 3
    for q, e in zip(questions, conv[0::2]):
        assert recovered(q, e["text"]) >= 0.8, (q, e["text"])
    assert [e["text"] for e in conv[1::2]] == [r.text for r in b.voice.replies]
    # the second request carried the first exchange (user, assistant, user) …
    assert history_sizes(state, USER) == [1, 3, 5]
    # … and the model used it
    assert "max" in words(b.voice.replies[1].text), b.voice.replies[1].text
    # no call: whisper had both cores
    assert whisper_threads(state) == [2, 2, 2]

    # a restarted bridge continues the chat's conversation; /reset starts a new one
    backend = FakeCallBackend()
    reset = IncomingMessage(chat_id=USER, message_id=5, sender_id=USER, private=True, text="/reset")
    b = run_bridge(backend, run_dir, make_pipeline(state, llm_port),
                   [voice_message(4, notes[1]), reset, voice_message(6, notes[1])], 3)
    assert [v["reply_to"] for v in backend.voices] == [4, 6] and [t["reply_to"] for t in backend.texts] == [5]
    assert history_sizes(state, USER) == [1, 3, 5, 7, 1]
    assert len(conversation(state, USER)) == 2


def test_llm_down_gets_the_spoken_apology(run_dir, tmp_path, piper_note):
    import socket
    with socket.socket() as s:                 # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    backend = FakeCallBackend()
    b = run_bridge(backend, run_dir, make_pipeline(tmp_path / "state", dead),
                   [voice_message(1, piper_note("Why is the sky blue?"))], 1)
    assert len(backend.voices) == 1
    reply = b.voice.replies[0]
    assert reply.kind == "llm-down" and "sorry" in words(reply.text), reply
    assert recovered(reply.text, transcribe_note(backend.voices[0]["ogg"])) >= 0.8

"""The pipeline that answers voice messages: the same stage programs as a call (vadseg, sttd,
llm-relay, tts-writer), run by the bridge on private pipes, fed as fast as they can take it.

    decoded message ─▶ vadseg ─▶ sttd ─▶ (bridge) ─▶ llm-relay ─▶ (bridge) ─▶ tts-writer ─▶ (bridge)
      audio frames                 transcripts          reply-chunk/end         audio frames +
                                                                                reply-played

- **vadseg | sttd, one pair per message.** The frame protocol's own end-of-stream rule marks
  where a message ends: at EOF on stdin vadseg closes the open turn and sttd finishes every
  transcript it was asked for, then both exit. So every transcript of the message is known
  when sttd's output ends, and "no speech" is simply "no transcript". Whisper's model load and
  warm-up take ~1–2 s, so the next pair is started as soon as a reply went out (``prepare``):
  the next message finds it ready, unless it comes within those seconds. whisper gets two
  threads when no call is live, one beside a call (``call_live``, set by the bridge).
- **llm-relay, one per message,** with the chat's own state directory
  (``<state>/chats/<chat>``): llm-relay continues the conversation recorded there, so each chat
  has its own conversation across messages and restarts; a ``call-start`` starts a new one
  (``/reset``). It starts in ~10 ms; at EOF it finishes the reply, then exits. The message's
  transcripts go to it as one user message.
- **tts-writer, one for all messages** (the Piper voice takes ~2 s to load), with
  ``--unpaced --output-format frames``: audio comes out as fast as it is synthesised, and a
  ``reply-played`` event after each reply's last audio says where the reply ends.

Every stage runs at ``nice`` +10 (a call in progress keeps its CPU) and logs to
``<state>/logs/<stage>.log``. The audio fed to vadseg is stamped as if spoken just before the
message arrived, so the turn trace reads as for a call (speech end = message received).
"""
import io
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import tgvoice_frames  # python/tgvoice_frames.py, installed beside the bridge (80-bridge.sh)
from .voicecodec import RATE, StreamEncoder

log = logging.getLogger("tg-bridge")

STAGES = ("vadseg", "sttd", "llm-relay", "tts-writer")
FRAME_SAMPLES = RATE // 50                 # 20 ms audio frames, like tgcat
# A pause this long inside a message still belongs to the same turn. (A message ends at EOF, so
# the call's end of turn — a short silence, or the turn model's verdict — buys nothing here, and
# a later turn's speech-start would make sttd drop an earlier turn it had not finished. So the
# turn model is off too: it would only cut the message at its pauses and cost CPU.)
MESSAGE_EOT_SILENCE_MS = 5000
# whisper.cpp's worker threads spin-wait for each other: on this 2-core machine at load 12–16,
# 5 s of speech took 65–74 s with 2 threads and 4–5 s with 1. So a message decoded while a call
# is live (beside it, at lower priority, where that contention is the normal case) gets one
# thread; with no call, both cores are free and two threads halve the decode (5 s of speech,
# quiet machine: 2650 → 1389 ms).
STT_THREADS_BESIDE_A_CALL = 1
STT_THREADS_ALONE = 2
FALLBACK_APOLOGY = "Sorry, something went wrong while answering. Please try again."


class PipelineError(Exception):
    pass


@dataclass
class Answer:
    transcript: str = ""               # what the message said ("" = no speech)
    reply: str = ""                    # the text of the spoken reply
    pcm: bytes = b""                   # the reply, s16le 48 kHz mono
    ogg: bytes = b""                   # the same, encoded as OGG/Opus while it was synthesised
    llm_error: bool = False            # llm-relay spoke its apology (the LLM failed)
    steps: dict = field(default_factory=dict)   # ms per step


# Where scripts/setup (provision/80-bridge.sh) records, inside the venv it installs this package
# into, the directory of the checkout's built programs: an installed package cannot find the
# checkout from its own path (it lives in the venv's site-packages).
RECORDED_BIN_DIR = Path("share") / "tgvoice" / "bin-dir"


class ProgramsNotFound(PipelineError):
    pass


def _executable(path):
    return path.is_file() and os.access(path, os.X_OK)


def find_stage_programs(stages=STAGES, env=None, prefix=None, package_file=None):
    """The path of each stage program, from the first place that has them all: ``$TGVOICE_BIN``
    (if set, the only place looked at), the directory scripts/setup recorded in the venv
    (``<sys.prefix>/share/tgvoice/bin-dir``), ``PATH``, then ``target/release`` of the checkout
    this file is in (a bridge run from its sources). Raises ProgramsNotFound naming
    ``TGVOICE_BIN`` and every place tried."""
    env = os.environ if env is None else env
    stages = list(stages)
    if not stages:
        return {}
    explicit = env.get("TGVOICE_BIN")
    if explicit:
        d = Path(explicit).expanduser()
        missing = [s for s in stages if not _executable(d / s)]
        if missing:
            raise ProgramsNotFound(
                f"TGVOICE_BIN={explicit} has no {', '.join(missing)}: point TGVOICE_BIN at the directory of the "
                f"built programs (<checkout>/target/release) or build them there (scripts/setup build)")
        return {s: str(d / s) for s in stages}
    tried = []
    record = Path(sys.prefix if prefix is None else prefix) / RECORDED_BIN_DIR
    try:
        recorded = Path(record.read_text().strip())
    except OSError:
        recorded = None
        tried.append(f"{record} (not there: scripts/setup did not install this bridge)")
    if recorded is not None:
        if all(_executable(recorded / s) for s in stages):
            return {s: str(recorded / s) for s in stages}
        tried.append(f"{recorded} (recorded in {record}; not built there)")
    on_path = {s: shutil.which(s, path=env.get("PATH", os.defpath)) for s in stages}
    if all(on_path.values()):
        return on_path
    tried.append("PATH")
    # bins/tg-bridge/src/tgvoice_bridge/msgpipeline.py → the checkout's target/release
    here = Path(package_file or __file__).resolve()
    if len(here.parents) > 4:
        guess = here.parents[4] / "target" / "release"
        if all(_executable(guess / s) for s in stages):
            return {s: str(guess / s) for s in stages}
        tried.append(str(guess))
    raise ProgramsNotFound(
        f"cannot find the stage programs {', '.join(stages)} (looked in: {'; '.join(tried)}): set TGVOICE_BIN "
        f"to the directory that has them (<checkout>/target/release), or run scripts/setup in the checkout")


def stage_commands(bin_dir=None, overrides=(), env=None, prefix=None, package_file=None):
    """argv per stage: an override ``STAGE=COMMAND LINE`` (e.g. ``sttd=sttd --model
    ggml-base.en.bin``), else the program in ``bin_dir``, else the one find_stage_programs finds.
    Raises ValueError for a bad override, ProgramsNotFound when a program is nowhere."""
    cmds = {}
    for spec in overrides:
        stage, sep, cmdline = spec.partition("=")
        if not sep or stage not in STAGES or not cmdline.strip():
            raise ValueError(f"--voice-stage {spec!r}: expected STAGE=COMMAND with STAGE one of {', '.join(STAGES)}")
        cmds[stage] = shlex.split(cmdline)
    rest = [s for s in STAGES if s not in cmds]
    if bin_dir is not None:
        cmds.update({s: [str(Path(bin_dir) / s)] for s in rest})
    else:
        found = find_stage_programs(rest, env=env, prefix=prefix, package_file=package_file)
        cmds.update({s: [found[s]] for s in rest})
    return {s: cmds[s] for s in STAGES}


def _nice(n):
    return lambda: os.nice(n)


class _Pending:
    """A reply tts-writer is speaking: its audio so far, fed to the encoder as it comes."""

    def __init__(self):
        self.done = threading.Event()
        self.record = None                 # the reply-played event
        self.pcm = bytearray()
        self.encoder = StreamEncoder()


class _Front:
    """One vadseg | sttd pair, waiting on its stdin."""

    def __init__(self, pipeline, threads):
        p = pipeline
        self.threads = threads
        self.vad = p._spawn("vadseg", ["--turn-model", "off", "--eot-silence", str(MESSAGE_EOT_SILENCE_MS)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        # No speculative decodes: the whole message arrives at once, so a "pause" in its arrival
        # is only the scheduler, and each such decode (one thread) held up the real one.
        self.stt = p._spawn("sttd", ["--threads", str(threads), "--speculate-after", "0"],
                            stdin=self.vad.stdout, stdout=subprocess.PIPE)
        self.vad.stdout.close()              # sttd holds it now
        self.started = time.monotonic()

    def kill(self):
        for proc in (self.vad, self.stt):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for f in (self.vad.stdin, self.stt.stdout):
            f.close()


class MessagePipeline:
    def __init__(self, state_dir, commands=None, niceness=10, env=None, reply_timeout_s=120):
        self.state_dir = Path(state_dir)
        # Is a call live? (tg-bridge sets it: the whisper thread count depends on it.)
        self.call_live = lambda: False
        self.commands = commands or stage_commands()
        self.niceness = niceness
        # The stages talk frames on these pipes, whatever a shell exported for pipelines run by
        # hand (STTD_FORMAT=text …, fifo-layout.md §1 "Output formats").
        self.env = {k: v for k, v in dict(os.environ, **(env or {})).items() if not k.endswith("_FORMAT")}
        self.reply_timeout_s = reply_timeout_s
        self._front = None
        self._tts = None
        self._tts_reader = None
        self._tts_lock = threading.Lock()
        self._pending = {}                 # tts turn → _Pending
        self._turn = int(time.time() * 1000)
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- processes -------------------------------------------------------------------
    def _spawn(self, stage, args, **popen):
        logf = open(self.state_dir / "logs" / f"{stage}.log", "ab")
        try:
            return subprocess.Popen(self.commands[stage] + args, stderr=logf, env=self.env, close_fds=True,
                                    preexec_fn=_nice(self.niceness), **popen)
        except FileNotFoundError:
            raise PipelineError(f"{self.commands[stage][0]} not found: build it (cargo build --release -p {stage}) "
                                f"or set TGVOICE_BIN to the directory of the built programs") from None
        finally:
            logf.close()

    def start(self):
        """Start tts-writer and the first vadseg | sttd pair (both load their models now)."""
        self._ensure_tts()
        self.prepare()

    def _stt_threads(self):
        return STT_THREADS_BESIDE_A_CALL if self.call_live() else STT_THREADS_ALONE

    def prepare(self):
        """Start the vadseg | sttd pair for the next message, unless one is waiting. Called after
        each reply went out, so its model load does not compete with answering."""
        if self._front is None:
            self._front = _Front(self, self._stt_threads())

    def _ensure_tts(self):
        if self._tts is not None and self._tts.poll() is None:
            return
        if self._tts is not None:
            log.warning("voice messages: tts-writer exited (status %s); starting it again", self._tts.returncode)
        self._tts = self._spawn("tts-writer", ["--unpaced", "--output-format", "frames", "--state-dir", str(self.state_dir)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._tts_reader = threading.Thread(target=self._read_tts, args=(self._tts,), daemon=True, name="tts-reader")
        self._tts_reader.start()

    def _read_tts(self, proc):
        """Collect each reply's audio until its reply-played event (tts-writer's stdout)."""
        out = proc.stdout
        while True:
            try:
                f = tgvoice_frames.read_frame(out)
            except (ValueError, OSError) as e:
                log.error("voice messages: bad output from tts-writer (%s); restarting it", e)
                proc.kill()
                f = None
            if f is None:
                break
            kind, meta, data = f
            with self._tts_lock:
                p = self._pending.get(meta.get("turn"))
            if p is None:
                continue                       # not a reply anybody waits for (any more)
            if kind == "audio":
                p.pcm.extend(data)
                try:
                    p.encoder.feed(data)
                except OSError as e:           # finish() reports it
                    log.debug("voice messages: encoder: %s", e)
            elif meta.get("type") == "reply-played":
                p.record = meta
                p.done.set()
        with self._tts_lock:                   # tts-writer is gone: nobody waits forever
            for p in self._pending.values():
                p.done.set()

    def stop(self):
        if self._front is not None:
            self._front.kill()
            self._front = None
        if self._tts is not None:
            try:
                self._tts.stdin.close()
            except OSError:
                pass
            try:
                self._tts.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._tts.kill()
                self._tts.wait()
            self._tts = None
        if self._tts_reader is not None:
            self._tts_reader.join(2)

    # -- speaking --------------------------------------------------------------------
    def _new_turn(self):
        # tts-writer drops replies of turns below its cancel barrier; ours only go up.
        self._turn = max(self._turn + 1, int(time.time() * 1000))
        return self._turn

    def _expect(self, turn):
        p = _Pending()
        with self._tts_lock:
            self._pending[turn] = p
        return p

    def _to_tts(self, event):
        buf = io.BytesIO()
        tgvoice_frames.write_event(buf, event)
        try:
            self._tts.stdin.write(buf.getvalue())
            self._tts.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise PipelineError(f"tts-writer is not reading ({e})") from None

    def _forget(self, turn, p):
        """Give up on a reply (an error before it was asked for or finished)."""
        with self._tts_lock:
            self._pending.pop(turn, None)
        p.encoder.abort()

    def _await(self, turn, p):
        """The reply's audio and its OGG/Opus encoding, once tts-writer says it ended."""
        ok = p.done.wait(self.reply_timeout_s)
        with self._tts_lock:
            self._pending.pop(turn, None)
        if not ok or p.record is None:
            p.encoder.abort()
            raise PipelineError("tts-writer did not finish the reply" + ("" if ok else f" within {self.reply_timeout_s} s"))
        try:
            ogg = p.encoder.finish()
        except RuntimeError as e:
            raise PipelineError(str(e)) from None
        return bytes(p.pcm), ogg

    def speak(self, text):
        """Speak ``text`` (a polite reply) with tts-writer: (s16le 48 kHz mono, OGG/Opus)."""
        self._ensure_tts()
        turn = self._new_turn()
        w = self._expect(turn)
        try:
            self._to_tts({"type": "reply-chunk", "turn": turn, "seq": 0, "text": text})
            self._to_tts({"type": "reply-end", "turn": turn, "cancelled": False})
        except PipelineError:
            self._forget(turn, w)
            raise
        return self._await(turn, w)

    # -- conversations ---------------------------------------------------------------
    def chat_dir(self, chat):
        return self.state_dir / "chats" / str(chat)

    def _relay(self, chat):
        d = self.chat_dir(chat)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self._spawn("llm-relay", ["--state-dir", str(d)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def reset(self, chat):
        """Start a new conversation for ``chat`` (llm-relay's call-start), kept on disk."""
        relay = self._relay(chat)
        buf = io.BytesIO()
        tgvoice_frames.write_event(buf, {"type": "call-start", "call": f"chat{chat}-reset", "peer": str(chat)})
        out, _ = relay.communicate(buf.getvalue(), timeout=30)
        if relay.returncode != 0:
            raise PipelineError(f"llm-relay exited with {relay.returncode} while resetting chat {chat}")

    # -- answering -------------------------------------------------------------------
    def answer(self, pcm, chat, received_us=None):
        """Answer one message (s16le 48 kHz mono) in ``chat``'s conversation. Blocking; run it
        in a worker thread. An Answer with an empty transcript means no speech was found."""
        steps, t0 = {}, time.monotonic()
        self._ensure_tts()
        front, self._front = self._front, None
        threads = self._stt_threads()
        if front is not None and front.threads != threads:
            # A call began or ended since the pair was started (costs a model load, ~0.3 s).
            log.info("voice messages: a call is %s; whisper gets %d thread(s)", "live" if self.call_live() else "over", threads)
            front.kill()
            front = None
        if front is None or front.vad.poll() is not None or front.stt.poll() is not None:
            if front is not None:
                front.kill()
            front = _Front(self, threads)
        relay = self._relay(chat)                       # starts while sttd works
        try:
            transcripts, stt_trace = self._transcribe(front, pcm, received_us)
        except Exception:
            relay.kill()
            relay.wait()
            raise
        finally:
            front.kill()
        steps["vad+stt"] = (time.monotonic() - t0) * 1000
        answer = Answer(transcript=" ".join(t.strip() for t in transcripts).strip())
        if not answer.transcript:
            relay.stdin.close()
            relay.wait()
            relay.stdout.close()
            answer.steps = steps
            return answer
        # One message is one user message, whatever pauses split it into turns.
        turn = self._new_turn()
        w = self._expect(turn)
        try:
            t1 = self._reply(relay, turn, answer, stt_trace, steps)
        except Exception:
            self._forget(turn, w)
            if relay.poll() is None:
                relay.kill()
            relay.wait()
            raise
        finally:
            relay.stdout.close()
        answer.pcm, answer.ogg = self._await(turn, w)
        steps["tts+encode tail"] = (time.monotonic() - t1) * 1000 - steps["llm"]
        answer.steps = steps
        return answer

    def _reply(self, relay, turn, answer, stt_trace, steps):
        """Ask llm-relay for the reply to the message's transcript and pass its chunks on to
        tts-writer as they stream in; returns when the request was sent (monotonic)."""
        buf = io.BytesIO()
        tgvoice_frames.write_event(buf, {"type": "transcript", "turn": turn, "text": answer.transcript,
                                         "final": True, "trace": stt_trace})
        try:
            relay.stdin.write(buf.getvalue())
            relay.stdin.close()
        except (BrokenPipeError, OSError) as e:
            relay.kill()
            relay.wait()
            raise PipelineError(f"llm-relay is not reading (exit {relay.returncode}; see "
                                f"{self.state_dir / 'logs' / 'llm-relay.log'}): {e}") from None
        t1 = time.monotonic()
        chunks, ended = [], False
        try:
            while (f := tgvoice_frames.read_frame(relay.stdout)) is not None:
                kind, event, _ = f
                if kind != "event":
                    continue
                if event.get("type") == "reply-chunk" and event.get("turn") == turn:
                    if not chunks:
                        steps["llm first chunk"] = (time.monotonic() - t1) * 1000
                    chunks.append(event.get("text", ""))
                    self._to_tts(event)
                elif event.get("type") == "reply-end" and event.get("turn") == turn:
                    answer.llm_error = bool(event.get("error"))
                    self._to_tts(event)
                    ended = True
        except ValueError as e:
            log.error("voice messages: bad output from llm-relay: %s", e)
        relay.wait()
        steps["llm"] = (time.monotonic() - t1) * 1000
        if not ended:
            log.error("voice messages: llm-relay ended without a reply (exit %s); see %s", relay.returncode,
                      self.state_dir / "logs" / "llm-relay.log")
            if not chunks:
                self._to_tts({"type": "reply-chunk", "turn": turn, "seq": 0, "text": FALLBACK_APOLOGY})
                chunks.append(FALLBACK_APOLOGY)
                answer.llm_error = True
            self._to_tts({"type": "reply-end", "turn": turn, "cancelled": False})
        answer.reply = " ".join(c.strip() for c in chunks).strip()
        return t1

    def _transcribe(self, front, pcm, received_us):
        """Feed the message to vadseg as audio frames, close it, and collect sttd's final
        transcripts until its output ends."""
        events = []

        def read():
            try:
                while (f := tgvoice_frames.read_frame(front.stt.stdout)) is not None:
                    if f[0] == "event":
                        events.append(f[1])
            except ValueError as e:
                log.error("voice messages: bad output from sttd: %s", e)
        reader = threading.Thread(target=read, daemon=True, name="stt-reader")
        reader.start()
        n = len(pcm) // 2
        received_us = received_us or int(time.time() * 1e6)
        start_us = received_us - n * 1_000_000 // RATE
        step = FRAME_SAMPLES * 2
        buf = io.BytesIO()
        for i, off in enumerate(range(0, len(pcm), step)):
            tgvoice_frames.write_audio(buf, pcm[off:off + step], rate=RATE,
                                       capture_us=start_us + i * FRAME_SAMPLES * 1_000_000 // RATE, index=i * FRAME_SAMPLES)
        try:
            front.vad.stdin.write(buf.getvalue())
            front.vad.stdin.close()
        except (BrokenPipeError, OSError) as e:
            raise PipelineError(f"vadseg is not reading ({e})") from None
        reader.join(self.reply_timeout_s)
        if reader.is_alive():
            raise PipelineError(f"sttd did not finish within {self.reply_timeout_s} s")
        finals = [e for e in events if e.get("type") == "transcript" and e.get("final", True) and e.get("text", "").strip()]
        # The message's trace: where its first turn started, the rest from its last turn.
        trace = dict(finals[-1].get("trace") or {}) if finals else {}
        if finals and "speech_start" in (finals[0].get("trace") or {}):
            trace["speech_start"] = finals[0]["trace"]["speech_start"]
        log.debug("voice messages: sttd events %s", json.dumps([e.get("type") for e in events]))
        return [e["text"] for e in finals], trace

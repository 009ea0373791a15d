#!/usr/bin/env python3
"""Stand-in speech-to-text servers for sttd's tests, on 127.0.0.1 only.

    standin_stt.py openai  [--port N] [--texts "A|B"] [--mode MODE] [--delay-ms MS]
    standin_stt.py wyoming [--port N] [--texts "A|B"] [--mode MODE] [--delay-ms MS]
                           [--close-after-transcript] [--no-asr]

openai: POST /v1/audio/transcriptions as OpenAI's API has it. The multipart/form-data body is
parsed (email.parser, as a MIME message), the `file` part read as a WAV (the `wave` module):
it must be 16 kHz, mono, 16-bit, with audio that is not silence; `model` and
`response_format=json` must be there. The answer is {"text": ...}.

wyoming: a Wyoming ASR service on the protocol's own package (`wyoming` 1.10.2, installed in
the project's venv by scripts/provision/sttd.pip): `describe` -> `info` with one ASR program,
`transcribe`, `audio-start`, `audio-chunk`s (each checked: 16 kHz, width 2, mono), `audio-stop`
-> `transcript`. --close-after-transcript closes the connection after each transcript, as
wyoming-faster-whisper does.

The texts are answered in turn (cycled). MODE is what the next requests get: ok, slow (no
answer for 10 s, or until the client goes), fail (HTTP 500 / a Wyoming `error` event),
garbage (an answer that is not the protocol), close (the answer breaks off mid-way and the
connection closes). A line "mode MODE" on stdin changes it (acknowledged on stdout).
--delay-ms answers ok requests after that delay (the latency measurement; a superseded request
is held so the test sees it dropped); a line "delay MS" on stdin changes it.

What happens is reported on stdout, one JSON object a line, for the test to await:
{"event": "listening", "port": N}, {"event": "request", "n": .., "samples": .., "language": ..,
"model": .., "prompt": .., "auth": .., "mode": ..}, {"event": "reply", "n": .., "text": ..},
{"event": "dropped", "n": ..} (the client closed the connection before the answer),
{"event": "bad-request", "why": ..}, {"event": "connections", "open": K}.
"""

import argparse
import asyncio
import email.parser
import email.policy
import io
import json
import select
import socket
import sys
import threading
import time
import wave
from array import array
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_SECS = 10.0
LOCK = threading.Lock()
STATE = {"mode": "ok", "n": 0, "replies": 0, "open": 0, "delay": 0.0}


def report(**fields):
    with LOCK:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def next_request():
    with LOCK:
        STATE["n"] += 1
        return STATE["n"], STATE["mode"]


def next_text(texts):
    with LOCK:
        text = texts[STATE["replies"] % len(texts)]
        STATE["replies"] += 1
        return text


def connections(delta):
    with LOCK:
        STATE["open"] += delta
        n = STATE["open"]
    report(event="connections", open=n)


def read_control():
    for line in sys.stdin:
        parts = line.split()
        if len(parts) == 2 and parts[0] == "mode":
            with LOCK:
                STATE["mode"] = parts[1]
            report(event="mode", mode=parts[1])
        elif len(parts) == 2 and parts[0] == "delay":
            with LOCK:
                STATE["delay"] = int(parts[1]) / 1000
            report(event="delay", ms=int(parts[1]))


def check_pcm(pcm: bytes):
    """The audio must be there: samples, and not digital silence."""
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if len(samples) == 0:
        return 0, "no samples"
    peak = max(abs(s) for s in samples)
    if peak < 100:
        return len(samples), f"silence only (peak {peak})"
    return len(samples), None


# --- OpenAI ---------------------------------------------------------------------------------


class OpenAiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    texts = ["Hello."]

    def setup(self):
        super().setup()
        connections(+1)

    def finish(self):
        try:
            super().finish()
        finally:
            connections(-1)

    def log_message(self, *args):
        pass

    def bad(self, why):
        report(event="bad-request", why=why)
        body = json.dumps({"error": {"message": why}}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status, obj, content_type="application/json"):
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def client_went_away(self, secs):
        """Wait up to `secs`; True if the client closed the connection meanwhile."""
        end = time.monotonic() + secs
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except OSError:
                    return True
        return False

    def do_POST(self):
        if self.path != "/v1/audio/transcriptions":
            return self.send_json(404, {"error": {"message": f"no route {self.path}"}})
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            return self.bad(f"Content-Type {ctype!r} is not multipart/form-data")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body
        )
        if not msg.is_multipart():
            return self.bad("the body is not a multipart form")
        fields, wav_bytes = {}, None
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            data = part.get_payload(decode=True)
            if name == "file":
                wav_bytes = data
            else:
                fields[name] = data.decode()
        if wav_bytes is None:
            return self.bad("no file part")
        if fields.get("response_format") != "json" or not fields.get("model"):
            return self.bad(f"fields {sorted(fields)}: model and response_format=json expected")
        try:
            with wave.open(io.BytesIO(wav_bytes)) as w:
                fmt = (w.getframerate(), w.getnchannels(), w.getsampwidth())
                pcm = w.readframes(w.getnframes())
        except (wave.Error, EOFError) as e:
            return self.bad(f"the file is not a WAV: {e}")
        if fmt != (16000, 1, 2):
            return self.bad(f"WAV {fmt}, expected 16 kHz mono 16-bit")
        samples, problem = check_pcm(pcm)
        if problem:
            return self.bad(f"WAV of {samples} samples: {problem}")
        n, mode = next_request()
        auth = self.headers.get("Authorization")
        report(event="request", n=n, samples=samples, language=fields.get("language"), model=fields["model"],
               prompt=fields.get("prompt"), auth=auth, mode=mode)
        if mode == "slow":
            if self.client_went_away(SLOW_SECS):
                report(event="dropped", n=n)
                self.close_connection = True
                return
            return self.send_json(200, {"text": "Too late."})
        if mode == "fail":
            return self.send_json(500, {"error": {"message": "the model crashed"}})
        if mode == "garbage":
            return self.send_json(200, b"<html><body>Welcome to nginx!</body></html>", "text/html")
        if mode == "close":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"text": "Half an ans')
            self.wfile.flush()
            self.close_connection = True
            return
        delay = STATE["delay"]
        if delay and self.client_went_away(delay):
            report(event="dropped", n=n)
            self.close_connection = True
            return
        text = next_text(self.texts)
        report(event="reply", n=n, text=text)
        self.send_json(200, {"text": text})


def serve_openai(args, texts):
    OpenAiHandler.texts = texts
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), OpenAiHandler)
    report(event="listening", port=server.server_address[1])
    server.serve_forever()


# --- Wyoming --------------------------------------------------------------------------------


def serve_wyoming(args, texts):
    try:
        import wyoming  # noqa: F401
    except ImportError:
        sys.exit("standin_stt.py: the wyoming package is not in this Python; run scripts/setup "
                 "(its venv step installs scripts/provision/sttd.pip) and use the venv's python")
    from wyoming.asr import Transcribe, Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.error import Error
    from wyoming.event import Event
    from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info
    from wyoming.server import AsyncEventHandler, AsyncServer

    attribution = Attribution(name="tgvoice tests", url="https://example.invalid/")
    asr = [] if args.no_asr else [
        AsrProgram(name="standin-asr", attribution=attribution, installed=True, description="stand-in", version="1.0",
                   models=[AsrModel(name="standin-whisper-tiny", attribution=attribution, installed=True,
                                    description="stand-in model", version="1.0", languages=["en"])])
    ]
    info = Info(asr=asr).event()

    class Handler(AsyncEventHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.request = {}
            self.pcm = bytearray()
            self.problem = None
            connections(+1)

        async def disconnect(self):
            connections(-1)

        async def client_went_away(self, secs):
            try:
                return await asyncio.wait_for(self.reader.read(1), timeout=secs) == b""
            except asyncio.TimeoutError:
                return False

        async def handle_event(self, event: Event) -> bool:
            if Describe.is_type(event.type):
                await self.write_event(info)
                return True
            if Transcribe.is_type(event.type):
                t = Transcribe.from_event(event)
                self.request = {"language": t.language, "model": t.name}
                self.pcm = bytearray()
                self.problem = None
                return True
            if AudioStart.is_type(event.type):
                start = AudioStart.from_event(event)
                if (start.rate, start.width, start.channels) != (16000, 2, 1):
                    self.problem = f"audio-start {start}"
                return True
            if AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                if (chunk.rate, chunk.width, chunk.channels) != (16000, 2, 1):
                    self.problem = f"audio-chunk {chunk.rate}/{chunk.width}/{chunk.channels}"
                self.pcm.extend(chunk.audio)
                return True
            if not AudioStop.is_type(event.type):
                return True
            samples, problem = check_pcm(bytes(self.pcm))
            problem = self.problem or problem
            if problem or not self.request:
                report(event="bad-request", why=problem or "audio without a transcribe event first")
                await self.write_event(Error(text=problem or "no transcribe", code="bad-request").event())
                return True
            n, mode = next_request()
            report(event="request", n=n, samples=samples, mode=mode, **self.request)
            if mode == "slow":
                if await self.client_went_away(SLOW_SECS):
                    report(event="dropped", n=n)
                    return False
                await self.write_event(Transcript(text="Too late.").event())
                return True
            if mode == "fail":
                await self.write_event(Error(text="the model crashed", code="internal").event())
                return True
            if mode == "garbage":
                self.writer.write(b"<html><body>Welcome to nginx!</body></html>\n")
                await self.writer.drain()
                return True
            if mode == "close":
                self.writer.write(b'{"type": "transcript", "data_length": 40}\n{"text": "Half')
                await self.writer.drain()
                return False
            delay = STATE["delay"]
            if delay and await self.client_went_away(delay):
                report(event="dropped", n=n)
                return False
            text = next_text(texts)
            report(event="reply", n=n, text=text)
            await self.write_event(Transcript(text=text).event())
            return not args.close_after_transcript

    async def main():
        server = AsyncServer.from_uri(f"tcp://127.0.0.1:{args.port}")
        await server.start(Handler)
        port = server._server.sockets[0].getsockname()[1]
        report(event="listening", port=port)
        await asyncio.Event().wait()

    asyncio.run(main())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("protocol", choices=["openai", "wyoming"])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--texts", default="Hello.")
    p.add_argument("--mode", default="ok", choices=["ok", "slow", "fail", "garbage", "close"])
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--close-after-transcript", action="store_true")
    p.add_argument("--no-asr", action="store_true")
    args = p.parse_args()
    STATE["mode"] = args.mode
    STATE["delay"] = args.delay_ms / 1000
    threading.Thread(target=read_control, daemon=True).start()
    texts = args.texts.split("|")
    if args.protocol == "openai":
        serve_openai(args, texts)
    else:
        serve_wyoming(args, texts)


if __name__ == "__main__":
    main()

"""Voice messages: a spoken question in a chat gets a spoken answer (a voice note, as a reply).

Who is answered: the sender must be on the allowlist (the same one as calls; default deny). In a
private chat every voice note is answered; in a group only with ``groups=True`` and only when
the message replies to the account or mentions it. ``/reset`` (a text message, same rules)
starts a new conversation for that chat.

Messages are answered one at a time, in arrival order, through the stages of
``msgpipeline.MessagePipeline`` in a worker thread, so the asyncio loop that carries a call
never waits for them. Each limit gets a short spoken reply instead of silence.
"""
import asyncio
import logging
import time
from dataclasses import dataclass

from . import voicecodec
from .msgpipeline import FALLBACK_APOLOGY, MessagePipeline, PipelineError

log = logging.getLogger("tg-bridge")

DEFAULT_MAX_SECONDS = 120
RESET_COMMAND = "/reset"
CAPTION_LIMIT = 1024                      # Telegram's caption length limit


def _duration_words(seconds):
    if seconds >= 60 and seconds % 60 == 0:
        m = int(seconds // 60)
        return f"{m} minute{'s' if m != 1 else ''}"
    return f"{int(seconds)} seconds"


def polite(kind, max_seconds=DEFAULT_MAX_SECONDS):
    """The spoken reply for each limit."""
    return {
        "too-long": f"Sorry, that message is too long for me. Please keep voice messages under {_duration_words(max_seconds)}.",
        "no-speech": "Sorry, I could not hear any speech in that message. Could you say it again?",
        "undecodable": "Sorry, I could not play that voice message. Could you record it again?",
        "failed": FALLBACK_APOLOGY,
    }[kind]


@dataclass
class IncomingMessage:
    """What a backend reports about a chat message (voice note or text)."""
    chat_id: int
    message_id: int
    sender_id: int
    private: bool
    addressed: bool = False     # replies to the account or mentions it (groups)
    voice: bool = False
    duration: float = None      # seconds, as the sender's client declared it (voice notes)
    text: str = None
    handle: object = None       # the backend's own message object (for downloading)
    received_us: int = 0        # when it arrived (µs since the epoch)


@dataclass
class Reply:
    message: IncomingMessage
    kind: str                   # answer | llm-down | too-long | no-speech | undecodable | failed
    transcript: str = ""
    text: str = ""
    seconds: float = 0.0
    steps: dict = None
    pcm: bytes = b""
    ogg: bytes = b""


class VoiceMessages:
    def __init__(self, backend, pipeline: MessagePipeline, allow=lambda: frozenset(), groups=False,
                 caption=False, max_seconds=DEFAULT_MAX_SECONDS):
        self.backend, self.pipeline = backend, pipeline
        self.allow, self.groups, self.caption, self.max_seconds = allow, groups, caption, max_seconds
        self.queue = asyncio.Queue()
        self.replies = []            # Reply per answered message, in order (for logs and tests)
        self.ignored = []            # (message, why)
        self._worker = None

    async def start(self):
        await asyncio.to_thread(self.pipeline.start)
        self._worker = asyncio.ensure_future(self._work())
        log.info("voice messages: answering voice notes from %s%s (limit %s s)",
                 ", ".join(map(str, sorted(self.allow()))) or "nobody (empty allowlist)",
                 " in private chats and, when addressed, in groups" if self.groups else " in private chats",
                 self.max_seconds)

    async def stop(self):
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        await asyncio.to_thread(self.pipeline.stop)

    def accepts(self, m):
        """None if the message is for us, else why not (logged)."""
        if m.sender_id not in self.allow():
            return f"sender {m.sender_id} is not in the allowlist"
        if not m.private and not self.groups:
            return "a group message (answering in groups needs --voice-groups)"
        if not m.private and not m.addressed:
            return "a group message that neither replies to nor mentions the account"
        return None

    async def on_message(self, m):
        """Called by the backend for voice notes and text commands (never blocks)."""
        is_reset = (m.text or "").strip().split("@")[0] == RESET_COMMAND
        if not (m.voice or is_reset):
            return
        m.received_us = m.received_us or int(time.time() * 1e6)
        why = self.accepts(m)
        if why:
            log.info("voice messages: ignoring message %s in chat %s: %s", m.message_id, m.chat_id, why)
            self.ignored.append((m, why))
            return
        await self.queue.put(m)

    async def _work(self):
        while True:
            m = await self.queue.get()
            try:
                if m.voice:
                    await self._answer(m)
                else:
                    await self._reset(m)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.error("voice messages: message %s in chat %s: %s: %s", m.message_id, m.chat_id, type(e).__name__, e)

    async def _reset(self, m):
        await asyncio.to_thread(self.pipeline.reset, m.chat_id)
        log.info("voice messages: chat %s starts a new conversation (/reset)", m.chat_id)
        await self.backend.send_text(m.chat_id, "OK, a new conversation starts now.", reply_to=m.message_id)

    async def _answer(self, m):
        t0 = time.monotonic()
        steps = {}
        if m.duration is not None and m.duration > self.max_seconds:
            reply = Reply(m, "too-long")          # known from the metadata: no download needed
        else:
            try:
                data = await self.backend.download_voice(m)
                steps["download"] = (time.monotonic() - t0) * 1000
                reply = await asyncio.to_thread(self._process, m, data, steps)
            except Exception as e:                 # whatever broke, the sender hears about it
                log.error("voice messages: message %s in chat %s: %s: %s", m.message_id, m.chat_id, type(e).__name__, e)
                reply = Reply(m, "failed")
        t1 = time.monotonic()
        if reply.kind not in ("answer", "llm-down"):
            log.info("voice messages: message %s in chat %s: %s", m.message_id, m.chat_id, reply.kind)
            reply.text = polite(reply.kind, self.max_seconds)
            pcm, ogg = await asyncio.to_thread(self.pipeline.speak, reply.text)
            steps["tts+encode"] = (time.monotonic() - t1) * 1000
        else:
            pcm, ogg = reply.pcm, reply.ogg
        t2 = time.monotonic()
        waveform = await asyncio.to_thread(voicecodec.waveform, pcm)    # off the loop that carries a call
        steps["waveform"] = (time.monotonic() - t2) * 1000
        caption = None
        if self.caption:
            caption = (f"You said: {reply.transcript}\n\n" if reply.transcript else "") + reply.text
            caption = caption[:CAPTION_LIMIT]
        t3 = time.monotonic()
        reply.seconds = voicecodec.seconds(pcm)
        await self.backend.send_voice(m.chat_id, ogg, reply_to=m.message_id, caption=caption,
                                      duration=max(1, round(reply.seconds)), waveform=waveform)
        steps["send"] = (time.monotonic() - t3) * 1000
        steps["total"] = (time.monotonic() - t0) * 1000
        reply.steps = steps
        reply.pcm = reply.ogg = b""
        await asyncio.to_thread(self.pipeline.prepare)
        self.replies.append(reply)
        log.info("voice messages: answered message %s in chat %s (%s, %.1f s) in %.0f ms: %s",
                 m.message_id, m.chat_id, reply.kind, reply.seconds, steps["total"],
                 " ".join(f"{k} {v:.0f}" for k, v in steps.items() if k != "total"))

    def _process(self, m, data, steps):
        """Decode and answer (worker thread)."""
        t0 = time.monotonic()
        try:
            pcm = voicecodec.decode(data, self.max_seconds)
        except voicecodec.Undecodable as e:
            log.warning("voice messages: message %s in chat %s is not audio ffmpeg can decode (%s); "
                        "answering with a request to record it again", m.message_id, m.chat_id, e)
            return Reply(m, "undecodable")
        steps["decode"] = (time.monotonic() - t0) * 1000
        if voicecodec.seconds(pcm) > self.max_seconds:
            return Reply(m, "too-long")
        try:
            a = self.pipeline.answer(pcm, m.chat_id, m.received_us)
        except PipelineError as e:
            log.error("voice messages: message %s in chat %s: %s", m.message_id, m.chat_id, e)
            return Reply(m, "failed")
        steps.update(a.steps)
        if not a.transcript:
            return Reply(m, "no-speech")
        # llm-relay speaks its own apology when the LLM fails
        return Reply(m, "llm-down" if a.llm_error else "answer", transcript=a.transcript, text=a.reply, pcm=a.pcm, ogg=a.ogg)

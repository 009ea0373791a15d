//! The relay loop: events in, reply chunks out.
//!
//! * `transcript` (final) → append to the conversation, stream a reply in a task of its own;
//!   its text goes through [`CodeFenceFilter`] → [`SentenceSplitter`] → [`clean_for_speech`]
//!   and each chunk is written at once as `reply-chunk`; then `reply-end`.
//! * `speech-start` / `cancel` → forwarded first (urgent), then the reply in progress is
//!   cancelled: a flag under the emitter's lock stops further chunks immediately, the task is
//!   aborted (dropping the HTTP connection), queued-but-unwritten chunks are withdrawn from the
//!   sink, `reply-end` with `cancelled: true` is written, and the history keeps only the chunks
//!   that were handed on, marked interrupted.
//! * `call-start` → new conversation; `call-end` → cancel; everything else is forwarded.
//! * On failure: one log line, an `error` event {stage, message}, and (if nothing was said
//!   yet) a short spoken apology.

use crate::conversation::{Budget, Conversation};
use crate::provider::{Provider, Role};
use crate::speakable::{clean_for_speech, CodeFenceFilter, SentenceSplitter};
use crate::stream::{stream_reply, ReplyError, StreamOptions};
use std::sync::{Arc, Mutex};
use tgvoice::event::{kind, trace_key};
use tgvoice::sink::SinkHandle;
use tgvoice::{Event, Frame, TurnTrace};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

pub struct RelayConfig {
    pub provider: Provider,
    pub stream: StreamOptions,
    pub budget: Budget,
    /// Spoken when a reply fails before anything was said; empty = say nothing.
    pub apology: String,
    pub first_clause_min_words: usize,
}

/// Turns one reply's text deltas into reply-chunk frames; shared by the streaming task and the
/// loop (which cancels it).
struct TurnEmitter {
    sink: SinkHandle,
    turn: u64,
    seq: u64,
    trace: TurnTrace,
    cancelled: bool,
    /// (seq, text) of every chunk handed to the sink.
    spoken: Vec<(u64, String)>,
    filter: CodeFenceFilter,
    splitter: SentenceSplitter,
}

impl TurnEmitter {
    fn on_text(&mut self, text: &str) {
        if self.cancelled {
            return;
        }
        self.trace.mark_now(trace_key::LLM_FIRST_TOKEN);
        let plain = self.filter.push(text);
        for chunk in self.splitter.push(&plain) {
            self.emit(&chunk);
        }
    }

    fn finish(&mut self) {
        if self.cancelled {
            return;
        }
        let rest = self.filter.finish();
        let mut chunks = self.splitter.push(&rest);
        chunks.extend(self.splitter.finish());
        for chunk in chunks {
            self.emit(&chunk);
        }
    }

    fn emit(&mut self, chunk: &str) {
        let Some(text) = clean_for_speech(chunk) else { return };
        self.trace.mark_now(trace_key::FIRST_CHUNK);
        let event = Event::new(kind::REPLY_CHUNK)
            .with_turn(self.turn)
            .with_text(text.clone())
            .with_trace(self.trace.clone())
            .with("seq", self.seq);
        self.sink.send(Frame::Event(event));
        self.spoken.push((self.seq, text));
        self.seq += 1;
    }
}

struct ActiveReply {
    turn: u64,
    emitter: Arc<Mutex<TurnEmitter>>,
    task: JoinHandle<Result<u32, ReplyError>>,
}

pub struct Relay {
    cfg: Arc<RelayConfig>,
    client: reqwest::Client,
    sink: SinkHandle,
    conversation: Conversation,
    active: Option<ActiveReply>,
}

enum Step {
    Input(Option<Frame>),
    ReplyDone(Result<Result<u32, ReplyError>, tokio::task::JoinError>),
}

impl Relay {
    pub fn new(cfg: RelayConfig, sink: SinkHandle, conversation: Conversation) -> anyhow::Result<Self> {
        let client = crate::stream::client(&cfg.stream)?;
        Ok(Relay { cfg: Arc::new(cfg), client, sink, conversation, active: None })
    }

    /// Run until the input ends (then let the reply in progress finish).
    pub async fn run(mut self, mut inputs: UnboundedReceiver<Frame>) -> anyhow::Result<()> {
        loop {
            let step = tokio::select! {
                biased;
                f = inputs.recv() => Step::Input(f),
                r = wait_for(&mut self.active) => Step::ReplyDone(r),
            };
            match step {
                Step::Input(Some(frame)) => self.handle(frame).await?,
                Step::Input(None) => break,
                Step::ReplyDone(r) => self.reply_done(r)?,
            }
        }
        if self.active.is_some() {
            let r = wait_for(&mut self.active).await;
            self.reply_done(r)?;
        }
        Ok(())
    }

    async fn handle(&mut self, frame: Frame) -> anyhow::Result<()> {
        let event = match frame {
            Frame::Event(e) => e,
            audio => {
                self.sink.send(audio); // not ours: forward unchanged
                return Ok(());
            }
        };
        match event.kind.as_str() {
            kind::TRANSCRIPT => {
                let text = event.text.as_deref().unwrap_or("").trim().to_string();
                if event.get_bool("final") == Some(false) {
                    log::debug!("ignoring a partial transcript: {text:?}");
                } else if text.is_empty() {
                    log::debug!("ignoring an empty transcript");
                } else {
                    self.cancel("a new transcript").await?;
                    self.start_reply(event.turn.unwrap_or(0), text, event.trace)?;
                }
            }
            kind::SPEECH_START => {
                self.sink.send(Frame::Event(event));
                self.cancel("the caller started speaking").await?;
            }
            kind::CANCEL => {
                let wanted = event.turn;
                self.sink.send(Frame::Event(event));
                if wanted.is_none() || wanted == self.active.as_ref().map(|a| a.turn) {
                    self.cancel("a cancel event").await?;
                }
            }
            kind::CALL_START => {
                self.cancel("a new call").await?;
                self.conversation.start_new(event.get_str("call"))?;
                log::info!("call-start: new conversation {}", self.conversation.path().display());
                self.sink.send(Frame::Event(event));
            }
            kind::CALL_END => {
                self.cancel("the call ended").await?;
                log::info!("call-end: conversation {} closed", self.conversation.id());
                self.sink.send(Frame::Event(event));
            }
            _ => self.sink.send(Frame::Event(event)),
        }
        Ok(())
    }

    fn start_reply(&mut self, turn: u64, text: String, mut trace: TurnTrace) -> anyhow::Result<()> {
        self.conversation.append(Role::User, &text, Some(turn), false)?;
        let messages = self.conversation.messages(self.cfg.budget);
        log::info!("turn {turn}: {} message(s) of history → {}", messages.len(), self.cfg.provider.url());
        trace.mark_now(trace_key::LLM_REQUEST);
        let emitter = Arc::new(Mutex::new(TurnEmitter {
            sink: self.sink.clone(),
            turn,
            seq: 0,
            trace,
            cancelled: false,
            spoken: vec![],
            filter: CodeFenceFilter::new(),
            splitter: SentenceSplitter::new(self.cfg.first_clause_min_words),
        }));
        let (cfg, client, em) = (self.cfg.clone(), self.client.clone(), emitter.clone());
        let task = tokio::spawn(async move {
            stream_reply(&client, &cfg.provider, &messages, &cfg.stream, |t| em.lock().unwrap().on_text(t)).await
        });
        self.active = Some(ActiveReply { turn, emitter, task });
        Ok(())
    }

    /// The streaming task ended on its own (complete, or failed).
    fn reply_done(&mut self, result: Result<Result<u32, ReplyError>, tokio::task::JoinError>) -> anyhow::Result<()> {
        let Some(active) = self.active.take() else { return Ok(()) };
        let mut em = active.emitter.lock().unwrap();
        em.finish();
        let failure = match result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!(
                "{} ({} attempt(s){})",
                e.message,
                e.attempts,
                if e.partial { ", cut off mid-reply" } else { "" }
            )),
            Err(e) => Some(format!("the reply task failed: {e}")),
        };
        if let Some(msg) = &failure {
            // Informational, for the supervisor/bridge (fifo-layout.md `error`).
            let error =
                Event::new(kind::ERROR).with_turn(em.turn).with("stage", "llm-relay").with("message", msg.as_str());
            self.sink.send(Frame::Event(error));
            log::error!("turn {}: no reply from the LLM after {} chunk(s): {msg}", em.turn, em.spoken.len());
            if em.spoken.is_empty() && !self.cfg.apology.is_empty() {
                let apology = self.cfg.apology.clone();
                em.emit(&apology);
                em.spoken.clear(); // the apology is not part of the conversation
            }
        }
        let spoken: Vec<String> = em.spoken.iter().map(|(_, t)| t.clone()).collect();
        let mut end =
            Event::new(kind::REPLY_END).with_turn(em.turn).with_trace(em.trace.clone()).with("cancelled", false);
        if failure.is_some() {
            end = end.with("error", true);
        }
        // History first, so a relay killed right after reply-end still remembers the reply.
        if !spoken.is_empty() {
            self.conversation.append(Role::Assistant, &spoken.join(" "), Some(em.turn), false)?;
        }
        self.sink.send(Frame::Event(end));
        if failure.is_none() {
            let ms =
                |to| em.trace.span_ms(trace_key::LLM_REQUEST, to).map(|v| format!("{v:.0} ms")).unwrap_or("?".into());
            log::info!(
                "turn {}: reply complete, {} chunk(s); request → first token {}, → first chunk {}",
                em.turn,
                em.seq,
                ms(trace_key::LLM_FIRST_TOKEN),
                ms(trace_key::FIRST_CHUNK)
            );
        }
        Ok(())
    }

    /// Stop the reply in progress, if any.
    async fn cancel(&mut self, why: &str) -> anyhow::Result<()> {
        let Some(mut active) = self.active.take() else { return Ok(()) };
        // 1. No chunk of this reply is handed to the sink after this point.
        active.emitter.lock().unwrap().cancelled = true;
        // 2. Drop the HTTP stream (the connection closes) and wait until the task is gone.
        active.task.abort();
        let _ = (&mut active.task).await;
        // 3. Withdraw chunks still queued in the sink (not yet written to the FIFO).
        let mut withdrawn = vec![];
        self.sink.retain(|f| match f {
            Frame::Event(e) if e.is(kind::REPLY_CHUNK) && e.turn == Some(active.turn) => {
                withdrawn.push(e.get_u64("seq"));
                false
            }
            _ => true,
        });
        let em = active.emitter.lock().unwrap();
        let spoken: Vec<String> =
            em.spoken.iter().filter(|(seq, _)| !withdrawn.contains(&Some(*seq))).map(|(_, t)| t.clone()).collect();
        let end = Event::new(kind::REPLY_END).with_turn(em.turn).with_trace(em.trace.clone()).with("cancelled", true);
        self.sink.send(Frame::Event(end));
        self.conversation.append(Role::Assistant, &spoken.join(" "), Some(em.turn), true)?;
        log::info!(
            "turn {}: reply cancelled ({why}) after {} chunk(s) handed to TTS{}",
            em.turn,
            spoken.len(),
            if withdrawn.is_empty() {
                String::new()
            } else {
                format!(", {} withdrawn from the queue", withdrawn.len())
            }
        );
        Ok(())
    }
}

async fn wait_for(active: &mut Option<ActiveReply>) -> Result<Result<u32, ReplyError>, tokio::task::JoinError> {
    match active {
        Some(a) => (&mut a.task).await,
        None => std::future::pending().await,
    }
}

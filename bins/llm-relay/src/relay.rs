//! The relay loop: events in, reply chunks out.
//!
//! * `transcript` (final) → the caller's message: appended to the conversation, and a reply is
//!   streamed in a task of its own; its text goes through [`CodeFenceFilter`] →
//!   [`SentenceSplitter`] → [`clean_for_speech`] and each chunk is written at once as
//!   `reply-chunk`; then `reply-end`.
//! * `speech-start` / `cancel` → forwarded first (urgent), then the reply in progress is
//!   cancelled: a flag under the emitter's lock stops further chunks immediately, the task is
//!   aborted (dropping the HTTP connection), queued-but-unwritten chunks are withdrawn from the
//!   sink, `reply-end` with `cancelled: true` is written, and the history keeps only the chunks
//!   that were handed on, marked interrupted.
//! * Never two user messages in a row (see [`Waiting`]): a caller who pauses long enough to end
//!   a turn and goes on before any of the reply was handed to TTS said *one* message. The
//!   first part's reply is dropped without a trace, the parts are merged into one user
//!   message, and the reply answers the whole. A part whose transcript comes while a later
//!   turn of the caller is still being transcribed waits for it instead of being answered.
//! * Barge-in pauses first (`--barge-in pause`, the default): a `speech-start` while a reply
//!   may be playing (chunks handed to TTS, and their estimated audio not over yet) does not
//!   cancel it — tts-writer has paused it at the onset. The interrupting turn decides: its
//!   final transcript empty or a backchannel ([`Backchannels`]) → `resume {turn}`, the reply
//!   goes on and the history is untouched; any other words, or speech still going after
//!   `--interrupt-after`, → the reply is cancelled as above and `cancel {turn: N − 1}` tells
//!   tts-writer to drop what it paused.
//! * A preview (`transcript` with `final: false, preview: true`: sttd decoded the turn at a
//!   pause, and that text is the final transcript if only silence follows) starts the reply
//!   early, *held*: the LLM streams, its chunks are kept here and only the first goes out, as
//!   `reply-ahead` (tts-writer may speak it ahead; it is never played by itself). When the
//!   final transcript makes the same request (same words, same history), the held chunks go
//!   out at once and the reply goes on as any other; otherwise (other words, the caller went
//!   on, a cancel or call boundary) the held reply is dropped without a sound or a trace in the
//!   history (`--preempt off`: previews are ignored, as a stage that knows nothing of them does).
//! * `call-start` → new conversation; `call-end` → cancel; everything else is forwarded.
//! * On failure: one log line, an `error` event {stage, message}, and (if nothing was said
//!   yet) a short spoken apology.

use crate::backchannel::Backchannels;
use crate::conversation::{Budget, Conversation};
use crate::provider::{ChatMessage, Provider, Role};
use crate::speakable::{clean_for_speech, CodeFenceFilter, SentenceSplitter};
use crate::stream::{stream_reply, ReplyError, StreamOptions};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    /// See `--merge-wait` ([`Waiting`]).
    pub merge_wait: Duration,
    /// A reply ends after this many sentences (`--max-sentences`; 0 = no limit).
    pub max_sentences: usize,
    /// Barge-in pauses first and decides after (false: speech-start cancels at once).
    pub pause_first: bool,
    /// What counts as a backchannel (resume, no history entry).
    pub backchannels: Backchannels,
    /// An interruption still talking after this long is real, whatever its words.
    pub interrupt_after: Duration,
    /// Start a held reply from a preview transcript (`--preempt`).
    pub preempt: bool,
    /// How long a message that stops mid-sentence waits for the rest (`--unfinished-wait`).
    pub unfinished_wait: Duration,
}

/// Piper and espeak speak ~14–16 characters a second; a lower rate over-estimates how long a
/// reply plays, which errs towards treating speech over it as an interruption to decide.
const SPOKEN_CHARS_PER_S: f64 = 12.0;
/// Synthesis and the output lead, added to the estimate of when the audio handed on ends.
const PLAYBACK_SLACK: Duration = Duration::from_millis(1500);
/// An interruption whose transcript never comes is forgotten after this (tts-writer's pause
/// timeout has settled it long before).
const INTERRUPTION_FORGET: Duration = Duration::from_secs(60);

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
    /// 0 = no limit; else the reply ends after this many sentences.
    max_sentences: usize,
    sentences: usize,
    /// Estimated end of the audio of the chunks handed on (llm-relay has no feedback from
    /// tts-writer; see [`SPOKEN_CHARS_PER_S`]).
    audible_until: Option<Instant>,
    /// A reply started from a preview: its chunks are kept here, not written, until the final
    /// transcript confirms it ([`TurnEmitter::release`]).
    held: Option<Vec<String>>,
}

impl TurnEmitter {
    fn on_text(&mut self, text: &str) -> ControlFlow<()> {
        if self.cancelled || self.said_enough() {
            return ControlFlow::Break(());
        }
        self.trace.mark_now(trace_key::LLM_FIRST_TOKEN);
        let plain = self.filter.push(text);
        for chunk in self.splitter.push(&plain) {
            self.emit(&chunk);
            if self.said_enough() {
                log::info!("turn {}: reply ends after {} sentence(s) (--max-sentences)", self.turn, self.sentences);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    fn said_enough(&self) -> bool {
        self.max_sentences > 0 && self.sentences >= self.max_sentences
    }

    fn finish(&mut self) {
        if self.cancelled || self.said_enough() {
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
        // A first chunk cut at a clause is not a sentence.
        if text.ends_with(['.', '!', '?', '…']) {
            self.sentences += 1;
        }
        if let Some(held) = self.held.as_mut() {
            if held.is_empty() {
                // tts-writer may speak it now, so it plays at once if the turn confirms it
                let ahead = Event::new(kind::REPLY_AHEAD).with_turn(self.turn).with_text(text.clone()).with("seq", self.seq);
                self.sink.send(Frame::Event(ahead));
            }
            held.push(text);
            return;
        }
        self.send(text);
    }

    /// The held reply stands: `trace` is the final transcript's; the LLM's first token counts
    /// from the transcript on if it came before (the steps still add up to voice-to-voice,
    /// and "llm" is what the caller waited for the LLM after the transcript). The held chunks
    /// are written now.
    fn release(&mut self, mut trace: TurnTrace) {
        let transcript = trace.get(trace_key::TRANSCRIPT).unwrap_or_else(tgvoice::clock::now_us);
        if let Some(t) = self.trace.get(trace_key::LLM_REQUEST) {
            trace.mark(trace_key::LLM_REQUEST, t);
            trace.mark(trace_key::PREEMPT, t);
        }
        if let Some(t) = self.trace.get(trace_key::LLM_FIRST_TOKEN) {
            trace.mark(trace_key::LLM_FIRST_TOKEN, t.max(transcript));
        }
        self.trace = trace;
        for text in self.held.take().unwrap_or_default() {
            self.send(text);
        }
    }

    fn send(&mut self, text: String) {
        self.trace.mark_now(trace_key::FIRST_CHUNK);
        let event = Event::new(kind::REPLY_CHUNK)
            .with_turn(self.turn)
            .with_text(text.clone())
            .with_trace(self.trace.clone())
            .with("seq", self.seq);
        self.sink.send(Frame::Event(event));
        let now = Instant::now();
        let starts = self.audible_until.map_or(now, |t| t.max(now));
        self.audible_until = Some(starts + Duration::from_secs_f64(text.chars().count() as f64 / SPOKEN_CHARS_PER_S));
        self.spoken.push((self.seq, text));
        self.seq += 1;
    }
}

struct ActiveReply {
    turn: u64,
    /// The user message this reply answers (for merging when it is dropped unheard).
    user_text: String,
    emitter: Arc<Mutex<TurnEmitter>>,
    task: JoinHandle<Result<u32, ReplyError>>,
}

/// A reply started from a preview, held until the final transcript (see the module doc).
struct Preempt {
    turn: u64,
    /// What the LLM was asked: the reply stands only if the final request is the same.
    messages: Vec<ChatMessage>,
    emitter: Arc<Mutex<TurnEmitter>>,
    task: JoinHandle<Result<u32, ReplyError>>,
    started: Instant,
}

impl Preempt {
    fn drop_silently(self, why: &str) {
        self.emitter.lock().unwrap().cancelled = true;
        self.task.abort(); // drops the HTTP stream: the server stops generating
        log::info!("turn {}: the reply started early is dropped unheard ({why})", self.turn);
    }
}

pub struct Relay {
    cfg: Arc<RelayConfig>,
    client: reqwest::Client,
    sink: SinkHandle,
    conversation: Conversation,
    active: Option<ActiveReply>,
    waiting: Waiting,
    /// Estimated end of the last finished reply's audio.
    audible_until: Option<Instant>,
    /// Caller turns that started while a reply may have been playing, awaiting the decision:
    /// turn → (speech-start seen at, speech-end seen).
    interruptions: BTreeMap<u64, (Instant, bool)>,
    preempt: Option<Preempt>,
}

/// How long a held-back message waits for a turn whose speech-end never came (vadseg cuts
/// turns at 25 s by default). With a speech-end, `--merge-wait` applies, counted from that
/// speech-end or the last transcript, whichever is later (sttd transcribes in order; on a
/// loaded machine one turn took 12–15 s).
const MERGE_WAIT_NO_END: Duration = Duration::from_secs(60);

/// Most caller turns awaiting their transcript at once (a real caller has one or two).
const MAX_PENDING_TURNS: usize = 32;

/// What the caller said that has no reply heard yet, and the caller's turns whose transcript
/// has not arrived (speech-start seen, final transcript not yet).
#[derive(Default)]
struct Waiting {
    /// The newest user message (already in the conversation) whose reply was not started, or
    /// was dropped before any of it was handed to TTS: the next message merges with it.
    unanswered: Option<(u64, String)>,
    /// `unanswered` still needs a reply (false after an explicit cancel or a failed reply).
    due: bool,
    /// turn → (speech-start seen at, speech-end seen at).
    turns: BTreeMap<u64, (Instant, Option<Instant>)>,
    /// When the last final transcript arrived (sttd's progress).
    last_transcript: Option<Instant>,
    /// `unanswered` stops mid-sentence (unfinished.rs): it is not answered before this, unless
    /// the caller's next words finish it.
    unfinished_until: Option<Instant>,
}

impl Waiting {
    fn turn_started(&mut self, turn: u64) {
        self.turns.entry(turn).or_insert((Instant::now(), None));
        // Bounded by count as well as by time: a flood of speech-starts with no transcripts
        // (bad input) must not grow it for a minute. The oldest is the one given up first.
        while self.turns.len() > MAX_PENDING_TURNS {
            self.turns.pop_first();
        }
    }

    fn turn_ended(&mut self, turn: u64) {
        if let Some(t) = self.turns.get_mut(&turn) {
            t.1.get_or_insert_with(Instant::now);
        }
    }

    /// A final transcript for `turn` arrived: it and every older turn are done.
    fn transcribed(&mut self, turn: u64) {
        self.turns.retain(|t, _| *t > turn);
        self.last_transcript = Some(Instant::now());
    }

    /// Turns still being transcribed, after giving up on those that waited too long.
    fn caller_has_more(&mut self, merge_wait: Duration) -> bool {
        let progress = self.last_transcript;
        self.turns.retain(|turn, (started, ended)| {
            let alive = match ended {
                Some(e) => progress.map_or(*e, |p| p.max(*e)).elapsed() < merge_wait,
                None => started.elapsed() < MERGE_WAIT_NO_END,
            };
            if !alive {
                log::warn!("turn {turn}: no transcript came for it; answering without it");
            }
            alive
        });
        !self.turns.is_empty()
    }

    fn clear(&mut self) {
        *self = Waiting::default();
    }

    /// The user message `text` makes: merged with the unanswered one if there is one (then
    /// `Some(turn)` of that one), else `text` alone.
    fn message_with(&self, text: &str) -> (Option<u64>, String) {
        match &self.unanswered {
            // "I'd like a table for." + "Four people." reads as one sentence without the stop
            // Whisper put where the caller paused.
            Some((first, earlier)) if crate::unfinished::sounds_unfinished(earlier) => {
                (Some(*first), format!("{} {text}", crate::unfinished::without_trailing_stop(earlier)))
            }
            Some((first, earlier)) => (Some(*first), format!("{earlier} {text}")),
            None => (None, text.to_string()),
        }
    }
}

/// Sleeps until `at` (forever when None; the select guard keeps that branch off then).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

enum Step {
    Input(Option<Frame>),
    ReplyDone(Result<Result<u32, ReplyError>, tokio::task::JoinError>),
    Tick,
    Decide,
}

impl Relay {
    pub fn new(cfg: RelayConfig, sink: SinkHandle, conversation: Conversation) -> anyhow::Result<Self> {
        let client = crate::stream::client(&cfg.stream)?;
        Ok(Relay {
            cfg: Arc::new(cfg),
            client,
            sink,
            conversation,
            active: None,
            waiting: Waiting::default(),
            audible_until: None,
            interruptions: BTreeMap::new(),
            preempt: None,
        })
    }

    /// Run until the input ends (then let the reply in progress finish).
    pub async fn run(mut self, mut inputs: UnboundedReceiver<Frame>) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut decide = tokio::time::interval(Duration::from_millis(50));
        decide.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                biased;
                f = inputs.recv() => Step::Input(f),
                r = wait_for(&mut self.active) => Step::ReplyDone(r),
                _ = tick.tick(), if self.waiting.due => Step::Tick,
                _ = decide.tick(), if !self.interruptions.is_empty() => Step::Decide,
                _ = sleep_until(self.waiting.unfinished_until), if self.waiting.unfinished_until.is_some() => Step::Tick,
            };
            if self.sink.is_closed() {
                // A reader that leaves ends the writer quietly, like any pipeline tool.
                log::info!("output closed; stopping");
                self.cancel_reply("the output closed", false).await?;
                return Ok(());
            }
            match step {
                Step::Input(Some(frame)) => self.handle(frame).await?,
                Step::Input(None) => break,
                Step::ReplyDone(r) => self.reply_done(r)?,
                Step::Tick => self.answer_if_caller_done(None)?,
                Step::Decide => self.interruptions_still_talking().await?,
            }
        }
        // End of input: nothing more will come to merge with.
        self.waiting.turns.clear();
        self.waiting.unfinished_until = None;
        self.answer_if_caller_done(None)?;
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
                let turn = event.turn.unwrap_or(0);
                if event.get_bool("final") == Some(false) {
                    if event.get_bool("preview") == Some(true) && self.cfg.preempt {
                        self.preview(turn, text, event.trace);
                    } else {
                        log::debug!("ignoring a partial transcript: {text:?}");
                    }
                } else if text.is_empty() {
                    // The turn had no words (sttd sends an empty final transcript): nothing to
                    // answer in it, but a message held back for it can be answered now.
                    log::debug!("turn {turn}: no words");
                    self.drop_preempt_of(turn, "the turn had no words after all");
                    if let Some((since, _)) = self.interruptions.remove(&turn) {
                        self.false_alarm(turn, since, "no words");
                    }
                    self.waiting.transcribed(turn);
                    self.answer_if_caller_done(Some((turn, event.trace)))?;
                } else if self.interruptions.contains_key(&turn) && self.cfg.backchannels.matches(&text) {
                    let (since, _) = self.interruptions.remove(&turn).expect("checked");
                    self.drop_preempt_of(turn, "the turn was a backchannel after all");
                    self.false_alarm(turn, since, &format!("{text:?}, a backchannel"));
                    self.waiting.transcribed(turn);
                    self.answer_if_caller_done(None)?;
                } else {
                    if self.interruptions.remove(&turn).is_some() {
                        self.interrupted(turn, &format!("the caller said {text:?}")).await?;
                    }
                    self.waiting.transcribed(turn);
                    self.cancel("a new transcript").await?;
                    self.user_said(turn, text, event.trace)?;
                }
            }
            kind::SPEECH_START => {
                if let Some(turn) = event.turn {
                    self.waiting.turn_started(turn);
                }
                self.drop_preempt("the caller started a new turn");
                let continued = event.get_u64("continues").is_some();
                let turn = event.turn;
                self.sink.send(Frame::Event(event));
                match turn {
                    // tts-writer paused the reply; the turn's words decide.
                    Some(turn) if self.cfg.pause_first && !continued && self.reply_may_be_playing() => {
                        log::info!("turn {turn}: the caller speaks over the reply; paused until their words decide");
                        self.interruptions.insert(turn, (Instant::now(), false));
                    }
                    _ => self.cancel("the caller started speaking").await?,
                }
            }
            kind::SPEECH_END => {
                if let Some(turn) = event.turn {
                    self.waiting.turn_ended(turn);
                    if let Some(i) = self.interruptions.get_mut(&turn) {
                        i.1 = true;
                    }
                }
                self.sink.send(Frame::Event(event));
            }
            kind::CANCEL => {
                let wanted = event.turn;
                self.sink.send(Frame::Event(event));
                match wanted {
                    Some(turn) => self.drop_preempt_of(turn, "a cancel event"),
                    None => self.drop_preempt("a cancel event"),
                }
                if wanted.is_none() || wanted == self.active.as_ref().map(|a| a.turn) {
                    self.cancel_reply("a cancel event", false).await?;
                }
            }
            kind::CALL_START => {
                self.drop_preempt("a new call");
                self.cancel_reply("a new call", false).await?;
                self.waiting.clear();
                self.interruptions.clear();
                self.audible_until = None;
                self.conversation.start_new(event.get_str("call"))?;
                log::info!("call-start: new conversation {}", self.conversation.path().display());
                self.sink.send(Frame::Event(event));
            }
            kind::CALL_END => {
                self.drop_preempt("the call ended");
                self.cancel_reply("the call ended", false).await?;
                self.waiting.clear();
                self.interruptions.clear();
                self.audible_until = None;
                log::info!("call-end: conversation {} closed", self.conversation.id());
                self.sink.send(Frame::Event(event));
            }
            _ => self.sink.send(Frame::Event(event)),
        }
        Ok(())
    }

    /// Might the caller be hearing a reply now? Some of the reply in progress was handed to
    /// TTS, or the estimated end of the last reply's audio has not passed.
    fn reply_may_be_playing(&self) -> bool {
        let until = match &self.active {
            Some(a) => {
                let em = a.emitter.lock().unwrap();
                if !em.spoken.is_empty() {
                    return true;
                }
                self.audible_until
            }
            None => self.audible_until,
        };
        until.is_some_and(|t| Instant::now() < t + PLAYBACK_SLACK)
    }

    /// The interruption of `turn` was a false alarm: the paused reply goes on.
    fn false_alarm(&mut self, turn: u64, since: Instant, what: &str) {
        log::info!("turn {turn}: {what} over the reply: a false alarm; resuming it");
        // The reply was silent since the interruption began: it ends that much later.
        let paused = since.elapsed();
        self.audible_until = self.audible_until.map(|t| t + paused);
        if let Some(a) = &self.active {
            let mut em = a.emitter.lock().unwrap();
            em.audible_until = em.audible_until.map(|t| t + paused);
        }
        self.sink.send(Frame::Event(Event::new(kind::RESUME).with_turn(turn)));
    }

    /// The interruption of `turn` is real: cancel the reply (if it is still streaming) and
    /// tell tts-writer to drop what it paused (every reply of a turn before this one).
    async fn interrupted(&mut self, turn: u64, why: &str) -> anyhow::Result<()> {
        log::info!("turn {turn}: {why} over the reply: stopping it");
        self.cancel_reply(why, true).await?;
        self.audible_until = None;
        self.sink.send(Frame::Event(Event::new(kind::CANCEL).with_turn(turn.saturating_sub(1))));
        Ok(())
    }

    /// Interruptions still talking after `--interrupt-after` are real, whatever the words.
    async fn interruptions_still_talking(&mut self) -> anyhow::Result<()> {
        let after = self.cfg.interrupt_after;
        let due: Vec<u64> = self
            .interruptions
            .iter()
            .filter(|(_, (since, ended))| !*ended && since.elapsed() >= after)
            .map(|(t, _)| *t)
            .collect();
        for turn in due {
            self.interruptions.remove(&turn);
            self.interrupted(turn, &format!("still talking after {} ms", after.as_millis())).await?;
        }
        self.interruptions.retain(|_, (since, _)| since.elapsed() < INTERRUPTION_FORGET);
        Ok(())
    }

    /// A final transcript with words: one user message, merged with the previous one if that
    /// has no reply heard yet; answered now unless the caller is already saying more.
    fn user_said(&mut self, turn: u64, text: String, trace: TurnTrace) -> anyhow::Result<()> {
        let text = match self.waiting.message_with(&text) {
            (Some(first), merged) => {
                log::info!("turn {turn}: continues turn {first} before its reply was heard; one message: {merged:?}");
                self.conversation.replace_last_user(&merged, Some(turn))?;
                merged
            }
            (None, text) => {
                self.conversation.append(Role::User, &text, Some(turn), false)?;
                text
            }
        };
        self.waiting.unfinished_until = None;
        if !self.cfg.unfinished_wait.is_zero() && crate::unfinished::sounds_unfinished(&text) {
            log::info!(
                "turn {turn}: {text:?} stops mid-sentence; waiting up to {} ms for the rest",
                self.cfg.unfinished_wait.as_millis()
            );
            self.waiting.unfinished_until = Some(Instant::now() + self.cfg.unfinished_wait);
        }
        self.waiting.unanswered = Some((turn, text));
        self.waiting.due = true;
        if self.waiting.caller_has_more(self.cfg.merge_wait) {
            log::info!("turn {turn}: the caller went on speaking; waiting for the rest before answering");
        }
        self.answer_if_caller_done(Some((turn, trace)))
    }

    /// Answer the unanswered message unless a reply is running or the caller is still saying
    /// more (a later turn's transcript is on its way; it will be merged). `latest` is the turn
    /// that just finished: the reply carries the newest turn id, so tts-writer, which stops
    /// replies of turns older than the caller's latest speech-start, plays it.
    fn answer_if_caller_done(&mut self, latest: Option<(u64, TurnTrace)>) -> anyhow::Result<()> {
        if self.active.is_some() || !self.waiting.due || self.waiting.caller_has_more(self.cfg.merge_wait) {
            return Ok(());
        }
        if let Some(until) = self.waiting.unfinished_until {
            if Instant::now() < until {
                return Ok(());
            }
            self.waiting.unfinished_until = None;
            log::info!("the caller said no more in {} ms; answering what they said", self.cfg.unfinished_wait.as_millis());
        }
        let Some((turn, text)) = self.waiting.unanswered.clone() else { return Ok(()) };
        self.waiting.due = false;
        let (turn, trace) = match latest {
            Some((t, trace)) if t >= turn => (t, trace),
            _ => (turn, TurnTrace::default()),
        };
        self.start_reply(turn, text, trace)
    }

    fn start_reply(&mut self, turn: u64, text: String, trace: TurnTrace) -> anyhow::Result<()> {
        let messages = self.conversation.messages(self.cfg.budget);
        if let Some(p) = self.preempt.take() {
            if p.turn == turn && p.messages == messages {
                let mut em = p.emitter.lock().unwrap();
                log::info!(
                    "turn {turn}: the reply started early stands ({:.0} ms before the transcript, {} chunk(s) ready)",
                    p.started.elapsed().as_secs_f64() * 1e3,
                    em.held.as_ref().map_or(0, Vec::len)
                );
                em.release(trace);
                drop(em);
                self.active = Some(ActiveReply { turn, user_text: text, emitter: p.emitter, task: p.task });
                return Ok(());
            }
            let why = if p.turn == turn { "the final transcript asks otherwise" } else { "a later turn is answered" };
            p.drop_silently(why);
        }
        log::info!("turn {turn}: {} message(s) of history → {}", messages.len(), self.cfg.provider.url());
        let (emitter, task) = self.spawn_reply(turn, messages, trace, false);
        self.active = Some(ActiveReply { turn, user_text: text, emitter, task });
        Ok(())
    }

    /// A preview of `turn`: start its reply now, held, if nothing else is going on (no reply
    /// streaming, no other interruption to decide, not a backchannel over a reply, no other
    /// turn of the caller pending). The request is the one the final transcript would make.
    fn preview(&mut self, turn: u64, text: String, trace: TurnTrace) {
        // A turn that began while a reply may have been playing is an interruption, decided by
        // its words: a preview that is a backchannel would resume that reply, so it starts
        // nothing; other words will cancel it, and their answer may start now (held, like any).
        let undecided = self.interruptions.keys().any(|t| *t != turn)
            || (self.interruptions.contains_key(&turn) && self.cfg.backchannels.matches(&text));
        if text.is_empty() || self.active.is_some() || undecided {
            log::debug!("turn {turn}: preview {text:?} not used (a reply streaming, or an interruption to decide)");
            return;
        }
        if self.waiting.turns.keys().any(|t| *t != turn) {
            log::debug!("turn {turn}: preview {text:?} not used (another turn of the caller is pending)");
            return;
        }
        let (merged_with, user_text) = self.waiting.message_with(&text);
        let messages = self.conversation.messages_if_user_said(&user_text, merged_with.is_some(), self.cfg.budget);
        if self.preempt.as_ref().is_some_and(|p| p.turn == turn && p.messages == messages) {
            return;
        }
        self.drop_preempt("the caller said more");
        log::info!("turn {turn}: preview {user_text:?}: starting the reply early, held until the final transcript");
        let (emitter, task) = self.spawn_reply(turn, messages.clone(), trace, true);
        self.preempt = Some(Preempt { turn, messages, emitter, task, started: Instant::now() });
    }

    fn drop_preempt(&mut self, why: &str) {
        if let Some(p) = self.preempt.take() {
            p.drop_silently(why);
        }
    }

    /// Drop the held reply if it is `turn`'s.
    fn drop_preempt_of(&mut self, turn: u64, why: &str) {
        if self.preempt.as_ref().is_some_and(|p| p.turn == turn) {
            self.drop_preempt(why);
        }
    }

    /// Start streaming a reply to `messages` in a task of its own; `held`: its chunks are kept
    /// until [`TurnEmitter::release`].
    fn spawn_reply(
        &self,
        turn: u64,
        messages: Vec<ChatMessage>,
        mut trace: TurnTrace,
        held: bool,
    ) -> (Arc<Mutex<TurnEmitter>>, JoinHandle<Result<u32, ReplyError>>) {
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
            max_sentences: self.cfg.max_sentences,
            sentences: 0,
            audible_until: None,
            held: held.then(Vec::new),
        }));
        let (cfg, client, em) = (self.cfg.clone(), self.client.clone(), emitter.clone());
        let task = tokio::spawn(async move {
            let result = stream_reply(&client, &cfg.provider, &messages, &cfg.stream, |t| em.lock().unwrap().on_text(t)).await;
            // A held reply's last sentence is complete now, not when it is released: so a
            // one-sentence reply can still go out ahead (finishing twice adds nothing).
            let mut em = em.lock().unwrap();
            if result.is_ok() && em.held.is_some() {
                em.finish();
            }
            result
        });
        (emitter, task)
    }

    /// The streaming task ended on its own (complete, or failed).
    fn reply_done(&mut self, result: Result<Result<u32, ReplyError>, tokio::task::JoinError>) -> anyhow::Result<()> {
        let Some(active) = self.active.take() else { return Ok(()) };
        let mut em = active.emitter.lock().unwrap();
        em.finish();
        self.audible_until = em.audible_until.or(self.audible_until);
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
            self.waiting.unanswered = None;
        }
        // After a failure (apology spoken) the message stays unanswered but is not retried:
        // the caller's next words merge with it.
        self.waiting.due = false;
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

    /// Stop the reply in progress, if any. `answer_later`: if none of it reached TTS, the
    /// caller's message still wants a reply (the caller only went on speaking).
    async fn cancel(&mut self, why: &str) -> anyhow::Result<()> {
        self.cancel_reply(why, true).await
    }

    async fn cancel_reply(&mut self, why: &str, answer_later: bool) -> anyhow::Result<()> {
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
        if spoken.is_empty() {
            // Nothing of it reached TTS: the reply leaves no trace, and the caller's message
            // stays unanswered (the next part merges with it).
            self.waiting.unanswered = Some((active.turn, active.user_text.clone()));
            self.waiting.due = answer_later;
        } else {
            self.conversation.append(Role::Assistant, &spoken.join(" "), Some(em.turn), true)?;
            self.waiting.unanswered = None;
        }
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

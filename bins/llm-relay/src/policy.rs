//! The turn policy: when to answer, what to hold, what to drop, merge, resume or cancel.
//!
//! Every rule of README.md ("One message per thing the caller says", "Preemption", "Barge-in",
//! "Events") is decided here, from events and the time passed in, so that each rule can be
//! tested by feeding events and moving a clock, without a process, a server or a sleep. The
//! executor (relay.rs) owns the I/O: it feeds [`Input`]s with `Instant::now()` and carries out
//! the [`Command`]s, in order, as they come. The history is read and written through
//! [`Host`], so a merge or a request window is decided on what the conversation really holds.

use crate::backchannel::Backchannels;
use crate::conversation::Budget;
use crate::provider::{ChatMessage, Role};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tgvoice::event::kind;
use tgvoice::{Event, TurnTrace};

/// Identifies one reply stream (a reply started, held or not).
pub type ReplyId = u64;

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// How much history goes into a request.
    pub budget: Budget,
    /// Spoken (already speakable) when a reply fails before anything was said; None = silence.
    pub apology: Option<String>,
    /// See `--merge-wait` ([`Waiting`]).
    pub merge_wait: Duration,
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

/// What the policy is told.
#[derive(Debug, Clone)]
pub enum Input {
    /// An event from `text.frames`.
    Event(Event),
    /// Reply `reply` produced a speakable chunk.
    Chunk { reply: ReplyId, text: String },
    /// Reply `reply`'s stream ended: complete (`failure` None) or failed (why).
    Done { reply: ReplyId, failure: Option<String> },
    /// Time passed (the executor wakes at [`Policy::next_wake`]).
    Tick,
    /// The input ended: nothing more will come to merge with.
    EndOfInput,
    /// The output's reader left: stop quietly.
    OutputClosed,
}

/// What the executor does, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Pass an event on unchanged (the sink sends urgent ones ahead).
    Forward(Event),
    /// Stream a reply to `messages`; its chunks come back as [`Input::Chunk`]. `held`: it was
    /// started from a preview and stands only if the final transcript makes the same request.
    Start { reply: ReplyId, turn: u64, messages: Vec<ChatMessage>, trace: TurnTrace, held: bool },
    /// Close `reply`'s stream (the server stops generating); none of it is written any more.
    Stop { reply: ReplyId },
    /// `reply-ahead`: the first chunk of a held reply, for tts-writer to speak ahead.
    Ahead { reply: ReplyId, turn: u64, seq: u64, text: String },
    /// The held reply stands: the final transcript's `trace` is its trace from now on; its
    /// held chunks follow as [`Command::Chunk`].
    Release { reply: ReplyId, trace: TurnTrace },
    /// `reply-chunk`: hand this chunk to TTS.
    Chunk { reply: ReplyId, turn: u64, seq: u64, text: String },
    /// An `error` event for the supervisor: the LLM failed.
    Failed { reply: ReplyId, turn: u64, message: String },
    /// `reply-end`.
    End { reply: ReplyId, turn: u64, cancelled: bool, error: bool },
    /// `resume {turn}`: the interruption was a false alarm; the paused reply plays on.
    Resume { turn: u64 },
    /// `cancel {turn}`: tts-writer drops every reply up to `turn`.
    CancelUpTo { turn: u64 },
    /// A new call: begin a new conversation (named after `call`).
    NewConversation { call: Option<String> },
}

/// The policy's view of the world outside: commands are carried out at once and in order,
/// the history is the conversation on disk, and chunks handed to the output may still be
/// taken back before they are written.
pub trait Host {
    fn run(&mut self, command: Command);
    /// Take back the `reply-chunk`s of `turn` still queued for the output; their `seq`s.
    fn withdraw_unwritten(&mut self, turn: u64) -> Vec<u64>;
    fn append(&mut self, role: Role, text: &str, turn: Option<u64>, interrupted: bool);
    /// Replace the last user message (the caller went on before its reply was heard).
    fn replace_last_user(&mut self, text: &str, turn: Option<u64>);
    /// The request the history makes now.
    fn messages(&mut self, budget: Budget) -> Vec<ChatMessage>;
    /// The request it would make once the caller's `text` is recorded (`merge`: replacing the
    /// last user message).
    fn messages_if_user_said(&mut self, text: &str, merge: bool, budget: Budget) -> Vec<ChatMessage>;
}

/// Piper and espeak speak ~14–16 characters a second; a lower rate over-estimates how long a
/// reply plays, which errs towards treating speech over it as an interruption to decide.
const SPOKEN_CHARS_PER_S: f64 = 12.0;
/// Synthesis and the output lead, added to the estimate of when the audio handed on ends.
const PLAYBACK_SLACK: Duration = Duration::from_millis(1500);
/// An interruption whose transcript never comes is forgotten after this (tts-writer's pause
/// timeout has settled it long before).
const INTERRUPTION_FORGET: Duration = Duration::from_secs(60);
/// How long a held-back message waits for a turn whose speech-end never came (vadseg cuts
/// turns at 25 s by default). With a speech-end, `--merge-wait` applies, counted from that
/// speech-end or the last transcript, whichever is later (sttd transcribes in order; on a
/// loaded machine one turn took 12–15 s).
const MERGE_WAIT_NO_END: Duration = Duration::from_secs(60);
/// Most caller turns awaiting their transcript at once (a real caller has one or two).
const MAX_PENDING_TURNS: usize = 32;

/// Might the caller be hearing a reply? A guess today: llm-relay has no feedback from
/// tts-writer, so each chunk handed on is assumed to play at [`SPOKEN_CHARS_PER_S`] after the
/// previous one, plus [`PLAYBACK_SLACK`]. The policy asks only [`Playback::may_be_playing`];
/// facts from tts-writer (`reply-played`) can replace the guess here alone.
#[derive(Debug, Default)]
pub struct Playback {
    /// Estimated end of the audio of the reply in progress (None until a chunk is handed on).
    current_until: Option<Instant>,
    /// Estimated end of the last finished reply's audio.
    last_until: Option<Instant>,
}

impl Playback {
    /// `spoken`: some of the reply in progress was handed on; `streaming`: a reply is in
    /// progress at all (then only its own chunks count).
    pub fn may_be_playing(&self, now: Instant, streaming: bool, spoken: bool) -> bool {
        if streaming {
            return spoken;
        }
        self.last_until.is_some_and(|t| now < t + PLAYBACK_SLACK)
    }

    fn reply_started(&mut self) {
        self.current_until = None;
    }

    fn handed_on(&mut self, now: Instant, text: &str) {
        let starts = self.current_until.map_or(now, |t| t.max(now));
        self.current_until = Some(starts + Duration::from_secs_f64(text.chars().count() as f64 / SPOKEN_CHARS_PER_S));
    }

    fn reply_finished(&mut self) {
        self.last_until = self.current_until.take().or(self.last_until);
    }

    fn reply_cancelled(&mut self) {
        self.current_until = None;
    }

    /// The reply was silent for `paused` (an interruption that turned out a false alarm): it
    /// ends that much later.
    fn paused_for(&mut self, paused: Duration) {
        self.current_until = self.current_until.map(|t| t + paused);
        self.last_until = self.last_until.map(|t| t + paused);
    }

    /// tts-writer drops what it paused, or the call changed: nothing plays.
    fn silenced(&mut self) {
        self.last_until = None;
    }
}

/// The reply whose chunks go to TTS.
#[derive(Debug)]
struct Reply {
    id: ReplyId,
    turn: u64,
    /// The user message this reply answers (for merging when it is dropped unheard).
    user_text: String,
    seq: u64,
    /// (seq, text) of every chunk handed on.
    spoken: Vec<(u64, String)>,
}

/// A reply started from a preview, held until the final transcript.
#[derive(Debug)]
struct Held {
    id: ReplyId,
    turn: u64,
    /// What the LLM was asked: the reply stands only if the final request is the same.
    messages: Vec<ChatMessage>,
    chunks: Vec<String>,
    /// The stream ended before the reply was released (`Some(failure)`).
    done: Option<Option<String>>,
    started: Instant,
}

/// A caller turn that began while a reply may have been playing, awaiting the decision.
#[derive(Debug, Clone, Copy)]
struct Interruption {
    since: Instant,
    ended: bool,
}

/// What the caller said that has no reply heard yet, and the caller's turns whose transcript
/// has not arrived (speech-start seen, final transcript not yet).
#[derive(Debug, Default)]
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
    fn turn_started(&mut self, now: Instant, turn: u64) {
        self.turns.entry(turn).or_insert((now, None));
        // Bounded by count as well as by time: a flood of speech-starts with no transcripts
        // (bad input) must not grow it for a minute. The oldest is the one given up first.
        while self.turns.len() > MAX_PENDING_TURNS {
            self.turns.pop_first();
        }
    }

    fn turn_ended(&mut self, now: Instant, turn: u64) {
        if let Some(t) = self.turns.get_mut(&turn) {
            t.1.get_or_insert(now);
        }
    }

    /// A final transcript for `turn` arrived: it and every older turn are done.
    fn transcribed(&mut self, now: Instant, turn: u64) {
        self.turns.retain(|t, _| *t > turn);
        self.last_transcript = Some(now);
    }

    /// When the transcript of a pending turn is given up on.
    fn gives_up_at(&self, started: Instant, ended: Option<Instant>, merge_wait: Duration) -> Instant {
        match ended {
            Some(e) => self.last_transcript.map_or(e, |p| p.max(e)) + merge_wait,
            None => started + MERGE_WAIT_NO_END,
        }
    }

    /// Turns still being transcribed, after giving up on those that waited too long.
    fn caller_has_more(&mut self, now: Instant, merge_wait: Duration) -> bool {
        let expired: Vec<u64> = self
            .turns
            .iter()
            .filter(|(_, (started, ended))| now >= self.gives_up_at(*started, *ended, merge_wait))
            .map(|(t, _)| *t)
            .collect();
        for turn in expired {
            log::warn!("turn {turn}: no transcript came for it; answering without it");
            self.turns.remove(&turn);
        }
        !self.turns.is_empty()
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

pub struct Policy {
    cfg: PolicyConfig,
    next_id: ReplyId,
    active: Option<Reply>,
    held: Option<Held>,
    waiting: Waiting,
    /// Caller turns that started while a reply may have been playing, awaiting the decision.
    interruptions: BTreeMap<u64, Interruption>,
    playback: Playback,
}

impl Policy {
    pub fn new(cfg: PolicyConfig) -> Policy {
        Policy {
            cfg,
            next_id: 1,
            active: None,
            held: None,
            waiting: Waiting::default(),
            interruptions: BTreeMap::new(),
            playback: Playback::default(),
        }
    }

    /// A reply is streaming whose chunks go to TTS (the executor waits for it at the end).
    pub fn replying(&self) -> bool {
        self.active.is_some()
    }

    /// When the policy next has something to decide by itself (a wait running out); the
    /// executor sends [`Input::Tick`] then.
    pub fn next_wake(&self) -> Option<Instant> {
        let mut wakes: Vec<Instant> = vec![];
        if self.active.is_none() && self.waiting.due {
            wakes.extend(self.waiting.unfinished_until);
            for (started, ended) in self.waiting.turns.values() {
                wakes.push(self.waiting.gives_up_at(*started, *ended, self.cfg.merge_wait));
            }
        }
        for i in self.interruptions.values() {
            if !i.ended {
                wakes.push(i.since + self.cfg.interrupt_after);
            }
            wakes.push(i.since + INTERRUPTION_FORGET);
        }
        wakes.into_iter().min()
    }

    pub fn handle(&mut self, now: Instant, input: Input, host: &mut dyn Host) {
        match input {
            Input::Event(e) => self.event(now, e, host),
            Input::Chunk { reply, text } => self.chunk(now, reply, text, host),
            Input::Done { reply, failure } => self.reply_done(reply, failure, host),
            Input::Tick => {
                self.interruptions_still_talking(now, host);
                self.answer_if_caller_done(now, None, host);
            }
            Input::EndOfInput => {
                self.waiting.turns.clear();
                self.waiting.unfinished_until = None;
                self.answer_if_caller_done(now, None, host);
            }
            Input::OutputClosed => self.cancel_reply("the output closed", false, host),
        }
    }

    fn event(&mut self, now: Instant, event: Event, host: &mut dyn Host) {
        match event.kind.as_str() {
            kind::TRANSCRIPT => {
                let text = event.text.as_deref().unwrap_or("").trim().to_string();
                let turn = event.turn.unwrap_or(0);
                if event.get_bool("final") == Some(false) {
                    if event.get_bool("preview") == Some(true) && self.cfg.preempt {
                        self.preview(now, turn, text, event.trace, host);
                    } else {
                        log::debug!("ignoring a partial transcript: {text:?}");
                    }
                } else if text.is_empty() {
                    // The turn had no words (sttd sends an empty final transcript): nothing to
                    // answer in it, but a message held back for it can be answered now.
                    log::debug!("turn {turn}: no words");
                    self.drop_held_of(turn, "the turn had no words after all", host);
                    if let Some(i) = self.interruptions.remove(&turn) {
                        self.false_alarm(now, turn, i.since, "no words", host);
                    }
                    self.waiting.transcribed(now, turn);
                    self.answer_if_caller_done(now, Some((turn, event.trace)), host);
                } else if self.interruptions.contains_key(&turn) && self.cfg.backchannels.matches(&text) {
                    let i = self.interruptions.remove(&turn).expect("checked");
                    self.drop_held_of(turn, "the turn was a backchannel after all", host);
                    self.false_alarm(now, turn, i.since, &format!("{text:?}, a backchannel"), host);
                    self.waiting.transcribed(now, turn);
                    self.answer_if_caller_done(now, None, host);
                } else {
                    if self.interruptions.remove(&turn).is_some() {
                        self.interrupted(turn, &format!("the caller said {text:?}"), host);
                    }
                    self.waiting.transcribed(now, turn);
                    self.cancel_reply("a new transcript", true, host);
                    self.user_said(now, turn, text, event.trace, host);
                }
            }
            kind::SPEECH_START => {
                if let Some(turn) = event.turn {
                    self.waiting.turn_started(now, turn);
                }
                self.drop_held("the caller started a new turn", host);
                let continued = event.get_u64("continues").is_some();
                let turn = event.turn;
                host.run(Command::Forward(event));
                match turn {
                    // tts-writer paused the reply; the turn's words decide.
                    Some(turn) if self.cfg.pause_first && !continued && self.may_be_playing(now) => {
                        log::info!("turn {turn}: the caller speaks over the reply; paused until their words decide");
                        self.interruptions.insert(turn, Interruption { since: now, ended: false });
                    }
                    _ => self.cancel_reply("the caller started speaking", true, host),
                }
            }
            kind::SPEECH_END => {
                if let Some(turn) = event.turn {
                    self.waiting.turn_ended(now, turn);
                    if let Some(i) = self.interruptions.get_mut(&turn) {
                        i.ended = true;
                    }
                }
                host.run(Command::Forward(event));
            }
            kind::CANCEL => {
                let wanted = event.turn;
                host.run(Command::Forward(event));
                match wanted {
                    Some(turn) => self.drop_held_of(turn, "a cancel event", host),
                    None => self.drop_held("a cancel event", host),
                }
                if wanted.is_none() || wanted == self.active.as_ref().map(|a| a.turn) {
                    self.cancel_reply("a cancel event", false, host);
                }
            }
            kind::CALL_START | kind::CALL_END => {
                let start = event.is(kind::CALL_START);
                let why = if start { "a new call" } else { "the call ended" };
                self.drop_held(why, host);
                self.cancel_reply(why, false, host);
                self.waiting = Waiting::default();
                self.interruptions.clear();
                self.playback.silenced();
                if start {
                    host.run(Command::NewConversation { call: event.get_str("call").map(str::to_string) });
                } else {
                    log::info!("call-end: the conversation is closed");
                }
                host.run(Command::Forward(event));
            }
            _ => host.run(Command::Forward(event)),
        }
    }

    /// Might the caller be hearing a reply now?
    fn may_be_playing(&self, now: Instant) -> bool {
        let spoken = self.active.as_ref().is_some_and(|a| !a.spoken.is_empty());
        self.playback.may_be_playing(now, self.active.is_some(), spoken)
    }

    /// A chunk of a reply: handed to TTS if the reply is the one in progress, kept if it is
    /// held (the first one goes out ahead), ignored if the reply was stopped.
    fn chunk(&mut self, now: Instant, reply: ReplyId, text: String, host: &mut dyn Host) {
        if self.active.as_ref().is_some_and(|a| a.id == reply) {
            self.hand_on(now, text, host);
        } else if let Some(h) = self.held.as_mut().filter(|h| h.id == reply) {
            if h.chunks.is_empty() {
                // tts-writer may speak it now, so it plays at once if the turn confirms it
                host.run(Command::Ahead { reply, turn: h.turn, seq: 0, text: text.clone() });
            }
            h.chunks.push(text);
        }
    }

    fn hand_on(&mut self, now: Instant, text: String, host: &mut dyn Host) {
        let Some(a) = self.active.as_mut() else { return };
        host.run(Command::Chunk { reply: a.id, turn: a.turn, seq: a.seq, text: text.clone() });
        self.playback.handed_on(now, &text);
        a.spoken.push((a.seq, text));
        a.seq += 1;
    }

    /// The interruption of `turn` was a false alarm: the paused reply goes on.
    fn false_alarm(&mut self, now: Instant, turn: u64, since: Instant, what: &str, host: &mut dyn Host) {
        log::info!("turn {turn}: {what} over the reply: a false alarm; resuming it");
        self.playback.paused_for(now.saturating_duration_since(since));
        host.run(Command::Resume { turn });
    }

    /// The interruption of `turn` is real: cancel the reply (if it is still streaming) and
    /// tell tts-writer to drop what it paused (every reply of a turn before this one).
    fn interrupted(&mut self, turn: u64, why: &str, host: &mut dyn Host) {
        log::info!("turn {turn}: {why} over the reply: stopping it");
        self.cancel_reply(why, true, host);
        self.playback.silenced();
        host.run(Command::CancelUpTo { turn: turn.saturating_sub(1) });
    }

    /// Interruptions still talking after `--interrupt-after` are real, whatever the words.
    fn interruptions_still_talking(&mut self, now: Instant, host: &mut dyn Host) {
        let after = self.cfg.interrupt_after;
        let due: Vec<u64> = self
            .interruptions
            .iter()
            .filter(|(_, i)| !i.ended && now >= i.since + after)
            .map(|(t, _)| *t)
            .collect();
        for turn in due {
            self.interruptions.remove(&turn);
            self.interrupted(turn, &format!("still talking after {} ms", after.as_millis()), host);
        }
        self.interruptions.retain(|_, i| now < i.since + INTERRUPTION_FORGET);
    }

    /// A final transcript with words: one user message, merged with the previous one if that
    /// has no reply heard yet; answered now unless the caller is already saying more.
    fn user_said(&mut self, now: Instant, turn: u64, text: String, trace: TurnTrace, host: &mut dyn Host) {
        let text = match self.waiting.message_with(&text) {
            (Some(first), merged) => {
                log::info!("turn {turn}: continues turn {first} before its reply was heard; one message: {merged:?}");
                host.replace_last_user(&merged, Some(turn));
                merged
            }
            (None, text) => {
                host.append(Role::User, &text, Some(turn), false);
                text
            }
        };
        self.waiting.unfinished_until = None;
        if !self.cfg.unfinished_wait.is_zero() && crate::unfinished::sounds_unfinished(&text) {
            log::info!(
                "turn {turn}: {text:?} stops mid-sentence; waiting up to {} ms for the rest",
                self.cfg.unfinished_wait.as_millis()
            );
            self.waiting.unfinished_until = Some(now + self.cfg.unfinished_wait);
        }
        self.waiting.unanswered = Some((turn, text));
        self.waiting.due = true;
        if self.waiting.caller_has_more(now, self.cfg.merge_wait) {
            log::info!("turn {turn}: the caller went on speaking; waiting for the rest before answering");
        }
        self.answer_if_caller_done(now, Some((turn, trace)), host);
    }

    /// Answer the unanswered message unless a reply is running or the caller is still saying
    /// more (a later turn's transcript is on its way; it will be merged). `latest` is the turn
    /// that just finished: the reply carries the newest turn id, so tts-writer, which stops
    /// replies of turns older than the caller's latest speech-start, plays it.
    fn answer_if_caller_done(&mut self, now: Instant, latest: Option<(u64, TurnTrace)>, host: &mut dyn Host) {
        if self.active.is_some() || !self.waiting.due || self.waiting.caller_has_more(now, self.cfg.merge_wait) {
            return;
        }
        if let Some(until) = self.waiting.unfinished_until {
            if now < until {
                return;
            }
            self.waiting.unfinished_until = None;
            log::info!("the caller said no more in {} ms; answering what they said", self.cfg.unfinished_wait.as_millis());
        }
        let Some((turn, text)) = self.waiting.unanswered.clone() else { return };
        self.waiting.due = false;
        let (turn, trace) = match latest {
            Some((t, trace)) if t >= turn => (t, trace),
            _ => (turn, TurnTrace::default()),
        };
        self.start_reply(now, turn, text, trace, host);
    }

    fn start_reply(&mut self, now: Instant, turn: u64, text: String, trace: TurnTrace, host: &mut dyn Host) {
        let messages = host.messages(self.cfg.budget);
        if let Some(h) = self.held.take() {
            if h.turn == turn && h.messages == messages {
                log::info!(
                    "turn {turn}: the reply started early stands ({:.0} ms before the transcript, {} chunk(s) ready)",
                    now.saturating_duration_since(h.started).as_secs_f64() * 1e3,
                    h.chunks.len()
                );
                host.run(Command::Release { reply: h.id, trace });
                self.active = Some(Reply { id: h.id, turn, user_text: text, seq: 0, spoken: vec![] });
                self.playback.reply_started();
                for chunk in h.chunks {
                    self.hand_on(now, chunk, host);
                }
                if let Some(failure) = h.done {
                    self.reply_done(h.id, failure, host);
                }
                return;
            }
            let why = if h.turn == turn { "the final transcript asks otherwise" } else { "a later turn is answered" };
            Self::drop_silently(h, why, host);
        }
        let reply = self.new_id();
        host.run(Command::Start { reply, turn, messages, trace, held: false });
        self.active = Some(Reply { id: reply, turn, user_text: text, seq: 0, spoken: vec![] });
        self.playback.reply_started();
    }

    /// A preview of `turn`: start its reply now, held, if nothing else is going on (no reply
    /// streaming, no other interruption to decide, not a backchannel over a reply, no other
    /// turn of the caller pending). The request is the one the final transcript would make.
    fn preview(&mut self, now: Instant, turn: u64, text: String, trace: TurnTrace, host: &mut dyn Host) {
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
        let messages = host.messages_if_user_said(&user_text, merged_with.is_some(), self.cfg.budget);
        if self.held.as_ref().is_some_and(|h| h.turn == turn && h.messages == messages) {
            return;
        }
        self.drop_held("the caller said more", host);
        log::info!("turn {turn}: preview {user_text:?}: starting the reply early, held until the final transcript");
        let reply = self.new_id();
        host.run(Command::Start { reply, turn, messages: messages.clone(), trace, held: true });
        self.held = Some(Held { id: reply, turn, messages, chunks: vec![], done: None, started: now });
    }

    fn new_id(&mut self) -> ReplyId {
        self.next_id += 1;
        self.next_id - 1
    }

    fn drop_silently(h: Held, why: &str, host: &mut dyn Host) {
        host.run(Command::Stop { reply: h.id });
        log::info!("turn {}: the reply started early is dropped unheard ({why})", h.turn);
    }

    fn drop_held(&mut self, why: &str, host: &mut dyn Host) {
        if let Some(h) = self.held.take() {
            Self::drop_silently(h, why, host);
        }
    }

    /// Drop the held reply if it is `turn`'s.
    fn drop_held_of(&mut self, turn: u64, why: &str, host: &mut dyn Host) {
        if self.held.as_ref().is_some_and(|h| h.turn == turn) {
            self.drop_held(why, host);
        }
    }

    /// A reply's stream ended on its own (complete, or failed).
    fn reply_done(&mut self, reply: ReplyId, failure: Option<String>, host: &mut dyn Host) {
        if let Some(h) = self.held.as_mut().filter(|h| h.id == reply) {
            h.done = Some(failure); // settled when it is released
            return;
        }
        let Some(active) = self.active.take_if(|a| a.id == reply) else { return };
        self.playback.reply_finished();
        if let Some(msg) = &failure {
            // Informational, for the supervisor/bridge (fifo-layout.md `error`).
            host.run(Command::Failed { reply, turn: active.turn, message: msg.clone() });
            log::error!("turn {}: no reply from the LLM after {} chunk(s): {msg}", active.turn, active.spoken.len());
            if let (true, Some(apology)) = (active.spoken.is_empty(), &self.cfg.apology) {
                // Spoken, but not part of the conversation.
                host.run(Command::Chunk { reply, turn: active.turn, seq: active.seq, text: apology.clone() });
            }
        }
        // History first, so a relay killed right after reply-end still remembers the reply.
        if !active.spoken.is_empty() {
            let spoken: Vec<&str> = active.spoken.iter().map(|(_, t)| t.as_str()).collect();
            host.append(Role::Assistant, &spoken.join(" "), Some(active.turn), false);
            self.waiting.unanswered = None;
        }
        // After a failure (apology spoken) the message stays unanswered but is not retried:
        // the caller's next words merge with it.
        self.waiting.due = false;
        host.run(Command::End { reply, turn: active.turn, cancelled: false, error: failure.is_some() });
    }

    /// Stop the reply in progress, if any, keeping in the history what was handed to TTS.
    /// `answer_later`: if none of it reached TTS, the caller's message still wants a reply
    /// (the caller only went on speaking).
    fn cancel_reply(&mut self, why: &str, answer_later: bool, host: &mut dyn Host) {
        let Some(active) = self.active.take() else { return };
        host.run(Command::Stop { reply: active.id });
        self.playback.reply_cancelled();
        let withdrawn = host.withdraw_unwritten(active.turn);
        let spoken: Vec<&str> =
            active.spoken.iter().filter(|(seq, _)| !withdrawn.contains(seq)).map(|(_, t)| t.as_str()).collect();
        host.run(Command::End { reply: active.id, turn: active.turn, cancelled: true, error: false });
        if spoken.is_empty() {
            // Nothing of it reached TTS: the reply leaves no trace, and the caller's message
            // stays unanswered (the next part merges with it).
            self.waiting.unanswered = Some((active.turn, active.user_text.clone()));
            self.waiting.due = answer_later;
        } else {
            host.append(Role::Assistant, &spoken.join(" "), Some(active.turn), true);
            self.waiting.unanswered = None;
        }
        log::info!(
            "turn {}: reply cancelled ({why}) after {} chunk(s) handed to TTS{}",
            active.turn,
            spoken.len(),
            if withdrawn.is_empty() {
                String::new()
            } else {
                format!(", {} withdrawn from the queue", withdrawn.len())
            }
        );
    }
}

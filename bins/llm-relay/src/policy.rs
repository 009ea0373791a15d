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
use std::collections::{BTreeMap, HashMap};
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
    /// Spoken once when a reply has said nothing this long after it was asked for, so the
    /// caller is not left in silence; None = never (`--holding-after`, `--holding-phrase`).
    pub holding: Option<(Duration, String)>,
    /// Spoken once per turn when a tool call has run this long (`--tool-holding-after`), even
    /// if the reply has already said something; None = never.
    pub tool_holding: Option<(Duration, String)>,
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
    /// Ask the end judge ([`Command::Judge`], `--end-judge`) whether words that pass the words
    /// check (unfinished.rs) can stand as a whole request; None = the words check alone. The
    /// duration is how long an answer waits for the verdict before going by the words alone.
    pub judge: Option<Duration>,
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
    /// Reply `reply` started (`running`) or finished running tool calls.
    Tools { reply: ReplyId, running: bool },
    /// Time passed (the executor wakes at [`Policy::next_wake`]).
    Tick,
    /// The input ended: nothing more will come to merge with.
    EndOfInput,
    /// The output's reader left: stop quietly.
    OutputClosed,
    /// The end judge's verdict on `text` (the key [`Command::Judge`] gave): can it stand as a
    /// whole request? None: the judge could not say (it failed or timed out).
    Judged { text: String, complete: Option<bool> },
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
    /// Ask the end judge whether `text` can stand as a whole request; the answer comes back as
    /// [`Input::Judged`] with the same `text`. `messages`: the request a reply to it would make,
    /// its last message `text` (the judge reads the conversation, and its prompt shares the
    /// reply's prefix, so the server's cache of that prefix is kept).
    Judge { text: String, messages: Vec<ChatMessage> },
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
    /// The reply of `turn`, recorded as interrupted, was heard only up to `text` (tts-writer's
    /// account): the history keeps that, not every chunk handed on.
    fn heard_only(&mut self, turn: u64, text: &str);
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
/// Messages shorter than this are not judged: "Yes", "John", "Four people" answer a question,
/// and the judge, which sees no context, takes a name for the start of a sentence.
const JUDGE_MIN_WORDS: usize = 3;
/// Verdicts kept (the words of the last few turns and their previews).
const MAX_VERDICTS: usize = 64;
/// After the end judge failed to give a verdict (its server down, hung or too slow), it is not
/// asked for this long: each ask would hold a reply back for nothing.
const JUDGE_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Might the caller be hearing a reply? Facts where tts-writer reports them (`reply-progress`
/// while a reply's audio is written, `reply-played` when it ended or was cut: the `played.frames`
/// link, `--played`), else a guess: each chunk handed on is assumed to play at
/// [`SPOKEN_CHARS_PER_S`] after the previous one, plus [`PLAYBACK_SLACK`]. A reply reported
/// played is over whatever the guess says; one reported progressing is playing. The policy asks
/// only [`Playback::may_be_playing`].
#[derive(Debug, Default)]
pub struct Playback {
    /// Estimated end of the audio of the reply in progress (None until a chunk is handed on).
    current_until: Option<Instant>,
    /// Estimated end of the last finished reply's audio.
    last_until: Option<Instant>,
    /// The turn of the last chunk handed on.
    last_turn: Option<u64>,
    /// The newest turn tts-writer reported played (to its end or cut off); earlier ones are
    /// over too, as it plays replies in order.
    played_through: Option<u64>,
    /// The last `reply-progress`: (turn, when).
    progress: Option<(u64, Instant)>,
}

/// tts-writer reports progress every [`PROGRESS_EVERY`] of audio written; a report older than
/// this means its audio stopped (paused, or the writer is gone).
const PROGRESS_FRESH: Duration = Duration::from_millis(1200);
/// How often tts-writer reports a reply's progress (its side of the contract, for the tests).
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

impl Playback {
    /// `spoken`: some of the reply in progress was handed on; `streaming`: a reply is in
    /// progress at all (then only its own chunks count).
    pub fn may_be_playing(&self, now: Instant, streaming: bool, spoken: bool) -> bool {
        if streaming && !spoken {
            return false;
        }
        if let Some(turn) = self.last_turn {
            if self.played_through.is_some_and(|p| p >= turn) {
                return false; // reported played or cut: over
            }
            if self.progress.is_some_and(|(t, at)| t == turn && now < at + PROGRESS_FRESH) {
                return true;
            }
        }
        streaming || self.last_until.is_some_and(|t| now < t + PLAYBACK_SLACK)
    }

    /// tts-writer wrote audio of `turn` (`reply-progress`).
    pub fn progressed(&mut self, now: Instant, turn: u64) {
        self.progress = Some((turn, now));
    }

    /// tts-writer's `reply-played` for `turn`: its audio ended or was cut off.
    pub fn played(&mut self, turn: u64) {
        self.played_through = Some(self.played_through.map_or(turn, |p| p.max(turn)));
    }

    fn reply_started(&mut self) {
        self.current_until = None;
    }

    fn handed_on(&mut self, now: Instant, turn: u64, text: &str) {
        let starts = self.current_until.map_or(now, |t| t.max(now));
        self.current_until = Some(starts + Duration::from_secs_f64(text.chars().count() as f64 / SPOKEN_CHARS_PER_S));
        self.last_turn = Some(turn);
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
        self.progress = None;
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
    /// (seq, text) of every chunk of the LLM's handed on (not the holding phrase).
    spoken: Vec<(u64, String)>,
    /// When the caller's message was answered (the holding phrase counts from then).
    asked: Instant,
    /// The holding phrase was handed on.
    held_on: bool,
    /// Since when the reply's tool calls have been running.
    tools_since: Option<Instant>,
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
    /// `unanswered`'s text, when the end judge found it unfinished (its stop is dropped when the
    /// rest joins it, as for the words check).
    judged_unfinished: Option<String>,
    /// turn → (speech-start seen at, speech-end seen at).
    turns: BTreeMap<u64, (Instant, Option<Instant>)>,
    /// When the last final transcript arrived (sttd's progress).
    last_transcript: Option<Instant>,
    /// `unanswered` stops mid-sentence (unfinished.rs, or the end judge): it is not answered
    /// before this, unless the caller's next words finish it.
    unfinished_until: Option<Instant>,
    /// `unanswered` awaits the end judge's verdict on this key (since the Instant);
    /// `unfinished_until` is the most it waits for it.
    judging: Option<(String, Instant)>,
    /// The newest final transcript's turn and trace, for a reply started after a wait.
    latest: Option<(u64, TurnTrace)>,
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
            Some((first, earlier)) if crate::unfinished::sounds_unfinished(earlier) || self.judged_unfinished.as_deref() == Some(earlier.as_str()) => {
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
    /// Interruptions resumed on a backchannel preview, before their final transcript: other
    /// words in that transcript still make them real (see [`Policy::backchannel_preview`]).
    resumed_on_preview: BTreeMap<u64, Instant>,
    playback: Playback,
    /// The end judge's verdicts by key ([`judge_key`]): Some(complete), or None while asked.
    verdicts: HashMap<String, Option<bool>>,
    /// A preview not used yet because its verdict was being asked (turn, words, trace).
    judged_preview: Option<(u64, String, TurnTrace)>,
    /// The end judge failed; it is not asked again before this.
    judge_down_until: Option<Instant>,
}

/// What the end judge is asked about `text`: the words without the stop Whisper puts at a
/// pause ("Can you tell me?" is "Can you tell me" spoken with a falling tone).
pub fn judge_key(text: &str) -> String {
    crate::unfinished::without_trailing_stop(text).to_string()
}

/// Does `text` stop mid-sentence, by the words check and the end judge?
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Finished,
    Unfinished,
    /// The judge was asked; its verdict is on its way.
    Asked,
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
            resumed_on_preview: BTreeMap::new(),
            playback: Playback::default(),
            verdicts: HashMap::new(),
            judged_preview: None,
            judge_down_until: None,
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
            // The wait for the rest of an unfinished message counts once no turn is pending.
            if self.waiting.turns.is_empty() {
                wakes.extend(self.waiting.unfinished_until);
            }
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
        if let (Some(a), Some((after, _))) = (&self.active, &self.cfg.holding) {
            if a.spoken.is_empty() && !a.held_on {
                wakes.push(a.asked + *after);
            }
        }
        if let (Some(a), Some((after, _))) = (&self.active, &self.cfg.tool_holding) {
            if let (Some(since), false) = (a.tools_since, a.held_on) {
                wakes.push(since + *after);
            }
        }
        wakes.into_iter().min()
    }

    pub fn handle(&mut self, now: Instant, input: Input, host: &mut dyn Host) {
        match input {
            Input::Event(e) => self.event(now, e, host),
            Input::Chunk { reply, text } => self.chunk(now, reply, text, host),
            Input::Done { reply, failure } => self.reply_done(reply, failure, host),
            Input::Tools { reply, running } => {
                if let Some(a) = self.active.as_mut().filter(|a| a.id == reply) {
                    a.tools_since = running.then_some(now);
                }
                self.hold_on_if_silent(now, host);
            }
            Input::Tick => {
                self.hold_on_if_silent(now, host);
                self.interruptions_still_talking(now, host);
                self.answer_if_caller_done(now, None, host);
            }
            Input::EndOfInput => {
                self.waiting.turns.clear();
                self.waiting.unfinished_until = None;
                self.waiting.judging = None;
                self.answer_if_caller_done(now, None, host);
            }
            Input::OutputClosed => self.cancel_reply("the output closed", false, host),
            Input::Judged { text, complete } => self.judged(now, text, complete, host),
        }
    }

    fn event(&mut self, now: Instant, event: Event, host: &mut dyn Host) {
        match event.kind.as_str() {
            kind::TRANSCRIPT => {
                let text = event.text.as_deref().unwrap_or("").trim().to_string();
                let turn = event.turn.unwrap_or(0);
                if event.get_bool("final") != Some(false) {
                    // The final words decide now; a preview of this turn awaiting a verdict is moot.
                    self.judged_preview.take_if(|(t, _, _)| *t <= turn);
                }
                if event.get_bool("final") == Some(false) {
                    if event.get_bool("preview") == Some(true) && self.backchannel_preview(now, turn, &text, host) {
                        // resumed: nothing to start from it
                    } else if event.get_bool("preview") == Some(true) && self.cfg.preempt {
                        self.preview(now, turn, text, event.trace, host);
                    } else {
                        log::debug!("ignoring a partial transcript: {text:?}");
                    }
                } else if text.is_empty() {
                    // The turn had no words (sttd sends an empty final transcript): nothing to
                    // answer in it, but a message held back for it can be answered now.
                    log::debug!("turn {turn}: no words");
                    self.drop_held_of(turn, "the turn had no words after all", host);
                    self.resumed_on_preview.remove(&turn);
                    if let Some(i) = self.interruptions.remove(&turn) {
                        self.false_alarm(now, turn, i.since, "no words", host);
                    }
                    self.waiting.transcribed(now, turn);
                    self.answer_if_caller_done(now, Some((turn, event.trace)), host);
                } else if (self.interruptions.contains_key(&turn) || self.resumed_on_preview.contains_key(&turn))
                    && self.cfg.backchannels.matches(&text)
                {
                    self.drop_held_of(turn, "the turn was a backchannel after all", host);
                    if let Some(i) = self.interruptions.remove(&turn) {
                        self.false_alarm(now, turn, i.since, &format!("{text:?}, a backchannel"), host);
                    } else {
                        self.resumed_on_preview.remove(&turn);
                        log::debug!("turn {turn}: {text:?} confirms the backchannel already resumed on its preview");
                    }
                    self.waiting.transcribed(now, turn);
                    self.answer_if_caller_done(now, None, host);
                } else {
                    if self.interruptions.remove(&turn).is_some() {
                        self.interrupted(turn, &format!("the caller said {text:?}"), host);
                    } else if self.resumed_on_preview.remove(&turn).is_some() {
                        self.interrupted(turn, &format!("the caller went on past the backchannel: {text:?}"), host);
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
                self.judged_preview = None;
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
                self.verdicts.clear();
                self.judged_preview = None;
                self.interruptions.clear();
                self.resumed_on_preview.clear();
                self.playback.silenced();
                if start {
                    host.run(Command::NewConversation { call: event.get_str("call").map(str::to_string) });
                } else {
                    log::info!("call-end: the conversation is closed");
                }
                host.run(Command::Forward(event));
            }
            // tts-writer's playback reports (`--played`): facts for `may_be_playing`, not
            // for anyone downstream.
            kind::REPLY_PROGRESS => {
                if let Some(turn) = event.turn {
                    self.playback.progressed(now, turn);
                }
            }
            kind::REPLY_PLAYED => {
                if let Some(turn) = event.turn {
                    self.playback.played(turn);
                    if event.get_bool("cancelled") == Some(true) {
                        let played = event.get_str("played_text").unwrap_or("");
                        // The holding phrase is tts-writer's to speak, not the LLM's to remember:
                        // first (a silent LLM) or after the reply's first words (a tool call).
                        let holding = [&self.cfg.holding, &self.cfg.tool_holding];
                        let phrase = holding.iter().find_map(|h| h.as_ref()).map(|(_, p)| p.as_str()).unwrap_or("");
                        let heard = match played.strip_prefix(phrase) {
                            _ if phrase.is_empty() => played.to_string(),
                            Some(rest) => rest.to_string(),
                            None => played.replacen(&format!(" {phrase}"), "", 1),
                        };
                        let heard = heard.trim();
                        if !heard.is_empty() {
                            host.heard_only(turn, heard);
                        }
                    }
                }
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
        self.playback.handed_on(now, a.turn, &text);
        a.spoken.push((a.seq, text));
        a.seq += 1;
    }

    /// The reply has said nothing for `--holding-after` since it was asked for, or its tool
    /// calls have run `--tool-holding-after` (even after some words): say the holding phrase
    /// (once per reply; spoken, not part of the conversation), so the caller hears that the
    /// answer is coming. The apology still comes if the LLM then fails.
    fn hold_on_if_silent(&mut self, now: Instant, host: &mut dyn Host) {
        let Some(a) = self.active.as_mut().filter(|a| !a.held_on) else { return };
        let silent = self.cfg.holding.as_ref().filter(|(after, _)| a.spoken.is_empty() && now >= a.asked + *after);
        let tools = self.cfg.tool_holding.as_ref().filter(|(after, _)| a.tools_since.is_some_and(|t| now >= t + *after));
        let (why, (after, phrase)) = match (silent, tools) {
            (Some(h), _) => ("nothing from the LLM", h),
            (None, Some(h)) => ("a tool call has run", h),
            (None, None) => return,
        };
        log::info!("turn {}: {why} after {} ms; saying {phrase:?}", a.turn, after.as_millis());
        host.run(Command::Chunk { reply: a.id, turn: a.turn, seq: a.seq, text: phrase.clone() });
        a.seq += 1;
        a.held_on = true;
        self.playback.handed_on(now, a.turn, phrase);
    }

    /// A preview of an interruption that is a backchannel ("Uh-huh.", sttd's decode at the
    /// caller's first pause) resumes the reply now, not at the final transcript: the caller
    /// hears the reply go on within a few hundred ms of their last sound instead of after the
    /// end of their turn and a second decode (1.3–2.1 s). If the final transcript has other
    /// words after all ("Yeah, but stop."), it is an interruption then. True if it resumed.
    fn backchannel_preview(&mut self, now: Instant, turn: u64, text: &str, host: &mut dyn Host) -> bool {
        if !self.interruptions.contains_key(&turn) || !self.cfg.backchannels.matches(text) {
            return false;
        }
        let i = self.interruptions.remove(&turn).expect("checked");
        self.false_alarm(now, turn, i.since, &format!("preview {text:?}, a backchannel"), host);
        self.resumed_on_preview.insert(turn, now);
        self.resumed_on_preview.retain(|_, at| now < *at + INTERRUPTION_FORGET);
        true
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
        self.waiting.judging = None;
        self.waiting.judged_unfinished = None;
        match self.ending(now, &text, None, host) {
            Ending::Finished => {}
            Ending::Unfinished => {
                log::info!(
                    "turn {turn}: {text:?} stops mid-sentence; waiting up to {} ms for the rest",
                    self.cfg.unfinished_wait.as_millis()
                );
                self.waiting.unfinished_until = Some(now + self.cfg.unfinished_wait);
                if !crate::unfinished::sounds_unfinished(&text) {
                    self.waiting.judged_unfinished = Some(text.clone());
                }
            }
            Ending::Asked => {
                let wait = self.cfg.judge.unwrap_or_default();
                log::debug!("turn {turn}: asking the end judge about {text:?} (up to {} ms)", wait.as_millis());
                self.waiting.judging = Some((judge_key(&text), now));
                self.waiting.unfinished_until = Some(now + wait);
            }
        }
        self.waiting.latest = Some((turn, trace.clone()));
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
            if self.waiting.judging.is_none() {
                log::info!("the caller said no more in {} ms; answering what they said", self.cfg.unfinished_wait.as_millis());
            }
        }
        if let Some((key, _)) = self.waiting.judging.take() {
            log::info!("the end judge gave no verdict on {key:?} in time; going by the words");
        }
        let Some((turn, text)) = self.waiting.unanswered.clone() else { return };
        self.waiting.due = false;
        let stored = self.waiting.latest.take();
        let latest = latest.or(stored);
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
                self.active = Some(Reply { id: h.id, turn, user_text: text, seq: 0, spoken: vec![], asked: now, held_on: false, tools_since: None });
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
        self.active = Some(Reply { id: reply, turn, user_text: text, seq: 0, spoken: vec![], asked: now, held_on: false, tools_since: None });
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
        match self.ending(now, &user_text, Some(merged_with.is_some()), host) {
            Ending::Finished => {}
            Ending::Unfinished => {
                log::debug!("turn {turn}: preview {user_text:?} stops mid-sentence; not starting the reply early");
                self.drop_held_of(turn, "the caller's words stop mid-sentence", host);
                return;
            }
            Ending::Asked => {
                self.judged_preview = Some((turn, text, trace));
                return;
            }
        }
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

    /// Does `text` stop mid-sentence? The words check first (unfinished.rs); then, for words
    /// that pass it, the end judge's verdict if one is configured: known, or asked for now.
    /// `unrecorded`: None when `text` is the history's last user message; Some(merge) for a
    /// preview's words, not recorded (merge: they would replace the last user message).
    fn ending(&mut self, now: Instant, text: &str, unrecorded: Option<bool>, host: &mut dyn Host) -> Ending {
        if self.cfg.unfinished_wait.is_zero() {
            return Ending::Finished;
        }
        if crate::unfinished::sounds_unfinished(text) {
            return Ending::Unfinished;
        }
        let judge_down = self.judge_down_until.is_some_and(|until| now < until);
        if self.cfg.judge.is_none() || judge_down || crate::words::words(text).len() < JUDGE_MIN_WORDS {
            return Ending::Finished;
        }
        let key = judge_key(text);
        match self.verdicts.get(&key) {
            Some(Some(true)) => Ending::Finished,
            Some(Some(false)) => Ending::Unfinished,
            Some(None) => Ending::Asked,
            None => {
                if self.verdicts.len() >= MAX_VERDICTS {
                    self.verdicts.clear();
                }
                self.verdicts.insert(key.clone(), None);
                let mut messages = match unrecorded {
                    None => host.messages(self.cfg.budget),
                    Some(merge) => host.messages_if_user_said(text, merge, self.cfg.budget),
                };
                if let Some(last) = messages.last_mut() {
                    last.text = key.clone();
                }
                host.run(Command::Judge { text: key, messages });
                Ending::Asked
            }
        }
    }

    /// The end judge's verdict on `key`: a message waiting for it is answered now, or waits
    /// `--unfinished-wait` (from when it was said) for the rest; a preview waiting for it
    /// starts its reply early or does not.
    fn judged(&mut self, now: Instant, key: String, complete: Option<bool>, host: &mut dyn Host) {
        let Some(verdict) = self.verdicts.get_mut(&key) else { return };
        *verdict = Some(complete.unwrap_or(true));
        if complete.is_none() {
            log::warn!("the end judge gave no verdict; the words alone decide for the next {} s", JUDGE_RETRY_AFTER.as_secs());
            self.judge_down_until = Some(now + JUDGE_RETRY_AFTER);
            self.verdicts.retain(|_, v| v.is_some());
        }
        if let Some((_, since)) = self.waiting.judging.take_if(|(k, _)| *k == key) {
            if complete == Some(false) {
                log::info!(
                    "{key:?} cannot stand as a whole request (the end judge); waiting up to {} ms for the rest",
                    self.cfg.unfinished_wait.as_millis()
                );
                self.waiting.unfinished_until = Some(since + self.cfg.unfinished_wait);
                self.waiting.judged_unfinished = self.waiting.unanswered.as_ref().map(|(_, t)| t.clone());
            } else {
                self.waiting.unfinished_until = None;
            }
            self.answer_if_caller_done(now, None, host);
        }
        let preview = self.judged_preview.take();
        if let Some((turn, text, trace)) = preview {
            if judge_key(&self.waiting.message_with(&text).1) == key {
                self.preview(now, turn, text, trace, host);
            } else {
                self.judged_preview = Some((turn, text, trace));
            }
        }
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

/// The rules, each as a short call: events go in at a time on a fake clock (ms from the start),
/// and the commands that come out are compared as one line each ("start #1 turn 1", "chunk #1
/// turn 1 seq 0 Hi.", "end #1 turn 1 cancelled"…). The fake history refuses two user messages
/// in a row, so every test also checks that rule.
#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        commands: Vec<Command>,
        history: Vec<(Role, String, bool)>,
        requests: HashMap<ReplyId, Vec<ChatMessage>>,
        /// `seq`s still queued for the output when a reply is cancelled (withdrawn).
        unwritten: Vec<u64>,
    }

    fn window(history: &[(Role, String, bool)]) -> Vec<ChatMessage> {
        history
            .iter()
            .map(|(role, text, interrupted)| {
                ChatMessage::text(*role, if *interrupted { format!("{text} [interrupted]") } else { text.clone() })
            })
            .collect()
    }

    impl Host for Fake {
        fn run(&mut self, command: Command) {
            if let Command::Start { reply, messages, .. } = &command {
                self.requests.insert(*reply, messages.clone());
            }
            self.commands.push(command);
        }
        fn withdraw_unwritten(&mut self, _turn: u64) -> Vec<u64> {
            std::mem::take(&mut self.unwritten)
        }
        fn append(&mut self, role: Role, text: &str, _turn: Option<u64>, interrupted: bool) {
            if role == Role::User {
                let last = self.history.last();
                assert!(last.is_none_or(|l| l.0 != Role::User), "two user messages in a row: {last:?}, then {text:?}");
            }
            self.history.push((role, text.to_string(), interrupted));
        }
        fn replace_last_user(&mut self, text: &str, turn: Option<u64>) {
            match self.history.last_mut() {
                Some(last) if last.0 == Role::User => last.1 = text.to_string(),
                _ => self.append(Role::User, text, turn, false),
            }
        }
        fn heard_only(&mut self, _turn: u64, text: &str) {
            if let Some(last) = self.history.iter_mut().rev().find(|h| h.0 == Role::Assistant).filter(|h| h.2) {
                last.1 = text.to_string();
            }
        }
        fn messages(&mut self, _budget: Budget) -> Vec<ChatMessage> {
            window(&self.history)
        }
        fn messages_if_user_said(&mut self, text: &str, merge: bool, _budget: Budget) -> Vec<ChatMessage> {
            let mut h = self.history.clone();
            match h.last_mut() {
                Some(last) if merge && last.0 == Role::User => last.1 = text.to_string(),
                _ => h.push((Role::User, text.to_string(), false)),
            }
            window(&h)
        }
    }

    fn config() -> PolicyConfig {
        PolicyConfig {
            budget: Budget { max_messages: 24, max_tokens: 3000 },
            apology: Some("Sorry, try again.".into()),
            holding: None,
            tool_holding: None,
            merge_wait: Duration::from_secs(20),
            pause_first: true,
            backchannels: Backchannels::parse(crate::backchannel::DEFAULT_BACKCHANNELS),
            interrupt_after: Duration::from_millis(2100),
            preempt: true,
            unfinished_wait: Duration::from_millis(1000),
            judge: None,
        }
    }

    /// One call: the policy, its fake outside, and the clock.
    struct Call {
        policy: Policy,
        host: Fake,
        t0: Instant,
        now: Instant,
    }

    impl Call {
        fn new() -> Call {
            Call::with(|_| {})
        }

        fn with(tweak: impl FnOnce(&mut PolicyConfig)) -> Call {
            let mut cfg = config();
            tweak(&mut cfg);
            let t0 = Instant::now();
            Call { policy: Policy::new(cfg), host: Fake::default(), t0, now: t0 }
        }

        /// Move the clock to `ms`, waking the policy whenever it asked to be (as the executor does).
        fn at(&mut self, ms: u64) -> Vec<String> {
            let to = self.t0 + Duration::from_millis(ms);
            assert!(to >= self.now, "the clock only moves forward");
            let mut out = vec![];
            let mut wakes = 0;
            while let Some(wake) = self.policy.next_wake().filter(|w| *w <= to) {
                wakes += 1;
                assert!(wakes < 100, "the policy keeps waking at {wake:?}: it would spin");
                self.now = wake.max(self.now);
                out.extend(self.input(Input::Tick));
            }
            self.now = to;
            out
        }

        fn now_ms(&self) -> u64 {
            (self.now - self.t0).as_millis() as u64
        }
        fn input(&mut self, input: Input) -> Vec<String> {
            self.policy.handle(self.now, input, &mut self.host);
            self.host.commands.drain(..).map(|c| line(&c)).collect()
        }

        fn event(&mut self, e: Event) -> Vec<String> {
            self.input(Input::Event(e))
        }
        fn speech_start(&mut self, turn: u64) -> Vec<String> {
            self.event(Event::new(kind::SPEECH_START).with_turn(turn))
        }
        fn speech_end(&mut self, turn: u64) -> Vec<String> {
            self.event(Event::new(kind::SPEECH_END).with_turn(turn))
        }
        /// The final transcript of `turn`.
        fn said(&mut self, turn: u64, text: &str) -> Vec<String> {
            self.event(Event::new(kind::TRANSCRIPT).with_turn(turn).with_text(text).with("final", true))
        }
        fn preview(&mut self, turn: u64, text: &str) -> Vec<String> {
            self.event(Event::new(kind::TRANSCRIPT).with_turn(turn).with_text(text).with("final", false).with("preview", true))
        }
        fn cancel(&mut self, turn: Option<u64>) -> Vec<String> {
            let e = Event::new(kind::CANCEL);
            self.event(match turn {
                Some(t) => e.with_turn(t),
                None => e,
            })
        }
        fn chunk(&mut self, reply: ReplyId, text: &str) -> Vec<String> {
            self.input(Input::Chunk { reply, text: text.into() })
        }
        fn done(&mut self, reply: ReplyId) -> Vec<String> {
            self.input(Input::Done { reply, failure: None })
        }

        /// A whole caller turn (speech-start, speech-end, final transcript).
        fn turn(&mut self, turn: u64, text: &str) -> Vec<String> {
            let mut out = self.speech_start(turn);
            out.extend(self.speech_end(turn));
            out.extend(self.said(turn, text));
            out
        }

        /// What reply `reply` asked the LLM, one "role: text" a message.
        fn asked(&self, reply: ReplyId) -> Vec<String> {
            self.host.requests[&reply].iter().map(|m| format!("{}: {}", role(m.role), m.text)).collect()
        }

        fn history(&self) -> Vec<String> {
            window(&self.host.history).iter().map(|m| format!("{}: {}", role(m.role), m.text)).collect()
        }
    }

    fn role(r: Role) -> &'static str {
        match r {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    fn line(c: &Command) -> String {
        match c {
            Command::Forward(e) => format!("forward {}{}", e.kind, e.turn.map(|t| format!(" {t}")).unwrap_or_default()),
            Command::Start { reply, turn, held, .. } => {
                format!("start #{reply} turn {turn}{}", if *held { " held" } else { "" })
            }
            Command::Stop { reply } => format!("stop #{reply}"),
            Command::Ahead { reply, turn, seq, text } => format!("ahead #{reply} turn {turn} seq {seq} {text}"),
            Command::Release { reply, .. } => format!("release #{reply}"),
            Command::Chunk { reply, turn, seq, text } => format!("chunk #{reply} turn {turn} seq {seq} {text}"),
            Command::Failed { reply, message, .. } => format!("failed #{reply}: {message}"),
            Command::End { reply, turn, cancelled, error } => format!(
                "end #{reply} turn {turn}{}{}",
                if *cancelled { " cancelled" } else { "" },
                if *error { " error" } else { "" }
            ),
            Command::Resume { turn } => format!("resume {turn}"),
            Command::CancelUpTo { turn } => format!("cancel up to {turn}"),
            Command::NewConversation { call } => format!("new conversation {}", call.as_deref().unwrap_or("-")),
            Command::Judge { text, messages } => {
                assert_eq!(messages.last().map(|m| m.text.as_str()), Some(text.as_str()), "the judge reads the request");
                format!("judge {text}")
            }
        }
    }

    fn forwarded(kind: &str, turn: u64) -> String {
        format!("forward {kind} {turn}")
    }

    /// Turn 1 asked and answered with "It is noon." (reply #1), heard; the clock at `ms`.
    fn answered_once(c: &mut Call) {
        c.turn(1, "What time is it?");
        c.chunk(1, "It is noon.");
        c.done(1);
    }

    // ---- a plain turn ----

    #[test]
    fn a_final_transcript_is_answered_and_the_reply_recorded() {
        let mut c = Call::new();
        assert_eq!(
            c.turn(1, "What time is it?"),
            [forwarded("speech-start", 1), forwarded("speech-end", 1), "start #1 turn 1".into()]
        );
        assert_eq!(c.asked(1), ["user: What time is it?"]);
        assert_eq!(c.chunk(1, "It is noon."), ["chunk #1 turn 1 seq 0 It is noon."]);
        assert_eq!(c.chunk(1, "Lunch time."), ["chunk #1 turn 1 seq 1 Lunch time."]);
        assert_eq!(c.done(1), ["end #1 turn 1"]);
        assert_eq!(c.history(), ["user: What time is it?", "assistant: It is noon. Lunch time."]);
    }

    #[test]
    fn unknown_events_are_forwarded_and_partial_transcripts_ignored() {
        let mut c = Call::new();
        assert_eq!(c.event(Event::new("speech-onset").with_turn(3)), [forwarded("speech-onset", 3)]);
        let partial = Event::new(kind::TRANSCRIPT).with_turn(3).with_text("What").with("final", false);
        assert!(c.event(partial).is_empty());
        assert!(c.history().is_empty());
    }

    #[test]
    fn a_failed_reply_with_nothing_said_speaks_the_apology_outside_the_history() {
        let mut c = Call::new();
        c.turn(1, "What time is it?");
        assert_eq!(
            c.input(Input::Done { reply: 1, failure: Some("HTTP 401".into()) }),
            ["failed #1: HTTP 401", "chunk #1 turn 1 seq 0 Sorry, try again.", "end #1 turn 1 error"]
        );
        assert_eq!(c.history(), ["user: What time is it?"]);
        // Not retried; the caller's next words join the unanswered message.
        assert!(c.at(60_000).is_empty());
        c.turn(2, "Hello?");
        assert_eq!(c.asked(2), ["user: What time is it? Hello?"]);
    }

    // ---- never more than a few seconds of silence ----

    fn holding() -> Call {
        Call::with(|cfg| cfg.holding = Some((Duration::from_millis(3000), "One moment.".into())))
    }

    #[test]
    fn a_reply_silent_for_3_s_says_the_holding_phrase_once_and_not_into_the_history() {
        let mut c = holding();
        c.turn(1, "What is the weather on Mars?");
        assert!(c.at(2_999).is_empty());
        assert_eq!(c.at(3_000), ["chunk #1 turn 1 seq 0 One moment."]);
        assert!(c.at(8_000).is_empty(), "said once");
        assert_eq!(c.chunk(1, "Cold and dusty."), ["chunk #1 turn 1 seq 1 Cold and dusty."]);
        c.done(1);
        assert_eq!(c.history(), ["user: What is the weather on Mars?", "assistant: Cold and dusty."]);
    }

    #[test]
    fn a_tool_call_running_1_s_gets_the_holding_phrase_once_even_after_words() {
        let mut c = Call::with(|cfg| {
            cfg.holding = Some((Duration::from_millis(3000), "One moment.".into()));
            cfg.tool_holding = Some((Duration::from_millis(1000), "One moment.".into()));
        });
        c.turn(1, "What time is it in Paris?");
        assert_eq!(c.chunk(1, "Let me look."), ["chunk #1 turn 1 seq 0 Let me look."]);
        c.at(200);
        assert!(c.input(Input::Tools { reply: 1, running: true }).is_empty());
        assert!(c.at(1_199).is_empty());
        assert_eq!(c.at(1_200), ["chunk #1 turn 1 seq 1 One moment."]);
        assert!(c.input(Input::Tools { reply: 1, running: false }).is_empty());
        // A second round of tools in the same reply: said once only.
        assert!(c.input(Input::Tools { reply: 1, running: true }).is_empty());
        assert!(c.at(5_000).is_empty(), "said once");
        c.input(Input::Tools { reply: 1, running: false });
        assert_eq!(c.chunk(1, "It is noon."), ["chunk #1 turn 1 seq 2 It is noon."]);
        c.done(1);
        assert_eq!(c.history(), ["user: What time is it in Paris?", "assistant: Let me look. It is noon."]);
        // A tool call that ends in time gets none.
        c.turn(2, "And in Tokyo?");
        let t = c.now_ms();
        c.input(Input::Tools { reply: 2, running: true });
        c.at(t + 900);
        assert!(c.input(Input::Tools { reply: 2, running: false }).is_empty());
        assert!(c.at(t + 2_000).is_empty());
    }

    #[test]
    fn after_the_holding_phrase_a_failure_still_gets_the_apology() {
        let mut c = holding();
        c.turn(1, "Are you there?");
        c.at(3_000);
        assert_eq!(
            c.input(Input::Done { reply: 1, failure: Some("no reply token within 10 s".into()) }),
            [
                "failed #1: no reply token within 10 s",
                "chunk #1 turn 1 seq 1 Sorry, try again.",
                "end #1 turn 1 error"
            ]
        );
        assert_eq!(c.history(), ["user: Are you there?"]);
    }

    #[test]
    fn a_reply_that_speaks_in_time_gets_no_holding_phrase() {
        let mut c = holding();
        c.turn(1, "What time is it?");
        c.at(2_000);
        c.chunk(1, "It is noon.");
        assert!(c.at(10_000).is_empty());
        // A released held reply counts from its final transcript, not from its preview.
        c.done(1);
        c.preview(2, "And tomorrow?");
        c.at(14_000);
        c.said(2, "And tomorrow?");
        assert!(c.at(16_999).is_empty());
        assert_eq!(c.at(17_000), ["chunk #2 turn 2 seq 0 One moment."]);
    }

    #[test]
    fn a_reply_that_fails_after_speaking_keeps_what_was_said_and_no_apology() {
        let mut c = Call::new();
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        assert_eq!(
            c.input(Input::Done { reply: 1, failure: Some("cut off".into()) }),
            ["failed #1: cut off", "end #1 turn 1 error"]
        );
        assert_eq!(c.history(), ["user: Tell me a story.", "assistant: Once upon a time."]);
    }

    // ---- one message per thing the caller says ----

    #[test]
    fn a_caller_who_goes_on_before_any_chunk_was_handed_on_said_one_message() {
        let mut c = Call::new();
        c.turn(1, "My name is Ada.");
        // The next turn starts before reply #1 said anything: it is dropped without a trace…
        assert_eq!(c.speech_start(2), [forwarded("speech-start", 2), "stop #1".into(), "end #1 turn 1 cancelled".into()]);
        c.speech_end(2);
        // …and both parts are one message, answered under the newest turn.
        assert_eq!(c.said(2, "I need a taxi."), ["start #2 turn 2"]);
        assert_eq!(c.asked(2), ["user: My name is Ada. I need a taxi."]);
        assert_eq!(c.history(), ["user: My name is Ada. I need a taxi."]);
    }

    #[test]
    fn once_a_chunk_was_handed_on_the_next_words_are_a_new_message() {
        let mut c = Call::with(|cfg| cfg.pause_first = false);
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        c.speech_start(2);
        c.speech_end(2);
        c.said(2, "A shorter one.");
        assert_eq!(
            c.asked(2),
            ["user: Tell me a story.", "assistant: Once upon a time. [interrupted]", "user: A shorter one."]
        );
    }

    #[test]
    fn a_part_transcribed_while_a_later_turn_is_pending_waits_for_it() {
        let mut c = Call::new();
        c.speech_start(10);
        c.speech_end(10);
        c.speech_start(11);
        assert!(c.said(10, "My number is five five five").is_empty(), "answered half a sentence");
        assert!(c.at(5_000).is_empty());
        c.speech_end(11);
        assert_eq!(c.said(11, "one two three."), ["start #1 turn 11"]);
        assert_eq!(c.asked(1), ["user: My number is five five five one two three."]);
    }

    #[test]
    fn a_pending_turn_with_no_words_releases_the_waiting_message() {
        let mut c = Call::new();
        c.speech_start(20);
        c.speech_end(20);
        c.speech_start(21);
        assert!(c.said(20, "What time is it?").is_empty());
        c.speech_end(21);
        assert_eq!(c.said(21, ""), ["start #1 turn 21"]);
        assert_eq!(c.asked(1), ["user: What time is it?"]);
    }

    #[test]
    fn a_pending_turn_whose_transcript_never_comes_is_given_up_after_merge_wait() {
        let mut c = Call::with(|cfg| cfg.merge_wait = Duration::from_secs(2));
        c.speech_start(30);
        c.speech_end(30);
        c.speech_start(31);
        c.at(100);
        c.speech_end(31); // at 100 ms
        c.at(500);
        assert!(c.said(30, "What time is it?").is_empty()); // sttd's progress at 500 ms
        assert_eq!(c.policy.next_wake(), Some(c.t0 + Duration::from_millis(2500)));
        assert!(c.at(2499).is_empty());
        assert_eq!(c.at(2500), ["start #1 turn 30"]);
    }

    #[test]
    fn a_pending_turn_that_never_ends_is_given_up_after_a_minute() {
        let mut c = Call::new();
        c.speech_start(1);
        c.speech_end(1);
        c.speech_start(2);
        c.said(1, "What time is it?");
        assert!(c.at(59_999).is_empty());
        assert_eq!(c.at(60_000), ["start #1 turn 1"]);
    }

    // ---- a message that stops mid-sentence (--unfinished-wait) ----

    #[test]
    fn a_message_that_stops_mid_sentence_waits_and_merges_with_the_rest() {
        let mut c = Call::new();
        assert!(!c.turn(1, "I'd like a table for.").iter().any(|l| l.starts_with("start")));
        c.at(600);
        assert_eq!(c.speech_start(2), [forwarded("speech-start", 2)]);
        assert!(c.at(3_000).is_empty(), "answered while the caller went on");
        c.speech_end(2);
        assert_eq!(c.said(2, "Four people."), ["start #1 turn 2"]);
        // The stop Whisper put at the pause is gone.
        assert_eq!(c.asked(1), ["user: I'd like a table for Four people."]);
        assert_eq!(c.history(), ["user: I'd like a table for Four people."]);
    }

    #[test]
    fn a_message_that_stops_mid_sentence_is_answered_alone_after_the_wait() {
        let mut c = Call::new();
        c.turn(1, "Could you remind me to");
        assert_eq!(c.policy.next_wake(), Some(c.t0 + Duration::from_millis(1000)));
        assert!(c.at(999).is_empty());
        assert_eq!(c.at(1000), ["start #1 turn 1"]);
        assert_eq!(c.asked(1), ["user: Could you remind me to"]);
    }

    #[test]
    fn with_unfinished_wait_0_a_message_that_stops_mid_sentence_is_answered_at_once() {
        let mut c = Call::with(|cfg| cfg.unfinished_wait = Duration::ZERO);
        assert_eq!(c.said(1, "I'd like a table for."), ["start #1 turn 1"]);
    }

    // ---- the end judge (--end-judge): words that pass the words check ----

    fn judging() -> Call {
        Call::with(|cfg| cfg.judge = Some(Duration::from_millis(400)))
    }

    fn verdict(c: &mut Call, text: &str, complete: Option<bool>) -> Vec<String> {
        c.input(Input::Judged { text: text.into(), complete })
    }

    #[test]
    fn words_the_judge_finds_complete_are_answered_on_its_verdict() {
        let mut c = judging();
        let out = c.turn(1, "What is the capital of France?");
        assert_eq!(out.last().unwrap(), "judge What is the capital of France");
        c.at(80);
        assert_eq!(verdict(&mut c, "What is the capital of France", Some(true)), ["start #1 turn 1"]);
        assert_eq!(c.asked(1), ["user: What is the capital of France?"]);
    }

    #[test]
    fn words_the_judge_finds_unfinished_wait_for_the_rest_and_merge_with_it() {
        let mut c = judging();
        c.turn(1, "Can you tell me?");
        c.at(80);
        assert!(verdict(&mut c, "Can you tell me", Some(false)).is_empty());
        assert_eq!(c.policy.next_wake(), Some(c.t0 + Duration::from_millis(1000)), "the wait counts from the words");
        c.at(700);
        c.speech_start(2);
        assert!(c.at(3_000).is_empty(), "answered while the caller went on");
        c.speech_end(2);
        // The whole is judged again; the stop at the pause is gone.
        assert_eq!(c.said(2, "The way to the station."), ["judge Can you tell me The way to the station"]);
        assert_eq!(verdict(&mut c, "Can you tell me The way to the station", Some(true)), ["start #1 turn 2"]);
        assert_eq!(c.asked(1), ["user: Can you tell me The way to the station."]);
    }

    #[test]
    fn words_the_judge_finds_unfinished_are_answered_alone_when_nothing_follows() {
        let mut c = judging();
        c.turn(1, "I would like to know.");
        verdict(&mut c, "I would like to know", Some(false));
        assert!(c.at(999).is_empty());
        assert_eq!(c.at(1000), ["start #1 turn 1"]);
    }

    #[test]
    fn without_a_verdict_in_time_the_words_decide() {
        let mut c = judging();
        c.turn(1, "What is the capital of France?");
        assert!(c.at(399).is_empty());
        assert_eq!(c.at(400), ["start #1 turn 1"]);
        // A late verdict changes nothing.
        assert!(verdict(&mut c, "What is the capital of France", Some(false)).is_empty());
        // A judge that fails counts as "complete".
        let mut c = judging();
        c.turn(1, "What is the capital of France?");
        assert_eq!(verdict(&mut c, "What is the capital of France", None), ["start #1 turn 1"]);
    }

    #[test]
    fn a_judge_that_fails_is_not_asked_again_for_30_s() {
        let mut c = judging();
        c.turn(1, "What is the capital of France?");
        c.at(100);
        assert_eq!(verdict(&mut c, "What is the capital of France", None), ["start #1 turn 1"]);
        c.chunk(1, "Paris.");
        c.done(1);
        // The words alone decide: answered at once, no question to the judge.
        assert_eq!(c.turn(2, "And what about Spain?").last().unwrap(), "start #2 turn 2");
        c.chunk(2, "Madrid.");
        c.done(2);
        c.at(32_000);
        assert_eq!(c.turn(3, "And what about Italy?").last().unwrap(), "judge And what about Italy");
    }

    #[test]
    fn short_answers_and_words_that_stop_mid_sentence_are_not_judged() {
        let mut c = judging();
        assert_eq!(c.said(1, "Paris."), ["start #1 turn 1"]);
        let mut c = judging();
        let out = c.turn(1, "I'd like a table for.");
        assert!(!out.iter().any(|l| l.starts_with("judge") || l.starts_with("start")), "{out:?}");
        assert_eq!(c.at(1000), ["start #1 turn 1"]);
    }

    #[test]
    fn a_preview_starts_its_held_reply_only_once_the_judge_finds_it_complete() {
        let mut c = judging();
        c.speech_start(1);
        assert_eq!(c.preview(1, "What is the capital of France?"), ["judge What is the capital of France"]);
        assert_eq!(verdict(&mut c, "What is the capital of France", Some(true)), ["start #1 turn 1 held"]);
        c.speech_end(1);
        // The final words are the same: known complete, no second question, the held reply stands.
        assert_eq!(c.said(1, "What is the capital of France?"), ["release #1"]);
        // A preview the judge finds unfinished starts nothing.
        let mut c = judging();
        c.speech_start(1);
        c.preview(1, "Can you tell me?");
        assert!(verdict(&mut c, "Can you tell me", Some(false)).is_empty());
        c.speech_end(1);
        assert!(c.said(1, "Can you tell me?").is_empty(), "known unfinished: it waits");
    }

    // ---- preemption: a preview starts the reply, held ----

    #[test]
    fn a_preview_starts_a_held_reply_whose_first_chunk_goes_out_ahead() {
        let mut c = Call::new();
        c.speech_start(1);
        assert_eq!(c.preview(1, "What time is it?"), ["start #1 turn 1 held"]);
        assert_eq!(c.asked(1), ["user: What time is it?"]);
        assert_eq!(c.chunk(1, "It is noon."), ["ahead #1 turn 1 seq 0 It is noon."]);
        assert!(c.chunk(1, "Lunch time.").is_empty());
        assert!(c.history().is_empty(), "a held reply leaves no trace");
        // The same preview again changes nothing.
        assert!(c.preview(1, "What time is it?").is_empty());
    }

    #[test]
    fn the_final_transcript_with_the_same_request_releases_the_held_reply() {
        let mut c = Call::new();
        c.speech_start(1);
        c.preview(1, "What time is it?");
        c.chunk(1, "It is noon.");
        c.speech_end(1);
        assert_eq!(
            c.said(1, "What time is it?"),
            ["release #1", "chunk #1 turn 1 seq 0 It is noon."]
        );
        assert_eq!(c.chunk(1, "Lunch time."), ["chunk #1 turn 1 seq 1 Lunch time."]);
        assert_eq!(c.done(1), ["end #1 turn 1"]);
        assert_eq!(c.history(), ["user: What time is it?", "assistant: It is noon. Lunch time."]);
    }

    #[test]
    fn a_held_reply_that_ended_before_the_transcript_ends_when_released() {
        let mut c = Call::new();
        c.speech_start(1);
        c.preview(1, "Hi.");
        c.chunk(1, "Hello!");
        assert!(c.done(1).is_empty());
        c.speech_end(1);
        assert_eq!(c.said(1, "Hi."), ["release #1", "chunk #1 turn 1 seq 0 Hello!", "end #1 turn 1"]);
        assert_eq!(c.history(), ["user: Hi.", "assistant: Hello!"]);
    }

    #[test]
    fn a_final_transcript_with_other_words_drops_the_held_reply_and_answers_them() {
        let mut c = Call::new();
        c.speech_start(1);
        c.preview(1, "What time");
        c.chunk(1, "Time for what?");
        c.speech_end(1);
        assert_eq!(c.said(1, "What time is it?"), ["stop #1", "start #2 turn 1"]);
        assert!(c.chunk(1, "Too late.").is_empty(), "a dropped reply is never heard");
        assert_eq!(c.asked(2), ["user: What time is it?"]);
    }

    #[test]
    fn a_later_preview_with_more_words_replaces_the_held_reply() {
        let mut c = Call::new();
        c.speech_start(1);
        c.preview(1, "I'd like a table");
        assert_eq!(c.preview(1, "I'd like a table for four."), ["stop #1", "start #2 turn 1 held"]);
        assert_eq!(c.asked(2), ["user: I'd like a table for four."]);
    }

    #[test]
    fn a_new_turn_cancel_a_call_boundary_or_no_words_drop_the_held_reply() {
        let drops = |then: &dyn Fn(&mut Call) -> Vec<String>| {
            let mut c = Call::new();
            c.speech_start(1);
            c.preview(1, "What time is it?");
            c.chunk(1, "It is noon.");
            let out = then(&mut c);
            assert!(out.contains(&"stop #1".to_string()), "{out:?}");
            assert!(!out.iter().any(|l| l.starts_with("chunk") || l.starts_with("release")), "{out:?}");
            assert!(c.history().is_empty(), "{:?}", c.history());
        };
        drops(&|c| c.speech_start(2));
        drops(&|c| c.cancel(None));
        drops(&|c| c.cancel(Some(1)));
        drops(&|c| c.event(Event::new(kind::CALL_START).with("call", "c-2")));
        drops(&|c| c.event(Event::new(kind::CALL_END)));
        drops(&|c| c.said(1, ""));
    }

    #[test]
    fn a_preview_merges_with_an_unanswered_message_as_the_final_transcript_would() {
        let mut c = Call::new();
        c.turn(1, "My name is Ada.");
        c.speech_start(2); // reply #1 is dropped unheard
        assert_eq!(c.preview(2, "I need a taxi."), ["start #2 turn 2 held"]);
        assert_eq!(c.asked(2), ["user: My name is Ada. I need a taxi."]);
        c.speech_end(2);
        assert_eq!(c.said(2, "I need a taxi."), ["release #2"]);
    }

    #[test]
    fn a_preview_starts_nothing_while_a_reply_streams_or_another_turn_is_pending() {
        let mut c = Call::new();
        c.turn(1, "What time is it?");
        assert!(c.preview(1, "What time is it?").is_empty(), "reply #1 streams");
        let mut c = Call::new();
        c.speech_start(1);
        c.speech_end(1);
        c.speech_start(2);
        assert!(c.preview(2, "Hello").is_empty(), "turn 1 is still being transcribed");
    }

    #[test]
    fn with_preempt_off_a_preview_starts_nothing() {
        let mut c = Call::with(|cfg| cfg.preempt = false);
        c.speech_start(1);
        assert!(c.preview(1, "What time is it?").is_empty());
        c.speech_end(1);
        assert_eq!(c.said(1, "What time is it?"), ["start #1 turn 1"]);
    }

    // ---- barge-in: pause first, decide after ----

    #[test]
    fn a_backchannel_over_a_playing_reply_resumes_it_and_leaves_no_trace() {
        let mut c = Call::new();
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        // tts-writer paused it; the relay waits for the words.
        assert_eq!(c.speech_start(2), [forwarded("speech-start", 2)]);
        c.speech_end(2);
        assert_eq!(c.said(2, "Uh-huh."), ["resume 2"]);
        assert_eq!(c.chunk(1, "There was a cat."), ["chunk #1 turn 1 seq 1 There was a cat."]);
        c.done(1);
        assert_eq!(c.history(), ["user: Tell me a story.", "assistant: Once upon a time. There was a cat."]);
    }

    #[test]
    fn a_backchannel_preview_resumes_the_reply_before_the_final_transcript() {
        let mut c = Call::new();
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        c.speech_start(2);
        // sttd's decode at the caller's first pause: the reply goes on at once...
        assert_eq!(c.preview(2, "Uh-huh."), ["resume 2"]);
        c.speech_end(2);
        // ...and the final transcript that confirms it changes nothing.
        assert!(c.said(2, "Uh-huh.").is_empty());
        assert_eq!(c.chunk(1, "There was a cat."), ["chunk #1 turn 1 seq 1 There was a cat."]);
        c.done(1);
        assert_eq!(c.history(), ["user: Tell me a story.", "assistant: Once upon a time. There was a cat."]);
    }

    #[test]
    fn a_backchannel_preview_followed_by_other_words_is_an_interruption_after_all() {
        let mut c = Call::new();
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        c.speech_start(2);
        assert_eq!(c.preview(2, "Yeah."), ["resume 2"]);
        c.speech_end(2);
        assert_eq!(
            c.said(2, "Yeah, but stop."),
            ["stop #1", "end #1 turn 1 cancelled", "cancel up to 1", "start #2 turn 2"]
        );
    }

    #[test]
    fn a_preview_of_other_words_over_a_reply_decides_nothing_before_the_final_transcript() {
        let mut c = Call::new();
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        c.speech_start(2);
        assert!(c.preview(2, "Stop.").is_empty(), "the reply stays paused");
        assert!(c.preview(2, "Stop.").is_empty());
        c.speech_end(2);
        assert_eq!(c.said(2, "Stop."), ["stop #1", "end #1 turn 1 cancelled", "cancel up to 1", "start #2 turn 2"]);
    }

    #[test]
    fn a_backchannel_preview_with_preempt_off_still_resumes() {
        let mut c = Call::with(|cfg| cfg.preempt = false);
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        c.speech_start(2);
        assert_eq!(c.preview(2, "Mm-hmm."), ["resume 2"]);
    }

    #[test]
    fn no_words_over_a_playing_reply_resume_it() {
        let mut c = Call::new();
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        c.speech_start(2);
        c.speech_end(2);
        assert_eq!(c.said(2, ""), ["resume 2"]);
    }

    #[test]
    fn other_words_over_a_playing_reply_cancel_it_and_are_answered() {
        let mut c = Call::new();
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        c.speech_start(2);
        c.speech_end(2);
        assert_eq!(
            c.said(2, "Stop."),
            ["stop #1", "end #1 turn 1 cancelled", "cancel up to 1", "start #2 turn 2"]
        );
        assert_eq!(
            c.asked(2),
            ["user: Tell me a story.", "assistant: Once upon a time. [interrupted]", "user: Stop."]
        );
    }

    #[test]
    fn words_over_a_finished_reply_still_playing_cancel_it_in_tts_writer() {
        let mut c = Call::new();
        answered_once(&mut c);
        c.speech_start(2);
        c.speech_end(2);
        assert_eq!(c.said(2, "Wait."), ["cancel up to 1", "start #2 turn 2"]);
    }

    #[test]
    fn speech_still_going_after_interrupt_after_is_an_interruption_before_its_words() {
        let mut c = Call::new();
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        c.at(1_000);
        c.speech_start(2);
        assert!(c.at(3_099).is_empty());
        assert_eq!(c.at(3_100), ["stop #1", "end #1 turn 1 cancelled", "cancel up to 1"]);
        // Its words are answered when they come (not decided again).
        c.speech_end(2);
        assert_eq!(c.said(2, "No, tell me about dogs instead."), ["start #2 turn 2"]);
    }

    #[test]
    fn speech_that_ended_before_interrupt_after_waits_for_its_words() {
        let mut c = Call::new();
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        c.speech_start(2);
        c.at(1_500);
        c.speech_end(2);
        assert!(c.at(30_000).is_empty());
        assert_eq!(c.said(2, "Mm-hmm."), ["resume 2"]);
    }

    #[test]
    fn after_a_reply_its_estimated_audio_and_slack_count_as_playing() {
        // "It is noon." is 11 characters: ~0.92 s at 12 a second, + 1.5 s of slack.
        let playing = |ms: u64| {
            let mut c = Call::new();
            answered_once(&mut c);
            c.at(ms);
            c.speech_start(2) == [forwarded("speech-start", 2)] && c.said(2, "Yeah.") == ["resume 2"]
        };
        assert!(playing(2_400));
        assert!(!playing(2_500));
    }

    // ---- playback facts from tts-writer (`--played`) ----

    fn progress(c: &mut Call, turn: u64) -> Vec<String> {
        c.event(Event::new(kind::REPLY_PROGRESS).with_turn(turn))
    }

    fn played(c: &mut Call, turn: u64) -> Vec<String> {
        c.event(Event::new(kind::REPLY_PLAYED).with_turn(turn).with("cancelled", false))
    }

    #[test]
    fn a_question_after_the_reply_was_reported_played_is_not_speech_over_it() {
        let mut c = Call::new();
        answered_once(&mut c); // the guess: audible until ~2.42 s
        c.at(300);
        assert!(progress(&mut c, 1).is_empty(), "playback reports go to no one");
        c.at(1_000);
        assert!(played(&mut c, 1).is_empty());
        c.at(1_200); // within the guess, but tts-writer said the reply is over
        assert_eq!(
            c.speech_start(2),
            [forwarded("speech-start", 2)],
            "not paused-and-decided, and no cancel: nothing plays"
        );
        assert_eq!(c.said(2, "What about tomorrow?"), ["start #2 turn 2"]);
    }

    #[test]
    fn a_reply_reported_progressing_is_playing_after_the_guess_ran_out() {
        let mut c = Call::new();
        answered_once(&mut c); // the guess ends at ~2.42 s; a slow machine plays it later
        for ms in [2_000, 2_500, 3_000] {
            c.at(ms);
            progress(&mut c, 1);
        }
        c.at(3_400);
        assert_eq!(c.speech_start(2), [forwarded("speech-start", 2)]);
        assert_eq!(c.said(2, "Yeah."), ["resume 2"], "a backchannel over a reply still playing resumes it");
        // No report for longer than a report's interval allows: the guess decides again.
        c.at(6_000);
        assert_eq!(c.speech_start(3), [forwarded("speech-start", 3)]);
        assert_eq!(c.said(3, "Yeah."), ["start #2 turn 3"]);
    }

    #[test]
    fn a_report_of_an_older_reply_says_nothing_of_the_newer_one() {
        let mut c = Call::new();
        answered_once(&mut c);
        c.turn(2, "And tomorrow?");
        c.chunk(2, "Rain.");
        played(&mut c, 1);
        assert_eq!(c.speech_start(3), [forwarded("speech-start", 3)]);
        assert_eq!(c.said(3, "Mm-hmm."), ["resume 3"], "reply 2 may still be playing");
    }

    #[test]
    fn a_resumed_reply_is_assumed_to_end_as_much_later_as_it_was_paused() {
        let mut c = Call::new();
        answered_once(&mut c); // audible until ~2.42 s
        c.at(2_000);
        c.speech_start(2);
        c.at(3_000);
        c.speech_end(2);
        assert_eq!(c.said(2, "Okay."), ["resume 2"]); // paused 1 s: now audible until ~3.42 s
        c.at(3_400);
        assert_eq!(c.speech_start(3), [forwarded("speech-start", 3)], "still counted as playing");
    }

    #[test]
    fn a_reply_streaming_with_nothing_handed_on_is_not_playing() {
        let mut c = Call::new();
        answered_once(&mut c);
        c.turn(2, "And tomorrow?"); // reply #2 streams, nothing said yet
        assert_eq!(c.speech_start(3), [forwarded("speech-start", 3), "stop #2".into(), "end #2 turn 2 cancelled".into()]);
    }

    #[test]
    fn with_barge_in_cancel_speech_start_over_a_reply_cancels_it_at_once() {
        let mut c = Call::with(|cfg| cfg.pause_first = false);
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        assert_eq!(c.speech_start(2), [forwarded("speech-start", 2), "stop #1".into(), "end #1 turn 1 cancelled".into()]);
        c.speech_end(2);
        // A backchannel is now a message like any.
        assert_eq!(c.said(2, "Uh-huh."), ["start #2 turn 2"]);
    }

    #[test]
    fn a_monologue_cut_at_its_maximum_length_is_not_an_interruption() {
        let mut c = Call::new();
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        let continued = Event::new(kind::SPEECH_START).with_turn(2).with("continues", 1);
        assert_eq!(c.event(continued), [forwarded("speech-start", 2), "stop #1".into(), "end #1 turn 1 cancelled".into()]);
    }

    #[test]
    fn over_a_playing_reply_a_backchannel_preview_resumes_it_and_other_words_start_early() {
        let mut c = Call::new();
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        c.done(1);
        c.speech_start(2);
        assert_eq!(c.preview(2, "Uh-huh."), ["resume 2"], "a backchannel starts no reply: it resumes the one paused");
        assert_eq!(c.preview(2, "Stop, tell me a joke."), ["start #2 turn 2 held"]);
    }

    // ---- cancel and call boundaries ----

    #[test]
    fn cancel_stops_the_reply_and_the_history_keeps_what_was_written_marked_interrupted() {
        let mut c = Call::new();
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        c.chunk(1, "There was a cat.");
        c.host.unwritten = vec![1]; // still queued: withdrawn, never heard
        assert_eq!(c.cancel(None), ["forward cancel", "stop #1", "end #1 turn 1 cancelled"]);
        assert!(c.chunk(1, "It was grey.").is_empty(), "nothing of a cancelled reply is written");
        assert_eq!(c.history(), ["user: Tell me a story.", "assistant: Once upon a time. [interrupted]"]);
    }

    #[test]
    fn the_history_keeps_what_tts_writer_says_was_heard_of_a_cut_reply() {
        let mut c = Call::with(|cfg| cfg.holding = Some((Duration::from_millis(3000), "One moment.".into())));
        c.turn(1, "Tell me a story.");
        c.at(3_000); // the holding phrase went out first
        c.chunk(1, "Once upon a time, in a small village by the sea.");
        c.chunk(1, "There lived a cat.");
        c.speech_start(2);
        assert_eq!(c.said(2, "Stop."), ["stop #1", "end #1 turn 1 cancelled", "cancel up to 1", "start #2 turn 2"]);
        assert_eq!(c.history()[1], "assistant: Once upon a time, in a small village by the sea. There lived a cat. [interrupted]");
        let played = Event::new(kind::REPLY_PLAYED)
            .with_turn(1)
            .with("cancelled", true)
            .with("played_text", "One moment. Once upon a time, in a small");
        assert!(c.event(played).is_empty());
        assert_eq!(c.history()[1], "assistant: Once upon a time, in a small [interrupted]");
        // A reply played whole, or cut with nothing heard, leaves the history as it is.
        let whole = Event::new(kind::REPLY_PLAYED).with_turn(1).with("cancelled", false).with("played_text", "Once");
        c.event(whole);
        let nothing = Event::new(kind::REPLY_PLAYED).with_turn(1).with("cancelled", true).with("played_text", "");
        c.event(nothing);
        assert_eq!(c.history()[1], "assistant: Once upon a time, in a small [interrupted]");
    }

    #[test]
    fn the_holding_phrase_said_for_a_tool_call_is_not_kept_as_heard() {
        let mut c = Call::with(|cfg| cfg.tool_holding = Some((Duration::from_millis(1000), "One moment.".into())));
        c.turn(1, "What time is it in Paris?");
        c.chunk(1, "Let me look.");
        c.input(Input::Tools { reply: 1, running: true });
        assert_eq!(c.at(1_000), ["chunk #1 turn 1 seq 1 One moment."]);
        c.input(Input::Tools { reply: 1, running: false });
        c.chunk(1, "It is noon in Paris, and sunny.");
        c.speech_start(2);
        c.said(2, "Stop.");
        let played = Event::new(kind::REPLY_PLAYED)
            .with_turn(1)
            .with("cancelled", true)
            .with("played_text", "Let me look. One moment. It is noon");
        c.event(played);
        assert_eq!(c.history()[1], "assistant: Let me look. It is noon [interrupted]");
    }

    #[test]
    fn a_cancelled_reply_with_nothing_written_is_not_answered_again() {
        let mut c = Call::new();
        c.turn(1, "What time is it?");
        assert_eq!(c.cancel(Some(1)), [forwarded("cancel", 1), "stop #1".into(), "end #1 turn 1 cancelled".into()]);
        assert!(c.at(60_000).is_empty());
        // The unanswered message merges with the next one.
        c.turn(2, "Hello?");
        assert_eq!(c.asked(2), ["user: What time is it? Hello?"]);
    }

    #[test]
    fn a_cancel_of_another_turn_leaves_the_reply_alone() {
        let mut c = Call::new();
        c.turn(5, "What time is it?");
        assert_eq!(c.cancel(Some(4)), [forwarded("cancel", 4)]);
        assert_eq!(c.chunk(1, "Noon."), ["chunk #1 turn 5 seq 0 Noon."]);
    }

    #[test]
    fn a_call_start_stops_everything_and_begins_a_new_conversation() {
        let mut c = Call::new();
        c.speech_start(1);
        c.speech_end(1);
        c.speech_start(2);
        c.said(1, "What time is it?"); // waiting for turn 2
        assert_eq!(
            c.event(Event::new(kind::CALL_START).with("call", "c-2")),
            ["new conversation c-2", "forward call-start"]
        );
        assert!(c.at(60_000).is_empty(), "the last call's message is not answered");
    }

    #[test]
    fn a_call_end_stops_the_reply() {
        let mut c = Call::new();
        c.turn(1, "Tell me a story.");
        c.chunk(1, "Once upon a time.");
        assert_eq!(c.event(Event::new(kind::CALL_END)), ["stop #1", "end #1 turn 1 cancelled", "forward call-end"]);
        // Nothing plays any more: the next turn is not an interruption.
        assert_eq!(c.speech_start(2), [forwarded("speech-start", 2)]);
        c.speech_end(2);
        assert_eq!(c.said(2, "Yeah."), ["start #2 turn 2"]);
    }

    #[test]
    fn at_the_end_of_input_a_waiting_message_is_answered() {
        let mut c = Call::new();
        c.speech_start(1);
        c.speech_end(1);
        c.speech_start(2);
        c.said(1, "I'd like a table for");
        assert_eq!(c.input(Input::EndOfInput), ["start #1 turn 1"]);
        assert!(c.policy.replying());
    }

    #[test]
    fn when_the_output_closes_the_reply_stops_and_is_not_answered_again() {
        let mut c = Call::new();
        c.turn(1, "What time is it?");
        assert_eq!(c.input(Input::OutputClosed), ["stop #1", "end #1 turn 1 cancelled"]);
        assert!(!c.policy.replying());
    }
}

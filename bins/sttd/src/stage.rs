//! [`SttStage`]: the event loop of sttd. It reads segments and events, forwards control
//! events at once, collects each turn's 16 kHz audio, schedules Whisper jobs on the
//! [`TranscriptionWorker`], and writes one final `transcript` per turn.
//!
//! Turn rules (fifo-layout.md §2 "Ordering"): the caller's finished words are never dropped.
//! * `speech-start` (urgent) is forwarded immediately and opens its turn. It ends or drops no
//!   other turn: urgent events overtake queued audio and `speech-end`s, so a new speech-start
//!   says nothing about the turns before it (their frames carry their own turn ids).
//! * `speech-end` (forwarded) closes the turn and asks for its transcript; finished turns are
//!   transcribed in the order their speech-ends arrived. If an early job (started at the first
//!   pause, see `--speculate-after`, or for a partial transcript) decoded exactly the input the
//!   final decode would get (the same speech; only silence came after it, see
//!   engine::speech_extent), its result is reused instead of running Whisper again.
//! * `cancel` with a `turn` drops that turn; without one it only stops replies (forwarded).
//! * `call-start`/`call-end` drop every unfinished turn: that call's conversation is over.
//! * A turn with no words (silence, noise, a hallucination) still gets a final `transcript`,
//!   with empty `text` and `no_speech` saying why, so the next stage knows the turn is done.
//! * End of input, or the upstream writer going away mid-turn (vadseg restarted), ends the
//!   open turns as they are: what the caller said so far is transcribed, not lost.
//! * audio of a turn we never saw start (sttd restarted mid-turn) is ignored: that turn is lost.
//! * When the worker is free and no final transcript is waiting, the oldest open turn (lowest
//!   turn id: vadseg's ids are onset times) that is due gets the early decode.
//!
//! The stage is generic over its output, runs any [`crate::worker::Transcriber`] through the
//! worker and reads time from an injectable clock, so these rules are unit-tested with a
//! scripted transcriber and frames collected in a `Vec` (tests below).

use crate::engine::{speech_extent, SpeechExtent, SAMPLE_RATE};
use crate::guard::HallucinationGuard;
use crate::worker::{Job, JobDone, JobKind, TranscriptionWorker};
use crossbeam_channel::{select, Receiver};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tgvoice::event::{kind, trace_key};
use tgvoice::{AudioFrame, Event, Frame, Input, TurnTrace};

/// Speculation / partial-transcript settings.
#[derive(Debug, Clone)]
pub struct EarlySettings {
    /// Start decoding an open turn after this long without new audio (None = off).
    pub speculate_after: Option<Duration>,
    /// Emit `final: false` transcripts of an open turn at most this often (None = off).
    pub partial_every: Option<Duration>,
    /// Emit a speculative decode's text as `final: false, preview: true` (fifo-layout.md).
    pub preview: bool,
}

/// Where the stage's frames go (a FrameSink in the program, a `Vec<Frame>` in unit tests).
pub use tgvoice::sink::Output;

struct OpenTurn {
    samples: Vec<f32>,
    trace: TurnTrace,
    last_audio: Instant,
    /// Samples covered by the newest early job.
    early_covers: usize,
    /// An early job whose result can still serve as the final transcript: only silence came
    /// after the speech it decoded.
    early: Option<Early>,
    last_partial: Option<Instant>,
}

/// An early (speculative or partial) decode of an open turn and the speech it covered.
struct Early {
    speech: SpeechExtent,
    state: EarlyState,
    /// Started at a pause (`--speculate-after`), not for a partial transcript.
    at_pause: bool,
}

enum EarlyState {
    Running(u64),
    Done(crate::engine::Transcription),
}

struct InFlight {
    id: u64,
    turn: u64,
    kind: JobKind,
    /// A speculative decode that became the final one (logged as such).
    speculative: bool,
    abort: Arc<AtomicBool>,
    started: Instant,
}

struct FinalRequest {
    turn: u64,
    samples: Arc<Vec<f32>>,
}

/// Per-stage counters, logged at exit.
#[derive(Debug, Default, Clone)]
pub struct StageStats {
    pub turns: u64,
    pub transcripts: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub early_reused: u64,
}

pub struct SttStage<O: Output> {
    out: O,
    worker: TranscriptionWorker,
    guard: HallucinationGuard,
    early: EarlySettings,
    /// Ordered by turn id, so the early decode's pick does not depend on hashing.
    open: BTreeMap<u64, OpenTurn>,
    /// Ended turns' traces, until their transcript is emitted or dropped.
    ended: BTreeMap<u64, TurnTrace>,
    queue: VecDeque<FinalRequest>,
    in_flight: Option<InFlight>,
    dropped: HashSet<u64>,
    next_job: u64,
    unknown_turns_logged: HashSet<u64>,
    /// A flood of cancels costs a few lines, not one per turn.
    drop_log: tgvoice::log::LogLimit,
    wrong_rate_logged: HashSet<u64>,
    /// The time the pause and partial timers run on (the wall clock; a test's own in tests).
    clock: Box<dyn Fn() -> Instant + Send>,
    pub stats: StageStats,
}

/// Insert `turn` into a set of turns already logged about; true if it is new. The set is kept
/// small (a long call must not grow it forever): it forgets everything past 1024 entries.
fn remember_once(set: &mut HashSet<u64>, turn: u64) -> bool {
    if set.len() >= 1024 {
        set.clear();
    }
    set.insert(turn)
}

fn to_f32(a: &AudioFrame) -> Vec<f32> {
    if a.channels <= 1 {
        a.samples.iter().map(|s| *s as f32 / 32768.0).collect()
    } else {
        let ch = a.channels as usize;
        a.samples.chunks_exact(ch).map(|c| c.iter().map(|s| *s as f32).sum::<f32>() / (ch as f32 * 32768.0)).collect()
    }
}

impl<O: Output> SttStage<O> {
    pub fn new(out: O, worker: TranscriptionWorker, guard: HallucinationGuard, early: EarlySettings) -> Self {
        SttStage {
            out,
            worker,
            guard,
            early,
            open: BTreeMap::new(),
            ended: BTreeMap::new(),
            queue: VecDeque::new(),
            in_flight: None,
            dropped: HashSet::new(),
            next_job: 1,
            unknown_turns_logged: HashSet::new(),
            drop_log: Default::default(),
            wrong_rate_logged: HashSet::new(),
            clock: Box::new(Instant::now),
            stats: StageStats::default(),
        }
    }

    /// Read the time from `clock` instead of the wall clock (tests step it by hand).
    pub fn with_clock(mut self, clock: impl Fn() -> Instant + Send + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    fn now(&self) -> Instant {
        (self.clock)()
    }

    pub fn into_output(self) -> O {
        self.out
    }

    /// Run until the input ends or `stop` fires (SIGTERM), then finish the transcripts already
    /// asked for, open turns included.
    pub fn run(&mut self, input: Receiver<Input>, stop: Receiver<&'static str>) {
        let done = self.worker.done.clone();
        let tick = Duration::from_millis(10);
        let mut input_open = true;
        loop {
            if !input_open && self.in_flight.is_none() && self.queue.is_empty() {
                break;
            }
            if self.out.is_closed() {
                // A reader that leaves ends the writer quietly, like any pipeline tool.
                log::info!("output closed; stopping");
                break;
            }
            let timers = self.early.speculate_after.is_some() || self.early.partial_every.is_some();
            let timeout = if timers && !self.open.is_empty() { tick } else { Duration::from_millis(500) };
            select! {
                recv(if input_open { input.clone() } else { crossbeam_channel::never() }) -> msg => match msg {
                    Ok(Input::Frame(f)) => self.on_frame(f),
                    Ok(Input::WriterGone) => self.on_writer_gone(),
                    Err(_) => {
                        input_open = false;
                        self.end_open_turns("the input ended before its speech-end");
                    }
                },
                recv(done) -> msg => if let Ok(d) = msg { self.on_done(d) },
                recv(if input_open { stop.clone() } else { crossbeam_channel::never() }) -> _ => {
                    // What was already read belongs to the turn; a live input never runs dry.
                    for item in input.try_iter().take(input.len()) {
                        if let Input::Frame(f) = item {
                            self.on_frame(f);
                        }
                    }
                    input_open = false;
                    self.end_open_turns("stopping");
                }
                default(timeout) => {}
            }
            self.schedule();
        }
    }

    pub fn on_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Audio(a) => self.on_audio(a),
            Frame::Event(e) => self.on_event(e),
        }
    }

    fn on_event(&mut self, e: Event) {
        let turn = e.turn;
        match e.kind.as_str() {
            kind::SPEECH_START => {
                let trace = e.trace.clone();
                self.out.send(Frame::Event(e));
                let Some(turn) = turn else {
                    log::warn!("speech-start without a turn id; ignoring it");
                    return;
                };
                self.stats.turns += 1;
                self.dropped.remove(&turn);
                let now = self.now();
                self.open.insert(
                    turn,
                    OpenTurn {
                        samples: Vec::with_capacity(SAMPLE_RATE as usize * 5),
                        trace,
                        last_audio: now,
                        early_covers: 0,
                        early: None,
                        last_partial: None,
                    },
                );
            }
            kind::CANCEL => {
                self.out.send(Frame::Event(e));
                if let Some(t) = turn {
                    self.drop_turn(t, "cancelled");
                }
            }
            kind::SPEECH_END => {
                let trace = e.trace.clone();
                self.out.send(Frame::Event(e));
                match turn {
                    Some(t) => self.end_turn(t, trace),
                    None => log::warn!("speech-end without a turn id; ignoring it"),
                }
            }
            kind::CALL_START | kind::CALL_END => {
                let why = if e.is(kind::CALL_START) { "a new call started" } else { "the call ended" };
                self.out.send(Frame::Event(e));
                let turns: BTreeSet<u64> = self.open.keys().chain(self.ended.keys()).copied().collect();
                for t in turns {
                    self.drop_turn(t, why);
                }
            }
            _ => self.out.send(Frame::Event(e)),
        }
    }

    fn on_audio(&mut self, a: AudioFrame) {
        if a.turn == 0 || self.dropped.contains(&a.turn) {
            return;
        }
        if a.sample_rate != SAMPLE_RATE {
            if remember_once(&mut self.wrong_rate_logged, a.turn) {
                log::error!(
                    "turn {}: audio at {} Hz, expected 16000 Hz speech segments (put vadseg before sttd); ignoring it",
                    a.turn,
                    a.sample_rate
                );
            }
            return;
        }
        let now = self.now();
        let Some(t) = self.open.get_mut(&a.turn) else {
            if !self.ended.contains_key(&a.turn) && remember_once(&mut self.unknown_turns_logged, a.turn) {
                log::warn!("turn {}: audio without its speech-start (sttd started mid-turn?); this turn is skipped", a.turn);
            }
            return;
        };
        let samples = to_f32(&a);
        // Speech went on after the early decode: its result can no longer be the final one
        // (and a running one is stopped to free the worker).
        if t.early.as_ref().is_some_and(|e| e.speech.extended_by(&samples)) {
            if let Some(Early { state: EarlyState::Running(id), .. }) = t.early.take() {
                if let Some(f) = self.in_flight.as_ref().filter(|f| f.id == id) {
                    f.abort.store(true, Ordering::Relaxed);
                }
            }
        }
        t.samples.extend_from_slice(&samples);
        t.last_audio = now;
    }

    fn end_turn(&mut self, turn: u64, trace: TurnTrace) {
        let Some(mut t) = self.open.remove(&turn) else {
            if !self.dropped.contains(&turn) {
                log::warn!("turn {turn}: speech-end without its speech-start (sttd started mid-turn?); nothing to transcribe");
            }
            return;
        };
        for (k, v) in trace.0 {
            t.trace.mark(&k, v);
        }
        let samples = Arc::new(std::mem::take(&mut t.samples));
        if let Err(why) = self.guard.check_audio(&samples) {
            log::info!("turn {turn}: no transcript ({why})");
            self.no_words(turn, t.trace, &why);
            return;
        }
        self.ended.insert(turn, t.trace.clone());
        // The early decode had the same input as the final one would (same speech, silence
        // after it): its result is the final result.
        let speech = speech_extent(&samples);
        let early = t.early.take().filter(|e| e.speech.len == speech.len);
        match early.map(|e| e.state) {
            Some(EarlyState::Done(result)) => {
                self.stats.early_reused += 1;
                self.finish_turn(turn, Ok(result), &samples, true);
            }
            Some(EarlyState::Running(id)) if self.in_flight.as_ref().is_some_and(|f| f.id == id) => {
                // Its result becomes the final one.
                let f = self.in_flight.as_mut().unwrap();
                f.kind = JobKind::Final;
                f.speculative = true;
                self.stats.early_reused += 1;
                log::debug!("turn {turn}: speculative decode already running; it becomes the final one");
            }
            _ => {
                if let Some(f) = self.in_flight.as_ref().filter(|f| f.turn == turn) {
                    f.abort.store(true, Ordering::Relaxed);
                }
                self.queue.push_back(FinalRequest { turn, samples });
            }
        }
    }

    fn drop_turn(&mut self, turn: u64, why: &str) {
        let mut had = self.open.remove(&turn).is_some();
        had |= self.ended.remove(&turn).is_some();
        let before = self.queue.len();
        self.queue.retain(|r| r.turn != turn);
        had |= self.queue.len() != before;
        if let Some(f) = self.in_flight.as_ref().filter(|f| f.turn == turn) {
            f.abort.store(true, Ordering::Relaxed);
            had = true;
        }
        if had {
            self.stats.dropped += 1;
            self.drop_log.log(log::Level::Info, "turn dropped", format_args!("turn {turn}: dropped ({why})"));
        }
        self.dropped.insert(turn);
        if self.dropped.len() > 1024 {
            let min = *self.dropped.iter().min().unwrap();
            self.dropped.remove(&min);
        }
    }

    fn on_writer_gone(&mut self) {
        self.end_open_turns("the upstream writer went away mid-turn");
    }

    /// End every open turn as it is (no speech-end will come for it), oldest first, so what
    /// the caller said so far is transcribed.
    fn end_open_turns(&mut self, why: &str) {
        let turns: Vec<u64> = self.open.keys().copied().collect();
        for turn in turns {
            log::info!("turn {turn}: {why}; transcribing what was heard");
            self.end_turn(turn, TurnTrace::default());
        }
    }

    /// Tell the next stage that `turn` is over without words (fifo-layout.md: an empty final
    /// transcript), so nothing downstream waits for it.
    fn no_words(&mut self, turn: u64, trace: TurnTrace, why: &dyn std::fmt::Display) {
        self.stats.rejected += 1;
        let e = Event::new(kind::TRANSCRIPT).with_turn(turn).with_text("").with("final", true).with("no_speech", why.to_string()).with_trace(trace);
        self.out.send(Frame::Event(e));
    }

    fn on_done(&mut self, d: JobDone) {
        if d.first_pass {
            return self.on_first_pass(d);
        }
        let Some(f) = self.in_flight.take_if(|f| f.id == d.id) else { return };
        let elapsed = self.now().saturating_duration_since(f.started);
        log::debug!("job {} (turn {}, {:?}) done in {:.0} ms", d.id, d.turn, f.kind, elapsed.as_secs_f64() * 1e3);
        let result = match d.result {
            Ok(None) => None, // aborted
            Ok(Some(t)) => Some(Ok(t)),
            Err(e) => Some(Err(e)),
        };
        let Some(result) = result else {
            if let Some(t) = self.open.get_mut(&d.turn) {
                t.early = t.early.take().filter(|e| !matches!(e.state, EarlyState::Running(id) if id == d.id));
            }
            return;
        };
        match f.kind {
            JobKind::Final => {
                if self.ended.contains_key(&d.turn) {
                    self.finish_turn(d.turn, result, &d.samples, f.speculative);
                }
            }
            JobKind::Early => {
                let Some(t) = self.open.get_mut(&d.turn) else { return };
                let Ok(result) = result else {
                    t.early = None; // the final decode will try again
                    return;
                };
                let Some(early) = t.early.as_mut().filter(|e| matches!(e.state, EarlyState::Running(id) if id == d.id)) else {
                    return;
                };
                // A decode at a pause is the final transcript if only silence follows: tell the
                // next stage now (a preview), so it can start the reply while vadseg waits.
                let preview = self.early.preview && early.at_pause;
                if preview || self.early.partial_every.is_some() {
                    if let Ok(text) = self.guard.accept(&result, &d.samples) {
                        let mut e = Event::new(kind::TRANSCRIPT).with_turn(d.turn).with_text(text).with("final", false);
                        if preview {
                            e = e.with("preview", true);
                        }
                        e.trace = t.trace.clone();
                        self.out.send(Frame::Event(e));
                    }
                }
                early.state = EarlyState::Done(result);
            }
        }
    }

    /// An unsure first pass of the running decode, sent as a preview while whisper decodes the
    /// turn again (~1 s for a short turn on 2 cores). Over a reply this is what lets llm-relay
    /// resume it on "Uh-huh" at once; for a question, start the answer early. The final
    /// transcript still decides.
    fn on_first_pass(&mut self, d: JobDone) {
        if !(self.early.preview && self.in_flight.as_ref().is_some_and(|f| f.id == d.id)) {
            return;
        }
        let Ok(Some(t)) = &d.result else { return };
        let trace = match (self.open.get(&d.turn), self.ended.get(&d.turn)) {
            (Some(open), _) => open.trace.clone(),
            (None, Some(ended)) => ended.clone(),
            (None, None) => return,
        };
        if let Ok(text) = self.guard.accept(t, &d.samples) {
            log::info!("turn {}: first pass {text:?} is unsure (logprob {:.2}); sent as a preview while it is decoded again", d.turn, t.avg_logprob);
            let mut e = Event::new(kind::TRANSCRIPT).with_turn(d.turn).with_text(text).with("final", false).with("preview", true);
            e.trace = trace;
            self.out.send(Frame::Event(e));
        }
    }

    fn finish_turn(&mut self, turn: u64, result: Result<crate::engine::Transcription, String>, samples: &[f32], reused: bool) {
        let Some(mut trace) = self.ended.remove(&turn) else { return };
        let secs = samples.len() as f64 / SAMPLE_RATE as f64;
        let t = match result {
            Ok(t) => t,
            Err(e) => {
                log::error!("turn {turn}: transcription failed: {e}");
                self.no_words(turn, trace, &format!("transcription failed: {e}"));
                return;
            }
        };
        match self.guard.accept(&t, samples) {
            Ok(text) => {
                trace.mark_now(trace_key::TRANSCRIPT);
                let since_eot = trace.span_ms(trace_key::EOT, trace_key::TRANSCRIPT).map(|ms| format!(", {ms:.0} ms after speech-end")).unwrap_or_default();
                log::info!(
                    "turn {turn}: {text:?} ({secs:.2} s of audio; decode {:.0} ms{}{}{}{}{}{since_eot})",
                    t.elapsed_ms,
                    if t.audio_ctx > 0 { format!(", audio_ctx {}", t.audio_ctx) } else { String::new() },
                    t.scores(),
                    t.redecoded.as_ref().map(|p| format!(", re-decoded: {p}")).unwrap_or_default(),
                    if t.loop_cut { ", loop cut" } else { "" },
                    if reused { ", speculative" } else { "" }
                );
                let e = Event::new(kind::TRANSCRIPT).with_turn(turn).with_text(text).with("final", true).with_trace(trace);
                self.out.send(Frame::Event(e));
                self.stats.transcripts += 1;
            }
            Err(why) => {
                log::info!("turn {turn}: no transcript for {:?} ({why})", t.text);
                self.no_words(turn, trace, &why);
            }
        }
    }

    /// Give the worker its next job when it is idle: ended turns first, then early work.
    fn schedule(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        if let Some(req) = self.queue.pop_front() {
            self.start_job(req.turn, JobKind::Final, req.samples);
            return;
        }
        let now = self.now();
        let mut pick = None;
        for (turn, t) in &self.open {
            if t.samples.len() < SAMPLE_RATE as usize / 2 || t.samples.len() == t.early_covers {
                continue;
            }
            let paused = self.early.speculate_after.is_some_and(|d| now.duration_since(t.last_audio) >= d);
            let partial_due = self
                .early
                .partial_every
                .is_some_and(|d| t.last_partial.map_or(t.samples.len() as f64 / SAMPLE_RATE as f64 >= d.as_secs_f64(), |p| now.duration_since(p) >= d));
            if paused || partial_due {
                pick = Some(*turn);
                break;
            }
        }
        if let Some(turn) = pick {
            let t = self.open.get_mut(&turn).unwrap();
            if self.guard.check_audio(&t.samples).is_err() {
                t.early_covers = t.samples.len();
                return;
            }
            let samples = Arc::new(t.samples.clone());
            let speech = speech_extent(&samples);
            t.early_covers = samples.len();
            t.last_partial = Some(now);
            // Only silence since the last early decode: its result stands.
            if t.early.as_ref().is_some_and(|e| e.speech.len == speech.len) && self.early.partial_every.is_none() {
                return;
            }
            let at_pause = self.early.speculate_after.is_some_and(|d| now.duration_since(t.last_audio) >= d);
            let id = self.start_job(turn, JobKind::Early, samples);
            self.open.get_mut(&turn).unwrap().early = Some(Early { speech, state: EarlyState::Running(id), at_pause });
        }
    }

    fn start_job(&mut self, turn: u64, kind: JobKind, samples: Arc<Vec<f32>>) -> u64 {
        let id = self.next_job;
        self.next_job += 1;
        let abort = Arc::new(AtomicBool::new(false));
        self.in_flight = Some(InFlight { id, turn, kind, speculative: false, abort: abort.clone(), started: self.now() });
        self.worker.submit(Job { id, turn, samples, abort });
        id
    }
}

/// The stage's rules with a scripted transcriber and a hand-stepped clock: the test starts
/// each decode (`schedule`), sees what it was given, and says when it ends and with what text.
#[cfg(test)]
mod rules {
    use super::*;
    use crate::engine::Transcription;
    use crate::guard::{GuardSettings, Problem};
    use crate::worker::Transcriber;
    use crossbeam_channel::{unbounded, Sender};
    use std::sync::Mutex;

    /// Each call reports its input length, then waits for the test's scripted reply (the
    /// scripted delay); a call whose abort flag is set by then returns `aborted`.
    struct FakeWhisper {
        calls: Sender<usize>,
        replies: Receiver<Result<Transcription, String>>,
    }

    impl Transcriber for FakeWhisper {
        fn transcribe(&mut self, samples: &[f32], abort: Option<Arc<AtomicBool>>) -> anyhow::Result<Transcription> {
            let _ = self.calls.send(samples.len());
            let mut t = self.replies.recv().unwrap_or_else(|_| Ok(Transcription::default())).map_err(anyhow::Error::msg)?;
            t.aborted = abort.is_some_and(|a| a.load(Ordering::Relaxed));
            Ok(t)
        }

        /// A scripted result marked `redecoded` is an unsure first pass: it is reported, and
        /// the next scripted result is the re-decode's.
        fn transcribe_reporting_first_pass(
            &mut self,
            samples: &[f32],
            abort: Option<Arc<AtomicBool>>,
            first_pass: &mut dyn FnMut(&Transcription),
        ) -> anyhow::Result<Transcription> {
            let t = self.transcribe(samples, abort.clone())?;
            if t.redecoded.is_none() || t.aborted {
                return Ok(t);
            }
            first_pass(&t);
            let mut again = self.replies.recv().unwrap_or_else(|_| Ok(Transcription::default())).map_err(anyhow::Error::msg)?;
            again.aborted = abort.is_some_and(|a| a.load(Ordering::Relaxed));
            again.redecoded = t.redecoded;
            Ok(again)
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    struct Harness {
        s: SttStage<Vec<Frame>>,
        calls: Receiver<usize>,
        replies: Sender<Result<Transcription, String>>,
        now: Arc<Mutex<Instant>>,
    }

    fn early(speculate_ms: u64, preview: bool) -> EarlySettings {
        EarlySettings { speculate_after: Some(Duration::from_millis(speculate_ms)), partial_every: None, preview }
    }

    fn no_early() -> EarlySettings {
        EarlySettings { speculate_after: None, partial_every: None, preview: false }
    }

    fn no_early_but_previews() -> EarlySettings {
        EarlySettings { speculate_after: None, partial_every: None, preview: true }
    }

    impl Harness {
        fn new(early: EarlySettings) -> Self {
            let (calls_tx, calls) = unbounded();
            let (replies, replies_rx) = unbounded();
            let worker = TranscriptionWorker::spawn(FakeWhisper { calls: calls_tx, replies: replies_rx }).unwrap();
            let now = Arc::new(Mutex::new(Instant::now()));
            let clock = now.clone();
            let s = SttStage::new(Vec::new(), worker, HallucinationGuard::new(GuardSettings::default()), early)
                .with_clock(move || *clock.lock().unwrap());
            Harness { s, calls, replies, now }
        }

        /// One input frame, then the scheduling the event loop does after it.
        fn feed(&mut self, f: Frame) {
            self.s.on_frame(f);
            self.s.schedule();
        }

        fn feed_all(&mut self, frames: Vec<Frame>) {
            for f in frames {
                self.feed(f);
            }
        }

        /// `ms` pass without input.
        fn wait(&mut self, ms: u64) {
            *self.now.lock().unwrap() += Duration::from_millis(ms);
            self.s.schedule();
        }

        /// The turn and kind of the running decode, and the samples the transcriber got.
        fn running(&self) -> (u64, JobKind, usize) {
            let f = self.s.in_flight.as_ref().expect("a decode is running");
            let len = self.calls.recv_timeout(WAIT).expect("the transcriber was called");
            (f.turn, f.kind, len)
        }

        /// The running decode ends with `reply`; the stage handles it and schedules again.
        fn reply(&mut self, reply: Result<Transcription, String>) {
            self.replies.send(reply).unwrap();
            let done = self.s.worker.done.recv_timeout(WAIT).expect("the decode ends");
            self.s.on_done(done);
            self.s.schedule();
        }

        /// The running decode's first pass is `text`, unsure; the stage handles the report.
        fn unsure_first_pass(&mut self, text: &str) {
            let t = Transcription { avg_logprob: -1.3, redecoded: Some(Problem::Unsure { avg_logprob: -1.3 }), ..words(text) };
            self.replies.send(Ok(t)).unwrap();
            let first = self.s.worker.done.recv_timeout(WAIT).expect("the first pass is reported");
            assert!(first.first_pass);
            self.s.on_done(first);
            self.s.schedule();
        }

        fn say(&mut self, text: &str) {
            self.reply(Ok(words(text)));
        }

        fn idle(&self) -> bool {
            self.s.in_flight.is_none() && self.calls.is_empty()
        }

        fn transcripts(&self) -> Vec<&Event> {
            self.s.out.iter().filter_map(|f| if let Frame::Event(e) = f { Some(e) } else { None }).filter(|e| e.is(kind::TRANSCRIPT)).collect()
        }
    }

    /// A confident result.
    fn words(text: &str) -> Transcription {
        Transcription { text: text.into(), no_speech_prob: Some(0.01), avg_logprob: -0.2, n_tokens: 5, ..Default::default() }
    }

    /// `ms` of a 220 Hz tone (speech, as far as the stage's level checks go) as 20 ms frames.
    /// A decode is reused only for the same speech extent, counted in vadseg's 512-sample
    /// chunks: the turns that test it are whole chunks long (1024 ms), as vadseg's are.
    fn tone(turn: u64, ms: usize) -> Vec<Frame> {
        let n = ms * 16;
        let s: Vec<i16> = (0..n).map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 220.0 * i as f64 / 16_000.0).sin()) as i16).collect();
        frames(turn, &s)
    }

    fn silence(turn: u64, ms: usize) -> Vec<Frame> {
        frames(turn, &vec![0; ms * 16])
    }

    fn frames(turn: u64, samples: &[i16]) -> Vec<Frame> {
        samples
            .chunks(320)
            .map(|c| Frame::Audio(AudioFrame { sample_rate: SAMPLE_RATE, channels: 1, turn, capture_us: 0, sample_index: 0, samples: c.to_vec() }))
            .collect()
    }

    fn event(kind: &str, turn: u64) -> Frame {
        Frame::Event(Event::new(kind).with_turn(turn))
    }

    fn summary(e: &Event) -> (Option<u64>, String, Option<bool>, Option<bool>) {
        (e.turn, e.text.clone().unwrap_or_default(), e.get_bool("final"), e.get_bool("preview"))
    }

    #[test]
    fn a_finished_turn_is_decoded_once_and_gets_its_final_transcript() {
        let mut h = Harness::new(no_early());
        h.feed(event(kind::SPEECH_START, 7));
        h.feed_all(tone(7, 1000));
        h.wait(2000);
        assert!(h.idle(), "no early decode when speculation is off");
        h.feed(event(kind::SPEECH_END, 7));
        assert_eq!(h.running(), (7, JobKind::Final, 16_000));
        h.say("What time is it?");
        let t = h.transcripts();
        assert_eq!(t.iter().map(|e| summary(e)).collect::<Vec<_>>(), [(Some(7), "What time is it?".into(), Some(true), None)]);
        assert!(t[0].trace.get(trace_key::TRANSCRIPT).is_some());
        assert_eq!(h.s.stats.transcripts, 1);
        assert!(h.idle());
    }

    #[test]
    fn an_unsure_first_pass_is_a_preview_while_the_turn_is_decoded_again() {
        let mut h = Harness::new(no_early_but_previews());
        h.feed(event(kind::SPEECH_START, 9));
        h.feed_all(tone(9, 700));
        h.feed(event(kind::SPEECH_END, 9));
        assert_eq!(h.running(), (9, JobKind::Final, 11_200));
        h.unsure_first_pass("Uh-huh.");
        assert_eq!(h.transcripts().iter().map(|e| summary(e)).collect::<Vec<_>>(), [(Some(9), "Uh-huh.".into(), Some(false), Some(true))]);
        assert!(!h.idle(), "the re-decode is still running");
        h.say("Uh-huh.");
        let t: Vec<_> = h.transcripts().iter().map(|e| summary(e)).collect();
        assert_eq!(t.last(), Some(&(Some(9), "Uh-huh.".into(), Some(true), None)), "the re-decode is the final transcript");
        assert_eq!(h.s.stats.transcripts, 1);
    }

    #[test]
    fn with_previews_off_an_unsure_first_pass_is_not_sent() {
        let mut h = Harness::new(no_early());
        h.feed(event(kind::SPEECH_START, 9));
        h.feed_all(tone(9, 700));
        h.feed(event(kind::SPEECH_END, 9));
        h.running();
        h.unsure_first_pass("Uh-huh.");
        assert!(h.transcripts().is_empty());
        h.say("Uh-huh.");
        assert_eq!(h.transcripts().iter().map(|e| summary(e)).collect::<Vec<_>>(), [(Some(9), "Uh-huh.".into(), Some(true), None)]);
    }

    #[test]
    fn a_decode_at_a_pause_is_a_preview_and_the_final_result_when_only_silence_follows() {
        let mut h = Harness::new(early(150, true));
        h.feed(event(kind::SPEECH_START, 8));
        h.feed_all(tone(8, 1024));
        h.wait(100);
        assert!(h.idle(), "not yet a pause");
        h.wait(50);
        assert_eq!(h.running(), (8, JobKind::Early, 16_384));
        h.say("What is the capital of France?");
        assert_eq!(h.transcripts().iter().map(|e| summary(e)).collect::<Vec<_>>(), [(Some(8), "What is the capital of France?".into(), Some(false), Some(true))]);
        // Silence (vadseg's post-roll) and the end of the turn: no second decode.
        h.feed_all(silence(8, 300));
        h.wait(1000);
        h.feed(event(kind::SPEECH_END, 8));
        assert!(h.idle(), "the decode at the pause is reused");
        let t = h.transcripts();
        assert_eq!(summary(t[1]), (Some(8), "What is the capital of France?".into(), Some(true), None));
        assert_eq!(h.s.stats.early_reused, 1);
    }

    #[test]
    fn without_preview_the_decode_at_a_pause_is_not_sent_but_still_reused() {
        let mut h = Harness::new(early(150, false));
        h.feed(event(kind::SPEECH_START, 8));
        h.feed_all(tone(8, 1024));
        h.wait(150);
        assert_eq!(h.running().1, JobKind::Early);
        h.say("Hello there.");
        assert!(h.transcripts().is_empty());
        h.feed(event(kind::SPEECH_END, 8));
        assert!(h.idle());
        assert_eq!(h.transcripts().iter().map(|e| summary(e)).collect::<Vec<_>>(), [(Some(8), "Hello there.".into(), Some(true), None)]);
    }

    #[test]
    fn a_decode_at_a_pause_is_not_reused_when_speech_went_on() {
        let mut h = Harness::new(early(150, true));
        h.feed(event(kind::SPEECH_START, 8));
        h.feed_all(tone(8, 1024));
        h.wait(150);
        h.running();
        h.say("What is the capital");
        // The caller goes on: the preview was not the final result.
        h.feed_all(tone(8, 512));
        h.feed(event(kind::SPEECH_END, 8));
        assert_eq!(h.running(), (8, JobKind::Final, 16_384 + 8_192));
        h.say("What is the capital of France?");
        let t = h.transcripts();
        assert_eq!(t.len(), 2);
        assert_eq!(summary(t[1]), (Some(8), "What is the capital of France?".into(), Some(true), None));
        assert_eq!(h.s.stats.early_reused, 0);
    }

    #[test]
    fn a_running_decode_at_a_pause_becomes_the_final_one() {
        let mut h = Harness::new(early(150, true));
        h.feed(event(kind::SPEECH_START, 8));
        h.feed_all(tone(8, 1024));
        h.wait(150);
        assert_eq!(h.running().1, JobKind::Early);
        h.feed_all(silence(8, 200));
        h.feed(event(kind::SPEECH_END, 8));
        assert_eq!(h.s.in_flight.as_ref().map(|f| f.kind), Some(JobKind::Final), "the same decode, now the final one");
        h.say("Is it raining?");
        // No preview: the result is already the final transcript.
        assert_eq!(h.transcripts().iter().map(|e| summary(e)).collect::<Vec<_>>(), [(Some(8), "Is it raining?".into(), Some(true), None)]);
        assert!(h.idle());
        assert_eq!(h.s.stats.early_reused, 1);
    }

    #[test]
    fn speech_after_the_pause_aborts_the_running_early_decode() {
        let mut h = Harness::new(early(150, true));
        h.feed(event(kind::SPEECH_START, 8));
        h.feed_all(tone(8, 1024));
        h.wait(150);
        h.running();
        h.feed_all(tone(8, 200));
        assert!(h.s.in_flight.as_ref().unwrap().abort.load(Ordering::Relaxed), "the worker is freed");
        h.say("What is");
        assert!(h.transcripts().is_empty(), "an aborted decode sends no preview");
        h.feed(event(kind::SPEECH_END, 8));
        assert_eq!(h.running(), (8, JobKind::Final, 16_384 + 3_200));
        h.say("What is the time?");
        assert_eq!(h.transcripts().iter().map(|e| summary(e)).collect::<Vec<_>>(), [(Some(8), "What is the time?".into(), Some(true), None)]);
    }

    #[test]
    fn partial_transcripts_of_a_long_turn_and_the_last_one_reused_as_final() {
        let mut h = Harness::new(EarlySettings { speculate_after: None, partial_every: Some(Duration::from_secs(1)), preview: true });
        h.feed(event(kind::SPEECH_START, 2));
        h.feed_all(tone(2, 512));
        assert!(h.idle(), "under a second of speech: no partial yet");
        h.feed_all(tone(2, 488));
        assert_eq!(h.running(), (2, JobKind::Early, 16_000), "due at a second of speech");
        h.say("Book a table");
        h.feed_all(tone(2, 1024));
        assert!(h.idle(), "the next partial a second after the last");
        h.wait(1000);
        assert_eq!(h.running(), (2, JobKind::Early, 16_000 + 16_384));
        h.say("Book a table for two");
        h.feed(event(kind::SPEECH_END, 2));
        assert!(h.idle(), "nothing was said since the last partial: it is the final result");
        let t: Vec<_> = h.transcripts().iter().map(|e| summary(e)).collect();
        assert_eq!(
            t,
            [
                (Some(2), "Book a table".into(), Some(false), None),
                (Some(2), "Book a table for two".into(), Some(false), None),
                (Some(2), "Book a table for two".into(), Some(true), None)
            ]
        );
    }

    #[test]
    fn the_oldest_open_turn_is_decoded_early_first() {
        let mut h = Harness::new(early(150, true));
        // Turn 30's speech-start overtook turn 10's audio (urgent events go first); both pause.
        for turn in [30, 10, 20] {
            h.feed(event(kind::SPEECH_START, turn));
        }
        for turn in [30, 20, 10] {
            h.feed_all(tone(turn, 600 + turn as usize));
        }
        h.wait(150);
        let mut order = vec![];
        for _ in 0..3 {
            order.push(h.running().0);
            h.say("Yes.");
            h.wait(150);
        }
        assert_eq!(order, [10, 20, 30]);
    }

    #[test]
    fn ended_turns_are_decoded_in_speech_end_order_before_early_work() {
        let mut h = Harness::new(early(150, false));
        for turn in [1, 2, 3] {
            h.feed(event(kind::SPEECH_START, turn));
            h.feed_all(tone(turn, 1000));
        }
        h.feed(event(kind::SPEECH_END, 3));
        h.feed(event(kind::SPEECH_END, 1));
        h.wait(150);
        let mut order = vec![];
        for _ in 0..3 {
            let (turn, kind, _) = h.running();
            order.push((turn, kind));
            h.say("Fine.");
        }
        assert_eq!(order, [(3, JobKind::Final), (1, JobKind::Final), (2, JobKind::Early)]);
    }

    #[test]
    fn a_silent_turn_gets_an_empty_final_transcript_without_a_decode() {
        let mut h = Harness::new(early(150, true));
        h.feed(event(kind::SPEECH_START, 5));
        h.feed_all(silence(5, 1000));
        h.wait(500);
        assert!(h.idle(), "silence is never decoded early");
        h.feed(event(kind::SPEECH_END, 5));
        assert!(h.idle(), "nor at the end");
        let t = h.transcripts();
        assert_eq!(summary(t[0]), (Some(5), String::new(), Some(true), None));
        assert!(t[0].get_str("no_speech").is_some_and(|why| why.contains("silent")), "{:?}", t[0]);
        assert_eq!(h.s.stats.rejected, 1);
    }

    #[test]
    fn a_hallucination_is_no_preview_and_an_empty_final_transcript() {
        let mut h = Harness::new(early(150, true));
        h.feed(event(kind::SPEECH_START, 5));
        h.feed_all(tone(5, 1024));
        h.wait(150);
        h.running();
        let invented = Transcription { text: "Thank you.".into(), no_speech_prob: Some(0.95), avg_logprob: -1.5, ..Default::default() };
        h.reply(Ok(invented.clone()));
        assert!(h.transcripts().is_empty(), "the guard rejects the preview");
        h.feed(event(kind::SPEECH_END, 5));
        let t = h.transcripts();
        assert_eq!(summary(t[0]), (Some(5), String::new(), Some(true), None));
        assert!(t[0].get_str("no_speech").is_some_and(|why| why.contains("no speech")), "{:?}", t[0]);
        // Tags alone are no words either; a loop the engine cut is passed on as it is.
        let mut h = Harness::new(no_early());
        for (turn, t) in [(1, Transcription { text: "[BLANK_AUDIO]".into(), ..words("") }), (2, Transcription { loop_cut: true, ..words("I want to go home.") })] {
            h.feed(event(kind::SPEECH_START, turn));
            h.feed_all(tone(turn, 1000));
            h.feed(event(kind::SPEECH_END, turn));
            h.running();
            h.reply(Ok(t));
        }
        let t = h.transcripts();
        assert_eq!(t.iter().map(|e| summary(e)).collect::<Vec<_>>(), [(Some(1), String::new(), Some(true), None), (Some(2), "I want to go home.".into(), Some(true), None)]);
        assert_eq!(t[0].get_str("no_speech"), Some("no words in the result"));
    }

    #[test]
    fn a_failed_decode_still_ends_the_turn() {
        let mut h = Harness::new(no_early());
        h.feed(event(kind::SPEECH_START, 4));
        h.feed_all(tone(4, 1000));
        h.feed(event(kind::SPEECH_END, 4));
        h.running();
        h.reply(Err("whisper broke".into()));
        let t = h.transcripts();
        assert_eq!(summary(t[0]), (Some(4), String::new(), Some(true), None));
        assert!(t[0].get_str("no_speech").is_some_and(|why| why.contains("whisper broke")), "{:?}", t[0]);
    }

    #[test]
    fn a_failed_early_decode_is_retried_at_the_end() {
        let mut h = Harness::new(early(150, true));
        h.feed(event(kind::SPEECH_START, 4));
        h.feed_all(tone(4, 1000));
        h.wait(150);
        h.running();
        h.reply(Err("whisper broke".into()));
        assert!(h.transcripts().is_empty());
        h.feed(event(kind::SPEECH_END, 4));
        assert_eq!(h.running().1, JobKind::Final);
        h.say("Second try.");
        assert_eq!(summary(h.transcripts()[0]), (Some(4), "Second try.".into(), Some(true), None));
    }

    #[test]
    fn a_cancel_aborts_its_turns_decode_and_the_next_turn_goes_on() {
        let mut h = Harness::new(no_early());
        for turn in [1, 2] {
            h.feed(event(kind::SPEECH_START, turn));
            h.feed_all(tone(turn, 1000));
            h.feed(event(kind::SPEECH_END, turn));
        }
        assert_eq!(h.running().0, 1);
        h.feed(event(kind::CANCEL, 1));
        assert!(h.s.in_flight.as_ref().unwrap().abort.load(Ordering::Relaxed));
        h.say("Tell me a story.");
        assert_eq!(h.running().0, 2);
        h.say("How are you?");
        let t = h.transcripts();
        assert_eq!(t.iter().map(|e| e.turn).collect::<Vec<_>>(), [Some(2)], "the cancelled turn gets nothing");
        assert!(h.s.out.iter().any(|f| matches!(f, Frame::Event(e) if e.is(kind::CANCEL) && e.turn == Some(1))), "the cancel is forwarded");
        // Its late audio and speech-end change nothing.
        h.feed_all(tone(1, 500));
        h.feed(event(kind::SPEECH_END, 1));
        assert!(h.idle());
        assert_eq!(h.s.stats.dropped, 1);
    }

    #[test]
    fn a_call_boundary_drops_open_queued_and_running_turns() {
        let mut h = Harness::new(early(150, true));
        for turn in [1, 2, 3] {
            h.feed(event(kind::SPEECH_START, turn));
            h.feed_all(tone(turn, 1000));
        }
        h.feed(event(kind::SPEECH_END, 1));
        h.feed(event(kind::SPEECH_END, 2));
        assert_eq!(h.running().0, 1);
        h.feed(Frame::Event(Event::new(kind::CALL_END)));
        h.say("Goodbye.");
        h.wait(1000);
        assert!(h.idle(), "nothing of the old call is decoded");
        assert!(h.transcripts().is_empty());
        assert_eq!(h.s.stats.dropped, 3);
        // The next call's turn is transcribed.
        h.feed(event(kind::SPEECH_START, 4));
        h.feed_all(tone(4, 1000));
        h.feed(event(kind::SPEECH_END, 4));
        assert_eq!(h.running().0, 4);
    }

    #[test]
    fn the_writer_going_away_ends_the_open_turns_oldest_first() {
        let mut h = Harness::new(no_early());
        for turn in [9, 3] {
            h.feed(event(kind::SPEECH_START, turn));
            h.feed_all(tone(turn, 700));
        }
        h.s.on_writer_gone();
        h.s.schedule();
        let mut order = vec![];
        for _ in 0..2 {
            let (turn, kind, _) = h.running();
            order.push((turn, kind));
            h.say("Partly said.");
        }
        assert_eq!(order, [(3, JobKind::Final), (9, JobKind::Final)]);
        assert_eq!(h.transcripts().len(), 2);
    }

    #[test]
    fn the_event_loop_transcribes_what_was_said_when_the_input_ends() {
        let mut h = Harness::new(no_early());
        h.replies.send(Ok(words("Where is the station?"))).unwrap();
        let (tx, rx) = unbounded();
        tx.send(Input::Frame(event(kind::SPEECH_START, 6))).unwrap();
        for f in tone(6, 1000) {
            tx.send(Input::Frame(f)).unwrap();
        }
        drop(tx);
        let (_stop, stop_rx) = crossbeam_channel::bounded(1);
        h.s.run(rx, stop_rx);
        assert_eq!(h.transcripts().iter().map(|e| summary(e)).collect::<Vec<_>>(), [(Some(6), "Where is the station?".into(), Some(true), None)]);
    }
}

/// The turn bookkeeping through a `Vec` output, with the real Whisper tiny.en model
/// (scripts/setup makes it) and espeak-ng speech.
#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use crossbeam_channel::{bounded, unbounded};

    fn stage() -> SttStage<Vec<Frame>> {
        stage_to(Vec::new())
    }

    fn stage_to<O: Output>(out: O) -> SttStage<O> {
        let args = crate::config::Args::try_parse_from(["sttd"]).unwrap();
        let model = args.model();
        assert!(model.exists(), "{} is missing: run scripts/setup", model.display());
        let engine = crate::engine::WhisperEngine::load(&model, args.decode_settings().unwrap()).unwrap();
        let worker = TranscriptionWorker::spawn(engine).unwrap();
        SttStage::new(out, worker, HallucinationGuard::new(args.guard_settings()), args.early_settings())
    }

    /// An output the test reads while the stage runs.
    struct Chan(crossbeam_channel::Sender<Frame>);

    impl Output for Chan {
        fn send(&mut self, frame: Frame) {
            let _ = self.0.send(frame);
        }
    }

    /// Feed `frames`, end the input, and return everything the stage emitted.
    fn run(frames: Vec<Frame>) -> Vec<Frame> {
        let mut s = stage();
        let (tx, rx) = unbounded();
        for f in frames {
            tx.send(Input::Frame(f)).unwrap();
        }
        drop(tx);
        let (_stop, stop_rx) = bounded(1);
        s.run(rx, stop_rx);
        s.into_output()
    }

    /// `text` spoken by espeak-ng, as 16 kHz s16.
    fn speech(text: &str) -> Vec<i16> {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("s.wav");
        let out = std::process::Command::new("espeak-ng").args(["-v", "en-us", "-w"]).arg(&wav).arg(text).output().expect("espeak-ng (scripts/setup)");
        assert!(out.status.success());
        let (rate, samples) = tgvoice::resample::read_wav_mono(std::fs::File::open(&wav).unwrap()).unwrap();
        let mut r = tgvoice::resample::StreamResampler::new(rate, SAMPLE_RATE, (rate / 50) as usize).unwrap();
        let mut s = r.process(&samples);
        s.extend(r.flush());
        s
    }

    fn audio(turn: u64, samples: &[i16]) -> Vec<Frame> {
        samples
            .chunks(320)
            .enumerate()
            .map(|(i, c)| {
                Frame::Audio(AudioFrame { sample_rate: SAMPLE_RATE, channels: 1, turn, capture_us: 0, sample_index: i as u64 * 320, samples: c.to_vec() })
            })
            .collect()
    }

    fn event(kind: &str, turn: u64) -> Frame {
        Frame::Event(Event::new(kind).with_turn(turn))
    }

    /// A turn: speech-start, its audio, speech-end.
    fn turn(turn: u64, samples: &[i16]) -> Vec<Frame> {
        let mut f = vec![event(kind::SPEECH_START, turn)];
        f.extend(audio(turn, samples));
        f.push(event(kind::SPEECH_END, turn));
        f
    }

    fn events(out: &[Frame]) -> Vec<&Event> {
        out.iter().filter_map(|f| if let Frame::Event(e) = f { Some(e) } else { None }).collect()
    }

    /// (turn, text) of each final transcript, in order.
    fn finals(out: &[Frame]) -> Vec<(u64, String)> {
        events(out)
            .into_iter()
            .filter(|e| e.is(kind::TRANSCRIPT) && e.get_bool("final") == Some(true))
            .map(|e| (e.turn.unwrap(), e.text.clone().unwrap_or_default().to_lowercase()))
            .collect()
    }

    #[test]
    fn a_finished_turn_gets_one_final_transcript_after_its_events() {
        let out = run(turn(7, &speech("What time is it")));
        let kinds: Vec<&str> = events(&out).iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, [kind::SPEECH_START, kind::SPEECH_END, kind::TRANSCRIPT], "{out:?}");
        let f = finals(&out);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, 7);
        assert!(f[0].1.contains("time"), "{f:?}");
        assert!(events(&out)[2].trace.get(trace_key::TRANSCRIPT).is_some(), "the transcript is marked in the trace");
    }

    #[test]
    fn a_cancelled_turn_is_dropped_and_the_next_one_is_transcribed() {
        let mut frames = vec![event(kind::SPEECH_START, 1)];
        frames.extend(audio(1, &speech("Tell me a story")));
        frames.push(event(kind::CANCEL, 1));
        frames.push(event(kind::SPEECH_END, 1));
        frames.extend(turn(2, &speech("How are you today")));
        let out = run(frames);
        let f = finals(&out);
        assert_eq!(f.iter().map(|t| t.0).collect::<Vec<_>>(), [2], "{f:?}");
        assert!(events(&out).iter().any(|e| e.is(kind::CANCEL) && e.turn == Some(1)), "the cancel is forwarded");
    }

    #[test]
    fn a_new_call_drops_the_unfinished_turns_of_the_last_one() {
        let mut frames = vec![event(kind::SPEECH_START, 3)];
        frames.extend(audio(3, &speech("Good morning")));
        frames.push(Frame::Event(Event::new(kind::CALL_START).with("call", "c2")));
        frames.push(event(kind::SPEECH_END, 3));
        let out = run(frames);
        assert!(finals(&out).is_empty(), "{out:?}");
        assert!(events(&out).iter().any(|e| e.is(kind::CALL_START)), "call-start is forwarded");
    }

    #[test]
    fn audio_of_a_turn_that_never_started_is_ignored() {
        let mut frames = audio(4, &speech("Good morning"));
        frames.push(event(kind::SPEECH_END, 4));
        let out = run(frames);
        assert!(finals(&out).is_empty(), "{out:?}");
    }

    #[test]
    fn silence_gets_an_empty_final_transcript_saying_why() {
        let out = run(turn(5, &vec![0i16; SAMPLE_RATE as usize]));
        let t: Vec<&Event> = events(&out).into_iter().filter(|e| e.is(kind::TRANSCRIPT)).collect();
        assert_eq!(t.len(), 1, "{out:?}");
        assert_eq!((t[0].turn, t[0].text.as_deref(), t[0].get_bool("final")), (Some(5), Some(""), Some(true)));
        assert!(t[0].get_str("no_speech").is_some_and(|why| !why.is_empty()), "{:?}", t[0]);
    }

    #[test]
    fn the_end_of_input_mid_turn_transcribes_what_was_said() {
        let mut frames = vec![event(kind::SPEECH_START, 6)];
        frames.extend(audio(6, &speech("Where is the station")));
        let out = run(frames);
        let f = finals(&out);
        assert_eq!(f.len(), 1, "{out:?}");
        assert!(f[0].1.contains("station"), "{f:?}");
    }

    #[test]
    fn a_decode_at_a_pause_is_sent_as_a_preview_and_the_final_transcript_has_its_words() {
        let (out_tx, out) = unbounded();
        let mut s = stage_to(Chan(out_tx));
        let (tx, rx) = unbounded();
        let (_stop, stop_rx) = bounded(1);
        let stage = std::thread::spawn(move || s.run(rx, stop_rx));
        tx.send(Input::Frame(event(kind::SPEECH_START, 8))).unwrap();
        for f in audio(8, &speech("What is the capital of France")) {
            tx.send(Input::Frame(f)).unwrap();
        }
        // The caller pauses: sttd decodes what it has and says so, before the turn ends.
        let next_transcript = || loop {
            match out.recv_timeout(Duration::from_secs(180)).expect("a transcript") {
                Frame::Event(e) if e.is(kind::TRANSCRIPT) => return e,
                _ => {}
            }
        };
        let preview = next_transcript();
        assert_eq!((preview.turn, preview.get_bool("final"), preview.get_bool("preview")), (Some(8), Some(false), Some(true)), "{preview:?}");
        // Only silence follows; the turn ends: the final transcript is that decode's words.
        tx.send(Input::Frame(Frame::Audio(AudioFrame { sample_rate: SAMPLE_RATE, channels: 1, turn: 8, capture_us: 0, sample_index: 0, samples: vec![0; 4800] }))).unwrap();
        tx.send(Input::Frame(event(kind::SPEECH_END, 8))).unwrap();
        let last = next_transcript();
        drop(tx);
        stage.join().unwrap();
        assert_eq!((last.turn, last.get_bool("final")), (Some(8), Some(true)), "{last:?}");
        assert_eq!(last.text, preview.text);
        assert!(last.text.as_deref().unwrap_or("").to_lowercase().contains("capital"), "{last:?}");
    }

    #[test]
    fn unknown_events_are_forwarded_unchanged() {
        let custom = Event::new("x-custom").with_turn(9).with("n", 1);
        let out = run(vec![Frame::Event(custom.clone())]);
        assert_eq!(events(&out), [&custom]);
    }
}

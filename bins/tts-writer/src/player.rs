//! The paced writer: emits 48 kHz s16le in 10 ms (or 20 ms) frames on a real-time clock, keeping at most
//! `lead` of audio ahead of real time, and cuts off within one frame (with a short fade) on
//! cancel.
//!
//! Clock: `play_head` is the wall-clock instant at which the next sample will be heard if the
//! reader consumes in real time. A frame may be written once `now >= play_head - lead`; after
//! writing n samples `play_head += n / 48 kHz`. When the queue runs dry the head restarts at
//! `now` with the next audio (no silence is written unless `--fill-silence`); a writer or
//! reader delayed by a scheduling hiccup catches up at most 100 ms of schedule. On a named FIFO the real lead is also measured (FIONREAD on the write
//! end = bytes the reader has not taken yet) and writing waits while it would exceed `lead`;
//! the pipe buffer is shrunk (F_SETPIPE_SZ) so even a stalled reader cannot hoard more.
//!
//! What each reply was given and how much of it went out (the played-text report) is kept by
//! [`crate::ledger`]; this module only decides what to write when.
//!
//! Seams for unit tests: time comes from a [`Clock`] and bytes go to an [`AudioOut`], so a test
//! drives [`Player::handle`] and [`Player::poll`] on a hand-moved clock with the output in
//! memory ([`Player::run`] is only the loop that waits on the message channel).

use crate::ledger::Ledger;
use crate::report::{Played, Reporter};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tgvoice::fifo::{FifoWriter, Tap, WriteOutcome};
use tgvoice::render::{Format, Renderer, TextView};
use tgvoice::event::kind;
use tgvoice::sink::SinkHandle;
use tgvoice::{AudioFrame, Event, Frame, TurnTrace};

pub const RATE: u32 = tgvoice::audio::RATE;
/// The most a late writer catches up (see [`Player::write_samples`]).
const MAX_DEBT: Duration = Duration::from_millis(100);
/// A `reply-progress` every 500 ms of a reply's audio (llm-relay takes a reply whose last
/// report is older than 1.2 s for stopped).
const PROGRESS_EVERY_SAMPLES: usize = RATE as usize / 2;

/// The player's monotonic time: [`SystemClock`] in the program, a hand-moved clock in tests.
pub trait Clock: Send {
    fn now(&self) -> Instant;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Where the player's bytes go: [`FifoOut`] in the program, memory in tests.
pub trait AudioOut: Send {
    /// Deliver `bytes` whole (see [`FifoWriter::write_chunk`]).
    fn write_chunk(&mut self, bytes: &[u8]) -> WriteOutcome;
    /// Take back up to `max` written bytes the reader has not read yet (see
    /// [`FifoWriter::take_back`]); empty when the output cannot.
    fn take_back(&mut self, max: usize, align: usize) -> Vec<u8>;
    /// Bytes written that the reader has not read yet, if the output can tell; `lead_bytes`
    /// is the most the player means to keep there.
    fn unread_bytes(&mut self, lead_bytes: usize) -> Option<usize>;
    fn label(&self) -> &str;
    /// Chunks dropped while nobody was reading.
    fn dropped_chunks(&self) -> u64;
}

/// The output link (stdout, a file or a named FIFO) with the real lead measured on a FIFO.
pub struct FifoOut {
    out: FifoWriter,
    /// The fd whose pipe size we set, so it is set once per connection.
    sized_fd: Option<i32>,
    pipe_ok: bool,
}

impl FifoOut {
    pub fn new(out: FifoWriter) -> Self {
        FifoOut { out, sized_fd: None, pipe_ok: true }
    }
}

impl AudioOut for FifoOut {
    fn write_chunk(&mut self, bytes: &[u8]) -> WriteOutcome {
        self.out.write_chunk(bytes)
    }

    fn take_back(&mut self, max: usize, align: usize) -> Vec<u8> {
        self.out.take_back(max, align)
    }

    /// Linux: FIONREAD on the write end. Also shrinks the pipe buffer once per connection.
    fn unread_bytes(&mut self, lead_bytes: usize) -> Option<usize> {
        let fd = self.out.file()?.as_raw_fd();
        if self.sized_fd != Some(fd) {
            self.sized_fd = Some(fd);
            let want = lead_bytes.next_power_of_two().max(4096) as libc::c_int;
            #[cfg(target_os = "linux")]
            unsafe {
                if libc::fcntl(fd, libc::F_SETPIPE_SZ, want) < 0 {
                    log::debug!("F_SETPIPE_SZ {want} failed: {}", std::io::Error::last_os_error());
                }
            }
            let _ = want;
            self.pipe_ok = true;
        }
        if !self.pipe_ok {
            return None;
        }
        let mut n: libc::c_int = 0;
        if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
            self.pipe_ok = false;
            log::debug!("FIONREAD unsupported on the output; pacing by the clock only");
            return None;
        }
        Some(n.max(0) as usize)
    }

    fn label(&self) -> &str {
        self.out.label()
    }

    fn dropped_chunks(&self) -> u64 {
        self.out.dropped_chunks
    }
}

/// What [`Player::poll`] did, or what the caller should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Wrote (or tried to write) a frame: poll again.
    Wrote,
    /// Nothing to do for this long (or until a message arrives).
    Wait(Duration),
    /// Finished: true when everything was written, false when the output's reader left.
    Stop(bool),
}

/// Messages to the player, in order.
pub enum PlayerMsg {
    /// A reply chunk was accepted for synthesis (text for the played-text report).
    ChunkQueued { turn: u64, seq: u64, text: String, trace: TurnTrace },
    /// Synthesised audio at 48 kHz; `span` is where its words are in the chunk's text if the
    /// engine knows (a sentence);
    /// `last` marks the chunk's final piece.
    Audio { turn: u64, seq: u64, samples: Vec<i16>, span: Option<std::ops::Range<usize>>, last: bool },
    /// All chunks of `turn` were queued (reply-end, or the end of a text line).
    TurnEnd { turn: u64 },
    /// Drop everything of turns below the barrier (shared), fading out what is playing.
    Cancel,
    /// The caller may be talking (speech-onset/speech-start of turn `below`): fall silent on
    /// replies of turns below it, keep their place, keep taking their audio.
    Pause { below: u64 },
    /// It was a false alarm (speech-void/resume of turn `below`): go on from a little before
    /// where the paused reply stopped.
    Resume { below: u64 },
    /// Call control (`hangup`, `transfer`): written once every reply of a turn up to its
    /// `turn` queued before it is written (after their `reply-played`).
    Line(Event),
    /// A call boundary: call control not written yet is dropped.
    DropLine,
}

#[derive(Debug, Clone)]
pub struct PlayerConfig {
    /// Samples per paced write (480 = 10 ms, 960 = 20 ms).
    pub frame: usize,
    pub lead: Duration,
    pub fade: Duration,
    pub fill_silence: bool,
    /// Write audio as fast as the output takes it (no clock, no lead): for files and the
    /// voice-message pipeline, where nobody listens in real time.
    pub unpaced: bool,
    /// Write frames — 48 kHz audio frames carrying the turn id, and a `reply-played` event
    /// after the last audio of each reply — instead of raw PCM, in this format (frames, or
    /// JSON lines or text for a person: [`tgvoice::render`]).
    pub frames: Option<Format>,
    /// A pause neither resumed nor cancelled within this becomes a cancel.
    pub pause_timeout: Duration,
    /// On resume, this much of what was played before the pause is played again.
    pub replay: Duration,
}

/// A pause in force: replies of turns below `below` are silent until `until`.
#[derive(Debug, Clone, Copy)]
struct Pause {
    below: u64,
    until: Instant,
}

/// Written audio kept for re-playing after a pause (and for audio taken back from the pipe).
const REWIND_KEEP: Duration = Duration::from_secs(3);
/// A resume starts at the quietest 10 ms within this much before the replay point (a gap
/// between words, when there is one) rather than mid-syllable.
const REPLAY_SEEK: Duration = Duration::from_millis(250);

enum Item {
    Audio { turn: u64, seq: u64, samples: Vec<i16>, pos: usize },
    TurnEnd { turn: u64 },
    Line { turn: u64, event: Event },
}

pub struct Player {
    cfg: PlayerConfig,
    out: Box<dyn AudioOut>,
    clock: Box<dyn Clock>,
    tap: Option<Tap>,
    reporter: Reporter,
    barrier: Arc<AtomicU64>,
    queue: VecDeque<Item>,
    /// What each reply was given and how much of it went out (the played-text accounting).
    ledger: Ledger,
    play_head: Instant,
    closed: bool,
    /// Largest FIFO backlog seen (bytes), for the log and tests.
    pub max_unread: usize,
    /// Framed output: how frames are written, the turn of the audio being written, and the
    /// running sample index.
    renderer: Renderer,
    out_turn: u64,
    out_index: u64,
    paused: Option<Pause>,
    /// The most recent written audio as (turn, seq, samples), oldest first.
    played_tail: VecDeque<(u64, u64, Vec<i16>)>,
    /// llm-relay's `--played` link: progress and end of each reply.
    playback_reports: Option<SinkHandle>,
    /// The turn of the last `reply-progress` sent, and the audio written for it since (samples).
    progress: Option<(u64, usize)>,
    /// The line owner's link (`--line`): call control.
    line: Option<SinkHandle>,
}

impl Player {
    pub fn new(cfg: PlayerConfig, out: Box<dyn AudioOut>, tap: Option<Tap>, reporter: Reporter, barrier: Arc<AtomicU64>) -> Self {
        let renderer = Renderer::new(cfg.frames.unwrap_or(Format::Frames), TextView::Events);
        Player {
            cfg,
            out,
            clock: Box::new(SystemClock),
            tap,
            reporter,
            barrier,
            queue: VecDeque::new(),
            ledger: Ledger::default(),
            play_head: Instant::now(),
            closed: false,
            max_unread: 0,
            renderer,
            out_turn: 0,
            out_index: 0,
            paused: None,
            played_tail: VecDeque::new(),
            playback_reports: None,
            progress: None,
            line: None,
        }
    }

    /// Send call control (`hangup`, `transfer`) to `sink` (the line.frames link).
    pub fn with_line(mut self, sink: SinkHandle) -> Self {
        self.line = Some(sink);
        self
    }

    /// Send `reply-progress` and `reply-played` events to `sink` (the played.frames link).
    pub fn with_playback_reports(mut self, sink: SinkHandle) -> Self {
        self.playback_reports = Some(sink);
        self
    }

    /// `n` samples of `turn` were written: a `reply-progress` at its first audio and every
    /// [`PROGRESS_EVERY_SAMPLES`] after.
    fn report_progress(&mut self, turn: u64, n: usize) {
        let Some(sink) = &self.playback_reports else { return };
        let due = match &mut self.progress {
            Some((t, since)) if *t == turn => {
                *since += n;
                *since >= PROGRESS_EVERY_SAMPLES
            }
            _ => true,
        };
        if due {
            self.progress = Some((turn, 0));
            let ms = self.ledger.played_samples(turn) as f64 * 1000.0 / RATE as f64;
            sink.send(Frame::Event(Event::new(kind::REPLY_PROGRESS).with_turn(turn).with("played_ms", ms.round() as u64)));
        }
    }

    /// Take time from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Box<dyn Clock>) -> Self {
        self.play_head = clock.now();
        self.clock = clock;
        self
    }

    /// Audio of this turn may not be written now (a pause is in force for it).
    fn is_paused(&self, turn: u64) -> bool {
        self.paused.is_some_and(|p| turn < p.below)
    }

    fn lead_bytes(&self) -> usize {
        (self.cfg.lead.as_secs_f64() * RATE as f64).round() as usize * 2
    }

    /// Samples that may be written now (paused replies do not count).
    fn queued_samples(&self) -> usize {
        self.queue
            .iter()
            .map(|i| match i {
                Item::Audio { turn, samples, pos, .. } if !self.is_paused(*turn) => samples.len() - pos,
                _ => 0,
            })
            .sum()
    }

    /// Run until the message channel closes and everything queued was written (or stdout
    /// closed). Returns false if the output reader (stdout) went away.
    pub fn run(mut self, rx: Receiver<PlayerMsg>) -> bool {
        let mut inputs_open = true;
        loop {
            // Everything that has arrived is handled before the next write, so a cancel behind
            // queued audio takes effect now.
            loop {
                match rx.try_recv() {
                    Ok(m) => self.handle(m),
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        inputs_open = false;
                        break;
                    }
                }
            }
            match self.poll(inputs_open) {
                Poll::Stop(finished) => {
                    self.finish_output();
                    return finished;
                }
                Poll::Wrote => {}
                Poll::Wait(w) if inputs_open => match rx.recv_timeout(w) {
                    Ok(m) => self.handle(m),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => inputs_open = false,
                },
                Poll::Wait(w) => std::thread::sleep(w),
            }
        }
    }

    /// One step of the schedule at the clock's now: settle an expired pause, report finished
    /// turns, and write a frame if one is due. `inputs_open`: more messages may come.
    pub fn poll(&mut self, inputs_open: bool) -> Poll {
        if self.closed {
            return Poll::Stop(false);
        }
        if let Some(p) = self.paused {
            if self.clock.now() >= p.until || !inputs_open {
                // Nobody decided (a decider that only knows speech-start, or none): a
                // caller who talked this long meant it. With the input ended, nobody can.
                if self.holds_below(p.below) && inputs_open {
                    log::info!("pause for turn {} not resumed within {:?}: cancelling", p.below, self.cfg.pause_timeout);
                } else if self.holds_below(p.below) {
                    log::info!("input ended while the reply before turn {} was paused: cancelling it", p.below);
                }
                let barrier = self.barrier.fetch_max(p.below, Ordering::SeqCst).max(p.below);
                self.cancel(barrier);
            }
        }
        self.report_finished_turns();
        let has_audio = self.queued_samples() > 0;
        if !inputs_open && !has_audio {
            self.report_finished_turns();
            if self.out.dropped_chunks() > 0 {
                log::info!("dropped {} chunks of output while no reader was connected", self.out.dropped_chunks());
            }
            log::debug!("largest output backlog seen: {} bytes", self.max_unread);
            return Poll::Stop(true);
        }
        let now = self.clock.now();
        if !has_audio && self.play_head < now {
            self.play_head = now; // idle: the next reply starts at once
        }
        let mut wait = if has_audio || self.cfg.fill_silence { self.time_until_writable(now) } else { Some(Duration::from_millis(500)) };
        if let (Some(p), Some(w)) = (self.paused, wait) {
            wait = Some(w.min(p.until.saturating_duration_since(now)));
        }
        match wait {
            Some(w) if w > Duration::ZERO => Poll::Wait(w),
            _ => {
                if has_audio {
                    self.write_audio_frame();
                } else if self.cfg.fill_silence {
                    self.write_samples(&vec![0i16; self.cfg.frame]);
                }
                Poll::Wrote
            }
        }
    }

    /// How long until the next frame may be written (None or zero = now).
    fn time_until_writable(&mut self, now: Instant) -> Option<Duration> {
        if self.cfg.unpaced {
            return None;
        }
        // Writing one more frame at `allowed_at` leaves exactly `lead` of audio ahead of real time.
        let frame_dur = Duration::from_secs_f64(self.cfg.frame as f64 / RATE as f64);
        let allowed_at = (self.play_head + frame_dur).checked_sub(self.cfg.lead).unwrap_or(now);
        if allowed_at > now {
            return Some(allowed_at - now);
        }
        if let Some(unread) = self.out.unread_bytes(self.lead_bytes()) {
            self.max_unread = self.max_unread.max(unread);
            if unread + self.cfg.frame * 2 > self.lead_bytes() {
                // The reader is behind real time (or just connected): wait for it.
                return Some(Duration::from_millis(2));
            }
        }
        None
    }

    /// Take one message (in the order they were sent).
    pub fn handle(&mut self, m: PlayerMsg) {
        let barrier = self.barrier.load(Ordering::SeqCst);
        match m {
            PlayerMsg::ChunkQueued { turn, seq, text, trace } => {
                if turn < barrier {
                    return;
                }
                self.ledger.chunk_queued(turn, seq, text, trace);
            }
            PlayerMsg::Audio { turn, seq, samples, span, last } => {
                if turn < barrier {
                    return;
                }
                self.ledger.synthesized(turn, seq, samples.len(), span, last);
                if !samples.is_empty() {
                    self.queue.push_back(Item::Audio { turn, seq, samples, pos: 0 });
                }
            }
            PlayerMsg::TurnEnd { turn } => {
                if turn >= barrier {
                    self.queue.push_back(Item::TurnEnd { turn });
                } else {
                    self.ledger.forget(turn);
                }
            }
            PlayerMsg::Cancel => self.cancel(barrier),
            PlayerMsg::Pause { below } => self.pause(below),
            PlayerMsg::Resume { below } => self.resume(below),
            PlayerMsg::Line(event) => {
                let turn = event.turn.unwrap_or(0);
                if turn >= barrier {
                    self.queue.push_back(Item::Line { turn, event });
                } else {
                    log::info!("{} after cancelled turn {turn}: dropped", event.kind);
                }
            }
            PlayerMsg::DropLine => self.queue.retain(|i| !matches!(i, Item::Line { .. })),
        }
    }

    fn pause(&mut self, below: u64) {
        let until = self.clock.now() + self.cfg.pause_timeout;
        if let Some(p) = self.paused.as_mut() {
            // Already silent; the newest onset decides from now on.
            p.below = p.below.max(below);
            p.until = p.until.max(until);
            return;
        }
        let faded = self.silence_below(below);
        self.paused = Some(Pause { below, until });
        if self.holds_below(below) {
            log::info!("caller may be talking (turn {below}): reply paused{}", if faded > 0 { " mid-sentence" } else { "" });
        } else {
            log::debug!("caller may be talking (turn {below}): no reply to pause");
        }
    }

    /// Is any reply of a turn below `below` still queued or unreported?
    fn holds_below(&self, below: u64) -> bool {
        self.ledger.any_below(below)
            || self.queue.iter().any(|i| matches!(i, Item::Audio { turn, .. } | Item::TurnEnd { turn } if *turn < below))
    }

    fn resume(&mut self, below: u64) {
        let Some(p) = self.paused else { return };
        if below < p.below {
            return; // a newer onset still holds the pause
        }
        self.paused = None;
        let replay = (self.cfg.replay.as_secs_f64() * RATE as f64) as usize;
        let seek = (REPLAY_SEEK.as_secs_f64() * RATE as f64) as usize;
        let back = self.quiet_point_before(replay, seek);
        let rewound = self.rewind(back, |turn| turn < p.below);
        if let Some(Item::Audio { samples, pos, .. }) = self.queue.front_mut() {
            // Fade in, so the replay starts without a click.
            let n = ((self.cfg.fade.as_secs_f64() * RATE as f64) as usize).min(samples.len() - *pos);
            for (i, s) in samples[*pos..*pos + n].iter_mut().enumerate() {
                *s = (*s as f32 * (i + 1) as f32 / n as f32).round() as i16;
            }
        }
        self.play_head = self.clock.now();
        if self.holds_below(p.below) {
            log::info!("turn {below} was a false alarm: reply resumed, {:.0} ms replayed", rewound as f64 * 1000.0 / RATE as f64);
        }
    }

    /// How far back (samples) to start a replay: at the quietest 10 ms frame between `replay`
    /// and `replay + seek` before the current place, within the written audio we still have.
    fn quiet_point_before(&self, replay: usize, seek: usize) -> usize {
        let tail: Vec<i16> = self.played_tail.iter().flat_map(|(_, _, s)| s.iter().copied()).collect();
        let step = (RATE / 100) as usize;
        let mut best = (f64::MAX, replay.min(tail.len()));
        let mut back = replay;
        while back <= replay + seek && back <= tail.len() {
            let start = tail.len() - back;
            let frame = &tail[start..(start + step).min(tail.len())];
            let energy = frame.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / frame.len().max(1) as f64;
            if energy < best.0 {
                best = (energy, back);
            }
            back += step;
        }
        best.1
    }

    /// Put up to `n` of the most recently written samples of turns matching `which` back at
    /// the front of the queue (they will be written again) and un-count them as played.
    /// Returns how many were put back.
    fn rewind(&mut self, n: usize, which: impl Fn(u64) -> bool) -> usize {
        let mut left = n;
        while left > 0 {
            let Some((turn, seq, mut samples)) = self.played_tail.pop_back() else { break };
            if !which(turn) || !self.ledger.has(turn) {
                self.played_tail.push_back((turn, seq, samples));
                break;
            }
            let piece = if samples.len() > left {
                let tail = samples.split_off(samples.len() - left);
                self.played_tail.push_back((turn, seq, samples));
                tail
            } else {
                samples
            };
            left -= piece.len();
            self.ledger.unplayed(turn, seq, piece.len());
            self.queue.push_front(Item::Audio { turn, seq, samples: piece, pos: 0 });
        }
        n - left
    }

    /// Silence replies of turns below `below` now: take back what the output pipe still holds
    /// of them (it has not been heard), then write a short fade-out from where the listener
    /// is. Returns the samples faded (0 when nothing of those turns was playing).
    fn silence_below(&mut self, below: u64) -> usize {
        let playing = self.played_tail.back().is_some_and(|(turn, _, _)| *turn < below)
            && self.play_head + Duration::from_millis(20) > self.clock.now();
        if !playing {
            return 0;
        }
        if self.cfg.frames.is_none() {
            let taken = self.out.take_back(self.lead_bytes() + self.cfg.frame * 4, 2).len() / 2;
            if taken > 0 {
                let rewound = self.rewind(taken, |turn| turn < below);
                self.play_head = self.play_head.checked_sub(Duration::from_secs_f64(rewound as f64 / RATE as f64)).unwrap_or(self.play_head);
                log::debug!("took back {taken} unplayed samples from the output");
            }
        }
        let fade_len = (self.cfg.fade.as_secs_f64() * RATE as f64).round() as usize;
        let mut fade: Vec<i16> = Vec::with_capacity(fade_len);
        let mut taken = vec![];
        for item in self.queue.iter_mut() {
            if fade.len() >= fade_len {
                break;
            }
            if let Item::Audio { turn, seq, samples, pos } = item {
                if *turn >= below {
                    break;
                }
                let n = (samples.len() - *pos).min(fade_len - fade.len());
                fade.extend_from_slice(&samples[*pos..*pos + n]);
                *pos += n;
                taken.push((*turn, *seq, n));
            }
        }
        let mut at = 0;
        for &(turn, seq, n) in &taken {
            self.ledger.played(turn, seq, n);
            // Unfaded, so a replay after a resume has them whole.
            self.keep_for_replay(turn, seq, &fade[at..at + n].to_vec());
            at += n;
        }
        let len = fade_len.max(1) as f32;
        for (i, s) in fade.iter_mut().enumerate() {
            *s = (*s as f32 * (1.0 - (i + 1) as f32 / len)).round() as i16;
        }
        if let Some(&(turn, _, _)) = taken.first() {
            self.out_turn = turn;
        }
        if !fade.is_empty() {
            self.write_samples(&fade);
        }
        fade.len()
    }

    /// Fade out what is playing (if it belongs to a cancelled turn) and drop the rest.
    fn cancel(&mut self, barrier: u64) {
        // A paused reply is silent already (and faded when it paused).
        let faded = if self.paused.is_some() { 0 } else { self.silence_below(barrier) };
        if self.paused.is_some_and(|p| p.below <= barrier) {
            self.paused = None;
        }
        let before = self.queue.len();
        self.queue.retain(|i| match i {
            Item::Audio { turn, .. } | Item::TurnEnd { turn } | Item::Line { turn, .. } => *turn >= barrier,
        });
        for played in self.ledger.cut_below(barrier) {
            self.reply_done(played);
        }
        self.played_tail.retain(|(turn, _, _)| *turn >= barrier);
        log::debug!("cancel below turn {barrier}: dropped {} queued items, faded {faded} samples", before - self.queue.len());
    }

    /// Write up to one frame of queued audio.
    fn write_audio_frame(&mut self) {
        let size = self.cfg.frame;
        let mut frame: Vec<i16> = Vec::with_capacity(size);
        let mut played: Vec<(u64, u64, usize)> = vec![];
        let mut first_turn = None;
        for item in self.queue.iter_mut() {
            if frame.len() >= size {
                break;
            }
            match item {
                Item::Audio { turn, .. } | Item::TurnEnd { turn } if self.paused.is_some_and(|p| *turn < p.below) => {
                    continue; // paused: newer replies (the answer to the interruption) still play
                }
                Item::Audio { turn, seq, samples, pos } => {
                    if *pos >= samples.len() {
                        continue;
                    }
                    let n = (samples.len() - *pos).min(size - frame.len());
                    frame.extend_from_slice(&samples[*pos..*pos + n]);
                    *pos += n;
                    played.push((*turn, *seq, n));
                    first_turn.get_or_insert(*turn);
                }
                Item::TurnEnd { .. } => break, // a turn's report waits for its audio
                Item::Line { .. } => continue, // waits for the audio before it, holds back none
            }
        }
        while matches!(self.queue.front(), Some(Item::Audio { samples, pos, .. }) if *pos >= samples.len()) {
            self.queue.pop_front();
        }
        if frame.is_empty() {
            return;
        }
        if let Some(turn) = first_turn {
            if let Some(trace) = self.ledger.first_audio(turn) {
                self.reporter.first_audio(turn, trace);
            }
        }
        self.out_turn = first_turn.unwrap_or(0);
        self.write_samples(&frame);
        let mut at = 0;
        for (turn, seq, n) in played {
            self.ledger.played(turn, seq, n);
            self.keep_for_replay(turn, seq, &frame[at..at + n]);
            self.report_progress(turn, n);
            at += n;
        }
    }

    fn keep_for_replay(&mut self, turn: u64, seq: u64, samples: &[i16]) {
        match self.played_tail.back_mut() {
            Some((t, s, v)) if *t == turn && *s == seq => v.extend_from_slice(samples),
            _ => self.played_tail.push_back((turn, seq, samples.to_vec())),
        }
        let keep = (REWIND_KEEP.as_secs_f64() * RATE as f64) as usize;
        let mut total: usize = self.played_tail.iter().map(|(_, _, v)| v.len()).sum();
        while total > keep + self.played_tail.front().map_or(0, |(_, _, v)| v.len()) {
            let (_, _, v) = self.played_tail.pop_front().expect("non-empty");
            total -= v.len();
        }
    }

    fn write_samples(&mut self, samples: &[i16]) {
        let mut bytes = Vec::with_capacity(samples.len() * 2);
        for s in samples {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        // Late by a scheduling hiccup (this thread or the reader): keep up to MAX_DEBT of
        // schedule debt so the stream catches up (the FIONREAD check still bounds the lead);
        // later than that is an underrun and the schedule restarts from now.
        let now = self.clock.now();
        if let Some(floor) = now.checked_sub(MAX_DEBT) {
            if self.play_head < floor {
                self.play_head = floor;
            }
        }
        self.play_head += Duration::from_secs_f64(samples.len() as f64 / RATE as f64);
        let outcome = if self.cfg.frames.is_some() {
            let frame = Frame::Audio(AudioFrame {
                sample_rate: RATE,
                channels: 1,
                turn: std::mem::take(&mut self.out_turn),
                capture_us: tgvoice::clock::now_us(),
                sample_index: self.out_index,
                samples: samples.to_vec(),
            });
            self.out_index += samples.len() as u64;
            self.render(&frame)
        } else {
            self.out.write_chunk(&bytes)
        };
        if outcome == WriteOutcome::Closed {
            log::info!("{} closed by its reader; stopping", self.out.label());
            self.closed = true;
        }
        if let Some(tap) = self.tap.as_mut() {
            tap.mirror(&bytes);
        }
    }

    /// Write a frame of the framed output in its format (text may hold it back, or show nothing).
    fn render(&mut self, frame: &Frame) -> WriteOutcome {
        let mut bytes = vec![];
        if let Err(e) = self.renderer.render(frame, &mut bytes) {
            log::warn!("dropped a frame for {}: {e}", self.out.label());
        }
        if bytes.is_empty() {
            return WriteOutcome::Delivered;
        }
        self.out.write_chunk(&bytes)
    }

    /// The end of the output: what the text format still holds (the last audio summary).
    fn finish_output(&mut self) {
        let mut bytes = vec![];
        self.renderer.finish(&mut bytes);
        if !bytes.is_empty() && !self.closed {
            self.out.write_chunk(&bytes);
        }
    }

    /// A reply is over (all its audio written, or cut off): record it and, on a framed output,
    /// say so right after its last audio.
    fn reply_done(&mut self, played: Played) {
        self.reporter.played(&played);
        if self.playback_reports.is_none() && self.cfg.frames.is_none() {
            return;
        }
        let event = match serde_json::from_value::<Event>(played.record()) {
            Ok(event) => Frame::Event(event),
            Err(e) => return log::error!("reply-played record is not an event: {e}"),
        };
        if self.cfg.frames.is_some() && self.render(&event) == WriteOutcome::Closed {
            self.closed = true;
        }
        if let Some(sink) = &self.playback_reports {
            sink.send(event);
        }
    }

    /// Call control whose audio before it is written: to the line owner (`--line`), and into
    /// a framed output.
    fn line_event(&mut self, event: Event) {
        log::info!("{} (turn {}) to the line owner: the audio before it is written", event.kind, event.turn.unwrap_or(0));
        let frame = Frame::Event(event);
        if self.cfg.frames.is_some() && self.render(&frame) == WriteOutcome::Closed {
            self.closed = true;
        }
        match &self.line {
            Some(sink) => sink.send(frame),
            None if self.cfg.frames.is_none() => log::warn!("call control with no --line link to send it on: dropped"),
            None => {}
        }
    }

    /// Report turns whose audio is all written. Not only at the head of the queue: a reply
    /// that played while an older one was paused ends behind the older one's place, and its
    /// record must not wait for the pause to settle (or be lost when the input ends).
    fn report_finished_turns(&mut self) {
        let mut i = 0;
        while i < self.queue.len() {
            if let Item::Line { turn, .. } = self.queue[i] {
                // Behind every reply up to its turn queued before it: their audio and their end.
                let before = self.queue.range(..i).any(|x| match x {
                    Item::Audio { turn: t, samples, pos, .. } => *t <= turn && *pos < samples.len(),
                    Item::TurnEnd { turn: t } => *t <= turn,
                    Item::Line { .. } => true,
                });
                if before {
                    i += 1;
                    continue;
                }
                let Some(Item::Line { event, .. }) = self.queue.remove(i) else { unreachable!() };
                self.line_event(event);
                continue;
            }
            let Item::TurnEnd { turn } = self.queue[i] else {
                i += 1;
                continue;
            };
            let unwritten = self.queue.range(..i).any(|x| matches!(x, Item::Audio { turn: t, samples, pos, .. } if *t == turn && *pos < samples.len()));
            if unwritten {
                i += 1;
                continue;
            }
            self.queue.remove(i);
            if let Some(played) = self.ledger.finish(turn) {
                self.reply_done(played);
            }
        }
        // Written audio at the head is done with (it is kept for a replay in `played_tail`).
        while matches!(self.queue.front(), Some(Item::Audio { samples, pos, .. }) if *pos >= samples.len()) {
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The player on a hand-moved clock with its output in memory (framed, so each audio frame
    //! carries its turn and each reply ends with its `reply-played` record).
    use super::*;
    use std::sync::Mutex;
    use tgvoice::frame::FrameDecoder;

    const MS: usize = RATE as usize / 1000;
    const FADE: usize = 4 * MS;

    #[derive(Clone)]
    struct ManualClock(Arc<Mutex<Instant>>);

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    /// Every chunk written, with the clock's time it was written at.
    struct MemOut {
        clock: ManualClock,
        written: Arc<Mutex<Vec<(Instant, Vec<u8>)>>>,
    }

    impl AudioOut for MemOut {
        fn write_chunk(&mut self, bytes: &[u8]) -> WriteOutcome {
            self.written.lock().unwrap().push((self.clock.now(), bytes.to_vec()));
            WriteOutcome::Delivered
        }
        fn take_back(&mut self, _max: usize, _align: usize) -> Vec<u8> {
            vec![]
        }
        fn unread_bytes(&mut self, _lead_bytes: usize) -> Option<usize> {
            None // paced by the clock alone
        }
        fn label(&self) -> &str {
            "memory"
        }
        fn dropped_chunks(&self) -> u64 {
            0
        }
    }

    /// Sample `i` of a reply: every value differs within 65536 samples (7919 is odd), so a
    /// sample says where in the reply it came from.
    fn sample(i: usize) -> i16 {
        (i.wrapping_mul(7919) % 65536) as u16 as i16
    }

    fn index_of(v: i16) -> usize {
        (0..65536).find(|&i| sample(i) == v).unwrap()
    }

    struct Rig {
        player: Player,
        clock: ManualClock,
        written: Arc<Mutex<Vec<(Instant, Vec<u8>)>>>,
        barrier: Arc<AtomicU64>,
        start: Instant,
    }

    impl Rig {
        fn new() -> Rig {
            let start = Instant::now();
            let clock = ManualClock(Arc::new(Mutex::new(start)));
            let written = Arc::new(Mutex::new(vec![]));
            let barrier = Arc::new(AtomicU64::new(0));
            let cfg = PlayerConfig {
                frame: 10 * MS,
                lead: Duration::from_millis(60),
                fade: Duration::from_millis(4),
                fill_silence: false,
                unpaced: false,
                frames: Some(Format::Frames),
                pause_timeout: Duration::from_secs(4),
                replay: Duration::from_millis(300),
            };
            let out = MemOut { clock: clock.clone(), written: written.clone() };
            let player = Player::new(cfg, Box::new(out), None, Reporter::new(None, "test"), barrier.clone())
                .with_clock(Box::new(clock.clone()));
            Rig { player, clock, written, barrier, start }
        }

        fn now(&self) -> Duration {
            self.clock.now() - self.start
        }

        /// One reply of one chunk whose audio comes in pieces of (text, ms).
        fn reply(&mut self, turn: u64, pieces: &[(&str, usize)]) {
            let text = pieces.iter().map(|p| p.0).collect::<Vec<_>>().join(" ");
            self.player.handle(PlayerMsg::ChunkQueued { turn, seq: 0, text, trace: TurnTrace::default() });
            let (mut at, mut byte) = (0, 0);
            for (i, (text, ms)) in pieces.iter().enumerate() {
                let samples = (at..at + ms * MS).map(sample).collect();
                at += ms * MS;
                let span = Some(byte..byte + text.len());
                byte += text.len() + 1;
                let last = i + 1 == pieces.len();
                self.player.handle(PlayerMsg::Audio { turn, seq: 0, samples, span, last });
            }
            self.player.handle(PlayerMsg::TurnEnd { turn });
        }

        /// Turn 1's reply of `ms` (one piece, `text`) plays for 1 s, then turn 2 pauses it.
        /// Returns the rig and when the pause came.
        fn paused_after_1s(text: &str, ms: usize) -> (Rig, Duration) {
            let mut r = Rig::new();
            r.reply(1, &[(text, ms)]);
            r.run_for(1000);
            r.player.handle(PlayerMsg::Pause { below: 2 });
            let at = r.now();
            (r, at)
        }

        /// Let the clock run `ms`, the player writing whatever falls due.
        fn run_for(&mut self, ms: u64) {
            let end = self.clock.now() + Duration::from_millis(ms);
            loop {
                match self.player.poll(true) {
                    Poll::Wrote => {}
                    Poll::Stop(_) => panic!("stopped with inputs open"),
                    Poll::Wait(w) => {
                        let now = self.clock.now();
                        if now >= end {
                            return;
                        }
                        *self.clock.0.lock().unwrap() = (now + w).min(end);
                    }
                }
            }
        }

        /// No more input: run until everything queued was written.
        fn finish(&mut self) {
            for _ in 0..100_000 {
                match self.player.poll(false) {
                    Poll::Wrote => {}
                    Poll::Stop(done) => return assert!(done),
                    Poll::Wait(w) => *self.clock.0.lock().unwrap() += w,
                }
            }
            panic!("the player never finished");
        }

        /// The output so far: (time since start, frame).
        fn frames(&self) -> Vec<(Duration, Frame)> {
            let mut out = vec![];
            for (t, bytes) in self.written.lock().unwrap().iter() {
                let mut d = FrameDecoder::new();
                d.push(bytes);
                while let Some(f) = d.next() {
                    out.push((*t - self.start, f.unwrap()));
                }
            }
            out
        }

        /// All audio written for `turn`.
        fn audio(&self, turn: u64) -> Vec<i16> {
            self.frames()
                .into_iter()
                .filter_map(|(_, f)| match f {
                    Frame::Audio(a) if a.turn == turn => Some(a.samples),
                    _ => None,
                })
                .flatten()
                .collect()
        }

        /// Audio samples of `turn` written at or after `t`.
        fn audio_since(&self, turn: u64, t: Duration) -> usize {
            self.frames()
                .iter()
                .map(|(at, f)| match f {
                    Frame::Audio(a) if a.turn == turn && *at >= t => a.samples.len(),
                    _ => 0,
                })
                .sum()
        }

        /// The `reply-played` records written, as JSON.
        fn played(&self) -> Vec<serde_json::Value> {
            self.frames()
                .into_iter()
                .filter_map(|(_, f)| match f {
                    Frame::Event(e) if e.is("reply-played") => Some(serde_json::from_str(&e.to_json_line()).unwrap()),
                    _ => None,
                })
                .collect()
        }

        fn played_of(&self, turn: u64) -> serde_json::Value {
            let mut p: Vec<_> = self.played().into_iter().filter(|v| v["turn"] == turn).collect();
            assert_eq!(p.len(), 1, "one reply-played record for turn {turn}: {p:?}");
            p.remove(0)
        }
    }

    #[test]
    fn writes_in_real_time_keeping_the_lead() {
        let mut r = Rig::new();
        r.reply(1, &[("A three second reply.", 3000)]);
        r.finish();
        let audio: Vec<(Duration, usize)> = r
            .frames()
            .iter()
            .filter_map(|(t, f)| match f {
                Frame::Audio(a) => Some((*t, a.samples.len())),
                _ => None,
            })
            .collect();
        let mut written = 0;
        for (t, n) in &audio {
            written += n;
            let ahead = written as f64 / RATE as f64 - t.as_secs_f64();
            assert!(ahead <= 0.060 + 1e-6, "{ahead:.4} s of audio ahead of real time at {t:?}");
        }
        assert_eq!(written, 3000 * MS);
        let last = audio.last().unwrap().0.as_secs_f64();
        // The last 10 ms frame goes out once it leaves exactly the lead ahead: at 3 s − 60 ms.
        assert!((last - (3.0 - 0.060)).abs() < 0.001, "the last frame went out at {last:.4} s");
        assert_eq!(r.played_of(1)["cancelled"], false);
        assert_eq!(r.played_of(1)["played_ms"], 3000.0);
    }

    #[test]
    fn pause_then_resume_replays_about_300_ms_and_then_the_whole_rest() {
        let (mut r, paused_at) = Rig::paused_after_1s("A two second reply.", 2000);
        let stop = r.audio(1).len();
        r.run_for(1000);
        assert_eq!(r.audio_since(1, paused_at + Duration::from_millis(1)), 0, "silent while paused");
        assert!(r.played().is_empty(), "a paused reply is not over");
        r.player.handle(PlayerMsg::Resume { below: 2 });
        r.finish();
        let all = r.audio(1);
        // Where the replay starts: the first sample past the fade-in says.
        let from = index_of(all[stop + FADE]) - FADE;
        let back = stop - from;
        assert!((300 * MS..=550 * MS).contains(&back), "replayed {} ms", back / MS);
        assert_eq!(all[stop + FADE..], (from + FADE..2000 * MS).map(sample).collect::<Vec<_>>()[..], "the rest, whole");
        let p = r.played_of(1);
        assert_eq!(p["cancelled"], false);
        assert_eq!(p["played_ms"], 2000.0, "the replay is not counted twice");
    }

    #[test]
    fn a_pause_nobody_settles_becomes_a_cancel_after_the_timeout() {
        let (mut r, paused_at) = Rig::paused_after_1s("A five second reply that nobody hears the end of.", 5000);
        r.run_for(3990);
        assert!(r.played().is_empty() && r.barrier.load(Ordering::SeqCst) == 0, "still only paused");
        r.run_for(20);
        let p = r.played_of(1);
        assert_eq!(p["cancelled"], true);
        assert_eq!(r.barrier.load(Ordering::SeqCst), 2, "the barrier rose to the pausing turn");
        r.finish();
        assert_eq!(r.audio_since(1, paused_at + Duration::from_millis(1)), 0);
        assert_eq!(p["played_ms"], r.audio(1).len() as f64 / MS as f64);
    }

    #[test]
    fn a_pause_in_force_when_the_input_ends_is_cancelled_then() {
        let (mut r, paused_at) = Rig::paused_after_1s("A two second reply.", 2000);
        r.finish();
        assert_eq!(r.now(), paused_at, "nothing can lift the pause any more: no waiting it out");
        let p = r.played_of(1);
        assert_eq!(p["cancelled"], true);
        assert_eq!(p["played_ms"], r.audio(1).len() as f64 / MS as f64);
        assert_eq!(r.audio_since(1, paused_at + Duration::from_millis(1)), 0);
    }

    #[test]
    fn cancel_fades_out_within_a_frame_and_reports_what_was_played() {
        let mut r = Rig::new();
        r.reply(1, &[("The first sentence.", 500), ("And the second one is longer than that.", 1500)]);
        r.run_for(1000);
        let before = r.audio(1).len();
        r.barrier.store(2, Ordering::SeqCst);
        r.player.handle(PlayerMsg::Cancel);
        let cancelled_at = r.now();
        r.finish();
        let all = r.audio(1);
        assert_eq!(all.len(), before + FADE, "after the cancel only the fade");
        assert_eq!(r.audio_since(1, cancelled_at + Duration::from_millis(1)), 0);
        for (i, &s) in all[before..].iter().enumerate() {
            let gain = 1.0 - (i + 1) as f64 / FADE as f64;
            assert!((s as f64).abs() <= (sample(before + i) as f64).abs() * gain + 1.0, "fade sample {i}: {s}");
        }
        assert_eq!(*all.last().unwrap(), 0);
        let p = r.played_of(1);
        assert_eq!(p["cancelled"], true);
        assert_eq!(p["played_ms"], all.len() as f64 / MS as f64);
        let text = p["played_text"].as_str().unwrap();
        assert!(text.starts_with("The first sentence. And") && !text.contains("than that."), "{text:?}");
    }

    #[test]
    fn a_newer_turn_plays_while_an_older_one_is_paused() {
        let (mut r, paused_at) = Rig::paused_after_1s("The old reply, two seconds long.", 2000);
        r.reply(2, &[("The answer to the interruption.", 500)]);
        r.run_for(1000);
        assert_eq!(r.audio(2).len(), 500 * MS, "the newer reply played whole");
        assert_eq!(r.audio_since(1, paused_at + Duration::from_millis(1)), 0, "the older one stayed silent");
        // Turn 2's record comes after its audio, not when turn 1's pause is settled.
        let p = r.played_of(2);
        assert_eq!((p["cancelled"].clone(), p["played_ms"].clone()), (false.into(), 500.0.into()));
        r.player.handle(PlayerMsg::Resume { below: 2 });
        r.finish();
        for (turn, ms) in [(1, 2000.0), (2, 500.0)] {
            let p = r.played_of(turn);
            assert_eq!((p["cancelled"].clone(), p["played_ms"].clone()), (false.into(), ms.into()), "turn {turn}");
        }
    }

    /// Where in the output the call-control events are: (time, index among the frames).
    fn line_events(r: &Rig) -> Vec<(Duration, usize, Event)> {
        r.frames()
            .into_iter()
            .enumerate()
            .filter_map(|(i, (t, f))| match f {
                Frame::Event(e) if e.is("hangup") || e.is("transfer") => Some((t, i, e)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn call_control_waits_for_the_audio_before_it_and_follows_its_reply_played() {
        let mut r = Rig::new();
        r.reply(1, &[("Goodbye, take care.", 1500)]);
        r.player.handle(PlayerMsg::Line(Event::new("hangup").with_turn(1).with("reason", "assistant")));
        r.run_for(1000);
        assert!(line_events(&r).is_empty(), "not before the goodbye has played");
        r.run_for(1000);
        let events = line_events(&r);
        assert_eq!(events.len(), 1, "{events:?}");
        let (at, index, e) = &events[0];
        assert_eq!((e.turn, e.get_str("reason")), (Some(1), Some("assistant")));
        // Written with the last of the audio (1.5 s, 60 ms of lead), after every audio frame
        // of the reply and its reply-played.
        assert!(*at >= Duration::from_millis(1440), "at {at:?}");
        assert_eq!(r.audio(1).len(), 1500 * MS);
        let frames = r.frames();
        let played = frames.iter().position(|(_, f)| matches!(f, Frame::Event(e) if e.is("reply-played"))).unwrap();
        assert!(played < *index, "reply-played {played}, hangup {index}");
        assert!(frames[*index..].iter().all(|(_, f)| !matches!(f, Frame::Audio(_))));
    }

    #[test]
    fn call_control_goes_with_a_cancelled_reply_and_at_a_call_boundary() {
        // The caller cut the goodbye off: they did not hear it, the call goes on.
        let mut r = Rig::new();
        r.reply(1, &[("Goodbye.", 2000)]);
        r.player.handle(PlayerMsg::Line(Event::new("hangup").with_turn(1)));
        r.run_for(500);
        r.barrier.store(2, Ordering::SeqCst);
        r.player.handle(PlayerMsg::Cancel);
        r.reply(2, &[("Sure, go on.", 300)]);
        r.run_for(3000);
        assert!(line_events(&r).is_empty());
        assert_eq!(r.audio(2).len(), 300 * MS, "the next reply plays");

        // A new call (or the call's end) drops one not written yet.
        let mut r = Rig::new();
        r.reply(1, &[("Putting you through.", 1000)]);
        r.player.handle(PlayerMsg::Line(Event::new("transfer").with_turn(1).with("to", "+15551230000")));
        r.player.handle(PlayerMsg::DropLine);
        r.run_for(2000);
        assert!(line_events(&r).is_empty());
    }
}

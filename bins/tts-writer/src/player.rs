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

use crate::report::{spoken_prefix, Played, Reporter};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tgvoice::fifo::{FifoWriter, Tap, WriteOutcome};
use tgvoice::frame::encode;
use tgvoice::{AudioFrame, Event, Frame, TurnTrace};

pub const RATE: u32 = tgvoice::audio::RATE;
/// The most a late writer catches up (see [`Player::write_samples`]).
const MAX_DEBT: Duration = Duration::from_millis(100);

/// Messages to the player, in order.
pub enum PlayerMsg {
    /// A reply chunk was accepted for synthesis (text for the played-text report).
    ChunkQueued { turn: u64, seq: u64, text: String, trace: TurnTrace },
    /// Synthesised audio at 48 kHz; `text` is what it says if the engine knows (a sentence);
    /// `last` marks the chunk's final piece.
    Audio { turn: u64, seq: u64, samples: Vec<i16>, text: Option<String>, last: bool },
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
    /// after the last audio of each reply — instead of raw PCM.
    pub frames: bool,
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
}

#[derive(Default)]
struct ChunkStats {
    text: String,
    /// The chunk's audio in order: (text it speaks if known, samples).
    segments: Vec<(Option<String>, usize)>,
    synthesized: usize,
    played: usize,
    complete: bool,
}

#[derive(Default)]
struct TurnStats {
    trace: TurnTrace,
    first_audio_done: bool,
    chunks: BTreeMap<u64, ChunkStats>,
}

pub struct Player {
    cfg: PlayerConfig,
    out: FifoWriter,
    tap: Option<Tap>,
    reporter: Reporter,
    barrier: Arc<AtomicU64>,
    queue: VecDeque<Item>,
    turns: HashMap<u64, TurnStats>,
    play_head: Instant,
    /// The fd whose pipe size we set, so it is set once per connection.
    sized_fd: Option<i32>,
    pipe_ok: bool,
    closed: bool,
    /// Largest FIFO backlog seen (bytes), for the log and tests.
    pub max_unread: usize,
    /// Framed output: the turn of the audio being written, and the running sample index.
    out_turn: u64,
    out_index: u64,
    paused: Option<Pause>,
    /// The most recent written audio as (turn, seq, samples), oldest first.
    played_tail: VecDeque<(u64, u64, Vec<i16>)>,
}

impl Player {
    pub fn new(cfg: PlayerConfig, out: FifoWriter, tap: Option<Tap>, reporter: Reporter, barrier: Arc<AtomicU64>) -> Self {
        Player {
            cfg,
            out,
            tap,
            reporter,
            barrier,
            queue: VecDeque::new(),
            turns: HashMap::new(),
            play_head: Instant::now(),
            sized_fd: None,
            pipe_ok: true,
            closed: false,
            max_unread: 0,
            out_turn: 0,
            out_index: 0,
            paused: None,
            played_tail: VecDeque::new(),
        }
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
            if self.closed {
                return false;
            }
            if let Some(p) = self.paused {
                if Instant::now() >= p.until || !inputs_open {
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
                if self.out.dropped_chunks > 0 {
                    log::info!("dropped {} chunks of output while no reader was connected", self.out.dropped_chunks);
                }
                log::debug!("largest output backlog seen: {} bytes", self.max_unread);
                return true;
            }
            let now = Instant::now();
            if !has_audio && self.play_head < now {
                self.play_head = now; // idle: the next reply starts at once
            }
            let mut wait = if has_audio || self.cfg.fill_silence { self.time_until_writable(now) } else { Some(Duration::from_millis(500)) };
            if let (Some(p), Some(w)) = (self.paused, wait) {
                wait = Some(w.min(p.until.saturating_duration_since(now)));
            }
            match wait {
                Some(w) if w > Duration::ZERO => {
                    if inputs_open {
                        match rx.recv_timeout(w) {
                            Ok(m) => self.handle(m),
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => inputs_open = false,
                        }
                    } else {
                        std::thread::sleep(w);
                    }
                }
                _ => {
                    if has_audio {
                        self.write_audio_frame();
                    } else if self.cfg.fill_silence {
                        self.write_samples(&vec![0i16; self.cfg.frame]);
                    }
                }
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
        if let Some(unread) = self.unread_bytes() {
            self.max_unread = self.max_unread.max(unread);
            if unread + self.cfg.frame * 2 > self.lead_bytes() {
                // The reader is behind real time (or just connected): wait for it.
                return Some(Duration::from_millis(2));
            }
        }
        None
    }

    /// Bytes written to the FIFO that its reader has not read yet (Linux: FIONREAD on the
    /// write end). Also shrinks the pipe buffer once per connection.
    fn unread_bytes(&mut self) -> Option<usize> {
        let fd = self.out.file()?.as_raw_fd();
        if self.sized_fd != Some(fd) {
            self.sized_fd = Some(fd);
            let want = self.lead_bytes().next_power_of_two().max(4096) as libc::c_int;
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

    fn handle(&mut self, m: PlayerMsg) {
        let barrier = self.barrier.load(Ordering::SeqCst);
        match m {
            PlayerMsg::ChunkQueued { turn, seq, text, trace } => {
                if turn < barrier {
                    return;
                }
                let t = self.turns.entry(turn).or_default();
                for (k, v) in trace.0 {
                    t.trace.mark(&k, v);
                }
                t.chunks.entry(seq).or_default().text = text;
            }
            PlayerMsg::Audio { turn, seq, samples, text, last } => {
                if turn < barrier {
                    return;
                }
                if let Some(c) = self.turns.get_mut(&turn).and_then(|t| t.chunks.get_mut(&seq)) {
                    match (text, c.segments.last_mut()) {
                        (None, Some((Some(_), len))) => *len += samples.len(), // resampler tail
                        (text, _) => c.segments.push((text, samples.len())),
                    }
                    c.synthesized += samples.len();
                    c.complete |= last;
                }
                if !samples.is_empty() {
                    self.queue.push_back(Item::Audio { turn, seq, samples, pos: 0 });
                }
            }
            PlayerMsg::TurnEnd { turn } => {
                if turn >= barrier {
                    self.queue.push_back(Item::TurnEnd { turn });
                } else {
                    self.turns.remove(&turn);
                }
            }
            PlayerMsg::Cancel => self.cancel(barrier),
            PlayerMsg::Pause { below } => self.pause(below),
            PlayerMsg::Resume { below } => self.resume(below),
        }
    }

    fn pause(&mut self, below: u64) {
        let until = Instant::now() + self.cfg.pause_timeout;
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
        self.turns.keys().any(|t| *t < below)
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
        self.play_head = Instant::now();
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
            if !which(turn) || !self.turns.contains_key(&turn) {
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
            if let Some(c) = self.turns.get_mut(&turn).and_then(|t| t.chunks.get_mut(&seq)) {
                c.played = c.played.saturating_sub(piece.len());
            }
            self.queue.push_front(Item::Audio { turn, seq, samples: piece, pos: 0 });
        }
        n - left
    }

    /// Silence replies of turns below `below` now: take back what the output pipe still holds
    /// of them (it has not been heard), then write a short fade-out from where the listener
    /// is. Returns the samples faded (0 when nothing of those turns was playing).
    fn silence_below(&mut self, below: u64) -> usize {
        let playing = self.played_tail.back().is_some_and(|(turn, _, _)| *turn < below)
            && self.play_head + Duration::from_millis(20) > Instant::now();
        if !playing {
            return 0;
        }
        if !self.cfg.frames {
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
            self.count_played(turn, seq, n);
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
            Item::Audio { turn, .. } | Item::TurnEnd { turn } => *turn >= barrier,
        });
        let mut cut: Vec<u64> = self.turns.keys().copied().filter(|t| *t < barrier).collect();
        cut.sort();
        for turn in cut {
            let stats = self.turns.remove(&turn).expect("listed");
            self.reply_done(played_of(turn, &stats, true));
        }
        self.played_tail.retain(|(turn, _, _)| *turn >= barrier);
        log::debug!("cancel below turn {barrier}: dropped {} queued items, faded {faded} samples", before - self.queue.len());
    }

    fn count_played(&mut self, turn: u64, seq: u64, n: usize) {
        if let Some(t) = self.turns.get_mut(&turn) {
            t.chunks.entry(seq).or_default().played += n;
        }
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
            }
        }
        while matches!(self.queue.front(), Some(Item::Audio { samples, pos, .. }) if *pos >= samples.len()) {
            self.queue.pop_front();
        }
        if frame.is_empty() {
            return;
        }
        if let Some(turn) = first_turn {
            if let Some(t) = self.turns.get_mut(&turn) {
                if !t.first_audio_done {
                    t.first_audio_done = true;
                    t.trace.mark_now(tgvoice::event::trace_key::FIRST_AUDIO);
                    self.reporter.first_audio(turn, &t.trace);
                }
            }
        }
        self.out_turn = first_turn.unwrap_or(0);
        self.write_samples(&frame);
        let mut at = 0;
        for (turn, seq, n) in played {
            self.count_played(turn, seq, n);
            self.keep_for_replay(turn, seq, &frame[at..at + n]);
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
        let now = Instant::now();
        if let Some(floor) = now.checked_sub(MAX_DEBT) {
            if self.play_head < floor {
                self.play_head = floor;
            }
        }
        self.play_head += Duration::from_secs_f64(samples.len() as f64 / RATE as f64);
        let outcome = if self.cfg.frames {
            let frame = Frame::Audio(AudioFrame {
                sample_rate: RATE,
                channels: 1,
                turn: std::mem::take(&mut self.out_turn),
                capture_us: tgvoice::clock::now_us(),
                sample_index: self.out_index,
                samples: samples.to_vec(),
            });
            self.out_index += samples.len() as u64;
            self.out.write_chunk(&encode(&frame))
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

    /// A reply is over (all its audio written, or cut off): record it and, on a framed output,
    /// say so right after its last audio.
    fn reply_done(&mut self, played: Played) {
        self.reporter.played(&played);
        if self.cfg.frames {
            match serde_json::from_value::<Event>(played.record()) {
                Ok(event) => {
                    if self.out.write_chunk(&encode(&Frame::Event(event))) == WriteOutcome::Closed {
                        self.closed = true;
                    }
                }
                Err(e) => log::error!("reply-played record is not an event: {e}"),
            }
        }
    }

    /// Report turns whose end marker reached the head of the queue (all their audio written).
    fn report_finished_turns(&mut self) {
        while let Some(Item::TurnEnd { turn }) = self.queue.front() {
            let turn = *turn;
            self.queue.pop_front();
            if let Some(stats) = self.turns.remove(&turn) {
                self.reply_done(played_of(turn, &stats, false));
            }
        }
    }
}

fn played_of(turn: u64, stats: &TurnStats, cancelled: bool) -> Played {
    let ms = |n: usize| n as f64 * 1000.0 / RATE as f64;
    let mut played_text = vec![];
    let mut text = vec![];
    let (mut played, mut synthesized) = (0, 0);
    for c in stats.chunks.values() {
        played += c.played;
        synthesized += c.synthesized;
        text.push(c.text.clone());
        if !c.segments.is_empty() && c.segments.iter().all(|(t, _)| t.is_some()) {
            // The engine said what each piece speaks: whole pieces played, plus part of one.
            let mut start = 0;
            for (t, len) in &c.segments {
                let t = t.as_deref().unwrap_or_default();
                let fraction = if *len == 0 { 1.0 } else { (c.played.saturating_sub(start)) as f64 / *len as f64 };
                let p = spoken_prefix(t, fraction.min(1.0));
                if !p.is_empty() {
                    played_text.push(p);
                }
                start += len;
                if c.played < start {
                    break;
                }
            }
            continue;
        }
        let fraction = if c.complete && c.synthesized > 0 {
            c.played as f64 / c.synthesized as f64
        } else if c.played > 0 && c.synthesized > 0 {
            // still being synthesised: what was played of what exists is an upper bound
            (c.played as f64 / c.synthesized as f64).min(0.99)
        } else {
            0.0
        };
        let p = spoken_prefix(&c.text, fraction);
        if !p.is_empty() {
            played_text.push(p);
        }
    }
    Played {
        turn,
        cancelled,
        played_ms: ms(played),
        synthesized_ms: ms(synthesized),
        played_text: played_text.join(" "),
        text: text.join(" "),
        trace: stats.trace.clone(),
    }
}

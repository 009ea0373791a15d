//! The turn controller: turns input events and text lines into synthesis jobs, and keeps the
//! cancel barrier — every turn below it is dead: its queued chunks are dropped, synthesis in
//! progress is abandoned and the player fades out within one frame.
//!
//! * `speech-onset {turn: N}`, `speech-start {turn: N}` — the caller may be talking: replies of
//!   turns < N pause (silent at once, place kept, audio still taken). `resume {turn: N}` or
//!   `speech-void {turn: N}` lift that pause (a false alarm); a `cancel` ends it; a pause
//!   nobody lifts becomes a cancel after `--pause-timeout`. With `--pause-timeout 0`,
//!   `speech-start` stops replies of turns < N at once and the onset events are ignored.
//! * `cancel {turn: T}` — stop reply T (and older); `cancel {}` — stop whatever is in progress
//!   (the barrier rises to just above the newest turn seen, never further: a flood of them
//!   cannot mute the next reply).
//! * `reply-ahead {turn, seq, text}` — a chunk of a reply llm-relay holds: spoken now and
//!   kept (`--speak-ahead`); the `reply-chunk` with the same turn, seq and text plays it.
//! * `call-start {greeting}` — speak the greeting (not on a `rejoin`).
//! * `call-end` — stop everything.
//! * `hangup`, `transfer` — call control for the line owner: passed on in order, written once
//!   the audio before it is (fifo-layout.md "Call control").
//! * A turn id far ahead of the clock (`Event::plausible_turn`) is bad input: ignored, logged.
//! * plain text lines — each line is a reply of its own (turns 1, 2, …).

use crate::input::Incoming;
use crate::player::PlayerMsg;
use crate::synth::{Asked, SynthJob};
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tgvoice::event::kind;
use tgvoice::log::LogLimit;
use tgvoice::{Event, TurnTrace};

pub struct TurnController {
    jobs: Option<Sender<SynthJob>>,
    player: Option<Sender<PlayerMsg>>,
    barrier: Arc<AtomicU64>,
    latest_turn: u64,
    text_turn: u64,
    log: LogLimit,
    /// Barge-in pauses first (false: speech-start cancels at once, as before pausing existed).
    pause_first: bool,
    /// Act on `reply-ahead` (false: ignore it, speak each chunk when it is asked for).
    pub speak_ahead: bool,
    /// Shared with the synthesis thread: the newest chunk asked for.
    pub asked: Asked,
}

impl TurnController {
    pub fn new(jobs: Sender<SynthJob>, player: Sender<PlayerMsg>, barrier: Arc<AtomicU64>, pause_first: bool) -> Self {
        TurnController {
            jobs: Some(jobs),
            player: Some(player),
            barrier,
            latest_turn: 0,
            text_turn: 0,
            log: LogLimit::new(),
            pause_first,
            speak_ahead: true,
            asked: Asked::default(),
        }
    }

    fn tell_player(&self, m: PlayerMsg) {
        if let Some(p) = &self.player {
            let _ = p.send(m);
        }
    }

    /// Handle one input item (on the input thread). At the end of input the job and player
    /// senders are dropped, so the pipeline drains what is queued and stops.
    pub fn handle(&mut self, item: Incoming) {
        match item {
            Incoming::Event(e) => self.event(e),
            Incoming::Line(text) => self.line(text),
            Incoming::WriterGone => {}
            Incoming::End => {
                self.jobs = None;
                self.player = None;
            }
        }
    }

    fn job(&self, job: SynthJob) {
        if let Some(j) = &self.jobs {
            let _ = j.send(job);
        }
    }

    fn barrier(&self) -> u64 {
        self.barrier.load(Ordering::SeqCst)
    }

    fn event(&mut self, mut e: Event) {
        if let Err(t) = e.plausible_turn() {
            let kind = e.kind.clone();
            self.log.log(log::Level::Warn, "implausible turn", format_args!(
                "ignoring {kind} for turn {t}, which is far ahead of the clock (turn ids are onset times in ms)"
            ));
            if kind != kind::REPLY_CHUNK && kind != kind::REPLY_END {
                return;
            }
            e.turn = None; // text to speak stays speakable; its turn is the current one
        }
        match e.kind.as_str() {
            kind::REPLY_CHUNK => {
                let turn = e.turn.unwrap_or_else(|| self.latest_turn.max(self.barrier()));
                self.latest_turn = self.latest_turn.max(turn);
                let seq = e.get_u64("seq").unwrap_or(0);
                let text = e.text.clone().unwrap_or_default();
                if turn < self.barrier() {
                    log::debug!("dropping chunk {seq} of cancelled turn {turn}");
                    return;
                }
                if text.trim().is_empty() {
                    return;
                }
                self.asked.set(turn, seq, &text, &e.trace);
                self.job(SynthJob::Chunk { turn, seq, text, trace: e.trace });
            }
            kind::REPLY_AHEAD if self.speak_ahead => {
                let (Some(turn), Some(text)) = (e.turn, e.text.clone()) else { return };
                if turn >= self.barrier() && !text.trim().is_empty() {
                    self.job(SynthJob::Ahead { turn, seq: e.get_u64("seq").unwrap_or(0), text });
                }
            }
            kind::REPLY_END => {
                let turn = e.turn.unwrap_or(self.latest_turn);
                if e.get_bool("cancelled") == Some(true) {
                    self.cancel_below(turn + 1, "reply-end cancelled");
                }
                self.job(SynthJob::End { turn });
            }
            kind::SPEECH_START => {
                let turn = e.turn.unwrap_or(self.latest_turn + 1);
                self.latest_turn = self.latest_turn.max(turn);
                if self.pause_first {
                    self.tell_player(PlayerMsg::Pause { below: turn });
                } else {
                    self.cancel_below(turn, "speech-start");
                }
            }
            // The onset's turn is not "seen" yet (it may be void): a `cancel {}` must not reach it.
            kind::SPEECH_ONSET if self.pause_first => {
                if let Some(turn) = e.turn {
                    self.tell_player(PlayerMsg::Pause { below: turn });
                }
            }
            kind::SPEECH_VOID | kind::RESUME if self.pause_first => {
                if let Some(turn) = e.turn {
                    self.tell_player(PlayerMsg::Resume { below: turn });
                }
            }
            kind::CANCEL => {
                let barrier = e.turn.unwrap_or(self.latest_turn) + 1;
                self.cancel_below(barrier, "cancel");
            }
            kind::CALL_END => {
                self.cancel_below(self.latest_turn + 1, "call-end");
                self.tell_player(PlayerMsg::DropLine);
            }
            "hangup" | "transfer" => {
                let turn = e.turn.unwrap_or(self.latest_turn);
                if turn < self.barrier() {
                    log::info!("{} after cancelled turn {turn}: dropped (the caller did not hear that reply)", e.kind);
                    return;
                }
                e.turn = Some(turn);
                self.job(SynthJob::Line(e));
            }
            kind::CALL_START => {
                self.tell_player(PlayerMsg::DropLine);
                log::info!("call {} started", e.get_str("call").unwrap_or("?"));
                if let Some(greeting) = e.get_str("greeting").filter(|g| !g.trim().is_empty()) {
                    if e.get_bool("rejoin") != Some(true) {
                        self.greet(greeting.to_string());
                    }
                }
            }
            other => log::debug!("ignoring event {other:?} (the output is raw audio; nothing to forward it to)"),
        }
    }

    fn line(&mut self, text: String) {
        self.text_turn = self.text_turn.max(self.latest_turn).max(self.barrier()) + 1;
        let turn = self.text_turn;
        self.latest_turn = turn;
        let mut trace = TurnTrace::default();
        trace.mark_now(tgvoice::event::trace_key::FIRST_CHUNK);
        self.job(SynthJob::Chunk { turn, seq: 0, text, trace });
        self.job(SynthJob::End { turn });
    }

    /// Speak the call's greeting on pickup. Its turn id is "now" in ms, the scale of vadseg's
    /// turn ids (the onset time), so the caller's first speech-start cuts it like any reply.
    fn greet(&mut self, text: String) {
        let turn = (tgvoice::clock::now_us() / 1000).max(self.barrier());
        self.latest_turn = self.latest_turn.max(turn);
        let mut trace = TurnTrace::default();
        trace.mark_now(tgvoice::event::trace_key::FIRST_CHUNK);
        log::info!("greeting the caller: {text:?}");
        self.job(SynthJob::Chunk { turn, seq: 0, text, trace });
        self.job(SynthJob::End { turn });
    }

    /// Raise the barrier to `barrier` (never lowers it) and tell the player at once.
    fn cancel_below(&mut self, barrier: u64, why: &str) {
        let old = self.barrier.fetch_max(barrier, Ordering::SeqCst);
        if barrier > old {
            self.log.log(log::Level::Info, "cancel", format_args!("{why}: stopping replies of turns < {barrier}"));
            if let Some(p) = &self.player {
                let _ = p.send(PlayerMsg::Cancel);
            }
        }
    }
}

//! [`SpeechSegmenter`]: the turn-taking state machine. It sees 16 kHz audio one Silero chunk
//! (512 samples, 32 ms) at a time together with that chunk's speech probability, and decides
//! when a turn starts (after the minimum speech duration), which audio belongs to it (with
//! pre-roll before the first voiced chunk and a little post-roll after the last), when it ends
//! (after the end-of-turn silence), and where an over-long monologue is cut.
//!
//! It knows nothing about ONNX, frames or FIFOs, so it is unit-tested with made-up
//! probabilities.

use std::collections::VecDeque;

use crate::endpoint::{EotReason, Endpointer, PauseStep, TurnModelConfig};

pub const RATE: u32 = 16_000;
/// Silero's chunk at 16 kHz.
pub const CHUNK: usize = 512;
/// A pending (not yet confirmed) speech run is abandoned after this much non-speech. Short
/// words are separated by pauses of 100–250 ms ("Thank you, that…"); a shorter limit drops
/// the first word of such a turn (measured: see README).
pub const PENDING_GAP_MS: u32 = 300;
/// A run opened by a level onset (the input got loud, [`crate::onset`]) that Silero has not
/// called speech within this long is void. The "s" of "Stop." took ~150 ms to become speech for
/// Silero; a click or a knock should cost the reply no more than this pause.
pub const LEVEL_ONSET_WAIT_US: u64 = 240_000;
/// Once a segment is this close to `max_segment`, it is cut at the first non-speech chunk.
pub const SOFT_CUT_MARGIN_MS: u32 = 3_000;

/// Tunables (see README "Defaults").
#[derive(Debug, Clone)]
pub struct SegmenterConfig {
    /// A chunk is speech when its probability is at least this.
    pub threshold: f32,
    /// Speech must last this long before `speech-start` is emitted (false barge-in guard).
    pub min_speech_ms: u32,
    /// This much silence after the last speech chunk ends the turn.
    pub eot_silence_ms: u32,
    /// Audio kept before the first speech chunk.
    pub pre_roll_ms: u32,
    /// Silence kept after the last speech chunk.
    pub post_roll_ms: u32,
    /// Longest segment; longer speech is cut into several turns (no audio lost).
    pub max_segment_ms: u32,
    /// End of turn by meaning (endpoint.rs); None: silence alone.
    pub turn_model: Option<TurnModelConfig>,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            threshold: 0.5,
            min_speech_ms: 128,
            eot_silence_ms: 600,
            pre_roll_ms: 300,
            post_roll_ms: 200,
            max_segment_ms: 25_000,
            turn_model: None,
        }
    }
}

impl SegmenterConfig {
    /// Below this a chunk counts as silence (hysteresis, as in Silero's reference code).
    pub fn neg_threshold(&self) -> f32 {
        (self.threshold - 0.15).max(0.01)
    }
}

/// One 32 ms block of the 16 kHz stream.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Index of the first sample in vadseg's 16 kHz stream.
    pub index: u64,
    /// Capture time of the first sample (µs since the epoch).
    pub capture_us: u64,
    pub samples: Vec<i16>,
}

impl Chunk {
    pub fn end_index(&self) -> u64 {
        self.index + self.samples.len() as u64
    }
    /// Capture time of the last sample.
    pub fn last_sample_us(&self) -> u64 {
        self.capture_us + (self.samples.len().saturating_sub(1) as u64 * 1_000_000 / RATE as u64)
    }
}

/// What the segmenter decided.
#[derive(Debug, Clone)]
pub enum Decision {
    /// The first voiced chunk while no turn is open: maybe the caller, maybe a cough. The
    /// turn id is reserved now; exactly one `Start` or `Void` with it follows.
    Onset { turn: u64, onset_us: u64, decided_us: u64 },
    /// The voiced run of that onset died (or the stream broke off) before it became a turn.
    Void { turn: u64, decided_us: u64 },
    /// Speech has lasted the minimum duration: a turn starts (barge-in signal).
    /// `decided_us`: capture time of the last sample the decision saw (for latency traces).
    Start { turn: u64, speech_start_us: u64, continues: Option<u64>, decided_us: u64 },
    /// Audio of the current turn, in order.
    Audio { turn: u64, chunk: Chunk },
    /// The turn ended: end-of-turn silence passed, or the segment was `cut` at max length
    /// (then a `Start` with `continues` follows at once). `p_complete`: the turn model's answer.
    End { turn: u64, speech_start_us: u64, speech_end_us: u64, cut: bool, decided_us: u64, reason: EotReason, p_complete: Option<f32> },
    /// Ask the turn model whether the turn is complete, given the segment's 16 kHz audio from
    /// stream index `from_index` up to `to_index` (exclusive; the pause so far included).
    /// Answer with [`SpeechSegmenter::turn_verdict`].
    AskTurnModel { turn: u64, pause: u64, from_index: u64, to_index: u64 },
}

#[derive(Debug)]
enum State {
    Idle,
    /// Speech seen, not yet long enough. `chunks` holds the pre-roll and everything since.
    Pending { turn: u64, onset_us: u64, voiced_ms: u32, gap_ms: u32, chunks: Vec<Chunk> },
    Speaking(Turn),
}

#[derive(Debug)]
struct Turn {
    turn: u64,
    speech_start_us: u64,
    /// Capture time of the last sample of the last speech chunk.
    last_voiced_us: u64,
    /// First sample index of this segment (for the max-length cut).
    first_index: u64,
    /// Silence since the last speech chunk; 0 = not in a pause.
    silence_ms: u32,
    /// Chunks of the current pause, held back until we know whether the turn goes on.
    held: Vec<Chunk>,
}

pub struct SpeechSegmenter {
    cfg: SegmenterConfig,
    state: State,
    /// The last `pre_roll_ms` of audio while idle.
    recent: VecDeque<Chunk>,
    last_turn: u64,
    /// Index just past the last sample emitted in any turn (pre-roll never re-sends audio).
    emitted_until: u64,
    /// Capture time just past the last emitted sample.
    emitted_end_us: u64,
    /// Capture time of the last sample seen.
    decided_us: u64,
    chunk_ms: u32,
    endpoint: Endpointer,
}

impl SpeechSegmenter {
    pub fn new(cfg: SegmenterConfig) -> Self {
        SpeechSegmenter {
            endpoint: Endpointer::new(cfg.eot_silence_ms, cfg.turn_model.clone()),
            cfg,
            state: State::Idle,
            recent: VecDeque::new(),
            last_turn: 0,
            emitted_until: 0,
            emitted_end_us: 0,
            decided_us: 0,
            chunk_ms: (CHUNK as u32 * 1000) / RATE,
        }
    }

    /// Feed one chunk and its speech probability; decisions are appended to `out`.
    pub fn push(&mut self, chunk: Chunk, prob: f32, out: &mut Vec<Decision>) {
        self.decided_us = chunk.last_sample_us();
        let speech = prob >= self.cfg.threshold;
        let silence = prob < self.cfg.neg_threshold();
        let chunk_ms = self.chunk_ms;
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => {
                if speech {
                    let onset_us = chunk.capture_us;
                    self.open_run(onset_us, self.decided_us, Some(chunk), out);
                    self.confirm_if_long_enough(out);
                } else {
                    self.remember(chunk);
                }
            }
            State::Pending { turn, onset_us, mut voiced_ms, mut gap_ms, mut chunks } => {
                let heard_for_us = chunk.last_sample_us().saturating_sub(onset_us);
                chunks.push(chunk);
                if speech {
                    voiced_ms += chunk_ms;
                    gap_ms = 0;
                } else if silence || gap_ms > 0 {
                    gap_ms += chunk_ms;
                }
                let loud_but_no_speech = voiced_ms == 0 && heard_for_us >= LEVEL_ONSET_WAIT_US;
                if gap_ms >= PENDING_GAP_MS || loud_but_no_speech {
                    // A click, a cough, a burst of noise: not a turn. Keep the tail as pre-roll.
                    out.push(Decision::Void { turn, decided_us: self.decided_us });
                    for c in chunks {
                        self.remember(c);
                    }
                } else {
                    self.state = State::Pending { turn, onset_us, voiced_ms, gap_ms, chunks };
                    self.confirm_if_long_enough(out);
                }
            }
            State::Speaking(mut t) => {
                if speech {
                    if !t.held.is_empty() && self.segment_ms(&t) >= self.soft_cut_ms() {
                        // Near the maximum length: cut in the pause that just ended rather
                        // than mid-word later. The pause opens the next piece.
                        self.cut(&mut t, out);
                    }
                    t.last_voiced_us = chunk.last_sample_us();
                    t.silence_ms = 0;
                    self.endpoint.speech();
                    for c in std::mem::take(&mut t.held) {
                        self.emit_audio(&mut t, c, out);
                    }
                    self.emit_audio(&mut t, chunk, out);
                    self.cut_if_long(&mut t, prob, out);
                } else if silence || t.silence_ms > 0 {
                    // A pause: hold its audio until we know whether the turn goes on.
                    t.silence_ms += chunk_ms;
                    let to_index = chunk.end_index();
                    t.held.push(chunk);
                    match self.endpoint.step(t.silence_ms) {
                        PauseStep::End(reason) => return self.end_turn(t, reason, out),
                        PauseStep::Ask { pause } => {
                            out.push(Decision::AskTurnModel { turn: t.turn, pause, from_index: t.first_index, to_index })
                        }
                        PauseStep::Wait => {}
                    }
                } else {
                    // Between the two thresholds, not in a pause: still part of the speech.
                    self.emit_audio(&mut t, chunk, out);
                    self.cut_if_long(&mut t, prob, out);
                }
                self.state = State::Speaking(t);
            }
        }
    }

    /// The input just got loud (a level onset at capture time `onset_us`, before Silero has
    /// seen a whole chunk of it): while no turn is open, this is the onset. The run becomes a
    /// turn only if Silero then hears speech; otherwise it is void after
    /// [`LEVEL_ONSET_WAIT_US`].
    /// `decided_us`: capture time of the last sample the cue saw.
    pub fn level_onset(&mut self, onset_us: u64, decided_us: u64, out: &mut Vec<Decision>) {
        if matches!(self.state, State::Idle) {
            self.open_run(onset_us, decided_us, None, out);
        }
    }

    /// Idle → Pending: the onset reserves the turn id, the pre-roll not yet sent opens the run,
    /// then Silero's first voiced chunk (counted as voiced) if that is what opened it.
    fn open_run(&mut self, onset_us: u64, decided_us: u64, voiced: Option<Chunk>, out: &mut Vec<Decision>) {
        let until = self.emitted_until;
        let mut chunks: Vec<Chunk> = self.recent.drain(..).filter(|c| c.index >= until).collect();
        let voiced_ms = if voiced.is_some() { self.chunk_ms } else { 0 };
        chunks.extend(voiced);
        let turn = self.new_turn_id(onset_us);
        out.push(Decision::Onset { turn, onset_us, decided_us });
        self.state = State::Pending { turn, onset_us, voiced_ms, gap_ms: 0, chunks };
    }

    /// End of input (or of the call): close an open turn; a pending one is dropped.
    pub fn finish(&mut self, out: &mut Vec<Decision>) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Speaking(t) => self.end_turn(t, EotReason::InputEnd, out),
            State::Pending { turn, .. } => out.push(Decision::Void { turn, decided_us: self.decided_us }),
            State::Idle => {}
        }
        self.recent.clear();
    }

    fn remember(&mut self, chunk: Chunk) {
        self.recent.push_back(chunk);
        let keep = self.cfg.pre_roll_ms.div_ceil(self.chunk_ms) as usize;
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
    }

    fn confirm_if_long_enough(&mut self, out: &mut Vec<Decision>) {
        let State::Pending { voiced_ms, .. } = &self.state else { return };
        if *voiced_ms < self.cfg.min_speech_ms {
            return;
        }
        let State::Pending { turn, onset_us, chunks, .. } = std::mem::replace(&mut self.state, State::Idle) else {
            unreachable!()
        };
        out.push(Decision::Start { turn, speech_start_us: onset_us, continues: None, decided_us: self.decided_us });
        let first_index = chunks.first().map(|c| c.index).unwrap_or(0);
        let mut t = Turn {
            turn,
            speech_start_us: onset_us,
            last_voiced_us: chunks.last().map(|c| c.last_sample_us()).unwrap_or(onset_us),
            first_index,
            silence_ms: 0,
            held: vec![],
        };
        self.endpoint.speech();
        for c in chunks {
            self.emit_audio(&mut t, c, out);
        }
        self.state = State::Speaking(t);
    }

    /// Turn ids: the onset capture time in ms since the epoch, kept strictly increasing, so they
    /// stay unique across restarts of vadseg (fifo-layout.md).
    fn new_turn_id(&mut self, onset_us: u64) -> u64 {
        let id = (onset_us / 1000).max(self.last_turn + 1);
        self.last_turn = id;
        id
    }

    fn emit_audio(&mut self, t: &mut Turn, chunk: Chunk, out: &mut Vec<Decision>) {
        self.emitted_until = chunk.end_index();
        self.emitted_end_us = chunk.capture_us + chunk.samples.len() as u64 * 1_000_000 / RATE as u64;
        out.push(Decision::Audio { turn: t.turn, chunk });
    }

    fn segment_ms(&self, t: &Turn) -> u32 {
        ((self.emitted_until.saturating_sub(t.first_index)) * 1000 / RATE as u64) as u32
    }

    fn soft_cut_ms(&self) -> u32 {
        self.cfg.max_segment_ms.saturating_sub(SOFT_CUT_MARGIN_MS.min(self.cfg.max_segment_ms / 4))
    }

    /// Near the maximum length, cut at the first chunk below the threshold; at the maximum,
    /// cut wherever we are.
    fn cut_if_long(&mut self, t: &mut Turn, prob: f32, out: &mut Vec<Decision>) {
        let len = self.segment_ms(t);
        if len >= self.cfg.max_segment_ms || (len >= self.soft_cut_ms() && prob < self.cfg.threshold) {
            self.cut(t, out);
        }
    }

    /// Close the current piece and open the next turn right after it: every sample stays in
    /// exactly one segment.
    fn cut(&mut self, t: &mut Turn, out: &mut Vec<Decision>) {
        let decided_us = self.decided_us;
        out.push(Decision::End {
            turn: t.turn,
            speech_start_us: t.speech_start_us,
            speech_end_us: t.last_voiced_us,
            cut: true,
            decided_us,
            reason: EotReason::MaxLength,
            p_complete: None,
        });
        let next_us = self.emitted_end_us;
        let turn = self.new_turn_id(next_us);
        out.push(Decision::Start { turn, speech_start_us: next_us, continues: Some(t.turn), decided_us });
        t.turn = turn;
        t.speech_start_us = next_us;
        t.first_index = self.emitted_until;
    }

    /// The turn model's answer about pause `pause` (None: it failed); may end the turn now.
    pub fn turn_verdict(&mut self, pause: u64, p_complete: Option<f32>, out: &mut Vec<Decision>) {
        if !self.endpoint.set_verdict(pause, p_complete) {
            return; // that pause is over
        }
        if let State::Speaking(t) = &self.state {
            if let PauseStep::End(reason) = self.endpoint.step(t.silence_ms) {
                let State::Speaking(t) = std::mem::replace(&mut self.state, State::Idle) else { unreachable!() };
                self.end_turn(t, reason, out);
            }
        }
    }

    /// The pause whose turn-model answer is needed before the segmenter can go on (the stage
    /// waits for it, so the decision does not depend on how fast the input arrives).
    pub fn awaiting_verdict(&self) -> Option<u64> {
        match &self.state {
            State::Speaking(t) if t.silence_ms > 0 => self.endpoint.awaiting(t.silence_ms),
            _ => None,
        }
    }

    fn end_turn(&mut self, mut t: Turn, reason: EotReason, out: &mut Vec<Decision>) {
        let post_roll_chunks = self.cfg.post_roll_ms.div_ceil(self.chunk_ms) as usize;
        let held = std::mem::take(&mut t.held);
        let mut rest = vec![];
        for (i, c) in held.into_iter().enumerate() {
            if i < post_roll_chunks {
                self.emit_audio(&mut t, c, out);
            } else {
                rest.push(c);
            }
        }
        let decided_us = self.decided_us;
        let p_complete = self.endpoint.p_complete();
        out.push(Decision::End {
            turn: t.turn,
            speech_start_us: t.speech_start_us,
            speech_end_us: t.last_voiced_us,
            cut: false,
            decided_us,
            reason,
            p_complete,
        });
        for c in rest {
            self.remember(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000_000;

    /// Feed a probability per chunk; returns decisions with the chunk index they came from.
    fn run(cfg: SegmenterConfig, probs: &[f32]) -> Vec<Decision> {
        let mut s = SpeechSegmenter::new(cfg);
        let mut out = vec![];
        for (i, &p) in probs.iter().enumerate() {
            let index = (i * CHUNK) as u64;
            let chunk = Chunk { index, capture_us: T0 + index * 1_000_000 / RATE as u64, samples: vec![i as i16; CHUNK] };
            s.push(chunk, p, &mut out);
        }
        s.finish(&mut out);
        out
    }

    fn pattern(spec: &[(f32, usize)]) -> Vec<f32> {
        spec.iter().flat_map(|&(p, n)| vec![p; n]).collect()
    }

    fn turns(d: &[Decision]) -> Vec<(u64, Vec<usize>)> {
        let mut v: Vec<(u64, Vec<usize>)> = vec![];
        for x in d {
            match x {
                Decision::Start { turn, .. } => v.push((*turn, vec![])),
                Decision::Audio { turn, chunk } => {
                    let last = v.last_mut().expect("audio before start");
                    assert_eq!(last.0, *turn);
                    last.1.push(chunk.samples[0] as usize);
                }
                Decision::End { .. } | Decision::AskTurnModel { .. } | Decision::Onset { .. } | Decision::Void { .. } => {}
            }
        }
        v
    }

    #[test]
    fn one_turn_with_pre_roll_post_roll_and_trace_times() {
        let cfg = SegmenterConfig::default();
        // 20 silent chunks, 30 speech chunks (0.96 s), 40 silent chunks.
        let d = run(cfg.clone(), &pattern(&[(0.02, 20), (0.9, 30), (0.02, 40)]));
        let t = turns(&d);
        assert_eq!(t.len(), 1);
        // pre-roll 300 ms = 10 chunks before chunk 20; post-roll 200 ms = 7 chunks after 49.
        assert_eq!(t[0].1, (10..57).collect::<Vec<_>>());
        let Decision::Onset { turn: onset_turn, onset_us, .. } = d[0] else { panic!("{:?}", d[0]) };
        let Decision::Start { turn, speech_start_us, .. } = d[1] else { panic!() };
        assert_eq!(speech_start_us, T0 + 20 * 32_000);
        assert_eq!(onset_us, speech_start_us);
        assert_eq!(turn, speech_start_us / 1000);
        assert_eq!(onset_turn, turn, "the onset reserves the turn id");
        let Some(Decision::End { speech_end_us, cut: false, .. }) = d.last() else { panic!() };
        assert_eq!(*speech_end_us, T0 + 50 * 32_000 - 63);
    }

    #[test]
    fn start_is_emitted_as_soon_as_min_speech_is_reached() {
        let cfg = SegmenterConfig { min_speech_ms: 250, ..Default::default() };
        let mut s = SpeechSegmenter::new(cfg);
        let mut out = vec![];
        for i in 0..20 {
            let chunk = Chunk { index: (i * CHUNK) as u64, capture_us: T0, samples: vec![0; CHUNK] };
            s.push(chunk, if i >= 5 { 0.9 } else { 0.0 }, &mut out);
            let started = out.iter().any(|d| matches!(d, Decision::Start { .. }));
            // 8 chunks × 32 ms = 256 ms ≥ 250 ms: decided on the 8th speech chunk (index 12).
            assert_eq!(started, i >= 12, "chunk {i}");
        }
    }

    #[test]
    fn short_bursts_and_noise_make_no_turn() {
        let d = run(
            SegmenterConfig::default(),
            &pattern(&[(0.0, 10), (0.95, 3), (0.0, 10), (0.6, 2), (0.1, 5), (0.4, 30), (0.0, 10)]),
        );
        assert!(turns(&d).is_empty(), "{d:?}");
        // Each burst paused the reply (onset) and was then called off (void), nothing else.
        let kinds: Vec<&str> = d
            .iter()
            .map(|x| match x {
                Decision::Onset { .. } => "onset",
                Decision::Void { .. } => "void",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["onset", "void", "onset", "void"], "{d:?}");
    }

    #[test]
    fn onset_comes_with_the_first_voiced_chunk_and_void_when_the_run_dies() {
        let mut s = SpeechSegmenter::new(SegmenterConfig::default());
        let mut out = vec![];
        let chunk = |i: usize| Chunk { index: (i * CHUNK) as u64, capture_us: T0 + (i * 32_000) as u64, samples: vec![0; CHUNK] };
        for i in 0..5 {
            s.push(chunk(i), 0.0, &mut out);
        }
        assert!(out.is_empty());
        s.push(chunk(5), 0.9, &mut out);
        let [Decision::Onset { turn, onset_us, decided_us }] = out[..] else { panic!("{out:?}") };
        assert_eq!(onset_us, T0 + 5 * 32_000);
        assert_eq!(decided_us, chunk(5).last_sample_us(), "decided on that chunk alone");
        out.clear();
        // One more voiced chunk (64 ms in all: a click), then silence until the run is given up.
        s.push(chunk(6), 0.9, &mut out);
        let gap_chunks = PENDING_GAP_MS.div_ceil(32) as usize;
        for i in 7..7 + gap_chunks {
            assert!(out.is_empty(), "chunk {i}: {out:?}");
            s.push(chunk(i), 0.0, &mut out);
        }
        let [Decision::Void { turn: void_turn, .. }] = out[..] else { panic!("{out:?}") };
        assert_eq!(void_turn, turn);
        // The next onset gets a new, larger id; a pending run at the end of input is void too.
        out.clear();
        s.push(chunk(30), 0.9, &mut out);
        s.finish(&mut out);
        let [Decision::Onset { turn: t2, .. }, Decision::Void { turn: t3, .. }] = out[..] else { panic!("{out:?}") };
        assert!(t2 > turn);
        assert_eq!(t2, t3);
    }

    #[test]
    fn a_level_onset_opens_the_run_silero_then_confirms_it_or_it_is_void() {
        let chunk = |i: usize| Chunk { index: (i * CHUNK) as u64, capture_us: T0 + (i * 32_000) as u64, samples: vec![0; CHUNK] };
        let mut s = SpeechSegmenter::new(SegmenterConfig::default());
        let mut out = vec![];
        for i in 0..10 {
            s.push(chunk(i), 0.0, &mut out);
        }
        // The input got loud 10 ms into chunk 10 (a fricative): onset now, before Silero.
        let loud_us = T0 + 10 * 32_000 + 10_000;
        s.level_onset(loud_us, loud_us + 10_000, &mut out);
        let [Decision::Onset { turn, onset_us, .. }] = out[..] else { panic!("{out:?}") };
        assert_eq!(onset_us, loud_us);
        out.clear();
        s.level_onset(loud_us + 20_000, loud_us + 30_000, &mut out);
        assert!(out.is_empty(), "one onset per run: {out:?}");
        // Silero hears only the fricative as unvoiced for 4 chunks, then the vowel: one turn,
        // starting at the level onset, with the pre-roll.
        for i in 10..14 {
            s.push(chunk(i), 0.1, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        for i in 14..20 {
            s.push(chunk(i), 0.9, &mut out);
        }
        let Some(Decision::Start { turn: t, speech_start_us, .. }) = out.iter().find(|d| matches!(d, Decision::Start { .. })) else { panic!("{out:?}") };
        assert_eq!((*t, *speech_start_us), (turn, loud_us));
        let first = out.iter().find_map(|d| if let Decision::Audio { chunk, .. } = d { Some(chunk.index) } else { None });
        assert!(first.unwrap() < (10 * CHUNK) as u64, "pre-roll kept");

        // A knock: loud, but Silero never calls it speech. Void after LEVEL_ONSET_WAIT_US.
        let mut s = SpeechSegmenter::new(SegmenterConfig::default());
        let mut out = vec![];
        for i in 0..10 {
            s.push(chunk(i), 0.0, &mut out);
        }
        let knock_us = T0 + 10 * 32_000;
        s.level_onset(knock_us, knock_us + 10_000, &mut out);
        out.clear();
        let mut i = 10;
        while out.is_empty() {
            s.push(chunk(i), 0.2, &mut out);
            i += 1;
        }
        let [Decision::Void { decided_us, .. }] = out[..] else { panic!("{out:?}") };
        let waited = decided_us - knock_us;
        assert!((LEVEL_ONSET_WAIT_US..LEVEL_ONSET_WAIT_US + 32_000).contains(&waited), "void after {waited} µs");
        // While a turn is open, a level onset changes nothing.
        let mut out = vec![];
        for j in i..i + 6 {
            s.push(chunk(j), 0.9, &mut out);
        }
        out.clear();
        s.level_onset(T0 + (i as u64 + 6) * 32_000, T0 + (i as u64 + 6) * 32_000 + 10_000, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_pause_shorter_than_eot_keeps_one_turn_and_all_audio() {
        // 0.5 s pause (15 chunks = 480 ms) < 600 ms end-of-turn silence.
        let d = run(SegmenterConfig::default(), &pattern(&[(0.0, 12), (0.9, 20), (0.0, 15), (0.9, 20), (0.0, 40)]));
        let t = turns(&d);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].1, (2..74).collect::<Vec<_>>());
    }

    #[test]
    fn max_length_cuts_into_contiguous_turns() {
        let cfg = SegmenterConfig { max_segment_ms: 4_000, ..Default::default() };
        // 20 s of speech with a dip every second.
        let mut probs = vec![0.0; 10];
        for _ in 0..20 {
            probs.extend(pattern(&[(0.9, 29), (0.3, 2)]));
        }
        probs.extend(vec![0.0; 40]);
        let d = run(cfg, &probs);
        let t = turns(&d);
        assert!(t.len() >= 5, "{} turns", t.len());
        let all: Vec<usize> = t.iter().flat_map(|x| x.1.clone()).collect();
        let first = all[0];
        assert_eq!(all, (first..first + all.len()).collect::<Vec<_>>(), "audio lost or repeated at a cut");
        for w in t.windows(2) {
            assert!(w[1].0 > w[0].0, "turn ids increase");
            assert!(w[0].1.len() as u32 * 32 <= 4_000 + 32, "piece of {} chunks", w[0].1.len());
        }
        let cuts = d.iter().filter(|x| matches!(x, Decision::End { cut: true, .. })).count();
        let conts = d.iter().filter(|x| matches!(x, Decision::Start { continues: Some(_), .. })).count();
        assert_eq!(cuts, t.len() - 1);
        assert_eq!(conts, t.len() - 1);
    }

    /// Like `run` with a turn model (asked at 160 ms, complete → 256 ms, incomplete → 1.2 s)
    /// that answers the n-th question with `answers[n]` at once.
    fn run_with_model(probs: &[f32], answers: &[f32]) -> Vec<Decision> {
        let model = TurnModelConfig { check_ms: 160, threshold: 0.5, complete_ms: 250, incomplete_ms: 1200 };
        let mut s = SpeechSegmenter::new(SegmenterConfig { turn_model: Some(model), ..Default::default() });
        let (mut out, mut asked) = (vec![], 0);
        for (i, &p) in probs.iter().enumerate() {
            let index = (i * CHUNK) as u64;
            let chunk = Chunk { index, capture_us: T0 + index * 1_000_000 / RATE as u64, samples: vec![i as i16; CHUNK] };
            let before = out.len();
            s.push(chunk, p, &mut out);
            let questions: Vec<u64> =
                out[before..].iter().filter_map(|d| if let Decision::AskTurnModel { pause, .. } = d { Some(*pause) } else { None }).collect();
            for pause in questions {
                s.turn_verdict(pause, Some(answers[asked]), &mut out);
                asked += 1;
            }
            assert_eq!(s.awaiting_verdict(), None, "every question was answered");
        }
        s.finish(&mut out);
        out
    }

    fn ends(d: &[Decision]) -> Vec<(EotReason, usize)> {
        d.iter()
            .filter_map(|x| match x {
                Decision::End { reason, decided_us, .. } => Some((*reason, ((decided_us - T0) * RATE as u64 / 1_000_000) as usize / CHUNK)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn turn_model_complete_ends_early_incomplete_lets_a_hesitation_pass() {
        // Speech, a 800 ms hesitation (25 chunks), speech, silence.
        let probs = pattern(&[(0.0, 10), (0.9, 20), (0.0, 25), (0.9, 20), (0.0, 60)]);
        // "Incomplete" at the hesitation, "complete" at the end: one turn, ended 8 chunks
        // (256 ms) into the final pause, by the model.
        let d = run_with_model(&probs, &[0.1, 0.9]);
        assert_eq!(turns(&d).len(), 1);
        assert_eq!(ends(&d), vec![(EotReason::TurnModel, 75 + 7)]);
        let Some(Decision::End { p_complete, .. }) = d.last() else { panic!() };
        assert_eq!(*p_complete, Some(0.9));
        // "Complete" at the hesitation: the turn ends there (the model's call).
        let d = run_with_model(&probs, &[0.9, 0.9]);
        assert_eq!(ends(&d), vec![(EotReason::TurnModel, 30 + 7), (EotReason::TurnModel, 75 + 7)]);
        // "Incomplete" at the end too: the long wait (1.2 s = 38 chunks) ends it, on silence.
        let d = run_with_model(&probs, &[0.1, 0.1]);
        assert_eq!(ends(&d), vec![(EotReason::Silence, 75 + 37)]);
        // The question covers the turn's audio up to the pause so far.
        let d = run_with_model(&probs, &[0.1, 0.9]);
        let asks: Vec<(u64, u64)> =
            d.iter().filter_map(|x| if let Decision::AskTurnModel { from_index, to_index, .. } = x { Some((*from_index, *to_index)) } else { None }).collect();
        assert_eq!(asks, vec![(0, (35 * CHUNK) as u64), (0, (80 * CHUNK) as u64)]);
    }

    #[test]
    fn input_end_and_max_length_are_the_reasons_given() {
        let d = run(SegmenterConfig { max_segment_ms: 4_000, ..Default::default() }, &pattern(&[(0.0, 10), (0.9, 200)]));
        let reasons: Vec<EotReason> = ends(&d).into_iter().map(|e| e.0).collect();
        assert!(reasons.len() >= 2);
        assert!(reasons[..reasons.len() - 1].iter().all(|&r| r == EotReason::MaxLength), "{reasons:?}");
        assert_eq!(reasons.last(), Some(&EotReason::InputEnd));
        let d = run(SegmenterConfig::default(), &pattern(&[(0.9, 20), (0.0, 30)]));
        assert_eq!(ends(&d), vec![(EotReason::Silence, 20 + 18)]);
    }

    #[test]
    fn next_turn_pre_roll_never_repeats_audio() {
        let d = run(SegmenterConfig::default(), &pattern(&[(0.9, 20), (0.0, 19), (0.9, 20), (0.0, 40)]));
        let t = turns(&d);
        assert_eq!(t.len(), 2);
        assert!(t[1].1[0] > *t[0].1.last().unwrap());
    }
}

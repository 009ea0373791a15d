//! The stage loop: input frames → [`Chunker`] → [`SileroVad`] → [`SpeechSegmenter`] → output
//! frames. Events from the input are forwarded unchanged and in order; decisions become
//! `speech-onset` at the first voiced chunk and then either `speech-start` or `speech-void`
//! (all urgent: the sink sends them ahead of queued audio), 16 kHz audio frames tagged with
//! the turn id, and `speech-end` with the turn's trace and why it ended. With a turn model,
//! its questions go to the [`TurnWorker`] thread and its answers come back here.
//!
//! The stage is generic over its [`Vad`] and its [`Output`] so its wiring (digital silence,
//! call boundaries, the level cue, the turn model's round trip) is unit-tested with scripted
//! probabilities and frames collected in a `Vec`; segmenter.rs tests the decisions themselves.

use anyhow::Result;
use std::collections::VecDeque;
use std::time::Duration;
use tgvoice::clock::now_us;
use tgvoice::event::{kind, trace_key};
use tgvoice::sink::Output;
use tgvoice::{AudioFrame, Event, Frame, Input, TurnTrace};

use crate::chunker::Chunker;
use crate::echo_gate::EchoGate;
use crate::onset::LevelOnset;
use crate::segmenter::{Chunk, Decision, SpeechSegmenter, CHUNK, RATE};
use crate::turn_model::{Answer, Job, TurnWorker, WINDOW_SAMPLES};

/// Extra field on speech-start/speech-end: capture time (µs) of the last input sample the
/// decision was based on, so `now − vad_audio_until` is vadseg's own decision latency.
pub const DECIDED_FIELD: &str = "vad_audio_until";
/// Field on speech-end: why the turn ended (`turn-model`, `silence`, `max-length`, `input-end`).
pub const EOT_REASON_FIELD: &str = "eot_reason";
/// Field on speech-end: the turn model's probability that the turn was complete, when asked.
pub const P_COMPLETE_FIELD: &str = "p_complete";
/// Chunks quieter than this (−70 dBFS) are silence whatever the model says.
pub const DIGITAL_SILENCE_RMS: f64 = 10.4;

use tgvoice::audio::rms_i16 as rms;

#[derive(Debug, Default, Clone, Copy)]
pub struct StageStats {
    pub chunks: u64,
    pub turns: u64,
    pub segment_samples: u64,
    /// Turn-model answers, and their total and longest inference time.
    pub turn_checks: u64,
    pub turn_check_total: Duration,
    pub turn_check_max: Duration,
}

/// Speech probability of each 32 ms chunk: Silero in the program, a script in the tests.
pub trait Vad {
    /// Probability (0–1) that one 512-sample 16 kHz chunk is speech; the model may keep state
    /// between chunks.
    fn probability(&mut self, chunk: &[i16]) -> Result<f32>;
    /// Forget that state: the stream broke off.
    fn reset(&mut self);
}

pub struct VadStage<V: Vad> {
    vad: V,
    chunker: Chunker,
    segmenter: SpeechSegmenter,
    chunks: Vec<Chunk>,
    decisions: Vec<Decision>,
    turn_model: Option<TurnWorker>,
    /// The last 8 s of the 16 kHz stream (what the turn model may be asked about).
    recent_audio: VecDeque<i16>,
    /// Stream index just past `recent_audio`.
    recent_end: u64,
    /// The longest the stage waits for the turn model's answer once it is needed (then the
    /// pause goes on to end on silence): no longer than the silence path would take.
    answer_timeout: Duration,
    echo_gate: Option<EchoGate>,
    /// Pause replies as soon as the input gets loud, before Silero has a whole chunk of it.
    level_onset: Option<LevelOnset>,
    pub stats: StageStats,
}

impl<V: Vad> VadStage<V> {
    pub fn new(vad: V, segmenter: SpeechSegmenter, turn_model: Option<TurnWorker>, answer_timeout: Duration) -> Self {
        VadStage {
            vad,
            chunker: Chunker::new(),
            segmenter,
            chunks: vec![],
            decisions: vec![],
            turn_model,
            recent_audio: VecDeque::with_capacity(WINDOW_SAMPLES + CHUNK),
            recent_end: 0,
            answer_timeout,
            echo_gate: None,
            level_onset: None,
            stats: StageStats::default(),
        }
    }

    /// Ignore input that is only the played audio coming back (see [`EchoGate`]).
    pub fn with_echo_gate(mut self, gate: EchoGate) -> Self {
        self.echo_gate = Some(gate);
        self
    }

    /// Send `speech-onset` at the first loud 10 ms block, not only at Silero's first voiced chunk.
    pub fn with_level_onset(mut self, onset: LevelOnset) -> Self {
        self.level_onset = Some(onset);
        self
    }

    /// Handle one input item, sending whatever it produces.
    pub fn handle(&mut self, input: Input, out: &mut impl Output) -> Result<()> {
        match input {
            Input::Frame(Frame::Audio(frame)) => {
                self.check_level_onset(&frame, &mut *out);
                self.chunker.push(&frame, &mut self.chunks)?;
                self.classify(out)?;
            }
            Input::Frame(Frame::Event(event)) => {
                let call_boundary = event.is(kind::CALL_START) || event.is(kind::CALL_END);
                if call_boundary {
                    // A new conversation: nothing of the old call's audio belongs to it.
                    self.interrupt(out)?;
                }
                out.send(Frame::Event(event));
            }
            Input::WriterGone => self.interrupt(out)?,
        }
        Ok(())
    }

    /// The level cue, block by block of the frame as it came (before resampling: no delay).
    fn check_level_onset(&mut self, frame: &AudioFrame, out: &mut impl Output) {
        if self.level_onset.is_none() {
            return;
        }
        let block = (frame.sample_rate as usize / 100).max(1) * frame.channels.max(1) as usize;
        for (i, b) in frame.samples.chunks(block).enumerate() {
            let start_us = frame.capture_us + i as u64 * 10_000;
            let level = rms(b);
            let echo = self.echo_gate.as_ref().is_some_and(|g| g.is_echo(start_us, level));
            let onset = self.level_onset.as_mut().is_some_and(|o| o.block(if echo { 0.0 } else { level }));
            if onset {
                log::debug!("input got loud ({:.0} dBFS): onset before Silero", tgvoice::audio::i16_rms_to_dbfs(level));
                let end_us = start_us + b.len() as u64 * 10_000 / block as u64;
                self.segmenter.level_onset(start_us, end_us, &mut self.decisions);
                self.send_decisions(out);
            }
        }
    }

    /// End of input: flush audio, close an open turn.
    pub fn finish(&mut self, out: &mut impl Output) -> Result<()> {
        self.interrupt(out)
    }

    /// The audio stream broke off (writer restarted, call boundary, end of input).
    fn interrupt(&mut self, out: &mut impl Output) -> Result<()> {
        self.chunker.restart(&mut self.chunks);
        self.classify(out)?;
        self.segmenter.finish(&mut self.decisions);
        self.send_decisions(out);
        self.vad.reset();
        if let Some(o) = self.level_onset.as_mut() {
            o.reset();
        }
        Ok(())
    }

    fn classify(&mut self, out: &mut impl Output) -> Result<()> {
        for chunk in std::mem::take(&mut self.chunks) {
            let mut p = self.vad.probability(&chunk.samples)?;
            log::trace!("chunk {} p={p:.3}", chunk.index);
            let level = rms(&chunk.samples);
            if level < DIGITAL_SILENCE_RMS {
                // Silero decays slowly on digital silence (~400 ms from 0.99 to 0.35, measured);
                // a muted or ended stream is silence now. The model still ran, to keep its state.
                p = 0.0;
            } else if self.echo_gate.as_ref().is_some_and(|g| g.is_echo(chunk.capture_us, level)) {
                log::trace!("chunk {} is echo of the played audio", chunk.index);
                p = 0.0;
            }
            self.stats.chunks += 1;
            self.keep_recent(&chunk);
            self.take_answers(None);
            self.segmenter.push(chunk, p, &mut self.decisions);
            self.send_decisions(out);
            if let Some(pause) = self.segmenter.awaiting_verdict() {
                // The decision point: wait for the answer here rather than decide on whatever
                // has arrived, so the result does not depend on input speed. Live, the answer
                // is usually in already (asked ~100 ms of audio earlier).
                self.take_answers(Some(pause));
                self.send_decisions(out);
            }
        }
        Ok(())
    }

    fn keep_recent(&mut self, chunk: &Chunk) {
        if self.turn_model.is_none() {
            return;
        }
        if chunk.index != self.recent_end {
            self.recent_audio.clear(); // the stream restarted
        }
        self.recent_audio.extend(&chunk.samples);
        self.recent_end = chunk.end_index();
        let excess = self.recent_audio.len().saturating_sub(WINDOW_SAMPLES);
        self.recent_audio.drain(..excess);
    }

    /// Hand the turn model's answers to the segmenter; with `wait_for`, block until the answer
    /// about that pause is in (or the timeout: the pause then ends on silence).
    fn take_answers(&mut self, wait_for: Option<u64>) {
        let Some(worker) = &self.turn_model else { return };
        let mut answers: Vec<Answer> = worker.answers.try_iter().collect();
        if let Some(pause) = wait_for {
            while !answers.iter().any(|a| a.pause == pause) {
                match worker.answers.recv_timeout(self.answer_timeout) {
                    Ok(a) => answers.push(a),
                    Err(_) => {
                        log::warn!("the turn model did not answer within {:?} (CPU starved?); ending this pause on silence", self.answer_timeout);
                        answers.push(Answer { pause, turn: 0, p_complete: None, took: self.answer_timeout });
                    }
                }
            }
        }
        for a in answers {
            self.stats.turn_checks += 1;
            self.stats.turn_check_total += a.took;
            self.stats.turn_check_max = self.stats.turn_check_max.max(a.took);
            log::debug!("turn {}: pause {}: p(complete) = {:?} ({:.0} ms)", a.turn, a.pause, a.p_complete, a.took.as_secs_f64() * 1e3);
            self.segmenter.turn_verdict(a.pause, a.p_complete, &mut self.decisions);
        }
    }

    /// The 16 kHz audio from stream index `from` to `to` that is still kept (the last 8 s).
    fn recent_span(&self, from: u64, to: u64) -> Vec<i16> {
        let start = self.recent_end - self.recent_audio.len() as u64;
        let (from, to) = (from.max(start), to.min(self.recent_end));
        self.recent_audio.range((from - start) as usize..(to.max(from) - start) as usize).copied().collect()
    }

    fn send_decisions(&mut self, out: &mut impl Output) {
        for d in std::mem::take(&mut self.decisions) {
            match d {
                Decision::Onset { turn, onset_us, decided_us } => {
                    let mut trace = TurnTrace::default();
                    trace.mark(trace_key::SPEECH_START, onset_us);
                    log::debug!("turn {turn}: speech-onset");
                    out.send(Frame::Event(
                        Event::new(kind::SPEECH_ONSET).with_turn(turn).with_trace(trace).with(DECIDED_FIELD, decided_us),
                    ));
                }
                Decision::Void { turn, decided_us } => {
                    log::debug!("turn {turn}: speech-void (too short for a turn)");
                    out.send(Frame::Event(Event::new(kind::SPEECH_VOID).with_turn(turn).with(DECIDED_FIELD, decided_us)));
                }
                Decision::Start { turn, speech_start_us, continues, decided_us } => {
                    let mut trace = TurnTrace::default();
                    trace.mark(trace_key::SPEECH_START, speech_start_us);
                    let mut e = Event::new(kind::SPEECH_START).with_turn(turn).with_trace(trace).with(DECIDED_FIELD, decided_us);
                    if let Some(prev) = continues {
                        e = e.with("continues", prev);
                    }
                    self.stats.turns += 1;
                    log::debug!("turn {turn}: speech-start");
                    out.send(Frame::Event(e));
                }
                Decision::Audio { turn, chunk } => {
                    self.stats.segment_samples += chunk.samples.len() as u64;
                    out.send(Frame::Audio(AudioFrame {
                        sample_rate: RATE,
                        channels: 1,
                        turn,
                        capture_us: chunk.capture_us,
                        sample_index: chunk.index,
                        samples: chunk.samples,
                    }));
                }
                Decision::AskTurnModel { turn, pause, from_index, to_index } => {
                    let audio = self.recent_span(from_index, to_index);
                    if let Some(worker) = &self.turn_model {
                        worker.ask(Job { pause, turn, audio });
                    }
                }
                Decision::End { turn, speech_start_us, speech_end_us, cut, decided_us, reason, p_complete } => {
                    let mut trace = TurnTrace::default();
                    trace.mark(trace_key::SPEECH_START, speech_start_us);
                    trace.mark(trace_key::SPEECH_END, speech_end_us);
                    let eot = now_us();
                    trace.mark(trace_key::EOT, eot);
                    let mut e = Event::new(kind::SPEECH_END)
                        .with_turn(turn)
                        .with_trace(trace)
                        .with(DECIDED_FIELD, decided_us)
                        .with(EOT_REASON_FIELD, reason.as_str());
                    if let Some(p) = p_complete {
                        e = e.with(P_COMPLETE_FIELD, (p as f64 * 1000.0).round() / 1000.0);
                    }
                    if cut {
                        e = e.with("cut", true);
                    }
                    let decided = if eot >= speech_end_us {
                        format!("; end decided {:.0} ms after the last voiced sample", (eot - speech_end_us) as f64 / 1000.0)
                    } else {
                        String::new() // input arrives faster than real time
                    };
                    let model = p_complete.map(|p| format!(", turn model p(complete) {p:.2}")).unwrap_or_default();
                    log::info!(
                        "turn {turn}: {:.2} s of speech, ended by {}{model}{decided}",
                        speech_end_us.saturating_sub(speech_start_us) as f64 / 1e6,
                        reason.as_str(),
                    );
                    out.send(Frame::Event(e));
                }
            }
        }
    }
}

/// The stage's wiring with a scripted VAD (one probability per 32 ms chunk) and frames
/// collected in a `Vec`; the segmenter's own rules are tested in segmenter.rs.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::TurnModelConfig;
    use crate::onset::{LevelOnset, OnsetConfig};
    use crate::segmenter::SegmenterConfig;
    use crate::turn_model::TurnModel;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// Chunk `i` gets `probs[i]` (0 past the end); counts its resets.
    struct ScriptedVad {
        probs: Vec<f32>,
        next: usize,
        resets: Arc<AtomicUsize>,
    }

    impl Vad for ScriptedVad {
        fn probability(&mut self, _chunk: &[i16]) -> Result<f32> {
            let p = self.probs.get(self.next).copied().unwrap_or(0.0);
            self.next += 1;
            Ok(p)
        }
        fn reset(&mut self) {
            self.resets.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Always answers `p` (None: fails), and keeps how much audio each question had.
    struct FakeTurnModel {
        p: Option<f32>,
        asked: Arc<Mutex<Vec<usize>>>,
    }

    impl TurnModel for FakeTurnModel {
        fn p_complete(&mut self, audio: &[i16]) -> Result<f32> {
            self.asked.lock().unwrap().push(audio.len());
            self.p.ok_or_else(|| anyhow::anyhow!("scripted failure"))
        }
    }

    /// `(probability, chunks)` runs, one value per 32 ms chunk.
    fn script(spec: &[(f32, usize)]) -> Vec<f32> {
        spec.iter().flat_map(|&(p, n)| std::iter::repeat_n(p, n)).collect()
    }

    fn stage(probs: Vec<f32>, cfg: SegmenterConfig, turn_model: Option<FakeTurnModel>) -> (VadStage<ScriptedVad>, Arc<AtomicUsize>) {
        let resets = Arc::new(AtomicUsize::new(0));
        let vad = ScriptedVad { probs, next: 0, resets: resets.clone() };
        let worker = turn_model.map(crate::turn_model::TurnWorker::spawn);
        (VadStage::new(vad, SpeechSegmenter::new(cfg), worker, Duration::from_secs(5)), resets)
    }

    const T0: u64 = 1_700_000_000_000_000;
    /// 48 kHz input frames of 20 ms.
    const FRAME: usize = 960;

    /// `ms` of a 440 Hz tone at `amplitude`, as 48 kHz frames starting at `*at_us`.
    fn tone(at_us: &mut u64, ms: usize, amplitude: f64) -> Vec<Input> {
        let n = ms * 48;
        let samples: Vec<i16> = (0..n).map(|i| (amplitude * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 48_000.0).sin()) as i16).collect();
        samples
            .chunks(FRAME)
            .map(|c| {
                let f = AudioFrame { sample_rate: 48_000, channels: 1, turn: 0, capture_us: *at_us, sample_index: 0, samples: c.to_vec() };
                *at_us += c.len() as u64 * 1_000_000 / 48_000;
                Input::Frame(Frame::Audio(f))
            })
            .collect()
    }

    fn run(stage: &mut VadStage<ScriptedVad>, inputs: Vec<Input>) -> Vec<Frame> {
        let mut out = Vec::new();
        for i in inputs {
            stage.handle(i, &mut out).unwrap();
        }
        stage.finish(&mut out).unwrap();
        out
    }

    fn events(out: &[Frame]) -> Vec<&Event> {
        out.iter().filter_map(|f| if let Frame::Event(e) = f { Some(e) } else { None }).collect()
    }

    fn kinds(out: &[Frame]) -> Vec<&str> {
        events(out).iter().map(|e| e.kind.as_str()).collect()
    }

    fn no_level_onset() -> SegmenterConfig {
        SegmenterConfig::default()
    }

    /// 320 ms of silence, 640 ms of speech, then 1.3 s of silence: one turn, by the script.
    fn one_turn_script() -> Vec<f32> {
        script(&[(0.0, 10), (0.9, 20), (0.0, 40)])
    }

    #[test]
    fn scripted_speech_becomes_onset_start_audio_and_end_in_order() {
        let (mut s, _) = stage(one_turn_script(), no_level_onset(), None);
        let mut at = T0;
        let out = run(&mut s, tone(&mut at, 2300, 8000.0));
        assert_eq!(kinds(&out), [kind::SPEECH_ONSET, kind::SPEECH_START, kind::SPEECH_END], "{:?}", kinds(&out));
        let ev = events(&out);
        let turn = ev[0].turn.unwrap();
        assert!(ev.iter().all(|e| e.turn == Some(turn)));
        assert!(ev.iter().all(|e| e.get_u64(DECIDED_FIELD).is_some()), "each decision says what audio it saw");
        assert_eq!(ev[2].get_str(EOT_REASON_FIELD), Some("silence"));
        // 16 kHz audio of the turn between speech-start and speech-end, nothing outside.
        let pos = |k: &str| out.iter().position(|f| matches!(f, Frame::Event(e) if e.is(k))).unwrap();
        let audio: Vec<(usize, &AudioFrame)> = out.iter().enumerate().filter_map(|(i, f)| if let Frame::Audio(a) = f { Some((i, a)) } else { None }).collect();
        assert!(!audio.is_empty());
        assert!(audio.iter().all(|(i, a)| *i > pos(kind::SPEECH_START) && *i < pos(kind::SPEECH_END) && a.turn == turn && a.sample_rate == RATE));
        // Speech (640 ms) plus pre-roll (300) and post-roll (200), whole chunks.
        let ms = audio.iter().map(|(_, a)| a.samples.len()).sum::<usize>() * 1000 / RATE as usize;
        assert!((1000..=1300).contains(&ms), "{ms} ms of audio");
        assert_eq!(s.stats.turns, 1);
    }

    #[test]
    fn a_run_shorter_than_min_speech_is_void() {
        let (mut s, _) = stage(script(&[(0.0, 10), (0.9, 3), (0.0, 30)]), no_level_onset(), None);
        let mut at = T0;
        let out = run(&mut s, tone(&mut at, 1500, 8000.0));
        assert_eq!(kinds(&out), [kind::SPEECH_ONSET, kind::SPEECH_VOID], "96 ms < --min-speech 128 ms");
        assert!(!out.iter().any(|f| matches!(f, Frame::Audio(_))));
        // Long enough with a lower minimum.
        let cfg = SegmenterConfig { min_speech_ms: 64, ..SegmenterConfig::default() };
        let (mut s, _) = stage(script(&[(0.0, 10), (0.9, 3), (0.0, 30)]), cfg, None);
        let mut at = T0;
        let out = run(&mut s, tone(&mut at, 1500, 8000.0));
        assert_eq!(kinds(&out), [kind::SPEECH_ONSET, kind::SPEECH_START, kind::SPEECH_END]);
    }

    #[test]
    fn digital_silence_is_silence_whatever_the_model_says() {
        let (mut s, _) = stage(script(&[(0.99, 100)]), no_level_onset(), None);
        let mut at = T0;
        let out = run(&mut s, tone(&mut at, 2000, 0.0));
        assert!(events(&out).is_empty(), "{:?}", kinds(&out));
        assert!(s.stats.chunks > 50, "the model still ran on every chunk");
    }

    #[test]
    fn input_events_pass_through_unchanged_and_in_place() {
        let (mut s, _) = stage(vec![], no_level_onset(), None);
        let custom = Event::new("x-custom").with_turn(9).with("n", 1);
        let mut at = T0;
        let mut inputs = tone(&mut at, 100, 8000.0);
        inputs.push(Input::Frame(Frame::Event(custom.clone())));
        inputs.push(Input::Frame(Frame::Event(Event::new(kind::CANCEL))));
        let out = run(&mut s, inputs);
        assert_eq!(events(&out), [&custom, &Event::new(kind::CANCEL)]);
    }

    #[test]
    fn a_call_boundary_ends_the_open_turn_before_it_is_forwarded_and_resets_the_vad() {
        let (mut s, resets) = stage(script(&[(0.0, 10), (0.9, 40)]), no_level_onset(), None);
        let mut at = T0;
        let mut inputs = tone(&mut at, 1000, 8000.0);
        inputs.push(Input::Frame(Frame::Event(Event::new(kind::CALL_START).with("call", "c2"))));
        let mut out = Vec::new();
        for i in inputs {
            s.handle(i, &mut out).unwrap();
        }
        assert_eq!(kinds(&out), [kind::SPEECH_ONSET, kind::SPEECH_START, kind::SPEECH_END, kind::CALL_START]);
        assert_eq!(events(&out)[2].get_str(EOT_REASON_FIELD), Some("input-end"));
        assert_eq!(resets.load(Ordering::Relaxed), 1, "the new call starts on a fresh model state");
    }

    #[test]
    fn the_writer_going_away_ends_the_open_turn() {
        let (mut s, resets) = stage(script(&[(0.0, 10), (0.9, 40)]), no_level_onset(), None);
        let mut at = T0;
        let mut inputs = tone(&mut at, 1000, 8000.0);
        inputs.push(Input::WriterGone);
        let mut out = Vec::new();
        for i in inputs {
            s.handle(i, &mut out).unwrap();
        }
        assert_eq!(kinds(&out), [kind::SPEECH_ONSET, kind::SPEECH_START, kind::SPEECH_END]);
        assert_eq!(events(&out)[2].get_str(EOT_REASON_FIELD), Some("input-end"));
        assert_eq!(resets.load(Ordering::Relaxed), 1);
    }

    fn with_level_onset(s: VadStage<ScriptedVad>) -> VadStage<ScriptedVad> {
        s.with_level_onset(LevelOnset::new(OnsetConfig::from_db(-45.0, 12.0)))
    }

    #[test]
    fn a_loud_jump_is_an_onset_before_silero_and_void_when_silero_hears_no_speech() {
        let (s, _) = stage(vec![], no_level_onset(), None);
        let mut s = with_level_onset(s);
        let mut at = T0;
        let mut inputs = tone(&mut at, 500, 30.0);
        let jump_us = at;
        inputs.extend(tone(&mut at, 600, 8000.0));
        let out = run(&mut s, inputs);
        assert_eq!(kinds(&out), [kind::SPEECH_ONSET, kind::SPEECH_VOID], "{:?}", kinds(&out));
        let onset = events(&out)[0];
        let onset_us = onset.trace.get(trace_key::SPEECH_START).unwrap();
        assert!(onset_us >= jump_us && onset_us < jump_us + 20_000, "the onset is the loud 10 ms block itself");
        assert!(onset.get_u64(DECIDED_FIELD).unwrap() <= jump_us + 20_000, "decided before Silero had a whole chunk");
    }

    #[test]
    fn a_level_onset_that_silero_confirms_is_one_onset_then_the_turn() {
        // 500 ms quiet (15 chunks), then speech by Silero from the jump on.
        let (s, _) = stage(script(&[(0.0, 15), (0.9, 20), (0.0, 40)]), no_level_onset(), None);
        let mut s = with_level_onset(s);
        let mut at = T0;
        let mut inputs = tone(&mut at, 500, 30.0);
        inputs.extend(tone(&mut at, 2000, 8000.0));
        let out = run(&mut s, inputs);
        assert_eq!(kinds(&out), [kind::SPEECH_ONSET, kind::SPEECH_START, kind::SPEECH_END], "{:?}", kinds(&out));
        let ev = events(&out);
        assert!(ev.iter().all(|e| e.turn == ev[0].turn));
    }

    fn with_turn_model() -> SegmenterConfig {
        SegmenterConfig {
            turn_model: Some(TurnModelConfig { check_ms: 160, threshold: 0.5, complete_ms: 350, incomplete_ms: 1200 }),
            ..SegmenterConfig::default()
        }
    }

    /// The turn's end with the turn model answering `p`: (eot_reason, p_complete, ms of silence
    /// before the end was decided, the audio lengths the model was asked about).
    fn end_with_model(p: Option<f32>) -> (String, Option<f64>, u64, Vec<usize>) {
        let asked = Arc::new(Mutex::new(vec![]));
        let (mut s, _) = stage(script(&[(0.0, 10), (0.9, 20), (0.0, 60)]), with_turn_model(), Some(FakeTurnModel { p, asked: asked.clone() }));
        let mut at = T0;
        let out = run(&mut s, tone(&mut at, 3000, 8000.0));
        assert_eq!(kinds(&out), [kind::SPEECH_ONSET, kind::SPEECH_START, kind::SPEECH_END], "{:?}", kinds(&out));
        let end = events(&out)[2];
        let silence_ms = (end.get_u64(DECIDED_FIELD).unwrap() - end.trace.get(trace_key::SPEECH_END).unwrap()) / 1000;
        let p = end.extra.get(P_COMPLETE_FIELD).and_then(|v| v.as_f64());
        let asked = asked.lock().unwrap().clone();
        (end.get_str(EOT_REASON_FIELD).unwrap().to_string(), p, silence_ms, asked)
    }

    #[test]
    fn the_turn_model_judging_complete_ends_the_turn_early() {
        let (reason, p, silence_ms, asked) = end_with_model(Some(0.9));
        assert_eq!((reason.as_str(), p), ("turn-model", Some(0.9)));
        assert!((350..600).contains(&silence_ms), "ended after {silence_ms} ms of silence");
        // Asked once, about the turn so far: pre-roll, speech and the 160 ms pause.
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert!((16_000..=20_000).contains(&asked[0]), "{asked:?}");
    }

    #[test]
    fn the_turn_model_judging_incomplete_waits_for_the_long_silence() {
        let (reason, p, silence_ms, _) = end_with_model(Some(0.1));
        assert_eq!((reason.as_str(), p), ("silence", Some(0.1)));
        assert!((1200..1300).contains(&silence_ms), "ended after {silence_ms} ms of silence");
    }

    #[test]
    fn a_failing_turn_model_falls_back_to_the_silence_rule() {
        let (reason, p, silence_ms, asked) = end_with_model(None);
        assert_eq!((reason.as_str(), p), ("silence", None));
        assert!((600..700).contains(&silence_ms), "ended after --eot-silence: {silence_ms} ms");
        assert_eq!(asked.len(), 1);
    }

    #[test]
    fn without_a_turn_model_silence_alone_ends_the_turn() {
        let (mut s, _) = stage(one_turn_script(), no_level_onset(), None);
        let mut at = T0;
        let out = run(&mut s, tone(&mut at, 2300, 8000.0));
        let end = events(&out)[2];
        let silence_ms = (end.get_u64(DECIDED_FIELD).unwrap() - end.trace.get(trace_key::SPEECH_END).unwrap()) / 1000;
        assert!((600..700).contains(&silence_ms), "{silence_ms} ms");
        assert!(end.extra.get(P_COMPLETE_FIELD).is_none());
        assert_eq!(s.stats.turn_checks, 0);
    }
}

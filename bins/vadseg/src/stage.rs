//! The stage loop: input frames → [`Chunker`] → [`SileroVad`] → [`SpeechSegmenter`] → output
//! frames. Events from the input are forwarded unchanged and in order; decisions become
//! `speech-onset` at the first voiced chunk and then either `speech-start` or `speech-void`
//! (all urgent: the sink sends them ahead of queued audio), 16 kHz audio frames tagged with
//! the turn id, and `speech-end` with the turn's trace and why it ended. With a turn model,
//! its questions go to the [`TurnWorker`] thread and its answers come back here.

use anyhow::Result;
use std::collections::VecDeque;
use std::time::Duration;
use tgvoice::clock::now_us;
use tgvoice::event::{kind, trace_key};
use tgvoice::{AudioFrame, Event, Frame, FrameSink, Input, TurnTrace};

use crate::chunker::Chunker;
use crate::echo_gate::EchoGate;
use crate::onset::LevelOnset;
use crate::segmenter::{Chunk, Decision, SpeechSegmenter, CHUNK, RATE};
use crate::silero::SileroVad;
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

pub struct VadStage {
    vad: SileroVad,
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

impl VadStage {
    pub fn new(vad: SileroVad, segmenter: SpeechSegmenter, turn_model: Option<TurnWorker>, answer_timeout: Duration) -> Self {
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
    pub fn handle(&mut self, input: Input, sink: &FrameSink) -> Result<()> {
        match input {
            Input::Frame(Frame::Audio(frame)) => {
                self.check_level_onset(&frame, sink);
                self.chunker.push(&frame, &mut self.chunks)?;
                self.classify(sink)?;
            }
            Input::Frame(Frame::Event(event)) => {
                let call_boundary = event.is(kind::CALL_START) || event.is(kind::CALL_END);
                if call_boundary {
                    // A new conversation: nothing of the old call's audio belongs to it.
                    self.interrupt(sink)?;
                }
                sink.send(Frame::Event(event));
            }
            Input::WriterGone => self.interrupt(sink)?,
        }
        Ok(())
    }

    /// The level cue, block by block of the frame as it came (before resampling: no delay).
    fn check_level_onset(&mut self, frame: &AudioFrame, sink: &FrameSink) {
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
                self.send_decisions(sink);
            }
        }
    }

    /// End of input: flush audio, close an open turn.
    pub fn finish(&mut self, sink: &FrameSink) -> Result<()> {
        self.interrupt(sink)
    }

    /// The audio stream broke off (writer restarted, call boundary, end of input).
    fn interrupt(&mut self, sink: &FrameSink) -> Result<()> {
        self.chunker.restart(&mut self.chunks);
        self.classify(sink)?;
        self.segmenter.finish(&mut self.decisions);
        self.send_decisions(sink);
        self.vad.reset();
        if let Some(o) = self.level_onset.as_mut() {
            o.reset();
        }
        Ok(())
    }

    fn classify(&mut self, sink: &FrameSink) -> Result<()> {
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
            self.send_decisions(sink);
            if let Some(pause) = self.segmenter.awaiting_verdict() {
                // The decision point: wait for the answer here rather than decide on whatever
                // has arrived, so the result does not depend on input speed. Live, the answer
                // is usually in already (asked ~100 ms of audio earlier).
                self.take_answers(Some(pause));
                self.send_decisions(sink);
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

    fn send_decisions(&mut self, sink: &FrameSink) {
        for d in std::mem::take(&mut self.decisions) {
            match d {
                Decision::Onset { turn, onset_us, decided_us } => {
                    let mut trace = TurnTrace::default();
                    trace.mark(trace_key::SPEECH_START, onset_us);
                    log::debug!("turn {turn}: speech-onset");
                    sink.send(Frame::Event(
                        Event::new(kind::SPEECH_ONSET).with_turn(turn).with_trace(trace).with(DECIDED_FIELD, decided_us),
                    ));
                }
                Decision::Void { turn, decided_us } => {
                    log::debug!("turn {turn}: speech-void (too short for a turn)");
                    sink.send(Frame::Event(Event::new(kind::SPEECH_VOID).with_turn(turn).with(DECIDED_FIELD, decided_us)));
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
                    sink.send(Frame::Event(e));
                }
                Decision::Audio { turn, chunk } => {
                    self.stats.segment_samples += chunk.samples.len() as u64;
                    sink.send(Frame::Audio(AudioFrame {
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
                    sink.send(Frame::Event(e));
                }
            }
        }
    }
}

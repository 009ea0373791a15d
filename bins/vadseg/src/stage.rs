//! The stage loop: input frames → [`Chunker`] → [`SileroVad`] → [`SpeechSegmenter`] → output
//! frames. Events from the input are forwarded unchanged and in order; decisions become
//! `speech-onset` at the first voiced chunk and then either `speech-start` or `speech-void`
//! (all urgent: the sink sends them ahead of queued audio), 16 kHz audio frames tagged with
//! the turn id, and `speech-end` with the turn's trace.

use anyhow::Result;
use tgvoice::clock::now_us;
use tgvoice::event::{kind, trace_key};
use tgvoice::{AudioFrame, Event, Frame, FrameSink, Input, TurnTrace};

use crate::chunker::Chunker;
use crate::echo_gate::EchoGate;
use crate::segmenter::{Chunk, Decision, SpeechSegmenter, RATE};
use crate::silero::SileroVad;

/// Extra field on speech-start/speech-end: capture time (µs) of the last input sample the
/// decision was based on, so `now − vad_audio_until` is vadseg's own decision latency.
pub const DECIDED_FIELD: &str = "vad_audio_until";
/// Chunks quieter than this (−70 dBFS) are silence whatever the model says.
pub const DIGITAL_SILENCE_RMS: f64 = 10.4;

fn rms(s: &[i16]) -> f64 {
    (s.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / s.len().max(1) as f64).sqrt()
}

#[derive(Debug, Default, Clone, Copy)]
pub struct StageStats {
    pub chunks: u64,
    pub turns: u64,
    pub segment_samples: u64,
}

pub struct VadStage {
    vad: SileroVad,
    chunker: Chunker,
    segmenter: SpeechSegmenter,
    chunks: Vec<Chunk>,
    decisions: Vec<Decision>,
    echo_gate: Option<EchoGate>,
    pub stats: StageStats,
}

impl VadStage {
    pub fn new(vad: SileroVad, segmenter: SpeechSegmenter) -> Self {
        VadStage {
            vad,
            chunker: Chunker::new(),
            segmenter,
            chunks: vec![],
            decisions: vec![],
            echo_gate: None,
            stats: StageStats::default(),
        }
    }

    /// Ignore input that is only the played audio coming back (see [`EchoGate`]).
    pub fn with_echo_gate(mut self, gate: EchoGate) -> Self {
        self.echo_gate = Some(gate);
        self
    }

    /// Handle one input item, sending whatever it produces.
    pub fn handle(&mut self, input: Input, sink: &FrameSink) -> Result<()> {
        match input {
            Input::Frame(Frame::Audio(frame)) => {
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
            self.segmenter.push(chunk, p, &mut self.decisions);
            self.send_decisions(sink);
        }
        Ok(())
    }

    fn send_decisions(&mut self, sink: &FrameSink) {
        for d in self.decisions.drain(..) {
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
                Decision::End { turn, speech_start_us, speech_end_us, cut, decided_us } => {
                    let mut trace = TurnTrace::default();
                    trace.mark(trace_key::SPEECH_START, speech_start_us);
                    trace.mark(trace_key::SPEECH_END, speech_end_us);
                    let eot = now_us();
                    trace.mark(trace_key::EOT, eot);
                    let mut e = Event::new(kind::SPEECH_END).with_turn(turn).with_trace(trace).with(DECIDED_FIELD, decided_us);
                    if cut {
                        e = e.with("cut", true);
                    }
                    let decided = if eot >= speech_end_us {
                        format!("; end decided {:.0} ms after the last voiced sample", (eot - speech_end_us) as f64 / 1000.0)
                    } else {
                        String::new() // input arrives faster than real time
                    };
                    log::info!(
                        "turn {turn}: {:.2} s of speech{}{decided}",
                        speech_end_us.saturating_sub(speech_start_us) as f64 / 1e6,
                        if cut { " (cut at the maximum segment length)" } else { "" },
                    );
                    sink.send(Frame::Event(e));
                }
            }
        }
    }
}

//! vadseg — the vad-segmenter: 48 kHz audio frames in; Silero VAD decides where the caller
//! speaks; out go `speech-start` (barge-in), the speech as 16 kHz audio frames tagged with the
//! turn id, and `speech-end` (end of turn). Every input event is forwarded unchanged.

mod chunker;
mod echo_gate;
mod segmenter;
mod silero;
mod stage;

use clap::Parser;
use segmenter::{SegmenterConfig, SpeechSegmenter};
use tgvoice::cli::{self, LinkArgs, LogArgs};
use tgvoice::{FrameSink, FrameSource, TapFormat};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Cut speech out of an audio frame stream with Silero VAD: speech-start / 16 kHz segment / speech-end",
    after_help = "Examples:\n  tgcat question.wav | vadseg | framecat\n  tgcat --realtime call.wav | vadseg | sttd\n  vadseg -i $RUN/audio.frames -o $RUN/speech.frames\n  ffplay -f s16le -ar 16000 -ac 1 -nodisp $RUN/speech.tap     # listen to the segments\n\nNeeds ONNX Runtime 1.22.1: ORT_DYLIB_PATH=…/libonnxruntime.so.1.22.1 (scripts/env.sh sets it;\nscripts/setup installs it). Turn ids are the speech onset capture time in ms since the epoch.\nExit codes: 0 end of input or SIGTERM, 2 bad flags, 69 ONNX Runtime missing, 1 other errors."
)]
struct Args {
    #[command(flatten)]
    link: LinkArgs,
    /// Speech probability at or above which a 32 ms chunk counts as speech (0–1).
    #[arg(long, default_value_t = 0.5, env = "VADSEG_THRESHOLD", value_parser = parse_probability)]
    threshold: f32,
    /// Voiced time (ms) before a run becomes a turn (speech-start; sttd transcribes it). Shorter
    /// runs end in speech-void. Lower lets one-word turns ("Stop.") through; higher turns fewer
    /// coughs into turns for sttd. Barge-in pauses at speech-onset, whatever this is.
    #[arg(long, default_value_t = 128, env = "VADSEG_MIN_SPEECH_MS", value_name = "MS")]
    min_speech: u32,
    /// Silence (ms) after the last speech that ends the turn.
    #[arg(long, default_value_t = 600, env = "VADSEG_EOT_SILENCE_MS", value_name = "MS")]
    eot_silence: u32,
    /// Audio (ms) kept before the first speech chunk, so the first syllable is not clipped.
    #[arg(long, default_value_t = 300, env = "VADSEG_PRE_ROLL_MS", value_name = "MS")]
    pre_roll: u32,
    /// Silence (ms) kept after the last speech chunk.
    #[arg(long, default_value_t = 200, env = "VADSEG_POST_ROLL_MS", value_name = "MS")]
    post_roll: u32,
    /// Longest segment (s); longer speech is cut into consecutive turns without losing audio.
    #[arg(long, default_value_t = 25.0, env = "VADSEG_MAX_SEGMENT_S", value_name = "S")]
    max_segment: f64,
    /// Echo gate: the played audio (raw s16le 48 kHz FIFO, e.g. $RUN/tg_output.tap). Input well
    /// below what was just played counts as silence, so the assistant's own voice coming back
    /// through speakers and a microphone does not interrupt it. Off by default (phones cancel
    /// echo; vadseg would hold the tap).
    #[arg(long, env = "VADSEG_ECHO_REF", value_name = "FIFO")]
    echo_ref: Option<std::path::PathBuf>,
    /// How far below the played level (dB) input must be to count as echo. Lower catches louder
    /// echo but also ignores a caller quieter than the loudspeaker.
    #[arg(long, default_value_t = 6.0, env = "VADSEG_ECHO_MARGIN_DB", value_name = "DB")]
    echo_margin: f64,
    #[command(flatten)]
    log: LogArgs,
}

fn parse_probability(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0 and 1".into())
    }
}

fn main() {
    let args: Args = tgvoice::cli::parse_args();
    cli::run("vadseg", &args.log.clone(), move || {
        if !(1.0..=600.0).contains(&args.max_segment) || args.eot_silence == 0 {
            return Err(cli::fail(cli::exit::USAGE, "--max-segment must be 1–600 s and --eot-silence above 0"));
        }
        let cfg = SegmenterConfig {
            threshold: args.threshold,
            min_speech_ms: args.min_speech,
            eot_silence_ms: args.eot_silence,
            pre_roll_ms: args.pre_roll,
            post_roll_ms: args.post_roll,
            max_segment_ms: (args.max_segment * 1000.0) as u32,
        };
        log::debug!("{cfg:?}");
        let vad = silero::SileroVad::load()?;
        let sink = FrameSink::open(args.link.output(), args.link.tap.clone(), TapFormat::Pcm)?;
        let source = FrameSource::open(args.link.input())?;
        let mut stage = stage::VadStage::new(vad, SpeechSegmenter::new(cfg));
        if let Some(reference) = &args.echo_ref {
            let gate = echo_gate::EchoGate::start(reference.clone(), args.echo_margin)
                .map_err(|e| cli::fail(cli::exit::CONFIG, format!("{e:#}")))?;
            stage = stage.with_echo_gate(gate);
        }
        // SIGTERM closes the open turn (a speech-end goes out) before vadseg exits, so the
        // caller's last words still reach sttd.
        let stop = cli::graceful_stop();
        // The reader runs on its own thread, so reading never waits on inference.
        let inputs = source.spawn();
        loop {
            crossbeam_channel::select! {
                recv(inputs) -> input => match input {
                    Ok(input) => stage.handle(input, &sink)?,
                    Err(_) => break,
                },
                recv(stop) -> _ => {
                    // What the reader already has is part of the turn: take it first (only
                    // that: a live input never runs dry).
                    for input in inputs.try_iter().take(inputs.len()) {
                        stage.handle(input, &sink)?;
                    }
                    break;
                }
            }
            if sink.is_closed() {
                log::info!("output closed; stopping");
                break;
            }
        }
        stage.finish(&sink)?;
        let s = sink.finish();
        log::info!(
            "end of input: {:.1} s of audio, {} turns, {:.1} s of speech segments; {} frames delivered, {} dropped",
            stage.stats.chunks as f64 * 0.032,
            stage.stats.turns,
            stage.stats.segment_samples as f64 / 16_000.0,
            s.delivered,
            s.dropped_no_reader + s.dropped_overflow
        );
        Ok(())
    })
}

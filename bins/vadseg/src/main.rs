//! vadseg — the vad-segmenter: 48 kHz audio frames in; Silero VAD decides where the caller
//! speaks; out go `speech-start` (barge-in), the speech as 16 kHz audio frames tagged with the
//! turn id, and `speech-end` (end of turn). Every input event is forwarded unchanged.

mod chunker;
mod endpoint;
mod onset;
mod echo_gate;
mod segmenter;
mod silero;
mod stage;
mod turn_model;

use clap::Parser;
use endpoint::TurnModelConfig;
use segmenter::{SegmenterConfig, SpeechSegmenter};
use std::path::PathBuf;
use tgvoice::cli::{self, exit, LinkArgs, LogArgs};
use tgvoice::{FrameSink, FrameSource, TapFormat};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Cut speech out of an audio frame stream with Silero VAD: speech-start / 16 kHz segment / speech-end",
    after_help = exit::after_help("Examples:\n  tgcat question.wav | vadseg | framecat\n  tgcat --realtime call.wav | vadseg | sttd\n  vadseg -i $RUN/audio.frames -o $RUN/speech.frames\n  ffplay -f s16le -ar 16000 -ac 1 -nodisp $RUN/speech.tap     # listen to the segments\n\nNeeds ONNX Runtime 1.22.1: ORT_DYLIB_PATH=…/libonnxruntime.so.1.22.1 (scripts/env.sh sets it;\nscripts/setup installs it). Turn ids are the speech onset capture time in ms since the epoch.", &[(exit::FAILURE, ""), (exit::UNAVAILABLE, "ONNX Runtime or the Silero model is missing"), (exit::CONFIG, "an unsafe link path, a bad VADSEG_* value or a named --turn-model missing")])
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
    /// Silence (ms) after the last speech that ends the turn when there is no turn model (or it failed).
    #[arg(long, default_value_t = 600, env = "VADSEG_EOT_SILENCE_MS", value_name = "MS")]
    eot_silence: u32,
    /// End of turn by meaning: a Smart Turn v3.2 ONNX file, "auto" ($TGVOICE_MODELS/smart-turn-v3.2-cpu.onnx
    /// if scripts/setup installed it, else silence alone), or "off" (silence alone, --eot-silence).
    #[arg(long, default_value = "auto", env = "VADSEG_TURN_MODEL", value_name = "PATH|auto|off")]
    turn_model: String,
    /// Pause (ms) at which the turn model is asked.
    #[arg(long, default_value_t = 160, env = "VADSEG_TURN_CHECK_MS", value_name = "MS")]
    turn_check: u32,
    /// The turn model's probability of "complete" at or above which the turn ends early (0–1).
    #[arg(long, default_value_t = 0.5, env = "VADSEG_TURN_THRESHOLD", value_parser = parse_probability)]
    turn_threshold: f32,
    /// Silence (ms) that ends a turn the model judged complete. Longer than a comma's pause
    /// (~300 ms), after which many callers go on ("a table for, um…").
    #[arg(long, default_value_t = 350, env = "VADSEG_EOT_COMPLETE_MS", value_name = "MS")]
    eot_complete: u32,
    /// Silence (ms) that ends a turn the model judged incomplete (a hesitation may last this long).
    #[arg(long, default_value_t = 1200, env = "VADSEG_EOT_INCOMPLETE_MS", value_name = "MS")]
    eot_incomplete: u32,
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
    /// Barge-in cue: send speech-onset (tts-writer pauses the reply) as soon as a 10 ms block of
    /// input gets loud, before Silero has heard a whole chunk of it: ~20 ms instead of 30–190 ms
    /// (the "s" of "Stop." is slow for Silero). Costs a pause of up to 240 ms, then a resume,
    /// for a loud non-speech sound (a knock, a cough). "off": onsets come from Silero alone.
    #[arg(long, default_value = "on", env = "VADSEG_LEVEL_ONSET", value_parser = ["on", "off"])]
    level_onset: String,
    /// The level cue: how loud a block must be (dBFS) …
    #[arg(long, default_value_t = -45.0, env = "VADSEG_ONSET_LEVEL_DB", value_name = "DBFS", allow_negative_numbers = true)]
    onset_level: f64,
    /// … and how far above the background (the quietest 10 ms of the last 2 s, in dB). Lower
    /// reacts to softer starts, higher pauses less often for noise.
    #[arg(long, default_value_t = 12.0, env = "VADSEG_ONSET_ABOVE_FLOOR_DB", value_name = "DB")]
    onset_above_floor: f64,
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
            return Err(cli::bad_value::<Args>(&["--max-segment", "--eot-silence"], "--max-segment must be 1–600 s and --eot-silence above 0"));
        }
        if !(args.turn_check <= args.eot_complete && args.eot_complete <= args.eot_incomplete) || args.turn_check == 0 {
            return Err(cli::bad_value::<Args>(
                &["--turn-check", "--eot-complete", "--eot-incomplete"],
                "need 0 < --turn-check ≤ --eot-complete ≤ --eot-incomplete",
            ));
        }
        let vad = silero::SileroVad::load()?;
        let turn_model = load_turn_model(&args)?;
        let cfg = SegmenterConfig {
            threshold: args.threshold,
            min_speech_ms: args.min_speech,
            eot_silence_ms: args.eot_silence,
            pre_roll_ms: args.pre_roll,
            post_roll_ms: args.post_roll,
            max_segment_ms: (args.max_segment * 1000.0) as u32,
            turn_model: turn_model.as_ref().map(|_| TurnModelConfig {
                check_ms: args.turn_check,
                threshold: args.turn_threshold,
                complete_ms: args.eot_complete,
                incomplete_ms: args.eot_incomplete,
            }),
        };
        log::debug!("{cfg:?}");
        let sink = FrameSink::open(args.link.output(), args.link.tap.clone(), TapFormat::Pcm)?;
        let source = FrameSource::open(args.link.input())?;
        let answer_timeout = std::time::Duration::from_millis((args.eot_incomplete - args.eot_complete).max(100) as u64);
        let worker = turn_model.map(turn_model::TurnWorker::spawn);
        let mut stage = stage::VadStage::new(vad, SpeechSegmenter::new(cfg), worker, answer_timeout);
        if args.level_onset == "on" {
            if !(-90.0..=0.0).contains(&args.onset_level) || !(0.0..=60.0).contains(&args.onset_above_floor) {
                return Err(cli::bad_value::<Args>(
                    &["--onset-level", "--onset-above-floor"],
                    "--onset-level must be −90–0 dBFS and --onset-above-floor 0–60 dB",
                ));
            }
            let cfg = onset::OnsetConfig::from_db(args.onset_level, args.onset_above_floor);
            stage = stage.with_level_onset(onset::LevelOnset::new(cfg));
        }
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
        // Ready (fifo-layout.md §5): models loaded, input open.
        cli::notify_ready();
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
        if stage.stats.turn_checks > 0 {
            log::info!(
                "turn model: {} answers, inference {:.0} ms mean, {:.0} ms max",
                stage.stats.turn_checks,
                stage.stats.turn_check_total.as_secs_f64() * 1e3 / stage.stats.turn_checks as f64,
                stage.stats.turn_check_max.as_secs_f64() * 1e3
            );
        }
        Ok(())
    })
}

/// The turn model named by --turn-model, or None for silence alone: "off", or "auto" with the
/// provisioned file absent (one log line says so). A named file that is missing or fails to
/// load is an error.
fn load_turn_model(args: &Args) -> anyhow::Result<Option<turn_model::SmartTurn>> {
    let silence_only = format!("ending turns on silence alone (--eot-silence {} ms)", args.eot_silence);
    let path = match args.turn_model.as_str() {
        "off" | "" => {
            log::debug!("turn model off; {silence_only}");
            return Ok(None);
        }
        "auto" => {
            let p = turn_model::default_model_path();
            if !p.exists() {
                log::info!("turn model {} not found (scripts/setup installs it); {silence_only}", p.display());
                return Ok(None);
            }
            p
        }
        p => PathBuf::from(p),
    };
    if !path.is_file() {
        return Err(cli::fail(cli::exit::CONFIG, format!("turn model {} not found; run scripts/setup, or --turn-model off", path.display())));
    }
    let model = turn_model::SmartTurn::load(&path)?;
    log::info!(
        "turn model {}: asked at a {} ms pause; ends the turn after {} ms if p(complete) ≥ {}, else after {} ms",
        path.display(),
        args.turn_check,
        args.eot_complete,
        args.turn_threshold,
        args.eot_incomplete
    );
    Ok(Some(model))
}

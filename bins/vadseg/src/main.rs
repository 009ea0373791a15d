//! vadseg — the vad-segmenter: 48 kHz audio frames in; Silero VAD decides where the caller
//! speaks; out go `speech-start` (barge-in), the speech as 16 kHz audio frames tagged with the
//! turn id, and `speech-end` (end of turn). Every input event is forwarded unchanged.

mod chunker;
mod config;
mod endpoint;
mod onset;
mod echo_gate;
mod segmenter;
mod silero;
mod stage;
mod turn_model;

use config::Args;
use segmenter::SpeechSegmenter;
use tgvoice::cli;
use tgvoice::{FrameSource, TapFormat, TextView};

fn main() {
    let args: Args = tgvoice::cli::parse_args();
    cli::run("vadseg", &args.log.clone(), move || {
        args.check()?;
        let vad = silero::SileroVad::load()?;
        let turn_model = load_turn_model(&args)?;
        let cfg = args.segmenter_config(turn_model.is_some());
        log::debug!("{cfg:?}");
        if args.line == config::Line::Phone {
            log::info!(
                "phone line: a chunk is speech at Silero probability ≥ {}, a turn after {} ms of it (--line phone)",
                cfg.threshold,
                cfg.min_speech_ms
            );
        }
        let mut sink = args.link.open_output(TapFormat::Pcm, TextView::Events)?;
        let source = FrameSource::open(args.link.input())?;
        let worker = turn_model.map(turn_model::TurnWorker::spawn);
        let mut stage = stage::VadStage::new(vad, SpeechSegmenter::new(cfg), worker, args.answer_timeout());
        if let Some(cfg) = args.level_onset()? {
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
                    Ok(input) => stage.handle(input, &mut sink)?,
                    Err(_) => break,
                },
                recv(stop) -> _ => {
                    // What the reader already has is part of the turn: take it first (only
                    // that: a live input never runs dry).
                    for input in inputs.try_iter().take(inputs.len()) {
                        stage.handle(input, &mut sink)?;
                    }
                    break;
                }
            }
            if sink.is_closed() {
                log::info!("output closed; stopping");
                break;
            }
        }
        stage.finish(&mut sink)?;
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

/// The turn model named by --turn-model (see [`Args::turn_model_path`]), loaded; a file that
/// fails to load is an error.
fn load_turn_model(args: &Args) -> anyhow::Result<Option<turn_model::SmartTurn>> {
    let Some(path) = args.turn_model_path()? else { return Ok(None) };
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

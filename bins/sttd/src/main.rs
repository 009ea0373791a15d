//! sttd — the stt-worker: speech segments and turn events in (from vadseg), one final
//! transcript per turn out, with the engine (whisper.cpp through whisper-rs, or Moonshine
//! through ONNX Runtime) running on a worker thread so speech-start and cancel pass through at
//! once. See README.md for the tuning numbers.

use sttd::config::Args;
use sttd::worker::Transcriber;
use sttd::{guard, stage, worker};
use tgvoice::cli;
use tgvoice::{FrameSource, TapFormat, TextView};

fn main() {
    let args: Args = tgvoice::cli::parse_args();
    cli::run("sttd", &args.log.clone(), move || {
        let t0 = std::time::Instant::now();
        let (mut engine, model) = args.load_engine()?;
        log::info!("loaded {} in {:.0} ms: {}", model.display(), t0.elapsed().as_secs_f64() * 1e3, engine.describe());
        if args.check_model {
            let ms = engine.check()?;
            println!("ok: {} loads and runs ({ms:.0} ms for 1 s of silence; {})", model.display(), engine.describe());
            return Ok(());
        }
        // Warm up: an engine's first call allocates its buffers and is several times slower
        // than the next ones; pay that now rather than on the caller's first turn.
        log::debug!("warm-up call: {:.0} ms", engine.warm_up()?);
        let guard = guard::HallucinationGuard::new(args.guard_settings());
        let source = FrameSource::open(args.link.input())?;
        let sink = args.link.open_output(TapFormat::JsonLines, TextView::Transcripts)?;
        // Ready: the model is loaded and warm, the input and output are open.
        let worker = worker::TranscriptionWorker::spawn(engine)?;
        let mut stage = stage::SttStage::new(sink, worker, guard, args.early_settings());
        // Ready (fifo-layout.md §5): model loaded and warmed up, input open.
        cli::notify_ready();
        stage.run(source.spawn(), cli::graceful_stop());
        let stats = stage.stats.clone();
        let sink_stats = stage.into_output().finish();
        log::info!(
            "end of input: {} turns, {} transcripts ({} speculative), {} without speech, {} dropped; {} frames delivered",
            stats.turns, stats.transcripts, stats.early_reused, stats.rejected, stats.dropped, sink_stats.delivered
        );
        Ok(())
    })
}

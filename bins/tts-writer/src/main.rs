//! tts-writer — speaks reply chunks (frames from llm-relay, or plain text lines) with Piper,
//! espeak-ng, any command or a speech server (OpenAI-compatible, Wyoming, Edge TTS), and writes raw s16le 48 kHz mono paced in real time, stopping
//! within one frame on barge-in. See bins/tts-writer/README.md.

use clap::Parser;
use crossbeam_channel::unbounded;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tgvoice::cli::{self, exit, fail, LinkArgs, LogArgs};
use tgvoice::fifo::{is_fifo, FifoWriter, Tap};
use tgvoice::{Format, FrameSink, TapFormat};
use tts_writer::engine::{self, EngineConfig, EngineKind};
use tts_writer::player::{FifoOut, Player, PlayerConfig};
use tts_writer::report::Reporter;
use tts_writer::turns::TurnController;

#[derive(Parser, Debug)]
#[command(
    version,
    mut_arg("format", |a| a.env("TGVOICE_TTS_FORMAT")),
    about = "Speak reply chunks (frames or text lines) as raw s16le 48 kHz mono, paced in real time",
    after_help = exit::after_help(&format!("{}\n\n{}", "\
Engines:
  piper      the Piper voice en_US-joe-medium run through ONNX Runtime (scripts/setup installs it)
  espeak-ng  espeak-ng through libespeak-ng, or the espeak-ng program (zero setup)
  command    any program that prints WAV (or raw s16le with --command-raw-rate) for the text
             on its stdin (or as its last argument with --command-arg)
  auto       piper if installed, else espeak-ng (default)
  openai     an OpenAI-compatible speech server: POST <--tts-url>/audio/speech (OpenAI,
             Kokoro-FastAPI, LocalAI, openedai-speech), the audio played as it arrives
  wyoming    a Wyoming service at --tts-url tcp://HOST:PORT (wyoming-piper: port 10200)
  edge       Microsoft Edge's online voices through the edge-tts program (--edge-voice)
  openai, wyoming and edge send the reply's text to that server (edge: to Microsoft).

Examples:
  echo 'hello there' | tts-writer | ffplay -nodisp -autoexit -f s16le -ar 48000 -ac 1 -
  echo 'hello there' | tts-writer --engine espeak-ng --fill-silence | aplay -f S16_LE -r 48000 -c 1
  tts-writer --input $RUN/reply.frames --output $RUN/tg_output.raw
  tts-writer --engine command --command 'espeak-ng --stdout -v en-gb' < lines.txt > out.raw
  tts-writer --unpaced --output-format frames < reply.frames | framecat   # replies with boundaries
  tts-writer --engine openai --tts-url http://127.0.0.1:8880/v1 --tts-model kokoro --tts-voice af_heart
  TGVOICE_TTS_API_KEY=sk-... tts-writer --engine openai --tts-url https://api.openai.com/v1
  tts-writer --engine wyoming --tts-url tcp://127.0.0.1:10200
  tts-writer --engine edge --edge-voice en-GB-SoniaNeural
  tts-writer --engine command --command-arg --command 'say -o /dev/stdout --data-format=LEI16@22050' --command-raw-rate 22050

Each reply logs one latency line at its first audio (end of speech → transcript → first LLM
token → first chunk → first audio) and appends it, and what was played of each reply, as JSON
lines to <state dir>/metrics.jsonl.\n\nReadiness (fifo-layout.md §5): with TGVOICE_NOTIFY_FD=N (scripts/supervise sets it), one\nnewline on fd N, then fd N closed, once the voice is loaded and its input is open; at any log level.\n\n\
Raw audio goes to a pipe, FIFO or file; to a terminal tts-writer refuses (exit 2) and names\n\
the player command to pipe it into. --format applies to --output-format frames.", tgvoice::render::output_help(tgvoice::TextView::Events)), &[(exit::FAILURE, ""), (exit::USAGE, "raw audio to a terminal, or --format without --output-format frames"), (exit::UNAVAILABLE, "the engine is missing, or the Wyoming service is unreachable or lacks the voice"), (exit::CONFIG, "an unsafe link path, a bad TGVOICE_TTS_ENGINE value, or a --tts-key-file others can read")])
)]
struct Args {
    #[command(flatten)]
    link: LinkArgs,
    /// Speech engine.
    #[arg(short, long, value_enum, default_value = "auto", env = "TGVOICE_TTS_ENGINE")]
    engine: EngineKind,
    /// Piper voice model (.onnx; its config is <model>.json)
    /// [default: $TGVOICE_MODELS/piper/en_US-joe-medium.onnx].
    #[arg(long, value_name = "ONNX", env = "TGVOICE_PIPER_MODEL")]
    piper_model: Option<PathBuf>,
    /// ONNX Runtime threads for Piper (1 was fastest on a busy 2-core machine).
    #[arg(long, default_value_t = 1, value_name = "N")]
    piper_threads: usize,
    /// Speak each sentence in one piece (by default the first clause of a chunk is spoken on
    /// its own, which cuts the time to first audio).
    #[arg(long)]
    piper_whole_sentences: bool,
    /// espeak-ng voice.
    #[arg(long, default_value = "en-us", value_name = "VOICE")]
    espeak_voice: String,
    /// espeak-ng speed in words per minute.
    #[arg(long, default_value_t = 175, value_name = "WPM")]
    espeak_speed: u32,
    /// Program for --engine command, run with `sh -c`; it must print WAV on stdout.
    #[arg(long, value_name = "CMDLINE")]
    command: Option<String>,
    /// Pass the text as the command's last argument instead of on its stdin.
    #[arg(long)]
    command_arg: bool,
    /// The command prints raw s16le mono at this rate instead of WAV.
    #[arg(long, value_name = "HZ")]
    command_raw_rate: Option<u32>,
    /// The server of --engine openai (the API base, e.g. https://api.openai.com/v1 or
    /// http://127.0.0.1:8880/v1) or --engine wyoming (tcp://HOST:PORT).
    #[arg(long, value_name = "URL", env = "TGVOICE_TTS_URL")]
    tts_url: Option<String>,
    /// --engine openai: the model.
    #[arg(long, default_value = "tts-1", value_name = "NAME", env = "TGVOICE_TTS_MODEL")]
    tts_model: String,
    /// --engine openai: the voice [default: alloy]; --engine wyoming: one the service lists
    /// [default: the service's own].
    #[arg(long, value_name = "NAME", env = "TGVOICE_TTS_VOICE")]
    tts_voice: Option<String>,
    /// --engine openai: `response_format` asked for: pcm (raw s16le mono at --tts-rate) or wav.
    #[arg(long, value_enum, default_value = "pcm", value_name = "FORMAT")]
    tts_format: engine::openai::WireFormat,
    /// --engine openai: the rate of pcm answers (OpenAI's and Kokoro's: 24000).
    #[arg(long, default_value_t = 24_000, value_name = "HZ", value_parser = clap::value_parser!(u32).range(8000..=192_000))]
    tts_rate: u32,
    /// --engine openai: `speed` (0.25–4.0; not sent unless given).
    #[arg(long, value_name = "X")]
    tts_speed: Option<f32>,
    /// --engine openai: read the API key from this file (mode 0600) instead of
    /// $TGVOICE_TTS_API_KEY. Without a key no Authorization header is sent.
    #[arg(long, value_name = "PATH")]
    tts_key_file: Option<PathBuf>,
    /// Server engines: the longest wait for a connection, the answer, or the next piece of
    /// audio (ms); past it the chunk is skipped with one log line.
    #[arg(long, default_value_t = 4000, value_name = "MS", value_parser = clap::value_parser!(u64).range(100..=60_000))]
    tts_timeout: u64,
    /// --engine edge: the voice (`edge-tts --list-voices` lists them).
    #[arg(long, default_value = "en-US-AriaNeural", value_name = "VOICE", env = "TGVOICE_TTS_EDGE_VOICE")]
    edge_voice: String,
    /// Most audio kept ahead of real time in the output (ms); a cancel is heard within this.
    #[arg(long, default_value_t = 60, value_name = "MS", value_parser = clap::value_parser!(u64).range(20..=1000))]
    lead_ms: u64,
    /// Pacing granularity (ms of audio per write). 10 ms matches what the bridge sends per call
    /// and bounds the audio that can race a cancel to 10 ms + the fade.
    #[arg(long, default_value_t = 10, value_name = "MS", value_parser = clap::value_parser!(u64).range(5..=20))]
    frame_ms: u64,
    /// Fade-out length on a cut (ms).
    #[arg(long, default_value_t = 4, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=20))]
    fade_ms: u64,
    /// Barge-in: a reply paused by speech-onset/speech-start that no `resume`, `speech-void` or
    /// `cancel` settles within this is cancelled (ms). Longer waits out a slow decider (sttd +
    /// llm-relay); shorter frees a stalled reply sooner. 0 = no pausing: speech-start cancels at
    /// once and the onset events are ignored.
    #[arg(long, default_value_t = 4000, env = "TGVOICE_TTS_PAUSE_TIMEOUT_MS", value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pause_timeout: u64,
    /// On resume after a false alarm, play again about this much (ms) of what came before the
    /// pause (from the quietest point up to 250 ms earlier), so the listener keeps the thread.
    #[arg(long, default_value_t = 300, env = "TGVOICE_TTS_RESUME_REPLAY_MS", value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=2000))]
    resume_replay: u64,
    /// Speak the first chunk of a reply llm-relay holds (`reply-ahead`, sent while the caller's
    /// turn is not yet confirmed) at once and keep it, so it plays without waiting for the
    /// engine when the turn is confirmed. Costs CPU for replies that are then dropped.
    #[arg(long, default_value = "on", env = "TGVOICE_TTS_SPEAK_AHEAD", value_parser = ["on", "off"])]
    speak_ahead: String,
    /// Write silence when there is nothing to say (for ffplay/aplay; the bridge does not need it).
    #[arg(long)]
    fill_silence: bool,
    /// Write audio as fast as the output takes it, not in real time (files, the voice-message
    /// pipeline); --lead-ms no longer applies.
    #[arg(long)]
    unpaced: bool,
    /// raw: s16le 48 kHz mono (for the call; never to a terminal). frames: 48 kHz audio frames
    /// with the turn id and a `reply-played` event after each reply's last audio, so a reader
    /// knows where a reply ends (written as --format says).
    #[arg(long, value_enum, default_value = "raw", value_name = "FORMAT")]
    output_format: OutputFormat,
    /// Report playback to llm-relay on this FIFO (the played.frames link): `reply-progress
    /// {turn, played_ms}` at each reply's first audio and every 500 ms of its audio, and
    /// `reply-played` when it ended or was cut off, so the relay knows whether a reply is
    /// playing instead of guessing. Dropped while nobody reads it.
    #[arg(long, value_name = "PATH")]
    played: Option<PathBuf>,
    /// Send call control to the line owner on this FIFO (the line.frames link): `hangup` and
    /// `transfer` from llm-relay, each once the audio of the replies before it is written
    /// (fifo-layout.md "Call control").
    #[arg(long, value_name = "PATH")]
    line: Option<PathBuf>,
    /// Where metrics.jsonl goes [default: ~/.local/state/tgvoice/default].
    #[arg(long, value_name = "DIR", env = "TGVOICE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Raw,
    Frames,
}

fn main() {
    let args: Args = tgvoice::cli::parse_args();
    cli::run("tts-writer", &args.log.clone(), move || speak(args))
}

fn speak(args: Args) -> anyhow::Result<()> {
    if args.engine != EngineKind::Command && (args.command.is_some() || args.command_raw_rate.is_some()) {
        return Err(fail(exit::USAGE, "--command/--command-raw-rate need --engine command"));
    }
    if !matches!(args.engine, EngineKind::Openai | EngineKind::Wyoming) && args.tts_url.is_some() && std::env::var_os("TGVOICE_TTS_URL").is_none() {
        return Err(fail(exit::USAGE, "--tts-url needs --engine openai or --engine wyoming"));
    }
    let key = if args.engine == EngineKind::Openai { engine::wire::api_key(args.tts_key_file.as_deref())? } else { None };
    let cfg = EngineConfig {
        kind: args.engine,
        piper_model: args.piper_model.clone().unwrap_or_else(engine::default_piper_model),
        piper_threads: args.piper_threads,
        piper_whole_sentences: args.piper_whole_sentences,
        espeak_voice: args.espeak_voice.clone(),
        espeak_speed: args.espeak_speed,
        command: args.command.clone(),
        command_arg: args.command_arg,
        command_raw_rate: args.command_raw_rate,
        server: engine::ServerConfig {
            url: args.tts_url.clone(),
            model: args.tts_model.clone(),
            voice: args.tts_voice.clone(),
            format: args.tts_format,
            pcm_rate: args.tts_rate,
            speed: args.tts_speed,
            key,
            timeout: Duration::from_millis(args.tts_timeout),
            edge_voice: args.edge_voice.clone(),
        },
    };
    // The output is checked before the voice is loaded, so a refusal comes at once.
    let out = FifoWriter::open(args.link.output())?;
    let frames = match args.output_format {
        OutputFormat::Frames => Some(Format::resolve(args.link.format, out.is_terminal())),
        OutputFormat::Raw if args.link.format.is_some() => {
            return Err(cli::bad_value::<Args>(&["--format"], "--format applies to --output-format frames; raw audio has one format"));
        }
        OutputFormat::Raw if out.is_terminal() => return Err(tgvoice::render::raw_audio_refused("tts-writer", tts_writer::player::RATE)),
        OutputFormat::Raw => None,
    };
    let engine = engine::select(&cfg)?;
    log::info!("speaking with {}", engine.name());
    let tap_path = args.link.tap.clone().or_else(|| {
        let p = args.link.output.as_ref().filter(|p| is_fifo(p))?;
        let tap = Tap::path_for(p);
        is_fifo(&tap).then_some(tap)
    });
    let state_dir = args.state_dir.clone().unwrap_or_else(|| tgvoice::paths::instance_state_dir("default"));
    let reporter = Reporter::new(Some(state_dir.as_path()), engine.name());
    let barrier = Arc::new(AtomicU64::new(0));
    let player = Player::new(
        PlayerConfig {
            frame: (tts_writer::player::RATE as u64 * args.frame_ms / 1000) as usize,
            lead: Duration::from_millis(args.lead_ms),
            fade: Duration::from_millis(args.fade_ms),
            fill_silence: args.fill_silence,
            unpaced: args.unpaced,
            frames,
            pause_timeout: Duration::from_millis(args.pause_timeout),
            replay: Duration::from_millis(args.resume_replay),
        },
        Box::new(FifoOut::new(out)),
        tap_path.map(Tap::new),
        reporter,
        barrier.clone(),
    );
    let played = args.played.as_ref().map(|p| FrameSink::open(tgvoice::Endpoint::Path(p.clone()), None, TapFormat::JsonLines)).transpose()?;
    let player = match &played {
        Some(sink) => player.with_playback_reports(sink.handle()),
        None => player,
    };
    let line = args.line.as_ref().map(|p| FrameSink::open(tgvoice::Endpoint::Path(p.clone()), None, TapFormat::JsonLines)).transpose()?;
    let player = match &line {
        Some(sink) => player.with_line(sink.handle()),
        None => player,
    };

    let (job_tx, job_rx) = unbounded();
    let (player_tx, player_rx) = unbounded();
    let synth_player = player_tx.clone();
    let synth_barrier = barrier.clone();
    let mut controller = TurnController::new(job_tx, player_tx, barrier, args.pause_timeout > 0);
    controller.speak_ahead = args.speak_ahead == "on";
    let asked = controller.asked.clone();
    let synth = std::thread::Builder::new()
        .name("synth".into())
        .spawn(move || tts_writer::synth::run(engine, job_rx, synth_player, synth_barrier, asked))?;
    let playing = std::thread::Builder::new().name("player".into()).spawn(move || player.run(player_rx))?;

    let reading = tts_writer::input::spawn(args.link.input(), move |item| controller.handle(item))?;
    // Ready (fifo-layout.md §5): the voice is loaded and the input open.
    tgvoice::cli::notify_ready();
    // The player finishes when input ended and everything was spoken, or when stdout closed.
    let finished = playing.join().map_err(|_| anyhow::anyhow!("player thread panicked"))?;
    if finished {
        let _ = reading.join();
        let _ = synth.join();
    }
    Ok(())
}

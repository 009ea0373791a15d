//! tgcat — the framer: raw s16le 48 kHz mono (FIFO, file, stdin) or any WAV in, 20 ms audio
//! frames out. With a named FIFO as input it survives the writer (tg-bridge) restarting;
//! `--realtime` paces file input at real time (a WAV becomes a simulated caller);
//! `--control FIFO` merges the bridge's events (call-start/end) into the output.

mod pcm_input;

use clap::Parser;
use std::path::PathBuf;
use tgvoice::cli::{self, exit, LinkArgs, LogArgs};
use tgvoice::sink::SinkHandle;
use tgvoice::{Endpoint, Frame, FrameSource, TapFormat, TextView};

#[derive(Parser, Debug)]
#[command(
    version,
    mut_arg("format", |a| a.env("TGCAT_FORMAT")),
    about = "Frame raw 48 kHz PCM or a WAV file into tgvoice audio frames",
    after_help = exit::after_help(&format!("{}\n\n{}", "Examples:\n  tgcat question.wav | framecat\n  tgcat --realtime question.wav | vadseg | sttd\n  sox -d -t raw -r 48000 -e signed -b 16 -c 1 - | tgcat - | vadseg | sttd\n  tgcat --control $RUN/control.frames -o $RUN/audio.frames $RUN/tg_input.raw\n\nRaw input must be s16le, 48 kHz, mono. WAV input may have any rate and channel count;\nit is mixed to mono and resampled to 48 kHz.\n\nReadiness (fifo-layout.md §5): with TGVOICE_NOTIFY_FD=N (scripts/supervise sets it), one\nnewline on fd N, then fd N closed, once its output is open and it starts reading its input; at any log level.", tgvoice::render::output_help(TextView::Events)), &[(exit::FAILURE, ""), (exit::DATA, "the input is already frames"), (exit::CONFIG, "an unsafe link path")])
)]
struct Args {
    /// Raw PCM or WAV: a file, a named FIFO, or "-" for stdin.
    #[arg(default_value = "-")]
    input: PathBuf,
    #[command(flatten)]
    link: LinkArgs,
    /// Pace file/stdin input at real time (one 20 ms frame every 20 ms).
    #[arg(long)]
    realtime: bool,
    /// Frame length in milliseconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(5..=200))]
    frame_ms: u32,
    /// Also read event frames (call-start/call-end from tg-bridge) from this FIFO and merge
    /// them into the output.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Seconds of silence to append after file input (lets a downstream VAD see the end).
    #[arg(long, default_value_t = 0.0)]
    trailing_silence: f64,
    #[command(flatten)]
    log: LogArgs,
}

fn main() {
    let args: Args = tgvoice::cli::parse_args();
    cli::run("tgcat", &args.log.clone(), move || {
        let sink = args.link.open_output(TapFormat::Pcm, TextView::Events)?;
        if let Some(control) = &args.control {
            spawn_control_merge(control.clone(), sink.handle())?;
        }
        let opts = pcm_input::Options {
            realtime: args.realtime,
            frame_samples: (pcm_input::RATE * args.frame_ms / 1000) as usize,
            trailing_silence_s: args.trailing_silence,
        };
        let input = Endpoint::from_arg(Some(&args.input));
        // Ready (fifo-layout.md §5): no model to load; the input is opened next.
        cli::notify_ready();
        let stats = pcm_input::frame_input(input, &opts, |f| {
            sink.send(Frame::Audio(f));
            !sink.is_closed()
        })?;
        let sink_stats = sink.finish();
        log::info!(
            "end of input: {} frames ({:.2} s of audio); {} delivered, {} dropped",
            stats.frames,
            stats.samples as f64 / pcm_input::RATE as f64,
            sink_stats.delivered,
            sink_stats.dropped_no_reader + sink_stats.dropped_overflow
        );
        Ok(())
    })
}

/// Forward every event of the control FIFO into our output (the bridge's call-start/end).
fn spawn_control_merge(path: PathBuf, sink: SinkHandle) -> anyhow::Result<()> {
    let source = FrameSource::open(Endpoint::Path(path.clone()))?;
    std::thread::Builder::new().name("control".into()).spawn(move || {
        // A flood of control events costs a few log lines per kind, not one per event.
        let mut limit = tgvoice::log::LogLimit::new();
        for frame in source {
            match frame {
                Frame::Event(e) => {
                    let line = e.to_json_line();
                    let shown = &line[..line.floor_char_boundary(300)];
                    limit.log(log::Level::Info, "control event", format_args!("control: {shown}"));
                    sink.send(Frame::Event(e));
                }
                Frame::Audio(_) => limit.log(
                    log::Level::Warn,
                    "control audio",
                    format_args!("ignoring an audio frame on control link {}", path.display()),
                ),
            }
        }
    })?;
    Ok(())
}

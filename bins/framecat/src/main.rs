//! framecat — the inspector: reads any frame stream and prints one JSON line per frame
//! (audio summarised), or with `--pcm` writes the audio payloads as raw PCM for ffplay/sox.
//! Given something that is not a frame stream it exits 65 at once, saying what it saw.

use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use tgvoice::cli::{self, exit, LogArgs};
use tgvoice::source::{FrameSource, Item, Mode};
use tgvoice::{Endpoint, Frame};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Print a tgvoice frame stream as JSON lines, or its audio as raw PCM",
    after_help = exit::after_help("Examples:\n  tgcat question.wav | framecat | head\n  tgcat question.wav | vadseg | framecat --pcm | ffplay -f s16le -ar 16000 -ac 1 -\n  framecat --events-only < $RUN/text.frames\n\nAudio lines look like {\"type\":\"audio\",\"rate\":48000,\"channels\":1,\"samples\":960,...};\nevent lines are the event's own JSON.", &[(exit::FAILURE, ""), (exit::DATA, "the input is not a frame stream (the message says what it looks like)"), (exit::CONFIG, "an unsafe link path")])
)]
struct Args {
    /// Frame stream to read: a file, a named FIFO, or "-" for stdin.
    #[arg(default_value = "-")]
    input: PathBuf,
    /// Write audio payloads as raw s16le PCM instead of JSON lines (events are skipped); never
    /// to a terminal (exit 2, naming the player to pipe it into).
    #[arg(long, conflicts_with = "events_only")]
    pcm: bool,
    /// Print only events (no audio lines).
    #[arg(long)]
    events_only: bool,
    #[command(flatten)]
    log: LogArgs,
}

fn main() {
    let args: Args = tgvoice::cli::parse_args();
    cli::run("framecat", &args.log.clone(), move || inspect(&args))
}

fn inspect(args: &Args) -> anyhow::Result<()> {
    // Strict: bad input before the first frame fails at once (exit 65), saying what it is.
    let mut source = FrameSource::open_with(Endpoint::from_arg(Some(&args.input)), Mode::FramesStrict)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut pcm_rate: Option<u32> = None;
    // Raw audio to a terminal is refused at the first audio frame, whose rate the advice names.
    let to_terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    while let Some(item) = source.try_next_item()? {
        let written = match (&item, args.pcm) {
            (Item::Frame(Frame::Audio(a)), true) => {
                if pcm_rate.is_none() && to_terminal {
                    return Err(tgvoice::render::raw_audio_refused("framecat --pcm", a.sample_rate));
                }
                if pcm_rate.is_some_and(|r| r != a.sample_rate) {
                    log::warn!("sample rate changed to {} Hz mid-stream", a.sample_rate);
                }
                pcm_rate = Some(a.sample_rate);
                out.write_all(&a.pcm_bytes())
            }
            (Item::Frame(Frame::Audio(_)), false) if args.events_only => Ok(()),
            (Item::Frame(f), false) => writeln!(out, "{}", tgvoice::render::json_line(f)),
            (Item::Frame(Frame::Event(_)), true) | (Item::WriterGone | Item::Line(_), _) => Ok(()),
        };
        if written.is_err() {
            return Ok(()); // stdout closed (e.g. `| head`)
        }
        // Flush before the source blocks on a read, so a live FIFO is shown as it flows.
        if !source.has_buffered() && out.flush().is_err() {
            return Ok(());
        }
    }
    let _ = out.flush(); // a closed stdout at the end is still a quiet end
    Ok(())
}

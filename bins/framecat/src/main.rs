//! framecat — the inspector: reads any frame stream and prints one JSON line per frame
//! (audio summarised), or with `--pcm` writes the audio payloads as raw PCM for ffplay/sox.
//! Given something that is not a frame stream it exits 65 at once, saying what it saw.

use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use tgvoice::cli::{self, exit, fail, LogArgs};
use tgvoice::fifo::{ByteInput, Endpoint, ReadOutcome};
use tgvoice::frame::{DecodeError, FrameDecoder};
use tgvoice::source::BadInputLog;
use tgvoice::Frame;

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
    /// Write audio payloads as raw s16le PCM instead of JSON lines (events are skipped).
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
    let endpoint = Endpoint::from_arg(Some(&args.input));
    let label = endpoint.describe("stdin");
    let mut input = ByteInput::open(endpoint)?;
    let mut decoder = FrameDecoder::new();
    let mut errors = BadInputLog::new(label.clone());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut buf = vec![0u8; 64 * 1024];
    let mut pcm_rate: Option<u32> = None;
    loop {
        let outcome = input.read(&mut buf)?;
        match outcome {
            ReadOutcome::Data(n) => decoder.push(&buf[..n]),
            ReadOutcome::WriterGone | ReadOutcome::End => {
                if outcome == ReadOutcome::WriterGone {
                    log::info!("writer of {label} went away; waiting for it to return");
                }
                if let Some(e) = decoder.finish() {
                    not_a_stream(&decoder, &e, &label)?;
                    errors.report(&e);
                }
            }
        }
        while let Some(r) = decoder.next() {
            let frame = match r {
                Ok(f) => f,
                Err(e) => {
                    not_a_stream(&decoder, &e, &label)?;
                    errors.report(&e);
                    continue;
                }
            };
            let written = match (&frame, args.pcm) {
                (Frame::Audio(a), true) => {
                    if pcm_rate.is_some_and(|r| r != a.sample_rate) {
                        log::warn!("sample rate changed to {} Hz mid-stream", a.sample_rate);
                    }
                    pcm_rate = Some(a.sample_rate);
                    out.write_all(&a.pcm_bytes())
                }
                (Frame::Event(_), true) => Ok(()),
                (Frame::Audio(_), false) if args.events_only => Ok(()),
                (Frame::Audio(a), false) => {
                    let line = summarise(a);
                    writeln!(out, "{line}")
                }
                (Frame::Event(e), false) => writeln!(out, "{}", e.to_json_line()),
            };
            if written.is_err() {
                return Ok(()); // stdout closed (e.g. `| head`)
            }
        }
        // Flush per read, so a live FIFO is shown as it flows.
        if out.flush().is_err() || outcome == ReadOutcome::End {
            return Ok(());
        }
    }
}

fn summarise(a: &tgvoice::AudioFrame) -> String {
    let rms = if a.samples.is_empty() {
        0.0
    } else {
        (a.samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / a.samples.len() as f64).sqrt()
    };
    serde_json::json!({
        "type": "audio",
        "rate": a.sample_rate,
        "channels": a.channels,
        "samples": a.samples.len() / a.channels.max(1) as usize,
        "ms": a.duration_us() as f64 / 1000.0,
        "turn": a.turn,
        "capture_us": a.capture_us,
        "index": a.sample_index,
        "rms": (rms * 10.0).round() / 10.0,
    })
    .to_string()
}

/// Before the first valid frame, bad input means "this is not a frame stream": fail at once.
fn not_a_stream(decoder: &FrameDecoder, e: &DecodeError, label: &str) -> anyhow::Result<()> {
    if decoder.seen_frame() {
        return Ok(());
    }
    let what = match e {
        DecodeError::Garbage { looks_like, .. } => {
            format!("it looks like {}; {}", looks_like.describe(), looks_like.advice())
        }
        DecodeError::Truncated { .. } => "it ends inside the first frame".to_string(),
        other => other.to_string(),
    };
    Err(fail(exit::DATA, format!("{label} is not a tgvoice frame stream: {what}")))
}

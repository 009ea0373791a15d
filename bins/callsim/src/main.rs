//! callsim — a simulated caller. It stands where tg-bridge stands: every 10 ms it writes one
//! chunk of the caller's voice (or silence) into `$RUN/tg_input.raw` without ever blocking
//! (mirrored into `tg_input.tap` while someone reads it, so `voicecall tap tg_input` works in
//! `demo`), and polls `$RUN/tg_output.raw` for the assistant's voice. It says each WAV of its script,
//! waits for the reply, and reports per turn what was heard and answered and how long the
//! assistant took (voice-to-voice), plus barge-in stop and resume times. Used by `voicecall demo`, the
//! fault and barge-in tests and the end-to-end benchmark. With a `line.frames` FIFO in the run
//! directory its `call-start` has `controls: ["end"]`, and a `hangup` there ends the call once
//! the goodbye has been read out of `tg_output.raw` (`call-end {reason: "ended"}`; the summary
//! says `"ended_by": "assistant"`).

mod timeline;

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use tgvoice::cli::{self, exit, LogArgs};
use timeline::{CallScript, Caller};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Simulated caller: speak WAVs into a running pipeline and measure the replies",
    after_help = exit::after_help("TURN is a WAV file to say after the previous reply has finished, or\n\
barge:MS:FILE to start saying FILE MS milliseconds after the previous reply began\n\
(talking over it). Prints one JSON line per turn and a summary line on stdout.\n\n\
Example:\n  callsim --run-dir $RUN --record call.wav q1.wav barge:800:q2.wav", &[(exit::FAILURE, ""), (exit::CONFIG, "an unsafe link in the run directory")])
)]
struct Args {
    /// The pipeline's run directory (holds tg_input.raw, tg_output.raw, control.frames, and
    /// line.frames when tts-writer sends call control: then the assistant can end the call).
    #[arg(long, env = "TGVOICE_RUN_DIR")]
    run_dir: PathBuf,
    /// What the caller says, in order.
    #[arg(required = true, value_name = "TURN")]
    turns: Vec<String>,
    /// Write the call as a stereo WAV (left: caller, right: assistant).
    #[arg(long, value_name = "WAV")]
    record: Option<PathBuf>,
    /// Write only the assistant's voice as a mono 48 kHz WAV.
    #[arg(long, value_name = "WAV")]
    record_reply: Option<PathBuf>,
    /// A reply is over after this much output silence (seconds).
    #[arg(long, default_value_t = 1.5)]
    reply_silence: f64,
    /// Give up waiting for a reply after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    reply_timeout: f64,
    /// Silence before the first turn (seconds), so every stage is connected.
    #[arg(long, default_value_t = 1.0)]
    lead_in: f64,
    /// Do not send call-start/call-end on control.frames.
    #[arg(long)]
    no_call_events: bool,
    /// Feed the assistant's voice back into the caller's input at this gain (dB, e.g. -10), as
    /// a speakerphone without echo cancellation would (`voicecall mic` with speakers).
    #[arg(long, value_name = "DB", allow_hyphen_values = true, value_parser = parse_echo_gain)]
    echo_gain_db: Option<f64>,
    /// Delay of that echo (ms, on top of the 10 ms tick).
    #[arg(long, default_value_t = 50, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=2000))]
    echo_delay_ms: u64,
    #[command(flatten)]
    log: LogArgs,
}

fn parse_echo_gain(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (-60.0..=0.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between -60 and 0 dB".into())
    }
}

fn main() {
    let args: Args = tgvoice::cli::parse_args();
    cli::run("callsim", &args.log.clone(), move || {
        // The media path of a call gets priority over bulk compute, as tg-bridge's should.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } != 0 {
            log::debug!("could not raise priority (not permitted); measuring at normal priority");
        }
        let script = CallScript::parse(&args.turns)?;
        let mut caller = Caller::new(&args.run_dir, script, args.reply_silence, args.reply_timeout)
            .with_context(|| format!("cannot attach to the pipeline in {}", args.run_dir.display()))?;
        if let Some(db) = args.echo_gain_db {
            caller = caller.with_echo(db, args.echo_delay_ms);
        }
        let report = caller.run(args.lead_in, !args.no_call_events)?;
        for turn in &report.turns {
            println!("{}", serde_json::to_string(turn)?);
        }
        println!("{}", serde_json::to_string(&report.summary)?);
        if let Some(path) = &args.record {
            caller.write_stereo(path)?;
        }
        if let Some(path) = &args.record_reply {
            tgvoice::resample::write_wav_mono(path, tgvoice::audio::RATE, caller.assistant_track())?;
        }
        Ok(())
    })
}

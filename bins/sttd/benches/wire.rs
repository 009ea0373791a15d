//! What the engines over the wire cost (issue 28): the time from the end of a turn (sttd is
//! sent its speech-end) to its final transcript, for `--engine openai` and `--engine wyoming`
//! against the stand-in servers (bins/sttd/tests/standin_stt.py on 127.0.0.1) answering after
//! a fixed delay, beside the local Whisper tiny.en. Each configuration runs one sttd and
//! `STTD_BENCH_RUNS` (default 7) turns of espeak-ng speech (a 2 s question), speculation off so
//! every turn is decoded at its end; the median and the spread are printed with the load.
//!
//! `cargo bench -p sttd --bench wire` (sttd built; the venv's wyoming package, scripts/setup).
//! `STTD_BENCH_DELAYS=0,200` the stand-in's delays in ms. The numbers mean something only on
//! a machine that is otherwise idle: the load average is printed before and after.

#[path = "../tests/common/mod.rs"]
mod common;

use common::standin::StandIn;
use common::*;
use std::time::{Duration, Instant};
use tgvoice::event::kind;

fn load3() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Milliseconds from each turn's speech-end to its final transcript, and the texts.
fn measure(args: &[String], runs: usize, speech: &[i16]) -> (Vec<f64>, Vec<String>) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sttd = Sttd::spawn(&args);
    let (mut ms, mut texts) = (vec![], vec![]);
    // One turn first, not counted: the engine's first call.
    for turn in 0..=runs as u64 {
        let mut frames = segment(turn + 1, speech);
        let end = frames.pop().unwrap();
        sttd.send(&frames);
        // Let the audio reach sttd's stage before the clock starts.
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        sttd.send(&[end]);
        loop {
            let (t, e) = sttd.wait_event(kind::TRANSCRIPT, Duration::from_secs(60)).expect("a transcript");
            if e.get_bool("final") == Some(true) {
                assert_eq!(e.turn, Some(turn + 1));
                if turn > 0 {
                    ms.push((t - t0).as_secs_f64() * 1e3);
                    texts.push(e.text.unwrap_or_default());
                }
                break;
            }
        }
    }
    let _ = sttd.finish();
    (ms, texts)
}

fn summary(name: &str, ms: &[f64]) {
    let mut v = ms.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{name:<34} median {:7.1} ms   min {:7.1}   max {:7.1}   (n = {}, load {})", v[v.len() / 2], v[0], v[v.len() - 1], v.len(), load3());
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("STTD_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let delays: Vec<u64> = std::env::var("STTD_BENCH_DELAYS").unwrap_or_else(|_| "0,200".into()).split(',').filter_map(|d| d.trim().parse().ok()).collect();
    let speech = speak("What time does the train leave for London", 150);
    println!("load before: {}", load3());
    let quiet: Vec<String> = ["--speculate-after", "0"].iter().map(|s| s.to_string()).collect();
    let (ms, texts) = measure(&quiet, runs, &speech);
    summary("whisper tiny.en (local)", &ms);
    println!("  e.g. {:?}", texts[0]);
    for protocol in ["openai", "wyoming"] {
        for &delay in &delays {
            let server = StandIn::start(protocol, &["--texts", "What time does the train leave for London?", "--delay-ms", &delay.to_string()]);
            let mut args = server.sttd_args();
            args.extend(quiet.iter().cloned());
            let (ms, _) = measure(&args, runs, &speech);
            summary(&format!("{protocol}, stand-in delay {delay} ms"), &ms);
        }
    }
    println!("load after: {}", load3());
}

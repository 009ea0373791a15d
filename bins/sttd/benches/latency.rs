//! sttd latency benchmark: time from `speech-end` to the transcript, per utterance duration
//! (1, 3, 8, 20 s) and over the 12 WER utterances (~3 s each), for three settings:
//! untuned (30 s encoder window, no speculation), audio_ctx sized to the segment, and the
//! default (sized audio_ctx + speculative decoding at the first pause). Also WER per setting
//! and sttd's peak RSS. Input is paced like vadseg output: 32 ms frames in real time, then
//! vadseg's 600 ms end-of-turn wait, then its 200 ms post-roll and `speech-end` at once.
//!
//! Run: `cargo build --release -p sttd && cargo bench -p sttd --bench latency`

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::time::{Duration, Instant};
use tgvoice::event::kind;

const EOT_WAIT: Duration = Duration::from_millis(600);

struct Turn {
    label: String,
    text: String,
    audio: Vec<i16>,
}

/// Feed one turn in real time; return (ms from speech-end to transcript, transcript text).
fn run_turn(sttd: &mut Sttd, turn: u64, audio: &[i16]) -> (f64, String) {
    let pre = vec![0i16; PRE_ROLL_MS * RATE as usize / 1000];
    let post = vec![0i16; POST_ROLL_MS * RATE as usize / 1000];
    sttd.send(&[speech_start(turn)]);
    let t0 = Instant::now();
    let mut sent = 0usize;
    let speech: Vec<i16> = pre.iter().chain(audio.iter()).copied().collect();
    for frame in audio_frames(turn, &speech, 0) {
        sttd.send(&[frame]);
        sent += 512;
        let due = t0 + Duration::from_micros(sent as u64 * 1_000_000 / RATE as u64);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    std::thread::sleep(EOT_WAIT);
    let mut tail = audio_frames(turn, &post, speech.len() as u64);
    tail.push(speech_end(turn));
    sttd.send(&tail);
    let end = Instant::now();
    match sttd.wait_event(kind::TRANSCRIPT, Duration::from_secs(120)) {
        Some((t, e)) => (t.duration_since(end).as_secs_f64() * 1e3, e.text.unwrap_or_default()),
        None => (f64::NAN, String::new()),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let wpm = 135;
    let mut turns = vec![];
    let by_duration: [(&str, &[&str]); 4] = [
        ("1 s", &["Hello there"]),
        ("3 s", &[UTTERANCES[1]]),
        ("8 s", &UTTERANCES[2..5]),
        ("20 s", &UTTERANCES[3..11]),
    ];
    for (label, texts) in by_duration {
        let text = texts.join(". ");
        turns.push(Turn { label: label.into(), audio: speak(&text, wpm), text });
    }
    for (i, text) in UTTERANCES.iter().enumerate() {
        turns.push(Turn { label: format!("wer{i}"), text: text.to_string(), audio: speak(text, wpm) });
    }
    let configs: [(&str, &[&str]); 3] = [
        ("untuned (30 s window)", &["--audio-ctx", "full", "--speculate-after", "0"]),
        ("audio_ctx=fit", &["--speculate-after", "0"]),
        ("fit + speculative (default)", &[]),
    ];
    let mut summary = vec![];
    for (name, args) in configs {
        let mut sttd = Sttd::spawn(args);
        let (mut errors, mut words) = (0, 0);
        let mut wer_latencies = vec![];
        println!("\n== {name} ==");
        for (i, t) in turns.iter().enumerate() {
            let secs = t.audio.len() as f64 / RATE as f64;
            let (ms, hyp) = run_turn(&mut sttd, i as u64 + 1, &t.audio);
            let (e, n) = word_errors(&t.text, &hyp);
            errors += e;
            words += n;
            if t.label.starts_with("wer") {
                wer_latencies.push(ms);
            } else {
                println!("{:>5} utterance ({secs:4.1} s): speech-end → transcript {ms:6.0} ms  ({e}/{n} word errors)", t.label);
            }
        }
        let rss = sttd.peak_rss_kib().unwrap_or(0);
        sttd.finish();
        let wer = errors as f64 / words as f64 * 100.0;
        let med = median(&mut wer_latencies);
        println!("12 WER utterances (~3 s): median speech-end → transcript {med:.0} ms, max {:.0} ms", wer_latencies.last().unwrap());
        println!("WER {wer:.1} % ({errors}/{words} words, all turns); sttd peak RSS {:.0} MiB", rss as f64 / 1024.0);
        summary.push(format!("{name:<28} median(3 s) {med:6.0} ms   WER {wer:5.1} %   peak RSS {:4.0} MiB", rss as f64 / 1024.0));
    }
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    println!("\n== summary (target: ≤ 400 ms for a 3 s turn, WER ≤ untuned + 1) ==");
    for s in summary {
        println!("{s}");
    }
    println!("getrusage(RUSAGE_CHILDREN).ru_maxrss: {:.0} MiB (largest child: sttd or espeak-ng)", ru.ru_maxrss as f64 / 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average during the run: {}", load.trim());
}

//! Pacing: a 10 s reply reaches the output FIFO at 1.00× real time (± 2 %), and the audio ahead
//! of real time never exceeds the configured lead: the bytes waiting in the pipe (FIONREAD,
//! sampled by the reader every 10 ms) stay ≤ 60 ms.

mod common;
use common::*;
use std::time::{Duration, Instant};

const TEN_SECONDS: &str = "Pacing matters for a live call. The bridge plays whatever arrives, so the \
writer must deliver speech exactly as fast as it is heard, keeping only a small lead, so that \
a barge in silences it at once.";

fn paced_run(lead_ms: u64) -> (f64, f64, usize, f64) {
    let lead = lead_ms.to_string();
    let mut w = LiveWriter::start(&["--engine", "espeak-ng", "--lead-ms", &lead]);
    w.send(&chunk(1, 0, TEN_SECONDS));
    w.send(&reply_end(1));
    let LiveWriter { dir: _dir, mut reader, child, stdin } = w;
    drop(stdin);

    let mut got = vec![];
    let start = Instant::now();
    while got.is_empty() {
        reader.read_available(&mut got, Duration::from_millis(2));
        assert!(start.elapsed() < Duration::from_secs(60), "no audio within 60 s");
    }
    let t0 = Instant::now();
    let first_bytes = got.len();
    let (mut max_unread, mut max_lead_ms) = (0usize, 0f64);
    let mut last_data = t0;
    let mut t_last = t0;
    // Read every 10 ms like a real-time consumer, until 500 ms pass without data.
    while last_data.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(10));
        max_unread = max_unread.max(reader.unread());
        if reader.read_available(&mut got, Duration::ZERO) > 0 {
            let now = Instant::now();
            last_data = now;
            t_last = now;
            let ahead_ms = got.len() as f64 / 96.0 - now.duration_since(t0).as_secs_f64() * 1000.0;
            max_lead_ms = max_lead_ms.max(ahead_ms);
        }
    }
    let out = wait_with_timeout(child, Duration::from_secs(30));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let audio_s = got.len() as f64 / 96_000.0;
    let rate = ((got.len() - first_bytes) as f64 / 96_000.0) / t_last.duration_since(t0).as_secs_f64();
    (audio_s, rate, max_unread, max_lead_ms)
}

#[test]
fn ten_second_reply_is_written_at_real_time_within_the_lead() {
    require_espeak();
    let (audio_s, rate, max_unread, max_lead_ms) = paced_run(60);
    eprintln!("audio {audio_s:.2} s, rate {rate:.4}x, max unread {max_unread} B, max lead {max_lead_ms:.1} ms");
    assert!(audio_s >= 10.0, "the reply is only {audio_s:.2} s");
    assert!((0.98..=1.02).contains(&rate), "written at {rate:.4}x real time");
    assert!(max_unread <= 60 * 96, "{max_unread} bytes waited in the pipe (> 60 ms)");
    // (max_lead_ms, bytes received vs. time since the reader's first read, is printed only:
    // it also counts the reader's own wake-up delay for that first read.)
}

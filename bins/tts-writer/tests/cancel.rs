//! Barge-in: during a long reply, a cancel (or speech-start) frame stops the output within one
//! 20 ms frame, measured on the output FIFO, and the cut is a short fade, not a click.

mod common;
use common::*;
use std::time::{Duration, Instant};
use tgvoice::Event;

const LONG: &str = "Once upon a time, in a small village by the sea, there lived an old fisherman \
who told long stories every evening. The children gathered around him to listen, and he spoke \
of storms, of whales, and of distant islands where the sand was as white as snow. Nobody knew \
whether any of it was true, but everybody loved to hear it again and again.";

struct CancelRun {
    /// Bytes that reached the output after the cancel was written, beyond what was already
    /// waiting in the pipe at that instant.
    after_cancel: usize,
    /// Output received before the cancel (samples).
    before: Vec<i16>,
    all: Vec<i16>,
    metrics: Vec<serde_json::Value>,
}

fn cancel_during_reply(engine_args: &[&str], cancel: Event) -> CancelRun {
    let mut w = LiveWriter::start(engine_args);
    w.send(&chunk(1, 0, LONG));
    let mut got = vec![];
    // Wait for the reply to start, then let it play for 1 s.
    w.play_for(&mut got, 1000);
    // The cancel, and at that instant what the output already held (read + still in the pipe).
    w.send(&event_bytes(cancel));
    let LiveWriter { dir, mut reader, child, stdin } = w;
    let mark = got.len() + reader.unread();
    let before_len = got.len();
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(600) {
        reader.read_available(&mut got, Duration::from_millis(5));
    }
    drop(stdin);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    CancelRun {
        after_cancel: got.len().saturating_sub(mark),
        before: samples(&got[..before_len]),
        all: samples(&got),
        metrics: metrics(dir.path()),
    }
}

fn assert_clean_stop(r: &CancelRun) {
    eprintln!("after cancel: {} bytes; before: {} samples; last sample {}", r.after_cancel, r.before.len(), r.all.last().unwrap());
    // ≤ one 20 ms frame (960 samples, 1920 bytes) written after the cancel.
    assert!(r.after_cancel <= 1920, "{} bytes ({:.1} ms) written after the cancel", r.after_cancel, r.after_cancel as f64 / 96.0);
    // Precondition: the cancel came mid-reply (≥ 0.5 s had been written; a busy machine may
    // make a synthesis gap within the first second).
    assert!(r.before.len() > 24_000, "the reply was playing before the cancel ({} samples)", r.before.len());
    // A fade, not a click: the output ends at (near) zero, and no step in its last 5 ms is
    // larger than the largest step the speech itself made before.
    let all = &r.all;
    let last = *all.last().unwrap() as i32;
    assert!(last.abs() <= 64, "output ends at {last}, not faded out");
    let max_step = |s: &[i16]| s.windows(2).map(|w| (w[1] as i32 - w[0] as i32).abs()).max().unwrap_or(0);
    let tail = &all[all.len().saturating_sub(240)..];
    let speech_steps = max_step(&r.before[r.before.len().saturating_sub(48_000)..]);
    assert!(max_step(tail) <= speech_steps, "tail step {} > speech step {speech_steps}", max_step(tail));
    assert!(rms(&r.before) > 500.0, "the reply before the cancel was audible");
}

fn assert_reported(r: &CancelRun) {
    let played = r.metrics.iter().find(|v| v["type"] == "reply-played").expect("reply-played record");
    assert_eq!(played["cancelled"], true);
    // What tts-writer reports as played = what reached the output (before + fade), ± 1 frame.
    let ms = played["played_ms"].as_f64().unwrap();
    let seen_ms = r.all.len() as f64 / 48.0;
    assert!((ms - seen_ms).abs() <= 10.0, "reported {ms} ms played, the output got {seen_ms} ms");
    let text = played["played_text"].as_str().unwrap();
    assert!(!text.is_empty() && text.len() < LONG.len() / 2 && LONG.starts_with(text), "played text {text:?}");
}

#[test]
fn cancel_frame_stops_espeak_ng_within_one_frame_with_a_fade() {
    require_espeak();
    let r = cancel_during_reply(&["--engine", "espeak-ng"], Event::new("cancel").with_turn(1));
    assert_clean_stop(&r);
    assert_reported(&r);
}

#[test]
fn speech_start_stops_piper_within_one_frame_and_drops_pending_synthesis() {
    let model = piper_model();
    let r = cancel_during_reply(&["--engine", "piper", "--piper-model", model.to_str().unwrap()], Event::new("speech-start").with_turn(2));
    assert_clean_stop(&r);
    assert_reported(&r);
}

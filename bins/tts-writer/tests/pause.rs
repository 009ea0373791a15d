//! Barge-in, pause first: `speech-onset` silences the reply at once — including the lead the
//! output pipe already held — and keeps its place; `speech-void`/`resume` goes on from a little
//! before it; a pause nobody settles becomes a cancel after `--pause-timeout`.

mod common;
use common::*;
use std::time::{Duration, Instant};
use tgvoice::Event;

const LONG: &str = "This is a long reply that keeps talking for several seconds, so that the caller \
can cough over it, and the writer must pause at once, keep its place, and then either go on \
from where it was or drop the rest when nobody says otherwise.";

struct PauseRun {
    /// Bytes the reader got from the onset until the decision (or the end of the wait).
    during_pause: usize,
    all: Vec<i16>,
    metrics: Vec<serde_json::Value>,
}

/// Speak LONG, let it play 1 s, send `onset`, wait `pause`, then send `decision` (if any) and
/// read to the end.
fn pause_during_reply(extra: &[&str], onset: Event, pause: Duration, decision: Option<Event>) -> PauseRun {
    require_espeak();
    let args: Vec<&str> = ["--engine", "espeak-ng"].iter().chain(extra).copied().collect();
    let mut w = LiveWriter::start(&args);
    w.send(&chunk(1, 0, LONG));
    w.send(&reply_end(1));
    let mut got = vec![];
    w.play_for(&mut got, 1000);
    w.send(&event_bytes(onset));
    let at_onset = got.len();
    let t = Instant::now();
    while t.elapsed() < pause {
        w.reader.read_available(&mut got, Duration::from_millis(5));
    }
    let during_pause = got.len() - at_onset;
    if let Some(d) = decision {
        w.send(&event_bytes(d));
    }
    let LiveWriter { dir, mut reader, mut child, stdin } = w;
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = reader.read_available(&mut got, Duration::from_millis(20));
        if child.try_wait().unwrap().is_some() && n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "tts-writer did not finish");
    }
    let out = wait_with_timeout(child, Duration::from_secs(10));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PauseRun { during_pause, all: samples(&got), metrics: metrics(dir.path()) }
}

#[test]
fn speech_onset_pauses_at_once_and_speech_void_resumes_the_whole_reply() {
    let r = pause_during_reply(
        &[],
        Event::new("speech-onset").with_turn(2),
        Duration::from_millis(800),
        Some(Event::new("speech-void").with_turn(2)),
    );
    eprintln!("during the pause: {} bytes", r.during_pause);
    // The lead in the pipe (up to 60 ms = 5760 bytes) was taken back: at most the fade and a
    // frame racing the onset reach the listener.
    assert!(r.during_pause <= 1920, "{} bytes ({:.1} ms) heard after the onset", r.during_pause, r.during_pause as f64 / 96.0);
    let played = r.metrics.iter().find(|v| v["type"] == "reply-played").expect("reply-played record");
    assert_eq!(played["cancelled"], false, "{played}");
    assert_eq!(played["played_text"], LONG, "the whole reply was played: {played}");
    // Everything was heard once, and a little of it (the replay, 300 ms ± the seek) twice.
    let heard_ms = r.all.len() as f64 / 48.0;
    let synthesized_ms = played["synthesized_ms"].as_f64().unwrap();
    assert!(
        heard_ms >= synthesized_ms + 250.0 && heard_ms <= synthesized_ms + 700.0,
        "heard {heard_ms:.0} ms of a {synthesized_ms:.0} ms reply (expected the replay on top)"
    );
}

#[test]
fn a_pause_nobody_settles_is_cancelled_after_the_pause_timeout() {
    let r = pause_during_reply(&["--pause-timeout", "500"], Event::new("speech-start").with_turn(2), Duration::from_millis(1500), None);
    assert!(r.during_pause <= 1920, "{} bytes heard after the speech-start", r.during_pause);
    let played = r.metrics.iter().find(|v| v["type"] == "reply-played").expect("reply-played record");
    assert_eq!(played["cancelled"], true, "{played}");
    let text = played["played_text"].as_str().unwrap();
    assert!(!text.is_empty() && text.len() < LONG.len() / 2, "played text {text:?}");
    // Nothing after the pause: what was heard is what was played before it (± the fade).
    let heard_ms = r.all.len() as f64 / 48.0;
    assert!((played["played_ms"].as_f64().unwrap() - heard_ms).abs() <= 10.0, "{played} vs {heard_ms:.0} ms heard");
}

#[test]
fn pause_timeout_zero_keeps_the_old_cancel_on_speech_start() {
    let r = pause_during_reply(&["--pause-timeout", "0"], Event::new("speech-start").with_turn(2), Duration::from_millis(300), Some(Event::new("resume").with_turn(2)));
    let played = r.metrics.iter().find(|v| v["type"] == "reply-played").expect("reply-played record");
    assert_eq!(played["cancelled"], true, "speech-start cancelled at once; a resume cannot bring it back: {played}");
}

//! `--engine wyoming`: against a real wyoming-piper (PyPI wyoming-piper 2.5.2, serving the
//! project's own Piper voice on 127.0.0.1, restarted between replies), and against a stand-in
//! that frames events exactly as wyoming 1.10.2 does (binary payloads): the audio is played as
//! it arrives, failures cost one reply and one log line each, a barge-in closes the connection.

mod common;
use common::standin_tts::*;
use common::*;
use std::net::TcpListener;
use std::time::{Duration, Instant};

fn wyoming_args(url: &str) -> Vec<String> {
    ["--engine", "wyoming", "--tts-url", url, "--tts-timeout", "1500"].iter().map(|s| s.to_string()).collect()
}

fn start(url: &str, extra: &[&str]) -> Framed {
    let mut args = wyoming_args(url);
    args.extend(extra.iter().map(|s| s.to_string()));
    Framed::start(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
}

/// The real wyoming-piper (Python, CPU-heavy while it loads the voice) and the barge-in
/// measurement (a frame bound on a 2-core machine) do not run at the same time.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The whole stand-in answer arrived at 48 kHz (± 1 %), the tone and not silence.
fn assert_whole(r: &Reply, ms: u32) {
    let want = 48.0 * ms as f64;
    assert!((r.audio.len() as f64 - want).abs() < 0.01 * want, "{} samples, want {want}", r.audio.len());
    let rms = rms(&r.audio);
    assert!((5000.0..6000.0).contains(&rms), "rms {rms}: the 8000-amplitude tone is 5657");
}

#[test]
fn a_real_wyoming_piper_speaks_and_a_restart_between_replies_is_survived() {
    let _alone = alone();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let service = wyoming_piper(port, data.path());
    let url = format!("tcp://127.0.0.1:{port}");
    // The default --tts-timeout (4 s): wyoming-piper loads the voice at its first synthesize
    // (about 1 s here, more on a busy machine), after each restart too.
    let mut w = Framed::start(&["--engine", "wyoming", "--tts-url", &url], &[]);
    let text = "The weather today is mild, with a light breeze from the west.";
    let first = w.reply(1, text);
    let voices = w.log_lines(&format!("Wyoming service at {url}:"));
    assert!(voices.iter().any(|l| l.contains("voice(s)") && l.contains("en_US-joe-medium")), "the voices are logged: {voices:?}");
    // Piper's joe voice says this in about 3.5 s; speech, not silence.
    let secs = first.audio.len() as f64 / RATE;
    assert!((2.0..6.0).contains(&secs), "{secs:.2} s of audio");
    assert!(rms(&first.audio) > 500.0, "rms {}", rms(&first.audio));
    assert_eq!(first.played["cancelled"], false);

    // The service restarts between replies: the kept connection is replaced, the reply plays.
    drop(service);
    let service = wyoming_piper(port, data.path());
    let second = w.reply(2, text);
    assert!(w.log_lines("could not speak").is_empty(), "{:?}", w.log_lines("could not speak"));
    assert_eq!(w.log_lines("reconnecting").len(), 1, "one reconnect");
    // The same text in the same voice: the same length within 10 % (Piper's noise varies it).
    let (a, b) = (first.audio.len() as f64, second.audio.len() as f64);
    assert!((a - b).abs() < 0.1 * a, "{a} vs {b} samples");
    assert!(w.finish().success());
    drop(service);
}

#[test]
fn first_audio_plays_while_the_service_is_still_answering() {
    let (open, gate) = gate();
    let bytes = tone(WYOMING_RATE, 1000);
    let service = Wyoming::start(vec![Act::Audio { first: bytes.len() / 2, audio: bytes, gate: Some(gate) }]);
    let mut w = start(&service.url(), &["--tts-voice", "test-voice"]);
    w.ask(1, "Hello there.");
    let (at, frame) = w.next_frame(Duration::from_secs(10)).expect("audio before the service's answer ended");
    let tgvoice::Frame::Audio(a) = frame else { panic!("{frame:?}") };
    assert!(service.seen.lock().unwrap().finished.is_empty(), "the service's answer had not ended");
    open.send(()).unwrap();
    let mut r = w.collect(1);
    r.audio.splice(0..0, a.samples);
    assert!(at < service.seen.lock().unwrap().finished[0]);
    assert_whole(&r, 1000);
    let seen = service.seen.lock().unwrap();
    let kinds: Vec<&str> = seen.requests.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["describe", "synthesize"]);
    assert_eq!(seen.requests[1].1, serde_json::json!({ "text": "Hello there.", "voice": { "name": "test-voice" } }));
    drop(seen);
    assert!(w.finish().success());
}

#[test]
fn a_service_that_is_down_or_lacks_the_voice_is_refused_at_start_in_one_line() {
    let state = tempfile::tempdir().unwrap();
    let down = format!("tcp://127.0.0.1:{}", free_port());
    let service = Wyoming::start(vec![]);
    for (url, voice, says) in [(&down, None, "Connection refused"), (&service.url(), Some("nobody"), "has no voice \"nobody\"; it offers: test-voice")] {
        let mut args = vec!["--engine", "wyoming", "--tts-url", url.as_str()];
        if let Some(v) = voice {
            args.extend(["--tts-voice", v]);
        }
        let out = run_with_input(&args, b"", state.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains(says) && lines[0].contains(url.as_str()), "{err}");
    }
}

#[test]
fn a_failing_service_costs_one_reply_and_one_log_line_each_and_the_next_reply_plays() {
    let service = Wyoming::start(vec![
        Act::Fail(0, "'text'".into()),
        Act::Garbage(b"<html><body>Bad Gateway</body></html>\n".to_vec()),
        Act::CloseAfter { audio: tone(WYOMING_RATE, 1000), bytes: 8192 },
        Act::Stall(Duration::from_secs(10)),
        Act::Audio { audio: tone(WYOMING_RATE, 600), first: 0, gate: None },
    ]);
    let mut w = start(&service.url(), &[]);
    let cases = [
        ("error event", "the service said: 'text' (KeyError)", 0),
        ("garbage", "not a Wyoming event", 0),
        ("close mid-stream", "closed the connection", 4 * 2048 * 48_000 / 2 / WYOMING_RATE as usize),
        ("slow", "nothing from the service for 1500 ms", 0),
    ];
    for (i, (what, says, played)) in cases.iter().enumerate() {
        let turn = i as u64 + 1;
        let t = Instant::now();
        let r = w.reply(turn, "Say something.");
        assert!(t.elapsed() < Duration::from_secs(5), "{what}: took {:?}", t.elapsed());
        let lines = w.log_lines(&format!("could not speak chunk 0 of turn {turn}:"));
        assert_eq!(lines.len(), 1, "{what}: one log line: {lines:?}");
        assert!(lines[0].contains(says) && lines[0].contains(&service.url()), "{what}: {:?} should say {says:?}", lines[0]);
        assert!(r.audio.len().abs_diff(*played) < 100, "{what}: {} samples played, want {played}", r.audio.len());
    }
    let r = w.reply(5, "Back to normal.");
    assert_whole(&r, 600);
    let open = w.connections_to(service.port);
    assert!(open <= 1, "{open} connections to the service left open");
    assert!(w.finish().success());
}

#[test]
fn barge_in_during_a_streamed_answer_stops_the_audio_and_closes_the_connection() {
    let _alone = alone();
    let service = Wyoming::start(vec![Act::Paced { audio: tone(WYOMING_RATE, 8000), rate: WYOMING_RATE, speed: 2 }]);
    let args = wyoming_args(&service.url());
    barge_in(&args.iter().map(String::as_str).collect::<Vec<_>>(), &service.seen, "closed the connection to the Wyoming service");
}

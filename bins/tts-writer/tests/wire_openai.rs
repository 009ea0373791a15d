//! `--engine openai` against a stand-in `/v1/audio/speech` server on 127.0.0.1: the audio is
//! played as it arrives (before the server's answer ends), PCM and streamed WAV are both read
//! at their own rate, the key is sent as a bearer token and never logged; a server that is
//! down, slow, failing, talking nonsense or hanging up costs one reply and one log line, and
//! the next reply plays; a barge-in stops the audio and drops the request.

mod common;
use common::standin_tts::*;
use common::*;
use std::time::{Duration, Instant};

/// 48 kHz samples for `ms` of audio.
fn at48(ms: u32) -> usize {
    48 * ms as usize
}

fn openai_args(base: &str) -> Vec<String> {
    ["--engine", "openai", "--tts-url", base, "--tts-timeout", "1500"].iter().map(|s| s.to_string()).collect()
}

fn start(base: &str, extra: &[&str], env: &[(&str, &str)]) -> Framed {
    let mut args = openai_args(base);
    args.extend(extra.iter().map(|s| s.to_string()));
    Framed::start(&args.iter().map(String::as_str).collect::<Vec<_>>(), env)
}

/// The whole reply arrived: its length is the stand-in's audio at 48 kHz (± the resampler's
/// few samples), and it is the tone, not silence.
fn assert_whole(r: &Reply, ms: u32) {
    let want = at48(ms) as f64;
    assert!((r.audio.len() as f64 - want).abs() < 0.01 * want, "{} samples, want {want}", r.audio.len());
    let rms = rms(&r.audio);
    assert!((5000.0..6000.0).contains(&rms), "rms {rms}: the 8000-amplitude tone is 5657");
    assert_eq!(r.played["cancelled"], false);
}

#[test]
fn first_audio_plays_while_the_server_is_still_answering() {
    let (open, gate) = gate();
    let server = Speech::start(vec![Act::Audio { audio: tone(24_000, 1000), first: 24_000, gate: Some(gate) }]);
    let w = start(&server.base_url(), &[], &[]);
    let mut w = w;
    w.ask(1, "Hello there, this is the first sentence.");
    // The server has sent half a second and waits; audio must come out now.
    let (at, frame) = w.next_frame(Duration::from_secs(10)).expect("audio before the server's answer ended");
    assert!(matches!(frame, tgvoice::Frame::Audio(_)), "{frame:?}");
    assert!(server.seen.lock().unwrap().finished.is_empty(), "the server's answer had not ended");
    open.send(()).unwrap();
    let mut r = w.collect(1);
    if let tgvoice::Frame::Audio(a) = frame {
        r.audio.splice(0..0, a.samples);
    }
    let ended = server.seen.lock().unwrap().finished[0];
    assert!(at < ended, "first audio {:?} before the answer ended", ended - at);
    assert_whole(&r, 1000);
    // The request is OpenAI's.
    let seen = server.seen.lock().unwrap();
    let (head, body) = &seen.requests[0];
    assert!(head.starts_with("POST /v1/audio/speech HTTP/1.1"), "{head}");
    assert_eq!(body["model"], "tts-1");
    assert_eq!(body["voice"], "alloy");
    assert_eq!(body["response_format"], "pcm");
    assert_eq!(body["input"], "Hello there, this is the first sentence.");
    assert!(body.get("speed").is_none(), "speed is not sent unless given");
    assert!(!head.to_ascii_lowercase().contains("authorization"), "no key, no Authorization header: {head}");
    drop(seen);
    assert!(w.finish().success());
}

#[test]
fn streamed_wav_is_read_at_its_own_rate_and_the_key_goes_as_a_bearer_token_unlogged() {
    let server = Speech::start(vec![
        Act::Audio { audio: streamed_wav(22_050, &tone(22_050, 800)), first: 10_000, gate: None },
        Act::Audio { audio: tone(16_000, 500), first: 0, gate: None },
    ]);
    let key = "sk-test-8f3a2c91d";
    let mut w = start(&server.base_url(), &["--tts-format", "wav", "--tts-model", "kokoro", "--tts-voice", "af_heart", "--tts-speed", "1.2"], &[("TGVOICE_TTS_API_KEY", key)]);
    assert_whole(&w.reply(1, "A WAV answer."), 800);
    let first_log = w.log.lock().unwrap().clone();
    let status = w.finish();
    assert!(status.success());
    {
        let seen = server.seen.lock().unwrap();
        let (head, body) = &seen.requests[0];
        assert!(head.contains(&format!("authorization: Bearer {key}")), "{head}");
        assert_eq!((body["model"].as_str(), body["voice"].as_str(), body["response_format"].as_str()), (Some("kokoro"), Some("af_heart"), Some("wav")));
        assert!((body["speed"].as_f64().unwrap() - 1.2).abs() < 1e-6);
    }

    // The key from a 0600 file; pcm at a rate given by flag.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, format!("{key}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut w2 = start(&server.base_url(), &["--tts-rate", "16000", "--tts-key-file", file.to_str().unwrap()], &[]);
    assert_whole(&w2.reply(1, "A PCM answer at 16 kHz."), 500);
    let log = w2.log.lock().unwrap().clone() + &first_log;
    assert!(w2.finish().success());
    assert!(server.seen.lock().unwrap().requests[1].0.contains(&format!("authorization: Bearer {key}")));
    assert!(!log.contains(key) && !log.contains("8f3a2c91d"), "the key is never logged:\n{log}");

    // A key file others can read: refused at start, one clear line, exit 78.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_with_input(&["--engine", "openai", "--tts-url", &server.base_url(), "--tts-key-file", file.to_str().unwrap()], b"", dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("chmod 600") && err.contains("--tts-key-file"), "{err}");
}

#[test]
fn a_failing_server_costs_one_reply_and_one_log_line_each_and_the_next_reply_plays() {
    // Down: a port nobody listens on (bound, then let go); the server comes up after turn 1.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let base = format!("http://127.0.0.1:{port}/v1");
    let mut w = start(&base, &[], &[]);
    let cases: [(&str, &str); 5] = [
        ("down", "Connection refused"),
        ("500", "HTTP 500"),
        ("garbage", "answered with text/html, not audio: <html><body>Bad Gateway"),
        ("close mid-stream", "broke off the audio"),
        ("slow", "no answer within 1500 ms"),
    ];
    let r = w.reply(1, "Nobody is listening.");
    assert!(r.audio.is_empty());
    let server = Speech::on(
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(),
        vec![
            Act::Fail(500, r#"{"error": {"message": "model overloaded"}}"#.into()),
            Act::Garbage(b"<html><body>Bad Gateway</body></html>".to_vec()),
            Act::CloseAfter { audio: tone(24_000, 1000), bytes: 9600 },
            Act::Stall(Duration::from_secs(10)),
            Act::Audio { audio: tone(24_000, 600), first: 0, gate: None },
        ],
    );
    let mut outcomes = vec![r];
    for turn in 2..=5 {
        let t = Instant::now();
        outcomes.push(w.reply(turn, "Say something."));
        assert!(t.elapsed() < Duration::from_secs(5), "turn {turn} took {:?}", t.elapsed());
    }
    for (i, ((what, cause), r)) in cases.iter().zip(&outcomes).enumerate() {
        let turn = i + 1;
        let lines = w.log_lines(&format!("could not speak chunk 0 of turn {turn}:"));
        assert_eq!(lines.len(), 1, "{what}: one log line for turn {turn}: {lines:?}");
        assert!(lines[0].contains(cause), "{what}: {:?} should say {cause:?}", lines[0]);
        assert!(lines[0].contains(&format!("127.0.0.1:{port}")), "{what}: the line names the server: {:?}", lines[0]);
        assert_eq!(r.played["turn"], turn as u64, "{what}: the reply was recorded");
        // Mid-stream: what came before the break was played (200 ms = 9600 bytes at 24 kHz).
        let played = if *what == "close mid-stream" { at48(200) } else { 0 };
        assert!(r.audio.len().abs_diff(played) < 100, "{what}: {} samples played, want {played}", r.audio.len());
    }
    // The next reply plays whole, and nothing is left open but (at most) the kept-alive connection.
    assert_whole(&w.reply(6, "Back to normal."), 600);
    let open = w.connections_to(port);
    assert!(open <= 1, "{open} connections to the server left open");
    assert!(w.finish().success());
    assert_eq!(server.seen.lock().unwrap().requests.len(), 5);
}

#[test]
fn barge_in_during_a_streamed_answer_stops_the_audio_and_drops_the_request() {
    let server = Speech::start(vec![Act::Paced { audio: tone(24_000, 8000), rate: 24_000, speed: 2 }]);
    let args = openai_args(&server.base_url());
    barge_in(&args.iter().map(String::as_str).collect::<Vec<_>>(), &server.seen, "dropped the request");
}

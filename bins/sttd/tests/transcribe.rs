//! sttd end to end with the real tiny.en model, fed segments framed as vadseg frames them
//! (speech-start, 16 kHz audio, speech-end) from espeak-ng speech: accuracy, silence and noise,
//! urgent events during a transcription, which turns are kept or dropped, and a missing model.
//!
//! Build first: `cargo build --release -p sttd -p whisper-convert` (model: scripts/setup).

mod common;

use common::*;
use std::time::{Duration, Instant};
use tgvoice::event::kind;
use tgvoice::Frame;

/// espeak-ng speaking rate (words per minute) for the test speech.
const WPM: u32 = 135;
/// The WER bound. tiny.en scores ~5.6 % on clean human read speech (LibriSpeech test-clean),
/// but espeak-ng's formant voice is far less natural: measured here, tiny.en makes 12-14 %
/// errors on these 97 words (12.4 % tuned, 14.4 % with the full 30 s window; greedy decoding
/// is deterministic), nearly all in three sentences espeak-ng pronounces ambiguously
/// ("brown fox", "the weather is nice", "sea shells"). 15 % fails on any real regression
/// (one more wrong sentence, a broken converter or mel filterbank gives 30 %+).
pub const MAX_WER: f64 = 15.0;

/// Generous: on a 2-core machine shared with parallel builds one call can take 40 s.
const TURN_TIMEOUT: Duration = Duration::from_secs(180);

/// Word error rate of tiny.en (through sttd, default tuned settings) on the 12 espeak-ng
/// utterances, which must stay at or under [`MAX_WER`].
#[test]
fn word_error_rate_on_espeak_utterances() {
    let mut sttd = Sttd::spawn(&[]);
    let (mut errors, mut total) = (0, 0);
    for (i, text) in UTTERANCES.iter().enumerate() {
        let turn = i as u64 + 1;
        sttd.send(&segment(turn, &speak(text, WPM)));
        let (_, e) = sttd.wait_event(kind::TRANSCRIPT, TURN_TIMEOUT).unwrap_or_else(|| panic!("no transcript for {text:?}"));
        assert_eq!(e.turn, Some(turn));
        assert_eq!(e.get_bool("final"), Some(true));
        assert!(e.trace.get("transcript").is_some() && e.trace.get("speech_end").is_some(), "trace: {:?}", e.trace);
        let hyp = e.text.clone().unwrap_or_default();
        let (err, n) = word_errors(text, &hyp);
        println!("turn {turn}: {err}/{n} errors  ref={text:?}  hyp={hyp:?}");
        errors += err;
        total += n;
    }
    let wer = errors as f64 / total as f64 * 100.0;
    println!("WER {wer:.1} % ({errors}/{total} words)");
    sttd.finish();
    assert!(wer <= MAX_WER, "WER {wer:.1} % exceeds {MAX_WER} %");
}

/// Silence and noise segments give no transcript, but their events are forwarded. Each case
/// runs in its own sttd, which finishes every pending transcription before exiting at the end
/// of stdin, so "no transcript" is not a matter of waiting long enough.
#[test]
fn silence_and_noise_yield_no_transcript() {
    let cases: Vec<(&str, Vec<i16>)> = vec![
        ("digital silence", vec![0; RATE as usize * 2]),
        ("faint hiss (-60 dBFS)", noise(RATE as usize * 2, 0.0017, 1)),
        ("white noise (-20 dBFS)", noise(RATE as usize * 2, 0.17, 2)),
        ("loud white noise (-10 dBFS)", noise(RATE as usize * 3, 0.55, 3)),
        ("short noise burst", noise(RATE as usize / 2, 0.3, 4)),
    ];
    for (name, audio) in &cases {
        let mut sttd = Sttd::spawn(&[]);
        sttd.send(&segment(1, audio));
        let events = sttd.finish();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        println!("{name}: {kinds:?}");
        // The turn is over without words: one final transcript with empty text says why.
        let transcripts: Vec<_> = events.iter().filter(|e| e.kind == kind::TRANSCRIPT).collect();
        assert_eq!(transcripts.len(), 1, "{name}: {events:?}");
        assert_eq!(transcripts[0].text.as_deref(), Some(""), "{name} produced words: {events:?}");
        assert_eq!(transcripts[0].get_bool("final"), Some(true));
        assert!(transcripts[0].get_str("no_speech").is_some_and(|w| !w.is_empty()), "{name}: no reason given");
        assert_eq!(kinds, vec![kind::SPEECH_START, kind::SPEECH_END, kind::TRANSCRIPT], "{name}: events are forwarded");
    }
    // The same guard lets real speech through.
    let mut sttd = Sttd::spawn(&[]);
    sttd.send(&segment(1, &speak("Good morning, how are you", WPM)));
    let events = sttd.finish();
    let transcripts: Vec<_> = events.iter().filter(|e| e.kind == kind::TRANSCRIPT).collect();
    assert_eq!(transcripts.len(), 1, "the speech turn is transcribed: {events:?}");
    let (err, _) = word_errors("good morning how are you", transcripts[0].text.as_deref().unwrap());
    assert!(err <= 1, "{:?}", transcripts[0].text);
}

/// While Whisper is busy with a long segment, speech-start and cancel come out within a few
/// ms. Neither drops the caller's finished words: a `cancel` without a turn and a new
/// `speech-start` stop replies only, so turn 1 and turn 2 are both transcribed, in order. An
/// explicit `cancel` naming a turn drops that turn.
#[test]
fn urgent_events_pass_while_transcribing_and_only_an_explicit_cancel_drops_a_turn() {
    let mut sttd = Sttd::spawn(&["--audio-ctx", "full"]);
    let long: Vec<i16> = UTTERANCES[..4].iter().flat_map(|t| speak(t, WPM)).collect();
    sttd.send(&segment(1, &long));
    // Let the worker start on turn 1 (a full-window decode takes ~1-2 s here).
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    sttd.send(&[Frame::Event(tgvoice::Event::new(kind::CANCEL))]);
    let (t_cancel, _) = sttd.wait_event(kind::CANCEL, Duration::from_secs(5)).expect("cancel forwarded");
    let sent2 = Instant::now();
    sttd.send(&[speech_start(2)]);
    let (t_start, _) = sttd.wait_event(kind::SPEECH_START, Duration::from_secs(5)).expect("speech-start forwarded");
    let cancel_ms = t_cancel.duration_since(sent).as_secs_f64() * 1e3;
    let start_ms = t_start.duration_since(sent2).as_secs_f64() * 1e3;
    println!("cancel forwarded in {cancel_ms:.1} ms, speech-start in {start_ms:.1} ms while whisper runs");
    // A full-window whisper call takes > 1 s here, so anything under 100 ms did not wait for it.
    assert!(cancel_ms < 100.0 && start_ms < 100.0);
    let text = "Please call me back when you get home tonight";
    sttd.send(&audio_frames(2, &speak(text, WPM), 0));
    sttd.send(&[speech_end(2)]);
    // Turn 3 ends while the worker is still busy, and is cancelled by name.
    sttd.send(&segment(3, &speak("This turn is withdrawn", WPM)));
    sttd.send(&[Frame::Event(tgvoice::Event::new(kind::CANCEL).with_turn(3))]);
    let events = sttd.finish();
    let transcripts: Vec<_> = events.iter().filter(|e| e.kind == kind::TRANSCRIPT).collect();
    let turns: Vec<Option<u64>> = transcripts.iter().map(|e| e.turn).collect();
    assert_eq!(turns, vec![Some(1), Some(2)], "turns 1 and 2 in order, turn 3 dropped: {transcripts:?}");
    assert!(word_errors(&UTTERANCES[..4].join(" "), transcripts[0].text.as_deref().unwrap()).0 <= 6, "{transcripts:?}");
    assert!(word_errors(text, transcripts[1].text.as_deref().unwrap()).0 <= 2);
}

/// Unknown events are forwarded unchanged.
#[test]
fn unknown_events_are_forwarded_unchanged() {
    let mut sttd = Sttd::spawn(&[]);
    let e = tgvoice::Event::new("x-custom").with("payload", serde_json::json!({"a": [1, 2]}));
    sttd.send(&[Frame::Event(e.clone())]);
    let events = sttd.finish();
    assert_eq!(events, vec![e]);
}

#[test]
fn missing_model_exits_69_with_a_hint() {
    let out = std::process::Command::new(tgvoice::testkit::bin_path("sttd"))
        .args(["--model", "/nonexistent/ggml-tiny.en.bin"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scripts/setup"), "{err}");
}

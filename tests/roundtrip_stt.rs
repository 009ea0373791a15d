//! The round trip: text → tts-writer (Piper and espeak-ng) → 48 kHz → resampled to 16 kHz →
//! sttd (whisper tiny.en) gives back the words.
//!
//! A system test: it needs both programs built (`cargo build --release -p sttd -p tts-writer`)
//! and the models from `scripts/setup`. The helpers are tts-writer's own test helpers.

#[path = "../bins/tts-writer/tests/common/mod.rs"]
mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;
use tgvoice::frame::{encode, FrameDecoder};
use tgvoice::resample::StreamResampler;
use tgvoice::testkit::{bin_path, cache_dir};
use tgvoice::{AudioFrame, Event, Frame};

const TEXT: &str = "Hello, this is a test of the speech system. Please call me back tomorrow morning.";

/// Speak TEXT with `engine_args`, transcribe it with sttd, return the transcript.
fn round_trip(engine_args: &[&str]) -> String {
    let state = tempfile::tempdir().unwrap();
    let out = run_with_input(engine_args, format!("{TEXT}\n").as_bytes(), state.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let at48 = samples(&out.stdout);
    let mut rs = StreamResampler::new(48_000, 16_000, 960).unwrap();
    let mut at16 = rs.process(&at48);
    at16.extend(rs.flush());

    // What vadseg would send: speech-start, 20 ms segments of the turn, speech-end.
    let turn = 1;
    let now = tgvoice::clock::now_us();
    let mut input = encode(&Frame::Event(Event::new("speech-start").with_turn(turn)));
    for (i, c) in at16.chunks(320).enumerate() {
        let mut a = AudioFrame::mono(16_000, c.to_vec());
        a.turn = turn;
        a.capture_us = now + i as u64 * 20_000;
        a.sample_index = i as u64 * 320;
        input.extend(encode(&Frame::Audio(a)));
    }
    let mut end = Event::new("speech-end").with_turn(turn);
    end.trace.mark("speech_end", now + at16.len() as u64 * 1_000_000 / 16_000);
    end.trace.mark_now("eot");
    input.extend(encode(&Frame::Event(end)));

    let model = cache_dir().join("models/ggml-tiny.en.bin");
    assert!(model.exists(), "{} missing: run scripts/setup", model.display());
    let mut child = Command::new(bin_path("sttd"))
        .arg("--model")
        .arg(&model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sttd");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    let out = wait_with_timeout(child, Duration::from_secs(120));
    feeder.join().unwrap();
    assert!(out.status.success(), "sttd: {}", String::from_utf8_lossy(&out.stderr));
    let mut dec = FrameDecoder::new();
    dec.push(&out.stdout);
    let mut transcript = None;
    while let Some(Ok(f)) = dec.next() {
        if let Frame::Event(e) = f {
            if e.is("transcript") && e.get_bool("final") != Some(false) {
                transcript = e.text.clone();
            }
        }
    }
    transcript.unwrap_or_else(|| panic!("sttd gave no transcript: {}", String::from_utf8_lossy(&out.stderr)))
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| w.to_lowercase()).collect()
}

fn assert_words_back(transcript: &str) {
    let heard = words(transcript);
    let expected = words(TEXT);
    let found = expected.iter().filter(|w| heard.contains(w)).count();
    assert!(found * 10 >= expected.len() * 8, "heard {transcript:?} for {TEXT:?} ({found}/{} words)", expected.len());
}

#[test]
fn piper_speech_is_understood_by_sttd() {
    let model = piper_model();
    assert_words_back(&round_trip(&["--engine", "piper", "--piper-model", model.to_str().unwrap()]));
}

#[test]
fn espeak_ng_speech_is_understood_by_sttd() {
    require_espeak();
    assert_words_back(&round_trip(&["--engine", "espeak-ng"]));
}

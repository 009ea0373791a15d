//! vadseg end to end on generated calls: espeak-ng speech, generated noise, the real Silero
//! model, fed through the real tgcat. Build first:
//! `cargo build --release -p tgcat -p framecat -p vadseg`.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use tgvoice::frame::encode;
use tgvoice::testkit::bin_path;
use tgvoice::{AudioFrame, Event, Frame};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn call_in_silence_gives_one_segment_per_utterance() {
    let dir = tempdir();
    let utts = sentences(dir.path());
    let call = build_call(&utts, 1.0, &[1.5, 2.0, 1.6, 2.5], 2.0);
    let out = run_call(dir.path(), "silence", &call.samples, &[]);
    assert_one_segment_per_utterance(&call, &out, "silence");
    // Turn ids are the onset capture time in ms and increase; events carry the trace.
    for w in out.segments.windows(2) {
        assert!(w[1].turn > w[0].turn);
    }
    for s in &out.segments {
        let start = s.start.trace.get("speech_start").expect("speech-start has trace.speech_start");
        assert_eq!(s.turn, start / 1000);
        let end = s.end.as_ref().unwrap();
        assert_eq!(end.trace.get("speech_start"), Some(start));
        assert!(end.trace.get("speech_end").unwrap() > start);
        assert!(end.trace.get("eot").is_some());
        // Pre-roll: the audio starts before the speech.
        assert!(s.first_capture_us < start);
    }
}

#[test]
fn call_in_pink_noise_gives_one_segment_per_utterance() {
    let dir = tempdir();
    let utts = sentences(dir.path());
    let mut call = build_call(&utts, 1.5, &[1.5, 1.8, 2.2, 1.5], 2.0);
    let noise = pink_noise(call.samples.len(), -20.0, 7);
    mix_noise(&mut call, &noise, 10.0);
    let out = run_call(dir.path(), "pink", &call.samples, &[]);
    assert_one_segment_per_utterance(&call, &out, "pink noise, SNR 10 dB");
}

#[test]
fn call_in_brown_noise_and_clicks_gives_one_segment_per_utterance() {
    let dir = tempdir();
    let utts = sentences(dir.path());
    let mut call = build_call(&utts, 1.5, &[2.0, 1.5, 1.7, 2.0], 2.0);
    let n = call.samples.len();
    let mut noise = brown_noise(n, -20.0, 11);
    for (x, c) in noise.iter_mut().zip(clicks(n, 2.0, 12)) {
        *x = x.saturating_add(c / 2);
    }
    mix_noise(&mut call, &noise, 10.0);
    let out = run_call(dir.path(), "brown", &call.samples, &[]);
    assert_one_segment_per_utterance(&call, &out, "brown noise + clicks, SNR 10 dB");
}

#[test]
fn sixty_seconds_of_noise_make_no_segment() {
    let dir = tempdir();
    let noise = noise_medley(42);
    assert_eq!(noise.len(), 60 * RATE as usize);
    let out = run_call(dir.path(), "noise", &noise, &[]);
    assert!(out.segments.is_empty(), "noise produced segments: {:?}", out.segments.iter().map(|s| s.span_48k()).collect::<Vec<_>>());
    assert_eq!(out.stray_audio, 0);
}

#[test]
fn silence_makes_no_segment() {
    let dir = tempdir();
    let out = run_call(dir.path(), "zeros", &vec![0; 20 * RATE as usize], &[]);
    assert!(out.segments.is_empty());
}

#[test]
fn long_monologue_is_cut_without_losing_audio() {
    let dir = tempdir();
    let utts = sentences(dir.path());
    // ~20 s of speech with short (0.3 s) pauses: one long turn under silence alone. (The turn
    // model would rightly end it after a finished sentence; this case is about --max-segment.)
    let mut list = vec![];
    for _ in 0..3 {
        list.extend(utts.iter().cloned());
    }
    let call = build_call(&list, 1.0, &[0.3], 2.0);
    let out = run_call(dir.path(), "monologue", &call.samples, &["--max-segment", "6", "--turn-model", "off"]);
    let spans: Vec<_> = out.segments.iter().map(|s| (secs(s.span_48k().0), secs(s.span_48k().1))).collect();
    eprintln!("pieces: {spans:?}");
    assert!(out.segments.len() >= 3, "expected several pieces, got {spans:?}");
    for w in out.segments.windows(2) {
        assert_eq!(w[1].first_index, w[0].end_index, "audio lost or repeated between pieces: {spans:?}");
        assert_eq!(w[0].end.as_ref().unwrap().get_bool("cut"), Some(true));
        assert_eq!(w[1].start.get_u64("continues"), Some(w[0].turn));
        assert!(w[1].turn > w[0].turn);
    }
    for s in &out.segments {
        assert!(s.samples <= 6 * 16_000 + 512, "piece longer than --max-segment: {spans:?}");
        assert_eq!(s.gaps, 0);
    }
    let (first, last) = (out.segments.first().unwrap().span_48k().0, out.segments.last().unwrap().span_48k().1);
    assert!(first <= call.spans[0].0 && last >= call.spans.last().unwrap().1, "speech not covered: {spans:?}");
    assert!(out.segments.last().unwrap().end.as_ref().unwrap().get_bool("cut").is_none());
}

#[test]
fn events_are_forwarded_unchanged_and_garbage_is_survived() {
    let dir = tempdir();
    let utts = sentences(dir.path());
    let call = build_call(&utts[..1], 0.5, &[1.5], 1.5);
    let mut input = vec![];
    let custom = Event::new("x-custom").with("payload", serde_json::json!({"a": [1, 2, 3]})).with_turn(7);
    input.extend(encode(&Frame::Event(Event::new("call-start").with("call", "c1"))));
    input.extend(b"this is not a frame".iter());
    input.extend(encode(&Frame::Event(custom.clone())));
    for (i, c) in call.samples.chunks(960).enumerate() {
        let f = AudioFrame {
            sample_rate: 48_000,
            channels: 1,
            turn: 0,
            capture_us: 1_700_000_000_000_000 + i as u64 * 20_000,
            sample_index: i as u64 * 960,
            samples: c.to_vec(),
        };
        input.extend(encode(&Frame::Audio(f)));
    }
    input.extend(encode(&Frame::Event(Event::new("call-end").with("call", "c1"))));
    let mut child = vadseg_command(&[]).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad input"), "garbage was not reported");
    let o = decode_output(&out.stdout);
    // Urgent events go ahead of whatever is still queued (fifo-layout.md "Priorities and
    // ordering"): with the whole input at once, the onset may overtake call-start. Each lane
    // keeps its own order.
    let urgent = ["speech-onset", "speech-start"];
    let lane = |want_urgent: bool| -> Vec<&Event> { o.events.iter().filter(|e| urgent.contains(&e.kind.as_str()) == want_urgent).collect() };
    let kinds = |es: &[&Event]| es.iter().map(|e| e.kind.clone()).collect::<Vec<_>>();
    let (ordered, urgent_lane) = (lane(false), lane(true));
    assert_eq!(kinds(&ordered), ["call-start", "x-custom", "speech-end", "call-end"]);
    assert_eq!(kinds(&urgent_lane), urgent);
    assert_eq!(urgent_lane[0].turn, urgent_lane[1].turn, "the onset reserves the turn's id");
    assert_eq!(ordered[1], &custom);
    assert_eq!(ordered[0].get_str("call"), Some("c1"));
    assert_eq!(o.segments.len(), 1);
    assert_eq!(o.segments[0].start.trace.get("speech_start").unwrap() / 1000, o.segments[0].turn);
}

#[test]
fn missing_or_bad_onnx_runtime_is_one_clear_error() {
    let dir = tempdir();
    let bogus = dir.path().join("libonnxruntime.so.1.22.1");
    std::fs::write(&bogus, b"not a library").unwrap();
    for (path, expect) in [
        (dir.path().join("nope/libonnxruntime.so").display().to_string(), "ONNX Runtime not found at"),
        (bogus.display().to_string(), "cannot be loaded"),
        ("/lib/x86_64-linux-gnu/libc.so.6".to_string(), "is not ONNX Runtime"),
    ] {
        if !std::path::Path::new(&path).exists() && expect == "is not ONNX Runtime" {
            continue;
        }
        let out = Command::new(bin_path("vadseg")).env("ORT_DYLIB_PATH", &path).stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{path}: {err}");
        assert!(err.contains(expect) && err.contains("scripts/setup") && err.contains("onnxruntime==1.22.1"), "{path}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn speech_tap_carries_the_segments_as_raw_16k_pcm() {
    let dir = tempdir();
    let utts = sentences(dir.path());
    let call = build_call(&utts[..2], 0.5, &[1.5], 1.5);
    let wav = dir.path().join("tap.wav");
    tgvoice::resample::write_wav_mono(&wav, RATE, &call.samples).unwrap();
    let link = dir.path().join("speech.frames");
    let tap = dir.path().join("speech.tap");
    tgvoice::fifo::ensure_fifo(&link).unwrap();
    tgvoice::fifo::ensure_fifo(&tap).unwrap();
    // Readers first (as ffplay and sttd would be): opening a FIFO waits for its writer.
    let (l, t) = (link.clone(), tap.clone());
    let frames = std::thread::spawn(move || std::fs::read(l).unwrap());
    let pcm = std::thread::spawn(move || std::fs::read(t).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut tgcat = Command::new(bin_path("tgcat")).arg(&wav).arg("-q").stdout(Stdio::piped()).spawn().unwrap();
    let st = Command::new(bin_path("vadseg"))
        .arg("-o")
        .arg(&link)
        .env("ORT_DYLIB_PATH", ort_dylib())
        .stdin(tgcat.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    tgcat.wait().unwrap();
    let frames = frames.join().unwrap();
    let out = decode_output(&frames);
    let pcm = pcm.join().unwrap();
    assert_eq!(out.segments.len(), 2);
    let mut d = tgvoice::frame::FrameDecoder::new();
    d.push(&frames);
    let mut expected = vec![];
    while let Some(f) = d.next() {
        if let Frame::Audio(a) = f.unwrap() {
            expected.extend(a.pcm_bytes());
        }
    }
    assert_eq!(expected.len(), out.segments.iter().map(|s| s.samples * 2).sum::<usize>());
    assert!(pcm == expected, "the tap must carry exactly the segments' samples ({} vs {} bytes)", pcm.len(), expected.len());
}

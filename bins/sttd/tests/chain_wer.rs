//! FULL CHAIN: `tgcat --realtime x.wav | vadseg | sttd` on 12 utterances spoken by the Piper
//! voice (through the real tts-writer), WER at most 10 % — the figure for tiny.en on
//! clean speech (measured: 3.1 %). espeak-ng's robotic voice is kept for the direct tests in
//! tests/transcribe.rs (12–14 %, bound 15 %). Needs ORT_DYLIB_PATH (scripts/env.sh sets it).

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;
use tgvoice::event::kind;
use tgvoice::Frame;

#[test]
fn word_error_rate_through_tgcat_vadseg_sttd() {
    let model = model_path();
    // One WAV: every utterance, separated by 4 s of silence. vadseg ends a turn after 600 ms;
    // the gap leaves sttd ~3.5 s to transcribe before the next speech-start, which (by design)
    // supersedes a turn whose transcript is not out yet (tiny.en needs ~0.3-1 s on an idle
    // 2-core machine; on one shared with parallel builds calls took 2-17 s and turns were lost).
    let gap = vec![0i16; RATE as usize * 4];
    let mut audio = gap.clone();
    for text in UTTERANCES {
        audio.extend(speak_piper(text));
        audio.extend_from_slice(&gap);
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("utterances.wav");
    tgvoice::resample::write_wav_mono(&wav, RATE, &audio).unwrap();

    let mut tgcat = Command::new(tgvoice::testkit::bin_path("tgcat"))
        .args(["--realtime", "--trailing-silence", "1.5"])
        .arg(&wav)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut vadseg = Command::new(tgvoice::testkit::bin_path("vadseg"))
        .stdin(tgcat.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sttd = Command::new(tgvoice::testkit::bin_path("sttd"))
        .arg("--model")
        .arg(&model)
        // For manual experiments, like tests/common's Sttd::spawn.
        .args(std::env::var("STTD_TEST_ARGS").unwrap_or_default().split_whitespace())
        .stdin(vadseg.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let frames = decode_thread(sttd.stdout.take().unwrap());
    let mut hyp = vec![];
    let mut turns = 0;
    while let Ok((_, f)) = frames.recv_timeout(Duration::from_secs(180)) {
        if let Frame::Event(e) = f {
            if e.kind == kind::TRANSCRIPT && e.get_bool("final") == Some(true) {
                let text = e.text.unwrap_or_default();
                println!("turn {:?}: {text:?}  (stt {:?} ms after eot)", e.turn, e.trace.span_ms("eot", "transcript"));
                hyp.push(text);
            } else if e.kind == kind::SPEECH_START {
                turns += 1;
            }
        }
    }
    for c in [&mut tgcat, &mut vadseg, &mut sttd] {
        assert!(c.wait().unwrap().success());
    }
    let reference = UTTERANCES.join(" ");
    let (errors, total) = word_errors(&reference, &hyp.join(" "));
    let wer = errors as f64 / total as f64 * 100.0;
    println!("chain: {turns} turns, {} transcripts, WER {wer:.1} % ({errors}/{total} words)", hyp.len());
    // Same bound as tests/transcribe.rs (see MAX_WER there for the justification).
    assert!(wer <= 10.0, "chain WER {wer:.1} % exceeds 10 %");
}

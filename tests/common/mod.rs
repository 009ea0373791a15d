//! Helpers of the cross-program tests that hear speech: test speech from the Piper voice
//! (through the real tts-writer) and espeak-ng, the `tgcat | vadseg | sttd` chain, and vadseg's
//! segments. The sttd-only helpers (espeak-ng speech, framing as vadseg does, word error rate,
//! the short-question set) are sttd's own test helpers, re-exported here; sttd's short-question
//! bench uses this module too.
#![allow(dead_code)]

#[path = "../../bins/sttd/tests/common/mod.rs"]
mod stt;
pub use stt::*;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tgvoice::frame::FrameDecoder;
use tgvoice::{Event, Frame};

/// The Piper voice en_US-joe-medium with its sampling noise off (`noise_scale` and `noise_w` 0
/// in a copy of its config beside a link to the model), so the same text gives the same audio
/// in every run. With the voice's own 0.667/0.8 every run speaks each question differently
/// (other durations, other pauses), which moves every later question against vadseg's 32 ms
/// chunk grid: the short-question test then measured different audio each time (issue 17).
pub fn deterministic_piper_voice() -> PathBuf {
    static VOICE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    VOICE
        .get_or_init(|| {
            let model = tgvoice::testkit::cache_dir().join("models/piper/en_US-joe-medium.onnx");
            let json = std::fs::read_to_string(format!("{}.json", model.display()))
                .unwrap_or_else(|e| panic!("{}.json: {e}; run scripts/setup (Piper voice)", model.display()));
            let mut config: serde_json::Value = serde_json::from_str(&json).expect("Piper voice config is JSON");
            config["inference"]["noise_scale"] = 0.0.into();
            config["inference"]["noise_w"] = 0.0.into();
            let dir = std::env::temp_dir().join(format!("sttd-test-piper-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let link = dir.join("en_US-joe-medium.onnx");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&model, &link).unwrap();
            std::fs::write(dir.join("en_US-joe-medium.onnx.json"), config.to_string()).unwrap();
            link
        })
        .clone()
}

/// `text` spoken by the Piper neural voice (en_US-joe-medium, sampling noise off: see
/// [`deterministic_piper_voice`]) through the real `tts-writer`, at 16 kHz. A natural voice:
/// the chain's WER then measures the chain, not espeak's robotic pronunciation (tiny.en
/// mishears espeak's "brown fox" as "roundfark").
pub fn speak_piper(text: &str) -> Vec<i16> {
    let mut child = Command::new(tgvoice::testkit::bin_path("tts-writer"))
        .args(["--engine", "piper", "-q", "--piper-model"])
        .arg(deterministic_piper_voice())
        .env("TGVOICE_STATE_DIR", std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("tts-writer not built: cargo build --release --workspace");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(format!("{text}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "tts-writer --engine piper failed: run scripts/setup (Piper voice)");
    let pcm: Vec<i16> = out.stdout.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
    assert!(pcm.len() > 48_000 / 2, "tts-writer produced almost no audio for {text:?}");
    resample(48_000, RATE, &pcm)
}

/// A test voice: the Piper neural voice through tts-writer, or espeak-ng with a voice and speed.
#[derive(Debug, Clone, Copy)]
pub enum Voice {
    Piper,
    Espeak { voice: &'static str, wpm: u32 },
}

/// The short-question set's voices: Piper en_US-joe-medium, espeak-ng US English a little
/// faster than its default, British English slower.
pub const VOICES: [(&str, Voice); 3] = [
    ("piper-joe", Voice::Piper),
    ("espeak-us-165", Voice::Espeak { voice: "en-us", wpm: 165 }),
    ("espeak-gb-140", Voice::Espeak { voice: "en-gb", wpm: 140 }),
];

impl Voice {
    /// `text` in this voice, 16 kHz mono.
    pub fn speak(self, text: &str) -> Vec<i16> {
        match self {
            Voice::Piper => speak_piper(text),
            Voice::Espeak { voice, wpm } => speak_espeak(voice, wpm, text),
        }
    }
}

/// The long-sentence chain's recording (tests/chain_wer.rs, scripts/bench-stt): the 12
/// [`UTTERANCES`] in the Piper voice, each followed by 1.5 s of silence (one turn each), written
/// to `dir`/utterances.wav; returns the file and its samples.
pub fn long_sentence_recording(dir: &std::path::Path) -> (PathBuf, Vec<i16>) {
    let gap = vec![0i16; RATE as usize * 3 / 2];
    let mut audio = gap.clone();
    for text in UTTERANCES {
        audio.extend(speak_piper(text));
        audio.extend_from_slice(&gap);
    }
    let wav = dir.join("utterances.wav");
    tgvoice::resample::write_wav_mono(&wav, RATE, &audio).unwrap();
    (wav, audio)
}

/// What `tgcat WAV | vadseg | sttd` gave: sttd's events in order, its log, and the wall time.
pub struct Chain {
    pub events: Vec<Event>,
    pub sttd_log: String,
    pub secs: f64,
}

/// Run `tgcat TGCAT_ARGS WAV | vadseg VADSEG_ARGS | sttd --model M STTD_ARGS` to the end (or
/// until sttd is silent for `idle`); every program must exit 0.
pub fn run_chain(wav: &std::path::Path, tgcat_args: &[&str], vadseg_args: &[&str], sttd_args: &[&str], idle: Duration) -> Chain {
    let t0 = Instant::now();
    let mut tgcat = Command::new(tgvoice::testkit::bin_path("tgcat"))
        .args(tgcat_args)
        .arg(wav)
        .stdout(Stdio::piped())
        .spawn()
        .expect("tgcat not built");
    let mut vadseg = Command::new(tgvoice::testkit::bin_path("vadseg"))
        .args(vadseg_args)
        .stdin(tgcat.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .expect("vadseg not built");
    let mut sttd = Command::new(tgvoice::testkit::bin_path("sttd"))
        .arg("--model")
        .arg(model_path())
        .args(sttd_args)
        .stdin(vadseg.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = sttd.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let frames = decode_thread(sttd.stdout.take().unwrap());
    let mut events = vec![];
    while let Ok((_, f)) = frames.recv_timeout(idle) {
        if let Frame::Event(e) = f {
            events.push(e);
        }
    }
    for c in [&mut tgcat, &mut vadseg, &mut sttd] {
        assert!(c.wait().unwrap().success());
    }
    Chain { events, sttd_log: log.join().unwrap(), secs: t0.elapsed().as_secs_f64() }
}

/// `tgcat WAV | vadseg` at full speed: the 16 kHz segments vadseg cuts from `audio` (16 kHz),
/// one per turn, in the order spoken.
pub fn vad_segments(audio: &[i16]) -> Vec<Vec<i16>> {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("speech.wav");
    tgvoice::resample::write_wav_mono(&wav, RATE, audio).unwrap();
    let mut tgcat = Command::new(tgvoice::testkit::bin_path("tgcat"))
        .args(["-q", "--trailing-silence", "1.5"])
        .arg(&wav)
        .stdout(Stdio::piped())
        .spawn()
        .expect("tgcat not built: cargo build --release -p tgcat -p vadseg");
    let vadseg = Command::new(tgvoice::testkit::bin_path("vadseg"))
        .arg("-q")
        .stdin(tgcat.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .output()
        .expect("vadseg not built (and ORT_DYLIB_PATH set: scripts/env.sh)");
    assert!(tgcat.wait().unwrap().success() && vadseg.status.success(), "tgcat | vadseg failed");
    let mut dec = FrameDecoder::new();
    dec.push(&vadseg.stdout);
    let mut turns: std::collections::BTreeMap<u64, Vec<i16>> = Default::default();
    while let Some(f) = dec.next() {
        if let Ok(Frame::Audio(a)) = f {
            if a.turn != 0 {
                turns.entry(a.turn).or_default().extend_from_slice(&a.samples);
            }
        }
    }
    turns.into_values().collect()
}

// ---- barge-in: what the tests say over a reply (tests/pipeline.rs on the Telegram path,
// tests/phone.rs on a phone line) ----

/// What the barge-in tests say over a reply: one- and two-word interruptions (Piper voice).
pub const INTERRUPTIONS: [&str; 10] =
    ["Stop.", "Wait.", "No.", "Hold on.", "Sorry?", "Stop!", "Wait, what?", "No, stop.", "Hang on.", "Excuse me."];
/// The reply the barge-in tests talk over (two sentences, ~6 s in the Piper voice).
pub const BARGE_IN_REPLY: &str = "Once upon a time, a brave knight rode across the green valley to find the old dragon. \
    The dragon was asleep in its cave, so the knight sat down beside it and waited.";
/// Backchannels (Piper voice) among the false alarms: ten, for the resume gap's median.
pub const BACKCHANNELS: [&str; 10] = ["Uh-huh.", "Mm-hmm.", "Yeah.", "Right.", "Okay.", "I see.", "Sure.", "Yes.", "Mhm.", "Got it."];

/// Synthesized non-speech at 16 kHz: name and samples (silence around the sound included).
pub fn noises() -> Vec<(&'static str, Vec<i16>)> {
    const R: usize = 16;
    let silence = |ms: usize| vec![0i16; ms * R];
    let shaped = |ms: usize, amp: f32, seed: u64, env: &dyn Fn(f32) -> f32| -> Vec<i16> {
        let n = noise(ms * R, 1.0, seed);
        n.iter().enumerate().map(|(i, &x)| (x as f32 * amp * env(i as f32 / (ms * R) as f32)) as i16).collect()
    };
    // A cough: a sharp noise burst decaying over ~150 ms, twice.
    let cough = |seed: u64| {
        let burst = shaped(180, 0.45, seed, &|t| (-t * 6.0).exp() * (t * 40.0).min(1.0));
        [silence(100), burst.clone(), silence(120), burst, silence(100)].concat()
    };
    // A click: a 2 ms impulse; a double click.
    let click = shaped(2, 0.9, 7, &|_| 1.0);
    // A door bang: a 70 Hz thump with a noise attack, decaying over 300 ms.
    let thump: Vec<i16> = (0..300 * R)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            (0.7 * 32767.0 * (2.0 * std::f32::consts::PI * 70.0 * t).sin() * (-t * 12.0).exp()) as i16
        })
        .zip(shaped(300, 0.4, 11, &|t| (-t * 30.0).exp()))
        .map(|(a, b)| a.saturating_add(b))
        .collect();
    // A breath: soft noise swelling and fading over 700 ms.
    let breath = shaped(700, 0.06, 13, &|t| (std::f32::consts::PI * t).sin());
    vec![
        ("cough", cough(3)),
        ("cough-2", cough(5)),
        ("click", [silence(100), click.clone(), silence(300)].concat()),
        ("double-click", [silence(100), click.clone(), silence(80), click, silence(300)].concat()),
        ("door-bang", [silence(100), thump, silence(200)].concat()),
        ("breath", [silence(100), breath, silence(100)].concat()),
    ]
}

/// `text` in the Piper voice as a 48 kHz WAV, through the real tts-writer. (sttd's
/// `speak_piper` refuses anything under half a second, and "Wait." is shorter.)
pub fn piper_wav(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    use std::io::Write;
    let mut child = Command::new(tgvoice::testkit::bin_path("tts-writer"))
        .args(["--engine", "piper", "-q"])
        .env("TGVOICE_STATE_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{text}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let pcm: Vec<i16> = out.stdout.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
    assert!(out.status.success() && pcm.len() > 4_800, "tts-writer --engine piper said nothing for {text:?}: run scripts/setup");
    let path = dir.join(format!("{name}.wav"));
    tgvoice::resample::write_wav_mono(&path, 48_000, &pcm).unwrap();
    path
}

/// Several [`piper_wav`]s at once, in order: `(name, text)` each. Each tts-writer process
/// spends most of its time loading the voice and pacing its output in real time, so a few side
/// by side take about as long as one (the barge-in tests need twenty-odd sounds).
pub fn piper_wavs(dir: &std::path::Path, items: &[(String, String)]) -> Vec<PathBuf> {
    let mut out = Vec::with_capacity(items.len());
    for batch in items.chunks(4) {
        std::thread::scope(|s| {
            let handles: Vec<_> = batch.iter().map(|(name, text)| s.spawn(move || piper_wav(dir, name, text))).collect();
            out.extend(handles.into_iter().map(|h| h.join().unwrap()));
        });
    }
    out
}

/// The `p` quantile (0–1) of `sorted`, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The load averages (1, 5, 15 min) as /proc/loadavg gives them, for a timing test's report.
pub fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

//! Shared helpers for sttd's integration tests and benchmark: espeak-ng test speech with
//! reference texts, framing it as vadseg would, running sttd, and word error rate.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use tgvoice::event::{kind, trace_key};
use tgvoice::frame::FrameDecoder;
use tgvoice::{AudioFrame, Event, Frame, TurnTrace};

/// Reference utterances (spoken by espeak-ng at test time). Plain words, no digits, so the
/// reference needs no number normalisation.
pub const UTTERANCES: &[&str] = &[
    "The quick brown fox jumps over the lazy dog",
    "Please call me back when you get home tonight",
    "What time does the train leave for London",
    "I would like a cup of coffee with milk",
    "The weather is nice and warm today",
    "Can you tell me how to get to the station",
    "My favourite colour is green",
    "She sells sea shells by the sea shore",
    "We need to buy bread and cheese for dinner",
    "Turn off the lights before you leave the room",
    "How much does this book cost",
    "The meeting has been moved to next week",
];

pub const RATE: u32 = 16_000;

/// The converted tiny.en model (scripts/setup makes it).
pub fn model_path() -> PathBuf {
    let p = tgvoice::testkit::cache_dir().join("models").join("ggml-tiny.en.bin");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup (scripts/provision/50-whisper-model.sh converts Whisper tiny.en)",
        p.display()
    );
    p
}

/// `text` spoken by espeak-ng, as 16 kHz mono s16.
pub fn speak(text: &str, words_per_minute: u32) -> Vec<i16> {
    speak_espeak("en-us", words_per_minute, text)
}

/// `text` spoken by espeak-ng `voice` (en-us, en-gb, …), as 16 kHz mono s16.
pub fn speak_espeak(voice: &str, words_per_minute: u32, text: &str) -> Vec<i16> {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("speech.wav");
    let out = Command::new("espeak-ng")
        .args(["-v", voice, "-s", &words_per_minute.to_string(), "-w"])
        .arg(&wav)
        .arg(text)
        .output()
        .expect("espeak-ng not found: run scripts/setup (scripts/provision/sttd.apt installs it)");
    assert!(out.status.success(), "espeak-ng failed: {}", String::from_utf8_lossy(&out.stderr));
    let file = std::fs::File::open(&wav).unwrap();
    let (rate, samples) = tgvoice::resample::read_wav_mono(std::io::BufReader::new(file)).expect("espeak-ng WAV");
    let speech = resample(rate, RATE, &samples);
    if std::env::var_os("STTD_TEST_VIA_48K").is_some() {
        // Manual experiment: the 16 k → 48 k → 16 k trip the chain (tgcat, vadseg) makes.
        return resample(48_000, RATE, &resample(RATE, 48_000, &speech));
    }
    speech
}

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

pub fn resample(from: u32, to: u32, samples: &[i16]) -> Vec<i16> {
    let mut r = tgvoice::resample::StreamResampler::new(from, to, (from / 50) as usize).unwrap();
    let mut out = r.process(samples);
    out.extend(r.flush());
    out
}

/// Deterministic white noise at `amplitude` (0..1 of full scale).
pub fn noise(n: usize, amplitude: f32, seed: u64) -> Vec<i16> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            (u * amplitude as f64 * 32767.0) as i16
        })
        .collect()
}

pub fn now_us() -> u64 {
    tgvoice::clock::now_us()
}

pub fn speech_start(turn: u64) -> Frame {
    let mut t = TurnTrace::default();
    t.mark(trace_key::SPEECH_START, now_us());
    Frame::Event(Event::new(kind::SPEECH_START).with_turn(turn).with_trace(t))
}

pub fn speech_end(turn: u64) -> Frame {
    let mut t = TurnTrace::default();
    let now = now_us();
    t.mark(trace_key::SPEECH_END, now);
    t.mark(trace_key::EOT, now);
    Frame::Event(Event::new(kind::SPEECH_END).with_turn(turn).with_trace(t))
}

/// 16 kHz audio frames of 512 samples (vadseg's 32 ms chunks) for `turn`.
pub fn audio_frames(turn: u64, samples: &[i16], first_index: u64) -> Vec<Frame> {
    samples
        .chunks(512)
        .enumerate()
        .map(|(i, c)| {
            let mut a = AudioFrame::mono(RATE, c.to_vec());
            a.turn = turn;
            a.capture_us = now_us();
            a.sample_index = first_index + i as u64 * 512;
            Frame::Audio(a)
        })
        .collect()
}

/// vadseg's default pre-roll and post-roll around the voiced audio (ms).
pub const PRE_ROLL_MS: usize = 300;
pub const POST_ROLL_MS: usize = 200;

/// `samples` with vadseg's pre-roll and post-roll of silence around them.
pub fn with_rolls(samples: &[i16]) -> Vec<i16> {
    let mut v = vec![0i16; PRE_ROLL_MS * RATE as usize / 1000];
    v.extend_from_slice(samples);
    v.extend(std::iter::repeat(0).take(POST_ROLL_MS * RATE as usize / 1000));
    v
}

/// A whole turn as vadseg frames it: speech-start, audio (with pre- and post-roll), speech-end.
pub fn segment(turn: u64, samples: &[i16]) -> Vec<Frame> {
    let mut v = vec![speech_start(turn)];
    v.extend(audio_frames(turn, &with_rolls(samples), 0));
    v.push(speech_end(turn));
    v
}

/// A running sttd with its output decoded on a thread.
pub struct Sttd {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub frames: crossbeam_channel::Receiver<(Instant, Frame)>,
}

impl Sttd {
    pub fn spawn(extra: &[&str]) -> Sttd {
        let model = model_path();
        let mut child = Command::new(tgvoice::testkit::bin_path("sttd"))
            .arg("--model")
            .arg(&model)
            .args(extra)
            // For manual experiments: extra flags for every sttd a test starts.
            .args(std::env::var("STTD_TEST_ARGS").unwrap_or_default().split_whitespace())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sttd");
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        Sttd { child, stdin, frames: decode_thread(stdout) }
    }

    pub fn send(&mut self, frames: &[Frame]) {
        let mut buf = vec![];
        for f in frames {
            tgvoice::frame::encode_into(f, &mut buf).expect("test frames are under the cap");
        }
        self.stdin.as_mut().expect("stdin open").write_all(&buf).expect("write to sttd");
    }

    /// Wait for the next event of `kind` (other frames are skipped) up to `timeout`.
    pub fn wait_event(&self, kind: &str, timeout: Duration) -> Option<(Instant, Event)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.frames.recv_timeout(left) {
                Ok((t, Frame::Event(e))) if e.kind == kind => return Some((t, e)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Close stdin and collect every remaining output event until sttd exits.
    pub fn finish(mut self) -> Vec<Event> {
        drop(self.stdin.take());
        let mut out = vec![];
        while let Ok((_, f)) = self.frames.recv_timeout(Duration::from_secs(120)) {
            if let Frame::Event(e) = f {
                out.push(e);
            }
        }
        let status = self.child.wait().expect("wait sttd");
        assert!(status.success(), "sttd exited with {status}");
        out
    }

    pub fn peak_rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
    }
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

pub fn decode_thread(mut r: impl Read + Send + 'static) -> crossbeam_channel::Receiver<(Instant, Frame)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        let mut dec = FrameDecoder::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            dec.push(&buf[..n]);
            while let Some(f) = dec.next() {
                if let Ok(f) = f {
                    if tx.send((Instant::now(), f)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Lower-case words without punctuation, British/American spelling of the two words in the
/// sets folded, and numbers Whisper writes as digits ("10 minutes") spelled out as spoken.
pub fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .replace("favorite", "favourite")
        .replace("color", "colour")
        .chars()
        .map(|c| if c.is_alphanumeric() || c == '\'' { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .map(|w| w.parse::<u32>().ok().and_then(number_word).map_or_else(|| w.to_string(), String::from))
        .collect()
}

fn number_word(n: u32) -> Option<&'static str> {
    const SMALL: [&str; 21] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen",
        "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
    ];
    SMALL.get(n as usize).copied()
}

/// Normalised exact match: the same words, ignoring case, punctuation and digit/word spelling.
pub fn exact_match(reference: &str, hypothesis: &str) -> bool {
    words(reference) == words(hypothesis)
}

/// Word-level edit distance and reference length (case and punctuation ignored;
/// British/American spelling of the two words in the set folded).
pub fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let r = words(reference);
    let h = words(hypothesis);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for i in 1..=r.len() {
        let mut cur = vec![i; h.len() + 1];
        for j in 1..=h.len() {
            let sub = prev[j - 1] + usize::from(r[i - 1] != h[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    (prev[h.len()], r.len())
}

#[test]
fn word_error_rate_counts_edits() {
    assert_eq!(word_errors("the cat sat", "The cat sat."), (0, 3));
    assert_eq!(word_errors("the cat sat", "the bat sat down"), (2, 3));
    assert_eq!(word_errors("my favourite colour", "My favorite color"), (0, 3));
    assert_eq!(word_errors("a b c", ""), (3, 3));
    assert!(exact_match("Set a timer for ten minutes.", "set a timer for 10 minutes"));
    assert!(!exact_match("What color is the sky?", "What colors the sky?"));
}

/// The short-question set (issue 17): one question or command per line, which is both what
/// is spoken and the expected transcript.
pub const SHORT_QUESTIONS: &str = include_str!("../data/short_questions.txt");

pub fn short_questions() -> Vec<&'static str> {
    SHORT_QUESTIONS.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
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

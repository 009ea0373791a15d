//! Shared helpers for sttd's integration tests and benchmarks: espeak-ng test speech with
//! reference texts, framing it as vadseg would, running sttd, word error rate and the
//! short-question set. Nothing here starts another program but sttd and the stand-in
//! speech-to-text servers ([`standin`]); the cross-program helpers (Piper speech through
//! tts-writer, the `tgcat | vadseg | sttd` chain) are the system tests' (tests/common at the
//! repository root).
#![allow(dead_code)]

pub mod standin;

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

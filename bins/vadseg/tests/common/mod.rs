//! Test audio and helpers shared by vadseg's integration tests and its benchmark: speech from
//! espeak-ng (real synthesis, generated into a tempdir), noise generated here (pink, brown,
//! clicks, a music-like chord sequence), calls assembled with known utterance positions, and
//! a runner that pipes a call through the real `tgcat` and `vadseg` binaries and decodes the
//! output with the tgvoice crate.
#![allow(dead_code)]

pub mod turns;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tgvoice::frame::FrameDecoder;
use tgvoice::resample::{read_wav_mono, write_wav_mono, StreamResampler};
use tgvoice::testkit::{bin_path, cache_dir};
use tgvoice::{Event, Frame};

pub const RATE: u32 = 48_000;

/// ORT_DYLIB_PATH for the tests (scripts/env.sh's value, or where scripts/setup puts it).
pub fn ort_dylib() -> PathBuf {
    let p = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("onnxruntime/libonnxruntime.so.1.22.1"));
    assert!(p.is_file(), "ONNX Runtime not found at {}: run scripts/setup", p.display());
    p
}

// ---------------------------------------------------------------- speech

/// One synthesized utterance at 48 kHz, with where the audible speech starts and ends inside
/// it (measured by energy, in samples).
#[derive(Clone)]
pub struct Utterance {
    pub text: String,
    pub samples: Vec<i16>,
    pub onset: usize,
    pub offset: usize,
}

/// Speak `text` with espeak-ng into a WAV in `dir`, resample to 48 kHz, normalise to -6 dBFS peak.
pub fn espeak(dir: &Path, text: &str, voice: &str, speed: u32) -> Utterance {
    let wav = dir.join(format!("espeak-{:x}.wav", hash(text) ^ hash(voice) ^ speed as u64));
    let st = Command::new("espeak-ng")
        .args(["-v", voice, "-s", &speed.to_string(), "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng not found: run scripts/setup (it installs the Debian package espeak-ng)");
    assert!(st.success(), "espeak-ng failed for {text:?}");
    let (rate, mono) = read_wav_mono(std::fs::File::open(&wav).unwrap()).unwrap();
    let mut rs = StreamResampler::new(rate, RATE, 1024).unwrap();
    let mut s = rs.process(&mono);
    s.extend(rs.flush());
    let peak = s.iter().map(|&x| (x as i32).abs()).max().unwrap_or(1).max(1) as f64;
    let gain = 16_000.0 / peak;
    let s: Vec<i16> = s.iter().map(|&x| (x as f64 * gain) as i16).collect();
    let (onset, offset) = speech_bounds(&s);
    Utterance { text: text.to_string(), samples: s, onset, offset }
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// First and last sample of the 5 ms windows whose RMS is above -50 dBFS (espeak's output is
/// digitally silent around the speech, so this is where the speech is).
pub fn speech_bounds(s: &[i16]) -> (usize, usize) {
    speech_bounds_above(s, -50.0)
}

/// First and last sample of the 5 ms windows whose RMS is above `dbfs`.
pub fn speech_bounds_above(s: &[i16], dbfs: f64) -> (usize, usize) {
    let win = RATE as usize / 200;
    let loud: Vec<usize> = s
        .chunks(win)
        .enumerate()
        .filter(|(_, c)| {
            let e = c.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / c.len() as f64;
            e.sqrt() > 32768.0 * 10f64.powf(dbfs / 20.0)
        })
        .map(|(i, _)| i)
        .collect();
    let first = *loud.first().expect("espeak produced silence");
    let last = *loud.last().unwrap();
    (first * win, ((last + 1) * win).min(s.len()))
}

pub fn rms(s: &[i16]) -> f64 {
    (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
}

/// The test sentences, synthesized with a few voices and speeds.
pub fn sentences(dir: &Path) -> Vec<Utterance> {
    [
        ("Hello, can you hear me?", "en-us", 160),
        ("What will the weather be like in Berlin tomorrow morning?", "en", 175),
        ("Yes, please.", "en-us+f3", 150),
        ("Set a timer for ten minutes and remind me to call my sister.", "en-gb", 170),
        ("Thank you, that is all for now.", "en-us+m3", 165),
    ]
    .iter()
    .map(|(t, v, s)| espeak(dir, t, v, *s))
    .collect()
}

/// Real recorded speech from the Debian package alsa-utils (a speaker saying "Front Center",
/// "Rear Left", …; 48 kHz mono). Its room noise floor is near -50 dBFS, so the speech is
/// where the level exceeds -40 dBFS.
pub fn alsa_recording(name: &str) -> Utterance {
    let path = alsa_sound(name);
    let (rate, samples) = read_wav_mono(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(rate, RATE, "{}", path.display());
    let (onset, offset) = speech_bounds_above(&samples, -40.0);
    Utterance { text: name.replace('_', " "), samples, onset, offset }
}

pub fn alsa_sound(name: &str) -> PathBuf {
    let path = PathBuf::from(format!("/usr/share/sounds/alsa/{name}.wav"));
    assert!(path.is_file(), "{} missing: run scripts/setup (it installs the Debian package alsa-utils)", path.display());
    path
}

// ---------------------------------------------------------------- noise

/// xorshift64*: a small deterministic generator for noise (seeded per test).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

fn scale_to_rms(x: Vec<f64>, rms_dbfs: f64) -> Vec<i16> {
    let r = (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt().max(1e-12);
    let g = 32768.0 * 10f64.powf(rms_dbfs / 20.0) / r;
    x.iter().map(|v| (v * g).round().clamp(-32768.0, 32767.0) as i16).collect()
}

/// Pink (1/f) noise, Paul Kellet's filter, at `rms_dbfs`.
pub fn pink_noise(n: usize, rms_dbfs: f64, seed: u64) -> Vec<i16> {
    let mut r = Rng::new(seed);
    let (mut b0, mut b1, mut b2, mut b3, mut b4, mut b5, mut b6) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let x = (0..n)
        .map(|_| {
            let w = r.uniform();
            b0 = 0.99886 * b0 + w * 0.0555179;
            b1 = 0.99332 * b1 + w * 0.0750759;
            b2 = 0.96900 * b2 + w * 0.1538520;
            b3 = 0.86650 * b3 + w * 0.3104856;
            b4 = 0.55000 * b4 + w * 0.5329522;
            b5 = -0.7616 * b5 - w * 0.0168980;
            let p = b0 + b1 + b2 + b3 + b4 + b5 + b6 + w * 0.5362;
            b6 = w * 0.115926;
            p
        })
        .collect();
    scale_to_rms(x, rms_dbfs)
}

/// Brown (1/f²) noise: leaky integrated white noise, at `rms_dbfs`.
pub fn brown_noise(n: usize, rms_dbfs: f64, seed: u64) -> Vec<i16> {
    let mut r = Rng::new(seed);
    let mut acc = 0.0;
    let x = (0..n)
        .map(|_| {
            acc = 0.998 * acc + r.uniform() * 0.05;
            acc
        })
        .collect();
    scale_to_rms(x, rms_dbfs)
}

/// Clicks: short decaying impulses (keyboard, mouse, a tapped table) at random times,
/// `per_second` on average, over a faint white-noise floor.
pub fn clicks(n: usize, per_second: f64, seed: u64) -> Vec<i16> {
    let mut r = Rng::new(seed);
    let mut x = vec![0.0f64; n];
    for v in x.iter_mut() {
        *v = r.uniform() * 30.0;
    }
    let p = per_second / RATE as f64;
    let mut i = 0;
    while i < n {
        if (r.uniform() + 1.0) / 2.0 < p {
            let amp = 8_000.0 + 16_000.0 * (r.uniform() + 1.0) / 2.0;
            let len = RATE as usize * 4 / 1000;
            for k in 0..len.min(n - i) {
                x[i + k] += amp * r.uniform() * (-(k as f64) / (len as f64 / 5.0)).exp();
            }
            i += len;
        }
        i += 1;
    }
    x.iter().map(|v| v.round().clamp(-32768.0, 32767.0) as i16).collect()
}

/// Music-like audio: a chord sequence (root, third, fifth with harmonics), one chord every
/// 500 ms with a soft attack and decay, plus a bass note, at `rms_dbfs`.
pub fn chord_music(n: usize, rms_dbfs: f64, seed: u64) -> Vec<i16> {
    let mut r = Rng::new(seed);
    let roots = [220.0, 174.61, 261.63, 196.0, 246.94, 164.81];
    let chord_len = RATE as usize / 2;
    let mut x = vec![0.0f64; n];
    let mut start = 0;
    while start < n {
        let root = roots[(r.next_u64() % roots.len() as u64) as usize];
        let minor = r.next_u64() & 1 == 0;
        let notes = [root, root * if minor { 1.189 } else { 1.26 }, root * 1.498, root / 2.0];
        for k in 0..chord_len.min(n - start) {
            let t = k as f64 / RATE as f64;
            let env = (t / 0.02).min(1.0) * (-t * 3.0).exp();
            let mut v = 0.0;
            for (j, f) in notes.iter().enumerate() {
                for h in 1..=4 {
                    v += (2.0 * std::f64::consts::PI * f * h as f64 * t).sin() / (h * h) as f64 * if j == 3 { 1.5 } else { 1.0 };
                }
            }
            x[start + k] = v * env;
        }
        start += chord_len;
    }
    scale_to_rms(x, rms_dbfs)
}

/// 60 s of noise alone: pink, brown, clicks and music, 15 s each.
pub fn noise_medley(seed: u64) -> Vec<i16> {
    let n = 15 * RATE as usize;
    let mut v = pink_noise(n, -26.0, seed);
    v.extend(brown_noise(n, -22.0, seed + 1));
    v.extend(clicks(n, 3.0, seed + 2));
    v.extend(chord_music(n, -20.0, seed + 3));
    v
}

// ---------------------------------------------------------------- calls

/// A generated call: audio and where each utterance's speech is (in samples).
pub struct Call {
    pub samples: Vec<i16>,
    pub spans: Vec<(usize, usize)>,
    pub texts: Vec<String>,
}

/// Place utterances after `lead_s` of quiet with `pauses_s` between them (measured from one
/// utterance's speech offset to the next one's onset), then `tail_s`; optionally mix noise in
/// at `snr_db` relative to the speech RMS.
pub fn build_call(utts: &[Utterance], lead_s: f64, pauses_s: &[f64], tail_s: f64) -> Call {
    let mut samples: Vec<i16> = vec![0; (lead_s * RATE as f64) as usize];
    let mut spans = vec![];
    for (i, u) in utts.iter().enumerate() {
        if i > 0 {
            let gap = (pauses_s[(i - 1) % pauses_s.len()] * RATE as f64) as usize;
            let prev_tail = utts[i - 1].samples.len() - utts[i - 1].offset;
            let need = gap.saturating_sub(prev_tail + u.onset);
            samples.resize(samples.len() + need, 0);
        }
        let base = samples.len();
        samples.extend_from_slice(&u.samples);
        spans.push((base + u.onset, base + u.offset));
    }
    samples.resize(samples.len() + (tail_s * RATE as f64) as usize, 0);
    Call { samples, spans, texts: utts.iter().map(|u| u.text.clone()).collect() }
}

/// Add `noise` (repeated as needed) scaled so speech RMS / noise RMS = `snr_db`.
pub fn mix_noise(call: &mut Call, noise: &[i16], snr_db: f64) {
    let speech: Vec<i16> = call.spans.iter().flat_map(|&(a, b)| call.samples[a..b].to_vec()).collect();
    let g = rms(&speech) / 10f64.powf(snr_db / 20.0) / rms(noise).max(1e-9);
    for (i, s) in call.samples.iter_mut().enumerate() {
        let n = noise[i % noise.len()] as f64 * g;
        *s = (*s as f64 + n).round().clamp(-32768.0, 32767.0) as i16;
    }
}

// ---------------------------------------------------------------- running vadseg

/// One turn in vadseg's output.
#[derive(Debug, Clone)]
pub struct Segment {
    pub turn: u64,
    pub start: Event,
    pub end: Option<Event>,
    /// 16 kHz stream index of the first and one past the last audio sample.
    pub first_index: u64,
    pub end_index: u64,
    pub first_capture_us: u64,
    pub samples: usize,
    /// Audio frames whose index did not follow the previous one.
    pub gaps: usize,
}

impl Segment {
    /// Segment start/end in seconds of 48 kHz source samples (vadseg's 16 kHz index × 3).
    pub fn span_48k(&self) -> (usize, usize) {
        (self.first_index as usize * 3, self.end_index as usize * 3)
    }
}

/// Decoded vadseg output.
#[derive(Debug, Default)]
pub struct Output {
    pub segments: Vec<Segment>,
    pub events: Vec<Event>,
    pub stray_audio: usize,
}

pub fn decode_output(bytes: &[u8]) -> Output {
    let mut d = FrameDecoder::new();
    d.push(bytes);
    let mut out = Output::default();
    while let Some(r) = d.next() {
        match r.expect("vadseg wrote a bad frame") {
            Frame::Event(e) => {
                if e.is("speech-start") {
                    out.segments.push(Segment {
                        turn: e.turn.expect("speech-start has a turn"),
                        start: e.clone(),
                        end: None,
                        first_index: 0,
                        end_index: 0,
                        first_capture_us: 0,
                        samples: 0,
                        gaps: 0,
                    });
                } else if e.is("speech-end") {
                    let s = out.segments.iter_mut().rev().find(|s| Some(s.turn) == e.turn).expect("speech-end without start");
                    s.end = Some(e.clone());
                }
                out.events.push(e);
            }
            Frame::Audio(a) => {
                assert_eq!(a.sample_rate, 16_000);
                match out.segments.iter_mut().rev().find(|s| s.turn == a.turn && s.end.is_none()) {
                    Some(s) => {
                        if s.samples == 0 {
                            s.first_index = a.sample_index;
                            s.first_capture_us = a.capture_us;
                        } else if a.sample_index != s.end_index {
                            s.gaps += 1;
                        }
                        s.end_index = a.sample_index + a.samples.len() as u64;
                        s.samples += a.samples.len();
                    }
                    None => out.stray_audio += 1,
                }
            }
        }
    }
    out
}

/// `vadseg ARGS` with ONNX Runtime found and stdin, stdout and stderr piped.
pub fn vadseg_command(args: &[&str]) -> Command {
    let mut c = Command::new(bin_path("vadseg"));
    c.args(args).env("ORT_DYLIB_PATH", ort_dylib()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// `tgcat WAV | vadseg ARGS`: returns vadseg's decoded output.
pub fn run_call(dir: &Path, name: &str, samples: &[i16], vadseg_args: &[&str]) -> Output {
    let wav = dir.join(format!("{name}.wav"));
    write_wav_mono(&wav, RATE, samples).unwrap();
    if let Some(keep) = std::env::var_os("VADSEG_KEEP_AUDIO") {
        // Debugging aid: keep the generated call (e.g. to listen to it or rerun vadseg -vv).
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&wav, Path::new(&keep).join(format!("{name}.wav"))).unwrap();
    }
    let mut tgcat = Command::new(bin_path("tgcat")).arg(&wav).arg("-q").stdout(Stdio::piped()).spawn().unwrap();
    let vadseg = Command::new(bin_path("vadseg"))
        .args(vadseg_args)
        .env("ORT_DYLIB_PATH", ort_dylib())
        .stdin(tgcat.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = vadseg.wait_with_output().unwrap();
    assert!(tgcat.wait().unwrap().success());
    assert!(out.status.success(), "vadseg failed: {}", String::from_utf8_lossy(&out.stderr));
    decode_output(&out.stdout)
}

/// Check one segment per utterance, each covering its utterance: segment start no later than
/// 100 ms after the speech onset, segment end no earlier than the speech offset.
pub fn assert_one_segment_per_utterance(call: &Call, out: &Output, what: &str) {
    let segs: Vec<(usize, usize)> = out.segments.iter().map(|s| s.span_48k()).collect();
    let report = format!(
        "{what}: utterances (s) {:?}, segments (s) {:?}",
        call.spans.iter().map(|&(a, b)| (secs(a), secs(b))).collect::<Vec<_>>(),
        segs.iter().map(|&(a, b)| (secs(a), secs(b))).collect::<Vec<_>>()
    );
    eprintln!("{report}");
    assert_eq!(out.segments.len(), call.spans.len(), "{report}");
    for (i, (&(on, off), s)) in call.spans.iter().zip(&out.segments).enumerate() {
        let (a, b) = s.span_48k();
        assert!(a <= on + RATE as usize / 10, "utterance {i}: segment starts {:.3} s after onset; {report}", secs(a) - secs(on));
        assert!(b >= off, "utterance {i}: segment ends {:.3} s before offset; {report}", secs(off) - secs(b));
        assert!(s.end.is_some(), "utterance {i}: no speech-end; {report}");
        assert_eq!(s.gaps, 0, "utterance {i}: audio has gaps");
        assert_eq!(s.samples as u64, s.end_index - s.first_index);
    }
}

pub fn secs(samples_48k: usize) -> f64 {
    (samples_48k as f64 / RATE as f64 * 1000.0).round() / 1000.0
}

/// Read everything from `r` on a thread.
pub fn collect<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = vec![];
        let _ = r.read_to_end(&mut v);
        v
    })
}

pub fn write_all<W: Write>(w: &mut W, b: &[u8]) {
    w.write_all(b).unwrap();
}

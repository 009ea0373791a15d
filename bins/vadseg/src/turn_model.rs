//! [`SmartTurn`]: the Smart Turn v3.2 end-of-turn model (BSD-2-Clause, from the PyPI wheel
//! pipecat-ai 1.14.0; scripts/provision/55-smart-turn.sh) run by the same ONNX Runtime as
//! Silero. Given the turn's audio up to now it says how likely the caller has finished.
//!
//! Its input is what pipecat's `local_smart_turn_v3.py` feeds it: the last 8 s of 16 kHz
//! audio (shorter audio zero-padded at the *start*), normalised to zero mean and unit
//! variance, as Whisper log-mel features `[1, 80, 800]`; its output is the probability of
//! "complete". [`TurnWorker`] runs it on its own thread so Silero keeps up with live audio.

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::Tensor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tgvoice::logmel::LogMel;

use crate::segmenter::RATE;

pub const MODEL_FILE: &str = "smart-turn-v3.2-cpu.onnx";
/// The model sees at most this much audio (the most recent).
pub const WINDOW_SAMPLES: usize = 8 * RATE as usize;
const N_MELS: usize = 80;
/// Zero-mean unit-variance normalisation epsilon (transformers' WhisperFeatureExtractor).
const NORM_EPS: f64 = 1e-7;

/// `$TGVOICE_MODELS/smart-turn-v3.2-cpu.onnx` (where scripts/setup puts it; `--turn-model auto`).
pub fn default_model_path() -> PathBuf {
    tgvoice::paths::models_dir().join(MODEL_FILE)
}

/// The model input for `audio` (16 kHz): `N_MELS × 800` values, band-major.
pub fn features(mel: &LogMel, audio: &[i16]) -> Vec<f32> {
    let recent = &audio[audio.len().saturating_sub(WINDOW_SAMPLES)..];
    let mut x = vec![0f32; WINDOW_SAMPLES - recent.len()];
    x.extend(recent.iter().map(|&s| s as f32 / 32768.0));
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let scale = 1.0 / (var + NORM_EPS).sqrt();
    for v in &mut x {
        *v = ((*v as f64 - mean) * scale) as f32;
    }
    mel.compute(&x)
}

pub struct SmartTurn {
    session: Session,
    mel: LogMel,
}

impl SmartTurn {
    /// Load the model (ONNX Runtime must already be initialised: SileroVad::load does it).
    pub fn load(path: &Path) -> Result<Self> {
        let session = Session::builder()?
            .with_optimization_level(GraphOptimizationLevel::Level3)?
            .with_intra_threads(1)?
            .with_inter_threads(1)?
            .commit_from_file(path)
            .with_context(|| format!("cannot load the turn model {} (re-run scripts/setup, or --turn-model off)", path.display()))?;
        Ok(SmartTurn { session, mel: LogMel::new(N_MELS) })
    }

    /// Probability that the turn whose audio (16 kHz, from its start) is `audio` is complete.
    pub fn p_complete(&mut self, audio: &[i16]) -> Result<f32> {
        let frames = LogMel::frames_for(WINDOW_SAMPLES);
        let input = Tensor::from_array(([1usize, N_MELS, frames], features(&self.mel, audio)))?;
        let outputs = self.session.run(ort::inputs!["input_features" => input])?;
        let (_, p) = outputs[0].try_extract_tensor::<f32>()?;
        p.first().copied().context("the turn model returned no value")
    }
}

/// An end-of-turn model: the probability that the caller has finished, given the turn's
/// recent 16 kHz audio. [`SmartTurn`] in the program; a scripted fake in the stage's tests.
pub trait TurnModel: Send + 'static {
    fn p_complete(&mut self, audio: &[i16]) -> Result<f32>;
}

impl TurnModel for SmartTurn {
    fn p_complete(&mut self, audio: &[i16]) -> Result<f32> {
        SmartTurn::p_complete(self, audio)
    }
}

/// A question for the turn model.
pub struct Job {
    pub pause: u64,
    pub turn: u64,
    pub audio: Vec<i16>,
}

/// Its answer: `p_complete` is None when inference failed (the pause then ends on silence).
pub struct Answer {
    pub pause: u64,
    pub turn: u64,
    pub p_complete: Option<f32>,
    pub took: Duration,
}

/// The model on its own thread: jobs in, answers out, in order.
pub struct TurnWorker {
    jobs: Sender<Job>,
    pub answers: Receiver<Answer>,
}

impl TurnWorker {
    pub fn spawn(mut model: impl TurnModel) -> Self {
        let (jobs, job_rx) = crossbeam_channel::unbounded::<Job>();
        let (answer_tx, answers) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("turn-model".into())
            .spawn(move || {
                while let Ok(mut job) = job_rx.recv() {
                    // Only the newest question matters: an older pause is over once a newer
                    // one is asked about, so skip what queued up while the model was busy.
                    while let Ok(newer) = job_rx.try_recv() {
                        job = newer;
                    }
                    let t0 = Instant::now();
                    let p_complete = model
                        .p_complete(&job.audio)
                        .map_err(|e| log::warn!("turn {}: the turn model failed ({e:#}); ending this pause on silence", job.turn))
                        .ok();
                    let answer = Answer { pause: job.pause, turn: job.turn, p_complete, took: t0.elapsed() };
                    if answer_tx.send(answer).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the turn-model thread");
        TurnWorker { jobs, answers }
    }

    pub fn ask(&self, job: Job) {
        let _ = self.jobs.send(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clip of tests/data/smart_turn_reference.json: WAVs joined by silences (ms).
    pub fn reference_clip(dir: &Path, clip: &serde_json::Value) -> Vec<i16> {
        let mut audio = vec![];
        for part in clip["parts"].as_array().unwrap() {
            match part.as_u64() {
                Some(ms) => audio.extend(std::iter::repeat_n(0i16, (ms * RATE as u64 / 1000) as usize)),
                None => {
                    let file = std::fs::File::open(dir.join(part.as_str().unwrap())).unwrap();
                    let (rate, samples) = tgvoice::resample::read_wav_mono(file).unwrap();
                    assert_eq!(rate, RATE);
                    audio.extend(samples);
                }
            }
        }
        audio
    }

    /// Reference numbers from pipecat's own numpy feature code on the same audio
    /// (tests/data/smart_turn_reference.py).
    #[test]
    fn smart_turn_features_match_the_numpy_reference() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("smart_turn_reference.json")).unwrap()).unwrap();
        let mel = LogMel::new(N_MELS);
        let clips = reference["clips"].as_array().unwrap();
        assert!(clips.len() >= 3);
        for clip in clips {
            let name = clip["name"].as_str().unwrap();
            let audio = reference_clip(&dir, clip);
            assert_eq!(audio.len() as u64, clip["samples"].as_u64().unwrap(), "{name}");
            let f = features(&mel, &audio);
            let frames = LogMel::frames_for(WINDOW_SAMPLES);
            assert_eq!(f.len(), N_MELS * frames);
            let (first_frame, step) = (reference["first_frame"].as_u64().unwrap() as usize, reference["frame_step"].as_u64().unwrap() as usize);
            let want: Vec<f64> = clip["features"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let mut got = vec![];
            for m in 0..N_MELS {
                for t in (first_frame..frames).step_by(step) {
                    got.push(f[m * frames + t] as f64);
                }
            }
            assert_eq!(got.len(), want.len(), "{name}");
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            eprintln!("{name}: features differ from the reference by up to {worst:.2e}");
            assert!(worst < 2e-4, "{name}: features differ from the reference by up to {worst}");
            let mean = f.iter().map(|&v| v as f64).sum::<f64>() / f.len() as f64;
            let want_mean = clip["mean"].as_f64().unwrap();
            assert!((mean - want_mean).abs() < 1e-5, "{name}: mean {mean} vs {want_mean}");
        }
    }

    /// The model through `ort` on our features gives onnxruntime-in-Python's probability on
    /// pipecat's features, both run here and now. The int8 model's output depends on the CPU's
    /// kernels (AVX2 vs AVX-512 VNNI: "hesitation-resumed" is 0.70 on one and 0.28 on the other,
    /// in Python and Rust alike), so a stored number only holds on the machine that made it;
    /// the features, which are float, are checked against stored numbers above. Needs ONNX
    /// Runtime, the model and the venv's onnxruntime (scripts/setup).
    #[test]
    fn smart_turn_probability_matches_the_python_reference() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        crate::silero::SileroVad::load().expect("ONNX Runtime (scripts/setup; ORT_DYLIB_PATH)");
        let path = default_model_path();
        assert!(path.exists(), "{} missing: run scripts/setup (step smart-turn)", path.display());
        let reference = python_reference(&dir, &path);
        let mut model = SmartTurn::load(&path).unwrap();
        for clip in reference["clips"].as_array().unwrap() {
            let name = clip["name"].as_str().unwrap();
            let audio = reference_clip(&dir, clip);
            let t0 = Instant::now();
            let p = model.p_complete(&audio).unwrap() as f64;
            let want = clip["p_complete"].as_f64().unwrap();
            eprintln!("{name}: p(complete) {p:.4} (Python {want:.4}), {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
            // The (quantised) model itself moves by up to 0.026 when its input is perturbed by
            // noise of 2e-6 (measured with onnxruntime in Python), while the features above agree
            // to ~5e-6: so agreement is judged at that scale.
            assert!((p - want).abs() < 0.03, "{name}: p(complete) {p} vs the reference {want}");
        }
        // What the clips are for: the model tells a finished question from a trailing "um".
        let p_of = |n: &str| {
            reference["clips"].as_array().unwrap().iter().find(|c| c["name"] == n).unwrap()["p_complete"].as_f64().unwrap()
        };
        assert!(p_of("complete") > 0.5 && p_of("incomplete") < 0.5, "complete {} incomplete {}", p_of("complete"), p_of("incomplete"));
    }

    /// tests/data/smart_turn_reference.py run now, with the venv's onnxruntime and the pipecat
    /// wheel scripts/setup cached.
    fn python_reference(dir: &Path, model: &Path) -> serde_json::Value {
        let cache = tgvoice::paths::cache_dir();
        let venv = std::env::var_os("TGVOICE_VENV").map(std::path::PathBuf::from).unwrap_or_else(|| cache.join("venv"));
        let wheel = cache.join("wheels/pipecat_ai-1.14.0-py3-none-any.whl");
        assert!(wheel.exists(), "{} missing: run scripts/setup (step smart-turn)", wheel.display());
        let out = std::process::Command::new(venv.join("bin/python"))
            .arg(dir.join("smart_turn_reference.py"))
            .arg(&wheel)
            .arg(model)
            .output()
            .expect("the venv's python (scripts/setup, step venv)");
        assert!(out.status.success(), "smart_turn_reference.py failed (scripts/setup installs onnxruntime into the venv): {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("the reference script's JSON")
    }
}

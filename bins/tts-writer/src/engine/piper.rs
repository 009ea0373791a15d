//! The Piper engine: a Piper voice (`.onnx` + `.onnx.json`) run through ONNX Runtime in this
//! process, with phonemes from libespeak-ng ([`super::phonemize`]).
//!
//! The model is loaded once and kept for the life of the program; each sentence is one
//! `session.run` (inputs `input` [1,N] i64, `input_lengths` [1] i64, `scales` [3] f32 =
//! noise_scale, length_scale, noise_w from the json) giving float audio at the voice's rate
//! (22050 Hz for medium voices), peak-normalised per sentence like piper-tts does.

use super::phonemize::{phonemes_to_ids, EspeakPhonemizer, Sentence};
use super::{Audio, SpeechEngine};
use anyhow::{Context, Result};
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::Tensor;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Peak level after normalisation (piper uses 1.0; a little headroom keeps the resampler's
/// overshoot from clipping).
const PEAK: f32 = 0.9;

#[derive(Deserialize)]
struct VoiceConfig {
    audio: AudioConfig,
    espeak: EspeakConfig,
    inference: InferenceConfig,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default)]
    num_speakers: u32,
}

#[derive(Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}

#[derive(Deserialize)]
struct EspeakConfig {
    voice: String,
}

#[derive(Deserialize)]
struct InferenceConfig {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

pub struct PiperEngine {
    session: Session,
    config: VoiceConfig,
    phonemizer: EspeakPhonemizer,
    warned: HashSet<String>,
    label: String,
    /// Speak the first clause of each text on its own (see [`split_first_clause`]).
    pub first_clause_alone: bool,
}

/// Where ONNX Runtime is: `ORT_DYLIB_PATH`, else the copy scripts/setup unpacks.
pub fn onnxruntime_path() -> Option<PathBuf> {
    let p = tgvoice::paths::onnx_runtime();
    p.exists().then_some(p)
}

impl PiperEngine {
    /// Load the voice `model` (its config is `<model>.json`) with `threads` intra-op threads.
    pub fn load(model: &Path, threads: usize) -> Result<Self> {
        let json_path = PathBuf::from(format!("{}.json", model.display()));
        let json = std::fs::read_to_string(&json_path).with_context(|| format!("cannot read the voice config {}", json_path.display()))?;
        let config: VoiceConfig = serde_json::from_str(&json).with_context(|| format!("{} is not a Piper voice config", json_path.display()))?;
        if config.num_speakers > 1 {
            log::warn!("{} has {} speakers; using the default one", model.display(), config.num_speakers);
        }
        let ort_lib = onnxruntime_path().context("ONNX Runtime not found (set ORT_DYLIB_PATH or run scripts/setup onnxruntime)")?;
        // ort panics if the library cannot be loaded; we checked the file exists, and catch a
        // broken one here.
        let lib = ort_lib.display().to_string();
        std::panic::catch_unwind(move || ort::init_from(lib).with_name("tts-writer").commit())
            .map_err(|_| anyhow::anyhow!("cannot load ONNX Runtime from {}", ort_lib.display()))?
            .context("cannot initialise ONNX Runtime")?;
        let session = Session::builder()?
            .with_optimization_level(GraphOptimizationLevel::Level3)?
            .with_intra_threads(threads.max(1))?
            .with_inter_threads(1)?
            .with_intra_op_spinning(false)?
            .commit_from_file(model)
            .with_context(|| format!("cannot load the Piper voice {}", model.display()))?;
        let phonemizer = EspeakPhonemizer::new(&config.espeak.voice)?;
        let label = format!("piper {}", model.file_stem().unwrap_or_default().to_string_lossy());
        Ok(PiperEngine { session, config, phonemizer, warned: HashSet::new(), label, first_clause_alone: true })
    }

    fn run(&mut self, ids: &[i64]) -> Result<Vec<f32>> {
        let n = ids.len();
        let inf = &self.config.inference;
        let input = Tensor::from_array(([1usize, n], ids.to_vec()))?;
        let lengths = Tensor::from_array(([1usize], vec![n as i64]))?;
        let scales = Tensor::from_array(([3usize], vec![inf.noise_scale, inf.length_scale, inf.noise_w]))?;
        let outputs = self.session.run(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales])?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>()?;
        Ok(audio.to_vec())
    }
}

impl SpeechEngine for PiperEngine {
    fn name(&self) -> &str {
        &self.label
    }

    fn synthesize(&mut self, text: &str, emit: &mut dyn FnMut(Audio) -> bool) -> Result<()> {
        let mut sentences = self.phonemizer.phonemize(text);
        if self.first_clause_alone && !sentences.is_empty() {
            // The first sentence clause by clause: each clause is synthesised while the one
            // before it plays.
            let mut at = 0;
            while let Some(rest) = split_first_clause(&mut sentences[at]) {
                sentences.insert(at + 1, rest);
                at += 1;
            }
        }
        for sentence in sentences {
            log::debug!("phonemes: {}", sentence.phonemes.concat());
            let (ids, missing) = phonemes_to_ids(&sentence.phonemes, &self.config.phoneme_id_map)?;
            for m in missing {
                if self.warned.insert(m.clone()) {
                    log::warn!("phoneme {m:?} is not in the voice's phoneme_id_map; skipped");
                }
            }
            if ids.len() <= 3 {
                continue;
            }
            let audio = self.run(&ids)?;
            let peak = audio.iter().fold(0f32, |m, x| m.max(x.abs()));
            let gain = if peak < 1e-8 { 0.0 } else { PEAK / peak };
            let samples = audio.iter().map(|x| (x * gain * 32767.0).round().clamp(-32768.0, 32767.0) as i16).collect();
            if !emit(Audio { rate: self.config.audio.sample_rate, samples, span: sentence.span(), edges: true }) {
                break;
            }
        }
        Ok(())
    }
}

/// Split `sentence` after its first clause (`, ; :` then a space), returning the rest.
///
/// VITS renders a whole sentence at once, so the time to first audio grows with the sentence
/// (RTF × its length). Speaking "Hello," by itself first and the rest right after halves or
/// better the wait for a typical reply opening, at the price of a phrase boundary Piper puts
/// at a comma anyway. Applied to every clause of a chunk's first sentence.
pub fn split_first_clause(sentence: &mut Sentence) -> Option<Sentence> {
    let ph = &sentence.phonemes;
    let at = ph.windows(2).position(|w| matches!(w[0].as_str(), "," | ";" | ":") && w[1] == " ")?;
    let rest: Vec<String> = ph[at + 2..].to_vec();
    if rest.iter().all(|p| p.trim().is_empty() || ".?!".contains(p.as_str())) || sentence.clauses.len() < 2 {
        return None;
    }
    sentence.phonemes.truncate(at + 1);
    let rest_clauses = sentence.clauses.split_off(1);
    Some(Sentence { clauses: rest_clauses, phonemes: rest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_clause_is_split_off() {
        let sentence = |p: &str, c: &[std::ops::Range<usize>]| Sentence {
            phonemes: p.chars().map(|c| c.to_string()).collect(),
            clauses: c.to_vec(),
        };
        let text = "Ab, cd, e.";
        let mut s = sentence("ab, cd, e.", &[0..3, 4..7, 8..10]);
        let rest = split_first_clause(&mut s).unwrap();
        assert_eq!((s.phonemes.concat(), &text[s.span().unwrap()]), ("ab,".to_string(), "Ab,"));
        assert_eq!((rest.phonemes.concat(), &text[rest.span().unwrap()]), ("cd, e.".to_string(), "cd, e."));
        let mut whole = sentence("abc.", &[0..4]);
        assert!(split_first_clause(&mut whole).is_none());
    }
}

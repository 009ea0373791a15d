//! [`MoonshineEngine`]: Moonshine Base (English; Moonshine AI, MIT) run through ONNX Runtime
//! (`ort`, the same library vadseg and tts-writer load), as a [`crate::worker::Transcriber`].
//!
//! The model comes from the PyPI wheel moonshine-cpp 0.1.4 (scripts/provision/45-moonshine.sh):
//! an encoder (16 kHz samples → hidden states; its cost grows with the clip, no 30 s window)
//! and a merged decoder with a key/value cache, decoded greedily here. The wheel's `.ort` files
//! keep their weights as int8 and dequantise all of them on every decoder step (~60 ms a token
//! on this machine); the provisioning step re-saves them as `.onnx`, which ONNX Runtime
//! constant-folds once at load (~15 ms a token), see [`ENCODER_FILE`].
//!
//! What the stage relies on holds as for Whisper: the input is [`decode_input`] (so a decode at
//! a pause has the final input exactly when only silence followed), decoding is deterministic
//! (greedy, no state kept between calls), the abort flag is polled between decoder steps, and a
//! repetition loop is cut to one copy before the text leaves.

use crate::engine::{decode_input, Transcription, SAMPLE_RATE};
use crate::guard::cut_loop;
use anyhow::{Context, Result};
use ort::memory::Allocator;
use ort::session::{builder::GraphOptimizationLevel, Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tgvoice::cli::{exit, fail};

/// The encoder, re-saved from the wheel's `encoder_model.ort` as ONNX (see the module docs).
pub const ENCODER_FILE: &str = "encoder_model.onnx";
/// The merged decoder (first step and cached steps in one graph), re-saved as ONNX.
pub const DECODER_FILE: &str = "decoder_model_merged.onnx";
/// The token table, as the wheel ships it.
pub const TOKENIZER_FILE: &str = "tokenizer.bin";
/// The files of a Moonshine model directory.
pub const MODEL_FILES: [&str; 3] = [ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE];
/// What puts them there.
pub const PROVISION_HINT: &str = "run scripts/setup moonshine (scripts/provision/45-moonshine.sh)";

/// Decoder layers of Moonshine Base; each has a self-attention ("decoder") and a
/// cross-attention ("encoder") cache of key and value, [1, 8 heads, T, 52].
const LAYERS: usize = 8;
const HEADS: usize = 8;
const HEAD_DIM: usize = 52;
/// Token ids: `<s>` starts the decoding, `</s>` ends it; ids up to `</s>` carry no text.
const START: i64 = 1;
const END: i64 = 2;
/// Moonshine's own bound on the output: about 6.5 tokens per second of audio. Speech has
/// fewer, so a decoder that loops stops there instead of running away.
pub const MAX_TOKENS_PER_SECOND: f64 = 6.5;

/// The most tokens a decode of `n_samples` (16 kHz) may produce.
pub fn max_tokens(n_samples: usize) -> usize {
    (n_samples as f64 / SAMPLE_RATE as f64 * MAX_TOKENS_PER_SECOND).ceil() as usize
}

/// Moonshine's `tokenizer.bin`: every token's bytes, each preceded by its length as an
/// unsigned LEB128 varint, in id order. `▁` (U+2581) in a token stands for a space.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    tokens: Vec<Vec<u8>>,
}

/// An unsigned LEB128 varint at the start of `bytes`: its value and how many bytes it took.
fn read_varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, b) in bytes.iter().enumerate().take(5) {
        value |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

impl Tokenizer {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut tokens = vec![];
        let mut at = 0;
        while at < bytes.len() {
            let (len, used) = read_varint(&bytes[at..]).with_context(|| format!("token {}: bad length at byte {at}", tokens.len()))?;
            let start = at + used;
            let end = start + len;
            anyhow::ensure!(end <= bytes.len(), "token {}: {len} bytes at byte {start} run past the end ({} bytes)", tokens.len(), bytes.len());
            tokens.push(bytes[start..end].to_vec());
            at = end;
        }
        anyhow::ensure!(tokens.len() > END as usize, "only {} tokens", tokens.len());
        Ok(Tokenizer { tokens })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&bytes).with_context(|| format!("{} is not a Moonshine tokenizer", path.display()))
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The text of `ids`: their bytes joined (a character may span tokens), `▁` as a space,
    /// without the special tokens and the leading space.
    pub fn decode(&self, ids: &[i64]) -> String {
        let mut bytes = vec![];
        for &id in ids {
            if id > END {
                if let Some(t) = self.tokens.get(id as usize) {
                    bytes.extend_from_slice(t);
                }
            }
        }
        String::from_utf8_lossy(&bytes).replace('\u{2581}', " ").trim().to_string()
    }
}

/// The model directory's files, each checked to be there, with the fix in the message.
pub fn check_model_dir(dir: &Path) -> Result<()> {
    for name in MODEL_FILES {
        let path = dir.join(name);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() > 0 => {}
            Ok(_) => return Err(fail(exit::UNAVAILABLE, format!("Moonshine model file {} is empty or not a file; {PROVISION_HINT}", path.display()))),
            Err(e) => {
                return Err(fail(
                    exit::UNAVAILABLE,
                    format!("cannot open Moonshine model file {}: {e}; {PROVISION_HINT}, or pass --moonshine-model DIR", path.display()),
                ))
            }
        }
    }
    Ok(())
}

/// Load ONNX Runtime (`ORT_DYLIB_PATH`, else where scripts/setup unpacks it) once per process.
fn init_onnx_runtime() -> Result<()> {
    let lib = tgvoice::paths::onnx_runtime();
    if !lib.is_file() {
        return Err(fail(
            exit::UNAVAILABLE,
            format!("ONNX Runtime not found at {} (Moonshine runs on it); run scripts/setup onnxruntime or set ORT_DYLIB_PATH", lib.display()),
        ));
    }
    let name = lib.display().to_string();
    // ort panics when the library cannot be loaded: report it instead.
    std::panic::catch_unwind(move || ort::init_from(name).with_name("sttd").commit())
        .map_err(|_| fail(exit::UNAVAILABLE, format!("cannot load ONNX Runtime from {}; run scripts/setup onnxruntime", lib.display())))?
        .context("cannot initialise ONNX Runtime")?;
    Ok(())
}

pub struct MoonshineEngine {
    encoder: Session,
    decoder: Session,
    tokenizer: Tokenizer,
    dir: PathBuf,
    threads: usize,
    /// Names of the decoder's cache inputs and the outputs they are fed from, per layer.
    cache: Vec<CacheSlot>,
}

struct CacheSlot {
    input: String,
    output: String,
    /// A cross-attention cache: computed in the first step only, then kept.
    encoder: bool,
}

impl MoonshineEngine {
    /// Load the model in `dir` with `threads` ONNX Runtime threads. A missing or damaged file
    /// stops sttd (exit 69) with its name and the command that fixes it.
    pub fn load(dir: &Path, threads: usize) -> Result<Self> {
        check_model_dir(dir)?;
        let tokenizer = Tokenizer::load(&dir.join(TOKENIZER_FILE))
            .map_err(|e| fail(exit::UNAVAILABLE, format!("{e:#}; the file is damaged: {PROVISION_HINT}")))?;
        init_onnx_runtime()?;
        let session = |name: &str| -> Result<Session> {
            let path = dir.join(name);
            Session::builder()
                .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3))
                .and_then(|b| b.with_intra_threads(threads.max(1)))
                .and_then(|b| b.with_inter_threads(1))
                .and_then(|b| b.with_intra_op_spinning(false))
                .and_then(|b| b.commit_from_file(&path))
                .map_err(|e| fail(exit::UNAVAILABLE, format!("ONNX Runtime cannot load the Moonshine model file {} ({e}); it is damaged: {PROVISION_HINT}", path.display())))
        };
        let encoder = session(ENCODER_FILE)?;
        let decoder = session(DECODER_FILE)?;
        let mut cache = vec![];
        for layer in 0..LAYERS {
            for part in ["decoder", "encoder"] {
                for kv in ["key", "value"] {
                    cache.push(CacheSlot {
                        input: format!("past_key_values.{layer}.{part}.{kv}"),
                        output: format!("present.{layer}.{part}.{kv}"),
                        encoder: part == "encoder",
                    });
                }
            }
        }
        let engine = MoonshineEngine { encoder, decoder, tokenizer, dir: dir.to_path_buf(), threads: threads.max(1), cache };
        engine.check_signature()?;
        Ok(engine)
    }

    /// The sessions have the inputs and outputs this code feeds and reads: another model in
    /// the directory is reported at load, not as a failed first turn.
    fn check_signature(&self) -> Result<()> {
        let has_in = |s: &Session, n: &str| s.inputs.iter().any(|i| i.name == n);
        let has_out = |s: &Session, n: &str| s.outputs.iter().any(|o| o.name == n);
        let mut missing = vec![];
        for n in ["input_values"] {
            if !has_in(&self.encoder, n) {
                missing.push(format!("{ENCODER_FILE} input {n}"));
            }
        }
        if !has_out(&self.encoder, "last_hidden_state") {
            missing.push(format!("{ENCODER_FILE} output last_hidden_state"));
        }
        for n in ["input_ids", "encoder_hidden_states", "use_cache_branch"].iter().copied().chain(self.cache.iter().map(|c| c.input.as_str())) {
            if !has_in(&self.decoder, n) {
                missing.push(format!("{DECODER_FILE} input {n}"));
            }
        }
        for n in std::iter::once("logits").chain(self.cache.iter().map(|c| c.output.as_str())) {
            if !has_out(&self.decoder, n) {
                missing.push(format!("{DECODER_FILE} output {n}"));
            }
        }
        if !missing.is_empty() {
            // Name the file(s) and the first few names: a wrong file lacks dozens of them.
            let mut files: Vec<&str> = missing.iter().filter_map(|m| m.split(' ').next()).collect();
            files.dedup();
            let shown = missing.len().min(3);
            return Err(fail(
                exit::UNAVAILABLE,
                format!(
                    "{} in {} is not Moonshine Base as sttd runs it ({} names missing: {}{}); {PROVISION_HINT}",
                    files.join(" and "),
                    self.dir.display(),
                    missing.len(),
                    missing[..shown].join(", "),
                    if missing.len() > shown { ", …" } else { "" }
                ),
            ));
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        format!("Moonshine Base (English) from {}, {} tokens, {} threads, greedy", self.dir.display(), self.tokenizer.len(), self.threads)
    }

    /// Transcribe a turn's `samples` (16 kHz mono f32) from [`decode_input`]: encode, then
    /// greedy decoding up to `</s>` or [`max_tokens`]; a loop left in the text is cut to one
    /// copy. `abort` set by another thread stops the call between steps (`aborted`).
    pub fn transcribe(&mut self, samples: &[f32], abort: Option<Arc<AtomicBool>>) -> Result<Transcription> {
        let t0 = Instant::now();
        let audio = decode_input(samples);
        let aborted = || abort.as_ref().is_some_and(|a| a.load(Ordering::Relaxed));
        let stopped = |t0: Instant| Transcription { aborted: true, elapsed_ms: t0.elapsed().as_secs_f64() * 1e3, ..Default::default() };
        if aborted() {
            return Ok(stopped(t0));
        }
        let input = Tensor::from_array(([1usize, audio.len()], audio.clone()))?;
        let mut encoded = self.encoder.run(ort::inputs!["input_values" => input]).context("the Moonshine encoder failed")?;
        let hidden = encoded.remove("last_hidden_state").context("the Moonshine encoder gave no last_hidden_state")?;
        drop(encoded);

        // Empty caches (T = 0) for the first step; `from_array` refuses a zero dimension.
        let allocator = Allocator::default();
        let mut past: Vec<DynValue> = Vec::with_capacity(self.cache.len());
        for _ in &self.cache {
            past.push(Tensor::<f32>::new(&allocator, [1usize, HEADS, 0, HEAD_DIM])?.into_dyn());
        }
        let limit = max_tokens(audio.len());
        let (mut ids, mut logprob_sum) = (Vec::<i64>::with_capacity(limit), 0.0f64);
        let mut token = START;
        for step in 0..limit {
            if aborted() {
                return Ok(stopped(t0));
            }
            let mut inputs: Vec<(Cow<str>, SessionInputValue)> = vec![
                ("input_ids".into(), Tensor::from_array(([1usize, 1], vec![token]))?.into()),
                ("encoder_hidden_states".into(), (&hidden).into()),
                // The first step computes the caches from nothing; later ones extend them.
                ("use_cache_branch".into(), Tensor::from_array(([1usize], vec![step > 0]))?.into()),
            ];
            for (slot, value) in self.cache.iter().zip(&past) {
                inputs.push((slot.input.as_str().into(), value.into()));
            }
            let mut out = self.decoder.run(inputs).context("the Moonshine decoder failed")?;
            let (_, logits) = out["logits"].try_extract_tensor::<f32>()?;
            let (next, logprob) = best_token(logits);
            let mut fresh = Vec::with_capacity(self.cache.len());
            for (slot, old) in self.cache.iter().zip(past.drain(..)) {
                // The cross-attention cache comes from the first step's encoder states.
                fresh.push(if slot.encoder && step > 0 { old } else { out.remove(&slot.output).with_context(|| format!("no {}", slot.output))? });
            }
            drop(out);
            past = fresh;
            if next == END {
                break;
            }
            logprob_sum += logprob as f64;
            ids.push(next);
            token = next;
        }
        let mut text = self.tokenizer.decode(&ids);
        let loop_cut = match cut_loop(&text) {
            Some(cut) => {
                text = cut;
                true
            }
            None => false,
        };
        Ok(Transcription {
            text,
            // Moonshine has no no-speech head; the guard's level, noise and stock-phrase
            // checks still apply.
            no_speech_prob: None,
            avg_logprob: if ids.is_empty() { 0.0 } else { (logprob_sum / ids.len() as f64) as f32 },
            n_tokens: ids.len(),
            loop_cut,
            input_len: audio.len(),
            elapsed_ms: t0.elapsed().as_secs_f64() * 1e3,
            ..Default::default()
        })
    }

    /// One decode of a second of silence, so ONNX Runtime has made its buffers before the
    /// first turn.
    pub fn warm_up(&mut self) -> Result<f64> {
        let t0 = Instant::now();
        self.transcribe(&vec![0.0; SAMPLE_RATE as usize], None)?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    }
}

/// The id of the most likely token in the last position's `logits`, and its log-probability.
fn best_token(logits: &[f32]) -> (i64, f32) {
    let (mut best, mut max) = (0usize, f32::NEG_INFINITY);
    for (i, &v) in logits.iter().enumerate() {
        if v > max {
            (best, max) = (i, v);
        }
    }
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    (best as i64, -(sum.ln() as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tokenizer.bin made by hand: each token as LEB128 length + bytes.
    fn table(tokens: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![];
        for t in tokens {
            let mut n = t.len();
            loop {
                let b = (n & 0x7f) as u8;
                n >>= 7;
                out.push(if n > 0 { b | 0x80 } else { b });
                if n == 0 {
                    break;
                }
            }
            out.extend_from_slice(t);
        }
        out
    }

    #[test]
    fn varints_read_one_and_several_bytes() {
        assert_eq!(read_varint(&[0x05, 0xff]), Some((5, 1)));
        assert_eq!(read_varint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(read_varint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(read_varint(&[0x80, 0x80]), None, "unterminated");
    }

    #[test]
    fn tokens_join_their_bytes_and_the_space_mark_becomes_a_space() {
        let long = vec![b'x'; 200]; // a length that needs two varint bytes
        let bytes = table(&[b"<unk>", b"<s>", b"</s>", "▁What".as_bytes(), "▁is".as_bytes(), b"n't", b"?", &[0xc3], &[0xa9], &long, b""]);
        let tok = Tokenizer::parse(&bytes).unwrap();
        assert_eq!(tok.len(), 11);
        // Specials carry no text; the leading space goes.
        assert_eq!(tok.decode(&[START, 3, 4, 5, 6, END]), "What isn't?");
        // A character split over two byte tokens (é = c3 a9) is joined before decoding.
        assert_eq!(tok.decode(&[3, 7, 8]), "Whaté");
        assert_eq!(tok.decode(&[9]), "x".repeat(200));
        // Unknown ids (the logits are wider than the table) and empty tokens add nothing.
        assert_eq!(tok.decode(&[3, 10, 40_000]), "What");
        assert_eq!(tok.decode(&[]), "");
    }

    #[test]
    fn a_damaged_table_is_an_error_not_a_panic() {
        let mut bytes = table(&[b"<unk>", b"<s>", b"</s>", b"abc"]);
        bytes.pop();
        assert!(Tokenizer::parse(&bytes).is_err(), "a token running past the end");
        assert!(Tokenizer::parse(&table(&[b"<unk>"])).is_err(), "too few tokens");
        assert!(Tokenizer::parse(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err(), "a length that never ends");
    }

    #[test]
    fn the_token_bound_follows_the_audio_length() {
        assert_eq!(max_tokens(32_000), 13);
        assert_eq!(max_tokens(16_000 * 5), 33);
    }

    #[test]
    fn best_token_and_its_log_probability() {
        let (id, lp) = best_token(&[0.0, 2.0, 0.0, 0.0]);
        assert_eq!(id, 1);
        let want = (2f64.exp() / (2f64.exp() + 3.0)).ln() as f32;
        assert!((lp - want).abs() < 1e-5, "{lp} vs {want}");
    }

    #[test]
    fn a_missing_model_file_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ENCODER_FILE), b"x").unwrap();
        let err = format!("{:#}", check_model_dir(dir.path()).unwrap_err());
        assert!(err.contains(DECODER_FILE) && err.contains("scripts/setup moonshine"), "{err}");
    }
}

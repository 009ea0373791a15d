//! [`HallucinationGuard`]: decides whether a Whisper result is real speech or one of Whisper's
//! well-known inventions on silence and noise ("Thank you.", "[BLANK_AUDIO]", "you").
//!
//! Checks, cheapest first:
//! 1. the segment's energy: near-digital-silence audio is never transcribed; and its spectral
//!    flatness: broadband noise (hiss, fans, static; flatness near 0.56 for white noise) is
//!    not speech (voiced speech stays below ~0.2), so it never reaches Whisper either;
//! 2. the text: empty, or only bracketed/parenthesised non-speech tags and punctuation;
//! 3. whisper.cpp's no-speech probability together with the mean token log-probability
//!    (OpenAI's rule: no-speech prob > threshold AND avg logprob < −1 → silence);
//! 4. a very high no-speech probability alone;
//! 5. a short list of stock phrases Whisper emits on non-speech, rejected when the audio is
//!    weak or the model is unsure.

use crate::engine::Transcription;

#[derive(Debug, Clone)]
pub struct GuardSettings {
    /// Segments quieter than this RMS (dBFS) are silence.
    pub min_rms_dbfs: f32,
    /// No-speech probability above which (with a low avg logprob) the text is dropped.
    pub no_speech_thold: f32,
    /// Median spectral flatness (0..1) above which a segment is broadband noise.
    pub max_flatness: f32,
    /// Average token log-probability under which the model is "guessing".
    pub logprob_thold: f32,
    /// No-speech probability above which the text is dropped regardless of confidence.
    pub no_speech_hard: f32,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings { min_rms_dbfs: -55.0, max_flatness: 0.35, no_speech_thold: 0.6, logprob_thold: -1.0, no_speech_hard: 0.9 }
    }
}

/// Why a result was rejected (logged).
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    Silent { rms_dbfs: f32 },
    Noise { flatness: f32 },
    NoText,
    NoSpeech { no_speech_prob: f32, avg_logprob: f32 },
    StockPhrase { text: String },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Silent { rms_dbfs } => write!(f, "audio is silent ({rms_dbfs:.0} dBFS)"),
            Rejection::Noise { flatness } => write!(f, "audio is broadband noise (spectral flatness {flatness:.2})"),
            Rejection::NoText => write!(f, "no words in the result"),
            Rejection::NoSpeech { no_speech_prob, avg_logprob } => {
                write!(f, "no speech (no-speech prob {no_speech_prob:.2}, avg logprob {avg_logprob:.2})")
            }
            Rejection::StockPhrase { text } => write!(f, "{text:?} is a phrase Whisper invents on noise"),
        }
    }
}

/// Whisper's habitual outputs on silence/noise (lower-case, punctuation stripped).
const STOCK_PHRASES: &[&str] = &[
    "thank you",
    "thanks for watching",
    "thank you for watching",
    "thank you very much",
    "you",
    "bye",
    "so",
    "okay",
    "oh",
    "um",
    "uh",
    "hmm",
    "please subscribe",
    "subtitles by the amaraorg community",
];

pub struct HallucinationGuard {
    pub settings: GuardSettings,
}

/// RMS level of `samples` in dBFS (−inf for all-zero).
pub fn rms_dbfs(samples: &[f32]) -> f32 {
    tgvoice::audio::rms_dbfs(samples) as f32
}

/// Median spectral flatness (geometric / arithmetic mean of the power spectrum) over the
/// 512-sample frames louder than -50 dBFS; 0 if there are none.
pub fn spectral_flatness(samples: &[f32]) -> f32 {
    use rustfft::{num_complex::Complex, FftPlanner};
    const N: usize = 512;
    let fft = FftPlanner::<f32>::new().plan_fft_forward(N);
    let window: Vec<f32> = (0..N).map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / N as f32).cos()).collect();
    let mut values = vec![];
    let mut buf = vec![Complex::new(0.0f32, 0.0); N];
    for frame in samples.chunks_exact(N) {
        if rms_dbfs(frame) < -50.0 {
            continue;
        }
        for (b, (x, w)) in buf.iter_mut().zip(frame.iter().zip(&window)) {
            *b = Complex::new(x * w, 0.0);
        }
        fft.process(&mut buf);
        // Bins 2..N/2 (skip DC and the lowest bin), power with a tiny floor.
        let power: Vec<f64> = buf[2..N / 2].iter().map(|c| c.norm_sqr() as f64 + 1e-12).collect();
        let log_mean = power.iter().map(|p| p.ln()).sum::<f64>() / power.len() as f64;
        let mean = power.iter().sum::<f64>() / power.len() as f64;
        values.push((log_mean.exp() / mean) as f32);
    }
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// Remove `[...]`, `(...)` and `*...*` non-speech tags and tidy whitespace.
pub fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0i32;
    let mut in_star = false;
    for c in text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = (depth - 1).max(0),
            '*' => in_star = !in_star,
            _ if depth == 0 && !in_star => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn normalise(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl HallucinationGuard {
    pub fn new(settings: GuardSettings) -> Self {
        HallucinationGuard { settings }
    }

    /// Before running Whisper: is there anything to transcribe at all?
    pub fn check_audio(&self, samples: &[f32]) -> Result<(), Rejection> {
        let level = rms_dbfs(samples);
        if level < self.settings.min_rms_dbfs {
            return Err(Rejection::Silent { rms_dbfs: level });
        }
        let flatness = spectral_flatness(samples);
        if flatness > self.settings.max_flatness {
            return Err(Rejection::Noise { flatness });
        }
        Ok(())
    }

    /// After Whisper: the text to emit, or why there is none.
    pub fn accept(&self, t: &Transcription, samples: &[f32]) -> Result<String, Rejection> {
        let s = &self.settings;
        let text = strip_tags(&t.text);
        let words = normalise(&text);
        if words.is_empty() {
            return Err(Rejection::NoText);
        }
        let unsure = t.avg_logprob < s.logprob_thold;
        let no_speech_prob = t.no_speech_prob.unwrap_or(0.0);
        if no_speech_prob > s.no_speech_hard || (no_speech_prob > s.no_speech_thold && unsure) {
            return Err(Rejection::NoSpeech { no_speech_prob, avg_logprob: t.avg_logprob });
        }
        if STOCK_PHRASES.contains(&words.as_str()) {
            let weak = rms_dbfs(samples) < s.min_rms_dbfs + 15.0;
            if weak || unsure || no_speech_prob > 0.3 {
                return Err(Rejection::StockPhrase { text });
            }
        }
        Ok(text)
    }
}

/// When a Whisper result is suspect and is decoded again (engine::DecodeSettings::redecode).
#[derive(Debug, Clone)]
pub struct QualityLimits {
    /// Text bytes / zlib-compressed bytes above this is repetitive (OpenAI Whisper's 2.4).
    pub max_compression_ratio: f32,
    /// Mean token log-probability under this means the model was guessing.
    pub min_avg_logprob: f32,
}

impl Default for QualityLimits {
    fn default() -> Self {
        QualityLimits { max_compression_ratio: 2.4, min_avg_logprob: -1.0 }
    }
}

/// Why a result was decoded again.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A phrase repeated back to back (`times` copies): the decoder looped.
    Loop { phrase: String, times: usize },
    /// The text compresses too well: repetitive even without an exact back-to-back copy.
    Compressible { ratio: f32 },
    /// The model was unsure of the words.
    Unsure { avg_logprob: f32 },
}

impl Problem {
    pub fn is_loop(&self) -> bool {
        matches!(self, Problem::Loop { .. } | Problem::Compressible { .. })
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Loop { phrase, times } => write!(f, "repetition loop ({phrase:?} {times}×)"),
            Problem::Compressible { ratio } => write!(f, "repetitive text (compression ratio {ratio:.1})"),
            Problem::Unsure { avg_logprob } => write!(f, "unsure (avg logprob {avg_logprob:.2})"),
        }
    }
}

/// OpenAI Whisper's repetitiveness measure: UTF-8 length over zlib-compressed length.
pub fn compression_ratio(text: &str) -> f32 {
    use std::io::Write;
    if text.is_empty() {
        return 0.0;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(text.as_bytes()).expect("writing to a Vec");
    let packed = z.finish().expect("writing to a Vec");
    text.len() as f32 / packed.len() as f32
}

/// A phrase repeated back to back: where it starts (word index), its length in words and how
/// many copies follow each other. Counts as a loop: one word 4×, two or three words 3×, four
/// or more words 2× — people repeat a word ("no, no, no") but not a whole clause, and
/// Whisper's loops are whole clauses.
fn repeated_run(words: &[String]) -> Option<(usize, usize, usize)> {
    for start in 0..words.len() {
        for n in 1..=(words.len() - start) / 2 {
            let phrase = &words[start..start + n];
            let mut times = 1;
            while words.get(start + times * n..start + (times + 1) * n) == Some(phrase) {
                times += 1;
            }
            let needed = match n {
                1 => 4,
                2 | 3 => 3,
                _ => 2,
            };
            if times >= needed {
                return Some((start, n, times));
            }
        }
    }
    None
}

fn word_key(token: &str) -> String {
    token.chars().filter(|c| c.is_alphanumeric() || *c == '\'').collect::<String>().to_lowercase()
}

/// What is wrong with a result, if anything (checked before the guard's accept).
pub fn quality_problem(t: &Transcription, limits: &QualityLimits) -> Option<Problem> {
    let tokens: Vec<String> = t.text.split_whitespace().map(word_key).filter(|w| !w.is_empty()).collect();
    if let Some((start, n, times)) = repeated_run(&tokens) {
        return Some(Problem::Loop { phrase: tokens[start..start + n].join(" "), times });
    }
    let ratio = compression_ratio(&t.text);
    if ratio > limits.max_compression_ratio {
        return Some(Problem::Compressible { ratio });
    }
    if t.n_tokens > 0 && t.avg_logprob < limits.min_avg_logprob {
        return Some(Problem::Unsure { avg_logprob: t.avg_logprob });
    }
    None
}

/// `text` with every repetition loop cut to its first copy (a trailing partial copy too), or
/// None when it has none.
pub fn cut_loop(text: &str) -> Option<String> {
    let mut tokens: Vec<&str> = text.split_whitespace().collect();
    let mut cut = false;
    loop {
        let keys: Vec<String> = tokens.iter().map(|t| word_key(t)).collect();
        let Some((start, n, times)) = repeated_run(&keys) else { break };
        let mut end = start + n * times;
        // A cut-off copy after the loop ("what colors what colors what").
        let mut i = 0;
        while end + i < keys.len() && i < n && keys[end + i] == keys[start + i] {
            i += 1;
        }
        if end + i == keys.len() {
            end += i;
        }
        tokens.drain(start + n..end);
        cut = true;
    }
    cut.then(|| {
        let mut s = tokens.join(" ");
        // The copy kept may end in the separator that led into the next one ("…sun,").
        while s.ends_with(',') || s.ends_with(';') {
            s.pop();
        }
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(text: &str, nsp: f32, lp: f32) -> Transcription {
        Transcription { text: text.into(), no_speech_prob: Some(nsp), avg_logprob: lp, n_tokens: 3, ..Default::default() }
    }

    fn loud() -> Vec<f32> {
        (0..16000).map(|i| 0.3 * (i as f32 * 0.05).sin()).collect()
    }

    #[test]
    fn white_noise_is_flat_and_a_tone_mix_is_not() {
        let mut x = 12345u64;
        let noise: Vec<f32> = (0..16000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5
            })
            .collect();
        let f = spectral_flatness(&noise);
        assert!(f > 0.45, "white noise flatness {f}");
        // A voiced-speech-like harmonic series (150 Hz fundamental) is far from flat.
        let voiced: Vec<f32> = (0..16000)
            .map(|i| (1..20).map(|h| (2.0 * std::f32::consts::PI * 150.0 * h as f32 * i as f32 / 16000.0).sin() / h as f32).sum::<f32>() * 0.1)
            .collect();
        let v = spectral_flatness(&voiced);
        assert!(v < 0.1, "harmonic flatness {v}");
        let g = HallucinationGuard::new(GuardSettings::default());
        assert!(matches!(g.check_audio(&noise), Err(Rejection::Noise { .. })));
        assert!(g.check_audio(&voiced).is_ok());
    }

    #[test]
    fn strips_non_speech_tags() {
        assert_eq!(strip_tags("[BLANK_AUDIO]"), "");
        assert_eq!(strip_tags(" (music) hello  *laughs* there [noise]"), "hello there");
    }

    #[test]
    fn silence_is_rejected_before_whisper_runs() {
        let g = HallucinationGuard::new(GuardSettings::default());
        assert!(matches!(g.check_audio(&vec![0.0; 16000]), Err(Rejection::Silent { .. })));
        assert!(matches!(g.check_audio(&vec![1e-4; 16000]), Err(Rejection::Silent { .. })));
        assert!(g.check_audio(&loud()).is_ok());
    }

    #[test]
    fn no_speech_probability_and_stock_phrases() {
        let g = HallucinationGuard::new(GuardSettings::default());
        let a = loud();
        assert_eq!(g.accept(&result(" Hello there.", 0.01, -0.2), &a).unwrap(), "Hello there.");
        assert!(g.accept(&result("[BLANK_AUDIO]", 0.01, -0.2), &a).is_err());
        assert!(g.accept(&result("Something.", 0.95, -0.2), &a).is_err());
        assert!(g.accept(&result("Something.", 0.7, -1.5), &a).is_err());
        assert!(g.accept(&result("Something.", 0.7, -0.3), &a).is_ok(), "confident text survives a middling no-speech prob");
        assert!(g.accept(&result("Thank you.", 0.4, -0.2), &a).is_err());
        assert!(g.accept(&result("Thank you.", 0.01, -0.1), &a).is_ok(), "a clear, confident thank-you is kept");
        let quiet: Vec<f32> = a.iter().map(|s| s * 0.003).collect();
        assert!(g.accept(&result("Thank you.", 0.01, -0.1), &quiet).is_err());
    }

    #[test]
    fn loops_are_found_and_cut_to_one_copy() {
        let loop_text = "What colors the sky? What colors what colors what colors what colors what colors";
        let t = result(loop_text, 0.0, -0.2);
        assert!(matches!(quality_problem(&t, &QualityLimits::default()), Some(Problem::Loop { times: 5, .. })));
        assert_eq!(cut_loop(loop_text).unwrap(), "What colors the sky? What colors");
        let sentence = "which planet is closest to the sun, which planet is closest to the sun, which planet is closest to the sun, which planet is";
        assert_eq!(cut_loop(sentence).unwrap(), "which planet is closest to the sun");
        assert_eq!(cut_loop("the the the the the"), Some("the".into()));
        // What people say stays as it is.
        for ok in ["No, no, no. Stop.", "Knock knock.", "Wait a minute, wait a minute.", "How many strings does a violin have?"] {
            assert_eq!(cut_loop(ok), None, "{ok}");
            assert_eq!(quality_problem(&result(ok, 0.0, -0.2), &QualityLimits::default()), None, "{ok}");
        }
    }

    #[test]
    fn compression_ratio_flags_repetitive_text() {
        let normal = "Please call me back when you get home tonight, and bring the blue folder from the office.";
        assert!(compression_ratio(normal) < 1.5, "{}", compression_ratio(normal));
        // Repetitive without a back-to-back copy (which the loop check finds).
        let rep = "I am going to the shop, you are going to the shop, we are going to the shop, they are going to the shop, she is going to the shop, he is going to the shop.";
        assert!(compression_ratio(rep) > 2.4, "{}", compression_ratio(rep));
        assert!(matches!(quality_problem(&result(rep, 0.0, -0.2), &QualityLimits::default()), Some(Problem::Compressible { .. })));
        let unsure = result("Maim a famous painter.", 0.0, -1.2);
        assert_eq!(quality_problem(&unsure, &QualityLimits::default()), Some(Problem::Unsure { avg_logprob: -1.2 }));
    }
}

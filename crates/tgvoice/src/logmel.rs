//! Whisper-style log-mel spectrogram of 16 kHz audio: 25 ms periodic-Hann windows (400-point
//! real FFT) every 10 ms, centred with reflect padding, power spectrum, Slaney mel filterbank
//! (0–8 kHz), log10 floored at 1e-10, dynamic range clamped to 8 (×10 dB) below the maximum,
//! scaled as `(x + 4) / 4`, and the trailing frame dropped.
//!
//! This is exactly what `transformers.WhisperFeatureExtractor` computes (and the numpy copy of
//! it Smart Turn v3 uses, `pipecat/audio/turn/smart_turn/_whisper_features.py`); the spectrum
//! is computed in f64 like the reference, so the features agree closely (vadseg's
//! `smart_turn_features_match_the_numpy_reference` checks them against numbers that reference
//! produced on the same audio).

use realfft::{RealFftPlanner, RealToComplex};
use std::sync::Arc;

pub const SAMPLE_RATE: u32 = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
const MEL_FLOOR: f64 = 1e-10;

/// A sparse row of the filterbank: the first FFT bin with a non-zero weight, then the weights.
struct MelFilter {
    first_bin: usize,
    weights: Vec<f64>,
}

pub struct LogMel {
    n_mels: usize,
    fft: Arc<dyn RealToComplex<f64>>,
    window: Vec<f64>,
    filters: Vec<MelFilter>,
}

impl LogMel {
    /// Whisper's front end with `n_mels` bands (80 for tiny … medium and Smart Turn v3).
    pub fn new(n_mels: usize) -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        // Periodic Hann (torch.hann_window / np.hanning(N + 1)[:-1]).
        let window = (0..N_FFT).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()).collect();
        LogMel { n_mels, fft, window, filters: slaney_filterbank(N_FFT / 2 + 1, n_mels, 0.0, SAMPLE_RATE as f64 / 2.0) }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Frames produced for `n_samples` of audio (one per 10 ms hop).
    pub fn frames_for(n_samples: usize) -> usize {
        n_samples / HOP
    }

    /// Features of `audio` (16 kHz, any scale): `n_mels × frames` values, mel band-major
    /// (`out[m * frames + t]`), as the model input `[1, n_mels, frames]` expects.
    pub fn compute(&self, audio: &[f32]) -> Vec<f32> {
        let pad = N_FFT / 2;
        assert!(audio.len() > pad, "log-mel needs more than {pad} samples");
        let padded = reflect_pad(audio, pad);
        // Centred frames over the padded signal; the last one is dropped as in the reference.
        let frames = Self::frames_for(audio.len());
        let bins = N_FFT / 2 + 1;
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0f64; bins];
        let mut log_spec = vec![0f64; self.n_mels * frames];
        for t in 0..frames {
            let frame = &padded[t * HOP..t * HOP + N_FFT];
            for ((x, &s), &w) in input.iter_mut().zip(frame).zip(&self.window) {
                *x = s * w;
            }
            self.fft.process(&mut input, &mut spectrum).expect("FFT sizes are fixed");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (m, f) in self.filters.iter().enumerate() {
                let e: f64 = f.weights.iter().zip(&power[f.first_bin..]).map(|(w, p)| w * p).sum();
                log_spec[m * frames + t] = e.max(MEL_FLOOR).log10();
            }
        }
        let floor = log_spec.iter().copied().fold(f64::NEG_INFINITY, f64::max) - 8.0;
        log_spec.iter().map(|&x| ((x.max(floor) + 4.0) / 4.0) as f32).collect()
    }
}

/// `np.pad(x, (pad, pad), mode="reflect")` (the edge sample is not repeated), in f64.
fn reflect_pad(x: &[f32], pad: usize) -> Vec<f64> {
    let n = x.len();
    let mut out = Vec::with_capacity(n + 2 * pad);
    out.extend((1..=pad).rev().map(|i| x[i] as f64));
    out.extend(x.iter().map(|&s| s as f64));
    out.extend((2..=pad + 1).map(|i| x[n - i] as f64));
    out
}

fn hz_to_mel_slaney(f: f64) -> f64 {
    let logstep = 27.0 / 6.4f64.ln();
    if f >= 1000.0 {
        15.0 + (f / 1000.0).ln() * logstep
    } else {
        3.0 * f / 200.0
    }
}

fn mel_to_hz_slaney(m: f64) -> f64 {
    let logstep = 6.4f64.ln() / 27.0;
    if m >= 15.0 {
        1000.0 * (logstep * (m - 15.0)).exp()
    } else {
        200.0 * m / 3.0
    }
}

/// Triangular filters evenly spaced on the Slaney mel scale, area-normalised (librosa's
/// `norm="slaney"`), over `bins` FFT bins spanning 0…`max_hz`.
fn slaney_filterbank(bins: usize, n_mels: usize, min_hz: f64, max_hz: f64) -> Vec<MelFilter> {
    let (mel_min, mel_max) = (hz_to_mel_slaney(min_hz), hz_to_mel_slaney(max_hz));
    let edges: Vec<f64> =
        (0..n_mels + 2).map(|i| mel_to_hz_slaney(mel_min + (mel_max - mel_min) * i as f64 / (n_mels + 1) as f64)).collect();
    let bin_hz: Vec<f64> = (0..bins).map(|k| max_hz * k as f64 / (bins - 1) as f64).collect();
    (0..n_mels)
        .map(|m| {
            let (lo, mid, hi) = (edges[m], edges[m + 1], edges[m + 2]);
            let enorm = 2.0 / (hi - lo);
            let row: Vec<f64> =
                bin_hz.iter().map(|&f| ((f - lo) / (mid - lo)).min((hi - f) / (hi - mid)).max(0.0) * enorm).collect();
            let first_bin = row.iter().position(|&w| w > 0.0).unwrap_or(0);
            let last_bin = row.iter().rposition(|&w| w > 0.0).unwrap_or(0);
            MelFilter { first_bin, weights: row[first_bin..=last_bin.max(first_bin)].to_vec() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_padding_matches_numpy() {
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(reflect_pad(&x, 2), vec![3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0]);
    }

    #[test]
    fn a_tone_lights_the_band_that_holds_its_frequency() {
        let mel = LogMel::new(80);
        let tone: Vec<f32> = (0..16_000).map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin()).collect();
        let f = mel.compute(&tone);
        let frames = LogMel::frames_for(tone.len());
        assert_eq!(f.len(), 80 * frames);
        let t = frames / 2;
        let loudest = (0..80).max_by(|&a, &b| f[a * frames + t].total_cmp(&f[b * frames + t])).unwrap();
        let band_hz = |m: usize| mel_to_hz_slaney(hz_to_mel_slaney(8000.0) * (m + 1) as f64 / 81.0);
        assert!((band_hz(loudest) - 1000.0).abs() < 60.0, "1 kHz tone peaks in band {loudest} at {:.0} Hz", band_hz(loudest));
    }
}

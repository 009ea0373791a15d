//! The 80-band Slaney mel filterbank Whisper was trained with (librosa
//! `filters.mel(sr=16000, n_fft=400, n_mels=80)`, i.e. `htk=False, norm="slaney"`), which a ggml
//! file carries so whisper.cpp can compute the log-mel spectrogram.

/// Slaney's mel scale: linear below 1 kHz, logarithmic above.
fn hz_to_mel(f: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if f >= min_log_hz {
        min_log_mel + (f / min_log_hz).ln() / logstep
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if m >= min_log_mel {
        min_log_hz * (logstep * (m - min_log_mel)).exp()
    } else {
        f_sp * m
    }
}

/// `n_mels × (n_fft/2 + 1)` weights, row-major, as librosa computes them (in f64, then f32).
pub fn filterbank(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_bins = n_fft / 2 + 1;
    let sr = sample_rate as f64;
    let fft_freqs: Vec<f64> = (0..n_bins).map(|i| i as f64 * (sr / 2.0) / (n_bins - 1) as f64).collect();
    let (mel_min, mel_max) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(mel_min + (mel_max - mel_min) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut w = vec![0f32; n_mels * n_bins];
    for i in 0..n_mels {
        let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for (j, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - mel_f[i]) / (mel_f[i + 1] - mel_f[i]);
            let upper = (mel_f[i + 2] - f) / (mel_f[i + 2] - mel_f[i + 1]);
            w[i * n_bins + j] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scale_round_trips_and_is_linear_below_1khz() {
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(200.0) - 3.0).abs() < 1e-12);
        for f in [0.0, 100.0, 999.0, 1000.0, 4321.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(f)) - f).abs() < 1e-6);
        }
    }

    #[test]
    fn whisper_filterbank_shape_and_triangles() {
        let w = filterbank(16000, 400, 80);
        assert_eq!(w.len(), 80 * 201);
        for i in 0..80 {
            let row = &w[i * 201..(i + 1) * 201];
            assert!(row.iter().all(|v| *v >= 0.0));
            let nonzero: Vec<usize> = (0..201).filter(|j| row[*j] > 0.0).collect();
            assert!(!nonzero.is_empty(), "band {i} is empty");
            // one contiguous run (a triangle)
            assert_eq!(nonzero.last().unwrap() - nonzero[0] + 1, nonzero.len(), "band {i}");
        }
        // Bin 1 is 40 Hz, on the falling edge of band 0 (peak at 37.2 Hz): librosa gives 0.02486259.
        assert!((w[1] - 0.024_862_59).abs() < 1e-6, "w[0][1] = {}", w[1]);
        // The DC bin is the left foot of band 0.
        assert_eq!(w[0], 0.0);
    }
}

//! Audio facts and levels used by several stages: the link sample rate, RMS and dBFS.

/// The sample rate of the audio links: tgcat's frames, the raw links (`tg_input.raw`,
/// `tg_output.raw`) and tts-writer's output (fifo-layout.md §1).
pub const RATE: u32 = 48_000;

/// Mean of the squared samples (0 for none).
pub fn mean_square_i16(samples: &[i16]) -> f64 {
    samples.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / samples.len().max(1) as f64
}

/// Mean of the squared samples (0 for none).
pub fn mean_square_f32(samples: &[f32]) -> f64 {
    samples.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / samples.len().max(1) as f64
}

/// RMS of s16 samples, in sample units (0 for none).
pub fn rms_i16(samples: &[i16]) -> f64 {
    mean_square_i16(samples).sqrt()
}

/// RMS level of f32 samples (full scale ±1.0) in dBFS; −inf for silence or no samples.
pub fn rms_dbfs(samples: &[f32]) -> f64 {
    10.0 * mean_square_f32(samples).log10()
}

/// An s16 RMS (full scale 32768) in dBFS, and back.
pub fn i16_rms_to_dbfs(rms: f64) -> f64 {
    20.0 * (rms / 32768.0).log10()
}

pub fn dbfs_to_i16_rms(dbfs: f64) -> f64 {
    32768.0 * 10f64.powf(dbfs / 20.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_of_known_signals() {
        assert_eq!(rms_i16(&[]), 0.0);
        assert_eq!(rms_i16(&[3, -4, 3, -4]), (12.5f64).sqrt());
        // A full-scale square wave is 0 dBFS, half scale −6.02 dBFS.
        assert!(rms_dbfs(&[1.0, -1.0]).abs() < 1e-9);
        assert!((rms_dbfs(&[0.5, -0.5]) + 6.0206).abs() < 1e-3);
        assert_eq!(rms_dbfs(&[0.0; 4]), f64::NEG_INFINITY);
        assert_eq!(rms_dbfs(&[]), f64::NEG_INFINITY);
        assert!((i16_rms_to_dbfs(16384.0) + 6.0206).abs() < 1e-3);
        assert!((dbfs_to_i16_rms(i16_rms_to_dbfs(300.0)) - 300.0).abs() < 1e-9);
    }
}

//! Streaming mono resampling (rubato's FFT resampler) for s16 audio, plus WAV helpers (hound).
//!
//! [`StreamResampler`] accepts any number of samples per call and returns whatever output is
//! ready; [`StreamResampler::flush`] drains the tail. Its delay is compensated: the output
//! starts with the first input sample, so durations and timestamps line up.

use anyhow::{Context, Result};
use rubato::{FftFixedIn, Resampler};

pub struct StreamResampler {
    inner: Option<FftFixedIn<f32>>,
    chunk: usize,
    pending: Vec<f32>,
    /// Output samples still to discard (the resampler's delay).
    skip: usize,
    in_total: u64,
    out_total: u64,
    ratio: f64,
}

impl StreamResampler {
    /// `chunk_in`: input samples per internal block (e.g. 20 ms worth); smaller = less delay.
    pub fn new(rate_in: u32, rate_out: u32, chunk_in: usize) -> Result<Self> {
        let inner = if rate_in == rate_out {
            None
        } else {
            Some(
                FftFixedIn::<f32>::new(rate_in as usize, rate_out as usize, chunk_in, 1, 1)
                    .with_context(|| format!("cannot resample {rate_in} Hz to {rate_out} Hz"))?,
            )
        };
        let skip = inner.as_ref().map(|r| r.output_delay()).unwrap_or(0);
        Ok(StreamResampler {
            inner,
            chunk: chunk_in,
            pending: Vec::with_capacity(chunk_in * 2),
            skip,
            in_total: 0,
            out_total: 0,
            ratio: rate_out as f64 / rate_in as f64,
        })
    }

    pub fn process(&mut self, input: &[i16]) -> Vec<i16> {
        self.in_total += input.len() as u64;
        let Some(r) = self.inner.as_mut() else {
            self.out_total += input.len() as u64;
            return input.to_vec();
        };
        self.pending.extend(input.iter().map(|&s| s as f32 / 32768.0));
        let mut out = Vec::new();
        while self.pending.len() >= self.chunk {
            let block: Vec<f32> = self.pending.drain(..self.chunk).collect();
            if let Ok(res) = r.process(&[block], None) {
                Self::emit(&res[0], &mut self.skip, &mut out);
            }
        }
        self.out_total += out.len() as u64;
        out
    }

    /// Push the remaining input through and return the tail, so the total output length is
    /// `round(input length × ratio)`.
    pub fn flush(&mut self) -> Vec<i16> {
        let want = (self.in_total as f64 * self.ratio).round() as u64;
        let Some(r) = self.inner.as_mut() else { return vec![] };
        let mut out = Vec::new();
        let mut guard = 0;
        while self.out_total + (out.len() as u64) < want && guard < 8 {
            let block: Vec<f32> = std::mem::take(&mut self.pending);
            let res = if block.is_empty() { r.process_partial::<Vec<f32>>(None, None) } else { r.process_partial(Some(&[block]), None) };
            if let Ok(res) = res {
                Self::emit(&res[0], &mut self.skip, &mut out);
            }
            guard += 1;
        }
        let keep = want.saturating_sub(self.out_total) as usize;
        out.truncate(keep);
        self.out_total += out.len() as u64;
        out
    }

    fn emit(block: &[f32], skip: &mut usize, out: &mut Vec<i16>) {
        let start = (*skip).min(block.len());
        *skip -= start;
        out.extend(block[start..].iter().map(|&x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16));
    }
}

/// A WAV file as mono s16 at its own rate (channels averaged; float/24/32-bit converted).
pub fn read_wav_mono<R: std::io::Read>(reader: R) -> Result<(u32, Vec<i16>)> {
    let mut wav = hound::WavReader::new(reader).context("not a readable WAV file")?;
    let spec = wav.spec();
    let ch = spec.channels.max(1) as usize;
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => wav.samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            wav.samples::<i32>().map(|s| s.map(|v| v as f32 * scale)).collect::<Result<_, _>>()?
        }
    };
    let mono = interleaved
        .chunks(ch)
        .map(|f| (f.iter().sum::<f32>() / ch as f32 * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect();
    Ok((spec.sample_rate, mono))
}

/// Write mono s16 samples as a WAV file.
pub fn write_wav_mono(path: &std::path::Path, rate: u32, samples: &[i16]) -> Result<()> {
    std::fs::write(path, wav_mono_bytes(rate, samples)).with_context(|| format!("cannot write {}", path.display()))
}

/// Mono s16 samples as a WAV file in memory (what a server gets in an upload).
pub fn wav_mono_bytes(rate: u32, samples: &[i16]) -> Vec<u8> {
    let spec = hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut out = std::io::Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    let mut w = hound::WavWriter::new(&mut out, spec).expect("a WAV header fits in memory");
    for &s in samples {
        w.write_sample(s).expect("memory does not run out of room");
    }
    w.finalize().expect("a WAV in memory finalises");
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_and_alignment_are_preserved() {
        let input: Vec<i16> = (0..16000).map(|i| ((i as f64 * 0.1).sin() * 10000.0) as i16).collect();
        let mut r = StreamResampler::new(16000, 48000, 320).unwrap();
        let mut out = vec![];
        for c in input.chunks(123) {
            out.extend(r.process(c));
        }
        out.extend(r.flush());
        assert_eq!(out.len(), 48000);
        // Delay-compensated: output sample 3i tracks input sample i.
        for i in (1000..15000).step_by(997) {
            assert!((out[3 * i] as i32 - input[i] as i32).abs() < 400, "at {i}: {} vs {}", out[3 * i], input[i]);
        }
    }
}

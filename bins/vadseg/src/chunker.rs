//! [`Chunker`]: turns incoming audio frames (48 kHz from tgcat, or any rate) into 16 kHz mono
//! chunks of 512 samples — Silero's input — each stamped with its index in vadseg's 16 kHz
//! stream and the capture time of its first sample.
//!
//! Resampling uses the shared [`StreamResampler`] (rubato's FFT resampler, delay-compensated:
//! 16 kHz output sample k lines up with input sample 3k), so capture times carry over exactly:
//! each input frame leaves an anchor (16 kHz index ↔ capture time) that later chunks look up.

use anyhow::Result;
use std::collections::VecDeque;
use tgvoice::resample::StreamResampler;
use tgvoice::AudioFrame;

use crate::segmenter::{Chunk, CHUNK, RATE};

/// Input samples per resampler block at 48 kHz: 10 ms, so a 20 ms frame is never held back.
const BLOCK_MS: usize = 10;
const MAX_ANCHORS: usize = 512;

#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// 16 kHz stream index of the frame's first sample.
    index: u64,
    capture_us: u64,
}

pub struct Chunker {
    rate_in: u32,
    resampler: Option<StreamResampler>,
    /// Input samples fed to the current resampler.
    fed: u64,
    /// 16 kHz index where the current resampler's output begins.
    base: u64,
    /// Next 16 kHz index to be produced.
    next_index: u64,
    anchors: VecDeque<Anchor>,
    pending: Vec<i16>,
    /// Index of `pending[0]`.
    pending_index: u64,
}

impl Default for Chunker {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunker {
    pub fn new() -> Self {
        Chunker { rate_in: 0, resampler: None, fed: 0, base: 0, next_index: 0, anchors: VecDeque::new(), pending: vec![], pending_index: 0 }
    }

    /// Add one audio frame; complete chunks are appended to `out`.
    pub fn push(&mut self, frame: &AudioFrame, out: &mut Vec<Chunk>) -> Result<()> {
        if frame.sample_rate != self.rate_in || self.resampler.is_none() {
            if self.resampler.is_some() {
                log::warn!("input sample rate changed from {} Hz to {} Hz", self.rate_in, frame.sample_rate);
                self.restart(out);
            }
            let block = (frame.sample_rate as usize * BLOCK_MS / 1000).max(1);
            self.resampler = Some(StreamResampler::new(frame.sample_rate, RATE, block)?);
            self.rate_in = frame.sample_rate;
            self.fed = 0;
            self.base = self.next_index;
        }
        let mono = to_mono(frame);
        let index = self.base + self.fed * RATE as u64 / self.rate_in as u64;
        self.anchors.push_back(Anchor { index, capture_us: frame.capture_us });
        while self.anchors.len() > MAX_ANCHORS {
            self.anchors.pop_front();
        }
        self.fed += mono.len() as u64;
        let resampled = self.resampler.as_mut().expect("resampler").process(&mono);
        self.take(resampled, out);
        Ok(())
    }

    /// The input stream was interrupted (writer restarted, end of input): push out what the
    /// resampler holds; a last partial chunk is padded with silence.
    pub fn restart(&mut self, out: &mut Vec<Chunk>) {
        if let Some(mut r) = self.resampler.take() {
            let tail = r.flush();
            self.take(tail, out);
        }
        if !self.pending.is_empty() {
            let missing = CHUNK - self.pending.len();
            self.pending.resize(CHUNK, 0);
            self.next_index += missing as u64;
            self.take(vec![], out);
        }
    }

    fn take(&mut self, samples: Vec<i16>, out: &mut Vec<Chunk>) {
        if self.pending.is_empty() {
            self.pending_index = self.next_index;
        }
        self.next_index += samples.len() as u64;
        self.pending.extend(samples);
        while self.pending.len() >= CHUNK {
            let rest = self.pending.split_off(CHUNK);
            let samples = std::mem::replace(&mut self.pending, rest);
            let index = self.pending_index;
            self.pending_index += CHUNK as u64;
            out.push(Chunk { index, capture_us: self.capture_us_of(index), samples });
        }
    }

    /// Capture time of 16 kHz sample `index`: the latest anchor at or before it, plus the
    /// samples since.
    fn capture_us_of(&self, index: u64) -> u64 {
        let anchor = self.anchors.iter().rev().find(|a| a.index <= index).or(self.anchors.front());
        match anchor {
            Some(a) if a.index <= index => a.capture_us + (index - a.index) * 1_000_000 / RATE as u64,
            Some(a) => a.capture_us.saturating_sub((a.index - index) * 1_000_000 / RATE as u64),
            None => tgvoice::clock::now_us(),
        }
    }
}

fn to_mono(frame: &AudioFrame) -> Vec<i16> {
    let ch = frame.channels.max(1) as usize;
    if ch == 1 {
        return frame.samples.clone();
    }
    frame.samples.chunks(ch).map(|f| (f.iter().map(|&s| s as i32).sum::<i32>() / ch as i32) as i16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_carry_index_and_capture_time_of_48k_frames() {
        let mut c = Chunker::new();
        let mut out = vec![];
        let t0 = 1_000_000_000u64;
        for i in 0..100u64 {
            let samples: Vec<i16> = (0..960).map(|k| (((i * 960 + k) as f64 * 0.05).sin() * 8000.0) as i16).collect();
            let f = AudioFrame { sample_rate: 48_000, channels: 1, turn: 0, capture_us: t0 + i * 20_000, sample_index: i * 960, samples };
            c.push(&f, &mut out).unwrap();
        }
        c.restart(&mut out);
        // 2 s of 48 kHz = 32000 samples at 16 kHz = 62.5 chunks → 63 with the padded tail.
        assert_eq!(out.len(), 63);
        for (k, ch) in out.iter().enumerate() {
            assert_eq!(ch.index, (k * CHUNK) as u64);
            assert_eq!(ch.capture_us, t0 + k as u64 * 32_000);
        }
    }
}

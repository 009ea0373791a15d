//! Reading tgcat's input: sniff WAV vs raw PCM, convert WAV to 48 kHz mono, cut 20 ms frames,
//! stamp capture times, pace at real time when asked, and survive a FIFO writer restarting.

use anyhow::Result;
use std::io::{Cursor, Read};
use std::time::{Duration, Instant};
use tgvoice::cli::{exit, fail};
use tgvoice::clock::now_us;
use tgvoice::fifo::{ByteInput, Endpoint, ReadOutcome};
use tgvoice::frame::{InputGuess, MAGIC};
use tgvoice::resample::{read_wav_mono, StreamResampler};
use tgvoice::AudioFrame;

pub const RATE: u32 = tgvoice::audio::RATE;

pub struct Options {
    pub realtime: bool,
    pub frame_samples: usize,
    pub trailing_silence_s: f64,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub frames: u64,
    pub samples: u64,
}

/// Cuts samples into frames with running index and capture timestamps.
struct Framer<'a, F: FnMut(AudioFrame) -> bool> {
    frame_samples: usize,
    buf: Vec<i16>,
    index: u64,
    /// For file input: capture time of sample 0 (timestamps follow the sample index).
    /// For live input: None (timestamp = arrival time minus frame duration).
    epoch_us: Option<u64>,
    pace_from: Option<Instant>,
    emit: F,
    stats: &'a mut Stats,
    open: bool,
}

impl<F: FnMut(AudioFrame) -> bool> Framer<'_, F> {
    fn push(&mut self, samples: &[i16]) {
        self.buf.extend_from_slice(samples);
        while self.open && self.buf.len() >= self.frame_samples {
            let chunk: Vec<i16> = self.buf.drain(..self.frame_samples).collect();
            self.emit_frame(chunk);
        }
    }

    fn flush(&mut self) {
        if self.open && !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.emit_frame(chunk);
        }
    }

    fn emit_frame(&mut self, samples: Vec<i16>) {
        let dur_us = samples.len() as u64 * 1_000_000 / RATE as u64;
        let offset_us = self.index * 1_000_000 / RATE as u64;
        if let Some(start) = self.pace_from {
            // A frame can be emitted once its last sample would have been captured.
            let due = start + Duration::from_micros(offset_us + dur_us);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let capture_us = match self.epoch_us {
            Some(e) => e + offset_us,
            None => now_us().saturating_sub(dur_us),
        };
        let n = samples.len() as u64;
        let frame = AudioFrame { sample_rate: RATE, channels: 1, turn: 0, capture_us, sample_index: self.index, samples };
        self.index += n;
        self.stats.frames += 1;
        self.stats.samples += n;
        self.open = (self.emit)(frame);
    }
}

pub fn frame_input(input: Endpoint, opts: &Options, emit: impl FnMut(AudioFrame) -> bool) -> Result<Stats> {
    let label = input.describe("stdin");
    let mut src = ByteInput::open(input)?;
    let live = src.is_fifo() || (matches!(src.endpoint(), Endpoint::Stdio) && !opts.realtime);
    let mut stats = Stats::default();
    let start_us = now_us();
    let mut framer = Framer {
        frame_samples: opts.frame_samples,
        buf: Vec::with_capacity(opts.frame_samples * 2),
        index: 0,
        epoch_us: if live && !opts.realtime { None } else { Some(start_us) },
        pace_from: opts.realtime.then(Instant::now),
        emit,
        stats: &mut stats,
        open: true,
    };

    // Sniff the first bytes: WAV, frames (a mistake), or raw PCM.
    let mut head = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut ended = false;
    while head.len() < 12 && !ended {
        match src.read(&mut chunk)? {
            ReadOutcome::Data(n) => head.extend_from_slice(&chunk[..n]),
            ReadOutcome::WriterGone => continue,
            ReadOutcome::End => ended = true,
        }
    }
    if head.starts_with(&MAGIC) {
        return Err(fail(exit::DATA, format!("{label} is already a tgvoice frame stream; tgcat reads raw PCM or WAV (use framecat to inspect frames)")));
    }
    if InputGuess::of(&head) == InputGuess::Wav {
        let mut rest = Vec::new();
        if !ended {
            loop {
                match src.read(&mut chunk)? {
                    ReadOutcome::Data(n) => rest.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
        }
        let reader = Cursor::new(head).chain(Cursor::new(rest));
        let (rate, mono) = read_wav_mono(reader).map_err(|e| fail(exit::DATA, format!("{label}: {e:#}")))?;
        log::info!("{label}: WAV, {rate} Hz, {:.2} s", mono.len() as f64 / rate as f64);
        let mut rs = StreamResampler::new(rate, RATE, 1024)?;
        let mut out = rs.process(&mono);
        out.extend(rs.flush());
        framer.push(&out);
        framer.push(&vec![0; (opts.trailing_silence_s * RATE as f64) as usize]);
        framer.flush();
        return Ok(stats);
    }

    // Raw s16le 48 kHz mono.
    let mut odd: Option<u8> = None;
    let push_bytes = |framer: &mut Framer<_>, bytes: &[u8], odd: &mut Option<u8>| {
        let mut v: Vec<u8> = Vec::with_capacity(bytes.len() + 1);
        if let Some(b) = odd.take() {
            v.push(b);
        }
        v.extend_from_slice(bytes);
        if v.len() % 2 == 1 {
            *odd = v.pop();
        }
        let samples: Vec<i16> = v.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
        framer.push(&samples);
    };
    push_bytes(&mut framer, &head, &mut odd);
    while !ended && framer.open {
        match src.read(&mut chunk)? {
            ReadOutcome::Data(n) => push_bytes(&mut framer, &chunk[..n], &mut odd),
            ReadOutcome::WriterGone => {
                // Writer restarted: drop a dangling half sample, send what we have.
                odd = None;
                framer.flush();
                log::info!("writer of {label} went away; waiting for it to return");
            }
            ReadOutcome::End => ended = true,
        }
    }
    framer.push(&vec![0; (opts.trailing_silence_s * RATE as f64) as usize]);
    framer.flush();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options { realtime: false, frame_samples: 960, trailing_silence_s: 0.0 }
    }

    /// Every frame tgcat makes of a file.
    fn frames_of(bytes: &[u8], opts: &Options) -> Vec<AudioFrame> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input");
        std::fs::write(&path, bytes).unwrap();
        let mut out = vec![];
        frame_input(Endpoint::Path(path), opts, |f| {
            out.push(f);
            true
        })
        .unwrap();
        out
    }

    fn raw(samples: impl Iterator<Item = i16>) -> Vec<u8> {
        samples.flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn raw_pcm_becomes_20_ms_frames_timed_by_their_sample_index() {
        // 50 ms of a ramp: two whole frames and a 10 ms rest, nothing lost or reordered.
        let samples: Vec<i16> = (0..2400).map(|i| i as i16).collect();
        let f = frames_of(&raw(samples.iter().copied()), &opts());
        assert_eq!(f.iter().map(|f| f.samples.len()).collect::<Vec<_>>(), [960, 960, 480]);
        assert_eq!(f.iter().flat_map(|f| f.samples.clone()).collect::<Vec<_>>(), samples);
        assert_eq!(f.iter().map(|f| f.sample_index).collect::<Vec<_>>(), [0, 960, 1920]);
        assert_eq!(f[1].capture_us - f[0].capture_us, 20_000);
        assert_eq!(f[2].capture_us - f[0].capture_us, 40_000);
        assert!(f.iter().all(|f| f.sample_rate == RATE && f.channels == 1 && f.turn == 0));
    }

    #[test]
    fn a_wav_at_16_khz_is_resampled_to_48_khz_and_trailing_silence_added() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.wav");
        let spec = hound::WavSpec { channels: 1, sample_rate: 16_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..16_000 {
            w.write_sample(((i as f64 * 0.05).sin() * 8000.0) as i16).unwrap();
        }
        w.finalize().unwrap();
        let f = frames_of(&std::fs::read(&path).unwrap(), &Options { trailing_silence_s: 0.5, ..opts() });
        let total: usize = f.iter().map(|f| f.samples.len()).sum();
        assert_eq!(total, 48_000 + 24_000, "1 s of speech at 48 kHz and 0.5 s of silence");
        let tail = &f[f.len() - 25..];
        assert!(tail.iter().all(|f| f.samples.iter().all(|&s| s == 0)), "the last 0.5 s is silence");
        assert!(tgvoice::audio::rms_i16(&f[10].samples) > 4000.0);
    }

    #[test]
    fn an_odd_byte_is_kept_for_the_next_read_and_frames_are_refused() {
        // 3 bytes = one sample and a half: the half never becomes a sample.
        let f = frames_of(&[1, 0, 7], &opts());
        assert_eq!(f.iter().flat_map(|f| f.samples.clone()).collect::<Vec<_>>(), [1]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frames");
        std::fs::write(&path, tgvoice::frame::encode(&tgvoice::Frame::Event(tgvoice::Event::new("call-start")))).unwrap();
        let err = frame_input(Endpoint::Path(path), &opts(), |_| true).unwrap_err();
        assert!(format!("{err:#}").contains("framecat"), "{err:#}");
    }

    #[test]
    fn a_reader_that_leaves_stops_the_framing() {
        let samples = raw((0..48_000).map(|i| i as i16));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input");
        std::fs::write(&path, samples).unwrap();
        let mut n = 0;
        let stats = frame_input(Endpoint::Path(path), &opts(), |_| {
            n += 1;
            n < 3
        })
        .unwrap();
        assert_eq!((n, stats.frames), (3, 3), "no frame after the output closed");
    }
}

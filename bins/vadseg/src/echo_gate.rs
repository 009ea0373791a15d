//! The echo gate: with speakers and a microphone (`voicecall mic`), the assistant's own voice
//! comes back in, and Silero rightly calls it speech — the assistant would interrupt itself.
//! The gate reads what is being played (tts-writer's `tg_output.tap`, raw s16le 48 kHz) and
//! calls an input chunk silence when it is well below the level just played: an echo is
//! attenuated on its way back (−10 dB and more), a caller talking over it is not.
//!
//! What it trades: while the assistant talks, the caller's quieter sounds (a soft onset, a
//! fricative, a caller much quieter than the loudspeaker) are ignored too — barge-in then comes
//! a chunk or two later, on the louder part of the word. With nothing played it does nothing.

use anyhow::{bail, Result};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tgvoice::clock::now_us;
use tgvoice::raw_link::RawOutputReader;

/// The output is measured in 10 ms blocks at 48 kHz.
const BLOCK: usize = 480;
const BLOCK_US: u64 = 10_000;
/// How far back an input chunk looks for the output it may echo: the writer's lead (≤ 60 ms
/// ahead of playback), the room and the input path (tgcat's 20 ms frames) with margin.
const LOOKBACK_US: u64 = 300_000;
/// Output levels kept.
const KEEP_US: u64 = 2_000_000;

/// Recent output levels: (arrival time µs, RMS of a 10 ms block).
type Levels = Arc<Mutex<VecDeque<(u64, f64)>>>;

pub struct EchoGate {
    levels: Levels,
    /// A chunk quieter than the reference × this is echo.
    ratio: f64,
}

impl EchoGate {
    /// Follow the played audio in `reference` (a FIFO such as `$RUN/tg_output.tap`) on a thread
    /// of its own. `margin_db`: how far below the played level a chunk must be to be echo.
    pub fn start(reference: PathBuf, margin_db: f64) -> Result<EchoGate> {
        if !tgvoice::fifo::is_fifo(&reference) {
            bail!(
                "--echo-ref {} is not a FIFO: give the output tap of the pipeline (e.g. $RUN/tg_output.tap)",
                reference.display()
            );
        }
        let mut reader = RawOutputReader::open(reference.clone())?;
        let levels: Levels = Arc::default();
        let sink = levels.clone();
        std::thread::Builder::new().name("echo reference".into()).spawn(move || {
            let mut bytes = vec![];
            loop {
                reader.read_available(&mut bytes);
                let whole = bytes.len() / (BLOCK * 2) * BLOCK * 2;
                if whole > 0 {
                    let now = now_us();
                    let blocks: Vec<f64> = bytes[..whole]
                        .chunks_exact(BLOCK * 2)
                        .map(|b| {
                            let block: Vec<i16> = b.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]])).collect();
                            tgvoice::audio::rms_i16(&block)
                        })
                        .collect();
                    bytes.drain(..whole);
                    let n = blocks.len() as u64;
                    let mut l = sink.lock().unwrap();
                    // Read together, written one after another: the last block is the newest.
                    for (i, rms) in blocks.into_iter().enumerate() {
                        l.push_back((now.saturating_sub((n - 1 - i as u64) * BLOCK_US), rms));
                    }
                    while l.front().is_some_and(|(t, _)| *t + KEEP_US < now) {
                        l.pop_front();
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })?;
        log::info!("echo gate: following the played audio in {} (margin {margin_db} dB)", reference.display());
        Ok(EchoGate { levels, ratio: 10f64.powf(-margin_db / 20.0) })
    }

    /// Is a chunk captured at `capture_us` (its first sample) with this RMS only our own voice
    /// coming back?
    pub fn is_echo(&self, capture_us: u64, rms: f64) -> bool {
        let from = capture_us.saturating_sub(LOOKBACK_US);
        let until = capture_us + 32_000;
        let reference = self
            .levels
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| (from..=until).contains(t))
            .map(|(_, r)| *r)
            .fold(0.0, f64::max);
        reference > 0.0 && rms < reference * self.ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quieter_than_what_was_just_played_is_echo_louder_is_not() {
        let gate = EchoGate { levels: Arc::default(), ratio: 10f64.powf(-6.0 / 20.0) };
        let t0 = 1_700_000_000_000_000u64;
        assert!(!gate.is_echo(t0, 10.0), "nothing played: never echo");
        gate.levels.lock().unwrap().extend((0..20).map(|i| (t0 + i * BLOCK_US, 3000.0)));
        let during = t0 + 150_000;
        assert!(gate.is_echo(during, 3000.0 * 0.316), "−10 dB of the output is echo");
        assert!(!gate.is_echo(during, 3000.0 * 0.9), "a caller as loud as the output is not");
        assert!(!gate.is_echo(t0 + 200_000 + LOOKBACK_US + 10_000, 900.0), "long after the output: not echo");
    }
}

//! [`LevelOnset`]: the fast half of barge-in. Silero decides on whole 32 ms chunks and is slow
//! to call unvoiced sounds speech: the "s" of "Stop." reached it ~150 ms after it began
//! (README "Barge-in latency"). A pause can be taken back (`speech-void`), so vadseg may pause
//! the reply on a cheaper, earlier cue: a 10 ms block of the input that jumps well above the
//! background. Silero still decides whether it becomes a turn.
//!
//! The cue is an edge, not a level: it fires when a block rises above the threshold after one
//! below it, so a loud stretch that is not speech (a fan switched on, music) pauses the reply
//! once, not every 200 ms.

use std::collections::VecDeque;

/// Blocks of background kept: the floor is the quietest block of the last 2 s.
const FLOOR_BLOCKS: usize = 200;

#[derive(Debug, Clone, Copy)]
pub struct OnsetConfig {
    /// A block must be at least this loud (RMS, full scale 32768) …
    pub min_rms: f64,
    /// … and this many times the background floor.
    pub above_floor: f64,
}

impl OnsetConfig {
    /// From dBFS and dB above the floor.
    pub fn from_db(level_dbfs: f64, snr_db: f64) -> Self {
        OnsetConfig { min_rms: tgvoice::audio::dbfs_to_i16_rms(level_dbfs), above_floor: 10f64.powf(snr_db / 20.0) }
    }
}

pub struct LevelOnset {
    cfg: OnsetConfig,
    recent: VecDeque<f64>,
    /// The previous block was below the threshold: the next loud one is an onset.
    armed: bool,
}

impl LevelOnset {
    pub fn new(cfg: OnsetConfig) -> Self {
        LevelOnset { cfg, recent: VecDeque::with_capacity(FLOOR_BLOCKS + 1), armed: false }
    }

    /// Feed one 10 ms block's RMS; true when it is an onset.
    pub fn block(&mut self, rms: f64) -> bool {
        let floor = self.recent.iter().copied().fold(f64::INFINITY, f64::min);
        self.recent.push_back(rms);
        if self.recent.len() > FLOOR_BLOCKS {
            self.recent.pop_front();
        }
        // Until there is a background to compare with, nothing is an onset.
        let loud = floor.is_finite() && rms >= self.cfg.min_rms && rms >= floor * self.cfg.above_floor;
        let onset = loud && self.armed;
        self.armed = !loud;
        onset
    }

    /// The input broke off: its background is unknown again.
    pub fn reset(&mut self) {
        self.recent.clear();
        self.armed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OnsetConfig {
        OnsetConfig::from_db(-45.0, 12.0)
    }

    #[test]
    fn a_jump_out_of_quiet_is_an_onset_once() {
        let mut o = LevelOnset::new(cfg());
        for _ in 0..50 {
            assert!(!o.block(20.0));
        }
        assert!(o.block(400.0), "−38 dBFS out of −64 dBFS background");
        assert!(!o.block(2000.0), "still loud: the same onset");
        assert!(!o.block(20.0));
        assert!(o.block(400.0), "quiet again, then loud: a new onset");
    }

    #[test]
    fn too_quiet_or_too_close_to_the_background_is_not() {
        let mut o = LevelOnset::new(cfg());
        for _ in 0..50 {
            o.block(5.0);
        }
        assert!(!o.block(150.0), "below −45 dBFS");
        let mut o = LevelOnset::new(cfg());
        for _ in 0..50 {
            o.block(300.0);
        }
        assert!(!o.block(900.0), "only 9.5 dB above a noisy background");
        assert!(o.block(1500.0), "14 dB above it is");
    }

    #[test]
    fn a_steady_loud_background_stops_firing_and_the_first_block_never_fires() {
        let mut o = LevelOnset::new(cfg());
        assert!(!o.block(3000.0), "no background known yet");
        let mut fired = 0;
        for i in 0..400 {
            // A fan: loud, with small dips.
            fired += o.block(if i % 7 == 0 { 2500.0 } else { 3000.0 }) as usize;
        }
        assert_eq!(fired, 0);
        o.reset();
        assert!(!o.block(3000.0));
    }
}

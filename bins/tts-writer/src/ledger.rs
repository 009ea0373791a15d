//! The played-text accounting, apart from the pacing in [`crate::player`]: per reply (turn),
//! each chunk's text, the audio synthesised for it (with the text of each piece when the
//! engine knows it) and how much of that was written; from that, the [`Played`] record of
//! what the caller heard, cut at a word.

use crate::report::{spoken_prefix, Played};
use std::collections::{BTreeMap, HashMap};
use tgvoice::audio::RATE;
use tgvoice::TurnTrace;

#[derive(Default)]
struct ChunkStats {
    text: String,
    /// The chunk's audio in order: (text it speaks if known, samples).
    segments: Vec<(Option<String>, usize)>,
    synthesized: usize,
    played: usize,
    complete: bool,
}

#[derive(Default)]
struct TurnStats {
    trace: TurnTrace,
    first_audio_done: bool,
    chunks: BTreeMap<u64, ChunkStats>,
}

/// Every reply not yet reported, by turn.
#[derive(Default)]
pub struct Ledger {
    turns: HashMap<u64, TurnStats>,
}

impl Ledger {
    /// A chunk of `turn` was accepted for synthesis.
    pub fn chunk_queued(&mut self, turn: u64, seq: u64, text: String, trace: TurnTrace) {
        let t = self.turns.entry(turn).or_default();
        for (k, v) in trace.0 {
            t.trace.mark(&k, v);
        }
        t.chunks.entry(seq).or_default().text = text;
    }

    /// `len` samples were synthesised for a queued chunk; `text` is what they say if the
    /// engine knows, `last` marks the chunk's final piece.
    pub fn synthesized(&mut self, turn: u64, seq: u64, len: usize, text: Option<String>, last: bool) {
        if let Some(c) = self.turns.get_mut(&turn).and_then(|t| t.chunks.get_mut(&seq)) {
            match (text, c.segments.last_mut()) {
                (None, Some((Some(_), n))) => *n += len, // resampler tail
                (text, _) => c.segments.push((text, len)),
            }
            c.synthesized += len;
            c.complete |= last;
        }
    }

    /// `n` samples of the chunk were written.
    pub fn played(&mut self, turn: u64, seq: u64, n: usize) {
        if let Some(t) = self.turns.get_mut(&turn) {
            t.chunks.entry(seq).or_default().played += n;
        }
    }

    /// `n` written samples of the chunk go back to be written again (a replay, a take-back).
    pub fn unplayed(&mut self, turn: u64, seq: u64, n: usize) {
        if let Some(c) = self.turns.get_mut(&turn).and_then(|t| t.chunks.get_mut(&seq)) {
            c.played = c.played.saturating_sub(n);
        }
    }

    /// The first audio of `turn` is being written: its trace, marked, the first time only.
    pub fn first_audio(&mut self, turn: u64) -> Option<&TurnTrace> {
        let t = self.turns.get_mut(&turn).filter(|t| !t.first_audio_done)?;
        t.first_audio_done = true;
        t.trace.mark_now(tgvoice::event::trace_key::FIRST_AUDIO);
        Some(&t.trace)
    }

    pub fn has(&self, turn: u64) -> bool {
        self.turns.contains_key(&turn)
    }

    /// Is a reply of a turn below `below` still unreported?
    pub fn any_below(&self, below: u64) -> bool {
        self.turns.keys().any(|t| *t < below)
    }

    /// Drop `turn` unreported (it was cancelled before it was heard).
    pub fn forget(&mut self, turn: u64) {
        self.turns.remove(&turn);
    }

    /// `turn` was played to its end: its record.
    pub fn finish(&mut self, turn: u64) -> Option<Played> {
        self.turns.remove(&turn).map(|stats| played_of(turn, &stats, false))
    }

    /// Every turn below `barrier` was cut off: their records, oldest first.
    pub fn cut_below(&mut self, barrier: u64) -> Vec<Played> {
        let mut cut: Vec<u64> = self.turns.keys().copied().filter(|t| *t < barrier).collect();
        cut.sort();
        cut.into_iter().map(|turn| played_of(turn, &self.turns.remove(&turn).expect("listed"), true)).collect()
    }
}

fn played_of(turn: u64, stats: &TurnStats, cancelled: bool) -> Played {
    let ms = |n: usize| n as f64 * 1000.0 / RATE as f64;
    let mut played_text = vec![];
    let mut text = vec![];
    let (mut played, mut synthesized) = (0, 0);
    for c in stats.chunks.values() {
        played += c.played;
        synthesized += c.synthesized;
        text.push(c.text.clone());
        if !c.segments.is_empty() && c.segments.iter().all(|(t, _)| t.is_some()) {
            // The engine said what each piece speaks: whole pieces played, plus part of one.
            let mut start = 0;
            for (t, len) in &c.segments {
                let t = t.as_deref().unwrap_or_default();
                let fraction = if *len == 0 { 1.0 } else { (c.played.saturating_sub(start)) as f64 / *len as f64 };
                let p = spoken_prefix(t, fraction.min(1.0));
                if !p.is_empty() {
                    played_text.push(p);
                }
                start += len;
                if c.played < start {
                    break;
                }
            }
            continue;
        }
        let fraction = if c.complete && c.synthesized > 0 {
            c.played as f64 / c.synthesized as f64
        } else if c.played > 0 && c.synthesized > 0 {
            // still being synthesised: what was played of what exists is an upper bound
            (c.played as f64 / c.synthesized as f64).min(0.99)
        } else {
            0.0
        };
        let p = spoken_prefix(&c.text, fraction);
        if !p.is_empty() {
            played_text.push(p);
        }
    }
    Played {
        turn,
        cancelled,
        played_ms: ms(played),
        synthesized_ms: ms(synthesized),
        played_text: played_text.join(" "),
        text: text.join(" "),
        trace: stats.trace.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: usize = RATE as usize / 1000;

    #[test]
    fn played_text_is_whole_pieces_plus_the_words_of_the_one_cut() {
        let mut l = Ledger::default();
        l.chunk_queued(1, 0, "One two. Three four five six.".into(), TurnTrace::default());
        l.synthesized(1, 0, 500 * MS, Some("One two.".into()), false);
        l.synthesized(1, 0, 1000 * MS, Some("Three four five six.".into()), true);
        l.played(1, 0, 1000 * MS);
        l.unplayed(1, 0, 250 * MS); // a take-back: not heard after all
        let p = l.cut_below(2).remove(0);
        assert!(p.cancelled && !l.has(1));
        assert_eq!(p.played_ms, 750.0);
        assert_eq!(p.played_text, "One two. Three");
    }

    #[test]
    fn without_piece_texts_the_played_fraction_of_the_chunk_is_cut_at_a_word() {
        let mut l = Ledger::default();
        l.chunk_queued(3, 0, "alpha beta gamma delta".into(), TurnTrace::default());
        l.synthesized(3, 0, 1000 * MS, None, true);
        l.played(3, 0, 1000 * MS);
        let p = l.finish(3).unwrap();
        assert!(!p.cancelled);
        assert_eq!((p.played_text.as_str(), p.text.as_str()), ("alpha beta gamma delta", "alpha beta gamma delta"));
        assert!(l.first_audio(3).is_none() && l.finish(3).is_none(), "reported once");
    }
}

//! The played-text accounting, apart from the pacing in [`crate::player`]: per reply (turn),
//! each chunk's text, the audio synthesised for it (with where each piece's words are in the
//! text when the engine knows it) and how much of that was written; from that, the [`Played`]
//! record of what the caller heard, cut at a word.
//!
//! The played text is always a prefix of the chunk's own text, never pieces joined again: a
//! chunk played whole reports its text byte for byte, however the engine divided it.

use crate::report::{spoken_len, Played};
use std::ops::Range;
use std::collections::{BTreeMap, HashMap};
use tgvoice::audio::RATE;
use tgvoice::TurnTrace;

#[derive(Default)]
struct ChunkStats {
    text: String,
    /// The chunk's audio in order: (where its words are in `text` if known, samples).
    segments: Vec<(Option<Range<usize>>, usize)>,
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

    /// `len` samples were synthesised for a queued chunk; `span` is where their words are in
    /// the chunk's text if the engine knows, `last` marks the chunk's final piece.
    pub fn synthesized(&mut self, turn: u64, seq: u64, len: usize, span: Option<Range<usize>>, last: bool) {
        if let Some(c) = self.turns.get_mut(&turn).and_then(|t| t.chunks.get_mut(&seq)) {
            let span = span.filter(|s| s.start <= s.end && c.text.get(s.clone()).is_some());
            match (span, c.segments.last_mut()) {
                (None, Some((Some(_), n))) => *n += len, // resampler tail
                (span, _) => c.segments.push((span, len)),
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

    /// Samples of `turn` written so far.
    pub fn played_samples(&self, turn: u64) -> usize {
        self.turns.get(&turn).map_or(0, |t| t.chunks.values().map(|c| c.played).sum())
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
        let heard = &c.text[..heard_len(c)];
        if !heard.is_empty() {
            played_text.push(heard.to_string());
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

/// How many bytes of the chunk's text were heard: all of it when all of its audio was
/// written, else up to the last word whose audio went out.
fn heard_len(c: &ChunkStats) -> usize {
    if c.complete && c.synthesized > 0 && c.played >= c.synthesized {
        return c.text.len();
    }
    if !c.segments.is_empty() && c.segments.iter().all(|(s, _)| s.is_some()) {
        // The engine said where each piece's words are: the pieces before the one being
        // played when it stopped, plus the words of that one its audio got through.
        let mut start = 0;
        for (span, len) in &c.segments {
            let span = span.clone().expect("checked above");
            if c.played < start + len {
                let fraction = (c.played - start) as f64 / (*len).max(1) as f64;
                let cut = span.start + spoken_len(&c.text[span.clone()], fraction);
                return c.text[..cut].trim_end().len();
            }
            start += len;
        }
        let end = c.segments.iter().filter_map(|(s, _)| s.as_ref().map(|s| s.end)).max().unwrap_or(0);
        return c.text[..end].trim_end().len();
    }
    let fraction = if c.complete && c.synthesized > 0 {
        c.played as f64 / c.synthesized as f64
    } else if c.played > 0 && c.synthesized > 0 {
        // still being synthesised: what was played of what exists is an upper bound
        (c.played as f64 / c.synthesized as f64).min(0.99)
    } else {
        0.0
    };
    spoken_len(&c.text, fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: usize = RATE as usize / 1000;

    #[test]
    fn played_text_is_whole_pieces_plus_the_words_of_the_one_cut() {
        let mut l = Ledger::default();
        l.chunk_queued(1, 0, "One two. Three four five six.".into(), TurnTrace::default());
        l.synthesized(1, 0, 500 * MS, Some(0..8), false); // "One two."
        l.synthesized(1, 0, 1000 * MS, Some(9..29), true); // "Three four five six."
        l.played(1, 0, 1000 * MS);
        l.unplayed(1, 0, 250 * MS); // a take-back: not heard after all
        let p = l.cut_below(2).remove(0);
        assert!(p.cancelled && !l.has(1));
        assert_eq!(p.played_ms, 750.0);
        assert_eq!(p.played_text, "One two. Three");
    }

    /// A chunk queued and synthesised as the Piper engine divides it (one piece per clause,
    /// 100 ms of audio per word), of which `ms` are played; its record.
    fn played_by_clause(text: &str, ms: usize, last: bool) -> Played {
        let mut l = Ledger::default();
        l.chunk_queued(7, 0, text.into(), TurnTrace::default());
        for c in crate::engine::phonemize::split_clauses(text) {
            let words = text[c.span.clone()].split_whitespace().count();
            l.synthesized(7, 0, words * 100 * MS, Some(c.span), false);
        }
        l.synthesized(7, 0, 3 * MS, None, last); // the resampler's tail
        l.played(7, 0, ms * MS);
        if last {
            l.finish(7).unwrap()
        } else {
            l.cut_below(8).remove(0)
        }
    }

    #[test]
    fn a_chunk_played_whole_reports_its_text_byte_for_byte() {
        for text in [
            "The calendar, known as \"days per week,\" allows for accurate calculations.",
            "He said, “she told me ‘no.’” Then (after a pause) left… quietly.",
            "It costs 3.50 dollars, e.g. at Dr. Smith's: about 2.5 times more!?",
            "東京は首都です。「はい。」と言った！ Привет, «мир»,  yes.",
            "  Spaces   inside, and   around.  ",
        ] {
            let p = played_by_clause(text, 100_000, true);
            assert!(!p.cancelled);
            assert_eq!(p.played_text, p.text, "{text:?}");
            assert_eq!(p.text, text);
        }
    }

    #[test]
    fn a_cut_chunk_reports_the_original_text_up_to_the_last_word_heard() {
        let text = "The calendar, known as \"days per week,\" allows for accurate calculations.";
        // clauses: "The calendar," (2 words, 200 ms), "known as \"days per week,\"" (5, 500 ms), …
        assert_eq!(played_by_clause(text, 700, false).played_text, "The calendar, known as \"days per week,\"");
        assert_eq!(played_by_clause(text, 850, false).played_text, "The calendar, known as \"days per week,\" allows for");
        assert_eq!(played_by_clause(text, 500, false).played_text, "The calendar, known as \"days");
        assert_eq!(played_by_clause(text, 0, false).played_text, "");
        let p = played_by_clause("Dr. Smith said (twice): “wait…” and 3.5 more.", 200, false);
        assert_eq!(p.played_text, "Dr. Smith");
    }

    #[test]
    fn a_span_outside_the_text_falls_back_to_the_fraction() {
        let mut l = Ledger::default();
        l.chunk_queued(2, 0, "héllo wörld".into(), TurnTrace::default());
        l.synthesized(2, 0, 1000 * MS, Some(0..2), true); // inside "é": not a character boundary
        l.played(2, 0, 500 * MS);
        assert_eq!(l.cut_below(3).remove(0).played_text, "héllo");
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

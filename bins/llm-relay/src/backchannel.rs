//! Is what the caller said over a reply a *backchannel* ("uh-huh", "mm-hmm", "yeah", "right")
//! — a listener's signal to go on — rather than an interruption? A transcript is one when all
//! its words can be read as a sequence of the configured phrases ("yeah, yeah", "oh okay") and
//! hums (Whisper writes "mm-hmm" as "MMMM." or "Mhm.", see [`is_hum`], and sometimes spells a
//! hum out letter by letter, "M. H. N." or "N-M-A-M", see [`is_spelled_hum`]).
//! Anything else, including one-word "stop", "wait", "no", is an interruption.

use crate::words::words;

/// The default list (`--backchannels`): listener sounds and one-word agreement. Not in it on
/// purpose: "no", "wait", "stop", "sorry", "what" — people say those to take the turn.
pub const DEFAULT_BACKCHANNELS: &str = "uh-huh,uh huh,mm-hmm,mhm,mm,hmm,hm,uh,um,ah,oh,yeah,yes,yep,yup,right,okay,ok,sure,i see,got it,alright,all right,cool,nice,wow,aha";

#[derive(Debug, Clone)]
pub struct Backchannels {
    /// Each phrase as normalised words, longest first.
    phrases: Vec<Vec<String>>,
}

/// A hum however Whisper spells it: "mmmm", "hmm", "mhm", "mmhmm", "uhm", "umm", "uhh" — only
/// m and h with at least one m, or u followed only by h and m. ("Huh?" is a question: not one.)
fn is_hum(word: &str) -> bool {
    let mh = !word.is_empty() && word.chars().all(|c| c == 'm' || c == 'h') && word.contains('m');
    let u = word.len() >= 2 && word.starts_with('u') && word[1..].chars().all(|c| c == 'h' || c == 'm');
    mh || u
}

/// A hum that Whisper spelled out as letters: two or more one-letter words, all of them sounds
/// of a closed-mouth hum (m, n, h) or its vowel (a, u), with an m or an n among them. Seen in
/// the barge-in test for "Mm-hmm." and "Mhm.": "M. H. N.", "N-M-A-M-A-N-M-A-N-M-A-N-M". A caller
/// spelling letters over a reply is far rarer, and "I", "O" or "K" still make it an interruption.
fn is_spelled_hum(words: &[String]) -> bool {
    let letters: Option<Vec<char>> = words.iter().map(|w| if w.chars().count() == 1 { w.chars().next() } else { None }).collect();
    letters.is_some_and(|l| l.len() >= 2 && l.iter().all(|c| "mnhau".contains(*c)) && l.iter().any(|c| *c == 'm' || *c == 'n'))
}

impl Backchannels {
    /// From a comma-separated list of phrases.
    pub fn parse(list: &str) -> Backchannels {
        let mut phrases: Vec<Vec<String>> = list.split(',').map(words).filter(|w| !w.is_empty()).collect();
        phrases.sort_by_key(|p| std::cmp::Reverse(p.len()));
        phrases.dedup();
        Backchannels { phrases }
    }

    /// True when `text` has words and all of them are backchannel phrases.
    pub fn matches(&self, text: &str) -> bool {
        let w = words(text);
        if w.is_empty() || self.phrases.is_empty() {
            return false;
        }
        if is_spelled_hum(&w) {
            return true;
        }
        // covered[i]: the first i words are a sequence of phrases.
        let mut covered = vec![false; w.len() + 1];
        covered[0] = true;
        for i in 0..w.len() {
            if !covered[i] {
                continue;
            }
            if is_hum(&w[i]) {
                covered[i + 1] = true;
            }
            for p in &self.phrases {
                if w[i..].starts_with(p) {
                    covered[i + p.len()] = true;
                }
            }
        }
        covered[w.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_sounds_are_backchannels_and_turn_taking_words_are_not() {
        let b = Backchannels::parse(DEFAULT_BACKCHANNELS);
        for t in ["Uh-huh.", "uh huh", "Mm-hmm.", "Mhm", "MMMM.", "Hmmm.", "Umm.", "Yeah.", "Yeah, yeah.", "Right.", "Okay!", "Oh, okay.", "I see.", "Hmm?", "M. H. N.", "N-M-A-M-A-N-M-A-N-M-A-N-M"] {
            assert!(b.matches(t), "{t:?} is a backchannel");
        }
        for t in ["Stop.", "Wait.", "No.", "Hold on.", "Sorry?", "What?", "Huh?", "Yeah, but stop.", "Okay, tell me about cats.", "", "A.", "O. K.", "M. K.", "N. Y."] {
            assert!(!b.matches(t), "{t:?} is an interruption");
        }
    }

    #[test]
    fn the_list_is_configurable() {
        let b = Backchannels::parse("genau, ja ja");
        assert!(b.matches("Genau."));
        assert!(b.matches("Ja, ja."));
        assert!(!b.matches("ja"));
        assert!(!b.matches("Yeah."));
        assert!(!Backchannels::parse(" , ").matches("ok"), "an empty list: every word interrupts");
    }
}

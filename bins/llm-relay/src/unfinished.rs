//! Does a final transcript sound like the caller stopped mid-sentence ("I'd like a table
//! for…", "Could you remind me to")? Then the caller is most likely hesitating, and llm-relay
//! waits `--unfinished-wait` for the rest before answering (relay.rs, `Waiting`): if the next
//! turn starts meanwhile, its words join this message and one reply answers both.
//!
//! A second opinion on vadseg's end of turn, from the words: the turn model hears prosody, and
//! a caller who stops on "for" with a falling voice sounds finished to it. English only (the
//! offline speech model is English).

/// Words no English sentence ends on, even a question: articles, possessives, conjunctions,
/// the infinitive "to", fillers. Whisper writes "Could you remind me to?" for a question broken
/// off at "to", so a question mark after these does not make the sentence finished.
const NEVER_LAST: &[&str] = &[
    "a", "an", "the", "every", "another", "my", "your", "his", "our", "their", "and", "or", "but",
    "nor", "because", "if", "than", "although", "though", "unless", "whether", "to", "um", "uh",
    "er", "erm", "uhm", "umm", "uhh",
];

/// Words a statement does not end on but a question may ("What is it for?", "Where are you
/// from?", "Who is it?"): prepositions, determiners and auxiliaries. Unfinished unless a "?" or
/// "!" follows.
const NOT_LAST_IN_A_STATEMENT: &[&str] = &[
    "this", "these", "those", "some", "any", "each", "her", "its", "about", "above", "across",
    "after", "against", "along", "among", "around", "at", "before", "behind", "below", "beside",
    "between", "by", "during", "for", "from", "in", "inside", "into", "near", "of", "off", "on",
    "onto", "over", "past", "through", "toward", "towards", "under", "until", "upon", "via",
    "with", "within", "without", "so", "that", "which", "whose", "while", "is", "are", "was",
    "were", "am", "be", "been", "being", "will", "would", "can", "could", "should", "shall",
    "must", "might", "may", "have", "has", "had", "do", "does", "did",
];

/// True when `text` ends mid-sentence: on a trailing comma, dash or ellipsis (how Whisper
/// writes speech that broke off), on a word from [`NEVER_LAST`], or on one from
/// [`NOT_LAST_IN_A_STATEMENT`] without a "?" or "!".
pub fn sounds_unfinished(text: &str) -> bool {
    let t = text.trim_end();
    if t.ends_with("...") || t.ends_with('…') || t.ends_with(',') || t.ends_with('-') || t.ends_with('—') {
        return true;
    }
    let last = crate::words::last_word(t);
    let asked = t.ends_with('?') || t.ends_with('!');
    NEVER_LAST.contains(&last.as_str()) || (!asked && NOT_LAST_IN_A_STATEMENT.contains(&last.as_str()))
}

/// `text` without the full stop, ellipsis, comma or dash at its end.
pub fn without_trailing_stop(text: &str) -> &str {
    text.trim_end().trim_end_matches(['.', '…', ',', '-', '—', '?']).trim_end()
}

#[cfg(test)]
mod tests {
    use super::sounds_unfinished;

    #[test]
    fn a_sentence_broken_off_on_a_function_word_or_a_filler_is_unfinished() {
        for t in [
            "I'd like a table for",
            "I'd like a table for.",
            "Could you remind me to",
            "I want to order a large pizza and",
            "My address is",
            "The meeting is on, um.",
            "I'm looking for a hotel near the",
            "Book a flight to...",
            "Can you book a flight to…",
            "Please set an alarm for,",
            "  What's the weather like in  ",
            "Could you remind me to?",
            "Can I have a?",
        ] {
            assert!(sounds_unfinished(t), "{t:?}");
        }
    }

    #[test]
    fn the_stop_where_the_caller_paused_is_dropped() {
        assert_eq!(super::without_trailing_stop("I'd like a table for. "), "I'd like a table for");
        assert_eq!(super::without_trailing_stop("Book a flight to..."), "Book a flight to");
        assert_eq!(super::without_trailing_stop("near the, um,"), "near the, um");
        assert_eq!(super::without_trailing_stop("Could you remind me to?"), "Could you remind me to");
    }

    #[test]
    fn complete_sentences_and_questions_are_finished() {
        for t in [
            "What is the capital of France?",
            "What are you looking for?",
            "Where are you from?",
            "What is this for?",
            "Stop.",
            "No, no, wait. What is two plus two?",
            "I'd like a table for four people.",
            "My number is five five five one two three.",
            "Thank you!",
            "I need a late check-in.",
            "",
            "Yes",
        ] {
            assert!(!sounds_unfinished(t), "{t:?}");
        }
    }
}

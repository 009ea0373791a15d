//! Words as the caller's transcripts are read by the turn rules (unfinished.rs,
//! backchannel.rs): one notion of a word, so "Uh-huh." and "for." mean the same to both.

/// Letters, digits and the apostrophe of "I'd" make words; everything else separates them.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '\''
}

/// Lower case, hyphens and punctuation as spaces: "Uh-huh, yeah." → ["uh", "huh", "yeah"].
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !is_word_char(c))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The last whitespace-separated word, lower case, without the punctuation around it; a
/// hyphenated word stays whole ("check-in", not "in").
pub fn last_word(text: &str) -> String {
    text.rsplit(char::is_whitespace).find(|w| !w.is_empty()).unwrap_or("").trim_matches(|c| !is_word_char(c)).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_at_punctuation_and_hyphens_and_keep_apostrophes() {
        assert_eq!(words("Uh-huh, yeah. I'd"), ["uh", "huh", "yeah", "i'd"]);
        assert!(words(" ,.! ").is_empty());
    }

    #[test]
    fn the_last_word_keeps_its_hyphens() {
        assert_eq!(last_word("A table for.  "), "for");
        assert_eq!(last_word("A late check-in."), "check-in");
        assert_eq!(last_word(""), "");
    }
}

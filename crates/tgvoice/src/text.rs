//! Where written text may be cut into spoken pieces: the one set of rules that llm-relay's
//! chunker and tts-writer's clause segmenter share, so neither separates a word from the
//! punctuation or closing quote that belongs to it, nor ends a sentence at "Dr." or "3.50".

/// Abbreviations (lower case, without the final dot) after which a dot does not end a sentence.
pub const ABBREVIATIONS: &[&str] = &[
    "dr", "mr", "mrs", "ms", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "approx", "fig", "inc", "ltd",
    "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "a.m", "p.m",
    "u.s", "u.k", "u.n", "e.u", "ph.d", "cf", "al", "gen", "gov", "sen", "rep",
];

/// Characters that close what a punctuation mark ends (`"stop."`, `(see above).`, `‘so,’`);
/// they belong to the piece before a cut, never to the one after.
pub fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»' | '›' | '」' | '』' | '）' | '】' | '〉' | '》')
}

/// Sentence ends of scripts written without a space after them (Chinese, Japanese): a cut may
/// follow them directly.
pub fn is_unspaced_sentence_end(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '．')
}

/// Byte index just past the closers that follow `from` in `text` (`from` itself if none).
pub fn skip_closers(text: &str, from: usize) -> usize {
    from + text[from..].chars().take_while(|c| is_closer(*c)).map(char::len_utf8).sum::<usize>()
}

/// Whether a dot right after `before` (the text up to it) only marks an abbreviation
/// ("Dr", "e.g"), an initialism ("U.S", a lone capital as in "John F") or a list number at the
/// start of a line ("1"), and so does not end a sentence.
pub fn dot_is_not_an_end(before: &str) -> bool {
    let word_start = before.rfind(|c: char| c.is_whitespace() || c == '(' || c == '"').map(|i| i + 1).unwrap_or(0);
    let word = &before[word_start..];
    if word.is_empty() {
        return false;
    }
    let lower = word.to_lowercase();
    let lower = lower.trim_start_matches(|c: char| !c.is_alphanumeric());
    if ABBREVIATIONS.contains(&lower) {
        return true;
    }
    let parts: Vec<&str> = lower.split('.').collect();
    if parts.iter().all(|p| p.chars().count() == 1 && p.chars().all(char::is_alphabetic))
        && (parts.len() > 1 || (word.chars().all(char::is_uppercase) && word != "I"))
    {
        return true;
    }
    if word.chars().all(|c| c.is_ascii_digit()) {
        let line_start = before[..word_start].trim_end_matches([' ', '\t']);
        if line_start.is_empty() || line_start.ends_with('\n') {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abbreviations_initials_and_list_numbers_are_not_ends() {
        for before in ["Ask Dr", "see e.g", "in the U.S", "John F", "1", "text\n2", "(approx"] {
            assert!(dot_is_not_an_end(before), "{before:?}");
        }
        for before in ["It is late", "I", "I have 3", "", "Tokyo"] {
            assert!(!dot_is_not_an_end(before), "{before:?}");
        }
    }

    #[test]
    fn closers_are_skipped_whole_characters() {
        assert_eq!(skip_closers("week,\" allows", 5), 6);
        assert_eq!(skip_closers("«oui,» dit-il", 6), 8);
        assert_eq!(skip_closers("“no.”’) yes", 6), 13);
        assert_eq!(skip_closers("plain", 5), 5);
    }
}

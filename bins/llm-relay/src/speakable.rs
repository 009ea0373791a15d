//! Turning a streamed LLM reply into speakable chunks for `tts-writer`.
//!
//! * [`CodeFenceFilter`] — char-level, streaming: drops fenced code blocks (```…```) and the
//!   backticks of inline code, so a half-received fence never reaches TTS.
//! * [`SentenceSplitter`] — buffers text and cuts it into sentences. The first chunk of a reply
//!   may be cut earlier, at a clause boundary (`,` `;` `:` `—`), once it has a few words, so TTS
//!   can start speaking sooner; a long first sentence with no such mark is cut before a word
//!   that starts a clause or a phrase ("…celestial body | that has captivated…", see
//!   [`PHRASE_STARTS`]), so first audio never waits for Piper to synthesize fifteen words. It does not cut inside numbers ("3.14", "$29.99"), after common
//!   abbreviations ("Dr.", "e.g.", "etc.") or initialisms ("U.S.", "a.m."), or after a list
//!   number ("1. "); it does cut at line breaks (list items, paragraphs).
//! * [`clean_for_speech`] — per chunk: markdown emphasis, headings, bullets, links, bare URLs,
//!   table pipes and emoji are turned into plain words or dropped.

use tgvoice::text::{dot_is_not_an_end, is_closer, is_unspaced_sentence_end};

/// Streaming filter that removes fenced code blocks and inline-code backticks.
#[derive(Debug, Default)]
pub struct CodeFenceFilter {
    backticks: usize,
    in_fence: bool,
    /// Inside a fence: skipping the rest of the opening fence line (language tag).
    out: String,
}

impl CodeFenceFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed a piece of the reply; returns the text that may go on to the splitter.
    pub fn push(&mut self, text: &str) -> String {
        self.out.clear();
        for c in text.chars() {
            if c == '`' {
                self.backticks += 1;
                continue;
            }
            self.settle_backticks();
            if !self.in_fence {
                self.out.push(c);
            }
        }
        std::mem::take(&mut self.out)
    }

    /// End of reply: whatever is pending.
    pub fn finish(&mut self) -> String {
        self.out.clear();
        self.settle_backticks();
        std::mem::take(&mut self.out)
    }

    fn settle_backticks(&mut self) {
        if self.backticks >= 3 {
            self.in_fence = !self.in_fence;
            if !self.in_fence {
                // Code block ended: keep sentences apart.
                self.out.push('\n');
            }
        }
        // One or two backticks: inline code markers, dropped (the code text itself is kept).
        self.backticks = 0;
    }
}

/// Words a clause or a phrase starts with, before which a long first sentence may be cut:
/// subordinators, relative pronouns, "but"/"so", and prepositions. Not "and"/"or": they join
/// adjectives and nouns as often as clauses ("a mysterious | and fascinating body" would be
/// spoken as two sentences).
pub const PHRASE_STARTS: &[&str] = &[
    "that", "which", "who", "whom", "whose", "because", "since", "although", "though", "while", "when", "where",
    "whereas", "but", "so", "if", "unless", "until", "after", "before", "as", "of", "in", "on", "at", "by", "with",
    "from", "for", "to", "about", "into", "through", "over", "across", "around", "between", "during", "without",
    "within", "like",
];

/// A first sentence still going after this many words, with no clause mark, is cut before the
/// next word of [`PHRASE_STARTS`] (Piper needs ~40 ms a word on this class of machine).
pub const FIRST_CHUNK_MAX_WORDS: usize = 7;

/// Cuts streamed text into speakable chunks.
#[derive(Debug)]
pub struct SentenceSplitter {
    buf: String,
    emitted_any: bool,
    /// Minimum words before the first chunk may be cut at a clause boundary.
    first_clause_min_words: usize,
}

impl SentenceSplitter {
    pub fn new(first_clause_min_words: usize) -> Self {
        SentenceSplitter { buf: String::new(), emitted_any: false, first_clause_min_words }
    }

    /// Feed text; returns the chunks that are complete.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut chunks = vec![];
        while let Some(cut) = self.find_cut() {
            let rest = self.buf.split_off(cut);
            let chunk = std::mem::replace(&mut self.buf, rest);
            let chunk = chunk.trim();
            if !chunk.is_empty() {
                chunks.push(chunk.to_string());
                self.emitted_any = true;
            }
        }
        chunks
    }

    /// End of reply: the remaining text, if any.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// Byte index where the buffer should be cut (the chunk is `buf[..cut]`), if any. A cut
    /// comes after the closing quotes and brackets that follow the mark (`week," allows`), so
    /// a chunk never ends between a word and what belongs to it.
    fn find_cut(&self) -> Option<usize> {
        let b = &self.buf;
        let chars: Vec<(usize, char)> = b.char_indices().collect();
        let at = |j: usize| chars.get(j).map(|&(_, c)| c);
        // Index just past the closers from `j` on, and the character there (None: not seen yet).
        let past_closers = |mut j: usize| {
            while at(j).is_some_and(is_closer) {
                j += 1;
            }
            (chars.get(j).map(|&(p, _)| p).unwrap_or(b.len()), at(j))
        };
        for (i, &(pos, c)) in chars.iter().enumerate() {
            // Line breaks always separate chunks (list items, paragraphs, after code).
            if c == '\n' {
                if b[..pos].trim().is_empty() {
                    continue;
                }
                return Some(pos + 1);
            }
            match c {
                '.' | '!' | '?' | '…' => {
                    let (end, after) = past_closers(i + 1);
                    let after = after?; // every cut needs to see what follows the mark
                    if !after.is_whitespace() {
                        continue; // "3.14", "$29.99", "example.com", "e.g" mid-token
                    }
                    if c == '.' && dot_is_not_an_end(&b[..pos]) {
                        continue;
                    }
                    return Some(end);
                }
                c if is_unspaced_sentence_end(c) => {
                    let (end, after) = past_closers(i + 1);
                    after?;
                    return Some(end);
                }
                ',' | ';' | ':' | '—' | '–' if !self.emitted_any => {
                    let (end, after) = past_closers(i + 1);
                    if after?.is_whitespace() && b[..pos].split_whitespace().count() >= self.first_clause_min_words {
                        return Some(end);
                    }
                }
                c if c.is_whitespace() && !self.emitted_any && self.first_clause_min_words != usize::MAX => {
                    if let Some(cut) = self.phrase_cut(pos) {
                        return Some(cut);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// In a long first sentence, a cut at `pos` (whitespace) if the word after it is whole,
    /// starts a phrase, and at least [`FIRST_CHUNK_MAX_WORDS`] words come before it.
    fn phrase_cut(&self, pos: usize) -> Option<usize> {
        let (before, after) = self.buf.split_at(pos);
        if before.split_whitespace().count() < FIRST_CHUNK_MAX_WORDS.max(self.first_clause_min_words) {
            return None;
        }
        let after = after.trim_start();
        let word_len = after.find(char::is_whitespace)?; // the next word must be complete
        let word = after[..word_len].to_lowercase();
        PHRASE_STARTS.contains(&word.as_str()).then_some(pos)
    }
}

/// Make one chunk speakable: strip markdown, links, URLs and emoji. Returns `None` when
/// nothing worth speaking is left.
pub fn clean_for_speech(chunk: &str) -> Option<String> {
    let mut s = chunk.trim().to_string();
    // Line-start markup: headings, bullets, quotes, numbered items.
    let trimmed = s.trim_start_matches(['#', '>', ' ']);
    let trimmed = trimmed
        .strip_prefix("- ")
        .or_else(|| trimmed.strip_prefix("* "))
        .or_else(|| trimmed.strip_prefix("+ "))
        .or_else(|| trimmed.strip_prefix("• "))
        .unwrap_or(trimmed);
    let trimmed = strip_list_number(trimmed);
    s = trimmed.to_string();
    s = replace_markdown_links(&s);
    s = replace_urls(&s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '*' | '_' | '#' | '|' | '~' => out.push(' '),
            c if is_emoji(c) => {}
            c => out.push(c),
        }
    }
    // Collapse whitespace; keep "_" inside words? (snake_case) — spoken as a space, fine.
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    let out = out.replace(" ,", ",").replace(" .", ".").replace(" !", "!").replace(" ?", "?");
    if out.chars().any(char::is_alphanumeric) {
        Some(out)
    } else {
        None
    }
}

fn strip_list_number(s: &str) -> &str {
    let digits = s.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits > 0 && digits <= 3 {
        let rest = &s[digits..];
        if let Some(r) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return r;
        }
    }
    s
}

/// `[text](url)` → `text`.
fn replace_markdown_links(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        if let Some(close) = after.find("](") {
            let tail = &after[close + 2..];
            if let Some(end) = tail.find(')') {
                out.push_str(&rest[..open]);
                out.push_str(&after[..close]);
                rest = &tail[end + 1..];
                continue;
            }
        }
        out.push_str(&rest[..open + 1]);
        rest = &rest[open + 1..];
    }
    out.push_str(rest);
    out
}

/// Bare URLs → "a link" (spelling a URL out loud helps nobody on a call).
fn replace_urls(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let core = w.trim_start_matches(['(', '<', '"']);
            let lower = core.to_ascii_lowercase();
            if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("www.") {
                let trail: String =
                    w.chars().rev().take_while(|c| matches!(c, '.' | ',' | ')' | '>' | '"' | '!' | '?')).collect();
                let trail: String = trail.chars().rev().filter(|c| matches!(c, '.' | ',' | '!' | '?')).collect();
                format!("a link{trail}")
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_emoji(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1FAFF   // emoticons, symbols, pictographs, transport, flags
        | 0x2600..=0x27BF   // misc symbols, dingbats
        | 0x2B00..=0x2BFF   // arrows, stars
        | 0xFE00..=0xFE0F   // variation selectors
        | 0x200D            // zero-width joiner
        | 0xE0020..=0xE007F // tags
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(text: &str) -> Vec<String> {
        let mut s = SentenceSplitter::new(3);
        let mut out = vec![];
        // Feed char by char: the worst case for a streaming splitter.
        for c in text.chars() {
            out.extend(s.push(&c.to_string()));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn does_not_break_numbers_abbreviations_or_initialisms() {
        let text = "Pi is about 3.14 and the plan costs $29.99 a month. Dr. Smith moved to the U.S. last year. \
                    Bring snacks, e.g. apples and pears. It opens at 9 a.m. sharp. Done!";
        let chunks = split_all(text);
        assert_eq!(
            chunks,
            vec![
                // No clause boundary before the first full stop: the whole sentence.
                "Pi is about 3.14 and the plan costs $29.99 a month.",
                "Dr. Smith moved to the U.S. last year.",
                "Bring snacks, e.g. apples and pears.",
                "It opens at 9 a.m. sharp.",
                "Done!",
            ]
        );
    }

    #[test]
    fn first_chunk_cuts_at_a_clause_boundary_later_ones_do_not() {
        let chunks =
            split_all("Well, the short answer is yes, it works. Later, it gets better, mostly. The answer is no. Ok");
        assert_eq!(
            chunks,
            vec![
                "Well, the short answer is yes,",
                "it works.",
                "Later, it gets better, mostly.",
                "The answer is no.",
                "Ok"
            ]
        );
    }

    #[test]
    fn a_long_first_sentence_is_cut_before_a_phrase_so_first_audio_comes_sooner() {
        let chunks = split_all(
            "The moon is a mysterious and fascinating celestial body that has captivated humanity for millennia. \
             It has no light of its own and shines with the light of the sun.",
        );
        assert_eq!(
            chunks,
            vec![
                "The moon is a mysterious and fascinating celestial body",
                "that has captivated humanity for millennia.",
                // Only the first chunk is cut early.
                "It has no light of its own and shines with the light of the sun.",
            ]
        );
        // Short first sentences, and words that only look like phrase starts, stay whole.
        assert_eq!(split_all("The capital of France is Paris."), ["The capital of France is Paris."]);
        assert_eq!(split_all("Paris is the capital and largest city"), ["Paris is the capital and largest city"]);
        // The word after the cut must be whole: "to" may be the start of "tomorrow".
        let mut s = SentenceSplitter::new(3);
        assert!(s.push("The weather says sunny and warm skies to").is_empty());
        assert!(s.push("morrow and all week.").is_empty());
        assert_eq!(s.finish().as_deref(), Some("The weather says sunny and warm skies tomorrow and all week."));
        // With first-clause cuts off (`--first-clause-words 0`), only sentences.
        let mut s = SentenceSplitter::new(usize::MAX);
        let text = "The moon is a mysterious and fascinating celestial body that has captivated humanity. ";
        assert_eq!(s.push(text), ["The moon is a mysterious and fascinating celestial body that has captivated humanity."]);
    }

    #[test]
    fn waits_for_the_character_after_a_dot() {
        let mut s = SentenceSplitter::new(3);
        assert!(s.push("It costs 3.").is_empty());
        assert!(s.push("14 dollars.").is_empty());
        assert_eq!(s.push(" Next"), vec!["It costs 3.14 dollars."]);
        assert_eq!(s.finish().as_deref(), Some("Next"));
    }

    #[test]
    fn lists_and_quotes() {
        let chunks = split_all("Steps:\n1. Open the app.\n2. Tap call.\nHe said \"stop.\" Then left");
        assert_eq!(chunks, vec!["Steps:", "1. Open the app.", "2. Tap call.", "He said \"stop.\"", "Then left"]);
    }

    #[test]
    fn a_chunk_keeps_the_quote_or_bracket_that_closes_its_last_word() {
        // The first chunk may be cut at a clause: after the closing quote, not before it.
        assert_eq!(
            split_all("It is known as \"days per week,\" which allows for accurate counts. Yes."),
            vec!["It is known as \"days per week,\"", "which allows for accurate counts.", "Yes."]
        );
        // Nested quotes, curly quotes and parentheses after a sentence's end.
        assert_eq!(
            split_all("He said, \"She told me 'no.'\" Then he left (quietly.) “Really?” she asked. ‘Fine.’ Done"),
            vec![
                "He said, \"She told me 'no.'\"",
                "Then he left (quietly.)",
                "“Really?”",
                "she asked.",
                "‘Fine.’",
                "Done"
            ]
        );
        // A quote that closes after the chunk's last piece arrived: no cut until it is seen.
        let mut s = SentenceSplitter::new(3);
        assert!(s.push("They call it \"the moon,").is_empty());
        assert!(s.push("\"").is_empty());
        assert_eq!(s.push(" and more"), vec!["They call it \"the moon,\""]);
    }

    #[test]
    fn ellipses_decimals_and_abbreviations() {
        assert_eq!(
            split_all("Well... it costs 2.5 dollars, e.g. at the shop. Dr. No waited… then left. Mr. T. Jones (Ph.D.) came."),
            vec!["Well...", "it costs 2.5 dollars, e.g. at the shop.", "Dr. No waited…", "then left.", "Mr. T. Jones (Ph.D.) came."]
        );
    }

    #[test]
    fn other_scripts_are_cut_at_their_own_sentence_ends() {
        assert_eq!(split_all("東京は日本の首都です。人口は多い！本当？"), vec!["東京は日本の首都です。", "人口は多い！", "本当？"]);
        assert_eq!(split_all("「はい。」と言った。"), vec!["「はい。」", "と言った。"]);
        assert_eq!(
            split_all("Привет, как дела? Всё хорошо. «Да», сказал он."),
            vec!["Привет, как дела?", "Всё хорошо.", "«Да», сказал он."]
        );
    }

    #[test]
    fn code_fences_are_dropped_even_when_split_across_pieces() {
        let mut f = CodeFenceFilter::new();
        let mut out = String::new();
        for piece in ["Run this: `", "ls -l`.\n``", "`sh\nrm -rf /tmp/x\n`", "``\nThat is all."] {
            out.push_str(&f.push(piece));
        }
        out.push_str(&f.finish());
        assert_eq!(out, "Run this: ls -l.\n\n\nThat is all.");
    }

    #[test]
    fn markdown_urls_and_emoji_become_speakable() {
        assert_eq!(clean_for_speech("## **Great** question! 😀").as_deref(), Some("Great question!"));
        assert_eq!(
            clean_for_speech("- See [the docs](https://x.io/a) or https://example.com.").as_deref(),
            Some("See the docs or a link.")
        );
        assert_eq!(clean_for_speech("3. Use *snake* mode").as_deref(), Some("Use snake mode"));
        assert_eq!(clean_for_speech("| --- | --- |"), None);
        assert_eq!(clean_for_speech("🎉🎉"), None);
        assert_eq!(clean_for_speech("It costs $29.99, i.e. cheap.").as_deref(), Some("It costs $29.99, i.e. cheap."));
    }
}

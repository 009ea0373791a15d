//! espeak-ng phonemes for the Piper voice, the way piper-tts 1.8 makes them
//! (`piper/phonemize_espeak.py` + `piper/phoneme_ids.py`).
//!
//! libespeak-ng (`libespeak-ng.so.1`, Debian `libespeak-ng1`) is loaded at run time with
//! libloading, so no -dev package is needed to build. `espeak_TextToPhonemes` returns one
//! clause at a time in IPA; like piper we drop `(lang)` switch flags, append the clause's
//! punctuation (plus a space after `, : ;`), split sentences at `. ? !`, decompose with NFD and
//! map every code point through the voice's `phoneme_id_map` as `^ _ p1 _ p2 _ … $`.

use anyhow::{anyhow, bail, Result};
use libloading::{Library, Symbol};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ops::Range;
use tgvoice::text::{dot_is_not_an_end, is_closer, is_unspaced_sentence_end};
use unicode_normalization::UnicodeNormalization;

const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const ESPEAK_INITIALIZE_DONT_EXIT: c_int = 0x8000;
const ESPEAK_CHARS_UTF8: c_int = 1;
const ESPEAK_PHONEMES_IPA: c_int = 0x02;

type InitializeFn = unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int;
type SetVoiceFn = unsafe extern "C" fn(*const c_char) -> c_int;
type TextToPhonemesFn = unsafe extern "C" fn(*mut *const c_void, c_int, c_int) -> *const c_char;

/// The libespeak-ng file names tried, in order.
const LIBRARY_NAMES: &[&str] = &["libespeak-ng.so.1", "libespeak-ng.so", "libespeak-ng.1.dylib", "libespeak-ng.dylib"];

/// Text → sentences of IPA phonemes (one `String` per code point), using libespeak-ng.
pub struct EspeakPhonemizer {
    _lib: Library,
    text_to_phonemes: TextToPhonemesFn,
}

// libespeak-ng keeps global state; the phonemizer lives on the synthesis thread only.
unsafe impl Send for EspeakPhonemizer {}

impl EspeakPhonemizer {
    /// Load libespeak-ng and select `voice` (e.g. "en-us").
    pub fn new(voice: &str) -> Result<Self> {
        let lib = load_espeak_library()?;
        unsafe {
            let init: Symbol<InitializeFn> = lib.get(b"espeak_Initialize\0")?;
            let set_voice: Symbol<SetVoiceFn> = lib.get(b"espeak_SetVoiceByName\0")?;
            let ttp: Symbol<TextToPhonemesFn> = lib.get(b"espeak_TextToPhonemes\0")?;
            let rate = init(AUDIO_OUTPUT_SYNCHRONOUS, 0, std::ptr::null(), ESPEAK_INITIALIZE_DONT_EXIT);
            if rate <= 0 {
                bail!("espeak_Initialize failed (is espeak-ng-data installed?)");
            }
            let cvoice = CString::new(voice)?;
            if set_voice(cvoice.as_ptr()) != 0 {
                bail!("espeak-ng has no voice {voice:?}");
            }
            let text_to_phonemes = *ttp;
            Ok(EspeakPhonemizer { text_to_phonemes, _lib: lib })
        }
    }

    /// Phonemes grouped by sentence, as piper's `EspeakPhonemizer.phonemize` returns them,
    /// each with the byte ranges of its clauses in `text`.
    ///
    /// piper's espeak-ng fork reports each clause's terminator; Debian's libespeak-ng does
    /// not, so the text is split into clauses here ([`split_clauses`]) and each clause is
    /// phonemized on its own.
    pub fn phonemize(&mut self, text: &str) -> Vec<Sentence> {
        let mut sentences: Vec<Sentence> = vec![];
        let mut current = String::new();
        let mut clauses: Vec<Range<usize>> = vec![];
        for clause in split_clauses(text) {
            if !text[clause.span.clone()].trim().is_empty() {
                clauses.push(clause.span.clone());
            }
            let phonemes = self.clause_phonemes(&text[clause.words.clone()]);
            if !phonemes.trim().is_empty() {
                if !current.is_empty() && !current.ends_with(' ') {
                    current.push(' ');
                }
                current.push_str(phonemes.trim());
            }
            if let Some(t) = clause.terminator {
                if current.is_empty() {
                    continue;
                }
                current.push(t);
                if matches!(t, ',' | ':' | ';') {
                    current.push(' ');
                } else {
                    push_sentence(&mut sentences, &mut current, &mut clauses);
                }
            }
        }
        push_sentence(&mut sentences, &mut current, &mut clauses);
        sentences
    }

    /// IPA for one clause (all of espeak's pieces joined by spaces).
    fn clause_phonemes(&mut self, clause: &str) -> String {
        let clean: String = clause.chars().map(|c| if c == '\0' { ' ' } else { c }).collect();
        let ctext = CString::new(clean).expect("NULs removed above");
        let mut ptr: *const c_void = ctext.as_ptr() as *const c_void;
        let mut parts = vec![];
        let mut guard = 0;
        while !ptr.is_null() && guard < 1000 {
            guard += 1;
            let out = unsafe { (self.text_to_phonemes)(&mut ptr, ESPEAK_CHARS_UTF8, ESPEAK_PHONEMES_IPA) };
            if out.is_null() {
                break;
            }
            let p = strip_language_flags(&unsafe { CStr::from_ptr(out) }.to_string_lossy());
            if !p.trim().is_empty() {
                parts.push(p.trim().to_string());
            }
        }
        parts.join(" ")
    }
}

/// One clause of a text, as byte ranges into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// What is phonemized: the words, without the punctuation that ends them.
    pub words: Range<usize>,
    /// What the clause says as written: from its first visible character to the end of its
    /// punctuation and closing quotes or brackets (`"days per week,"`).
    pub span: Range<usize>,
    /// The punctuation that ends it as Piper knows it (`None` for a trailing clause).
    pub terminator: Option<char>,
}

/// Split text into clauses at `. , ? ! ; :` (and the sentence ends of scripts without
/// spaces) before a space or the end. A clause keeps the closing quotes and brackets after
/// its punctuation, so played text is never cut between a word and what belongs to it; a dot
/// of a number, an abbreviation or an initial ("3.50", "Dr.", "e.g.", "John F.") ends nothing.
pub fn split_clauses(text: &str) -> Vec<Clause> {
    const MARKS: &str = ".,?!;:";
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let byte = |k: usize| chars.get(k).map(|&(b, _)| b).unwrap_or(text.len());
    let mut out = vec![];
    let mut start = 0; // byte where the current clause begins
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        let unspaced = is_unspaced_sentence_end(c);
        if MARKS.contains(c) || unspaced {
            let mut j = i;
            while j < chars.len() && (MARKS.contains(chars[j].1) || is_unspaced_sentence_end(chars[j].1)) {
                j += 1;
            }
            let mut k = j;
            while k < chars.len() && is_closer(chars[k].1) {
                k += 1;
            }
            let ends_here = k == chars.len() || chars[k].1.is_whitespace() || unspaced;
            // An opening quote right after the mark ("Hello,\"you\"") starts the next clause.
            let before_opening = k > j && !ends_here;
            let only_a_dot = &text[pos..byte(j)] == ".";
            if (ends_here || before_opening) && !(only_a_dot && dot_is_not_an_end(&text[..pos])) {
                let run: String = text[pos..byte(j)]
                    .chars()
                    .map(|c| match c {
                        '！' => '!',
                        '？' => '?',
                        c if is_unspaced_sentence_end(c) => '.',
                        c => c,
                    })
                    .collect();
                let t = ['?', '!', '.', ';', ':', ','].into_iter().find(|p| run.contains(*p)).expect("run holds punctuation");
                let end = if ends_here { byte(k) } else { byte(j) };
                out.push(Clause { words: start..pos, span: trim_start(text, start)..end, terminator: Some(t) });
                start = end;
                i = if ends_here { k } else { j };
                continue;
            }
        }
        i += 1;
    }
    if !text[start..].trim().is_empty() {
        out.push(Clause { words: start..text.len(), span: trim_start(text, start)..text.trim_end().len(), terminator: None });
    }
    out
}

fn trim_start(text: &str, from: usize) -> usize {
    from + (text[from..].len() - text[from..].trim_start().len())
}

/// One sentence: the byte ranges of its clauses in the text, and its phonemes (one code point
/// each, clauses separated by "<punctuation> ").
#[derive(Debug, Clone, Default)]
pub struct Sentence {
    pub clauses: Vec<Range<usize>>,
    pub phonemes: Vec<String>,
}

impl Sentence {
    /// Where the sentence is in the text it came from, punctuation and closing quotes included.
    pub fn span(&self) -> Option<Range<usize>> {
        Some(self.clauses.first()?.start..self.clauses.last()?.end)
    }
}

/// Load libespeak-ng (its global state is shared by every handle in the process).
pub fn load_espeak_library() -> Result<Library> {
    let mut last_err = None;
    for name in LIBRARY_NAMES {
        match unsafe { Library::new(name) } {
            Ok(l) => return Ok(l),
            Err(e) => last_err = Some(e),
        }
    }
    bail!(
        "cannot load libespeak-ng ({}); install it (Debian: apt-get install libespeak-ng1, macOS: brew install espeak-ng)",
        last_err.map(|e| e.to_string()).unwrap_or_default()
    )
}

fn push_sentence(sentences: &mut Vec<Sentence>, current: &mut String, clauses: &mut Vec<Range<usize>>) {
    let s = current.trim_end().to_string();
    current.clear();
    let clauses = std::mem::take(clauses);
    if s.trim().is_empty() {
        return;
    }
    sentences.push(Sentence { clauses, phonemes: s.nfd().map(|c| c.to_string()).collect() });
}

/// Remove "(en)"-style language switch flags.
fn strip_language_flags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            '\n' | '\r' => {}
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Map phonemes to ids: `^ _ (id _)* $`, skipping (and reporting) unknown phonemes.
pub fn phonemes_to_ids(phonemes: &[String], map: &HashMap<String, Vec<i64>>) -> Result<(Vec<i64>, Vec<String>)> {
    let get = |k: &str| map.get(k).ok_or_else(|| anyhow!("the voice's phoneme_id_map has no {k:?}"));
    let pad = get("_")?;
    let mut ids = get("^")?.clone();
    ids.extend(pad);
    let mut missing = vec![];
    for p in phonemes {
        match map.get(p.as_str()) {
            Some(v) => {
                ids.extend(v);
                ids.extend(pad);
            }
            None => missing.push(p.clone()),
        }
    }
    ids.extend(get("$")?);
    Ok((ids, missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_flags_are_removed() {
        assert_eq!(strip_language_flags("hˈɛloʊ (fr)bɔ̃ʒuʁ(en) wˈɜːld"), "hˈɛloʊ bɔ̃ʒuʁ wˈɜːld");
    }

    #[test]
    fn ids_are_padded_like_piper() {
        let map: HashMap<String, Vec<i64>> =
            [("_", 0), ("^", 1), ("$", 2), ("a", 14), ("b", 15)].iter().map(|(k, v)| (k.to_string(), vec![*v])).collect();
        let (ids, missing) = phonemes_to_ids(&["a".into(), "x".into(), "b".into()], &map).unwrap();
        assert_eq!(ids, vec![1, 0, 14, 0, 15, 0, 2]);
        assert_eq!(missing, vec!["x".to_string()]);
    }

    /// (words, span, terminator) of each clause, as text.
    fn clauses(text: &str) -> Vec<(&str, &str, Option<char>)> {
        split_clauses(text).into_iter().map(|c| (text[c.words].trim(), &text[c.span], c.terminator)).collect()
    }

    #[test]
    fn clauses_split_at_punctuation_before_spaces() {
        assert_eq!(
            clauses("Hello there, it costs 3.50 dollars... Really?! yes"),
            vec![
                ("Hello there", "Hello there,", Some(',')),
                ("it costs 3.50 dollars", "it costs 3.50 dollars...", Some('.')),
                ("Really", "Really?!", Some('?')),
                ("yes", "yes", None)
            ]
        );
    }

    #[test]
    fn a_clause_keeps_the_quote_or_bracket_that_closes_it() {
        assert_eq!(
            clauses("known as \"days per week,\" allows (roughly.) It ends."),
            vec![
                ("known as \"days per week", "known as \"days per week,\"", Some(',')),
                ("allows (roughly", "allows (roughly.)", Some('.')),
                ("It ends", "It ends.", Some('.'))
            ]
        );
        // Nested and curly quotes; an opening quote right after a mark starts the next clause.
        assert_eq!(
            clauses("He said, “she told me ‘no.’” Then,\"go\"."),
            vec![
                ("He said", "He said,", Some(',')),
                ("“she told me ‘no", "“she told me ‘no.’”", Some('.')),
                ("Then", "Then,", Some(',')),
                ("\"go\"", "\"go\".", Some('.'))
            ]
        );
    }

    #[test]
    fn numbers_abbreviations_and_initials_end_no_clause() {
        assert_eq!(
            clauses("Dr. Smith paid $2.50, e.g. for John F. Kennedy's book… Fine."),
            vec![
                ("Dr. Smith paid $2.50", "Dr. Smith paid $2.50,", Some(',')),
                ("e.g. for John F. Kennedy's book… Fine", "e.g. for John F. Kennedy's book… Fine.", Some('.'))
            ]
        );
    }

    #[test]
    fn other_scripts_keep_whole_characters() {
        assert_eq!(
            clauses("東京は首都です。「はい。」と言った！ Привет, мир."),
            vec![
                ("東京は首都です", "東京は首都です。", Some('.')),
                ("「はい", "「はい。」", Some('.')),
                ("と言った", "と言った！", Some('!')),
                ("Привет", "Привет,", Some(',')),
                ("мир", "мир.", Some('.'))
            ]
        );
    }

    #[test]
    fn english_sentences_and_punctuation() {
        let Ok(mut p) = EspeakPhonemizer::new("en-us") else {
            panic!("libespeak-ng missing: run scripts/setup apt");
        };
        let s = p.phonemize("Hello there, how are you? I am fine.");
        let joined: Vec<String> = s.iter().map(|x| x.phonemes.concat()).collect();
        let text = "Hello there, how are you? I am fine.";
        assert_eq!(&text[s[0].span().unwrap()], "Hello there, how are you?");
        assert_eq!(&text[s[1].span().unwrap()], "I am fine.");
        assert_eq!(joined.len(), 2, "{joined:?}");
        assert!(joined[0].contains(", "), "{joined:?}");
        assert!(joined[0].ends_with('?'), "{joined:?}");
        assert!(joined[1].ends_with('.'), "{joined:?}");
    }
}

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

    /// Phonemes grouped by sentence, as piper's `EspeakPhonemizer.phonemize` returns them.
    ///
    /// piper's espeak-ng fork reports each clause's terminator; Debian's libespeak-ng does
    /// not, so the text is split into clauses here (at `. , ? ! ; :` before a space or the end)
    /// and each clause is phonemized on its own.
    pub fn phonemize(&mut self, text: &str) -> Vec<Sentence> {
        let mut sentences: Vec<Sentence> = vec![];
        let mut current = String::new();
        let mut clauses: Vec<String> = vec![];
        for (clause, terminator) in split_clauses(text) {
            let mut clause_text = clause.trim().to_string();
            if let Some(t) = terminator {
                clause_text.push(t);
            }
            if !clause_text.is_empty() {
                clauses.push(clause_text);
            }
            let phonemes = self.clause_phonemes(&clause);
            if !phonemes.trim().is_empty() {
                if !current.is_empty() && !current.ends_with(' ') {
                    current.push(' ');
                }
                current.push_str(phonemes.trim());
            }
            if let Some(t) = terminator {
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

/// Split text into clauses and their terminators (`None` for a trailing clause without one).
pub fn split_clauses(text: &str) -> Vec<(String, Option<char>)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = vec![];
    let mut clause = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if ".,?!;:".contains(c) {
            let mut j = i;
            while j < chars.len() && ".,?!;:".contains(chars[j]) {
                j += 1;
            }
            if j == chars.len() || chars[j].is_whitespace() || "\"')]".contains(chars[j]) {
                let run: String = chars[i..j].iter().collect();
                let t = ['?', '!', '.', ';', ':', ',']
                    .into_iter()
                    .find(|p| run.contains(*p))
                    .expect("run holds punctuation");
                out.push((std::mem::take(&mut clause), Some(t)));
                i = j;
                continue;
            }
        }
        clause.push(c);
        i += 1;
    }
    if !clause.trim().is_empty() {
        out.push((clause, None));
    }
    out
}

/// One sentence: its text clauses (with their punctuation) and its phonemes (one code point
/// each, clauses separated by "<punctuation> ").
#[derive(Debug, Clone, Default)]
pub struct Sentence {
    pub clauses: Vec<String>,
    pub phonemes: Vec<String>,
}

impl Sentence {
    pub fn text(&self) -> String {
        self.clauses.join(" ")
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

fn push_sentence(sentences: &mut Vec<Sentence>, current: &mut String, clauses: &mut Vec<String>) {
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

    #[test]
    fn clauses_split_at_punctuation_before_spaces() {
        let c = split_clauses("Hello there, it costs 3.50 dollars... Really?! yes");
        let got: Vec<(&str, Option<char>)> = c.iter().map(|(s, t)| (s.trim(), *t)).collect();
        assert_eq!(
            got,
            vec![("Hello there", Some(',')), ("it costs 3.50 dollars", Some('.')), ("Really", Some('?')), ("yes", None)]
        );
    }

    #[test]
    fn english_sentences_and_punctuation() {
        let Ok(mut p) = EspeakPhonemizer::new("en-us") else {
            panic!("libespeak-ng missing: run scripts/setup apt");
        };
        let s = p.phonemize("Hello there, how are you? I am fine.");
        let joined: Vec<String> = s.iter().map(|x| x.phonemes.concat()).collect();
        assert_eq!(s[0].text(), "Hello there, how are you?");
        assert_eq!(joined.len(), 2, "{joined:?}");
        assert!(joined[0].contains(", "), "{joined:?}");
        assert!(joined[0].ends_with('?'), "{joined:?}");
        assert!(joined[1].ends_with('.'), "{joined:?}");
    }
}

//! The Whisper vocabulary: CTranslate2's `vocabulary.txt` holds one GPT-2 byte-level token per
//! line (bytes mapped to printable characters, e.g. "Ġ" = space); newer converters write the same
//! list as `vocabulary.json` (a JSON array of strings). ggml wants the raw bytes.

use anyhow::{ensure, Context, Result};
use std::collections::HashMap;

/// GPT-2's `bytes_to_unicode` table, inverted: printable char → original byte.
pub fn unicode_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .map(|(b, c)| (char::from_u32(c).expect("valid char"), b as u8))
        .collect()
}

/// Decode one byte-level token string to its bytes.
pub fn decode_token(token: &str, table: &HashMap<char, u8>) -> Result<Vec<u8>> {
    token
        .chars()
        .map(|c| table.get(&c).copied().with_context(|| format!("token {token:?} has {c:?}, which is not a GPT-2 byte-level character")))
        .collect()
}

/// Text tokens a ggml Whisper file stores (whisper.cpp adds the special tokens itself): the
/// English-only models' GPT-2 vocabulary has 50256 (ids 0..50255, `<|endoftext|>` = 50256), the
/// multilingual one (n_vocab 51865) 50257, its `<|endoftext|>` being 50257.
pub fn text_tokens(n_vocab: i32) -> usize {
    if n_vocab >= 51865 {
        50257
    } else {
        50256
    }
}

/// The first `count` tokens of `vocabulary.txt` as raw bytes.
pub fn read_tokens(text: &str, count: usize) -> Result<Vec<Vec<u8>>> {
    let lines: Vec<&str> = text.split('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).collect();
    decode_first(&lines, count, "line")
}

/// The first `count` tokens of `vocabulary.json` (a JSON array of token strings) as raw bytes.
pub fn read_tokens_json(text: &str, count: usize) -> Result<Vec<Vec<u8>>> {
    let list: Vec<String> = serde_json::from_str(text).context("vocabulary.json is not a JSON array of strings")?;
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    decode_first(&refs, count, "entry")
}

fn decode_first(tokens: &[&str], count: usize, unit: &str) -> Result<Vec<Vec<u8>>> {
    let table = unicode_to_byte();
    ensure!(tokens.len() >= count, "vocabulary has {} {unit}s, expected at least {count} text tokens", tokens.len());
    tokens[..count]
        .iter()
        .enumerate()
        .map(|(i, t)| decode_token(t, &table).with_context(|| format!("vocabulary {unit} {}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_all_bytes_once() {
        let t = unicode_to_byte();
        assert_eq!(t.len(), 256);
        let mut bytes: Vec<u8> = t.values().copied().collect();
        bytes.sort();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
    }

    #[test]
    fn decodes_gpt2_tokens() {
        let t = unicode_to_byte();
        assert_eq!(decode_token("Ġthe", &t).unwrap(), b" the");
        assert_eq!(decode_token("Ċ", &t).unwrap(), b"\n");
        assert_eq!(decode_token("!", &t).unwrap(), b"!");
        // "é" in UTF-8 is C3 A9, which byte-level BPE spells "Ã©".
        assert_eq!(decode_token("Ã©", &t).unwrap(), "é".as_bytes());
        assert!(decode_token("日", &t).is_err());
    }

    #[test]
    fn reads_only_the_requested_tokens() {
        let text = "!\n\"\nĠthe\n<|endoftext|>\n";
        let toks = read_tokens(text, 3).unwrap();
        assert_eq!(toks, vec![b"!".to_vec(), b"\"".to_vec(), b" the".to_vec()]);
        assert!(read_tokens(text, 10).is_err());
    }

    #[test]
    fn reads_the_json_vocabulary_like_the_text_one() {
        // The multilingual vocabulary has an empty entry at 50256; it decodes to no bytes.
        let json = r#"["!", "\"", "Ġthe", "", "<|endoftext|>"]"#;
        let toks = read_tokens_json(json, 4).unwrap();
        assert_eq!(toks, vec![b"!".to_vec(), b"\"".to_vec(), b" the".to_vec(), vec![]]);
        assert_eq!(toks[..3], read_tokens("!\n\"\nĠthe\n", 3).unwrap()[..]);
        assert!(read_tokens_json(json, 6).is_err());
        assert!(read_tokens_json("{}", 1).is_err());
    }

    #[test]
    fn multilingual_models_store_one_more_text_token() {
        assert_eq!(text_tokens(51864), 50256); // tiny.en, base.en, …
        assert_eq!(text_tokens(51865), 50257); // tiny, base, small, …
    }
}

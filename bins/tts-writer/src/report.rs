//! What the caller heard: the per-turn latency line at the first audio of a reply, and how much
//! of each reply was played (for the conversation history after a barge-in). Both are logged
//! and appended as JSON lines to `$STATE/metrics.jsonl`.

use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use tgvoice::event::trace_key;
use tgvoice::TurnTrace;

pub struct Reporter {
    metrics: Option<PathBuf>,
    engine: String,
}

/// How much of one reply went out.
#[derive(Debug, Clone, Default)]
pub struct Played {
    pub turn: u64,
    pub cancelled: bool,
    /// Audio written, ms.
    pub played_ms: f64,
    /// Audio synthesised for the reply so far, ms.
    pub synthesized_ms: f64,
    /// The reply text that was (approximately, cut at a word) spoken.
    pub played_text: String,
    /// All reply text received.
    pub text: String,
    pub trace: TurnTrace,
}

impl Played {
    /// The `reply-played` record: a line of metrics.jsonl, and the event that ends a reply on
    /// a framed output (`--output-format frames`).
    pub fn record(&self) -> Value {
        json!({
            "type": "reply-played",
            "turn": self.turn,
            "cancelled": self.cancelled,
            "played_ms": (self.played_ms * 10.0).round() / 10.0,
            "synthesized_ms": (self.synthesized_ms * 10.0).round() / 10.0,
            "played_text": self.played_text,
            "text": self.text,
            "trace": self.trace,
        })
    }
}

impl Reporter {
    /// Append to `<state_dir>/metrics.jsonl` (created if missing); `None` = log only.
    pub fn new(state_dir: Option<&Path>, engine: &str) -> Self {
        let metrics = state_dir.and_then(|d| match std::fs::create_dir_all(d) {
            Ok(()) => Some(d.join("metrics.jsonl")),
            Err(e) => {
                log::warn!("cannot create state dir {}: {e}; metrics go to the log only", d.display());
                None
            }
        });
        Reporter { metrics, engine: engine.to_string() }
    }

    pub fn metrics_path(&self) -> Option<&Path> {
        self.metrics.as_deref()
    }

    /// The first audio of `turn` was written: log the latency line and record it.
    pub fn first_audio(&self, turn: u64, trace: &TurnTrace) {
        let line = trace.latency_line();
        log::info!("turn {turn}: {line}");
        let spans = trace_key::SPANS.iter().chain([&trace_key::VOICE_TO_VOICE]);
        let ms: serde_json::Map<String, Value> =
            spans.map(|(name, a, b)| (name.to_string(), trace.span_ms(a, b).map(Value::from).unwrap_or(Value::Null))).collect();
        self.append(json!({
            "type": "turn-latency",
            "turn": turn,
            "engine": self.engine,
            "ms": ms,
            "line": line,
            "trace": trace,
        }));
    }

    /// A reply finished or was cut off.
    pub fn played(&self, p: &Played) {
        if p.cancelled {
            log::info!(
                "turn {}: cancelled after {:.0} ms of {:.0} ms synthesised; played {:?}",
                p.turn, p.played_ms, p.synthesized_ms, p.played_text
            );
        } else {
            log::info!("turn {}: played {:.0} ms", p.turn, p.played_ms);
        }
        self.append(p.record());
    }

    fn append(&self, v: Value) {
        let Some(path) = &self.metrics else { return };
        let line = format!("{v}\n");
        let r = std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = r {
            log::warn!("cannot append to {}: {e}", path.display());
        }
    }
}

/// The length in bytes of the first `fraction` of `text`, cut at a word boundary (an
/// estimate of what was heard), without the space before the cut.
pub fn spoken_len(text: &str, fraction: f64) -> usize {
    if fraction >= 1.0 {
        return text.len();
    }
    if fraction <= 0.0 {
        return 0;
    }
    let target = (text.chars().count() as f64 * fraction).round() as usize;
    let mut cut = 0;
    for (i, (byte, c)) in text.char_indices().enumerate() {
        if i > target {
            break;
        }
        if c.is_whitespace() {
            cut = byte;
        }
    }
    text[..cut].trim_end().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_cuts_at_words() {
        let prefix = |t: &'static str, f| &t[..spoken_len(t, f)];
        assert_eq!(prefix("one two three four", 0.5), "one two");
        assert_eq!(prefix("one two", 1.0), "one two");
        assert_eq!(prefix("one two", 0.0), "");
        assert_eq!(prefix("один два три четыре", 0.5), "один два");
    }
}

//! Control/text events (frame kind 2) and the per-turn latency trace.
//!
//! An event is a small JSON object with a `"type"`; the known types and fields are listed in
//! `fifo-layout.md` §2. Unknown types and fields survive a decode/encode round trip (they land
//! in [`Event::extra`]), so every stage can forward events it does not understand.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Event type names (the `"type"` field).
pub mod kind {
    pub const CALL_START: &str = "call-start";
    pub const CALL_END: &str = "call-end";
    pub const SPEECH_START: &str = "speech-start";
    /// The first voiced chunk while no turn is open (vadseg): pause, do not cancel yet.
    pub const SPEECH_ONSET: &str = "speech-onset";
    /// The voiced run of a `speech-onset` died before it became a turn: a false alarm.
    pub const SPEECH_VOID: &str = "speech-void";
    /// An interruption was a false alarm (noise, backchannel): the paused reply goes on.
    pub const RESUME: &str = "resume";
    pub const SPEECH_END: &str = "speech-end";
    pub const TRANSCRIPT: &str = "transcript";
    pub const REPLY_CHUNK: &str = "reply-chunk";
    /// A chunk of a reply held until the caller's turn is confirmed: speak it ahead, keep the
    /// audio, play it only when the same `reply-chunk` follows.
    pub const REPLY_AHEAD: &str = "reply-ahead";
    pub const REPLY_END: &str = "reply-end";
    /// tts-writer on `played.frames`: audio of the reply of `turn` is being written (sent at
    /// its first audio and every 500 ms of audio after).
    pub const REPLY_PROGRESS: &str = "reply-progress";
    /// tts-writer: the reply of `turn` ended or was cut off, with what was played.
    pub const REPLY_PLAYED: &str = "reply-played";
    pub const CANCEL: &str = "cancel";
    pub const ERROR: &str = "error";
}

/// Trace keys (µs since the Unix epoch), in pipeline order. See fifo-layout.md "The turn trace".
pub mod trace_key {
    pub const SPEECH_START: &str = "speech_start";
    pub const SPEECH_END: &str = "speech_end";
    pub const EOT: &str = "eot";
    pub const TRANSCRIPT: &str = "transcript";
    pub const LLM_REQUEST: &str = "llm_request";
    pub const LLM_FIRST_TOKEN: &str = "llm_first_token";
    pub const FIRST_CHUNK: &str = "first_chunk";
    pub const FIRST_AUDIO: &str = "first_audio";
    /// llm-relay started the reply early, from a preview transcript (not a step: information).
    pub const PREEMPT: &str = "preempt";

    /// The steps of a turn's latency, in order: (name, from, to). They add up to
    /// [`VOICE_TO_VOICE`]. Read by the latency line and tts-writer's metrics.jsonl.
    pub const SPANS: [(&str, &str, &str); 5] = [
        ("eot", SPEECH_END, EOT),
        ("stt", EOT, TRANSCRIPT),
        ("llm", TRANSCRIPT, LLM_FIRST_TOKEN),
        ("chunk", LLM_FIRST_TOKEN, FIRST_CHUNK),
        ("audio", FIRST_CHUNK, FIRST_AUDIO),
    ];
    /// The whole: the caller's last voiced sample to the first reply audio.
    pub const VOICE_TO_VOICE: (&str, &str, &str) = ("voice_to_voice", SPEECH_END, FIRST_AUDIO);
}

/// How far ahead of the wall clock (in ms) a turn id may be; see [`Event::plausible_turn`].
pub const TURN_AHEAD_MS: u64 = 60_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "TurnTrace::is_empty")]
    pub trace: TurnTrace,
    /// Any other fields (`final`, `seq`, `cancelled`, `call`, …), kept for forwarding.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Event {
    pub fn new(kind: &str) -> Self {
        Event { kind: kind.to_string(), turn: None, text: None, trace: TurnTrace::default(), extra: Map::new() }
    }

    pub fn with_turn(mut self, turn: u64) -> Self {
        self.turn = Some(turn);
        self
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    pub fn with_trace(mut self, trace: TurnTrace) -> Self {
        self.trace = trace;
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn is(&self, kind: &str) -> bool {
        self.kind == kind
    }

    /// Barge-in events (speech-onset, speech-start, speech-void, resume, cancel) overtake
    /// queued work in every writer.
    pub fn is_urgent(&self) -> bool {
        matches!(
            self.kind.as_str(),
            kind::SPEECH_ONSET | kind::SPEECH_START | kind::SPEECH_VOID | kind::RESUME | kind::CANCEL
        )
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.extra.get(key).and_then(Value::as_bool)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.extra.get(key).and_then(Value::as_u64)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(Value::as_str)
    }

    /// The event's turn, unless it is implausible: turn ids are the wall-clock millisecond of
    /// the speech onset (vadseg) or small counters, so one more than [`TURN_AHEAD_MS`] ahead of
    /// the clock can only be bad input (fifo-layout.md §2). Acting on it would mute every
    /// real turn below it.
    pub fn plausible_turn(&self) -> Result<Option<u64>, u64> {
        match self.turn {
            Some(t) if t > crate::clock::now_us() / 1000 + TURN_AHEAD_MS => Err(t),
            t => Ok(t),
        }
    }

    /// One JSON line (for text taps and logs).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("events always serialise")
    }
}

/// Wall-clock timestamps (µs since the Unix epoch) that stages add as a turn travels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TurnTrace(pub BTreeMap<String, u64>);

impl TurnTrace {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<u64> {
        self.0.get(key).copied()
    }

    /// Record `key` = `t_us` (keeps the first value if the key is already set).
    pub fn mark(&mut self, key: &str, t_us: u64) {
        self.0.entry(key.to_string()).or_insert(t_us);
    }

    /// Record `key` = now.
    pub fn mark_now(&mut self, key: &str) {
        self.mark(key, crate::clock::now_us());
    }

    /// Milliseconds from `from` to `to`, if both are set.
    pub fn span_ms(&self, from: &str, to: &str) -> Option<f64> {
        Some((self.get(to)? as f64 - self.get(from)? as f64) / 1000.0)
    }

    /// "eot 612 ms → stt 180 ms → llm 150 ms → chunk 40 ms → audio 90 ms = 1072 ms" — the
    /// per-turn latency line, from the caller's last voiced sample to the first reply audio.
    pub fn latency_line(&self) -> String {
        use trace_key::*;
        let mut parts = vec![];
        for (name, from, to) in SPANS {
            match self.span_ms(from, to) {
                Some(ms) => parts.push(format!("{name} {ms:.0} ms")),
                None => parts.push(format!("{name} ?")),
            }
        }
        let (_, from, to) = VOICE_TO_VOICE;
        let total = self
            .span_ms(from, to)
            .map(|ms| format!("{ms:.0} ms"))
            .unwrap_or_else(|| "?".into());
        format!("{} = voice-to-voice {total}", parts.join(" → "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_types_survive_round_trip() {
        let json = r#"{"type":"x-custom","turn":5,"final":true,"nested":{"a":[1,2]},"trace":{"eot":10}}"#;
        let e: Event = serde_json::from_str(json).unwrap();
        assert_eq!(e.kind, "x-custom");
        assert_eq!(e.get_bool("final"), Some(true));
        assert_eq!(e.trace.get("eot"), Some(10));
        let back: Value = serde_json::from_str(&e.to_json_line()).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(json).unwrap());
    }

    #[test]
    fn latency_line_names_every_step() {
        let mut t = TurnTrace::default();
        for (i, k) in ["speech_end", "eot", "transcript", "llm_first_token", "first_chunk", "first_audio"]
            .iter()
            .enumerate()
        {
            t.mark(k, 1_000_000 + i as u64 * 100_000);
        }
        assert_eq!(
            t.latency_line(),
            "eot 100 ms → stt 100 ms → llm 100 ms → chunk 100 ms → audio 100 ms = voice-to-voice 500 ms"
        );
    }
}

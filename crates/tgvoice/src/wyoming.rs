//! The Wyoming event codec (Home Assistant's protocol for speech services), shared by sttd's
//! and tts-writer's `--engine wyoming`.
//!
//! The framing of the `wyoming` package 1.10.2 (`wyoming/event.py`): every event is one line
//! of JSON, `{"type": ..., "version": ..., "data": {...}?, "data_length": N?,
//! "payload_length": N?}`, followed by `data_length` bytes of JSON merged into `data` and
//! `payload_length` bytes of binary payload (audio). What the events mean is each engine's
//! business; this module only frames them.

use crate::log::snippet;
use serde_json::{json, Map, Value};

/// The protocol version written in each event's header (the package's, whose framing this is).
pub const PROTOCOL_VERSION: &str = "1.10.2";
/// The longest header line or data block read (a `describe`'s `info` is a few kB).
const MAX_JSON: usize = 1 << 20;
/// The largest payload read (an audio chunk is a few kB; more is a broken stream).
const MAX_PAYLOAD: usize = 16 << 20;

/// One Wyoming event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: String,
    pub data: Map<String, Value>,
    pub payload: Vec<u8>,
}

impl Event {
    /// An event of `kind` with `data` (a JSON object; anything else is taken as no data).
    pub fn new(kind: &str, data: Value) -> Self {
        let data = match data {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Event { kind: kind.into(), data, payload: vec![] }
    }

    pub fn with_payload(mut self, payload: Vec<u8>) -> Self {
        self.payload = payload;
        self
    }

    /// A string field of the data ("" when absent): `text`, `code`, …
    pub fn text(&self, key: &str) -> &str {
        self.data.get(key).and_then(Value::as_str).unwrap_or("")
    }

    /// The event as it goes on the wire: the header line, then the data as its own block (as
    /// the wyoming package writes it), then the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut header = json!({ "type": self.kind, "version": PROTOCOL_VERSION });
        let data = if self.data.is_empty() { vec![] } else { serde_json::to_vec(&self.data).expect("JSON values serialise") };
        if !data.is_empty() {
            header["data_length"] = data.len().into();
        }
        if !self.payload.is_empty() {
            header["payload_length"] = self.payload.len().into();
        }
        let mut out = serde_json::to_vec(&header).expect("JSON values serialise");
        out.push(b'\n');
        out.extend_from_slice(&data);
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Incremental event reader: bytes in, whole events out.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes read but not yet part of a whole event.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole event, `Ok(None)` if more bytes are needed, or why the stream is not
    /// Wyoming (the stream is then unusable: drop the connection).
    pub fn next(&mut self) -> Result<Option<Event>, String> {
        let Some(nl) = self.buf.iter().position(|b| *b == b'\n') else {
            if self.buf.len() > MAX_JSON {
                return Err(format!("not a Wyoming event: {} bytes without a newline: {}", self.buf.len(), snippet(&self.buf, 80)));
            }
            return Ok(None);
        };
        let line = &self.buf[..nl];
        let header: Value = serde_json::from_slice(line).map_err(|e| format!("not a Wyoming event ({e}): {}", snippet(line, 80)))?;
        let kind = header.get("type").and_then(Value::as_str).ok_or_else(|| format!("a Wyoming event without a \"type\": {}", snippet(line, 80)))?;
        let len = |key: &str| -> Result<usize, String> {
            match header.get(key) {
                None | Some(Value::Null) => Ok(0),
                Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| format!("a Wyoming {kind} event whose {key} is not a length: {v}")),
            }
        };
        let (data_len, payload_len) = (len("data_length")?, len("payload_length")?);
        if data_len > MAX_JSON || payload_len > MAX_PAYLOAD {
            return Err(format!("a Wyoming {kind} event of {data_len} + {payload_len} bytes is too big"));
        }
        let end = nl + 1 + data_len + payload_len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let mut data = match header.get("data") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        if data_len > 0 {
            let block = &self.buf[nl + 1..nl + 1 + data_len];
            match serde_json::from_slice::<Value>(block) {
                Ok(Value::Object(more)) => data.extend(more),
                _ => return Err(format!("the Wyoming {kind} event's data is not a JSON object: {}", snippet(block, 80))),
            }
        }
        let event = Event { kind: kind.to_string(), data, payload: self.buf[nl + 1 + data_len..end].to_vec() };
        self.buf.drain(..end);
        Ok(Some(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_taken_whole_however_the_bytes_arrive() {
        let chunk = Event::new("audio-chunk", json!({ "rate": 22050, "width": 2, "channels": 1 })).with_payload(vec![0, 1, 0xff, b'\n', 7, 0]);
        let start = Event::new("audio-start", json!({ "rate": 22050 }));
        let mut stream = [start.encode(), chunk.encode()].concat();
        // data inline in the header line, as older services write it
        stream.extend(b"{\"type\": \"audio-stop\", \"data\": {\"timestamp\": 5}}\n");
        for step in [1, 3, 7, stream.len()] {
            let mut d = Decoder::default();
            let mut events = vec![];
            for piece in stream.chunks(step) {
                d.push(piece);
                while let Some(ev) = d.next().unwrap() {
                    events.push(ev);
                }
            }
            assert_eq!(d.buffered(), 0);
            assert_eq!(events.len(), 3, "step {step}");
            assert_eq!(events[0], start);
            assert_eq!(events[1], chunk, "a newline inside the payload is payload");
            assert_eq!(events[2].kind, "audio-stop");
            assert_eq!(events[2].data["timestamp"], 5);
        }
    }

    #[test]
    fn the_header_says_the_lengths_and_the_version_and_no_data_means_no_block() {
        let chunk = Event::new("audio-chunk", json!({ "rate": 16000 })).with_payload(vec![1, 2, 3, 4]);
        let bytes = chunk.encode();
        let header: Value = serde_json::from_slice(bytes.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(header, json!({ "type": "audio-chunk", "version": PROTOCOL_VERSION, "data_length": 14, "payload_length": 4 }));
        let stop = Event::new("audio-stop", json!({})).encode();
        assert_eq!(serde_json::from_slice::<Value>(&stop[..stop.len() - 1]).unwrap(), json!({ "type": "audio-stop", "version": PROTOCOL_VERSION }));
    }

    #[test]
    fn inline_data_is_merged_with_the_data_block_and_garbage_is_an_error() {
        let mut d = Decoder::default();
        d.push(b"{\"type\":\"transcript\",\"data\":{\"text\":\"old\",\"language\":\"en\"},\"data_length\":14}\n{\"text\":\"new\"}");
        let e = d.next().unwrap().unwrap();
        assert_eq!((e.text("text"), e.text("language"), e.text("absent")), ("new", "en", ""));
        d.push(b"HTTP/1.1 400 Bad Request\r\n");
        assert!(d.next().unwrap_err().contains("not a Wyoming event"));
        let mut d = Decoder::default();
        d.push(b"{\"type\":\"audio-chunk\",\"payload_length\":\"many\"}\n");
        assert!(d.next().unwrap_err().contains("payload_length is not a length"));
        let mut d = Decoder::default();
        d.push(b"{\"type\":\"audio-chunk\",\"payload_length\":999999999}\n");
        assert!(d.next().unwrap_err().contains("too big"));
    }
}

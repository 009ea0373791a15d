//! [`WyomingEngine`]: a speech-to-text service speaking Home Assistant's Wyoming protocol over
//! TCP (wyoming-faster-whisper on port 10300, and the other `wyoming-*` ASR services), as a
//! [`crate::worker::Transcriber`].
//!
//! The protocol (the `wyoming` package 1.10.2, `wyoming/event.py`): every event is one line
//! of JSON, `{"type": ..., "data": {...}?, "data_length": N?, "payload_length": N?}`, followed
//! by `data_length` bytes of JSON merged into `data` and `payload_length` bytes of binary
//! payload. At start sttd sends `describe` and reads `info` (its `asr` programs and their
//! models; none is an error). A decode sends `transcribe` {language}, `audio-start`
//! {rate 16000, width 2, channels 1}, `audio-chunk`s (100 ms of PCM each, the format repeated
//! in their data), `audio-stop`, and reads events until `transcript` {text} (an `error` event
//! is the server's failure). The connection is kept between turns; wyoming-faster-whisper
//! closes it after each transcript, and a service that restarted has closed it too: a closed
//! connection is found before a turn is sent and opened again, and a connection that fails
//! during a turn is opened again once within the budget ([`crate::wire`]). Wyoming has no
//! cancel: a superseded decode closes its connection.

use crate::engine::{Transcription, SAMPLE_RATE};
use crate::wire::{self, Attempt, Budget, Failure};
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tgvoice::cli::{exit, fail};

/// The protocol version sent in each event's header (the package's, whose framing this follows).
pub const PROTOCOL_VERSION: &str = "1.10.2";
/// The longest header line or data block read (a describe's info is a few kB).
const MAX_JSON: usize = 1 << 20;
/// The largest payload read (sttd expects none; a longer one is a broken stream).
const MAX_PAYLOAD: usize = 16 << 20;
/// Samples in one audio-chunk: 100 ms.
const CHUNK_SAMPLES: usize = SAMPLE_RATE as usize / 10;

/// One Wyoming event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: String,
    pub data: Value,
    pub payload: Vec<u8>,
}

impl Event {
    pub fn new(kind: &str, data: Value) -> Self {
        Event { kind: kind.into(), data, payload: vec![] }
    }

    /// The event as it goes on the wire: the header line, then the data as its own block (as
    /// the wyoming package writes it), then the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut header = json!({ "type": self.kind, "version": PROTOCOL_VERSION });
        let data = match &self.data {
            Value::Object(m) if !m.is_empty() => serde_json::to_vec(&self.data).expect("JSON values serialise"),
            _ => vec![],
        };
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

    /// The next whole event, `Ok(None)` if more bytes are needed, or why the stream is not
    /// Wyoming.
    pub fn next(&mut self) -> Result<Option<Event>, String> {
        let Some(nl) = self.buf.iter().position(|b| *b == b'\n') else {
            if self.buf.len() > MAX_JSON {
                return Err(format!("no event header in {} bytes: {}", self.buf.len(), wire::snippet(&self.buf, 80)));
            }
            return Ok(None);
        };
        let line = &self.buf[..nl];
        let header: Value =
            serde_json::from_slice(line).map_err(|e| format!("not a Wyoming event ({e}): {}", wire::snippet(line, 80)))?;
        let kind = header.get("type").and_then(Value::as_str).ok_or_else(|| format!("an event without a \"type\": {}", wire::snippet(line, 80)))?;
        let len = |key: &str| -> Result<usize, String> {
            match header.get(key) {
                None | Some(Value::Null) => Ok(0),
                Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| format!("{key} is not a length: {v}")),
            }
        };
        let (data_len, payload_len) = (len("data_length")?, len("payload_length")?);
        if data_len > MAX_JSON || payload_len > MAX_PAYLOAD {
            return Err(format!("a {kind} event of {data_len} + {payload_len} bytes is too big"));
        }
        let end = nl + 1 + data_len + payload_len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let mut data = match header.get("data") {
            Some(Value::Object(m)) => Value::Object(m.clone()),
            _ => json!({}),
        };
        if data_len > 0 {
            let block = &self.buf[nl + 1..nl + 1 + data_len];
            match serde_json::from_slice::<Value>(block) {
                Ok(Value::Object(more)) => data.as_object_mut().expect("an object").extend(more),
                _ => return Err(format!("the {kind} event's data is not a JSON object: {}", wire::snippet(block, 80))),
            }
        }
        let event = Event { kind: kind.to_string(), data, payload: self.buf[nl + 1 + data_len..end].to_vec() };
        self.buf.drain(..end);
        Ok(Some(event))
    }
}

/// The settings `--engine wyoming` takes from the command line.
#[derive(Debug, Clone)]
pub struct WyomingSettings {
    /// `tcp://host:port`.
    pub url: String,
    /// The model to ask for by name (`transcribe`'s `name`); None = the service's default.
    pub model: Option<String>,
    pub language: Option<String>,
    pub timeout: Duration,
}

struct Conn {
    stream: TcpStream,
    decoder: Decoder,
}

pub struct WyomingEngine {
    settings: WyomingSettings,
    addr: SocketAddr,
    conn: Option<Conn>,
    /// The service's ASR programs and their models, from its info.
    pub models: Vec<String>,
}

/// `host:port` of a `tcp://host:port` URL, or what is expected instead.
pub fn host_port(url: &str) -> Result<&str, String> {
    let hint = "expected tcp://HOST:PORT, such as tcp://127.0.0.1:10300 (wyoming-faster-whisper's port)";
    let rest = url.strip_prefix("tcp://").ok_or_else(|| format!("--stt-url {url:?}: --engine wyoming speaks TCP; {hint}"))?;
    let rest = rest.trim_end_matches('/');
    if rest.rsplit_once(':').map_or(true, |(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
        return Err(format!("--stt-url {url:?}: {hint}"));
    }
    Ok(rest)
}

impl WyomingEngine {
    /// Connect, ask the service what it offers (`describe` → `info`) and keep the connection.
    pub fn connect(settings: WyomingSettings) -> anyhow::Result<Self> {
        let hp = host_port(&settings.url).map_err(|e| fail(exit::USAGE, e))?;
        let addr = hp
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| fail(exit::UNAVAILABLE, format!("--stt-url {}: cannot resolve {hp}", settings.url)))?;
        let mut engine = WyomingEngine { settings, addr, conn: None, models: vec![] };
        let server = engine.server();
        let budget = Budget::new(engine.settings.timeout, None);
        let unavailable = |cause: String| fail(exit::UNAVAILABLE, format!("{server}: {cause}; is the Wyoming service running (wyoming-faster-whisper listens on port 10300)?"));
        let mut conn = engine.open(&budget).map_err(|f| unavailable(f.cause))?;
        conn.send(&[Event::new("describe", json!({}))], &budget).map_err(|f| unavailable(f.cause))?;
        let info = match conn.read_until(&["info"], &budget) {
            Ok(Some(e)) => e,
            Ok(None) => return Err(unavailable("no info within the budget (--stt-timeout) after describe".into())),
            Err(f) => return Err(unavailable(f.cause)),
        };
        let asr = info.data.get("asr").and_then(Value::as_array).cloned().unwrap_or_default();
        if asr.is_empty() {
            return Err(fail(
                exit::UNAVAILABLE,
                format!("{server} offers no speech-to-text (its info lists no asr program); point --stt-url at a Wyoming ASR service such as wyoming-faster-whisper"),
            ));
        }
        for program in &asr {
            let name = program.get("name").and_then(Value::as_str).unwrap_or("?");
            let models: Vec<&str> = program.get("models").and_then(Value::as_array).map(|m| m.iter().filter_map(|m| m.get("name")?.as_str()).collect()).unwrap_or_default();
            engine.models.push(if models.is_empty() { name.to_string() } else { format!("{name}: {}", models.join(", ")) });
        }
        engine.conn = Some(conn);
        Ok(engine)
    }

    fn server(&self) -> String {
        format!("Wyoming speech-to-text service {}", self.settings.url)
    }

    fn open(&self, budget: &Budget) -> Result<Conn, Failure> {
        let wait = budget.left().max(Duration::from_millis(1)).min(Duration::from_secs(3));
        let stream = TcpStream::connect_timeout(&self.addr, wait).map_err(|e| Failure::retry(format!("cannot connect: {e}")))?;
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(wire::ABORT_POLL)).map_err(|e| Failure::retry(e.to_string()))?;
        Ok(Conn { stream, decoder: Decoder::default() })
    }

    /// The kept connection if the service has not closed it since, else a new one.
    fn connection(&mut self, budget: &Budget) -> Result<Conn, Failure> {
        if let Some(c) = self.conn.take() {
            if c.still_open() {
                return Ok(c);
            }
            log::debug!("{}: the connection was closed since the last turn; connecting again", self.server());
        }
        self.open(budget)
    }

    fn attempt(&mut self, audio: &[i16], budget: &Budget) -> Attempt {
        let mut conn = match self.connection(budget) {
            Ok(c) => c,
            Err(f) => return Attempt::Failed(f),
        };
        let mut transcribe = json!({});
        if let Some(l) = &self.settings.language {
            transcribe["language"] = l.as_str().into();
        }
        if let Some(m) = &self.settings.model {
            transcribe["name"] = m.as_str().into();
        }
        let format = json!({ "rate": SAMPLE_RATE, "width": 2, "channels": 1 });
        let mut events = vec![Event::new("transcribe", transcribe), Event::new("audio-start", format.clone())];
        for chunk in audio.chunks(CHUNK_SAMPLES) {
            let mut e = Event::new("audio-chunk", format.clone());
            e.payload = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
            events.push(e);
        }
        events.push(Event::new("audio-stop", json!({})));
        let sent = conn.send(&events, budget);
        let result = sent.and_then(|_| conn.read_until(&["transcript", "error"], budget));
        match result {
            Ok(Some(e)) if e.kind == "transcript" => {
                let text = e.data.get("text").and_then(Value::as_str).map(str::to_string);
                match text {
                    Some(t) => {
                        self.conn = Some(conn);
                        Attempt::Text(t)
                    }
                    None => Attempt::Failed(Failure::fatal(format!("a transcript without text: {}", e.data))),
                }
            }
            Ok(Some(e)) => Attempt::Failed(Failure::fatal(format!(
                "the service answered error: {} ({})",
                e.data.get("text").and_then(Value::as_str).unwrap_or("no text"),
                e.data.get("code").and_then(Value::as_str).unwrap_or("no code")
            ))),
            Ok(None) if budget.aborted() => Attempt::Aborted,
            Ok(None) => Attempt::TimedOut,
            Err(f) => Attempt::Failed(f),
        }
    }

    pub fn transcribe(&mut self, samples: &[f32], abort: Option<Arc<AtomicBool>>) -> anyhow::Result<Transcription> {
        let (server, timeout) = (self.server(), self.settings.timeout);
        wire::transcribe_with_retry(&server, timeout, samples, abort, |audio, budget| self.attempt(audio, budget))
    }

    pub fn describe(&self) -> String {
        format!("{} ({}; budget {:.1} s a decode)", self.server(), self.models.join("; "), self.settings.timeout.as_secs_f64())
    }
}

impl Conn {
    /// Has the peer not closed the connection (nor sent anything unasked)?
    fn still_open(&self) -> bool {
        if !self.decoder.buf.is_empty() || self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let open = matches!(self.stream.peek(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock);
        open && self.stream.set_nonblocking(false).is_ok()
    }

    fn send(&mut self, events: &[Event], budget: &Budget) -> Result<(), Failure> {
        let bytes: Vec<u8> = events.iter().flat_map(Event::encode).collect();
        self.stream.set_write_timeout(Some(budget.left().max(Duration::from_millis(1)))).ok();
        self.stream.write_all(&bytes).map_err(|e| Failure::retry(format!("the connection failed while sending the audio: {e}")))
    }

    /// Read events until one of `kinds` (others are skipped); `Ok(None)` when the budget ran
    /// out or the decode was aborted first.
    fn read_until(&mut self, kinds: &[&str], budget: &Budget) -> Result<Option<Event>, Failure> {
        let mut buf = [0u8; 16384];
        loop {
            while let Some(e) = self.decoder.next().map_err(Failure::fatal)? {
                if kinds.contains(&e.kind.as_str()) {
                    return Ok(Some(e));
                }
                log::debug!("Wyoming: skipping a {} event", e.kind);
            }
            if budget.aborted() || Instant::now() >= budget.deadline {
                return Ok(None);
            }
            match self.stream.read(&mut buf) {
                Ok(0) if self.decoder.buf.is_empty() => return Err(Failure::retry("the service closed the connection before the transcript")),
                Ok(0) => return Err(Failure::retry(format!("the service closed the connection mid-event ({} bytes of it came)", self.decoder.buf.len()))),
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => return Err(Failure::retry(format!("the connection failed: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_data_blocks_and_payloads() {
        let mut chunk = Event::new("audio-chunk", json!({ "rate": 16000, "width": 2, "channels": 1 }));
        chunk.payload = vec![1, 2, 3, 4];
        let stop = Event::new("audio-stop", json!({}));
        let mut d = Decoder::default();
        let bytes: Vec<u8> = [chunk.encode(), stop.encode()].concat();
        // Byte by byte: a whole event only once its last byte is in.
        let mut out = vec![];
        for b in &bytes {
            d.push(std::slice::from_ref(b));
            while let Some(e) = d.next().unwrap() {
                out.push(e);
            }
        }
        assert_eq!(out, [chunk, stop]);
        let header: Value = serde_json::from_slice(bytes.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(header, json!({ "type": "audio-chunk", "version": PROTOCOL_VERSION, "data_length": serde_json::to_vec(&out[0].data).unwrap().len(), "payload_length": 4 }));
    }

    #[test]
    fn inline_data_is_merged_with_the_data_block_and_garbage_is_an_error() {
        let mut d = Decoder::default();
        d.push(b"{\"type\":\"transcript\",\"data\":{\"text\":\"old\",\"language\":\"en\"},\"data_length\":14}\n{\"text\":\"new\"}");
        assert_eq!(d.next().unwrap().unwrap().data, json!({ "text": "new", "language": "en" }));
        d.push(b"HTTP/1.1 400 Bad Request\r\n");
        assert!(d.next().unwrap_err().contains("not a Wyoming event"));
    }

    #[test]
    fn the_url_must_be_tcp_host_port() {
        assert_eq!(host_port("tcp://127.0.0.1:10300").unwrap(), "127.0.0.1:10300");
        for bad in ["http://127.0.0.1:10300", "tcp://127.0.0.1", "tcp://:10300", "tcp://h:port"] {
            assert!(host_port(bad).unwrap_err().contains("tcp://"), "{bad}");
        }
    }
}

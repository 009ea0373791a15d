//! [`WyomingEngine`]: a speech-to-text service speaking Home Assistant's Wyoming protocol over
//! TCP (wyoming-faster-whisper on port 10300, and the other `wyoming-*` ASR services), as a
//! [`crate::worker::Transcriber`].
//!
//! The events are framed by the shared codec ([`tgvoice::wyoming`]). At start sttd sends
//! `describe` and reads `info` (its `asr` programs and their models; none is an error). A decode sends `transcribe` {language}, `audio-start`
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
use tgvoice::wyoming::{Decoder, Event};

/// Samples in one audio-chunk: 100 ms.
const CHUNK_SAMPLES: usize = SAMPLE_RATE as usize / 10;

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
            events.push(Event::new("audio-chunk", format.clone()).with_payload(chunk.iter().flat_map(|s| s.to_le_bytes()).collect()));
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
                    None => Attempt::Failed(Failure::fatal(format!("a transcript without text: {}", Value::Object(e.data)))),
                }
            }
            Ok(Some(e)) => Attempt::Failed(Failure::fatal(format!(
                "the service answered error: {} ({})",
                Some(e.text("text")).filter(|t| !t.is_empty()).unwrap_or("no text"),
                Some(e.text("code")).filter(|t| !t.is_empty()).unwrap_or("no code")
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
        if !self.decoder.buffered() == 0 || self.stream.set_nonblocking(true).is_err() {
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
                Ok(0) if self.decoder.buffered() == 0 => return Err(Failure::retry("the service closed the connection before the transcript")),
                Ok(0) => return Err(Failure::retry(format!("the service closed the connection mid-event ({} bytes of it came)", self.decoder.buffered()))),
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
    fn the_url_must_be_tcp_host_port() {
        assert_eq!(host_port("tcp://127.0.0.1:10300").unwrap(), "127.0.0.1:10300");
        for bad in ["http://127.0.0.1:10300", "tcp://127.0.0.1", "tcp://:10300", "tcp://h:port"] {
            assert!(host_port(bad).unwrap_err().contains("tcp://"), "{bad}");
        }
    }
}

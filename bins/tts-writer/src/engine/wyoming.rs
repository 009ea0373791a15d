//! `--engine wyoming --tts-url tcp://HOST:PORT`: a Wyoming text-to-speech service (Home
//! Assistant's protocol; wyoming-piper listens on 10200).
//!
//! Events are framed by the shared codec ([`tgvoice::wyoming`]). At start `describe` →
//! `info` (the voices are logged); each chunk is `synthesize {text, voice: {name}}` → `audio-start {rate, width, channels}`,
//! `audio-chunk` (PCM payload) …, `audio-stop`, the chunks handed on as they come. One
//! connection is kept between replies; one that the service closed (it restarted) is
//! replaced once. A barge-in closes the connection.

use super::wire::{self, PcmStream};
use super::{Audio, SpeechEngine};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};
use tgvoice::cli::{exit, fail};
use tgvoice::wyoming::{Decoder, Event};

struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    /// The last wait ended for want of an answer (a slow service is not asked twice).
    timed_out: bool,
}

impl Conn {
    fn open(addr: &SocketAddr, timeout: Duration) -> Result<Conn> {
        let stream = TcpStream::connect_timeout(addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(wire::POLL))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn { stream, decoder: Decoder::default(), timed_out: false })
    }

    fn send(&mut self, kind: &str, data: &Value) -> std::io::Result<()> {
        self.stream.write_all(&Event::new(kind, data.clone()).encode())
    }

    /// The next event; `None` when `emit` said the reply is no longer wanted. Fails when the
    /// service sends nothing for `timeout`, closes the connection, or sends garbage.
    fn next(&mut self, timeout: Duration, emit: &mut dyn FnMut(Audio) -> bool) -> Result<Option<Event>> {
        let mut last = Instant::now();
        let mut tmp = [0u8; 16384];
        if !wire::still_wanted(emit) {
            return Ok(None);
        }
        loop {
            if let Some(ev) = self.decoder.next().map_err(|e| anyhow!(e))? {
                return Ok(Some(ev));
            }
            match self.stream.read(&mut tmp) {
                Ok(0) => bail!("the service closed the connection{}", if self.decoder.buffered() == 0 { "" } else { " in the middle of an event" }),
                Ok(n) => {
                    self.decoder.push(&tmp[..n]);
                    last = Instant::now();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                    if !wire::still_wanted(emit) {
                        return Ok(None);
                    }
                    if last.elapsed() >= timeout {
                        self.timed_out = true;
                        bail!("nothing from the service for {} ms (--tts-timeout)", timeout.as_millis());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

pub struct WyomingEngine {
    url: String,
    addr: SocketAddr,
    voice: Option<String>,
    timeout: Duration,
    conn: Option<Conn>,
    label: String,
}

impl WyomingEngine {
    /// Connect, ask `describe`, log the voices `info` lists; fail (exit 69) when the service
    /// cannot be reached, offers no voice, or not `voice`.
    pub fn connect(url: &str, voice: Option<String>, timeout: Duration) -> Result<WyomingEngine> {
        let hostport = url.strip_prefix("tcp://").ok_or_else(|| {
            fail(exit::USAGE, format!("--tts-url {url:?}: the Wyoming engine needs tcp://HOST:PORT (wyoming-piper listens on tcp://127.0.0.1:10200)"))
        })?;
        let addr = hostport
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| fail(exit::USAGE, format!("--tts-url {url:?}: cannot resolve {hostport:?} (HOST:PORT)")))?;
        let unreachable = |e: anyhow::Error| fail(exit::UNAVAILABLE, format!("Wyoming service at {url}: {e:#}; start it (e.g. wyoming-piper --uri tcp://127.0.0.1:10200 …) or fix --tts-url"));
        let mut conn = Conn::open(&addr, timeout).map_err(|e| unreachable(e))?;
        conn.send("describe", &json!({})).map_err(|e| unreachable(e.into()))?;
        let info = loop {
            match conn.next(timeout, &mut |_| true).map_err(|e| unreachable(e.context("no answer to describe")))? {
                Some(ev) if ev.kind == "info" => break ev,
                Some(_) => continue,
                None => unreachable!("nothing cancels at start"),
            }
        };
        let voices: Vec<String> = info
            .data
            .get("tts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|p| p.get("voices").and_then(Value::as_array).cloned().unwrap_or_default())
            .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        if voices.is_empty() {
            return Err(fail(exit::UNAVAILABLE, format!("the Wyoming service at {url} offers no text-to-speech voice (is it a speech-to-text service?)")));
        }
        let shown = voices.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
        log::info!("Wyoming service at {url}: {} voice(s): {shown}{}", voices.len(), if voices.len() > 8 { ", …" } else { "" });
        if let Some(v) = &voice {
            if !voices.contains(v) {
                return Err(fail(exit::UNAVAILABLE, format!("the Wyoming service at {url} has no voice {v:?}; it offers: {shown}")));
            }
        }
        let label = format!("wyoming {url} ({})", voice.as_deref().unwrap_or("its default voice"));
        Ok(WyomingEngine { url: url.to_string(), addr, voice, timeout, conn: Some(conn), label })
    }

    /// Send `synthesize` and wait for its first event; a kept connection the service closed
    /// meanwhile (it restarted) is replaced once.
    fn start(&mut self, text: &str, emit: &mut dyn FnMut(Audio) -> bool) -> Result<Option<Event>> {
        let mut data = json!({ "text": text });
        if let Some(v) = &self.voice {
            data["voice"] = json!({ "name": v });
        }
        loop {
            let reused = self.conn.is_some();
            if self.conn.is_none() {
                self.conn = Some(Conn::open(&self.addr, self.timeout).context("cannot connect")?);
            }
            let conn = self.conn.as_mut().expect("set above");
            let first = conn.send("synthesize", &data).map_err(anyhow::Error::from).and_then(|_| conn.next(self.timeout, emit));
            match first {
                Err(e) if reused && !conn.timed_out => {
                    log::info!("Wyoming service at {}: the kept connection is gone ({e:#}); reconnecting", self.url);
                    self.conn = None;
                }
                other => return other,
            }
        }
    }
}

impl SpeechEngine for WyomingEngine {
    fn name(&self) -> &str {
        &self.label
    }

    fn synthesize(&mut self, text: &str, emit: &mut dyn FnMut(Audio) -> bool) -> Result<()> {
        let mut pcm = None;
        let result = self.speak(text, &mut pcm, emit);
        if let (Err(_), Some(p)) = (&result, &mut pcm) {
            p.flush(emit); // what came before the failure is played
        }
        if matches!(result, Ok(false)) {
            log::info!("reply cancelled: closed the connection to the Wyoming service at {}", self.url);
        }
        if !matches!(result, Ok(true)) {
            // cancelled or failed: this connection is in the middle of something; close it
            self.conn = None;
        }
        result.map(|_| ()).with_context(|| format!("Wyoming service at {}", self.url))
    }
}

impl WyomingEngine {
    /// Ok(true) when the audio ended with `audio-stop`, Ok(false) when cancelled.
    fn speak(&mut self, text: &str, pcm: &mut Option<PcmStream>, emit: &mut dyn FnMut(Audio) -> bool) -> Result<bool> {
        let mut next = self.start(text, emit)?;
        loop {
            let Some(ev) = next else { return Ok(false) };
            let format = |d: &Map<String, Value>| -> Result<PcmStream> {
                let get = |k: &str| d.get(k).and_then(Value::as_u64).ok_or_else(|| anyhow!("{} without {k}", ev.kind));
                PcmStream::new(get("rate")? as u32, get("width")? as u16, get("channels")? as u16)
            };
            match ev.kind.as_str() {
                "audio-start" => *pcm = Some(format(&ev.data)?),
                "audio-chunk" => {
                    if pcm.is_none() {
                        *pcm = Some(format(&ev.data)?);
                    }
                    if !pcm.as_mut().expect("set above").push(&ev.payload, emit) {
                        return Ok(false);
                    }
                }
                "audio-stop" => {
                    let Some(pcm) = pcm else { bail!("audio-stop before any audio") };
                    if !pcm.flush(emit) {
                        return Ok(false);
                    }
                    if pcm.emitted == 0 {
                        bail!("no audio for the text");
                    }
                    return Ok(true);
                }
                "error" => {
                    let said = ev.data.get("text").and_then(Value::as_str).unwrap_or("");
                    let code = ev.data.get("code").and_then(Value::as_str).unwrap_or("");
                    bail!("the service said: {} ({code})", tgvoice::log::snippet(said.as_bytes(), 160));
                }
                _ => {} // e.g. synthesize-stopped, ping: not ours to answer
            }
            next = self.conn.as_mut().expect("open while speaking").next(self.timeout, emit)?;
        }
    }
}

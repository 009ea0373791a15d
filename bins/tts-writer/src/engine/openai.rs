//! `--engine openai`: an OpenAI-compatible speech server (OpenAI, Kokoro-FastAPI, LocalAI,
//! openedai-speech). `POST {base}/audio/speech` with `{model, input, voice, response_format,
//! speed?}`; the answer (raw s16le mono for `pcm`, or WAV) is handed on as it arrives.
//!
//! reqwest (async, rustls; the client llm-relay uses) on a current-thread Tokio runtime owned by
//! the engine: waiting for the answer and for each piece of the body is raced against a 20 ms
//! tick that asks whether the reply is still wanted, so a barge-in drops the request (the
//! connection is closed, the server sees it) within a tick, and a server that stops sending
//! for `timeout` ends the chunk with one log line.

use super::wire::{self, PcmStream, Secret};
use super::{Audio, SpeechEngine};
use anyhow::{anyhow, bail, Context, Result};
use std::future::Future;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WireFormat {
    /// Raw s16le mono at --tts-rate (OpenAI's is 24 kHz).
    Pcm,
    /// WAV; the rate comes from its header.
    Wav,
}

impl WireFormat {
    fn name(self) -> &'static str {
        match self {
            WireFormat::Pcm => "pcm",
            WireFormat::Wav => "wav",
        }
    }
}

pub struct OpenAiSettings {
    /// The API base, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8880/v1`.
    pub base: String,
    pub model: String,
    pub voice: String,
    pub format: WireFormat,
    /// The rate of `pcm` answers.
    pub pcm_rate: u32,
    pub speed: Option<f32>,
    pub key: Option<Secret>,
    /// Longest wait for the connection, the answer, or the next piece of audio.
    pub timeout: Duration,
}

pub struct OpenAiEngine {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    url: String,
    s: OpenAiSettings,
    label: String,
}

/// Why a wait ended without its result.
enum Waited<T> {
    Done(T),
    Cancelled,
}

impl OpenAiEngine {
    pub fn new(s: OpenAiSettings) -> Result<OpenAiEngine> {
        let base = s.base.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--tts-url {base:?} is not an http:// or https:// URL (e.g. http://127.0.0.1:8880/v1)");
        }
        let url = format!("{base}/audio/speech");
        // One worker: the connection tasks run there, so a dropped response closes its
        // connection at once (on a current-thread runtime it would wait for the next request).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tts-http")
            .enable_all()
            .build()
            .context("cannot start the HTTP runtime")?;
        let client = reqwest::Client::builder().connect_timeout(s.timeout).build().context("cannot build the HTTP client")?;
        let label = format!("openai {url} ({}, {}, {})", s.model, s.voice, s.format.name());
        Ok(OpenAiEngine { rt, client, url, s, label })
    }
}

/// Wait for `fut`, asking `emit` every [`wire::POLL`] whether the reply is still wanted, for at
/// most `timeout` (`what` names the wait in the error).
async fn polled<T, F: Future<Output = T>>(fut: F, emit: &mut dyn FnMut(Audio) -> bool, timeout: Duration, what: &str) -> Result<Waited<T>> {
    if !wire::still_wanted(emit) {
        return Ok(Waited::Cancelled); // asked before each wait: a busy stream is no excuse
    }
    let start = Instant::now();
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Ok(Waited::Done(out)),
            _ = tokio::time::sleep(wire::POLL) => {
                if !wire::still_wanted(emit) {
                    return Ok(Waited::Cancelled);
                }
                if start.elapsed() >= timeout {
                    bail!("no {what} within {} ms (--tts-timeout)", timeout.as_millis());
                }
            }
        }
    }
}

impl SpeechEngine for OpenAiEngine {
    fn name(&self) -> &str {
        &self.label
    }

    fn synthesize(&mut self, text: &str, emit: &mut dyn FnMut(Audio) -> bool) -> Result<()> {
        let s = &self.s;
        let mut body = serde_json::json!({ "model": s.model, "input": text, "voice": s.voice, "response_format": s.format.name() });
        if let Some(speed) = s.speed {
            body["speed"] = speed.into();
        }
        let mut req = self.client.post(&self.url).json(&body);
        if let Some(key) = &s.key {
            req = req.bearer_auth(key.expose());
        }
        let url = &self.url;
        let mut pcm: Option<PcmStream> = None;
        let result = self.rt.block_on(stream(req, s, url, &mut pcm, emit));
        match result {
            Ok(true) => Ok(()),
            Ok(false) => {
                log::info!("reply cancelled: dropped the request to {url}");
                Ok(())
            }
            Err(e) => {
                // what came before the failure is played
                if let Some(p) = &mut pcm {
                    p.flush(emit);
                }
                Err(e)
            }
        }
    }
}

/// Send the request and hand on its audio as it arrives: Ok(false) when the reply was
/// cancelled on the way (the response is dropped, which closes the connection).
async fn stream(req: reqwest::RequestBuilder, s: &OpenAiSettings, url: &str, pcm: &mut Option<PcmStream>, emit: &mut dyn FnMut(Audio) -> bool) -> Result<bool> {
    let mut resp = match polled(req.send(), emit, s.timeout, "answer").await.with_context(|| format!("POST {url}"))? {
        Waited::Cancelled => return Ok(false),
        Waited::Done(r) => r.map_err(|e| anyhow!("POST {url}: {}", one_line(&e)))?,
    };
    let status = resp.status();
    if !status.is_success() {
        // The server's own words, if they come soon.
        let said = match tokio::time::timeout(s.timeout, resp.bytes()).await {
            Ok(Ok(b)) => tgvoice::log::snippet(&b, 160),
            _ => String::new(),
        };
        bail!("HTTP {status} from {url}: {said}");
    }
    let ctype = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if ctype.starts_with("text/") || ctype.contains("json") {
        let b = tokio::time::timeout(s.timeout, resp.bytes()).await.ok().and_then(|r| r.ok()).unwrap_or_default();
        bail!("{url} answered with {ctype}, not audio: {}", tgvoice::log::snippet(&b, 160));
    }
    if s.format == WireFormat::Pcm {
        *pcm = Some(PcmStream::new(s.pcm_rate, 2, 1)?);
    }
    let mut head = vec![];
    let mut left: Option<usize> = None;
    loop {
        let piece = match polled(resp.chunk(), emit, s.timeout, "audio from the server").await.with_context(|| format!("{url} stalled"))? {
            Waited::Cancelled => return Ok(false),
            Waited::Done(r) => r.map_err(|e| anyhow!("{url} broke off the audio: {}", one_line(&e)))?,
        };
        let Some(mut bytes) = piece else { break };
        if pcm.is_none() {
            head.extend_from_slice(&bytes);
            let Some(start) = wire::wav_start(&head).with_context(|| format!("{url} answered"))? else { continue };
            *pcm = Some(PcmStream::new(start.rate, start.width, start.channels).with_context(|| format!("{url} answered"))?);
            left = start.data_len;
            bytes = head.split_off(start.data_at).into();
        }
        if let Some(n) = &mut left {
            bytes.truncate(*n);
            *n -= bytes.len();
        }
        if !pcm.as_mut().expect("set above").push(&bytes, emit) {
            return Ok(false);
        }
    }
    let Some(p) = pcm else { bail!("{url} ended before its WAV header was complete: {}", tgvoice::log::snippet(&head, 160)) };
    if !p.flush(emit) {
        return Ok(false);
    }
    if p.emitted == 0 {
        bail!("{url} answered with no audio");
    }
    Ok(true)
}

/// A reqwest error with its causes, on one line.
fn one_line(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

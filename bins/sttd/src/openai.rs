//! [`OpenAiEngine`]: an OpenAI-compatible speech-to-text server (`POST {base}/audio/transcriptions`:
//! OpenAI, Groq, speaches/faster-whisper-server, LocalAI, whisper.cpp's `server` with
//! `--inference-path /v1/audio/transcriptions`), as a [`crate::worker::Transcriber`].
//!
//! Each decode is one request: the turn's audio as a 16 kHz mono 16-bit WAV in a
//! multipart/form-data body (`file`, `model`, `language`, `prompt`, `response_format=json`),
//! answered by `{"text": ...}`. The request runs on a single-threaded tokio runtime owned by
//! the worker thread, raced against the budget and the abort flag: a decode superseded or out
//! of time drops the request and the runtime that ran its connection, so the connection is
//! closed at once (the server sees the client go).
//! The rules of the budget and the retry are [`crate::wire`]'s.

use crate::engine::Transcription;
use crate::wire::{self, Attempt, Budget, Failure};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tgvoice::cli::{exit, fail};

/// The settings `--engine openai` takes from the command line.
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// The API's base URL (`http://127.0.0.1:8000/v1`); the request goes to `{base}/audio/transcriptions`.
    pub base_url: String,
    pub model: String,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub timeout: Duration,
}

pub struct OpenAiEngine {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    endpoint: String,
    settings: OpenAiSettings,
    key: Option<String>,
}

/// The multipart body's boundary: not a byte sequence a WAV of speech or the form's text
/// fields contain by chance (the fields are checked).
const BOUNDARY: &str = "tgvoice-sttd-7d1f0c9e4b2a4f3c8e6a";

impl OpenAiEngine {
    pub fn new(settings: OpenAiSettings, key: Option<String>) -> anyhow::Result<Self> {
        check_url(&settings.base_url).map_err(|e| fail(exit::USAGE, e))?;
        let base = settings.base_url.trim_end_matches('/');
        for (name, v) in [("--stt-model", Some(&settings.model)), ("--language", settings.language.as_ref()), ("--prompt", settings.prompt.as_ref())] {
            if v.is_some_and(|v| v.contains(BOUNDARY) || v.contains('\r')) {
                return Err(fail(exit::USAGE, format!("{name}: a carriage return cannot be sent in a form field")));
            }
        }
        let (rt, client) = runtime_and_client(settings.timeout)?;
        Ok(OpenAiEngine { rt, client, endpoint: format!("{base}/audio/transcriptions"), settings, key })
    }

    /// A new runtime and client for the next request: the old runtime is dropped, and with it
    /// every task it still had, so the connection of a request given up on is closed now
    /// (hyper runs a connection as a task of the runtime, which only runs inside `block_on`:
    /// left alone, that socket would stay open until the next turn).
    fn close_connections(&mut self) {
        match runtime_and_client(self.settings.timeout) {
            Ok((rt, client)) => {
                self.client = client;
                drop(std::mem::replace(&mut self.rt, rt));
            }
            Err(e) => log::warn!("cannot make a new HTTP client ({e:#}); the old one's connection stays open"),
        }
    }

    /// The form, as OpenAI's API documents it.
    fn body(&self, wav: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(wav.len() + 1024);
        let mut field = |name: &str, value: &str| {
            b.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
        };
        field("model", &self.settings.model);
        if let Some(l) = &self.settings.language {
            field("language", l);
        }
        if let Some(p) = &self.settings.prompt {
            field("prompt", p);
        }
        field("response_format", "json");
        b.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"turn.wav\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes());
        b.extend_from_slice(wav);
        b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        b
    }

    async fn request(&self, body: Vec<u8>) -> Result<String, Failure> {
        let mut req = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"))
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| Failure::retry(cause(&e)))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| Failure::retry(format!("HTTP {status}, then the answer broke off: {}", cause(&e))))?;
        if !status.is_success() {
            let f = format!("HTTP {status}: {}", tgvoice::log::snippet(&bytes, 160));
            return Err(if status.is_server_error() { Failure::retry(f) } else { Failure::fatal(f) });
        }
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Failure::fatal(format!("HTTP {status} but not JSON ({e}): {}", tgvoice::log::snippet(&bytes, 160))))?;
        match json.get("text").and_then(|t| t.as_str()) {
            Some(text) => Ok(text.to_string()),
            None => Err(Failure::fatal(format!("HTTP {status} but no \"text\" in the JSON: {}", tgvoice::log::snippet(&bytes, 160)))),
        }
    }

    fn attempt(&mut self, audio: &[i16], budget: &Budget) -> Attempt {
        let body = self.body(&wire::wav_bytes(audio));
        let attempt = self.rt.block_on(async {
            let abort = async {
                while !budget.aborted() {
                    tokio::time::sleep(wire::ABORT_POLL).await;
                }
            };
            // Whichever ends first; the others (the request among them) are dropped here.
            tokio::select! {
                r = self.request(body) => match r {
                    Ok(text) => Attempt::Text(text),
                    Err(f) => Attempt::Failed(f),
                },
                _ = tokio::time::sleep_until(budget.deadline.into()) => Attempt::TimedOut,
                _ = abort => Attempt::Aborted,
            }
        });
        if matches!(attempt, Attempt::TimedOut | Attempt::Aborted) {
            self.close_connections();
        }
        attempt
    }

    pub fn transcribe(&mut self, samples: &[f32], abort: Option<Arc<AtomicBool>>) -> anyhow::Result<Transcription> {
        let (server, timeout) = (format!("speech-to-text server {}", self.endpoint), self.settings.timeout);
        wire::transcribe_with_retry(&server, timeout, samples, abort, |audio, budget| self.attempt(audio, budget))
    }

    pub fn describe(&self) -> String {
        format!(
            "OpenAI-compatible server {} (model {}, {}, budget {:.1} s a decode)",
            self.endpoint,
            self.settings.model,
            if self.key.is_some() { "with an API key" } else { "no API key" },
            self.settings.timeout.as_secs_f64()
        )
    }
}

/// Is `base` an http(s) URL? The message says what is expected if not.
pub fn check_url(base: &str) -> Result<(), String> {
    let base = base.trim_end_matches('/');
    let url = reqwest::Url::parse(base)
        .map_err(|e| format!("--stt-url {base:?}: {e}; expected the API's base URL, such as http://127.0.0.1:8000/v1 or https://api.openai.com/v1"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("--stt-url {base:?}: --engine openai speaks HTTP; expected http:// or https:// (tcp:// is for --engine wyoming)"));
    }
    Ok(())
}

fn runtime_and_client(timeout: Duration) -> anyhow::Result<(tokio::runtime::Runtime, reqwest::Client)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = {
        let _in_rt = rt.enter();
        reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            // One connection is kept between turns; a cancelled request's is closed.
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!("tgvoice-sttd/", env!("CARGO_PKG_VERSION")))
            .build()?
    };
    Ok((rt, client))
}

/// reqwest's error and its causes on one line ("error sending request: … Connection refused").
fn cause(e: &reqwest::Error) -> String {
    let mut parts = vec![if e.is_connect() { "cannot connect".to_string() } else { e.to_string() }];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !parts.iter().any(|p| p.contains(&s_text)) {
            parts.push(s_text);
        }
        source = s.source();
    }
    // The URL reqwest adds is the server's, already named by the caller.
    parts.join(": ").replace(&format!(" for url ({})", e.url().map(|u| u.as_str()).unwrap_or("")), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_has_every_field_and_the_wav_between_boundaries() {
        let settings = OpenAiSettings {
            base_url: "http://127.0.0.1:9/v1/".into(),
            model: "whisper-1".into(),
            language: Some("en".into()),
            prompt: Some("Zanzibar".into()),
            timeout: Duration::from_secs(1),
        };
        let e = OpenAiEngine::new(settings, None).unwrap();
        assert_eq!(e.endpoint, "http://127.0.0.1:9/v1/audio/transcriptions");
        let body = String::from_utf8_lossy(&e.body(b"RIFFxxxx")).to_string();
        for part in ["name=\"model\"\r\n\r\nwhisper-1\r\n", "name=\"language\"\r\n\r\nen\r\n", "name=\"prompt\"\r\n\r\nZanzibar\r\n", "name=\"response_format\"\r\n\r\njson\r\n", "filename=\"turn.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFFxxxx\r\n"] {
            assert!(body.contains(part), "{part:?} missing from {body:?}");
        }
        assert!(body.ends_with(&format!("--{BOUNDARY}--\r\n")));
        let wyoming_url = OpenAiSettings { base_url: "tcp://127.0.0.1:10300".into(), ..e.settings.clone() };
        assert!(OpenAiEngine::new(wyoming_url, None).err().unwrap().to_string().contains("--engine wyoming"));
    }
}

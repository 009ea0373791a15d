//! The two LLM wire protocols: building a streaming request and reading its SSE events.
//!
//! * Anthropic Messages API (`POST {base}/v1/messages`, `stream: true`, headers `x-api-key`,
//!   `anthropic-version`): events `message_start`, `content_block_start`,
//!   `content_block_delta` (`text_delta`), `content_block_stop`, `message_delta`,
//!   `message_stop`, `ping`, `error`.
//! * OpenAI-compatible Chat Completions (`POST {base}/chat/completions`, `stream: true`):
//!   `data: {chunk}` lines with `choices[0].delta.content`, ending with `data: [DONE]`. Covers
//!   OpenAI, Ollama, llama.cpp server, LM Studio and vLLM.
//!
//! SSE framing itself is parsed by the `eventsource-stream` crate (see `stream.rs`).

use serde_json::{json, Value};

pub const ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Anthropic,
    OpenAi,
}

/// Who said a message in the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    pub text: String,
}

/// Everything needed to talk to one provider.
#[derive(Clone)]
pub struct Provider {
    pub kind: ProviderKind,
    /// Anthropic: the API root (`https://api.anthropic.com`); OpenAI: the `/v1` root.
    pub base_url: String,
    pub api_key: Option<String>,
    /// Empty: ask the server (`GET {base}/models`) before the first request, see [`Self::with_model`].
    pub model: String,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
    pub system_prompt: String,
    /// The model a server without a configured one said it serves, asked once.
    pub served_model: std::sync::Arc<std::sync::OnceLock<String>>,
}

impl std::fmt::Debug for Provider {
    // Never print the API key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("model", &self.model)
            .finish()
    }
}

/// What one SSE event means for the reply.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    Text(String),
    Done,
    Ignore,
}

/// An error reported inside the stream (or a stream we cannot understand).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamError {
    pub message: String,
    pub retryable: bool,
    pub malformed: bool,
}

impl Provider {
    pub fn url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        match self.kind {
            ProviderKind::Anthropic => format!("{base}/v1/messages"),
            ProviderKind::OpenAi => format!("{base}/chat/completions"),
        }
    }

    pub fn describe(&self) -> String {
        let kind = match self.kind {
            ProviderKind::Anthropic => "Anthropic Messages API",
            ProviderKind::OpenAi => "OpenAI-compatible Chat Completions",
        };
        let model = if self.model.is_empty() { "the first one it lists" } else { &self.model };
        format!("{kind} at {} (model {model})", self.url())
    }

    /// This provider with a model to name: its own, else the one its server lists first at
    /// `GET {base}/models` (asked once; OpenAI, Ollama, LM Studio, vLLM and llama.cpp's
    /// server all answer it). The error is one line saying what to set.
    pub async fn with_model(&self, client: &reqwest::Client) -> Result<Provider, String> {
        if !self.model.is_empty() {
            return Ok(self.clone());
        }
        let model = match self.served_model.get() {
            Some(m) => m.clone(),
            None => {
                let url = format!("{}/models", self.base_url.trim_end_matches('/'));
                let mut req = client.get(&url);
                if let Some(key) = &self.api_key {
                    req = req.bearer_auth(key);
                }
                let what = |e: String| format!("cannot learn the model from {url} ({e}); set TGVOICE_LLM_MODEL or --model");
                let resp = req.send().await.map_err(|e| what(e.to_string()))?;
                if !resp.status().is_success() {
                    return Err(what(format!("HTTP {}", resp.status())));
                }
                let list: Value = resp.json().await.map_err(|e| what(e.to_string()))?;
                let first = list["data"].get(0).and_then(|m| m["id"].as_str()).or_else(|| list["models"].get(0).and_then(|m| m["name"].as_str()));
                let model = first.ok_or_else(|| what("it lists no model".into()))?.to_string();
                log::info!("{url} serves {model:?}; using it");
                self.served_model.get_or_init(|| model).clone()
            }
        };
        Ok(Provider { model, ..self.clone() })
    }

    /// The JSON body of a streaming request for `messages` (oldest first).
    pub fn body(&self, messages: &[ChatMessage]) -> Value {
        match self.kind {
            ProviderKind::Anthropic => {
                let msgs: Vec<Value> =
                    messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.text})).collect();
                let mut body = json!({
                    "model": self.model,
                    "max_tokens": self.max_tokens,
                    "stream": true,
                    "messages": msgs,
                });
                if !self.system_prompt.is_empty() {
                    body["system"] = json!(self.system_prompt);
                }
                if let Some(t) = self.temperature {
                    body["temperature"] = json!(t);
                }
                body
            }
            ProviderKind::OpenAi => {
                let mut msgs = vec![];
                if !self.system_prompt.is_empty() {
                    msgs.push(json!({"role": "system", "content": self.system_prompt}));
                }
                msgs.extend(messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.text})));
                let mut body = json!({
                    "model": self.model,
                    "max_tokens": self.max_tokens,
                    "stream": true,
                    "messages": msgs,
                });
                if let Some(t) = self.temperature {
                    body["temperature"] = json!(t);
                }
                body
            }
        }
    }

    pub fn request(&self, client: &reqwest::Client, messages: &[ChatMessage]) -> reqwest::RequestBuilder {
        let mut req = client
            .post(self.url())
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(self.body(messages).to_string());
        match self.kind {
            ProviderKind::Anthropic => {
                req = req.header("anthropic-version", ANTHROPIC_VERSION);
                if let Some(key) = &self.api_key {
                    req = req.header("x-api-key", key);
                }
            }
            ProviderKind::OpenAi => {
                if let Some(key) = &self.api_key {
                    req = req.bearer_auth(key);
                }
            }
        }
        req
    }

    /// Interpret one SSE event (`event:` name and `data:` payload).
    pub fn parse_event(&self, event: &str, data: &str) -> Result<StreamItem, StreamError> {
        match self.kind {
            ProviderKind::Anthropic => parse_anthropic(event, data),
            ProviderKind::OpenAi => parse_openai(data),
        }
    }
}

fn malformed(what: String) -> StreamError {
    StreamError { message: what, retryable: false, malformed: true }
}

fn snippet(s: &str) -> String {
    let mut out: String = s.chars().take(120).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn parse_anthropic(event: &str, data: &str) -> Result<StreamItem, StreamError> {
    if event == "ping" {
        return Ok(StreamItem::Ignore);
    }
    let v: Value = serde_json::from_str(data)
        .map_err(|e| malformed(format!("event '{event}' has data that is not JSON ({e}): {}", snippet(data))))?;
    let kind = v.get("type").and_then(Value::as_str).unwrap_or(event);
    match kind {
        "content_block_delta" => {
            let delta = &v["delta"];
            match delta.get("type").and_then(Value::as_str) {
                Some("text_delta") => match delta.get("text").and_then(Value::as_str) {
                    Some(t) => Ok(StreamItem::Text(t.to_string())),
                    None => Err(malformed(format!("text_delta without text: {}", snippet(data)))),
                },
                _ => Ok(StreamItem::Ignore), // input_json_delta, thinking_delta, …
            }
        }
        "message_stop" => Ok(StreamItem::Done),
        "error" => {
            let err_type = v["error"]["type"].as_str().unwrap_or("error").to_string();
            let msg = v["error"]["message"].as_str().unwrap_or("").to_string();
            let retryable = matches!(err_type.as_str(), "overloaded_error" | "api_error" | "rate_limit_error");
            Err(StreamError { message: format!("{err_type}: {msg}"), retryable, malformed: false })
        }
        _ => Ok(StreamItem::Ignore), // message_start, content_block_start/stop, message_delta, ping
    }
}

fn parse_openai(data: &str) -> Result<StreamItem, StreamError> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(StreamItem::Done);
    }
    if data.is_empty() {
        return Ok(StreamItem::Ignore);
    }
    let v: Value =
        serde_json::from_str(data).map_err(|e| malformed(format!("chunk is not JSON ({e}): {}", snippet(data))))?;
    if let Some(err) = v.get("error") {
        let msg = err.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| err.to_string());
        return Err(StreamError { message: msg, retryable: false, malformed: false });
    }
    let text = v["choices"][0]["delta"]["content"].as_str();
    match text {
        Some(t) if !t.is_empty() => Ok(StreamItem::Text(t.to_string())),
        _ => Ok(StreamItem::Ignore), // role-only first chunk, finish_reason chunk, usage chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(kind: ProviderKind) -> Provider {
        Provider {
            kind,
            base_url: "http://127.0.0.1:1/v1/".into(),
            api_key: Some("sk-secret".into()),
            model: "m".into(),
            max_tokens: 100,
            temperature: None,
            system_prompt: "be brief".into(),
            served_model: Default::default(),
        }
    }

    #[test]
    fn anthropic_events() {
        let p = provider(ProviderKind::Anthropic);
        let d = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
        assert_eq!(p.parse_event("content_block_delta", d), Ok(StreamItem::Text("Hi".into())));
        assert_eq!(p.parse_event("ping", r#"{"type": "ping"}"#), Ok(StreamItem::Ignore));
        assert_eq!(p.parse_event("message_stop", r#"{"type":"message_stop"}"#), Ok(StreamItem::Done));
        let e = p
            .parse_event("error", r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
            .unwrap_err();
        assert!(e.retryable && e.message.contains("Overloaded"));
        assert!(p.parse_event("content_block_delta", "{not json").unwrap_err().malformed);
        let body = p.body(&[ChatMessage { role: Role::User, text: "q".into() }]);
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["stream"], true);
        assert!(format!("{p:?}").find("sk-secret").is_none());
    }

    #[test]
    fn openai_events() {
        let p = provider(ProviderKind::OpenAi);
        assert_eq!(p.url(), "http://127.0.0.1:1/v1/chat/completions");
        let d = r#"{"id":"x","choices":[{"index":0,"delta":{"content":"Hé"},"finish_reason":null}]}"#;
        assert_eq!(p.parse_event("message", d), Ok(StreamItem::Text("Hé".into())));
        assert_eq!(p.parse_event("message", "[DONE]"), Ok(StreamItem::Done));
        let role_only = r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#;
        assert_eq!(p.parse_event("message", role_only), Ok(StreamItem::Ignore));
        let body = p.body(&[ChatMessage { role: Role::User, text: "q".into() }]);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], "q");
    }
}

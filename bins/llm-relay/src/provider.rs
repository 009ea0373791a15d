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

/// One message sent to the model. An assistant message may carry the tool calls it made, a
/// user message the results of those calls (they go out as each protocol wants them).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatMessage {
    pub role: Role,
    pub text: String,
    pub calls: Vec<ToolCall>,
    pub results: Vec<ToolResult>,
}

impl ChatMessage {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        ChatMessage { role, text: text.into(), ..Default::default() }
    }
}

impl Default for Role {
    fn default() -> Self {
        Role::User
    }
}

/// A tool call the model made: `input` is its arguments (a JSON object).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub input: Value,
}

/// What a tool call gave back (text for the model; `is_error`: it failed).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolResult {
    pub id: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub schema: Value,
}

/// What is offered in one request: the tools, and whether the model may call them now
/// (`allow` false: the last round of a turn; the tools stay declared, since a history with
/// tool calls needs them, but the model must answer in words).
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    pub tools: &'a [ToolDef],
    pub allow: bool,
}

impl Offer<'_> {
    pub const NONE: Offer<'static> = Offer { tools: &[], allow: false };
}

/// A piece of a streamed tool call: `index` tells the calls of one message apart; `id` and
/// `name` come with its first piece, `args` is a fragment of its JSON arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDelta {
    pub index: u64,
    pub id: Option<String>,
    pub name: Option<String>,
    pub args: String,
}

/// Puts streamed tool calls together (pure: fed the deltas of one reply in order).
#[derive(Debug, Default)]
pub struct ToolAssembler {
    calls: std::collections::BTreeMap<u64, (String, String, String)>,
}

impl ToolAssembler {
    pub fn push(&mut self, d: ToolDelta) {
        let c = self.calls.entry(d.index).or_default();
        if let Some(id) = d.id.filter(|s| !s.is_empty()) {
            c.0 = id;
        }
        if let Some(name) = d.name.filter(|s| !s.is_empty()) {
            c.1.push_str(&name);
        }
        c.2.push_str(&d.args);
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls, in order; each with why its arguments are unusable, if they are (the call
    /// then has `{}` as input, so the history stays valid, and is answered with that error).
    pub fn finish(self) -> Vec<(ToolCall, Option<String>)> {
        self.calls
            .into_iter()
            .map(|(index, (id, name, args))| {
                let id = if id.is_empty() { format!("call_{index}") } else { id };
                let (input, bad) = if args.trim().is_empty() {
                    (json!({}), None)
                } else {
                    match serde_json::from_str::<Value>(&args) {
                        Ok(v @ Value::Object(_)) => (v, None),
                        Ok(_) => (json!({}), Some(format!("the arguments are not a JSON object: {}", snippet(&args)))),
                        Err(e) => (json!({}), Some(format!("the arguments are not valid JSON ({e}): {}", snippet(&args)))),
                    }
                };
                let bad = bad.or_else(|| name.is_empty().then(|| "the call names no tool".to_string()));
                (ToolCall { id, name, input }, bad)
            })
            .collect()
    }
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
    /// Pieces of tool calls (OpenAI: and text in the same chunk, rarely).
    Tools { text: Option<String>, deltas: Vec<ToolDelta> },
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
        self.body_with(messages, Offer::NONE)
    }

    /// The body with `offer`'s tools. Without tools, tool calls and results in the history go
    /// as plain text (a relay restarted without its tools, or before its servers are up, still
    /// sends a history both protocols accept).
    pub fn body_with(&self, messages: &[ChatMessage], offer: Offer) -> Value {
        let plain = offer.tools.is_empty();
        match self.kind {
            ProviderKind::Anthropic => {
                let msgs: Vec<Value> = messages.iter().map(|m| anthropic_message(m, plain)).collect();
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
                if !plain {
                    let tools: Vec<Value> = offer
                        .tools
                        .iter()
                        .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.schema}))
                        .collect();
                    body["tools"] = json!(tools);
                    if !offer.allow {
                        body["tool_choice"] = json!({"type": "none"});
                    }
                }
                body
            }
            ProviderKind::OpenAi => {
                let mut msgs = vec![];
                if !self.system_prompt.is_empty() {
                    msgs.push(json!({"role": "system", "content": self.system_prompt}));
                }
                for m in messages {
                    openai_messages(m, plain, &mut msgs);
                }
                let mut body = json!({
                    "model": self.model,
                    "max_tokens": self.max_tokens,
                    "stream": true,
                    "messages": msgs,
                });
                if let Some(t) = self.temperature {
                    body["temperature"] = json!(t);
                }
                if !plain {
                    let tools: Vec<Value> = offer
                        .tools
                        .iter()
                        .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.schema}}))
                        .collect();
                    body["tools"] = json!(tools);
                    if !offer.allow {
                        body["tool_choice"] = json!("none");
                    }
                }
                body
            }
        }
    }

    pub fn request(&self, client: &reqwest::Client, messages: &[ChatMessage], offer: Offer) -> reqwest::RequestBuilder {
        let mut req = client
            .post(self.url())
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(self.body_with(messages, offer).to_string());
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

/// Tool calls and results as text, for a request that declares no tools.
fn plain_text(m: &ChatMessage) -> String {
    let mut parts: Vec<String> = vec![];
    for r in &m.results {
        parts.push(format!("[tool result{}: {}]", if r.is_error { " (error)" } else { "" }, r.content));
    }
    if !m.text.is_empty() {
        parts.push(m.text.clone());
    }
    for c in &m.calls {
        parts.push(format!("[called tool {} with {}]", c.name, c.input));
    }
    parts.join("\n")
}

fn anthropic_message(m: &ChatMessage, plain: bool) -> Value {
    if m.calls.is_empty() && m.results.is_empty() {
        return json!({"role": m.role.as_str(), "content": m.text});
    }
    if plain {
        return json!({"role": m.role.as_str(), "content": plain_text(m)});
    }
    let mut blocks = vec![];
    for r in &m.results {
        let mut b = json!({"type": "tool_result", "tool_use_id": r.id, "content": r.content});
        if r.is_error {
            b["is_error"] = json!(true);
        }
        blocks.push(b);
    }
    if !m.text.is_empty() {
        blocks.push(json!({"type": "text", "text": m.text}));
    }
    for c in &m.calls {
        blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.input}));
    }
    json!({"role": m.role.as_str(), "content": blocks})
}

fn openai_messages(m: &ChatMessage, plain: bool, out: &mut Vec<Value>) {
    if m.calls.is_empty() && m.results.is_empty() {
        out.push(json!({"role": m.role.as_str(), "content": m.text}));
        return;
    }
    if plain {
        out.push(json!({"role": m.role.as_str(), "content": plain_text(m)}));
        return;
    }
    for r in &m.results {
        let content = if r.is_error { format!("Error: {}", r.content) } else { r.content.clone() };
        out.push(json!({"role": "tool", "tool_call_id": r.id, "content": content}));
    }
    if m.calls.is_empty() {
        if !m.text.is_empty() {
            out.push(json!({"role": m.role.as_str(), "content": m.text}));
        }
        return;
    }
    let calls: Vec<Value> = m
        .calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.input.to_string()}}))
        .collect();
    let content = if m.text.is_empty() { Value::Null } else { json!(m.text) };
    out.push(json!({"role": "assistant", "content": content, "tool_calls": calls}));
}

fn malformed(what: String) -> StreamError {
    StreamError { message: what, retryable: false, malformed: true }
}

fn snippet(s: &str) -> String {
    tgvoice::log::snippet(s.as_bytes(), 120)
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
                Some("input_json_delta") => {
                    let index = v["index"].as_u64().unwrap_or(0);
                    let args = delta.get("partial_json").and_then(Value::as_str).unwrap_or("").to_string();
                    Ok(StreamItem::Tools { text: None, deltas: vec![ToolDelta { index, id: None, name: None, args }] })
                }
                _ => Ok(StreamItem::Ignore), // thinking_delta, …
            }
        }
        "content_block_start" if v["content_block"]["type"] == "tool_use" => {
            let block = &v["content_block"];
            let index = v["index"].as_u64().unwrap_or(0);
            let id = block["id"].as_str().map(str::to_string);
            let name = block["name"].as_str().map(str::to_string);
            Ok(StreamItem::Tools { text: None, deltas: vec![ToolDelta { index, id, name, args: String::new() }] })
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
    if let Some(calls) = v["choices"][0]["delta"]["tool_calls"].as_array().filter(|c| !c.is_empty()) {
        let deltas = calls
            .iter()
            .enumerate()
            .map(|(i, c)| ToolDelta {
                index: c["index"].as_u64().unwrap_or(i as u64),
                id: c["id"].as_str().map(str::to_string),
                name: c["function"]["name"].as_str().map(str::to_string),
                args: c["function"]["arguments"].as_str().unwrap_or("").to_string(),
            })
            .collect();
        return Ok(StreamItem::Tools { text: text.filter(|t| !t.is_empty()).map(str::to_string), deltas });
    }
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
        let body = p.body(&[ChatMessage::text(Role::User, "q")]);
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
        let body = p.body(&[ChatMessage::text(Role::User, "q")]);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], "q");
    }

    /// Feed `events` (name, data) through the parser and the assembler.
    fn assemble(p: &Provider, events: &[(&str, &str)]) -> (String, Vec<(ToolCall, Option<String>)>) {
        let (mut text, mut tools) = (String::new(), ToolAssembler::default());
        for (e, d) in events {
            match p.parse_event(e, d).unwrap() {
                StreamItem::Text(t) => text.push_str(&t),
                StreamItem::Tools { text: t, deltas } => {
                    text.push_str(t.as_deref().unwrap_or(""));
                    deltas.into_iter().for_each(|d| tools.push(d));
                }
                _ => {}
            }
        }
        (text, tools.finish())
    }

    #[test]
    fn anthropic_tool_use_blocks_are_put_together_from_partial_json() {
        let p = provider(ProviderKind::Anthropic);
        let (text, calls) = assemble(&p, &[
            ("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me see."}}"#),
            ("content_block_start", r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_current_time","input":{}}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"timez"}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"one\": \"Europe/Pa"}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ris\"}"}}"#),
            ("content_block_stop", r#"{"type":"content_block_stop","index":1}"#),
            ("content_block_start", r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_2","name":"no_args","input":{}}}"#),
            ("content_block_stop", r#"{"type":"content_block_stop","index":2}"#),
            ("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"}}"#),
        ]);
        assert_eq!(text, "Let me see.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0], (ToolCall { id: "toolu_1".into(), name: "get_current_time".into(), input: json!({"timezone": "Europe/Paris"}) }, None));
        assert_eq!(calls[1], (ToolCall { id: "toolu_2".into(), name: "no_args".into(), input: json!({}) }, None));
    }

    #[test]
    fn openai_tool_call_deltas_are_put_together_and_bad_json_is_named() {
        let p = provider(ProviderKind::OpenAi);
        let (text, calls) = assemble(&p, &[
            ("message", r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#),
            ("message", r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_current_time","arguments":""}}]}}]}"#),
            ("message", r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"timezone\":"}}]}}]}"#),
            ("message", r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"broken","arguments":"{\"x\": "}}]}}]}"#),
            ("message", r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":" \"Europe/Paris\"}"}}]}}]}"#),
            ("message", r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#),
            ("message", "[DONE]"),
        ]);
        assert_eq!(text, "");
        assert_eq!(calls[0], (ToolCall { id: "call_a".into(), name: "get_current_time".into(), input: json!({"timezone": "Europe/Paris"}) }, None));
        assert_eq!(calls[1].0.input, json!({}), "unusable arguments become {{}} so the history stays valid");
        assert!(calls[1].1.as_deref().unwrap().contains("not valid JSON"), "{:?}", calls[1].1);
    }

    fn exchange() -> Vec<ChatMessage> {
        let call = ToolCall { id: "c1".into(), name: "get_current_time".into(), input: json!({"timezone": "UTC"}) };
        let result = ToolResult { id: "c1".into(), content: "12:00".into(), is_error: true };
        vec![
            ChatMessage::text(Role::User, "time?"),
            ChatMessage { role: Role::Assistant, text: String::new(), calls: vec![call], results: vec![] },
            ChatMessage { role: Role::User, text: String::new(), calls: vec![], results: vec![result] },
            ChatMessage::text(Role::Assistant, "Noon."),
        ]
    }

    #[test]
    fn tool_exchanges_in_the_history_take_each_protocols_shape() {
        let tools = [ToolDef { name: "get_current_time".into(), description: "d".into(), schema: json!({"type": "object"}) }];
        let offer = Offer { tools: &tools, allow: true };
        let a = provider(ProviderKind::Anthropic).body_with(&exchange(), offer);
        assert_eq!(a["tools"][0]["input_schema"], json!({"type": "object"}));
        assert!(a.get("tool_choice").is_none());
        assert_eq!(a["messages"][1]["content"][0], json!({"type": "tool_use", "id": "c1", "name": "get_current_time", "input": {"timezone": "UTC"}}));
        assert_eq!(a["messages"][2]["content"][0], json!({"type": "tool_result", "tool_use_id": "c1", "content": "12:00", "is_error": true}));
        assert_eq!(a["messages"][3]["content"], "Noon.");
        let o = provider(ProviderKind::OpenAi).body_with(&exchange(), Offer { tools: &tools, allow: false });
        assert_eq!(o["tools"][0]["function"]["name"], "get_current_time");
        assert_eq!(o["tool_choice"], "none");
        let m = &o["messages"];
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], r#"{"timezone":"UTC"}"#);
        assert_eq!(m[2]["content"], Value::Null);
        assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "c1", "content": "Error: 12:00"}));
        assert_eq!(m[4]["role"], "assistant");
        // Without tools declared (restarted without its tools file), the exchange goes as text.
        for kind in [ProviderKind::Anthropic, ProviderKind::OpenAi] {
            let b = provider(kind).body(&exchange());
            assert!(b.get("tools").is_none());
            let texts: Vec<&str> = b["messages"].as_array().unwrap().iter().filter_map(|m| m["content"].as_str()).collect();
            assert!(texts.contains(&"[called tool get_current_time with {\"timezone\":\"UTC\"}]"), "{texts:?}");
            assert!(texts.contains(&"[tool result (error): 12:00]"), "{texts:?}");
        }
    }
}

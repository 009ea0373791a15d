//! A loopback stand-in for an OpenAI-compatible LLM server (the wire protocol llama.cpp's
//! server, Ollama and OpenAI speak): `GET /v1/models` lists one model, and each
//! `POST …/chat/completions` streams the next reply of a fixed set as SSE `data:` events, a few
//! words per event, then `data: [DONE]`. For tests whose subject is not the LLM and that need
//! its replies known in advance (a reply with a quotation after a comma, say).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the stand-in answers.
pub enum Replies {
    /// The replies in turn, starting again after the last.
    Cycle(Vec<String>),
    /// By the last user message: the reply of the first rule whose needle it contains
    /// (lowercased), else `otherwise`. For calls whose turns are not all sent to the LLM (a
    /// false alarm over a reply is not), where a cycle would fall out of step.
    Match { rules: Vec<(String, String)>, otherwise: String },
    /// Accept each request and never answer (a hung server).
    Never,
    /// Call control (fifo-layout.md "Call control"): a request that offers the tool `name` is
    /// answered with a call of it (`arguments`, JSON, streamed as `tool_calls` deltas in two
    /// pieces); the request carrying its result (last message `role: tool`) with `after`; a
    /// request that does not offer the tool with `otherwise`. Stateless, so an early request
    /// that llm-relay cancels does not put it out of step.
    CallTool { name: String, arguments: String, after: String, otherwise: String },
}

pub struct StandInLlm {
    pub port: u16,
    /// Chat requests received.
    pub requests: Arc<AtomicUsize>,
}

impl StandInLlm {
    pub fn start(replies: Replies) -> StandInLlm {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let replies = Arc::new(replies);
        let counter = requests.clone();
        std::thread::spawn(move || {
            let mut held = vec![];
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (replies, counter) = (replies.clone(), counter.clone());
                match &*replies {
                    Replies::Never => held.push(conn),
                    Replies::Cycle(_) | Replies::Match { .. } | Replies::CallTool { .. } => {
                        std::thread::spawn(move || serve(conn, &replies, &counter));
                    }
                }
            }
        });
        StandInLlm { port, requests }
    }

    /// The base URL to give llm-relay (`--base-url`, `TGVOICE_LLM_BASE_URL`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

fn serve(mut conn: TcpStream, replies: &Replies, counter: &AtomicUsize) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if r.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; len];
    let _ = r.read_exact(&mut body);
    if request_line.starts_with("GET") {
        let models = r#"{"object":"list","data":[{"id":"stand-in","object":"model"}]}"#;
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{models}",
            models.len()
        );
        return;
    }
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let text = match replies {
        Replies::Cycle(list) => list[n % list.len()].clone(),
        Replies::Match { rules, otherwise } => {
            let asked = last_user_message(&body).to_lowercase();
            rules.iter().find(|(needle, _)| asked.contains(needle.as_str())).map_or(otherwise, |r| &r.1).clone()
        }
        Replies::Never => return,
        Replies::CallTool { name, arguments, after, otherwise } => {
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let last_is_result = request["messages"].as_array().and_then(|m| m.last()).is_some_and(|m| m["role"] == "tool");
            let offered = request["tools"].as_array().is_some_and(|t| t.iter().any(|t| t["function"]["name"] == name.as_str()));
            if last_is_result {
                after.clone()
            } else if offered {
                let _ = write!(conn, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n");
                let (a, b) = arguments.split_at(arguments.len() / 2);
                let head = serde_json::json!({"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                    {"index": 0, "id": format!("call_{n}"), "type": "function", "function": {"name": name, "arguments": a}}]}}]});
                let tail = serde_json::json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": b}}]}}]});
                let done = serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]});
                let _ = write!(conn, "data: {head}\n\ndata: {tail}\n\ndata: {done}\n\ndata: [DONE]\n\n");
                return;
            } else {
                otherwise.clone()
            }
        }
    };
    let _ = write!(conn, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n");
    // A few words per event, as a real server streams tokens.
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    for piece in words.chunks(3) {
        let chunk = serde_json::json!({"choices": [{"index": 0, "delta": {"content": piece.concat()}}]});
        if write!(conn, "data: {chunk}\n\n").and_then(|_| conn.flush()).is_err() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let done = serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    let _ = write!(conn, "data: {done}\n\ndata: [DONE]\n\n");
}

/// The text of the last `user` message of a chat request body ("" if none).
fn last_user_message(body: &[u8]) -> String {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.iter().rev().find(|m| m["role"] == "user");
    last.map(|m| match &m["content"] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
    .unwrap_or_default()
}

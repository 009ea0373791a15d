//! The end judge: can the caller's words stand as a whole request, or did they stop to think?
//!
//! The words check (unfinished.rs) catches a request broken off on a word no sentence ends on
//! ("a table for", "remind me to"). It cannot know that "Can you tell me" or "I'd like to book"
//! wants more, and the turn model, which hears prosody, calls such a phrase complete when it
//! is spoken with a falling tone. A language model knows: asked to go on from
//! `<|im_start|>user\nCan you tell me`, SmolLM2 expects " what"/" a"/" more", while after
//! `What is the capital of France` it expects "?". So the judge asks the local llama.cpp
//! server (llama-cpp-python) to go on by one token, greedily, from the reply's own prompt cut
//! at the caller's last word (system prompt, history, their words: [`open_prompt`]), with the
//! tokens that end a message ("?", ".", "!", `<|im_end|>`) raised by [`END_BIAS`]: the words
//! are complete when an ending wins, that is when an ending is at least e^-2 (~14 %) as likely
//! as the likeliest next word. The server has the conversation's prefix cached from the last
//! reply, so this costs the caller's words' tokens and one step. The prompt is ChatML
//! (SmolLM2's template); the end tokens' ids are read from the server's `/extras/tokenize`.
//!
//! Measured on the model's own judgement of 30 broken-off requests and 30 whole ones, none
//! of them test sentences: 28/30 and 26/30 right (README "The end judge").

use crate::provider::ChatMessage;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::OnceCell;

/// How much more likely (in log-probability) an ending is made before the greedy pick.
const END_BIAS: f64 = 2.0;
/// What ends a message: the chat template's end of turn and the sentence stops.
const ENDINGS: [&str; 4] = ["<|im_end|>", "?", ".", "!"];
/// A verdict that takes longer is of no use (the policy has moved on by then).
const TIMEOUT: Duration = Duration::from_secs(2);

pub struct EndJudge {
    /// The OpenAI-compatible root, `http://HOST:PORT/v1`.
    base_url: String,
    end_tokens: OnceCell<Vec<u64>>,
}

impl EndJudge {
    pub fn new(base_url: &str) -> EndJudge {
        EndJudge { base_url: base_url.trim_end_matches('/').to_string(), end_tokens: OnceCell::new() }
    }

    pub fn url(&self) -> &str {
        &self.base_url
    }

    /// The server root (llama-cpp-python's extras live beside /v1, not under it).
    fn root(&self) -> &str {
        self.base_url.strip_suffix("/v1").unwrap_or(&self.base_url)
    }

    /// The token ids of [`ENDINGS`], asked once.
    async fn end_tokens(&self, client: &reqwest::Client) -> Result<&Vec<u64>, String> {
        self.end_tokens
            .get_or_try_init(|| async {
                let mut ids = vec![];
                for ending in ENDINGS {
                    let url = format!("{}/extras/tokenize", self.root());
                    let body: Value = post(client, &url, &json!({ "input": ending })).await?;
                    match body["tokens"].as_array().map(|t| t.iter().filter_map(Value::as_u64).collect::<Vec<_>>()) {
                        Some(t) if t.len() == 1 => ids.push(t[0]),
                        _ => {
                            return Err(format!(
                                "{url} does not make {ending:?} one token ({body}); the end judge needs a ChatML model such as SmolLM2"
                            ))
                        }
                    }
                }
                Ok(ids)
            })
            .await
    }

    /// Can the last message of `messages` (the caller's words) stand as a whole request?
    /// `system` and the messages before it are the conversation, as the reply would send them.
    /// Err says why the judge could not tell.
    pub async fn complete(&self, client: &reqwest::Client, system: &str, messages: &[ChatMessage]) -> Result<bool, String> {
        let ids = self.end_tokens(client).await?;
        let bias: serde_json::Map<String, Value> = ids.iter().map(|id| (id.to_string(), json!(END_BIAS))).collect();
        let request = json!({
            "prompt": open_prompt(system, messages),
            "max_tokens": 1,
            "temperature": 0,
            "logit_bias": bias,
        });
        let body = post(client, &format!("{}/completions", self.base_url), &request).await?;
        let next = body["choices"][0]["text"]
            .as_str()
            .ok_or_else(|| format!("{}/completions answered without choices[0].text: {body}", self.base_url))?;
        Ok(ends_a_message(next))
    }
}

/// The conversation in ChatML as the server renders a chat request for SmolLM2 (its GGUF's
/// template), with the last message left open: the judge's prompt is the reply's prompt up to
/// the caller's last word, so the server's cache of that prefix serves both. (Another prefix
/// would make the server evaluate the whole history again for the reply: ~500 ms here.)
fn open_prompt(system: &str, messages: &[ChatMessage]) -> String {
    // SmolLM2's template puts its own system line first when a request has none.
    let system = if system.is_empty() { SMOLLM2_SYSTEM } else { system };
    let mut prompt = format!("<|im_start|>system\n{system}<|im_end|>\n");
    for (i, m) in messages.iter().enumerate() {
        prompt.push_str(&format!("<|im_start|>{}\n{}", m.role.as_str(), m.text));
        if i + 1 < messages.len() {
            prompt.push_str("<|im_end|>\n");
        }
    }
    prompt
}

/// The system line SmolLM2's chat template adds to a request without one.
const SMOLLM2_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// The token the model picked ends the message: nothing (the end of turn) or a stop.
fn ends_a_message(next: &str) -> bool {
    let t = next.trim();
    t.is_empty() || t.starts_with(['?', '.', '!'])
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Result<Value, String> {
    let response = client.post(url).timeout(TIMEOUT).json(body).send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("{url}: HTTP {status}: {}", text.chars().take(200).collect::<String>()));
    }
    response.json().await.map_err(|e| format!("{url}: not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_end_of_turn_or_a_stop_ends_the_message_and_a_word_does_not() {
        for t in ["", "?", ".", "!", " ?", ".\n"] {
            assert!(super::ends_a_message(t), "{t:?}");
        }
        for t in [" what", " a", ",", ":", " the"] {
            assert!(!super::ends_a_message(t), "{t:?}");
        }
    }

    #[test]
    fn the_prompt_is_the_chat_request_up_to_the_callers_last_word() {
        use crate::provider::{ChatMessage, Role};
        let m = |role, text: &str| ChatMessage::text(role, text);
        let messages = [m(Role::User, "Hi."), m(Role::Assistant, "Hello!"), m(Role::User, "Can you tell me")];
        assert_eq!(
            super::open_prompt("Be brief.", &messages),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi.<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nCan you tell me"
        );
    }

    #[test]
    fn the_extras_are_beside_v1() {
        assert_eq!(super::EndJudge::new("http://127.0.0.1:8088/v1/").root(), "http://127.0.0.1:8088");
    }
}

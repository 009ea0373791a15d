//! `TGVOICE_LLM_BASE_URL` without an API key: the user's own OpenAI-compatible server (Ollama,
//! LM Studio, vLLM), as its users expect it — not the local SmolLM2 model's settings, which
//! it once took silently (that model's name, prompt, temperature 0, 2-sentence cap and 20 s
//! first-token budget). Stand-in servers on loopback speak the real protocol.

mod common;

use common::*;
use std::time::{Duration, Instant};

const MODELS: &str = r#"{"object":"list","data":[{"id":"llama3.2:1b","object":"model","owned_by":"library"}]}"#;

fn keyless_relay(server: &StandIn, state: &std::path::Path) -> std::process::Command {
    let mut cmd = relay_command(state);
    cmd.env("TGVOICE_LLM_BASE_URL", format!("{}/v1", server.base()));
    cmd
}

#[test]
fn a_keyless_base_url_is_the_users_server_with_the_model_it_lists() {
    let body = openai_sse(&["One, two. ", "Three, four. ", "Five, six."]);
    let server = StandIn::start(move |i, _| {
        if i == 0 {
            Response::error(200, MODELS)
        } else {
            Response::sse(vec![piece(&body)], false)
        }
    });
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(keyless_relay(&server, state.path()));
    relay.send(transcript(3, "Count to six."));
    relay.wait_reply_end(3);
    relay.send(transcript(4, "Again."));
    relay.wait_reply_end(4);
    let (events, stderr) = relay.finish();
    assert_eq!(server.request(0).path, "/v1/models", "{stderr}");
    assert_eq!(server.count(), 3, "the model list is asked once: {stderr}");
    for i in [1, 2] {
        let chat = server.request(i);
        assert_eq!(chat.path, "/v1/chat/completions");
        assert_eq!(chat.header("authorization"), None, "no key, no Authorization header");
        assert_eq!(chat.body["model"], "llama3.2:1b");
        assert!(chat.body.get("temperature").is_none(), "the server's own temperature: {}", chat.body);
        let system = chat.body["messages"][0]["content"].as_str().unwrap();
        assert!(system.contains("phone call") && !system.contains("SmolLM"), "the general prompt: {system}");
    }
    // No 2-sentence cap: the whole reply is spoken.
    assert_eq!(chunks_of(&events, 3).concat().matches(['.']).count(), 3, "{:?}", chunks_of(&events, 3));
    assert!(stderr.contains("llama3.2:1b"), "the log names the model it uses: {stderr}");
}

/// Issue 25: the caller never hears more than ~3 s of silence after their turn: a holding
/// phrase when the LLM has said nothing by then, and the apology within 10 s.
#[test]
fn a_keyless_server_that_hangs_gets_the_holding_phrase_then_the_apology() {
    let server = StandIn::start(move |i, _| {
        if i == 0 {
            Response::error(200, MODELS)
        } else {
            let mut r = Response::sse(vec![], true);
            r.hold_open = true;
            r
        }
    });
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(keyless_relay(&server, state.path()));
    let t0 = Instant::now();
    relay.send(transcript(5, "Are you there?"));
    let (at, chunk) = relay.wait_for(Duration::from_secs(25), |e| e.is("reply-chunk") && e.turn == Some(5));
    let waited = at - t0;
    assert_eq!(chunk.text.as_deref(), Some("One moment, please."));
    assert!((Duration::from_millis(2900)..Duration::from_millis(3500)).contains(&waited), "holding phrase after {waited:?}");
    let (at, chunk) = relay.wait_for(Duration::from_secs(25), |e| e.is("reply-chunk") && e.turn == Some(5));
    let waited = at - t0;
    assert_eq!(chunk.get_u64("seq"), Some(1));
    assert!(chunk.text.unwrap_or_default().starts_with("Sorry"));
    assert!(waited < Duration::from_secs(10), "the apology came after {waited:?} (the local model's budget was 20 s)");
    relay.kill();
}

#[test]
fn a_server_that_lists_no_model_is_named_with_what_to_set() {
    let server = StandIn::start(move |_, _| Response::error(404, r#"{"error":{"message":"no such route"}}"#));
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(keyless_relay(&server, state.path()));
    relay.send(transcript(6, "Hello?"));
    let end = relay.wait_reply_end(6);
    assert_eq!(end.get_bool("error"), Some(true));
    let (_, stderr) = relay.finish();
    assert!(stderr.contains("/v1/models") && stderr.contains("TGVOICE_LLM_MODEL"), "{stderr}");
    assert_eq!(server.count(), 1, "no chat request without a model: {stderr}");
}

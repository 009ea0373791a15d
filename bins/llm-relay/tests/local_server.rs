//! llm-relay against the real offline default: scripts/llm-server (llama-cpp-python serving
//! SmolLM2-135M-Instruct) on a free loopback port. Needs `scripts/setup` (apt, venv,
//! llm-server steps); fails with that advice when the server is not provisioned.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn local_llama_cpp_server_answers_with_speakable_chunks() {
    let server = LocalServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut cmd = relay_command(state.path());
    // No API key in the environment (relay_command removes them): the local default.
    cmd.env("TGVOICE_LLM_PORT", server.port.to_string());
    let mut relay = Relay::spawn(cmd);
    relay.send(transcript(1, "What is the capital of France?"));
    let end = relay.wait_for(Duration::from_secs(120), |e| e.is("reply-end") && e.turn == Some(1)).1;
    let (events, stderr) = relay.finish();
    assert_eq!(end.get_bool("cancelled"), Some(false), "{stderr}");
    assert_eq!(end.get_bool("error"), None, "the local server failed:\n{stderr}");
    let chunks = chunks_of(&events, 1);
    assert!(!chunks.is_empty(), "no reply-chunk from the local server:\n{stderr}");
    let all = chunks.join(" ");
    assert!(all.chars().filter(|c| c.is_alphabetic()).count() >= 2, "not a speakable reply: {chunks:?}");
    assert!(!all.contains("```") && !all.contains("**"), "markdown reached TTS: {chunks:?}");
    assert!(stderr.contains("no API key configured; using the local llama.cpp server"), "{stderr}");
    eprintln!("local reply: {chunks:?}\n{}", end.trace.latency_line());
}

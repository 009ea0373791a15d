//! Tools (README "Tools"): llm-relay against the stand-in Claude and OpenAI-compatible servers
//! (real SSE, tool calls whose JSON arguments are split across events and across TCP writes)
//! with real MCP servers over stdio: the reference `mcp-server-time` from PyPI, and a small
//! test server on the official `mcp` SDK (tests/data/mcp_test_server.py) with a slow, a
//! crashing and a 1 MiB tool. Both come from the project's venv (scripts/provision/llm-tools.pip).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tgvoice::Event;

fn venv_bin(name: &str) -> PathBuf {
    let venv =
        std::env::var_os("TGVOICE_VENV").map(PathBuf::from).unwrap_or_else(|| tgvoice::testkit::cache_dir().join("venv"));
    let bin = venv.join("bin").join(name);
    assert!(bin.exists(), "{} is missing: run `scripts/setup venv` (scripts/provision/llm-tools.pip)", bin.display());
    bin
}

fn test_server(record: &Path) -> Value {
    let script = repo_root().join("bins/llm-relay/tests/data/mcp_test_server.py");
    json!({"command": venv_bin("python"), "args": [script], "env": {"MCP_TEST_RECORD": record}})
}

fn time_server() -> Value {
    json!({"command": venv_bin("mcp-server-time"), "args": ["--local-timezone", "UTC"], "tools": ["get_current_time"]})
}

fn tools_file(dir: &Path, servers: Value) -> PathBuf {
    let path = dir.join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json!({"mcpServers": servers})).unwrap()).unwrap();
    path
}

/// Cut an SSE body every `every` bytes, written 1 ms apart: events, JSON strings and the
/// partial JSON of the arguments all arrive in awkward pieces.
fn awkward(body: &str, every: usize) -> Vec<Piece> {
    body.as_bytes().chunks(every).map(|c| Piece { delay: Duration::from_millis(1), bytes: c.to_vec() }).collect()
}

/// Split `s` in three at character boundaries.
fn thirds(s: &str) -> [String; 3] {
    let cut = |n: usize| (n..=s.len()).find(|&i| s.is_char_boundary(i)).unwrap();
    let (a, b) = (cut(s.len() / 3), cut(2 * s.len() / 3));
    [s[..a].into(), s[a..b].into(), s[b..].into()]
}

/// A Claude turn that says `before`, then calls tools (id, name, raw JSON arguments, each sent
/// as three `input_json_delta`s), ending with `stop_reason: tool_use`.
fn anthropic_tool_sse(before: &str, calls: &[(&str, &str, &str)]) -> String {
    let mut s = anthropic_sse_head();
    if !before.is_empty() {
        s.push_str(&anthropic_delta(before));
    }
    s.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
    for (i, (id, name, args)) in calls.iter().enumerate() {
        let index = i + 1;
        let start = json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}});
        s.push_str(&format!("event: content_block_start\ndata: {start}\n\n"));
        for part in thirds(args) {
            let d = json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": part}});
            s.push_str(&format!("event: content_block_delta\ndata: {d}\n\n"));
        }
        s.push_str(&format!("event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{index}}}\n\n"));
    }
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":30}}\n\n");
    s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s
}

/// An OpenAI-compatible turn calling tools: `delta.tool_calls` with the id and name first,
/// then the arguments in three fragments, `finish_reason: tool_calls`, `[DONE]`.
fn openai_tool_sse(calls: &[(&str, &str, &str)]) -> String {
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut s = chunk(json!({"role": "assistant", "content": null}), Value::Null);
    for (i, (id, name, args)) in calls.iter().enumerate() {
        s.push_str(&chunk(
            json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        ));
        for part in thirds(args) {
            s.push_str(&chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": part}}]}), Value::Null));
        }
    }
    s.push_str(&chunk(json!({}), json!("tool_calls")));
    s.push_str("data: [DONE]\n\n");
    s
}

/// Wait until the relay's log has `needle` (the relay logs at debug level in tests).
fn wait_log(relay: &Relay, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let log = relay.stderr();
        if log.contains(needle) {
            return log;
        }
        assert!(Instant::now() < deadline, "no log line with {needle:?} within {timeout:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait until the test server's record file has `line`.
fn wait_record(record: &Path, line: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(record).unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "the test MCP server never recorded {line:?}; it recorded:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The conversation file's lines.
fn conversation(state: &Path) -> Vec<Value> {
    let dir = state.join("conversations");
    let file = std::fs::read_dir(&dir).unwrap().next().expect("a conversation file").unwrap().path();
    std::fs::read_to_string(file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The text of the last user message of a request (Claude: its string content).
fn last_user_text(body: &Value) -> String {
    let last = body["messages"].as_array().unwrap().iter().rev().find(|m| m["role"] == "user").unwrap();
    match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

fn claude_relay(server: &StandIn, state: &Path, tools: &Path) -> std::process::Command {
    let mut cmd = relay_command(state);
    cmd.env("ANTHROPIC_API_KEY", "sk-ant-test")
        .arg("--base-url")
        .arg(server.base())
        .args(["--model", "claude-test", "--tool-start-timeout", "30", "--tools"])
        .arg(tools);
    cmd
}

/// llm-relay against the Claude stand-in with `servers` as its tools file and `extra` flags,
/// once the server `ready` says it is ready.
fn claude_with_tools(server: &StandIn, state: &Path, servers: Value, extra: &[&str], ready: &str) -> Relay {
    let tools = tools_file(state, servers);
    let mut cmd = claude_relay(server, state, &tools);
    cmd.args(extra);
    let relay = Relay::spawn(cmd);
    wait_log(&relay, &format!("MCP server {ready:?} ready"), Duration::from_secs(30));
    relay
}

#[test]
fn claude_calls_the_real_time_server_and_speaks_the_answer_and_the_history_keeps_it() {
    let server = StandIn::start(|i, body| {
        let sse = match i {
            0 => anthropic_tool_sse("Let me check.", &[("toolu_01", "get_current_time", r#"{"timezone": "Europe/Paris"}"#)]),
            1 => anthropic_sse(&["It is noon ", "in Paris."]),
            _ => anthropic_sse(&[&format!("You said: {}", last_user_text(body))]),
        };
        Response::sse(awkward(&sse, 23), true)
    });
    let state = tempfile::tempdir().unwrap();
    let mut relay = claude_with_tools(&server, state.path(), json!({"time": time_server()}), &["--tool-holding-after", "0"], "time");
    assert!(relay.stderr().contains("MCP server \"time\" ready: 1 tool(s) on offer: get_current_time"));
    relay.send(transcript(1, "What time is it in Paris?"));
    relay.wait_reply_end(1);
    relay.send(transcript(2, "Thanks."));
    relay.wait_reply_end(2);
    let (events, stderr) = relay.finish();
    assert_eq!(chunks_of(&events, 1), ["Let me check.", "It is noon in Paris."]);
    assert_eq!(chunks_of(&events, 2), ["You said: Thanks."]);

    // The first request offers the tool; the second carries the call and the real result.
    let first = server.request(0).body;
    assert_eq!(first["tools"][0]["name"], "get_current_time");
    assert!(first["tools"][0]["input_schema"]["properties"]["timezone"].is_object(), "{}", first["tools"]);
    let second = server.request(1).body;
    let msgs = second["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    assert_eq!(msgs[1]["content"][0], json!({"type": "text", "text": "Let me check."}));
    assert_eq!(
        msgs[1]["content"][1],
        json!({"type": "tool_use", "id": "toolu_01", "name": "get_current_time", "input": {"timezone": "Europe/Paris"}})
    );
    let result = &msgs[2]["content"][0];
    assert_eq!((&result["type"], &result["tool_use_id"]), (&json!("tool_result"), &json!("toolu_01")));
    let content: Value = serde_json::from_str(result["content"].as_str().unwrap()).expect("mcp-server-time answers JSON");
    assert_eq!(content["timezone"], "Europe/Paris", "{content}");
    assert!(content["datetime"].as_str().is_some_and(|d| d.contains('T')), "{content}");
    assert!(result.get("is_error").is_none());

    // The next turn's request holds the exchange in the Claude shape.
    let third = server.request(2).body;
    let roles: Vec<&str> = third["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
    assert_eq!(third["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(third["messages"][2]["content"][0]["tool_use_id"], "toolu_01");
    assert_eq!(third["messages"][3]["content"], "Let me check. It is noon in Paris.");

    // The conversation file: the caller, the call, its result, the answer.
    let lines = conversation(state.path());
    assert_eq!(lines[0]["text"], "What time is it in Paris?");
    assert_eq!(lines[1]["calls"][0]["input"], json!({"timezone": "Europe/Paris"}));
    assert!(lines[2]["results"][0]["content"].as_str().unwrap().contains("Europe/Paris"));
    assert_eq!(lines[3]["text"], "Let me check. It is noon in Paris.");
    // Arguments and results are logged at debug level only.
    assert!(stderr.lines().filter(|l| l.contains("Europe/Paris")).all(|l| l.contains(" debug: ")), "{stderr}");

    // Restarted without tools, the relay sends the exchange as text (valid without `tools`).
    let mut relay = Relay::spawn({
        let mut cmd = claude_relay(&server, state.path(), Path::new("off"));
        cmd.args(["--tool-holding-after", "0"]);
        cmd
    });
    relay.send(transcript(3, "Bye."));
    relay.wait_reply_end(3);
    relay.finish();
    let fourth = server.request(3).body;
    assert!(fourth.get("tools").is_none());
    let texts: Vec<&str> = fourth["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert!(texts[1].starts_with("[called tool get_current_time with {\"timezone\":\"Europe/Paris\"}]"), "{texts:?}");
    assert!(texts[2].starts_with("[tool result: {"), "{texts:?}");
}

#[test]
fn openai_compatible_tool_calls_reach_the_time_server_and_come_back_as_tool_messages() {
    let server = StandIn::start(|i, _| {
        let sse = match i {
            0 => openai_tool_sse(&[
                ("call_a", "get_current_time", r#"{"timezone": "Europe/Paris"}"#),
                ("call_b", "get_current_time", r#"{"timezone": "Asia/Tokyo"}"#),
            ]),
            _ => openai_sse(&["Paris is at noon, ", "Tokyo at seven."]),
        };
        Response::sse(awkward(&sse, 17), true)
    });
    let state = tempfile::tempdir().unwrap();
    let tools = tools_file(state.path(), json!({"time": time_server()}));
    let mut cmd = relay_command(state.path());
    cmd.env("OPENAI_API_KEY", "sk-test").arg("--base-url").arg(format!("{}/v1", server.base()));
    cmd.args(["--model", "m", "--tool-holding-after", "0", "--tool-start-timeout", "30", "--tools"]).arg(&tools);
    let mut relay = Relay::spawn(cmd);
    wait_log(&relay, "MCP server \"time\" ready", Duration::from_secs(30));
    relay.send(transcript(1, "Time in Paris and Tokyo?"));
    relay.wait_reply_end(1);
    let (events, _) = relay.finish();
    assert_eq!(chunks_of(&events, 1), ["Paris is at noon,", "Tokyo at seven."]);
    let first = server.request(0).body;
    assert_eq!(first["tools"][0]["type"], "function");
    assert_eq!(first["tools"][0]["function"]["name"], "get_current_time");
    let msgs = server.request(1).body["messages"].as_array().unwrap().clone();
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "tool"]);
    let calls = &msgs[2]["tool_calls"];
    assert_eq!(calls[0]["id"], "call_a");
    assert_eq!(serde_json::from_str::<Value>(calls[1]["function"]["arguments"].as_str().unwrap()).unwrap(), json!({"timezone": "Asia/Tokyo"}));
    for (msg, (id, zone)) in msgs[3..].iter().zip([("call_a", "Europe/Paris"), ("call_b", "Asia/Tokyo")]) {
        assert_eq!(msg["tool_call_id"], id);
        let content: Value = serde_json::from_str(msg["content"].as_str().unwrap()).unwrap();
        assert_eq!(content["timezone"], zone);
    }
    let lines = conversation(state.path());
    assert_eq!(lines[1]["calls"].as_array().unwrap().len(), 2);
    assert_eq!(lines[2]["results"].as_array().unwrap().len(), 2);
    assert_eq!(lines[3]["text"], "Paris is at noon, Tokyo at seven.");
}

#[test]
fn a_slow_tool_gets_the_holding_phrase_and_a_cancel_cancels_it_at_the_server() {
    let server = StandIn::start(|_, body| {
        let sse = match last_user_text(body).as_str() {
            "Wait for it." => anthropic_tool_sse("", &[("toolu_slow", "slow", r#"{"seconds": 3}"#)]),
            // The cancelled reply said nothing the caller heard: its message is still
            // unanswered, and the next words join it (one user message).
            "Wait for it. Something else." => anthropic_sse(&["Something else, then."]),
            other => anthropic_sse(&[&format!("Unexpected request after: {other}")]),
        };
        Response::sse(awkward(&sse, 29), true)
    });
    let state = tempfile::tempdir().unwrap();
    let record = state.path().join("record.txt");
    let mut relay = claude_with_tools(&server, state.path(), json!({"test": test_server(&record)}), &[], "test");
    let t0 = Instant::now();
    relay.send(transcript(1, "Wait for it."));
    let (t, _) = relay.wait_for(Duration::from_secs(5), |e| e.is("reply-chunk") && e.text.as_deref() == Some("One moment, please."));
    let after = t.duration_since(t0);
    assert!(after < Duration::from_millis(1500), "the holding phrase came {after:?} after the turn");
    wait_record(&record, "slow started", Duration::from_secs(5));
    relay.send(Event::new("cancel").with_turn(1));
    let (_, end) = relay.wait_for(Duration::from_secs(5), |e| e.is("reply-end") && e.turn == Some(1));
    assert_eq!(end.get_bool("cancelled"), Some(true));
    // The server saw MCP's notifications/cancelled (its tool's scope was cancelled).
    wait_record(&record, "slow cancelled", Duration::from_secs(5));
    // The next turn is answered; nothing more of turn 1 came, and the LLM was never asked
    // to go on with the cancelled call's result.
    relay.send(transcript(2, "Something else."));
    relay.wait_reply_end(2);
    let (events, stderr) = relay.finish();
    assert_eq!(chunks_of(&events, 1), ["One moment, please."]);
    assert_eq!(chunks_of(&events, 2), ["Something else, then."]);
    assert_eq!(server.count(), 2, "a request after the cancelled tool call");
    assert!(!std::fs::read_to_string(&record).unwrap().contains("slow finished"));
    assert!(stderr.contains("tool \"slow\" (MCP server \"test\"): cancelled"), "{stderr}");
    // A cancelled reply that said nothing leaves no tool exchange in the history.
    let lines = conversation(state.path());
    assert!(lines.iter().all(|l| l.get("calls").is_none()), "{lines:?}");
}

/// The stand-in for the failure tests: after tool results it says what came back (its size,
/// whether it was an error); else it calls the tool the caller's words name.
fn failures_standin() -> StandIn {
    StandIn::start(|_, body| {
        let msgs = body["messages"].as_array().unwrap();
        let last = msgs.last().unwrap();
        if let Some(result) = last["content"].as_array().and_then(|b| b.iter().find(|b| b["type"] == "tool_result")) {
            let content = result["content"].as_str().unwrap();
            let error = if result["is_error"] == true { "an error" } else { "a result" };
            let head: String = content.chars().take(12).filter(|c| c.is_alphanumeric() || *c == ' ').collect();
            let sse = anthropic_sse(&[&format!("Got {error} of {} bytes: {head}.", content.len())]);
            return Response::sse(awkward(&sse, 31), true);
        }
        let sse = match last_user_text(body).as_str() {
            "Big." => anthropic_tool_sse("", &[("t_big", "big", "{}")]),
            "Bad." => anthropic_tool_sse("", &[("t_bad", "echo", r#"{"text": "unterminated"#)]),
            "Crash." => anthropic_tool_sse("", &[("t_crash", "crash", "{}")]),
            "Echo." => anthropic_tool_sse("", &[("t_echo", "echo", r#"{"text": "again"}"#)]),
            other => anthropic_sse(&[&format!("No tools for: {other}")]),
        };
        Response::sse(awkward(&sse, 31), true)
    })
}

/// Lines of `log` with `needle`, debug lines left out.
fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle) && !l.contains(" debug: ")).count()
}

#[test]
fn a_server_that_never_answers_initialize_and_one_that_cannot_start_get_one_line_each() {
    let server = failures_standin();
    let state = tempfile::tempdir().unwrap();
    let silent = repo_root().join("bins/llm-relay/tests/data/mcp_silent_server.py");
    let tools = tools_file(
        state.path(),
        json!({"silent": {"command": venv_bin("python"), "args": [silent]}, "missing": {"command": "/nonexistent/mcp-server"}}),
    );
    let mut cmd = relay_command(state.path());
    cmd.env("ANTHROPIC_API_KEY", "sk-ant-test").arg("--base-url").arg(server.base());
    cmd.args(["--model", "claude-test", "--tool-start-timeout", "1", "--tools"]).arg(&tools);
    let mut relay = Relay::spawn(cmd);
    // No server delays the first reply: the first turn is answered while they start.
    relay.send(transcript(1, "Hello."));
    relay.wait_reply_end(1);
    wait_log(&relay, "MCP server \"silent\"", Duration::from_secs(10));
    wait_log(&relay, "MCP server \"missing\"", Duration::from_secs(10));
    relay.send(transcript(2, "Still there?"));
    relay.wait_reply_end(2);
    let (events, stderr) = relay.finish();
    assert_eq!(chunks_of(&events, 1), ["No tools for: Hello."]);
    assert_eq!(chunks_of(&events, 2), ["No tools for: Still there?"]);
    assert!(server.request(1).body.get("tools").is_none(), "no server up, no tools offered");
    assert_eq!(lines_with(&stderr, "MCP server \"silent\""), 1, "{stderr}");
    assert!(stderr.contains("did not answer initialize within 1 s; the call goes on without its tools"), "{stderr}");
    assert_eq!(lines_with(&stderr, "MCP server \"missing\""), 1, "{stderr}");
    assert!(stderr.contains("cannot start it (No such file"), "{stderr}");
}

#[test]
fn a_huge_result_bad_arguments_and_a_crash_each_get_one_line_and_an_answer() {
    let server = failures_standin();
    let state = tempfile::tempdir().unwrap();
    let record = state.path().join("record.txt");
    let servers = json!({"test": test_server(&record)});
    let mut relay = claude_with_tools(&server, state.path(), servers, &["--tool-holding-after", "0"], "test");
    relay.send(transcript(1, "Big."));
    relay.wait_reply_end(1);
    relay.send(transcript(2, "Bad."));
    relay.wait_reply_end(2);
    relay.send(transcript(3, "Crash."));
    relay.wait_reply_end(3);
    wait_log(&relay, "MCP server \"test\" restarted", Duration::from_secs(30));
    relay.send(transcript(4, "Echo."));
    relay.wait_reply_end(4);
    let (events, stderr) = relay.finish();

    // 1 MiB cut to the 16 KiB cap, with a note the LLM sees; one log line.
    assert_eq!(lines_with(&stderr, "returned 1048576 bytes"), 1, "{stderr}");
    let big = chunks_of(&events, 1).join(" ");
    let size: usize = big.split(" of ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((16384..16384 + 200).contains(&size), "{big}");
    assert!(big.starts_with("Got a result"), "{big}");
    // Malformed arguments: not run, the LLM is told; one line.
    assert_eq!(chunks_of(&events, 2).join(" ").split(" of ").next(), Some("Got an error"));
    assert_eq!(lines_with(&stderr, "call of \"echo\" is unusable"), 1, "{stderr}");
    assert!(!std::fs::read_to_string(&record).unwrap().contains("echo unterminated"));
    // A crash mid-call: an error result, one line, an answer; the server comes back.
    assert_eq!(chunks_of(&events, 3).join(" ").split(" of ").next(), Some("Got an error"));
    assert_eq!(lines_with(&stderr, "stopped during the call"), 1, "{stderr}");
    assert_eq!(chunks_of(&events, 4).join(" "), "Got a result of 11 bytes: echo again.");
    wait_record(&record, "echo again", Duration::from_secs(1));
}

#[test]
fn a_tool_that_times_out_or_fails_is_reported_to_the_llm_which_answers() {
    let server = StandIn::start(|_, body| {
        let last = body["messages"].as_array().unwrap().last().unwrap().clone();
        if let Some(result) = last["content"].as_array().and_then(|b| b.iter().find(|b| b["type"] == "tool_result")) {
            let sse = anthropic_sse(&[&format!("Told: {}", result["content"].as_str().unwrap())]);
            return Response::sse(awkward(&sse, 37), true);
        }
        let sse = match last_user_text(body).as_str() {
            "Slow." => anthropic_tool_sse("", &[("t_slow", "slow", r#"{"seconds": 30}"#)]),
            // echo without its required argument: the server answers with an error result
            _ => anthropic_tool_sse("", &[("t_echo", "echo", "{}")]),
        };
        Response::sse(awkward(&sse, 37), true)
    });
    let state = tempfile::tempdir().unwrap();
    let record = state.path().join("record.txt");
    let flags = ["--tool-timeout", "1", "--tool-holding-after", "0"];
    let mut relay = claude_with_tools(&server, state.path(), json!({"test": test_server(&record)}), &flags, "test");
    let t0 = Instant::now();
    relay.send(transcript(1, "Slow."));
    relay.wait_reply_end(1);
    assert!(t0.elapsed() < Duration::from_secs(10), "the 30 s tool was not cut at --tool-timeout");
    // Timed out: cancelled at the server too.
    wait_record(&record, "slow cancelled", Duration::from_secs(5));
    relay.send(transcript(2, "Echo nothing."));
    relay.wait_reply_end(2);
    let (events, stderr) = relay.finish();
    assert_eq!(chunks_of(&events, 1).join(" "), "Told: The tool \"slow\" did not answer within 1 s.");
    assert!(stderr.contains("tool \"slow\" (MCP server \"test\") timed out after 1000 ms"), "{stderr}");
    let result = server.request(1).body["messages"].as_array().unwrap().last().unwrap()["content"][0].clone();
    assert_eq!(result["is_error"], true, "{result}");
    let result = server.request(3).body["messages"].as_array().unwrap().last().unwrap()["content"][0].clone();
    assert_eq!(result["is_error"], true, "{result}");
    assert!(chunks_of(&events, 2).join(" ").starts_with("Told:"), "{events:?}");
}

#[test]
fn tool_rounds_and_calls_per_reply_are_bounded() {
    // A model that never stops calling tools (two per message), even when told not to.
    let server = StandIn::start(|i, _| {
        let (a, b) = (format!("e{i}a"), format!("e{i}b"));
        let (ta, tb) = (format!(r#"{{"text": "{a}"}}"#), format!(r#"{{"text": "{b}"}}"#));
        Response::sse(awkward(&anthropic_tool_sse(&format!("Step {i}."), &[(&a, "echo", &ta), (&b, "echo", &tb)]), 41), true)
    });
    let state = tempfile::tempdir().unwrap();
    let record = state.path().join("record.txt");
    let flags = ["--max-tool-rounds", "2", "--max-tool-calls", "3", "--tool-holding-after", "0"];
    let mut relay = claude_with_tools(&server, state.path(), json!({"test": test_server(&record)}), &flags, "test");
    relay.send(transcript(1, "Loop."));
    relay.wait_reply_end(1);
    let (events, stderr) = relay.finish();
    // Two rounds of results; the third request says tool_choice none, and its calls are not run.
    assert_eq!(server.count(), 3);
    assert!(server.request(1).body.get("tool_choice").is_none());
    assert_eq!(server.request(2).body["tool_choice"], json!({"type": "none"}));
    assert_eq!(chunks_of(&events, 1), ["Step 0.", "Step 1.", "Step 2."]);
    let echoes: Vec<String> =
        std::fs::read_to_string(&record).unwrap().lines().filter(|l| l.starts_with("echo ")).map(str::to_string).collect();
    assert_eq!(echoes.len(), 3, "{echoes:?}");
    // The fourth call of the reply is answered with an error, not run.
    let msgs = server.request(2).body["messages"].as_array().unwrap().clone();
    let refused = &msgs.last().unwrap()["content"][1];
    assert_eq!((&refused["tool_use_id"], &refused["is_error"]), (&json!("e1b"), &json!(true)), "{refused}");
    assert!(refused["content"].as_str().unwrap().contains("too many tool calls"), "{refused}");
    assert!(stderr.contains("(--max-tool-calls)") && stderr.contains("(--max-tool-rounds); not run"), "{stderr}");
}

#[test]
fn a_reply_started_early_records_its_tool_exchange_after_the_callers_words_when_it_stands() {
    let server = StandIn::start(|i, _| {
        let sse = match i {
            0 => anthropic_tool_sse("", &[("t_early", "echo", r#"{"text": "early"}"#)]),
            _ => anthropic_sse(&["Echoed early."]),
        };
        Response::sse(awkward(&sse, 19), true)
    });
    let state = tempfile::tempdir().unwrap();
    let record = state.path().join("record.txt");
    let mut relay = claude_with_tools(&server, state.path(), json!({"test": test_server(&record)}), &[], "test");
    relay.send(Event::new("speech-start").with_turn(1));
    relay.send(
        Event::new("transcript").with_turn(1).with_text("Echo early please.").with("final", false).with("preview", true),
    );
    // The held reply runs its tool and asks again before the caller's turn has ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.count() < 2 {
        assert!(Instant::now() < deadline, "the held reply never sent the tool result:\n{}", relay.stderr());
        std::thread::sleep(Duration::from_millis(5));
    }
    relay.send(Event::new("speech-end").with_turn(1));
    relay.send(transcript(1, "Echo early please."));
    relay.wait_reply_end(1);
    let (events, stderr) = relay.finish();
    assert!(stderr.contains("the reply started early stands"), "{stderr}");
    assert_eq!(server.count(), 2, "{stderr}");
    assert_eq!(chunks_of(&events, 1), ["Echoed early."]);
    let lines = conversation(state.path());
    let shape: Vec<(&str, bool, bool, &str)> = lines
        .iter()
        .map(|l| (l["role"].as_str().unwrap(), l.get("calls").is_some(), l.get("results").is_some(), l["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        shape,
        [
            ("user", false, false, "Echo early please."),
            ("assistant", true, false, ""),
            ("user", false, true, ""),
            ("assistant", false, false, "Echoed early.")
        ]
    );
}

#[test]
fn a_tools_file_that_is_not_one_stops_the_relay_with_one_line_saying_what_and_where() {
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("mcp.json");
    std::fs::write(&file, r#"{"mcpServers": {"time": {"args": ["x"]}}}"#).unwrap();
    let out = relay_command(state.path())
        .env("ANTHROPIC_API_KEY", "sk-ant-test")
        .arg("--tools")
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let line = stderr.lines().find(|l| l.contains("mcp.json")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("server \"time\" has no \"command\"") && line.contains("--tools off"), "{line}");
}

#[test]
fn a_model_that_only_ever_calls_tools_ends_in_the_apology_not_silence() {
    let server = StandIn::start(|i, _| {
        let id = format!("e{i}");
        Response::sse(awkward(&anthropic_tool_sse("", &[(&id, "echo", r#"{"text": "x"}"#)]), 41), true)
    });
    let state = tempfile::tempdir().unwrap();
    let record = state.path().join("record.txt");
    let flags = ["--max-tool-rounds", "1", "--tool-holding-after", "0"];
    let mut relay = claude_with_tools(&server, state.path(), json!({"test": test_server(&record)}), &flags, "test");
    relay.send(transcript(1, "Loop."));
    let end = relay.wait_reply_end(1);
    let (events, stderr) = relay.finish();
    assert_eq!(end.get_bool("error"), Some(true), "{stderr}");
    assert_eq!(chunks_of(&events, 1), ["Sorry, I can't answer right now. Please try again in a moment."]);
    assert!(stderr.contains("the LLM said nothing after 1 round(s) of tool calls"), "{stderr}");
    assert_eq!(server.count(), 2);
}

// ---- Call control (README "Call control"; fifo-layout.md "Call control") ----

fn call_start(controls: Value) -> Event {
    Event::new("call-start").with("call", "c-1").with("controls", controls)
}

/// A relay with no tools file and two transfer numbers, against the Claude stand-in.
fn control_relay(server: &StandIn, state: &Path) -> Relay {
    let mut cmd = claude_relay(server, state, Path::new("off"));
    cmd.args(["--tool-holding-after", "0", "--transfer-to", "sales=+15551230000", "--transfer-to", "desk=+15557654321"]);
    Relay::spawn(cmd)
}

fn kinds_of(events: &[Event], turn: u64) -> Vec<String> {
    events.iter().filter(|e| e.turn == Some(turn)).map(|e| e.kind.clone()).collect()
}

#[test]
fn end_call_says_goodbye_and_the_hangup_comes_after_the_reply() {
    let server = StandIn::start(|i, _| {
        let sse = match i {
            0 => anthropic_tool_sse("", &[("toolu_e", "end_call", "{}")]),
            _ => anthropic_sse(&["Goodbye, ", "take care!"]),
        };
        Response::sse(awkward(&sse, 17), true)
    });
    let state = tempfile::tempdir().unwrap();
    let mut relay = control_relay(&server, state.path());
    relay.send(call_start(json!(["end"])));
    relay.send(transcript(1, "That's all, bye."));
    let (_, hangup) = relay.wait_for(Duration::from_secs(20), |e| e.is("hangup"));
    let (events, stderr) = relay.finish();
    assert_eq!((hangup.turn, hangup.get_str("reason")), (Some(1), Some("assistant")));
    assert_eq!(chunks_of(&events, 1), ["Goodbye, take care!"]);
    // The event is the last of the turn: after the goodbye and its reply-end.
    assert_eq!(kinds_of(&events, 1), ["reply-chunk", "reply-end", "hangup"], "{stderr}");

    // Offered (the line can end calls; no "transfer" control: no transfer_call), and the
    // model was told to say goodbye.
    let first = server.request(0).body;
    let names: Vec<&str> = first["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["end_call"]);
    let result = &server.request(1).body["messages"][2]["content"][0];
    assert_eq!(result["tool_use_id"], "toolu_e");
    assert!(result["content"].as_str().unwrap().contains("goodbye"), "{result}");
    assert!(result.get("is_error").is_none());
}

#[test]
fn transfer_call_goes_out_after_the_notice_only_to_a_listed_number() {
    let server = StandIn::start(|i, _| {
        let sse = match i {
            0 => anthropic_tool_sse("", &[("toolu_x", "transfer_call", r#"{"to": "+15550000000"}"#)]),
            1 => anthropic_sse(&["I can't put you through there."]),
            2 => anthropic_tool_sse("", &[("toolu_s", "transfer_call", r#"{"to": "sales"}"#)]),
            _ => anthropic_sse(&["Putting you through to sales now."]),
        };
        Response::sse(awkward(&sse, 19), true)
    });
    let state = tempfile::tempdir().unwrap();
    let mut relay = control_relay(&server, state.path());
    relay.send(call_start(json!(["end", "transfer"])));
    relay.send(transcript(1, "Transfer me to plus one five five five, zero zero zero zero zero zero zero."));
    relay.wait_reply_end(1);
    relay.send(transcript(2, "Then sales, please."));
    let (_, transfer) = relay.wait_for(Duration::from_secs(20), |e| e.is("transfer"));
    let (events, stderr) = relay.finish();

    // Not on the list: an error result naming the choices, no event, one line.
    let refused = &server.request(1).body["messages"][2]["content"][0];
    assert_eq!(refused["is_error"], true, "{refused}");
    assert!(refused["content"].as_str().unwrap().contains("sales, desk"), "{refused}");
    assert_eq!(kinds_of(&events, 1), ["reply-chunk", "reply-end"], "{stderr}");
    assert_eq!(lines_with(&stderr, "not on the --transfer-to list"), 1, "{stderr}");

    // On the list: after the notice and its reply-end.
    assert_eq!((transfer.turn, transfer.get_str("to"), transfer.get_str("name")), (Some(2), Some("+15551230000"), Some("sales")));
    assert_eq!(kinds_of(&events, 2), ["reply-chunk", "reply-end", "transfer"], "{stderr}");
    let first = server.request(0).body;
    let names: Vec<&str> = first["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["end_call", "transfer_call"]);
}

#[test]
fn a_line_without_controls_or_with_call_control_off_is_offered_none() {
    let server = StandIn::start(|_, body| Response::sse(awkward(&anthropic_sse(&[&format!("You said: {}", last_user_text(body))]), 29), true));
    let state = tempfile::tempdir().unwrap();
    let mut relay = control_relay(&server, state.path());
    relay.send(transcript(1, "Hello."));
    relay.wait_reply_end(1);
    relay.send(call_start(json!([])));
    relay.send(transcript(2, "Bye."));
    relay.wait_reply_end(2);
    relay.finish();
    // A line that can, with `--call-control off`.
    let mut cmd = claude_relay(&server, state.path(), Path::new("off"));
    cmd.args(["--call-control", "off"]);
    let mut relay = Relay::spawn(cmd);
    relay.send(call_start(json!(["end", "transfer"])));
    relay.send(transcript(3, "Hang up."));
    relay.wait_reply_end(3);
    relay.finish();
    for i in 0..3 {
        assert!(server.request(i).body.get("tools").is_none(), "request {i}: {}", server.request(i).body);
    }
}

#[test]
fn a_goodbye_cut_off_by_the_caller_hangs_up_nothing() {
    let server = StandIn::start(|i, _| match i {
        0 => Response::sse(awkward(&anthropic_tool_sse("", &[("toolu_e", "end_call", "{}")]), 17), true),
        // The goodbye's first sentence, then the rest long after: the caller speaks in between.
        1 => {
            let head = format!("{}{}", anthropic_sse_head(), anthropic_delta("Goodbye now. "));
            let tail = format!("{}{}", anthropic_delta("Take care."), anthropic_sse_tail());
            Response::sse(vec![piece(head), slow_piece(3000, tail)], true)
        }
        _ => Response::sse(awkward(&anthropic_sse(&["Still here."]), 17), true),
    });
    let state = tempfile::tempdir().unwrap();
    let mut relay = control_relay(&server, state.path());
    relay.send(call_start(json!(["end"])));
    relay.send(transcript(1, "Bye."));
    relay.wait_for(Duration::from_secs(10), |e| e.is("reply-chunk") && e.text.as_deref() == Some("Goodbye now."));
    relay.send(Event::new("cancel").with_turn(1));
    let (_, end) = relay.wait_for(Duration::from_secs(5), |e| e.is("reply-end") && e.turn == Some(1));
    assert_eq!(end.get_bool("cancelled"), Some(true));
    relay.send(transcript(2, "Wait, one more thing."));
    relay.wait_reply_end(2);
    let (events, stderr) = relay.finish();
    assert!(events.iter().all(|e| !e.is("hangup")), "{events:?}");
    assert_eq!(chunks_of(&events, 2), ["Still here."]);
    assert!(stderr.contains("turn 1: the reply was cut off; no hangup"), "{stderr}");
}

/// The small local model cannot call tools (README "Tools"): with a tools file it says so in
/// one line, starts no server and offers no tool; the call goes on and is answered.
#[test]
fn the_small_local_model_gets_no_tools_and_one_line_says_why() {
    let server = StandIn::start(|_, _| Response::sse(awkward(&openai_sse(&["It is noon."]), 17), true));
    let state = tempfile::tempdir().unwrap();
    let tools = tools_file(state.path(), json!({"time": time_server()}));
    let mut cmd = relay_command(state.path());
    cmd.arg("--base-url").arg(format!("{}/v1", server.base()));
    cmd.args(["--model", "SmolLM2-135M-Instruct", "--end-judge", "off", "--tools"]).arg(&tools);
    let mut relay = Relay::spawn(cmd);
    relay.send(transcript(1, "What time is it?"));
    relay.wait_reply_end(1);
    let (events, stderr) = relay.finish();
    assert_eq!(chunks_of(&events, 1), ["It is noon."]);
    assert_eq!(lines_with(&stderr, "cannot call tools"), 1, "{stderr}");
    assert!(!stderr.contains("MCP server \"time\" ready"), "a server was started: {stderr}");
    assert!(server.request(0).body.get("tools").is_none(), "{}", server.request(0).body);
}

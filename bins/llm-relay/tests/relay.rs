//! llm-relay against loopback stand-ins that speak the real Anthropic / OpenAI streaming
//! wire format: split reads, split UTF-8, ping/error events, slow streams, HTTP errors,
//! barge-in cancel, and a restart that must keep the conversation.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use tgvoice::Event;

const KEY: &str = "sk-ant-test-SECRET-0123456789";

fn anthropic_relay(server: &StandIn, state: &std::path::Path) -> std::process::Command {
    let mut cmd = relay_command(state);
    cmd.env("ANTHROPIC_API_KEY", KEY).arg("--base-url").arg(server.base()).args(["--model", "claude-test"]);
    cmd
}

fn openai_relay(server: &StandIn, state: &std::path::Path) -> std::process::Command {
    let mut cmd = relay_command(state);
    cmd.env("OPENAI_API_KEY", KEY).arg("--base-url").arg(format!("{}/v1", server.base()));
    cmd
}

fn messages(body: &Value) -> Vec<(String, String)> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_string(), m["content"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn anthropic_stream_split_across_reads_with_utf8_and_ping() {
    let body = anthropic_sse(&[
        "Héllo wörld",
        ", this is the first clause",
        " — and 😀 more. The plan costs $29",
        ".99 a month, e.g",
        ". with Dr. Who. Done",
    ]);
    let bytes = body.as_bytes();
    // Cut inside "é" (2 bytes) and "😀" (4 bytes), mid-line and mid-event.
    let e_acute = body.find('é').unwrap() + 1;
    let emoji = body.find('😀').unwrap() + 2;
    let cuts = [7, 60, e_acute, e_acute + 9, emoji, emoji + 1, bytes.len() - 30];
    let pieces = split_at(bytes, &cuts);
    let server = StandIn::start(move |_, _| Response::sse(pieces.clone(), true));
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(transcript(1, "Say hello."));
    relay.wait_reply_end(1);
    let (events, stderr) = relay.finish();
    assert_eq!(
        chunks_of(&events, 1),
        vec![
            "Héllo wörld, this is the first clause —",
            "and more.",
            "The plan costs $29.99 a month, e.g. with Dr. Who.",
            "Done"
        ]
    );
    let end = events.iter().find(|e| e.is("reply-end")).unwrap();
    assert_eq!(end.get_bool("cancelled"), Some(false));
    for k in ["transcript", "llm_request", "llm_first_token", "first_chunk"] {
        assert!(end.trace.get(k).is_some(), "trace lacks {k}: {end:?}");
    }
    let req = server.request(0);
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.header("x-api-key"), Some(KEY));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["model"], "claude-test");
    assert!(req.body["system"].as_str().unwrap().contains("spoken"));
    assert_eq!(messages(&req.body), vec![("user".into(), "Say hello.".into())]);
    assert!(!stderr.contains("SECRET"), "the API key leaked into the log:\n{stderr}");
}

#[test]
fn openai_stream_close_delimited_with_markdown() {
    let body = openai_sse(&[
        "## Answer\n",
        "**Yes** — see [the docs](https://x.example/a",
        ").\n```py\nprint('",
        "hi')\n```\nIt costs 3.",
        "14 euros ",
        "🎉. Bye!",
    ]);
    let bytes = body.as_bytes().to_vec();
    let cuts: Vec<usize> = (1..bytes.len()).step_by(37).collect(); // many small reads
    let pieces: Vec<Piece> = split_at(&bytes, &cuts)
        .into_iter()
        .map(|mut p| {
            p.delay = Duration::from_millis(1);
            p
        })
        .collect();
    let server = StandIn::start(move |_, _| Response::sse(pieces.clone(), false));
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(openai_relay(&server, state.path()));
    relay.send(transcript(7, "Is it cheap?"));
    relay.wait_reply_end(7);
    let (events, stderr) = relay.finish();
    assert_eq!(chunks_of(&events, 7), vec!["Answer", "Yes — see the docs.", "It costs 3.14 euros.", "Bye!"]);
    let req = server.request(0);
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.header("authorization").map(String::from), Some(format!("Bearer {KEY}")));
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["messages"][0]["role"], "system");
    assert!(!stderr.contains("SECRET"));
}

#[test]
fn slow_stream_chunks_are_written_as_they_complete() {
    // Sentence one arrives at once; the rest trickles in over ~1.2 s.
    let mut pieces = vec![piece(anthropic_sse_head()), piece(anthropic_delta("First things first. "))];
    for w in ["Then ", "the ", "second ", "sentence ", "comes ", "slowly."] {
        pieces.push(slow_piece(200, anthropic_delta(w)));
    }
    pieces.push(piece(anthropic_sse_tail()));
    let server = StandIn::start(move |_, _| Response::sse(pieces.clone(), true));
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(transcript(2, "Go."));
    let (t_first, first) = relay.wait_for(Duration::from_secs(10), |e| e.is("reply-chunk"));
    assert_eq!(first.text.as_deref(), Some("First things first."));
    let (t_end, _) = relay.wait_for(Duration::from_secs(10), |e| e.is("reply-end"));
    assert!(
        t_end.duration_since(t_first) > Duration::from_millis(900),
        "the first sentence was held back until the stream ended"
    );
    let (events, _) = relay.finish();
    assert_eq!(chunks_of(&events, 2), vec!["First things first.", "Then the second sentence comes slowly."]);
}

#[test]
fn barge_in_cancels_mid_sentence_and_history_keeps_only_what_was_spoken() {
    // Request 0: one sentence, then half of the next, then more tokens much later (which must
    // never be written), holding the connection open. Request 1: a normal reply.
    let server = StandIn::start(|i, _| {
        if i == 0 {
            let mut pieces = vec![
                piece(anthropic_sse_head()),
                piece(anthropic_delta("The first sentence is spoken. ")),
                piece(anthropic_delta("The second one is cut")),
            ];
            // Arrives long after the cancel (the test cancels ~150 ms after the first chunk).
            pieces.push(slow_piece(1500, anthropic_delta(" off, never heard. More.")));
            for _ in 0..20 {
                pieces.push(slow_piece(100, anthropic_delta(" Still talking.")));
            }
            let mut r = Response::sse(pieces, true);
            r.hold_open = true;
            r
        } else {
            Response::sse(split_at(anthropic_sse(&["Sure, go ahead."]).as_bytes(), &[]), true)
        }
    });
    let state = tempfile::tempdir().unwrap();
    // `--barge-in cancel`: speech-start itself cancels (the pause-first default waits for the
    // turn's words; see the tests after this one).
    let mut cmd = anthropic_relay(&server, state.path());
    cmd.args(["--barge-in", "cancel"]);
    let mut relay = Relay::spawn(cmd);
    relay.send(transcript(3, "Tell me two things."));
    relay.wait_for(Duration::from_secs(10), |e| e.is("reply-chunk"));
    std::thread::sleep(Duration::from_millis(150)); // "cut" has arrived; the slow part has not
    let mut barge = Event::new("speech-start").with_turn(4);
    barge.trace.mark("speech_start", tgvoice::clock::now_us());
    let t_cancel = Instant::now();
    relay.send(barge);
    let (t_end, end) = relay.wait_for(Duration::from_secs(5), |e| e.is("reply-end"));
    assert_eq!(end.turn, Some(3));
    assert_eq!(end.get_bool("cancelled"), Some(true));
    assert!(end.trace.get("llm_request").is_some(), "the cancelled reply-end lost its trace: {end:?}");
    let cancel_ms = t_end.duration_since(t_cancel).as_secs_f64() * 1000.0;
    eprintln!("speech-start written → cancelled reply-end read: {cancel_ms:.1} ms");
    assert!(cancel_ms < 50.0, "cancel took {cancel_ms:.1} ms (target < 50 ms)");
    // The stand-in sees the connection dropped.
    let closed = {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(t) = *server.request(0).closed_at.lock().unwrap() {
                break Some(t);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let closed = closed.expect("the relay did not close the HTTP connection after the cancel");
    eprintln!(
        "speech-start written → server saw the connection closed: {:.1} ms",
        closed.duration_since(t_cancel).as_secs_f64() * 1000.0
    );
    // Nothing more of turn 3 after the cancel, even though the server kept streaming.
    std::thread::sleep(Duration::from_millis(400));
    relay.send(transcript(4, "Actually, wait."));
    relay.wait_reply_end(4);
    let (events, _) = relay.finish();
    let order: Vec<String> = events.iter().map(|e| format!("{}:{}", e.kind, e.turn.unwrap_or(0))).collect();
    let pos = |k: &str| order.iter().position(|o| o == k).unwrap();
    assert!(pos("speech-start:4") < pos("reply-end:3"), "{order:?}");
    assert_eq!(chunks_of(&events, 3), vec!["The first sentence is spoken."]);
    let after_end: Vec<&Event> = events[pos("reply-end:3")..].iter().filter(|e| e.turn == Some(3)).collect();
    assert_eq!(after_end.len(), 1, "frames of the cancelled turn after its reply-end: {after_end:?}");
    // The next request: the interrupted reply holds only what was spoken, marked.
    let m = messages(&server.request(1).body);
    assert_eq!(
        m,
        vec![
            ("user".into(), "Tell me two things.".into()),
            ("assistant".into(), "The first sentence is spoken. [interrupted]".into()),
            ("user".into(), "Actually, wait.".into()),
        ]
    );
}

#[test]
fn restart_between_turns_keeps_the_conversation_and_call_start_begins_a_new_one() {
    let server = StandIn::start(|i, _| {
        let text = ["Nice to meet you, Ada.", "Your name is Ada.", "Hello!"][i.min(2)];
        Response::sse(split_at(anthropic_sse(&[text]).as_bytes(), &[40]), true)
    });
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(transcript(1, "My name is Ada."));
    relay.wait_reply_end(1);
    std::thread::sleep(Duration::from_millis(100));
    relay.kill(); // SIGKILL between turns

    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(transcript(2, "What is my name?"));
    relay.wait_reply_end(2);
    relay.send(Event::new("call-start").with("call", "c-2"));
    relay.send(transcript(3, "Hi."));
    relay.wait_reply_end(3);
    let (events, _) = relay.finish();
    assert_eq!(
        messages(&server.request(1).body),
        vec![
            ("user".into(), "My name is Ada.".into()),
            ("assistant".into(), "Nice to meet you, Ada.".into()),
            ("user".into(), "What is my name?".into()),
        ]
    );
    assert_eq!(messages(&server.request(2).body), vec![("user".into(), "Hi.".into())]);
    assert!(events.iter().any(|e| e.is("call-start")), "call-start was not forwarded");
}

#[test]
fn errors_retry_then_apologise_without_crashing_or_leaking_the_key() {
    // Turn 1: 429 then 529 then success (retried before the first token).
    // Turn 2: 401 (not retried) → apology.
    // Turn 3: an `error` event mid-stream before any text, non-retryable → apology.
    // Turn 4: malformed SSE data → apology.  Turn 5: fine again.
    let server = StandIn::start(|i, _| {
        match i {
        0 => {
            let mut r = Response::error(429, r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#);
            r.headers.push(("retry-after".into(), "0".into()));
            r
        }
        1 => Response::error(529, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
        2 => Response::sse(split_at(anthropic_sse(&["Third time lucky."]).as_bytes(), &[100]), true),
        3 => Response::error(401, r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#),
        4 => Response::sse(
            vec![piece(anthropic_sse_head()), piece("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"bad\"}}\n\n")],
            true,
        ),
        5 => Response::sse(vec![piece(anthropic_sse_head()), piece("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_del\n\n")], true),
        _ => Response::sse(split_at(anthropic_sse(&["All good now."]).as_bytes(), &[]), true),
    }
    });
    let state = tempfile::tempdir().unwrap();
    let mut cmd = anthropic_relay(&server, state.path());
    cmd.args(["--apology", "Sorry, something went wrong."]);
    let mut relay = Relay::spawn(cmd);
    for (turn, q) in [(1, "one"), (2, "two"), (3, "three"), (4, "four"), (5, "five")] {
        relay.send(transcript(turn, q));
        relay.wait_reply_end(turn);
    }
    let (events, stderr) = relay.finish();
    assert_eq!(chunks_of(&events, 1), vec!["Third time lucky."]);
    for turn in [2, 3, 4] {
        assert_eq!(chunks_of(&events, turn), vec!["Sorry, something went wrong."], "turn {turn}");
        let end = events.iter().find(|e| e.is("reply-end") && e.turn == Some(turn)).unwrap();
        assert_eq!(end.get_bool("error"), Some(true));
        let err = events.iter().find(|e| e.is("error") && e.turn == Some(turn)).expect("an error event");
        assert_eq!(err.get_str("stage"), Some("llm-relay"));
        assert!(!err.get_str("message").unwrap_or("").contains("SECRET"));
    }
    assert_eq!(chunks_of(&events, 5), vec!["All good now."]);
    assert_eq!(server.count(), 7, "401 and non-retryable errors must not be retried");
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert!(stderr.contains("retrying"), "{stderr}");
    assert!(!stderr.contains("SECRET"), "the API key leaked into the log:\n{stderr}");
    // Failed turns leave no assistant message; the apology is not history.
    let last = messages(&server.request(6).body);
    assert!(last.iter().all(|(_, t)| !t.contains("Sorry")), "{last:?}");
}

#[test]
fn connection_refused_and_timeouts_end_in_a_spoken_apology() {
    // A port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let state = tempfile::tempdir().unwrap();
    let mut cmd = relay_command(state.path());
    cmd.args(["--provider", "local", "--local-port", &port.to_string(), "--retries", "1"]);
    let mut relay = Relay::spawn(cmd);
    relay.send(transcript(1, "Hello?"));
    relay.wait_reply_end(1);
    // A server that accepts but never sends a token: first-token timeout.
    let server = StandIn::start(|_, _| {
        let mut r = Response::sse(vec![piece(": keep-alive comment\n\n")], false);
        r.hold_open = true;
        r
    });
    let (events, stderr) = relay.finish();
    assert_eq!(chunks_of(&events, 1).len(), 1);
    assert!(stderr.contains("no API key configured; using the local llama.cpp server"), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");

    let mut cmd = openai_relay(&server, state.path());
    cmd.args(["--first-token-timeout", "0.5", "--retries", "0"]);
    let mut relay = Relay::spawn(cmd);
    let t0 = Instant::now();
    relay.send(transcript(2, "Anyone?"));
    relay.wait_reply_end(2);
    assert!(t0.elapsed() < Duration::from_secs(3));
    let (events, stderr) = relay.finish();
    assert_eq!(chunks_of(&events, 2), vec![tgvoice_default_apology()]);
    assert!(stderr.contains("no reply token"), "{stderr}");
}

fn tgvoice_default_apology() -> String {
    "Sorry, I can't answer right now. Please try again in a moment.".into()
}

#[test]
fn forwards_unknown_events_and_ignores_partial_transcripts() {
    let server = StandIn::start(|_, _| Response::sse(split_at(anthropic_sse(&["Ok."]).as_bytes(), &[]), true));
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(Event::new("x-custom").with("payload", 42));
    relay.send(Event::new("transcript").with_turn(1).with_text("partial").with("final", false));
    relay.send(Event::new("speech-end").with_turn(1));
    relay.send(transcript(1, "Final."));
    relay.wait_reply_end(1);
    let (events, _) = relay.finish();
    let custom = events.iter().find(|e| e.is("x-custom")).expect("x-custom forwarded");
    assert_eq!(custom.get_u64("payload"), Some(42));
    assert!(events.iter().any(|e| e.is("speech-end")));
    assert_eq!(server.count(), 1, "a partial transcript must not start a reply");
    assert_eq!(chunks_of(&events, 1), vec!["Ok."]);
}

#[test]
fn named_fifos_and_the_json_lines_tap() {
    use std::io::{BufRead, Read, Write};
    let server =
        StandIn::start(|_, _| Response::sse(split_at(anthropic_sse(&["Over the FIFO."]).as_bytes(), &[]), true));
    let dir = tempfile::tempdir().unwrap();
    let (input, output, tap) =
        (dir.path().join("text.frames"), dir.path().join("reply.frames"), dir.path().join("reply.tap"));
    for p in [&input, &output, &tap] {
        assert!(std::process::Command::new("mkfifo").arg(p).status().unwrap().success());
    }
    let mut cmd = anthropic_relay(&server, &dir.path().join("state"));
    cmd.arg("-i").arg(&input).arg("-o").arg(&output);
    let mut child = cmd.stdin(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Tap reader (JSON lines) and output reader (frames), each on its own thread.
    let (tap_tx, tap_rx) = std::sync::mpsc::channel::<String>();
    let tap_path = tap.clone();
    std::thread::spawn(move || {
        let f = std::fs::File::open(tap_path).unwrap();
        for line in std::io::BufReader::new(f).lines() {
            let Ok(line) = line else { return };
            if tap_tx.send(line).is_err() {
                return;
            }
        }
    });
    let (out_tx, out_rx) = std::sync::mpsc::channel::<tgvoice::Frame>();
    let out_path = output.clone();
    std::thread::spawn(move || {
        let mut f = std::fs::File::open(out_path).unwrap();
        let mut dec = tgvoice::frame::FrameDecoder::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                return;
            }
            dec.push(&buf[..n]);
            while let Some(Ok(fr)) = dec.next() {
                let _ = out_tx.send(fr);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(600)); // let the relay attach its tap
    let mut w = std::fs::OpenOptions::new().write(true).open(&input).unwrap();
    w.write_all(&tgvoice::frame::encode(&tgvoice::Frame::Event(transcript(1, "Hi.")))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = vec![];
    while !out.iter().any(|e: &Event| e.is("reply-end")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match out_rx.recv_timeout(left) {
            Ok(tgvoice::Frame::Event(e)) => out.push(e),
            Ok(_) => {}
            Err(_) => panic!("no reply-end on reply.frames; got {out:?}"),
        }
    }
    assert_eq!(chunks_of(&out, 1), vec!["Over the FIFO."]);
    let mut tap_lines = vec![];
    while tap_lines.len() < 2 {
        tap_lines.push(tap_rx.recv_timeout(Duration::from_secs(5)).expect("tap lines"));
    }
    let first: Value = serde_json::from_str(&tap_lines[0]).unwrap();
    assert_eq!(first["type"], "reply-chunk");
    assert_eq!(first["text"], "Over the FIFO.");
    let second: Value = serde_json::from_str(&tap_lines[1]).unwrap();
    assert_eq!(second["type"], "reply-end");
    // The writer of text.frames goes away: the relay keeps waiting for it (no exit).
    drop(w);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "llm-relay exited when the FIFO writer went away");
    let _ = child.kill();
    let _ = child.wait();
}

// ---- never two user messages in a row (a caller who pauses and goes on said one message) ----

fn turn_event(kind: &str, turn: u64) -> Event {
    Event::new(kind).with_turn(turn)
}

fn conversation_lines(state: &std::path::Path) -> Vec<(String, String)> {
    let dir = state.join("conversations");
    let file = std::fs::read_dir(&dir).unwrap().next().expect("a conversation file").unwrap().path();
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["role"].as_str().unwrap().to_string(), v["text"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Request 0 never says anything before the test moves on (held open); later ones answer.
fn silent_then(answer: &'static str) -> StandIn {
    StandIn::start(move |i, _| {
        if i == 0 {
            let mut r = Response::sse(vec![piece(anthropic_sse_head()), slow_piece(3000, anthropic_delta("Too late."))], true);
            r.hold_open = true;
            r
        } else {
            Response::sse(split_at(anthropic_sse(&[answer]).as_bytes(), &[]), true)
        }
    })
}

fn wait_requests(server: &StandIn, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.count() < n {
        assert!(Instant::now() < deadline, "expected {n} request(s), saw {}", server.count());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn going_on_before_the_reply_is_heard_merges_both_parts_into_one_message() {
    let server = silent_then("A table for four, got it.");
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(turn_event("speech-start", 1));
    relay.send(turn_event("speech-end", 1));
    relay.send(transcript(1, "I'd like a table for"));
    wait_requests(&server, 1); // the first part is being answered…
    relay.send(turn_event("speech-start", 2)); // …when the caller goes on
    let (_, end) = relay.wait_for(Duration::from_secs(5), |e| e.is("reply-end"));
    assert_eq!((end.turn, end.get_bool("cancelled")), (Some(1), Some(true)));
    relay.send(turn_event("speech-end", 2));
    relay.send(transcript(2, "four people."));
    let end = relay.wait_reply_end(2);
    assert_eq!(end.get_bool("cancelled"), Some(false));
    let (events, _) = relay.finish();
    assert!(chunks_of(&events, 1).is_empty(), "the dropped reply spoke: {:?}", chunks_of(&events, 1));
    assert_eq!(chunks_of(&events, 2).join(" "), "A table for four, got it.");
    assert_eq!(server.count(), 2);
    assert_eq!(messages(&server.request(1).body), vec![("user".into(), "I'd like a table for four people.".into())]);
    // The history holds one user message and its reply: nothing of the dropped first answer.
    assert_eq!(
        conversation_lines(state.path()),
        vec![
            ("user".into(), "I'd like a table for four people.".into()),
            ("assistant".into(), "A table for four, got it.".into())
        ]
    );
}

#[test]
fn a_part_transcribed_while_the_caller_speaks_on_waits_for_the_rest() {
    let server = StandIn::start(|_, _| Response::sse(split_at(anthropic_sse(&["Thanks, noted."]).as_bytes(), &[]), true));
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    // sttd was slow: the caller's next turn started before the first part's transcript came.
    relay.send(turn_event("speech-start", 10));
    relay.send(turn_event("speech-end", 10));
    relay.send(turn_event("speech-start", 11));
    relay.send(transcript(10, "My number is five five five"));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(server.count(), 0, "answered half a sentence while the caller was still speaking");
    relay.send(turn_event("speech-end", 11));
    relay.send(transcript(11, "one two three."));
    relay.wait_reply_end(11);
    let (events, _) = relay.finish();
    assert_eq!(server.count(), 1);
    assert_eq!(messages(&server.request(0).body), vec![("user".into(), "My number is five five five one two three.".into())]);
    assert_eq!(chunks_of(&events, 11), vec!["Thanks, noted."]);
    assert_eq!(conversation_lines(state.path()).len(), 2);
}

#[test]
fn a_later_turn_without_words_releases_the_held_message() {
    let server = StandIn::start(|_, _| Response::sse(split_at(anthropic_sse(&["It is noon."]).as_bytes(), &[]), true));
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(turn_event("speech-start", 20));
    relay.send(turn_event("speech-end", 20));
    relay.send(turn_event("speech-start", 21)); // a cough
    relay.send(transcript(20, "What time is it?"));
    relay.send(turn_event("speech-end", 21));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.count(), 0);
    // sttd: turn 21 had no words (an empty final transcript).
    relay.send(transcript(21, "").with("no_speech", "too quiet"));
    // The reply carries the newest turn id: tts-writer mutes replies older than the caller's
    // latest speech-start.
    relay.wait_reply_end(21);
    let (events, _) = relay.finish();
    assert_eq!(messages(&server.request(0).body), vec![("user".into(), "What time is it?".into())]);
    assert_eq!(chunks_of(&events, 21), vec!["It is noon."]);
}

#[test]
fn a_later_turn_whose_transcript_never_comes_is_given_up_on() {
    let server = StandIn::start(|_, _| Response::sse(split_at(anthropic_sse(&["Hello."]).as_bytes(), &[]), true));
    let state = tempfile::tempdir().unwrap();
    let mut cmd = anthropic_relay(&server, state.path());
    cmd.args(["--merge-wait", "2"]);
    let mut relay = Relay::spawn(cmd);
    relay.send(turn_event("speech-start", 30));
    relay.send(turn_event("speech-end", 30));
    relay.send(turn_event("speech-start", 31));
    relay.send(transcript(30, "Hello there."));
    relay.send(turn_event("speech-end", 31)); // …and sttd (replaced by something else) says nothing more
    let t0 = Instant::now();
    let (_, end) = relay.wait_for(Duration::from_secs(9), |e| e.is("reply-end"));
    assert!(t0.elapsed() >= Duration::from_millis(1900), "answered before --merge-wait ran out");
    assert_eq!(end.get_bool("cancelled"), Some(false));
    let (_, log) = relay.finish();
    assert!(log.contains("turn 31: no transcript came for it"), "{log}");
    assert_eq!(messages(&server.request(0).body), vec![("user".into(), "Hello there.".into())]);
}

// ---- a transcript that stops mid-sentence waits for the rest (--unfinished-wait) ----

#[test]
fn a_transcript_that_stops_mid_sentence_waits_for_the_rest_and_both_are_answered_as_one() {
    let server = StandIn::start(|_, _| Response::sse(split_at(anthropic_sse(&["A table for four, got it."]).as_bytes(), &[]), true));
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    // vadseg ended the turn at the hesitation: the turn model heard "…for" as finished.
    relay.send(turn_event("speech-start", 40));
    relay.send(turn_event("speech-end", 40));
    relay.send(transcript(40, "I'd like a table for."));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(server.count(), 0, "answered half a sentence 700 ms after it, within --unfinished-wait");
    relay.send(turn_event("speech-start", 41)); // the caller goes on
    relay.send(turn_event("speech-end", 41));
    relay.send(transcript(41, "Four people."));
    let end = relay.wait_reply_end(41);
    assert_eq!(end.get_bool("cancelled"), Some(false));
    let (events, log) = relay.finish();
    assert!(log.contains("stops mid-sentence"), "{log}");
    assert_eq!(server.count(), 1);
    assert_eq!(messages(&server.request(0).body), vec![("user".into(), "I'd like a table for Four people.".into())]);
    assert_eq!(chunks_of(&events, 41).join(" "), "A table for four, got it.");
    assert_eq!(conversation_lines(state.path()).len(), 2, "one user message and its reply");
}

#[test]
fn a_transcript_that_stops_mid_sentence_is_answered_when_the_caller_says_no_more() {
    let server = StandIn::start(|_, _| Response::sse(split_at(anthropic_sse(&["Remind you to do what?"]).as_bytes(), &[]), true));
    let state = tempfile::tempdir().unwrap();
    let mut cmd = anthropic_relay(&server, state.path());
    cmd.args(["--unfinished-wait", "800"]);
    let mut relay = Relay::spawn(cmd);
    relay.send(turn_event("speech-start", 50));
    relay.send(turn_event("speech-end", 50));
    let t0 = Instant::now();
    relay.send(transcript(50, "Could you remind me to"));
    let end = relay.wait_reply_end(50);
    assert!(t0.elapsed() >= Duration::from_millis(780), "answered before --unfinished-wait ran out");
    assert_eq!(end.get_bool("cancelled"), Some(false));
    let (events, log) = relay.finish();
    assert!(log.contains("said no more in 800 ms"), "{log}");
    assert_eq!(messages(&server.request(0).body), vec![("user".into(), "Could you remind me to".into())]);
    assert_eq!(chunks_of(&events, 50), vec!["Remind you to do what?"]);
}

#[test]
fn with_unfinished_wait_0_a_transcript_that_stops_mid_sentence_is_answered_at_once() {
    let server = StandIn::start(|_, _| Response::sse(split_at(anthropic_sse(&["For how many?"]).as_bytes(), &[]), true));
    let state = tempfile::tempdir().unwrap();
    let mut cmd = anthropic_relay(&server, state.path());
    cmd.args(["--unfinished-wait", "0"]);
    let mut relay = Relay::spawn(cmd);
    relay.send(turn_event("speech-start", 60));
    relay.send(turn_event("speech-end", 60));
    relay.send(transcript(60, "I'd like a table for"));
    relay.wait_reply_end(60);
    let (_, log) = relay.finish();
    assert!(!log.contains("stops mid-sentence"), "{log}");
    assert_eq!(server.count(), 1);
}

#[test]
fn max_sentences_ends_the_reply_and_the_history_keeps_what_was_said() {
    // Two sentences at once, then a third that must never be spoken; the connection is held
    // open, so only llm-relay dropping the stream can end this reply.
    let server = StandIn::start(|_, _| {
        let mut pieces = vec![
            piece(anthropic_sse_head()),
            piece(anthropic_delta("Call it Shadow, ")),
            piece(anthropic_delta("a fine name. Or Pepper! ")),
            slow_piece(300, anthropic_delta("It rambles on and on about cats.")),
        ];
        for _ in 0..50 {
            pieces.push(slow_piece(100, anthropic_delta(" Still talking.")));
        }
        let mut r = Response::sse(pieces, true);
        r.hold_open = true;
        r
    });
    let state = tempfile::tempdir().unwrap();
    let mut cmd = anthropic_relay(&server, state.path());
    cmd.env("TGVOICE_LLM_MAX_SENTENCES", "2");
    let mut relay = Relay::spawn(cmd);
    let t0 = Instant::now();
    relay.send(transcript(3, "A name for a black cat?"));
    relay.wait_reply_end(3);
    assert!(t0.elapsed() < Duration::from_secs(4), "the reply ended only when the stream did");
    let (events, stderr) = relay.finish();
    // The first chunk may end at the clause; the limit counts sentences, not chunks.
    assert_eq!(chunks_of(&events, 3).join(" "), "Call it Shadow, a fine name. Or Pepper!");
    let end = events.iter().find(|e| e.is("reply-end")).unwrap();
    assert_eq!(end.get_bool("cancelled"), Some(false), "a reply cut at its limit is complete, not cancelled");
    assert!(stderr.contains("reply ends after 2 sentence(s)"), "{stderr}");
    assert_eq!(
        conversation_lines(state.path()),
        vec![
            ("user".to_string(), "A name for a black cat?".to_string()),
            ("assistant".to_string(), "Call it Shadow, a fine name. Or Pepper!".to_string())
        ]
    );
}

// ---- barge-in, pause first: the interrupting turn's words decide ----

/// Request 0: a first sentence at once, then more of the reply slowly (still streaming while
/// the caller talks over it). Later requests: a short answer.
fn long_reply_then(answer: &'static str) -> StandIn {
    StandIn::start(move |i, _| {
        if i == 0 {
            let mut pieces = vec![piece(anthropic_sse_head()), piece(anthropic_delta("Once upon a time there was a dragon. "))];
            for _ in 0..10 {
                pieces.push(slow_piece(150, anthropic_delta("It flew on. ")));
            }
            pieces.push(piece(anthropic_sse_tail()));
            Response::sse(pieces, true)
        } else {
            Response::sse(split_at(anthropic_sse(&[answer]).as_bytes(), &[]), true)
        }
    })
}

#[test]
fn a_backchannel_or_no_words_over_a_reply_resumes_it_and_leaves_no_trace() {
    let server = long_reply_then("Unused.");
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(transcript(5, "Tell me a story."));
    relay.wait_for(Duration::from_secs(10), |e| e.is("reply-chunk"));
    // "Uh-huh." over the reply: no cancel, a resume for that turn once its words are known.
    relay.send(turn_event("speech-start", 6));
    relay.send(turn_event("speech-end", 6));
    relay.send(transcript(6, "Uh-huh."));
    let (_, resume) = relay.wait_for(Duration::from_secs(5), |e| e.is("resume"));
    assert_eq!(resume.turn, Some(6));
    // A cough that made a turn: sttd's empty transcript.
    relay.send(turn_event("speech-start", 7));
    relay.send(turn_event("speech-end", 7));
    relay.send(transcript(7, "").with("no_speech", "noise"));
    let (_, resume) = relay.wait_for(Duration::from_secs(5), |e| e.is("resume"));
    assert_eq!(resume.turn, Some(7));
    let end = relay.wait_reply_end(5);
    assert_eq!(end.get_bool("cancelled"), Some(false), "the reply ran to its end: {end:?}");
    let (events, _) = relay.finish();
    assert!(!events.iter().any(|e| e.is("cancel")), "nothing was cancelled: {events:?}");
    assert_eq!(server.count(), 1, "the backchannel was not answered");
    let lines = conversation_lines(state.path());
    assert_eq!(lines.len(), 2, "only the question and the whole reply: {lines:?}");
    assert_eq!(lines[0], ("user".to_string(), "Tell me a story.".to_string()));
    assert!(lines[1].1.starts_with("Once upon a time") && lines[1].1.contains("It flew on. It flew on."), "{lines:?}");
}

#[test]
fn a_one_word_stop_over_a_reply_cancels_it_and_is_answered() {
    let server = long_reply_then("Okay, I stopped.");
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(transcript(8, "Tell me a story."));
    relay.wait_for(Duration::from_secs(10), |e| e.is("reply-chunk"));
    relay.send(turn_event("speech-start", 9));
    // Paused, not cancelled, while the words are not known.
    std::thread::sleep(Duration::from_millis(300));
    relay.send(turn_event("speech-end", 9));
    relay.send(transcript(9, "Stop."));
    let (_, cancel) = relay.wait_for(Duration::from_secs(5), |e| e.is("cancel"));
    assert_eq!(cancel.turn, Some(8), "cancel names the replies before the interrupting turn");
    relay.wait_reply_end(9);
    let (events, _) = relay.finish();
    let order: Vec<String> = events.iter().map(|e| format!("{}:{}", e.kind, e.turn.unwrap_or(0))).collect();
    let pos = |k: &str| order.iter().position(|o| o == k).unwrap_or_else(|| panic!("no {k} in {order:?}"));
    let end8 = events.iter().find(|e| e.is("reply-end") && e.turn == Some(8)).unwrap();
    assert_eq!(end8.get_bool("cancelled"), Some(true), "{order:?}");
    assert!(pos("speech-start:9") < pos("reply-end:8") && pos("reply-end:8") < pos("reply-chunk:9"), "{order:?}");
    assert!(!order.contains(&"resume:9".to_string()), "{order:?}");
    let m = messages(&server.request(1).body);
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(m[1].1.starts_with("Once upon a time") && m[1].1.ends_with("[interrupted]"), "{m:?}");
    assert_eq!(m[2], ("user".to_string(), "Stop.".to_string()));
}

#[test]
fn speech_over_a_reply_that_goes_on_is_an_interruption_before_its_words() {
    let server = long_reply_then("Yes?");
    let state = tempfile::tempdir().unwrap();
    let mut cmd = anthropic_relay(&server, state.path());
    cmd.args(["--interrupt-after", "400"]);
    let mut relay = Relay::spawn(cmd);
    relay.send(transcript(10, "Tell me a story."));
    relay.wait_for(Duration::from_secs(10), |e| e.is("reply-chunk"));
    let t0 = Instant::now();
    relay.send(turn_event("speech-start", 11));
    let (t, cancel) = relay.wait_for(Duration::from_secs(5), |e| e.is("cancel"));
    assert_eq!(cancel.turn, Some(10));
    let ms = t.duration_since(t0).as_millis();
    assert!((400..1000).contains(&ms), "cancelled {ms} ms after speech-start (--interrupt-after 400)");
    relay.kill();
}

// ---- preemption: a preview starts the reply early, held until the final transcript ---------

fn preview(turn: u64, text: &str) -> Event {
    Event::new("transcript").with_turn(turn).with_text(text).with("final", false).with("preview", true)
}

/// Each request answers with the last user message's text in it, so a test can tell which
/// request a chunk came from.
fn echo_server() -> StandIn {
    StandIn::start(|_, body| {
        let asked = messages(body).last().map(|(_, t)| t.clone()).unwrap_or_default();
        Response::sse(split_at(anthropic_sse(&[&format!("You said: {asked}")]).as_bytes(), &[]), true)
    })
}

fn chunk_events_before(relay: &Relay, turn: u64) -> usize {
    relay.seen.iter().filter(|(_, e)| e.is("reply-chunk") && e.turn == Some(turn)).count()
}

#[test]
fn a_preview_starts_the_reply_early_and_the_final_transcript_releases_it() {
    let server = echo_server();
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(turn_event("speech-start", 1));
    relay.send(preview(1, "What is the capital of France?"));
    wait_requests(&server, 1);
    // The whole answer has streamed by now; none of it may be written before the turn ends.
    std::thread::sleep(Duration::from_millis(400));
    relay.send(turn_event("ping", 1)); // forwarded: everything written so far is in front of it
    relay.wait_for(Duration::from_secs(5), |e| e.is("ping"));
    assert_eq!(chunk_events_before(&relay, 1), 0, "the held reply was written before the final transcript");
    // only its first chunk went out, as reply-ahead (tts-writer may speak it ahead, never plays it)
    let ahead: Vec<_> = relay.seen.iter().filter(|(_, e)| e.is("reply-ahead")).map(|(_, e)| e.clone()).collect();
    assert_eq!(ahead.len(), 1, "{ahead:?}");
    assert_eq!((ahead[0].turn, ahead[0].get_u64("seq"), ahead[0].text.as_deref()),
               (Some(1), Some(0), Some("You said: What is the capital of France?")));
    relay.send(turn_event("speech-end", 1));
    let final_sent = Instant::now();
    relay.send(transcript(1, "What is the capital of France?"));
    let (at, chunk) = relay.wait_for(Duration::from_secs(5), |e| e.is("reply-chunk"));
    assert!(at >= final_sent);
    assert!(chunk.trace.get("preempt").is_some(), "the chunk's trace says it was started early: {:?}", chunk.trace);
    let end = relay.wait_reply_end(1);
    assert_eq!(end.get_bool("cancelled"), Some(false));
    let (events, stderr) = relay.finish();
    assert_eq!(server.count(), 1, "the final transcript asked the LLM again:\n{stderr}");
    assert_eq!(chunks_of(&events, 1).join(" "), "You said: What is the capital of France?");
    assert!(stderr.contains("the reply started early stands"), "{stderr}");
    assert_eq!(
        conversation_lines(state.path()),
        vec![
            ("user".into(), "What is the capital of France?".into()),
            ("assistant".into(), "You said: What is the capital of France?".into())
        ]
    );
}

#[test]
fn a_preview_the_caller_goes_on_from_is_dropped_without_a_sound_or_a_trace() {
    let server = echo_server();
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(turn_event("speech-start", 1));
    // (A preview that stops mid-sentence, "I'd like a table for", starts nothing early.)
    relay.send(preview(1, "I'd like a table"));
    relay.wait_for(Duration::from_secs(5), |e| e.is("reply-ahead"));
    // The caller goes on after the hesitation (same turn): a new preview, then the end.
    relay.send(preview(1, "I'd like a table for four people."));
    wait_requests(&server, 2);
    relay.send(turn_event("speech-end", 1));
    relay.send(transcript(1, "I'd like a table for four people."));
    relay.wait_reply_end(1);
    let (events, stderr) = relay.finish();
    assert_eq!(server.count(), 2, "{stderr}");
    assert_eq!(chunks_of(&events, 1), vec!["You said: I'd like a table for four people."]);
    // the dropped reply's first chunk went out ahead (tts-writer keeps it unheard: not asked for)
    let ahead: Vec<_> = events.iter().filter(|e| e.is("reply-ahead")).filter_map(|e| e.text.clone()).collect();
    assert_eq!(ahead.first().map(String::as_str), Some("You said: I'd like a table"), "{ahead:?}");
    assert!(server.request(0).closed_at.lock().unwrap().is_some(), "the dropped request's stream was not closed");
    assert_eq!(
        conversation_lines(state.path()),
        vec![
            ("user".into(), "I'd like a table for four people.".into()),
            ("assistant".into(), "You said: I'd like a table for four people.".into()),
        ]
    );
}

#[test]
fn a_preview_the_final_transcript_contradicts_is_dropped_and_the_final_words_answered() {
    let server = echo_server();
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(turn_event("speech-start", 1));
    relay.send(preview(1, "What time is it"));
    wait_requests(&server, 1);
    relay.send(turn_event("speech-end", 1));
    relay.send(transcript(1, "What time is it now?"));
    relay.wait_reply_end(1);
    let (events, stderr) = relay.finish();
    assert_eq!(server.count(), 2, "{stderr}");
    assert_eq!(chunks_of(&events, 1), vec!["You said: What time is it now?"]);
    assert_eq!(conversation_lines(state.path()).len(), 2);
}

#[test]
fn a_preview_then_a_new_turn_drops_the_early_reply_and_the_parts_are_answered_as_one() {
    let server = echo_server();
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(turn_event("speech-start", 1));
    relay.send(preview(1, "My number is five five five"));
    wait_requests(&server, 1);
    relay.send(turn_event("speech-end", 1));
    relay.send(turn_event("speech-start", 2)); // the caller went on after the turn ended
    relay.send(transcript(1, "My number is five five five"));
    relay.send(turn_event("speech-end", 2));
    relay.send(transcript(2, "one two three."));
    relay.wait_reply_end(2);
    let (events, stderr) = relay.finish();
    assert!(chunks_of(&events, 1).is_empty(), "the early reply spoke: {:?}", chunks_of(&events, 1));
    assert_eq!(chunks_of(&events, 2), vec!["You said: My number is five five five one two three."]);
    assert_eq!(server.count(), 2, "{stderr}");
    assert_eq!(conversation_lines(state.path()).len(), 2);
}

#[test]
fn with_preempt_off_a_preview_starts_nothing() {
    let server = echo_server();
    let state = tempfile::tempdir().unwrap();
    let mut cmd = anthropic_relay(&server, state.path());
    cmd.args(["--preempt", "off"]);
    let mut relay = Relay::spawn(cmd);
    relay.send(turn_event("speech-start", 1));
    relay.send(preview(1, "Hello there."));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.count(), 0);
    relay.send(turn_event("speech-end", 1));
    relay.send(transcript(1, "Hello there."));
    relay.wait_reply_end(1);
    let (events, _) = relay.finish();
    assert_eq!(server.count(), 1);
    assert_eq!(chunks_of(&events, 1), vec!["You said: Hello there."]);
}

#[test]
fn over_a_playing_reply_a_backchannel_preview_starts_nothing_and_other_words_start_their_answer() {
    let server = echo_server();
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::spawn(anthropic_relay(&server, state.path()));
    relay.send(turn_event("speech-start", 1));
    relay.send(turn_event("speech-end", 1));
    relay.send(transcript(1, "Tell me a long story about a dragon."));
    relay.wait_reply_end(1); // its audio is estimated to play for a few seconds more
    // "Yeah." over the reply: a backchannel preview starts no request.
    relay.send(turn_event("speech-start", 2));
    relay.send(preview(2, "Yeah."));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(server.count(), 1, "a backchannel over the reply started a request");
    relay.send(turn_event("speech-end", 2));
    relay.send(transcript(2, "Yeah."));
    relay.wait_for(Duration::from_secs(5), |e| e.is("resume") && e.turn == Some(2));
    // "Stop, what time is it?" over the reply: its answer starts early, held.
    relay.send(turn_event("speech-start", 3));
    relay.send(preview(3, "Stop, what time is it?"));
    wait_requests(&server, 2);
    relay.send(turn_event("speech-end", 3));
    relay.send(transcript(3, "Stop, what time is it?"));
    relay.wait_reply_end(3);
    let (events, stderr) = relay.finish();
    assert_eq!(server.count(), 2, "{stderr}");
    assert!(events.iter().any(|e| e.is("cancel") && e.turn == Some(2)), "the interrupted reply is dropped in tts-writer");
    assert_eq!(chunks_of(&events, 3), vec!["You said: Stop, what time is it?"]);
    assert!(stderr.contains("the reply started early stands"), "{stderr}");
}

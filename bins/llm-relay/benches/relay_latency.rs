//! Benchmark (harness = false): `cargo bench -p llm-relay`
//!
//! 1. Relay overhead against a loopback Anthropic stand-in: first token received → first
//!    sentence frame written (from the relay's own trace: `first_chunk − llm_first_token`),
//!    and end to end (stand-in writes the token → the bench reads the reply-chunk frame from
//!    llm-relay's stdout, which adds TCP, HTTP/SSE parsing and the pipe). Target < 5 ms.
//! 2. The local default's time to first token (scripts/llm-server with SmolLM2-135M-Instruct):
//!    `llm_first_token − llm_request`, median of N (skipped with a note if not provisioned).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::time::Duration;
use tgvoice::Event;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let turns = 60;
    let server = StandIn::start(|_, _| {
        Response::sse(
            vec![
                piece(anthropic_sse_head()),
                slow_piece(5, anthropic_delta("Hello there, this is a benchmark sentence. ")),
                slow_piece(5, anthropic_sse_tail()),
            ],
            true,
        )
    });
    let state = tempfile::tempdir().unwrap();
    let mut cmd = relay_command(state.path());
    cmd.env("ANTHROPIC_API_KEY", "bench").env("TGVOICE_LOG", "warn").arg("--base-url").arg(server.base());
    let mut relay = Relay::spawn(cmd);
    let (mut internal, mut external) = (vec![], vec![]);
    for turn in 1..=turns {
        relay.send(Event::new("call-start").with("call", format!("bench-{turn}")));
        relay.send(transcript(turn, "Benchmark."));
        let (t_read, chunk) = relay.wait_for(Duration::from_secs(10), |e| e.is("reply-chunk") && e.turn == Some(turn));
        relay.wait_reply_end(turn);
        let tr = &chunk.trace;
        internal.push((tr.get("first_chunk").unwrap() - tr.get("llm_first_token").unwrap()) as f64 / 1000.0);
        let written = server.request(turn as usize - 1).written_at.lock().unwrap()[1];
        external.push(t_read.duration_since(written).as_secs_f64() * 1000.0);
    }
    relay.finish();
    let n = internal.len();
    println!("llm-relay overhead, {n} turns against a loopback Anthropic stand-in:");
    println!(
        "  first token received → first sentence frame queued (relay trace): median {:.3} ms, p99 {:.3} ms (target < 5 ms)",
        percentile(&mut internal, 0.5),
        percentile(&mut internal, 0.99)
    );
    println!(
        "  token written by the server → reply-chunk read from stdout:       median {:.3} ms, p99 {:.3} ms",
        percentile(&mut external, 0.5),
        percentile(&mut external, 0.99)
    );

    let local = std::panic::catch_unwind(LocalServer::start);
    let Ok(local) = local else {
        println!("local llama.cpp server: skipped (not provisioned; run scripts/setup apt venv llm-server)");
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let mut cmd = relay_command(state.path());
    cmd.env("TGVOICE_LLM_PORT", local.port.to_string()).env("TGVOICE_LOG", "warn");
    let mut relay = Relay::spawn(cmd);
    let questions = ["What is the capital of France?", "Name a fruit.", "How are you today?", "What color is the sky?"];
    let (mut ttft, mut first_chunk) = (vec![], vec![]);
    for turn in 1..=12u64 {
        relay.send(Event::new("call-start").with("call", format!("local-{turn}")));
        relay.send(transcript(turn, questions[turn as usize % questions.len()]));
        let end = relay.wait_for(Duration::from_secs(60), |e| e.is("reply-end") && e.turn == Some(turn)).1;
        if turn == 1 {
            continue; // warm-up (model load, first allocation)
        }
        let tr = &end.trace;
        if let (Some(req), Some(tok)) = (tr.get("llm_request"), tr.get("llm_first_token")) {
            ttft.push((tok - req) as f64 / 1000.0);
        }
        if let (Some(req), Some(c)) = (tr.get("llm_request"), tr.get("first_chunk")) {
            first_chunk.push((c - req) as f64 / 1000.0);
        }
    }
    relay.finish();
    drop(local);
    if ttft.is_empty() {
        println!("local llama.cpp server: no successful turns");
        return;
    }
    println!("local default (llama.cpp server, SmolLM2-135M-Instruct Q4_1), {} turns after warm-up:", ttft.len());
    println!(
        "  request sent → first token: median {:.1} ms, max {:.1} ms",
        percentile(&mut ttft, 0.5),
        percentile(&mut ttft, 1.0)
    );
    if !first_chunk.is_empty() {
        println!("  request sent → first reply-chunk: median {:.1} ms", percentile(&mut first_chunk, 0.5));
    }
}

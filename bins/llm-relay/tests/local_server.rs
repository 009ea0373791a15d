//! llm-relay against the real offline default: scripts/llm-server (llama-cpp-python serving
//! SmolLM2-135M-Instruct) on a free loopback port. Needs `scripts/setup` (apt, venv,
//! llm-server steps); fails with that advice when the server is not provisioned.

mod common;

use common::*;
use std::time::Duration;
use tgvoice::Event;

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

/// The end judge (README "The end judge") with the real SmolLM2 server: a phrase a caller
/// stops after to think, which passes the words check ("Could you show me?"), waits for the
/// rest and is answered once with it; a whole question is not held back. None of these phrases
/// was used to choose the judge's settings. Printed per phrase; the judge must be right on at
/// least 12 of 15 of each (13 and 13 when measured: one phrase held by the words check, 12 by
/// the judge; "Please explain" has too few words to be asked).
#[test]
fn the_end_judge_holds_phrases_that_want_more_and_lets_whole_questions_through() {
    const REST: &str = "The one near the station.";
    let unfinished = [
        "Could you show me", "I want to learn", "Can you write", "How much does it cost to", "I'm planning a trip",
        "Please explain", "What would you suggest", "Do you have any", "I'd love to hear", "Can you give me",
        "Would it be possible", "I need some help with", "Where can I buy", "Could you describe", "What do I need",
    ];
    let whole = [
        "What is the tallest mountain in the world?", "How old is the universe?", "Can you tell me a story?",
        "What is the speed of light?", "Where do penguins live?", "How do airplanes fly?", "Who painted the Mona Lisa?",
        "What day is it today?", "How many people live in London?", "What's the boiling point of water?",
        "When was the Eiffel Tower built?", "Why do cats purr?", "What is the largest ocean?", "How do I boil an egg?",
        "Tell me about the moon.",
    ];
    let server = LocalServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut cmd = relay_command(state.path());
    cmd.env("TGVOICE_LLM_PORT", server.port.to_string()).env("TGVOICE_LLM_MAX_TOKENS", "8");
    let mut relay = Relay::spawn(cmd);
    let mut turn = 0;
    let mut say = |relay: &mut Relay, text: &str| {
        turn += 1;
        relay.send(Event::new("speech-start").with_turn(turn));
        relay.send(Event::new("speech-end").with_turn(turn));
        relay.send(transcript(turn, text));
        turn
    };
    for half in unfinished {
        // Whisper writes a phrase broken off with a falling tone as a question or a sentence.
        say(&mut relay, &format!("{half}?"));
        // The caller goes on 500 ms later (under --unfinished-wait, well over the judge's time).
        std::thread::sleep(Duration::from_millis(500));
        let rest = say(&mut relay, REST);
        relay.wait_for(Duration::from_secs(60), |e| e.is("reply-end") && e.turn == Some(rest));
    }
    for question in whole {
        let t = say(&mut relay, question);
        relay.wait_for(Duration::from_secs(60), |e| e.is("reply-end") && e.turn == Some(t));
    }
    let (_, log) = relay.finish();
    // What held each: the words check ("… to" stops mid-sentence), the end judge, or nothing.
    let verdict = |text: &str| {
        let key = text.trim_end_matches(['?', '.']);
        if log.contains(&format!("{:?} stops mid-sentence", format!("{key}?"))) {
            "words"
        } else if log.contains(&format!("end judge: {key:?} wants more")) {
            "wants more"
        } else if log.contains(&format!("end judge: {key:?} can stand as a request")) {
            "whole"
        } else {
            "not asked"
        }
    };
    let merged = |h: &str| log.lines().any(|l| l.contains(&format!("one message: \"{h}")) && l.contains(REST));
    let held: Vec<&str> = unfinished.iter().copied().filter(|h| matches!(verdict(h), "words" | "wants more")).collect();
    let passed: Vec<&str> = whole.iter().copied().filter(|q| verdict(q) == "whole").collect();
    for h in unfinished {
        eprintln!("{:11} {h:?}{}", verdict(h), if merged(h) { ", merged with the rest" } else { "" });
    }
    for q in whole {
        eprintln!("{:11} {q:?}", verdict(q));
    }
    eprintln!("phrases held for the rest: {}/15; whole questions let through: {}/15", held.len(), passed.len());
    // Each phrase held was answered once, with its rest, as one message.
    for h in &held {
        assert!(merged(h), "{h:?} was held but not merged with the rest:\n{log}");
    }
    assert!(held.len() >= 12, "only {} of 15 phrases that want more were held:\n{log}", held.len());
    assert!(passed.len() >= 12, "only {} of 15 whole questions were let through:\n{log}", passed.len());
    let whole_waited = whole.iter().filter(|q| log.contains(&format!("{:?} cannot stand", q.trim_end_matches(['?', '.'])))).count();
    assert_eq!(whole_waited, 15 - passed.len(), "waits that do not match the verdicts:\n{log}");
}

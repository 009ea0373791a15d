//! `reply-ahead`: the first chunk of a reply llm-relay holds is spoken at once and kept; it is
//! heard only when the same `reply-chunk` (turn, seq, text) follows, and then it is exactly
//! what speaking that chunk would have given.

mod common;
use common::*;
use tgvoice::Event;

const SAID: &str = "Paris is the capital of France.";

fn ahead(turn: u64, seq: u64, text: &str) -> Vec<u8> {
    event_bytes(Event::new("reply-ahead").with_turn(turn).with("seq", seq).with_text(text))
}

fn speak(args: &[&str], input: &[u8]) -> (Vec<i16>, String) {
    speak_parts(args, &[input])
}

/// Input parts 300 ms apart: a `reply-ahead` is spoken before what follows it is read.
fn speak_parts(args: &[&str], parts: &[&[u8]]) -> (Vec<i16>, String) {
    let state = tempfile::tempdir().unwrap();
    let mut all = vec!["--engine", "espeak-ng", "--unpaced"];
    all.extend_from_slice(args);
    let out = run_with_parts(&all, parts, std::time::Duration::from_millis(300), state.path());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (samples(&out.stdout), stderr)
}

fn assert_same(played: &[i16], plain: &[i16]) {
    let first_difference = played.iter().zip(plain).position(|(a, b)| a != b);
    assert!(
        played.len() == plain.len() && first_difference.is_none(),
        "played {} samples, speaking the chunk alone gives {}; first difference at {first_difference:?}",
        played.len(),
        plain.len()
    );
}

fn reply(turn: u64, text: &str) -> Vec<u8> {
    let mut v = chunk(turn, 0, text);
    v.extend(reply_end(turn));
    v
}

/// SAID spoken alone, and the output and log of SAID sent ahead and then asked for.
fn alone_and_ahead(args: &[&str]) -> (Vec<i16>, Vec<i16>, String) {
    require_espeak();
    let (plain, _) = speak(&[], &reply(5, SAID));
    let (played, stderr) = speak_parts(args, &[&ahead(5, 0, SAID), &reply(5, SAID)]);
    (plain, played, stderr)
}

#[test]
fn a_chunk_spoken_ahead_plays_when_asked_for_and_sounds_the_same() {
    let (plain, played, stderr) = alone_and_ahead(&[]);
    assert!(stderr.contains("playing the audio spoken ahead"), "the audio spoken ahead was not used:\n{stderr}");
    assert!(plain.len() > 48_000 / 2, "{} samples", plain.len());
    assert_same(&played, &plain);
}

#[test]
fn a_chunk_spoken_ahead_is_never_heard_unless_asked_for() {
    require_espeak();
    // held, then dropped by llm-relay: nothing asks for it
    let mut input = ahead(5, 0, SAID);
    input.extend(reply_end(5));
    let (played, stderr) = speak(&[], &input);
    assert!(stderr.contains("spoken ahead in"), "it was not spoken ahead:\n{stderr}");
    assert!(played.is_empty(), "{} samples of a chunk nobody asked for", played.len());

    // the caller went on: another chunk of the same turn is asked for, and only it is heard
    let other = "Your table for four is booked.";
    let (plain, _) = speak(&[], &reply(5, other));
    let mut input = ahead(5, 0, SAID);
    input.extend(reply(5, other));
    let (played, stderr) = speak(&[], &input);
    assert!(!stderr.contains("playing the audio spoken ahead"), "{stderr}");
    // libespeak-ng keeps a little state from one utterance to the next (here it moved the
    // audio by ~90 samples), so the same length within 1 %, not the same samples; the chunk
    // spoken ahead would add over a second
    let diff = (played.len() as f64 - plain.len() as f64).abs();
    assert!(diff < plain.len() as f64 / 100.0, "played {} samples, the chunk alone is {}", played.len(), plain.len());

    // a cancelled turn's chunk is not spoken ahead at all
    let mut input = event_bytes(Event::new("cancel").with_turn(5));
    input.extend(ahead(5, 0, SAID));
    let (_, stderr) = speak(&[], &input);
    assert!(!stderr.contains("spoken ahead in"), "{stderr}");
}

#[test]
fn with_speak_ahead_off_the_hint_is_ignored() {
    let (plain, played, stderr) = alone_and_ahead(&["--speak-ahead", "off"]);
    assert!(!stderr.contains("spoken ahead"), "{stderr}");
    assert_same(&played, &plain);
}

#[test]
fn a_chunk_asked_for_while_it_is_spoken_ahead_plays_once_as_it_comes() {
    require_espeak();
    // a slow engine: the reply-chunk is read while the chunk is still being spoken ahead
    let slow = ["--engine", "command", "--command", "sleep 0.5; espeak-ng --stdin --stdout"];
    let state = tempfile::tempdir().unwrap();
    let plain = run_with_input(&[&slow[..], &["--unpaced"]].concat(), &reply(5, SAID), state.path());
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let mut input = ahead(5, 0, SAID);
    input.extend(reply(5, SAID));
    let out = run_with_input(&[&slow[..], &["--unpaced"]].concat(), &input, state.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("asked for while spoken ahead"), "{stderr}");
    assert!(samples(&plain.stdout).len() > 48_000 / 2);
    assert_same(&samples(&out.stdout), &samples(&plain.stdout)); // once, not twice
}

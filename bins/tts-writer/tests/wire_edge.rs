//! `--engine edge`: the preset finds edge-tts (installed into the venv by scripts/setup) and
//! ffmpeg, and runs them for each chunk. Microsoft's service cannot be reached from the
//! project's machines (they reach package registries only), so a synthesis is not faked here:
//! where the service is unreachable each reply is skipped with one log line naming edge-tts and
//! the cause, and tts-writer goes on to the next reply (and exits cleanly); where it is
//! reachable, the reply must be speech.

mod common;
use common::standin_tts::Framed;
use common::*;

#[test]
fn edge_tts_runs_per_reply_and_an_unreachable_service_costs_one_line_per_reply() {
    let mut w = Framed::start(&["--engine", "edge", "--edge-voice", "en-US-AriaNeural"], &[]);
    for turn in 1..=2u64 {
        let r = w.reply(turn, "Hello from the edge voice.");
        assert_eq!(r.played["turn"], turn, "the reply was recorded");
        let lines = w.log_lines(&format!("could not speak chunk 0 of turn {turn}:"));
        if r.audio.is_empty() {
            assert_eq!(lines.len(), 1, "one log line for turn {turn}: {lines:?}");
            let line = &lines[0];
            assert!(line.contains("edge-tts failed") && line.contains("speech.platform.bing.com"), "names edge-tts and the cause: {line}");
        } else {
            // A machine that reaches Microsoft: real speech, no error.
            assert!(lines.is_empty(), "{lines:?}");
            assert!(r.audio.len() > 48_000 / 2 && rms(&r.audio) > 300.0, "{} samples, rms {}", r.audio.len(), rms(&r.audio));
        }
    }
    assert_eq!(w.log_lines("speaking with edge-tts en-US-AriaNeural").len(), 1);
    assert!(w.finish().success());
}

#[test]
fn edge_without_edge_tts_installed_says_what_to_install() {
    let state = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = tts_writer()
        .args(["--engine", "edge", "--state-dir"])
        .arg(state.path())
        .env("TGVOICE_VENV", empty.path())
        .env("PATH", "/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("edge-tts not found") && err.contains("scripts/setup venv"), "{err}");
}

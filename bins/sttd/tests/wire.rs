//! sttd's engines over the wire (`--engine openai`, `--engine wyoming`) against stand-in
//! servers on 127.0.0.1 that speak the real protocols (tests/standin_stt.py: multipart + WAV
//! parsing and JSON for OpenAI's API, the `wyoming` package's event framing): a server that is
//! down, slow, failing, talking garbage or closing mid-answer costs one log line and an empty
//! final transcript within the budget, and the next turn works with no thread or connection
//! left behind; a superseded speculative decode's request is dropped; a decode at a pause is
//! previewed and reused; the API key reaches the server and never the log; a Wyoming service
//! without speech-to-text is refused at start.
//!
//! Build first: `cargo build --release -p sttd`; the venv (scripts/setup) has the `wyoming` package.

mod common;

use common::standin::StandIn;
use common::*;
use std::io::Read;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use tgvoice::event::kind;
use tgvoice::{Event, Frame};

/// The budget the failure tests give a decode (--stt-timeout).
const BUDGET_SECS: f64 = 1.5;
/// What a turn's end may take beyond the budget: the stage's loop and the frame's way out.
const SLACK: Duration = Duration::from_millis(700);
const WAIT: Duration = Duration::from_secs(20);

/// sttd with its stdout decoded and its log collected, line by line.
struct Run {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: crossbeam_channel::Receiver<(Instant, Frame)>,
    log: crossbeam_channel::Receiver<String>,
    lines: Vec<String>,
}

impl Run {
    fn spawn(args: &[String], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(tgvoice::testkit::bin_path("sttd"));
        cmd.args(args).env_remove(sttd::wire::KEY_ENV).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn sttd");
        let frames = decode_thread(child.stdout.take().unwrap());
        let (tx, log) = crossbeam_channel::unbounded();
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(i) = s.find('\n') {
                    let line: String = s.drain(..=i).collect();
                    eprint!("{line}");
                    let _ = tx.send(line.trim_end().to_string());
                }
            }
        });
        let stdin = child.stdin.take();
        Run { child, stdin, frames, log, lines: vec![] }
    }

    fn send(&mut self, frames: &[Frame]) {
        use std::io::Write;
        let mut buf = vec![];
        for f in frames {
            tgvoice::frame::encode_into(f, &mut buf).unwrap();
        }
        self.stdin.as_mut().unwrap().write_all(&buf).unwrap();
    }

    /// The next transcript event (final or preview) of `turn`.
    fn transcript(&self, turn: u64) -> (Instant, Event) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.checked_duration_since(Instant::now()).expect("a transcript in time");
            match self.frames.recv_timeout(left) {
                Ok((t, Frame::Event(e))) if e.is(kind::TRANSCRIPT) && e.turn == Some(turn) => return (t, e),
                Ok(_) => {}
                Err(_) => panic!("no transcript for turn {turn}"),
            }
        }
    }

    /// The log lines so far.
    fn log(&mut self) -> &[String] {
        while let Ok(l) = self.log.try_recv() {
            self.lines.push(l);
        }
        &self.lines
    }

    /// Wait for a log line containing `text`.
    fn wait_log(&mut self, text: &str) -> String {
        if let Some(l) = self.log().iter().find(|l| l.contains(text)) {
            return l.clone();
        }
        loop {
            let l = self.log.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no log line with {text:?}"));
            self.lines.push(l.clone());
            if l.contains(text) {
                return l;
            }
        }
    }

    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id())).unwrap().count()
    }

    /// End the input and wait for a clean exit.
    fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "sttd exited with {status}");
        while let Ok(l) = self.log.recv_timeout(Duration::from_secs(5)) {
            self.lines.push(l);
        }
        self.lines
    }
}

fn speech() -> Vec<i16> {
    speak("Book a table for two", 150)
}

fn sttd_args(s: &StandIn, extra: &[&str]) -> Vec<String> {
    let mut a = s.sttd_args();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// One turn that must come back as `text`.
fn turn_ok(run: &mut Run, turn: u64, text: &str) {
    run.send(&segment(turn, &speech()));
    let (_, e) = run.transcript(turn);
    assert_eq!((e.get_bool("final"), e.text.as_deref()), (Some(true), Some(text)), "{e:?}");
}

/// For each way a server fails: turn 1 works, turn 2 meets the failure, turn 3 works again.
/// Turn 2 ends with an empty final transcript saying why, within the budget, after one error
/// line naming the server and the cause; no thread or connection is left over.
fn failures(protocol: &'static str, causes: &[(&str, &str)]) {
    let t0 = Instant::now();
    for (mode, cause) in causes {
        let texts = "Table for two at eight.|And a high chair.";
        let mut server = StandIn::start(protocol, &["--texts", texts, "--close-after-transcript"][..if protocol == "wyoming" { 3 } else { 2 }]);
        let url = server.url();
        let mut run = Run::spawn(&sttd_args(&server, &["--stt-timeout", &BUDGET_SECS.to_string(), "--speculate-after", "0"]), &[]);
        turn_ok(&mut run, 1, "Table for two at eight.");
        let threads = run.threads();
        let port = server.port.to_string();
        let mut up = match *mode {
            "down" => {
                server.kill();
                None
            }
            m => {
                server.set_mode(m);
                Some(server)
            }
        };
        run.send(&segment(2, &speech()));
        let sent = Instant::now();
        let (at, e) = run.transcript(2);
        let took = at - sent;
        assert_eq!((e.get_bool("final"), e.text.as_deref()), (Some(true), Some("")), "{mode}: {e:?}");
        let why = e.get_str("no_speech").unwrap_or_default();
        assert!(why.contains(cause) && why.contains(&url), "{mode}: the reason {why:?} names neither {cause:?} nor {url}");
        assert!(took <= Duration::from_secs_f64(BUDGET_SECS) + SLACK, "{mode}: the turn ended {took:?} after speech-end, past the {BUDGET_SECS} s budget");
        let line = run.wait_log("transcription failed");
        assert!(line.contains(&url) && line.contains(cause), "{mode}: {line}");
        if *mode == "slow" {
            // sttd gave up and closed the connection: the stand-in saw its client go.
            up.as_mut().unwrap().wait("dropped", WAIT);
        }
        let mut server = match up.take() {
            None => StandIn::start(protocol, &["--port", &port, "--texts", "And a high chair."]),
            Some(mut server) => {
                server.set_mode("ok");
                server
            }
        };
        turn_ok(&mut run, 3, "And a high chair.");
        assert_eq!(run.threads(), threads, "{mode}: sttd's threads after the failure");
        let errors: Vec<String> = run.log().iter().filter(|l| l.contains(" error: ") || l.contains(" warn: ")).cloned().collect();
        assert_eq!(errors.len(), 1, "{mode}: one error line, no warnings: {errors:#?}");
        assert!(server.reports("bad-request").is_empty(), "{mode}: {:?}", server.seen);
        let log = run.finish();
        assert!(server.open_connections() <= 1, "{mode}: connections left open: {:?}", server.seen);
        println!("{protocol} {mode}: turn ended {:.0} ms after speech-end; log: {}", took.as_secs_f64() * 1e3, log.iter().find(|l| l.contains("failed")).unwrap());
    }
    println!("{protocol}: {} failure modes in {:.1} s", causes.len(), t0.elapsed().as_secs_f64());
}

#[test]
fn openai_server_failures_cost_one_line_and_an_empty_transcript_within_the_budget() {
    failures(
        "openai",
        &[
            ("down", "cannot connect"),
            ("slow", "no answer within the 1.5 s budget"),
            ("fail", "HTTP 500 Internal Server Error"),
            ("garbage", "not JSON"),
            ("close", "the answer broke off"),
        ],
    );
}

#[test]
fn wyoming_service_failures_cost_one_line_and_an_empty_transcript_within_the_budget() {
    failures(
        "wyoming",
        &[
            ("down", "cannot connect"),
            ("slow", "no answer within the 1.5 s budget"),
            ("fail", "the service answered error: the model crashed"),
            ("garbage", "not a Wyoming event"),
            ("close", "closed the connection mid-event"),
        ],
    );
}

/// The caller pauses (a speculative decode goes to the server), then speaks on: that request
/// is dropped (the stand-in sees its client go), and the final decode asks again with all the
/// audio. Then a pause followed by silence only: the decode at the pause is sent as a preview
/// and is the final transcript, with no second request.
fn speculation(protocol: &'static str) {
    let mut server = StandIn::start(protocol, &["--texts", "Book a table for two.|Is eight free?", "--delay-ms", "5000"]);
    let mut run = Run::spawn(&sttd_args(&server, &["--speculate-after", "150"]), &[]);
    let first = speech();
    run.send(&[speech_start(1)]);
    run.send(&audio_frames(1, &with_rolls(&first)[..], 0));
    let early = server.wait("request", WAIT);
    run.send(&audio_frames(1, &first, 100_000));
    let dropped = server.wait("dropped", WAIT);
    assert_eq!(dropped["n"], early["n"], "the superseded request is the one dropped");
    server.set_delay(0);
    run.send(&[speech_end(1)]);
    let (_, e) = run.transcript(1);
    assert_eq!((e.get_bool("final"), e.text.as_deref()), (Some(true), Some("Book a table for two.")), "{e:?}");
    let requests = server.reports("request");
    let last = requests.last().unwrap();
    assert!(last["samples"].as_u64() > early["samples"].as_u64(), "the final decode has all the audio: {requests:?}");
    // A pause, then only silence: one request, previewed, then final.
    run.send(&[speech_start(2)]);
    run.send(&audio_frames(2, &with_rolls(&speech()), 0));
    let (_, preview) = run.transcript(2);
    assert_eq!((preview.get_bool("final"), preview.get_bool("preview"), preview.text.as_deref()), (Some(false), Some(true), Some("Is eight free?")), "{preview:?}");
    run.send(&audio_frames(2, &vec![0; 4800], 200_000));
    run.send(&[speech_end(2)]);
    let (_, fin) = run.transcript(2);
    assert_eq!((fin.get_bool("final"), fin.text.as_deref()), (Some(true), Some("Is eight free?")));
    let log = run.finish();
    assert_eq!(server.reports("request").len(), requests.len() + 1, "the decode at the pause was reused: {:?}", server.seen);
    assert!(log.iter().any(|l| l.contains("speculative")), "{log:#?}");
    assert!(server.reports("bad-request").is_empty());
}

#[test]
fn openai_a_superseded_speculative_request_is_dropped_and_a_pause_is_previewed() {
    speculation("openai");
}

#[test]
fn wyoming_a_superseded_speculative_request_is_dropped_and_a_pause_is_previewed() {
    speculation("wyoming");
}

#[test]
fn the_api_key_reaches_the_server_and_never_the_log() {
    let mut server = StandIn::start("openai", &["--texts", "Keyed."]);
    let key = "sk-test-0123456789abcdef";
    let mut run = Run::spawn(&sttd_args(&server, &["-vv", "--prompt", "Zanzibar", "--language", "en"]), &[(sttd::wire::KEY_ENV, key)]);
    turn_ok(&mut run, 1, "Keyed.");
    let log = run.finish();
    let req = server.wait("request", WAIT);
    assert_eq!((req["auth"].as_str(), req["prompt"].as_str(), req["language"].as_str(), req["model"].as_str()), (Some(&*format!("Bearer {key}")), Some("Zanzibar"), Some("en"), Some("whisper-1")));
    assert!(log.iter().all(|l| !l.contains(key)), "the key is in the log");
    assert!(log.iter().any(|l| l.contains("with an API key")), "{log:#?}");

    // A key file: the owner's alone, or refused with what to do.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stt.key");
    std::fs::write(&file, format!("{key}-file\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut args = server.sttd_args();
    args.extend(["--stt-key-file".to_string(), file.display().to_string()]);
    let out = Command::new(tgvoice::testkit::bin_path("sttd")).args(&args).stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(tgvoice::cli::exit::CONFIG), "{err}");
    assert!(err.contains("chmod 600") && err.contains(&file.display().to_string()) && !err.contains(key), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut run = Run::spawn(&args, &[]);
    run.send(&segment(1, &speech()));
    run.transcript(1);
    run.finish();
    assert_eq!(server.wait("request", WAIT)["auth"].as_str(), Some(&*format!("Bearer {key}-file")));
}

#[test]
fn a_wyoming_service_without_speech_to_text_is_refused_at_start() {
    let server = StandIn::start("wyoming", &["--no-asr"]);
    let out = Command::new(tgvoice::testkit::bin_path("sttd")).args(server.sttd_args()).stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(tgvoice::cli::exit::UNAVAILABLE), "{err}");
    assert!(err.contains("offers no speech-to-text") && err.contains(&server.url()), "{err}");
    // And one that is not there at all.
    let url = server.url();
    drop(server);
    let out = Command::new(tgvoice::testkit::bin_path("sttd")).args(["--engine", "wyoming", "--stt-url", &url]).stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(tgvoice::cli::exit::UNAVAILABLE), "{err}");
    assert!(err.contains("cannot connect") && err.contains("is the Wyoming service running"), "{err}");
}

/// A Wyoming service that restarts between utterances: the connection sttd kept is closed;
/// the next turn opens a new one without an error.
#[test]
fn wyoming_reconnects_after_the_service_restarted_between_turns() {
    let server = StandIn::start("wyoming", &["--texts", "First."]);
    let port = server.port.to_string();
    let mut run = Run::spawn(&server.sttd_args(), &[]);
    turn_ok(&mut run, 1, "First.");
    server.kill();
    let mut server = StandIn::start("wyoming", &["--port", &port, "--texts", "Second."]);
    turn_ok(&mut run, 2, "Second.");
    let log = run.finish();
    assert!(log.iter().all(|l| !l.contains(" error: ") && !l.contains(" warn: ")), "{log:#?}");
    assert_eq!(server.reports("request").len(), 1);
}

/// A server flag that cannot work is one line and exit 2 (a flag) or 78 (its variable, named).
#[test]
fn a_missing_or_wrong_server_url_is_refused_with_what_to_give() {
    let sttd = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(tgvoice::testkit::bin_path("sttd")).args(args).envs(env.iter().copied()).stdin(Stdio::null()).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).trim().to_string())
    };
    let (code, err) = sttd(&["--engine", "openai"], &[]);
    assert_eq!(code, Some(tgvoice::cli::exit::USAGE), "{err}");
    assert!(err.contains("--stt-url http://127.0.0.1:8000/v1") && err.contains("STTD_STT_URL"), "{err}");
    let (code, err) = sttd(&["--engine", "wyoming", "--stt-url", "http://127.0.0.1:10300"], &[]);
    assert_eq!(code, Some(tgvoice::cli::exit::USAGE), "{err}");
    assert!(err.contains("tcp://HOST:PORT"), "{err}");
    let (code, err) = sttd(&["--engine", "openai"], &[("STTD_STT_URL", "tcp://127.0.0.1:10300")]);
    assert_eq!(code, Some(tgvoice::cli::exit::CONFIG), "{err}");
    assert!(err.contains("--engine wyoming") && err.contains("STTD_STT_URL"), "{err}");
    let (code, err) = sttd(&["--engine", "openai", "--stt-url", "http://127.0.0.1:9/v1", "--stt-timeout", "0"], &[]);
    assert_eq!(code, Some(tgvoice::cli::exit::USAGE), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `--check-model` with a server engine asks the server (a check that never reached it would
/// say "ok" to a mistyped URL): ok and its time when it answers, one line and exit 69 when not.
#[test]
fn check_model_with_a_server_engine_sends_a_request_and_fails_when_none_answers() {
    for protocol in ["openai", "wyoming"] {
        let mut server = StandIn::start(protocol, &["--texts", "Checked."]);
        let url = server.url();
        let out = Command::new(tgvoice::testkit::bin_path("sttd")).args(server.sttd_args()).arg("--check-model").stdin(Stdio::null()).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{protocol}: {stdout}{stderr}");
        assert!(stdout.starts_with("ok: ") && stdout.contains(&url), "{protocol}: {stdout}");
        let samples = server.wait("request", WAIT)["samples"].as_u64().unwrap_or(0);
        assert!(samples >= 16_000, "{protocol}: the server got {samples} samples, not the second sent");
        drop(server);
        if protocol == "wyoming" {
            continue; // a Wyoming service that is not there is refused at start (test above)
        }
        let out = Command::new(tgvoice::testkit::bin_path("sttd"))
            .args(["--engine", "openai", "--stt-url", &url, "--stt-timeout", "1.5", "--check-model"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(tgvoice::cli::exit::UNAVAILABLE), "{stderr}");
        assert!(stderr.contains(&url) && stderr.contains("check --stt-url"), "{stderr}");
        assert_eq!(stderr.lines().filter(|l| l.contains(" error: ") || l.starts_with("sttd: ")).count(), 1, "{stderr}");
    }
}

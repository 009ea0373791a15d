//! Command lines run as a person runs them (issue 29): `sh -c LINE` with stdout on a
//! pseudo-terminal (or on a pipe, as the next program of a pipeline has it), and the files the
//! README examples name (question.wav, speech.frames, …) made once per test binary.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tgvoice::frame::{encode, FrameDecoder};
use tgvoice::testkit::{bin_path, cache_dir};
use tgvoice::{Event, Frame};

/// Where a command line's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    Terminal,
    Pipe,
}

/// What a command line did.
pub struct Ran {
    pub line: String,
    pub code: Option<i32>,
    /// Everything written to stdout (from a terminal: as the terminal passed it on).
    pub out: Vec<u8>,
    pub stderr: String,
    pub secs: f64,
}

impl Ran {
    /// stdout as text, the terminal's "\r\n" back to "\n".
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).replace("\r\n", "\n")
    }

    /// stdout is what a person can read: UTF-8 with no control characters but newlines and
    /// tabs, and no frame magic.
    pub fn assert_readable(&self) {
        let text = std::str::from_utf8(&self.out).unwrap_or_else(|e| panic!("`{}` printed bytes that are not UTF-8 ({e}):\n{:?}", self.line, self.out));
        let bad = text.chars().find(|&c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'));
        assert!(bad.is_none() && !text.contains("TGVF"), "`{}` printed binary to the terminal ({bad:?}):\n{text:?}", self.line);
    }

    pub fn assert_ok(&self) {
        assert_eq!(self.code, Some(0), "`{}` exited {:?} after {:.1} s\nstdout: {:?}\nstderr:\n{}", self.line, self.code, self.secs, self.text(), self.stderr);
    }
}

/// Run `sh -c line` in `dir` with this build's programs first on PATH, stdin /dev/null, stdout
/// on a new pseudo-terminal or a pipe, stderr captured. Its process group is killed after
/// `timeout` (code None then).
pub fn run(line: &str, dir: &Path, env: &[(&str, &str)], stdout: Stdout, timeout: Duration) -> Ran {
    let bin_dir = bin_path("tgcat").parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(line)
        .current_dir(dir)
        .env("PATH", path)
        .env("ORT_DYLIB_PATH", ort_dylib())
        .env("TGVOICE_STATE_DIR", dir.join("state"))
        .env("STTD_MODEL", cache_dir().join("models/ggml-tiny.en.bin"))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    for var in ["TGCAT_FORMAT", "VADSEG_FORMAT", "STTD_FORMAT", "TGVOICE_LLM_FORMAT", "TGVOICE_TTS_FORMAT", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let t0 = Instant::now();
    let (mut child, out_reader): (_, Box<dyn Read + Send>) = match stdout {
        Stdout::Terminal => {
            let pty = nix::pty::openpty(None, None).expect("openpty");
            cmd.stdout(std::fs::File::from(pty.slave));
            // Our copy of the terminal's far end is dropped with `cmd` below, so the reader
            // sees the end (EIO) once every program of the line has exited.
            let child = cmd.spawn().expect("run sh");
            (child, Box::new(std::fs::File::from(pty.master)))
        }
        Stdout::Pipe => {
            let mut child = cmd.stdout(Stdio::piped()).spawn().expect("run sh");
            let out = child.stdout.take().unwrap();
            (child, Box::new(out))
        }
    };
    drop(cmd);
    let reading = read_all(out_reader);
    let mut err = child.stderr.take().unwrap();
    let err_reading = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut code = None;
    while t0.elapsed() < timeout {
        if let Some(status) = child.try_wait().unwrap() {
            code = status.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if code.is_none() {
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
    }
    let secs = t0.elapsed().as_secs_f64();
    Ran { line: line.to_string(), code, out: reading.join().unwrap(), stderr: err_reading.join().unwrap(), secs }
}

/// Read until the end (a pipe's EOF, a terminal's EIO once nobody holds it open).
fn read_all(mut r: Box<dyn Read + Send>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = vec![];
        let mut buf = [0u8; 65536];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
}

fn ort_dylib() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).unwrap_or_else(|| cache_dir().join("onnxruntime/libonnxruntime.so.1.22.1"))
}

/// The frames of a frame stream, checking it is exactly a frame stream: decoding and encoding
/// again gives the same bytes (nothing added, nothing changed).
pub fn frames_of(bytes: &[u8], what: &str) -> Vec<Frame> {
    let mut d = FrameDecoder::new();
    d.push(bytes);
    let mut frames = vec![];
    while let Some(f) = d.next() {
        frames.push(f.unwrap_or_else(|e| panic!("{what}: not a clean frame stream: {e}")));
    }
    let again: Vec<u8> = frames.iter().flat_map(encode).collect();
    assert!(again == bytes, "{what}: {} bytes are not exactly the {} frames they decode to", bytes.len(), frames.len());
    frames
}

/// The texts of the final transcripts among `frames`.
pub fn final_transcripts(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Event(e) if e.is("transcript") && e.get_bool("final") != Some(false) => e.text.clone().filter(|t| !t.trim().is_empty()),
            _ => None,
        })
        .collect()
}

/// What the test caller says.
pub const QUESTION: &str = "What is the capital of France?";
/// The stand-in LLM's answer.
pub const ANSWER: &str = "The capital of France is Paris.";

/// A directory holding the files the README examples name: the question spoken by the Piper
/// voice as `question.wav`, `q.wav` and `call.wav`; `speech.frames` (vadseg's output for it),
/// `text.frames` (sttd's) and `reply.frames` (a reply to it, as llm-relay writes one).
pub fn examples_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tgvoice-tty-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let speech = crate::common::speak_piper(QUESTION);
        let mut padded = vec![0i16; 8_000];
        padded.extend(&speech);
        padded.extend(vec![0i16; 16_000]);
        for name in ["question.wav", "q.wav", "call.wav"] {
            tgvoice::resample::write_wav_mono(&dir.join(name), 16_000, &padded).unwrap();
        }
        let vad = run("tgcat q.wav | vadseg --format frames > speech.frames", &dir, &[], Stdout::Pipe, Duration::from_secs(60));
        vad.assert_ok();
        let stt = run("sttd --format frames < speech.frames > text.frames", &dir, &[], Stdout::Pipe, Duration::from_secs(60));
        stt.assert_ok();
        let text = std::fs::read(dir.join("text.frames")).unwrap();
        assert_eq!(final_transcripts(&frames_of(&text, "text.frames")).len(), 1, "sttd heard no question in question.wav\n{}", stt.stderr);
        let turn = 1;
        let reply: Vec<u8> = [
            Event::new("reply-chunk").with_turn(turn).with_text(ANSWER).with("seq", 0),
            Event::new("reply-end").with_turn(turn).with("cancelled", false),
        ]
        .into_iter()
        .flat_map(|e| encode(&Frame::Event(e)))
        .collect();
        std::fs::write(dir.join("reply.frames"), reply).unwrap();
        dir
    })
}

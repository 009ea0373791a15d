//! Helpers shared by the tts-writer integration tests.
#![allow(dead_code)]

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tgvoice::frame::encode;
use tgvoice::testkit::{bin_path, cache_dir};
use tgvoice::{Event, Frame};

pub mod standin_tts;

pub const RATE: f64 = 48_000.0;

pub fn tts_writer() -> Command {
    let mut c = Command::new(bin_path("tts-writer"));
    c.env("TGVOICE_LOG", "debug");
    c
}

/// The Piper voice scripts/setup installs; panics with what to run when it is missing.
pub fn piper_model() -> PathBuf {
    let p = cache_dir().join("models/piper/en_US-joe-medium.onnx");
    assert!(p.exists(), "Piper voice {} missing: run scripts/setup (steps piper-voice, onnxruntime)", p.display());
    p
}

pub fn require_espeak() {
    let ok = Command::new("espeak-ng").arg("--version").stdout(Stdio::null()).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "espeak-ng missing: run scripts/setup apt");
}

pub fn event_bytes(e: Event) -> Vec<u8> {
    encode(&Frame::Event(e))
}

pub fn chunk(turn: u64, seq: u64, text: &str) -> Vec<u8> {
    let mut trace = tgvoice::TurnTrace::default();
    trace.mark_now("first_chunk");
    event_bytes(Event::new("reply-chunk").with_turn(turn).with("seq", seq).with_text(text).with_trace(trace))
}

pub fn reply_end(turn: u64) -> Vec<u8> {
    event_bytes(Event::new("reply-end").with_turn(turn).with("cancelled", false))
}

pub fn samples(bytes: &[u8]) -> Vec<i16> {
    bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

pub fn rms(s: &[i16]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
}

/// Run tts-writer with `stdin` bytes; returns its output.
pub fn run_with_input(args: &[&str], stdin: &[u8], state: &Path) -> Output {
    run_with_parts(args, &[stdin], Duration::ZERO, state)
}

/// Like [`run_with_input`], writing the parts of the input `gap` apart.
pub fn run_with_parts(args: &[&str], parts: &[&[u8]], gap: Duration, state: &Path) -> Output {
    let mut child = tts_writer()
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tts-writer");
    let mut input = child.stdin.take().unwrap();
    let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(gap);
            }
            let _ = input.write_all(part);
            let _ = input.flush();
        }
    });
    let out = wait_with_timeout(child, Duration::from_secs(120));
    feeder.join().unwrap();
    out
}

pub fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut v = vec![];
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = vec![];
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("tts-writer did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() }
}

/// Lines of `<state>/metrics.jsonl` as JSON values.
pub fn metrics(state: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(state.join("metrics.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).expect("metrics line is JSON")).collect()
}

/// Duration (s) of espeak-ng's own rendering of `text` (reference for resampling checks).
pub fn espeak_reference_seconds(text: &str) -> f64 {
    let out = Command::new("espeak-ng").args(["--stdout", "-v", "en-us", "-s", "175", text]).output().expect("espeak-ng");
    let (rate, s) = tts_writer::engine::parse_wav(&out.stdout).expect("espeak WAV");
    s.len() as f64 / rate as f64
}

/// A non-blocking reader of a FIFO, with FIONREAD (bytes waiting in the pipe).
pub struct FifoReader {
    pub file: std::fs::File,
}

impl FifoReader {
    pub fn open(path: &Path) -> Self {
        let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).expect("open FIFO for reading");
        FifoReader { file }
    }

    pub fn unread(&self) -> usize {
        let mut n: libc::c_int = 0;
        unsafe { libc::ioctl(self.file.as_raw_fd(), libc::FIONREAD, &mut n) };
        n.max(0) as usize
    }

    /// Wait up to `timeout` for data, then read what is there.
    pub fn read_available(&mut self, out: &mut Vec<u8>, timeout: Duration) -> usize {
        let mut pfd = libc::pollfd { fd: self.file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if pfd.revents & libc::POLLHUP != 0 && pfd.revents & libc::POLLIN == 0 {
            std::thread::sleep(timeout); // no writer yet: POLLHUP returns at once
        }
        let mut buf = [0u8; 65536];
        let mut n_total = 0;
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    n_total += n;
                }
                Err(_) => break,
            }
        }
        n_total
    }
}

pub fn mkfifo(path: &Path) {
    tgvoice::fifo::ensure_fifo(path).expect("mkfifo");
}

/// A new FIFO `name` in `dir`, read to its end in a thread (as llm-relay or the bridge reads
/// its link; tts-writer closes it when it exits): the path and what was read.
pub fn fifo_read_to_end(dir: &Path, name: &str) -> (PathBuf, std::thread::JoinHandle<Vec<u8>>) {
    let path = dir.join(name);
    mkfifo(&path);
    let reader = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut bytes = vec![];
            std::fs::File::open(&path).unwrap().read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    (path, reader)
}

/// tts-writer writing to an output FIFO in a temporary directory (its state directory too), with
/// a non-blocking reader on that FIFO and a pipe to its stdin: the set-up of the live tests.
pub struct LiveWriter {
    pub dir: tempfile::TempDir,
    pub reader: FifoReader,
    pub child: Child,
    pub stdin: std::process::ChildStdin,
}

impl LiveWriter {
    pub fn start(args: &[&str]) -> LiveWriter {
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("tg_output.raw");
        mkfifo(&out_path);
        let reader = FifoReader::open(&out_path);
        let mut child = tts_writer()
            .args(args)
            .arg("--output")
            .arg(&out_path)
            .arg("--state-dir")
            .arg(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn tts-writer");
        let stdin = child.stdin.take().unwrap();
        LiveWriter { dir, reader, child, stdin }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stdin.write_all(bytes).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Wait (≤ 60 s) for the reply's first audio, then read it as it plays for `ms` more.
    pub fn play_for(&mut self, got: &mut Vec<u8>, ms: u64) {
        let start = std::time::Instant::now();
        while got.is_empty() {
            self.reader.read_available(got, Duration::from_millis(5));
            assert!(start.elapsed() < Duration::from_secs(60), "no audio within 60 s");
        }
        let first = std::time::Instant::now();
        while first.elapsed() < Duration::from_millis(ms) {
            self.reader.read_available(got, Duration::from_millis(5));
        }
    }
}

#![allow(dead_code)]
//! The stand-in speech-to-text servers (`standin_stt.py` beside the tests: an OpenAI-style
//! HTTP server that parses the multipart body and the WAV, and a Wyoming service on the
//! protocol's own Python package) as a running process the test reads and steers. Used by
//! sttd's tests/wire.rs and the system tests' stt_wire.rs.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// The venv's python, which scripts/setup gives the `wyoming` package (scripts/provision/sttd.pip).
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("TGVOICE_VENV").map(PathBuf::from).unwrap_or_else(|| tgvoice::testkit::cache_dir().join("venv"));
    let py = venv.join("bin/python");
    assert!(py.exists(), "{} is missing: run scripts/setup (its venv step installs the wyoming package)", py.display());
    py
}

pub struct StandIn {
    child: Child,
    stdin: ChildStdin,
    pub port: u16,
    pub protocol: &'static str,
    events: crossbeam_channel::Receiver<Value>,
    /// Every report read so far, in order.
    pub seen: Vec<Value>,
}

impl StandIn {
    /// Start `standin_stt.py PROTOCOL ARGS` and wait until it listens.
    pub fn start(protocol: &'static str, args: &[&str]) -> StandIn {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bins/sttd/tests/standin_stt.py");
        let script = if script.exists() { script } else { PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/standin_stt.py") };
        let mut child = Command::new(venv_python())
            .arg(&script)
            .arg(protocol)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the stand-in server");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("stand-in said {line:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut s = StandIn { child, stdin, port: 0, protocol, events, seen: vec![] };
        let listening = s.wait("listening", Duration::from_secs(20));
        s.port = listening["port"].as_u64().unwrap() as u16;
        s
    }

    /// The `--stt-url` that reaches it.
    pub fn url(&self) -> String {
        match self.protocol {
            "openai" => format!("http://127.0.0.1:{}/v1", self.port),
            _ => format!("tcp://127.0.0.1:{}", self.port),
        }
    }

    /// The sttd flags that use it.
    pub fn sttd_args(&self) -> Vec<String> {
        vec!["--engine".into(), self.protocol.into(), "--stt-url".into(), self.url()]
    }

    /// The next report of `event` (the ones before it are kept in `seen`).
    pub fn wait(&mut self, event: &str, timeout: Duration) -> Value {
        self.try_wait(event, timeout).unwrap_or_else(|| panic!("the stand-in reported no {event:?} within {timeout:?}; so far: {:?}", self.seen))
    }

    pub fn try_wait(&mut self, event: &str, timeout: Duration) -> Option<Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            let v = self.events.recv_timeout(left).ok()?;
            self.seen.push(v.clone());
            if v["event"] == event {
                return Some(v);
            }
        }
    }

    /// Read what has been reported so far without waiting.
    pub fn drain(&mut self) -> &[Value] {
        while let Ok(v) = self.events.try_recv() {
            self.seen.push(v);
        }
        &self.seen
    }

    /// The reports of `event` read so far.
    pub fn reports(&mut self, event: &str) -> Vec<Value> {
        self.drain().iter().filter(|v| v["event"] == event).cloned().collect()
    }

    /// What the next requests get (ok, slow, fail, garbage, close), once it says so.
    pub fn set_mode(&mut self, mode: &str) {
        writeln!(self.stdin, "mode {mode}").unwrap();
        self.stdin.flush().unwrap();
        let ack = self.wait("mode", Duration::from_secs(10));
        assert_eq!(ack["mode"], mode);
    }

    /// Answer ok requests after `ms` from now on, once it says so.
    pub fn set_delay(&mut self, ms: u64) {
        writeln!(self.stdin, "delay {ms}").unwrap();
        self.stdin.flush().unwrap();
        let ack = self.wait("delay", Duration::from_secs(10));
        assert_eq!(ack["ms"], ms);
    }

    /// Connections open now (its last report).
    pub fn open_connections(&mut self) -> u64 {
        self.drain().iter().rev().find(|v| v["event"] == "connections").map_or(0, |v| v["open"].as_u64().unwrap())
    }

    /// Stop it (SIGKILL to this child, by its pid) and reap it.
    pub fn kill(mut self) -> Vec<Value> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.drain().to_vec()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

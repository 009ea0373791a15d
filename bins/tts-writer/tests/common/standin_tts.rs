//! Loopback stand-ins for speech servers, speaking the real protocols on 127.0.0.1:
//! * [`Speech`]: an OpenAI-compatible `POST /v1/audio/speech` server (HTTP/1.1, the audio in
//!   chunked transfer encoding as a streaming server sends it);
//! * [`Wyoming`]: a Wyoming TTS service (`describe` → `info`; `synthesize` → `audio-start`,
//!   `audio-chunk` with binary payloads, `audio-stop`; events framed as wyoming 1.10.2 does).
//! Each connection's answer is the next [`Act`] of a script; what was asked and when a
//! connection was dropped by tts-writer is recorded for the test.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the stand-in does with one request.
pub enum Act {
    /// Send `first` bytes of audio, then wait for the gate (≤ 10 s), then the rest.
    Audio { audio: Vec<u8>, first: usize, gate: Option<Receiver<()>> },
    /// Stream the audio `speed` times faster than real time, 20 ms of it a write, `rate`
    /// samples/s (a long answer for barge-in).
    Paced { audio: Vec<u8>, rate: u32, speed: u32 },
    /// HTTP: this status with this body. Wyoming: an `error` event with this text.
    Fail(u16, String),
    /// HTTP 200 / Wyoming: bytes that are not what was asked for.
    Garbage(Vec<u8>),
    /// Start the audio (`bytes` of it), then close the connection mid-stream.
    CloseAfter { audio: Vec<u8>, bytes: usize },
    /// Read the request and answer nothing for this long.
    Stall(Duration),
    /// Think for this long (a server's time to its first audio), then send all the audio.
    After(Duration, Vec<u8>),
}

impl Act {
    /// [`Act::After`] waits its delay here and is then plain audio.
    fn thought_over(self) -> Act {
        match self {
            Act::After(delay, audio) => {
                std::thread::sleep(delay);
                Act::Audio { audio, first: 0, gate: None }
            }
            other => other,
        }
    }
}

/// What the stand-in saw.
#[derive(Default)]
pub struct Seen {
    /// Per request: its head (request line and headers, or the Wyoming event line) and body.
    pub requests: Vec<(String, serde_json::Value)>,
    /// When the answer was complete, per request that completed.
    pub finished: Vec<Instant>,
    /// When a write failed because tts-writer had closed the connection.
    pub dropped: Vec<Instant>,
}

pub type Shared = Arc<Mutex<Seen>>;
type Script = Arc<Mutex<std::vec::IntoIter<Act>>>;

/// A test sine (440 Hz, amplitude 8000) of `ms` at `rate`, as s16le bytes.
pub fn tone(rate: u32, ms: u32) -> Vec<u8> {
    let n = (rate as u64 * ms as u64 / 1000) as usize;
    (0..n)
        .map(|i| ((i as f64 * 440.0 * std::f64::consts::TAU / rate as f64).sin() * 8000.0) as i16)
        .flat_map(|s| s.to_le_bytes())
        .collect()
}

/// The tone as a streamed WAV: data length 0xFFFFFFFF (unknown in advance).
pub fn streamed_wav(rate: u32, pcm: &[u8]) -> Vec<u8> {
    let mut wav = tts_writer::engine::wire::wav_header(rate, 1, 0xffff_ffff, 0xffff_ffff);
    wav.extend_from_slice(pcm);
    wav
}

/// A gate the test opens to let a held [`Act::Audio`] finish.
pub fn gate() -> (Sender<()>, Receiver<()>) {
    channel()
}

fn serve<F>(script: Vec<Act>, each: F) -> (u16, Shared)
where
    F: Fn(TcpStream, Script, &Shared) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, serve_on(listener, script, each))
}

fn serve_on<F>(listener: TcpListener, script: Vec<Act>, each: F) -> Shared
where
    F: Fn(TcpStream, Script, &Shared) + Send + Sync + 'static,
{
    let seen: Shared = Arc::default();
    let shared = seen.clone();
    let script = Arc::new(Mutex::new(script.into_iter()));
    let each = Arc::new(each);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (seen, script, each) = (shared.clone(), script.clone(), each.clone());
            std::thread::spawn(move || each(conn, script, &seen));
        }
    });
    seen
}

// ---------------------------------------------------------------------------------------
// OpenAI-compatible /v1/audio/speech

pub struct Speech {
    pub port: u16,
    pub seen: Shared,
}

impl Speech {
    pub fn start(script: Vec<Act>) -> Speech {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Speech::on(listener, script)
    }

    /// On a listener the test bound (e.g. on a port that was down a moment ago).
    pub fn on(listener: TcpListener, script: Vec<Act>) -> Speech {
        let port = listener.local_addr().unwrap().port();
        let seen = serve_on(listener, script, |conn, script, seen| http_conn(conn, script, seen));
        Speech { port, seen }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

/// Serve requests on one keep-alive connection, each with the script's next act.
fn http_conn(conn: TcpStream, script: Script, seen: &Shared) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let len = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        seen.lock().unwrap().requests.push((head.clone(), json));
        let Some(act) = script.lock().unwrap().next() else {
            let _ = conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 15\r\n\r\nscript finished");
            return;
        };
        if !http_answer(&mut conn, act, seen) {
            return;
        }
    }
}

/// Answer one request; false when the connection is over.
fn http_answer(conn: &mut TcpStream, act: Act, seen: &Shared) -> bool {
    let start = |c: &mut TcpStream, ctype: &str| c.write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ntransfer-encoding: chunked\r\n\r\n").as_bytes());
    let chunk = |c: &mut TcpStream, b: &[u8]| -> std::io::Result<()> {
        c.write_all(format!("{:x}\r\n", b.len()).as_bytes())?;
        c.write_all(b)?;
        c.write_all(b"\r\n")?;
        c.flush()
    };
    let ctype = "audio/pcm";
    let wrote = (|| -> std::io::Result<bool> {
        let act = act.thought_over();
        match act {
            Act::After(..) => unreachable!("made Audio above"),
            Act::Audio { audio, first, gate } => {
                start(conn, ctype)?;
                for piece in audio[..first].chunks(4096) {
                    chunk(conn, piece)?;
                }
                if let Some(g) = gate {
                    let _ = g.recv_timeout(Duration::from_secs(10));
                }
                for piece in audio[first..].chunks(4096) {
                    chunk(conn, piece)?;
                }
                conn.write_all(b"0\r\n\r\n")?;
                seen.lock().unwrap().finished.push(Instant::now());
                Ok(true)
            }
            Act::Paced { audio, rate, speed } => {
                start(conn, ctype)?;
                let per = (rate as usize / 50) * 2;
                let t0 = Instant::now();
                for (i, piece) in audio.chunks(per).enumerate() {
                    let due = t0 + Duration::from_millis(20 * i as u64) / speed;
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    chunk(conn, piece)?;
                }
                conn.write_all(b"0\r\n\r\n")?;
                seen.lock().unwrap().finished.push(Instant::now());
                Ok(true)
            }
            Act::Fail(status, body) => {
                conn.write_all(format!("HTTP/1.1 {status} Oops\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes())?;
                Ok(true)
            }
            Act::Garbage(bytes) => {
                conn.write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n", bytes.len()).as_bytes())?;
                conn.write_all(&bytes)?;
                Ok(true)
            }
            Act::CloseAfter { audio, bytes } => {
                start(conn, ctype)?;
                chunk(conn, &audio[..bytes])?;
                Ok(false)
            }
            Act::Stall(d) => {
                std::thread::sleep(d);
                Ok(false)
            }
        }
    })();
    match wrote {
        Ok(keep) => keep,
        Err(_) => {
            seen.lock().unwrap().dropped.push(Instant::now());
            false
        }
    }
}

// ---------------------------------------------------------------------------------------
// Wyoming

/// One Wyoming event as wyoming 1.10.2 writes it: the header line (type, version, data_length,
/// payload_length), the data JSON, the payload.
pub fn wyoming_event(kind: &str, data: serde_json::Value, payload: &[u8]) -> Vec<u8> {
    let mut header = serde_json::json!({ "type": kind, "version": "1.10.2" });
    let data = serde_json::to_vec(&data).unwrap();
    header["data_length"] = data.len().into();
    if !payload.is_empty() {
        header["payload_length"] = payload.len().into();
    }
    let mut out = serde_json::to_vec(&header).unwrap();
    out.push(b'\n');
    out.extend(data);
    out.extend_from_slice(payload);
    out
}

/// Read one event (header line, data merged into the header's data, payload).
fn read_wyoming(r: &mut BufReader<TcpStream>) -> Option<(String, serde_json::Value)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let header: serde_json::Value = serde_json::from_str(&line).ok()?;
    let mut data = header.get("data").cloned().unwrap_or(serde_json::json!({}));
    let dl = header.get("data_length").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    if dl > 0 {
        let mut b = vec![0; dl];
        r.read_exact(&mut b).ok()?;
        let extra: serde_json::Value = serde_json::from_slice(&b).ok()?;
        for (k, v) in extra.as_object()? {
            data[k] = v.clone();
        }
    }
    let pl = header.get("payload_length").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    let mut p = vec![0; pl];
    r.read_exact(&mut p).ok()?;
    Some((header["type"].as_str()?.to_string(), data))
}

pub struct Wyoming {
    pub port: u16,
    pub seen: Shared,
}

pub const WYOMING_RATE: u32 = 22_050;

impl Wyoming {
    /// A service offering one voice, `test-voice`, answering each `synthesize` with the
    /// script's next act (audio at 22050 Hz in 1024-sample chunks).
    pub fn start(script: Vec<Act>) -> Wyoming {
        let (port, seen) = serve(script, |conn, script, seen| wyoming_conn(conn, script, seen));
        Wyoming { port, seen }
    }

    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

fn wyoming_conn(conn: TcpStream, script: Script, seen: &Shared) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    let format = serde_json::json!({ "rate": WYOMING_RATE, "width": 2, "channels": 1 });
    while let Some((kind, data)) = read_wyoming(&mut reader) {
        seen.lock().unwrap().requests.push((kind.clone(), data.clone()));
        match kind.as_str() {
            "describe" => {
                let info = serde_json::json!({ "asr": [], "tts": [{ "name": "stand-in", "installed": true, "attribution": { "name": "", "url": "" },
                    "voices": [{ "name": "test-voice", "installed": true, "languages": ["en_US"], "attribution": { "name": "", "url": "" } }] }] });
                if conn.write_all(&wyoming_event("info", info, &[])).is_err() {
                    return;
                }
            }
            "synthesize" => {
                let Some(act) = script.lock().unwrap().next() else { return };
                let audio_events = |c: &mut TcpStream, audio: &[u8], pace: Option<Duration>| -> std::io::Result<()> {
                    let t0 = Instant::now();
                    for (i, piece) in audio.chunks(2048).enumerate() {
                        if let Some(p) = pace {
                            std::thread::sleep((t0 + p * i as u32).saturating_duration_since(Instant::now()));
                        }
                        c.write_all(&wyoming_event("audio-chunk", format.clone(), piece))?;
                    }
                    Ok(())
                };
                let act = act.thought_over();
                let r = (|| -> std::io::Result<bool> {
                    match act {
                        Act::After(..) => unreachable!("made Audio above"),
                        Act::Audio { audio, first, gate } => {
                            conn.write_all(&wyoming_event("audio-start", format.clone(), &[]))?;
                            audio_events(&mut conn, &audio[..first], None)?;
                            if let Some(g) = gate {
                                let _ = g.recv_timeout(Duration::from_secs(10));
                            }
                            audio_events(&mut conn, &audio[first..], None)?;
                            conn.write_all(&wyoming_event("audio-stop", serde_json::json!({ "timestamp": null }), &[]))?;
                            seen.lock().unwrap().finished.push(Instant::now());
                            Ok(true)
                        }
                        Act::Paced { audio, rate, speed } => {
                            conn.write_all(&wyoming_event("audio-start", format.clone(), &[]))?;
                            audio_events(&mut conn, &audio, Some(Duration::from_secs_f64(1024.0 / rate as f64 / speed as f64)))?;
                            conn.write_all(&wyoming_event("audio-stop", serde_json::json!({}), &[]))?;
                            seen.lock().unwrap().finished.push(Instant::now());
                            Ok(true)
                        }
                        Act::Fail(_, text) => {
                            // wyoming-piper answers an error event, then closes the connection
                            conn.write_all(&wyoming_event("error", serde_json::json!({ "text": text, "code": "KeyError" }), &[]))?;
                            Ok(false)
                        }
                        Act::Garbage(bytes) => {
                            conn.write_all(&bytes)?;
                            Ok(false)
                        }
                        Act::CloseAfter { audio, bytes } => {
                            conn.write_all(&wyoming_event("audio-start", format.clone(), &[]))?;
                            audio_events(&mut conn, &audio[..bytes], None)?;
                            Ok(false)
                        }
                        Act::Stall(d) => {
                            std::thread::sleep(d);
                            Ok(false)
                        }
                    }
                })();
                match r {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(_) => {
                        seen.lock().unwrap().dropped.push(Instant::now());
                        return;
                    }
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// tts-writer with framed, unpaced output: each reply's audio and its reply-played record.

use std::process::{Child, ChildStdin, Stdio};
use tgvoice::frame::FrameDecoder;
use tgvoice::Frame;

pub struct Framed {
    pub child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<(Instant, Frame)>,
    /// tts-writer's log so far.
    pub log: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

/// A reply as it came out: its audio (48 kHz), when the first of it came, and its record.
pub struct Reply {
    pub audio: Vec<i16>,
    pub first_audio: Option<Instant>,
    pub played: serde_json::Value,
}

impl Framed {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Framed {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = super::tts_writer();
        cmd.args(args).args(["--unpaced", "--output-format", "frames", "--state-dir"]).arg(dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn tts-writer");
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, frames) = channel();
        std::thread::spawn(move || {
            let mut d = FrameDecoder::new();
            let mut buf = [0u8; 65536];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                d.push(&buf[..n]);
                while let Some(f) = d.next() {
                    if tx.send((Instant::now(), f.expect("valid frames"))).is_err() {
                        return;
                    }
                }
            }
        });
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("tts-writer: {line}");
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Framed { child, stdin, frames, log, dir }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Ask for a reply of one chunk.
    pub fn ask(&mut self, turn: u64, text: &str) {
        let mut b = super::chunk(turn, 0, text);
        b.extend(super::reply_end(turn));
        self.send(&b);
    }

    /// The next frame, within `limit`.
    pub fn next_frame(&self, limit: Duration) -> Option<(Instant, Frame)> {
        self.frames.recv_timeout(limit).ok()
    }

    /// Collect `turn`'s audio up to its reply-played record (within 30 s).
    pub fn collect(&self, turn: u64) -> Reply {
        let mut reply = Reply { audio: vec![], first_audio: None, played: serde_json::Value::Null };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, f) = self.next_frame(left).unwrap_or_else(|| panic!("no reply-played for turn {turn} within 30 s"));
            match f {
                Frame::Audio(a) => {
                    assert_eq!(a.turn, turn, "audio of turn {} while waiting for turn {turn}", a.turn);
                    reply.first_audio.get_or_insert(at);
                    reply.audio.extend(a.samples);
                }
                Frame::Event(e) if e.is("reply-played") && e.turn == Some(turn) => {
                    reply.played = serde_json::to_value(&e).unwrap();
                    return reply;
                }
                Frame::Event(_) => {}
            }
        }
    }

    /// Ask for a reply and wait for all of it.
    pub fn reply(&mut self, turn: u64, text: &str) -> Reply {
        self.ask(turn, text);
        self.collect(turn)
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log.lock().unwrap().lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
    }

    /// TCP connections tts-writer holds open to `port` on 127.0.0.1 now (its socket inodes
    /// matched against the kernel's table).
    pub fn connections_to(&self, port: u16) -> usize {
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter_map(|t| t.to_string_lossy().strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
            .collect();
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let remote = format!("0100007F:{port:04X}");
        table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() > 9 && f[2] == remote && f[3] != "0A" && inodes.iter().any(|i| i == f[9]))
            .count()
    }

    /// End the input and wait (≤ 30 s) for tts-writer to exit; its status.
    pub fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "tts-writer did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Framed {
    fn drop(&mut self) {
        // the child we started, by its handle
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Barge-in during a long streamed answer (tts-writer on an output FIFO, paced): after 1 s of
/// playing, a `cancel`. The output stops within one 20 ms frame, the server sees its connection
/// dropped within 300 ms and never finishes its answer, and tts-writer logs `says` (not an error).
pub fn barge_in(args: &[&str], seen: &Shared, says: &str) {
    let mut w = super::LiveWriter::start(args);
    w.send(&super::chunk(1, 0, "A long answer that streams for four seconds."));
    let mut got = vec![];
    w.play_for(&mut got, 1000);
    w.send(&super::event_bytes(tgvoice::Event::new("cancel").with_turn(1)));
    let cancelled = Instant::now();
    let super::LiveWriter { mut reader, child, stdin, .. } = w;
    let mark = got.len() + reader.unread();
    while cancelled.elapsed() < Duration::from_millis(600) {
        reader.read_available(&mut got, Duration::from_millis(5));
    }
    drop(stdin);
    let out = super::wait_with_timeout(child, Duration::from_secs(20));
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{log}");
    assert!(out.status.success());
    let after = got.len().saturating_sub(mark);
    assert!(after <= 1920, "{after} bytes ({:.1} ms) written after the barge-in", after as f64 / 96.0);
    assert!(got.len() > 48_000, "the answer was playing before the barge-in ({} bytes)", got.len());
    let dropped = seen.lock().unwrap().dropped.clone();
    assert_eq!(dropped.len(), 1, "the server saw its connection dropped");
    let took = dropped[0].saturating_duration_since(cancelled);
    assert!(took < Duration::from_millis(300), "the request was dropped {took:?} after the barge-in");
    assert!(seen.lock().unwrap().finished.is_empty(), "the answer was not sent to its end");
    assert!(log.contains(says), "{log}");
    assert!(!log.contains("could not speak"), "a barge-in is not an error: {log}");
}

// ---------------------------------------------------------------------------------------
// A real Wyoming service: wyoming-piper (PyPI 2.5.2) from the project's venv.

use std::process::Command;

/// A wyoming-piper a test or the bench started, stopped (by its handle) when dropped.
pub struct Service(pub Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// wyoming-piper from the project's venv serving the Piper voice scripts/setup installs, on
/// 127.0.0.1:`port`; returns once it accepts connections.
pub fn wyoming_piper(port: u16, data: &std::path::Path) -> Service {
    let venv = std::env::var_os("TGVOICE_VENV").map(std::path::PathBuf::from).unwrap_or_else(|| tgvoice::testkit::cache_dir().join("venv"));
    let program = venv.join("bin/wyoming-piper");
    assert!(program.exists(), "{} missing: run scripts/setup venv (PyPI wyoming-piper==2.5.2)", program.display());
    let mut child = Service(Command::new(program)
        .args(["--uri", &format!("tcp://127.0.0.1:{port}"), "--voice", super::piper_model().to_str().unwrap(), "--data-dir"])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("wyoming-piper exited ({status}) before listening");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "wyoming-piper did not listen within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}


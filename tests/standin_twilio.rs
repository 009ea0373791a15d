//! A stand-in for Twilio, speaking the real protocol over loopback: the voice webhook as a
//! signed form POST (X-Twilio-Signature = base64 HMAC-SHA1 of URL + sorted params, keyed with
//! the auth token), the TwiML answer followed to its `<Connect><Stream>`, a signed WebSocket
//! upgrade, then Media Streams JSON: `connected`, `start` (callSid, streamSid, customParameters,
//! mediaFormat), `media` with base64 μ-law 8 kHz in 20 ms frames sent at real time (silence
//! when the caller says nothing, as a phone line does, or the line's noise floor when the test
//! sets one), `stop`. What comes back is "played" in
//! real time like Twilio's buffer: `mark`s are echoed when played, `clear` drops what is
//! queued and echoes pending marks. Its REST API (`TwilioApi`) takes call updates as
//! api.twilio.com does (basic auth, `Status=completed` or `Twiml=<Response><Dial>…`) and, like
//! Twilio, stops the call's media stream after one. Plus the phone front (`scripts/voicecall` with
//! TGVOICE_PHONE=1) that the tests and the benchmark run.

#![allow(dead_code)]

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tgvoice::mulaw;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub const TOKEN: &str = "stand-in-auth-token-0123456789abcdef";
/// The account of the stand-in's calls (the webhook's AccountSid, `start.accountSid`).
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
const FRAME: usize = 160; // 20 ms at 8 kHz
/// A 20 ms frame with RMS above this is voice (as callsim judges 10 ms at 48 kHz).
pub const VOICE_RMS: f64 = 300.0;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Twilio's request signature.
pub fn sign(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A question spoken by espeak-ng, as 8 kHz samples (what the phone network carries).
pub fn espeak_8k(dir: &Path, name: &str, text: &str) -> Vec<i16> {
    let path = dir.join(format!("{name}.wav"));
    let ok = Command::new("espeak-ng").args(["-v", "en-us", "-s", "150", "-w"]).arg(&path).arg(text).status();
    assert!(ok.map(|s| s.success()).unwrap_or(false), "espeak-ng failed: run scripts/setup");
    wav_8k(&path)
}

/// A WAV file as 8 kHz samples (what the phone network carries).
pub fn wav_8k(path: &Path) -> Vec<i16> {
    let (rate, samples) = tgvoice::resample::read_wav_mono(std::fs::File::open(path).unwrap()).unwrap();
    to_8k(rate, &samples)
}

/// `samples` at `rate` resampled to 8 kHz.
pub fn to_8k(rate: u32, samples: &[i16]) -> Vec<i16> {
    let mut r = tgvoice::resample::StreamResampler::new(rate, 8000, rate as usize / 50).unwrap();
    let mut out = r.process(samples);
    out.extend(r.flush());
    out
}

pub fn rms(s: &[i16]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
}

/// A phone front: `scripts/voicecall --instance NAME start` with TGVOICE_PHONE=1 (the local
/// LLM server and phone-bridge, which keeps `pool` pipeline instances warm).
pub struct PhoneFront {
    pub instance: String,
    pub state: tempfile::TempDir,
    pub port: u16,
}

impl PhoneFront {
    pub fn start(name: &str, pool: usize, max_calls: usize) -> PhoneFront {
        Self::start_with(name, pool, max_calls, &[])
    }

    /// [`PhoneFront::start`] with more environment for the front and its lines (e.g.
    /// `TGVOICE_LOG=warn`).
    pub fn start_with(name: &str, pool: usize, max_calls: usize, env: &[(&str, &str)]) -> PhoneFront {
        Self::start_with_args(name, pool, max_calls, env, "")
    }

    /// [`PhoneFront::start_with`] with more phone-bridge flags (e.g. `--api-base URL`).
    pub fn start_with_args(name: &str, pool: usize, max_calls: usize, env: &[(&str, &str)], more_args: &str) -> PhoneFront {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let front = PhoneFront { instance: format!("{name}-{}", std::process::id()), state: tempfile::tempdir().unwrap(), port };
        let keep = root().join("target/pipeline-logs").join(&front.instance);
        let args = format!(
            "--listen 127.0.0.1:{port} --public-url http://127.0.0.1:{port} --pool {pool} --max-calls {max_calls} --keep-logs {} {more_args}",
            keep.display()
        );
        let mut vars = vec![("TGVOICE_PHONE", "1"), ("TWILIO_AUTH_TOKEN", TOKEN), ("TGVOICE_PHONE_ARGS", args.as_str())];
        vars.extend_from_slice(env);
        let out = front.voicecall(&["start"], &vars);
        assert!(out.status.success(), "voicecall start: {}", String::from_utf8_lossy(&out.stderr));
        front
    }

    pub fn voicecall(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        tgvoice::testkit::voicecall(&root(), &self.instance, self.state.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run scripts/voicecall")
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join(&self.instance).join("logs/phone-bridge.log")).unwrap_or_default()
    }

    pub async fn health(&self) -> Option<Value> {
        let r = reqwest::get(format!("{}/healthz", self.base_url())).await.ok()?;
        r.json().await.ok()
    }

    /// Wait until `n` instances are warm (and the LLM server answers).
    pub async fn wait_warm(&self, n: u64, timeout: Duration) {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(h) = self.health().await {
                if h["warm"].as_u64() >= Some(n) && h["active"] == 0 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{n} warm instance(s) not ready in {timeout:?}; phone-bridge log:\n{}", self.log());
    }

    /// Names of the per-call instances that exist now (state directories).
    pub fn line_instances(&self) -> Vec<String> {
        std::fs::read_dir(self.state.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(&format!("{}-line", self.instance)))
            .collect()
    }

    pub fn stop(&self) {
        let out = self.voicecall(&["stop"], &[]);
        assert!(out.status.success(), "voicecall stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PhoneFront {
    fn drop(&mut self) {
        let _ = self.voicecall(&["stop"], &[]);
        let keep = root().join("target/pipeline-logs").join(&self.instance);
        let _ = std::fs::create_dir_all(&keep);
        let _ = std::fs::write(keep.join("phone-bridge.log"), self.log());
        eprintln!("phone-bridge log kept in {}", keep.display());
    }
}

/// What the webhook answered.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The `<Stream url>` and its `<Parameter>`s.
    pub fn stream(&self) -> Option<(String, Vec<(String, String)>)> {
        let url = attr(&self.body, "<Stream url=\"")?;
        let mut params = vec![];
        let mut rest = self.body.as_str();
        while let Some(i) = rest.find("<Parameter name=\"") {
            rest = &rest[i..];
            let name = attr(rest, "<Parameter name=\"")?;
            let value = attr(rest, "value=\"")?;
            params.push((unescape(&name), unescape(&value)));
            rest = &rest[1..];
        }
        Some((unescape(&url), params))
    }
}

fn attr(s: &str, prefix: &str) -> Option<String> {
    let i = s.find(prefix)? + prefix.len();
    let j = s[i..].find('"')?;
    Some(s[i..i + j].to_string())
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&apos;", "'").replace("&amp;", "&")
}

pub fn call_sid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!("CA{:016x}{:016x}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// Twilio's voice webhook for an incoming call from `from`, signed with `token`.
pub async fn webhook(base: &str, call_sid: &str, from: &str, token: Option<&str>) -> Answer {
    let url = format!("{base}/voice");
    let params = [
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Called", "+15550100000"),
        ("Caller", from),
        ("Direction", "inbound"),
        ("From", from),
        ("To", "+15550100000"),
    ];
    let mut req = reqwest::Client::new().post(&url).form(&params);
    if let Some(token) = token {
        req = req.header("X-Twilio-Signature", sign(token, &url, &params));
    }
    let r = req.send().await.expect("webhook request");
    Answer { status: r.status().as_u16(), body: r.text().await.unwrap_or_default() }
}

/// Open the Media Streams WebSocket as Twilio does (signed upgrade). Err(status) if refused.
pub async fn open_stream(url: &str, token: &str) -> Result<Ws, u16> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("X-Twilio-Signature", sign(token, url, &[]).parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("WebSocket to {url}: {e}"),
    }
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One 20 ms frame as the caller heard it (Twilio's playout of what the bridge sent).
#[derive(Clone, Copy, Debug)]
pub struct Played {
    pub at: Instant,
    pub rms: f64,
}

#[derive(Default)]
pub struct Line {
    /// The caller's speech still to send (8 kHz).
    to_say: Vec<i16>,
    /// When the caller's last voiced frame was sent, and the first of the current utterance.
    pub said_last_voice: Option<Instant>,
    pub said_first_voice: Option<Instant>,
    /// Everything played to the caller, in order.
    pub played: Vec<Played>,
    play_end: Option<Instant>,
    pending_marks: Vec<(String, Instant)>,
    pub clears: Vec<Instant>,
    pub marks_echoed: usize,
    /// Each mark echoed: its name and when (its audio had played).
    pub echoed: Vec<(String, Instant)>,
    /// Mark echoes waiting for the next send.
    outbox: Vec<Message>,
    /// The line's own noise, looped under everything the caller sends (a phone line is never
    /// digitally silent); empty = none.
    line_noise: Vec<i16>,
    line_noise_at: usize,
    pub closed: bool,
}

/// A call in progress: the stand-in's side of one Media Stream.
pub struct PhoneCall {
    pub call_sid: String,
    pub started: Instant,
    pub line: Arc<Mutex<Line>>,
    raw: tokio::sync::mpsc::UnboundedSender<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl PhoneCall {
    /// Webhook, TwiML, WebSocket, `connected` + `start`: the call is up.
    pub async fn dial(base: &str, from: &str) -> PhoneCall {
        let sid = call_sid();
        let answer = webhook(base, &sid, from, Some(TOKEN)).await;
        assert_eq!(answer.status, 200, "webhook refused: {}", answer.body);
        let (url, params) = answer.stream().unwrap_or_else(|| panic!("no <Connect><Stream> in {}", answer.body));
        let ws = open_stream(&url, TOKEN).await.unwrap_or_else(|s| panic!("stream refused: {s}"));
        Self::run(ws, sid, params).await
    }

    async fn run(ws: Ws, call_sid: String, params: Vec<(String, String)>) -> PhoneCall {
        let (mut tx, mut rx) = ws.split();
        let stream_sid = format!("MZ{}", &call_sid[2..]);
        let custom: serde_json::Map<String, Value> = params.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        tx.send(Message::Text(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string().into())).await.unwrap();
        tx.send(Message::Text(
            json!({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
                "start": {"accountSid": ACCOUNT_SID, "streamSid": stream_sid, "callSid": call_sid,
                    "tracks": ["inbound"], "customParameters": custom,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
            .to_string()
            .into(),
        ))
        .await
        .unwrap();
        let started = Instant::now();
        let line = Arc::new(Mutex::new(Line::default()));
        let (raw_tx, mut raw_rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
        STREAMS.lock().unwrap().insert(call_sid.clone(), raw_tx.clone());
        let l = line.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let (mut seq, mut chunk) = (2u64, 1u64);
            let t0 = Instant::now();
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        // The caller's next 20 ms (silence when nothing is being said).
                        let frame: Vec<i16> = {
                            let mut guard = l.lock().unwrap();
                            let line = &mut *guard;
                            let n = FRAME.min(line.to_say.len());
                            let mut f: Vec<i16> = line.to_say.drain(..n).collect();
                            f.resize(FRAME, 0);
                            if rms(&f) > VOICE_RMS {
                                let now = Instant::now();
                                line.said_first_voice.get_or_insert(now);
                                line.said_last_voice = Some(now);
                            }
                            if !line.line_noise.is_empty() {
                                for s in f.iter_mut() {
                                    *s = s.saturating_add(line.line_noise[line.line_noise_at]);
                                    line.line_noise_at = (line.line_noise_at + 1) % line.line_noise.len();
                                }
                            }
                            // Echo marks whose audio has been played.
                            let now = Instant::now();
                            let (done, keep): (Vec<_>, Vec<_>) = line.pending_marks.drain(..).partition(|(_, at)| *at <= now);
                            line.pending_marks = keep;
                            for (name, _) in done {
                                line.marks_echoed += 1;
                                line.echoed.push((name.clone(), now));
                                let m = mark_message(&stream_sid, &name, &mut seq);
                                line.outbox.push(m);
                            }
                            f
                        };
                        let payload = base64::engine::general_purpose::STANDARD.encode(mulaw::encode_all(&frame));
                        let ts = t0.elapsed().as_millis().to_string();
                        let msg = json!({"event": "media", "sequenceNumber": seq.to_string(), "streamSid": stream_sid,
                            "media": {"track": "inbound", "chunk": chunk.to_string(), "timestamp": ts, "payload": payload}});
                        seq += 1;
                        chunk += 1;
                        if tx.send(Message::Text(msg.to_string().into())).await.is_err() {
                            break;
                        }
                        let queued: Vec<Message> = l.lock().unwrap().outbox.drain(..).collect();
                        for m in queued {
                            if tx.send(m).await.is_err() { break; }
                        }
                    }
                    m = raw_rx.recv() => {
                        let Some(m) = m else { break };
                        let stop = matches!(&m, Message::Close(_));
                        if tx.send(m).await.is_err() || stop {
                            break;
                        }
                    }
                    m = rx.next() => {
                        let Some(Ok(m)) = m else { break };
                        if let Message::Text(t) = m {
                            let v: Value = serde_json::from_str(&t).expect("the bridge sends JSON");
                            assert_eq!(v["streamSid"], stream_sid, "message for another stream: {v}");
                            on_bridge_message(&l, &v);
                        }
                    }
                }
            }
            l.lock().unwrap().closed = true;
        });
        PhoneCall { call_sid, started, line, raw: raw_tx, task }
    }

    /// Start saying `samples` (8 kHz); returns at once.
    pub fn say(&self, samples: &[i16]) {
        let mut line = self.line.lock().unwrap();
        line.said_first_voice = None;
        line.to_say.extend_from_slice(samples);
    }

    /// Say `samples` and wait until they have been sent; returns (first, last) voiced frame.
    pub async fn say_all(&self, samples: &[i16]) -> (Instant, Instant) {
        self.say(samples);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let line = self.line.lock().unwrap();
            if line.to_say.is_empty() {
                return (line.said_first_voice.unwrap(), line.said_last_voice.unwrap());
            }
        }
    }

    /// From now on the caller's side carries `noise` (8 kHz, looped) under what is said.
    pub fn set_line_noise(&self, noise: Vec<i16>) {
        let mut line = self.line.lock().unwrap();
        line.line_noise = noise;
        line.line_noise_at = 0;
    }

    /// Send a raw WebSocket message (malformed input tests).
    pub fn send_raw(&self, m: Message) {
        let _ = self.raw.send(m);
    }

    /// The first voiced frame played at or after `after`, waiting up to `timeout`.
    pub async fn voice_after(&self, after: Instant, timeout: Duration) -> Option<Instant> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(p) = self.line.lock().unwrap().played.iter().find(|p| p.at >= after && p.rms > VOICE_RMS) {
                return Some(p.at);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Wait until the caller has heard `quiet` of silence (nothing voiced played) after `after`.
    pub async fn quiet_after(&self, after: Instant, quiet: Duration, timeout: Duration) -> Instant {
        let t0 = Instant::now();
        loop {
            let last = self.last_voice_between(after, Instant::now() + Duration::from_secs(60)).unwrap_or(after);
            let play_end = self.line.lock().unwrap().play_end.unwrap_or(after);
            if Instant::now() >= last.max(play_end) + quiet || t0.elapsed() > timeout {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn last_voice_between(&self, from: Instant, to: Instant) -> Option<Instant> {
        self.line.lock().unwrap().played.iter().filter(|p| p.at >= from && p.at < to && p.rms > VOICE_RMS).map(|p| p.at).last()
    }

    pub fn clears_after(&self, t: Instant) -> Vec<Instant> {
        self.line.lock().unwrap().clears.iter().copied().filter(|&c| c >= t).collect()
    }

    /// The caller hangs up: `stop`, then the socket closes.
    pub async fn hang_up(self) {
        let _ = self.raw.send(stop_message(&self.call_sid));
        let _ = self.raw.send(Message::Close(None));
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }

    /// Wait (up to `timeout`) until the stream has closed (Twilio stopped it, or the bridge
    /// closed it); true if it did.
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.line.lock().unwrap().closed {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// Media Streams' `stop` for `call_sid`.
fn stop_message(call_sid: &str) -> Message {
    let stop = json!({"event": "stop", "sequenceNumber": "0", "streamSid": format!("MZ{}", &call_sid[2..]),
        "stop": {"accountSid": ACCOUNT_SID, "callSid": call_sid}});
    Message::Text(stop.to_string().into())
}

/// The live calls' streams by CallSid: a call update stops its stream, as Twilio's does.
static STREAMS: Mutex<std::collections::BTreeMap<String, tokio::sync::mpsc::UnboundedSender<Message>>> =
    Mutex::new(std::collections::BTreeMap::new());

/// A call update that reached the stand-in REST API.
#[derive(Clone, Debug)]
pub struct CallUpdate {
    pub at: Instant,
    pub call_sid: String,
    pub form: std::collections::HashMap<String, String>,
}

/// A stand-in for api.twilio.com's call update, on loopback:
/// `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with HTTP basic auth
/// (ACCOUNT_SID, TOKEN) and a form with `Status=completed` or `Twiml`. Anything else is
/// answered as Twilio would (401, 404, 400) and not recorded. An accepted update ends the
/// call's media stream (`stop`, then the socket closes), as the real call leaves the
/// `<Connect><Stream>`.
pub struct TwilioApi {
    pub base: String,
    pub updates: Arc<Mutex<Vec<CallUpdate>>>,
}

impl TwilioApi {
    pub async fn start() -> TwilioApi {
        use axum::extract::{Path as UrlPath, State};
        use axum::http::{HeaderMap, StatusCode};
        type Updates = Arc<Mutex<Vec<CallUpdate>>>;
        async fn update(
            State(updates): State<Updates>,
            UrlPath((account, call)): UrlPath<(String, String)>,
            headers: HeaderMap,
            axum::Form(form): axum::Form<std::collections::HashMap<String, String>>,
        ) -> (StatusCode, String) {
            let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{TOKEN}")));
            if account != ACCOUNT_SID || headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
                return (StatusCode::UNAUTHORIZED, r#"{"code": 20003, "message": "Authenticate"}"#.into());
            }
            let Some(call_sid) = call.strip_suffix(".json").map(str::to_string) else {
                return (StatusCode::NOT_FOUND, "{}".into());
            };
            let ok_form = form.get("Status").is_some_and(|s| s == "completed") || form.get("Twiml").is_some_and(|t| t.contains("<Response>"));
            if !ok_form {
                return (StatusCode::BAD_REQUEST, r#"{"code": 21218, "message": "Invalid call update"}"#.into());
            }
            let Some(stream) = STREAMS.lock().unwrap().remove(&call_sid) else {
                return (StatusCode::NOT_FOUND, r#"{"code": 20404, "message": "The requested resource was not found"}"#.into());
            };
            updates.lock().unwrap().push(CallUpdate { at: Instant::now(), call_sid: call_sid.clone(), form });
            let _ = stream.send(stop_message(&call_sid));
            let _ = stream.send(Message::Close(None));
            (StatusCode::OK, json!({"sid": call_sid, "account_sid": ACCOUNT_SID, "status": "completed"}).to_string())
        }
        let updates: Updates = Arc::default();
        let app = axum::Router::new()
            .route("/2010-04-01/Accounts/{account}/Calls/{call}", axum::routing::post(update))
            .with_state(updates.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TwilioApi { base, updates }
    }

    /// The first update of `call_sid`, waiting up to `timeout`.
    pub async fn update_of(&self, call_sid: &str, timeout: Duration) -> Option<CallUpdate> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(u) = self.updates.lock().unwrap().iter().find(|u| u.call_sid == call_sid) {
                return Some(u.clone());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

fn mark_message(stream_sid: &str, name: &str, seq: &mut u64) -> Message {
    *seq += 1;
    Message::Text(json!({"event": "mark", "sequenceNumber": seq.to_string(), "streamSid": stream_sid, "mark": {"name": name}}).to_string().into())
}

/// Twilio's side of what the bridge sends: play media in real time, echo marks when played,
/// flush on clear.
fn on_bridge_message(line: &Arc<Mutex<Line>>, v: &Value) {
    let mut l = line.lock().unwrap();
    let now = Instant::now();
    match v["event"].as_str() {
        Some("media") => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(v["media"]["payload"].as_str().expect("payload")).expect("base64");
            let samples = mulaw::decode_all(&bytes);
            let mut at = l.play_end.map_or(now, |e| e.max(now));
            for f in samples.chunks(FRAME) {
                l.played.push(Played { at, rms: rms(f) });
                at += Duration::from_millis(20) * f.len() as u32 / FRAME as u32;
            }
            l.play_end = Some(at);
        }
        Some("mark") => {
            let at = l.play_end.map_or(now, |e| e.max(now));
            l.pending_marks.push((v["mark"]["name"].as_str().expect("mark name").to_string(), at));
        }
        Some("clear") => {
            l.clears.push(now);
            l.played.retain(|p| p.at <= now);
            l.play_end = Some(now);
            for (_, at) in l.pending_marks.iter_mut() {
                *at = now; // Twilio answers every pending mark on clear
            }
        }
        other => panic!("the bridge sent an unknown event {other:?}: {v}"),
    }
}

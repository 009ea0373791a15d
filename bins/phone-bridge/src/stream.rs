//! One Twilio Media Streams WebSocket = one call. Messages from Twilio: `connected`, `start`,
//! `media`, `mark`, `dtmf`, `stop`; to Twilio: `media`, `mark` (after each burst of speech, so
//! we know what Twilio has not played yet) and `clear` on barge-in. Anything malformed or
//! unknown is logged (one line per kind of problem per call) and skipped; the call goes on.

use crate::call::{self, CallLinks, MediaStats, ToPipeline, ToTwilio};
use crate::server::App;
use axum::extract::ws::{Message, WebSocket};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tgvoice::event::kind;
use tgvoice::Event;
use tokio::sync::mpsc::UnboundedReceiver;

struct ActiveCall {
    call_sid: String,
    stream_sid: String,
    to_pipeline: std::sync::mpsc::Sender<ToPipeline>,
    from_pipeline: UnboundedReceiver<ToTwilio>,
    media: tokio::task::JoinHandle<MediaStats>,
    instance: crate::pool::Instance,
    started: Instant,
    first_audio_ms: Option<f64>,
    /// Marks sent and not yet echoed (Twilio has not finished playing up to them).
    unplayed_marks: HashSet<String>,
    audio_since_mark: bool,
    marks_sent: u64,
    clears: u64,
}

/// Problems already reported in this call (one line per kind, not one per frame).
#[derive(Default)]
struct Complaints(BTreeSet<String>);

impl Complaints {
    fn once(&mut self, key: &str, line: impl FnOnce() -> String) {
        if self.0.insert(key.to_string()) {
            log::warn!("{}", line());
        }
    }
}

pub async fn session(mut socket: WebSocket, app: Arc<App>) {
    let mut call: Option<ActiveCall> = None;
    let mut complaints = Complaints::default();
    let mut shutdown = app.shutdown.clone();
    let reason = loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                None => break "dropped",
                Some(Err(e)) => {
                    log::warn!("stream {}: WebSocket error: {e}", sid(&call));
                    break "dropped";
                }
                Some(Ok(Message::Text(text))) => {
                    match on_message(&text, &mut call, &app, &mut complaints).await {
                        Flow::Go => {}
                        Flow::Stop => break "hung-up",
                        Flow::Refuse => {
                            let _ = socket.send(Message::Close(None)).await;
                            return;
                        }
                    }
                }
                Some(Ok(Message::Binary(b))) => complaints.once("binary", || {
                    format!("stream {}: a binary WebSocket message ({} bytes) was skipped; Media Streams sends JSON text", sid(&call), b.len())
                }),
                Some(Ok(Message::Close(_))) => break "dropped",
                Some(Ok(_)) => {} // ping/pong: handled by the WebSocket layer
            },
            Some(out) = next_from_pipeline(&mut call) => {
                let c = call.as_mut().expect("only polled during a call");
                if let Some(msg) = to_twilio(c, out) {
                    if socket.send(Message::Text(msg.to_string().into())).await.is_err() {
                        break "dropped";
                    }
                }
            }
            _ = shutdown.changed() => break "shutdown",
        }
    };
    if let Some(c) = call {
        end_call(c, reason, &app).await;
    }
    let _ = socket.send(Message::Close(None)).await;
}

enum Flow {
    Go,
    Stop,
    Refuse,
}

fn sid(call: &Option<ActiveCall>) -> &str {
    call.as_ref().map(|c| c.call_sid.as_str()).unwrap_or("(not started)")
}

async fn next_from_pipeline(call: &mut Option<ActiveCall>) -> Option<ToTwilio> {
    match call {
        Some(c) => c.from_pipeline.recv().await,
        None => std::future::pending().await,
    }
}

async fn on_message(text: &str, call: &mut Option<ActiveCall>, app: &Arc<App>, complaints: &mut Complaints) -> Flow {
    let msg: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            let head: String = text.chars().take(60).collect();
            complaints.once("json", || {
                format!("stream {}: bad input: a message that is not a JSON object was skipped ({head:?}…); expected Media Streams JSON with an \"event\" field", sid(call))
            });
            return Flow::Go;
        }
    };
    match msg["event"].as_str().unwrap_or("") {
        "connected" => log::debug!("stream connected: protocol {} {}", msg["protocol"], msg["version"]),
        "start" => {
            if call.is_some() {
                complaints.once("start-twice", || format!("stream {}: a second start message was ignored", sid(call)));
                return Flow::Go;
            }
            match start_call(&msg, app).await {
                Some(c) => *call = Some(c),
                None => return Flow::Refuse,
            }
        }
        "media" => {
            let Some(c) = call.as_mut() else {
                complaints.once("media-early", || "a media message before start was skipped".into());
                return Flow::Go;
            };
            let media = &msg["media"];
            if media["track"].as_str().is_some_and(|t| t != "inbound") {
                return Flow::Go; // only the caller's side goes to the pipeline
            }
            match media["payload"].as_str().map(|p| base64::engine::general_purpose::STANDARD.decode(p)) {
                Some(Ok(bytes)) if !bytes.is_empty() => {
                    let _ = c.to_pipeline.send(ToPipeline::Audio(bytes));
                }
                _ => complaints.once("payload", || {
                    format!("call {}: bad input: a media message without a base64 μ-law payload was skipped", c.call_sid)
                }),
            }
        }
        "mark" => {
            if let (Some(c), Some(name)) = (call.as_mut(), msg["mark"]["name"].as_str()) {
                c.unplayed_marks.remove(name);
            }
        }
        "dtmf" => log::info!("call {}: caller pressed {}", sid(call), msg["dtmf"]["digit"]),
        "stop" => return Flow::Stop,
        other => {
            let other = other.to_string();
            complaints.once(&format!("unknown:{other}"), || {
                format!("stream {}: unknown Media Streams event {other:?} skipped", sid(call))
            });
        }
    }
    Flow::Go
}

async fn start_call(msg: &Value, app: &Arc<App>) -> Option<ActiveCall> {
    let start = &msg["start"];
    let call_sid = start["callSid"].as_str().or(msg["start"]["callSid"].as_str()).unwrap_or("unknown").to_string();
    let stream_sid = msg["streamSid"].as_str().or(start["streamSid"].as_str()).unwrap_or("").to_string();
    let fmt = &start["mediaFormat"];
    if fmt.is_object() && (fmt["encoding"] != "audio/x-mulaw" || fmt["sampleRate"] != 8000 || fmt["channels"] != 1) {
        log::error!("call {call_sid}: media format {fmt} is not 8 kHz mono μ-law; refusing the stream");
        return None;
    }
    let peer = start["customParameters"]["from"].as_str().unwrap_or("unknown").to_string();
    let mut instance = match app.pool.take().await {
        Ok(i) => i,
        Err(e) => {
            log::error!("call {call_sid} from {peer}: no pipeline for it: {e:#}");
            return None;
        }
    };
    let mut links: CallLinks = instance.links.take().expect("a warm instance has its links open");
    links.drain();
    let (to_pipeline, from_ws) = std::sync::mpsc::channel();
    let (to_ws, from_pipeline) = tokio::sync::mpsc::unbounded_channel();
    let media = tokio::task::spawn_blocking(move || call::run(links, from_ws, to_ws));
    let mut event = Event::new(kind::CALL_START).with("call", call_sid.clone()).with("peer", peer.clone());
    if !app.greeting.is_empty() {
        event = event.with("greeting", app.greeting.clone());
    }
    let _ = to_pipeline.send(ToPipeline::Event(event));
    log::info!("call {call_sid} from {peer}: on instance {} ({} of {} lines busy)", instance.name, app.pool.active(), app.pool.config().max_calls);
    Some(ActiveCall {
        call_sid,
        stream_sid,
        to_pipeline,
        from_pipeline,
        media,
        instance,
        started: Instant::now(),
        first_audio_ms: None,
        unplayed_marks: HashSet::new(),
        audio_since_mark: false,
        marks_sent: 0,
        clears: 0,
    })
}

/// What the pipeline side produced, as a message for Twilio (or a log line).
fn to_twilio(c: &mut ActiveCall, out: ToTwilio) -> Option<Value> {
    match out {
        ToTwilio::Audio(bytes) => {
            if c.first_audio_ms.is_none() {
                let ms = c.started.elapsed().as_secs_f64() * 1e3;
                c.first_audio_ms = Some(ms);
                log::info!("call {}: first audio (the greeting) {ms:.0} ms after start", c.call_sid);
            }
            c.audio_since_mark = true;
            let payload = base64::engine::general_purpose::STANDARD.encode(bytes);
            Some(json!({"event": "media", "streamSid": c.stream_sid, "media": {"payload": payload}}))
        }
        ToTwilio::EndOfBurst => {
            c.marks_sent += 1;
            let name = format!("burst-{}", c.marks_sent);
            c.unplayed_marks.insert(name.clone());
            c.audio_since_mark = false;
            Some(json!({"event": "mark", "streamSid": c.stream_sid, "mark": {"name": name}}))
        }
        ToTwilio::BargeIn { why, replying, onset_ms } => {
            // Between two sentences of a reply Twilio may have played everything: clear anyway,
            // the next sentence must not follow what was already queued.
            if c.unplayed_marks.is_empty() && !c.audio_since_mark && !replying {
                log::debug!("call {}: {why} while nothing was playing", c.call_sid);
                return None;
            }
            c.unplayed_marks.clear();
            c.audio_since_mark = false;
            c.clears += 1;
            let onset = onset_ms.map(|ms| format!(", {ms:.0} ms after the caller's speech onset")).unwrap_or_default();
            log::info!("call {}: barge-in ({why}): clearing Twilio's buffer{onset}", c.call_sid);
            Some(json!({"event": "clear", "streamSid": c.stream_sid}))
        }
        ToTwilio::Heard(text) => {
            log::info!("call {}: heard {text:?}", c.call_sid);
            None
        }
        ToTwilio::Said(text) => {
            log::info!("call {}: saying {text:?}", c.call_sid);
            None
        }
    }
}

async fn end_call(c: ActiveCall, reason: &str, app: &Arc<App>) {
    let end = Event::new(kind::CALL_END).with("call", c.call_sid.clone()).with("reason", reason);
    let _ = c.to_pipeline.send(ToPipeline::Event(end));
    drop(c.to_pipeline); // the media thread delivers call-end, then returns
    let stats = c.media.await.unwrap_or_default();
    log::info!(
        "call {} ended ({reason}) after {:.1} s: {} frames in ({} dropped at tg_input.raw), {} out, {} barge-in(s), {} clear(s); first audio {}",
        c.call_sid,
        c.started.elapsed().as_secs_f64(),
        stats.frames_in,
        stats.input_dropped,
        stats.frames_out,
        stats.barge_ins,
        c.clears,
        c.first_audio_ms.map(|m| format!("{m:.0} ms")).unwrap_or("never".into())
    );
    app.pool.release(c.instance);
}

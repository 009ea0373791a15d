//! One Twilio Media Streams WebSocket = one call. Messages from Twilio: `connected`, `start`,
//! `media`, `mark`, `dtmf`, `stop`; to Twilio: `media`, `mark` (after each burst of speech, so
//! we know what Twilio has not played yet) and `clear` on barge-in. Anything malformed or
//! unknown is logged (one line per kind of problem per call) and skipped; the call goes on.
//! Call control (fifo-layout.md "Call control"): a `hangup`/`transfer` from line.frames is
//! followed by a `mark`; when Twilio echoes it (the goodbye has played), the live call is updated
//! through the REST API (rest.rs).

use crate::call::{self, CallLinks, MediaStats, ToPipeline, ToTwilio};
use crate::rest::{TwilioRest, Update};
use crate::server::App;
use axum::extract::ws::{Message, WebSocket};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tgvoice::event::kind;
use tgvoice::Event;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

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
    /// The controls its call-start offered: end (line.frames is there), transfer (and numbers
    /// and an account SID).
    can_end: bool,
    can_transfer: bool,
    /// For the REST API: the stream's `start.accountSid`, else `--account-sid`.
    account_sid: Option<String>,
    /// A hangup/transfer waiting for Twilio to echo its mark.
    pending_control: Option<(String, Update)>,
    /// A REST update was sent and has not answered yet.
    rest_in_flight: bool,
    /// REST updates report back here.
    rest_tx: UnboundedSender<(Update, anyhow::Result<()>)>,
    rest_rx: UnboundedReceiver<(Update, anyhow::Result<()>)>,
    /// How the call ended when the assistant ended or transferred it.
    outcome: Option<&'static str>,
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
            Some(next) = next_for_call(&mut call) => {
                let c = call.as_mut().expect("only polled during a call");
                match next {
                    Next::Pipeline(out) => {
                        if let Some(msg) = to_twilio(c, out, &app) {
                            if socket.send(Message::Text(msg.to_string().into())).await.is_err() {
                                break "dropped";
                            }
                        }
                    }
                    Next::Rest(update, result) => {
                        c.rest_in_flight = false;
                        if !rest_result(c, update, result) {
                            break "ended";
                        }
                    }
                }
            }
            _ = shutdown.changed() => break "shutdown",
        }
    };
    // Twilio stops the stream of a call the assistant ended or transferred, possibly before
    // its answer to the update has arrived: that answer says how the call ended.
    if let Some(c) = call.as_mut().filter(|c| c.rest_in_flight) {
        if let Ok(Some((update, result))) = tokio::time::timeout(std::time::Duration::from_secs(11), c.rest_rx.recv()).await {
            rest_result(c, update, result);
        }
    }
    let reason = match call.as_ref().and_then(|c| c.outcome) {
        Some(outcome) if reason != "shutdown" => outcome,
        _ => reason,
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

enum Next {
    Pipeline(ToTwilio),
    Rest(Update, anyhow::Result<()>),
}

/// The next thing the call's pipeline side or a REST update produced (pending without a call).
async fn next_for_call(call: &mut Option<ActiveCall>) -> Option<Next> {
    match call {
        Some(c) => tokio::select! {
            out = c.from_pipeline.recv() => out.map(Next::Pipeline),
            Some((update, result)) = c.rest_rx.recv() => Some(Next::Rest(update, result)),
        },
        None => std::future::pending().await,
    }
}

/// A REST update came back. False: end the call now (closing the stream ends a call whose
/// TwiML has nothing after `<Connect>`).
fn rest_result(c: &mut ActiveCall, update: Update, result: anyhow::Result<()>) -> bool {
    match (update, result) {
        (Update::End, Ok(())) => {
            log::info!("call {}: ended by the assistant (Twilio REST: Status=completed)", c.call_sid);
            c.outcome = Some("ended");
            true
        }
        (Update::Transfer { number }, Ok(())) => {
            log::info!("call {}: transferred to {number} (Twilio REST: <Dial>)", c.call_sid);
            c.outcome = Some("transferred");
            true
        }
        (Update::End, Err(e)) => {
            log::error!("{e:#}; closing the call's media stream instead (Twilio ends a call whose TwiML has nothing after <Connect>)");
            false
        }
        (Update::Transfer { number }, Err(e)) => {
            log::error!("{e:#}; the transfer to {number} did not happen, the call goes on");
            true
        }
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
                if c.pending_control.as_ref().is_some_and(|(mark, _)| mark == name) {
                    let (_, update) = c.pending_control.take().expect("checked");
                    update_call(c, update, app);
                }
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
    let account_sid = start["accountSid"].as_str().filter(|s| !s.is_empty()).map(str::to_string).or(app.account_sid.clone());
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
    let (rest_tx, rest_rx) = tokio::sync::mpsc::unbounded_channel();
    // What the line can do (fifo-layout.md "Call control"): end the call when tts-writer's
    // line.frames is there; transfer too with numbers to transfer to and an account to do it with.
    let can_end = links.has_line();
    let can_transfer = can_end && !app.transfer_to.is_empty() && account_sid.is_some();
    if can_end && !app.transfer_to.is_empty() && account_sid.is_none() {
        log::warn!("call {call_sid}: no account SID (neither in Twilio's start message nor --account-sid): transfers are not offered");
    }
    let mut controls = vec![];
    if can_end {
        controls.push("end");
    }
    if can_transfer {
        controls.push("transfer");
    }
    let media = tokio::task::spawn_blocking(move || call::run(links, from_ws, to_ws));
    let mut event =
        Event::new(kind::CALL_START).with("call", call_sid.clone()).with("peer", peer.clone()).with("controls", json!(controls));
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
        can_end,
        can_transfer,
        account_sid,
        pending_control: None,
        rest_in_flight: false,
        rest_tx,
        rest_rx,
        outcome: None,
    })
}

/// The goodbye (or the notice) has played: update the live call through Twilio's REST API, in
/// the background; the result comes back on `rest_rx`.
fn update_call(c: &mut ActiveCall, update: Update, app: &Arc<App>) {
    c.rest_in_flight = true;
    let rest = match &c.account_sid {
        Some(sid) => TwilioRest::new(&app.api_base, sid, &app.token),
        None => Err(anyhow::anyhow!(
            "call {}: cannot use Twilio's REST API: no account SID (Twilio's start message had none; set --account-sid or TWILIO_ACCOUNT_SID)",
            c.call_sid
        )),
    };
    let (tx, call_sid) = (c.rest_tx.clone(), c.call_sid.clone());
    tokio::spawn(async move {
        let result = match rest {
            Ok(rest) => rest.update(&call_sid, &update).await,
            Err(e) => Err(e),
        };
        let _ = tx.send((update, result));
    });
}

/// A `hangup`/`transfer` from line.frames: what Twilio is to be asked once the audio it holds
/// has played (None: this line cannot, or not to that number; one log line, the call goes on).
fn control_update(c: &ActiveCall, e: &Event, app: &App) -> Option<Update> {
    let what = e.kind.as_str();
    match what {
        tgvoice::control::HANGUP if c.can_end => Some(Update::End),
        tgvoice::control::TRANSFER if c.can_transfer => {
            let to = e.get_str("to").unwrap_or("");
            match app.transfer_to.iter().find(|t| t.number == to) {
                Some(t) => Some(Update::Transfer { number: t.number.clone() }),
                None => {
                    log::warn!("call {}: a transfer to {to:?} was asked for, which is not on --transfer-to; ignored, the call goes on", c.call_sid);
                    None
                }
            }
        }
        tgvoice::control::HANGUP | tgvoice::control::TRANSFER => {
            log::warn!("call {}: the assistant asked for {what}, which this line does not offer (see phone-bridge --transfer-to, --account-sid); ignored, the call goes on", c.call_sid);
            None
        }
        _ => {
            log::debug!("call {}: line.frames: ignoring {what}", c.call_sid);
            None
        }
    }
}

/// An update for the log: "to end the call", "to transfer it to +1…".
fn asks(update: &Update) -> String {
    match update {
        Update::End => "to end the call".into(),
        Update::Transfer { number } => format!("to transfer it to {number}"),
    }
}

/// What the pipeline side produced, as a message for Twilio (or a log line).
fn to_twilio(c: &mut ActiveCall, out: ToTwilio, app: &App) -> Option<Value> {
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
            if let Some((_, update)) = c.pending_control.take() {
                log::info!("call {}: the caller spoke over the assistant's last words, so its request {} is called off; the call goes on", c.call_sid, asks(&update));
            }
            let onset = onset_ms.map(|ms| format!(", {ms:.0} ms after the caller's speech onset")).unwrap_or_default();
            log::info!("call {}: barge-in ({why}): clearing Twilio's buffer{onset}", c.call_sid);
            Some(json!({"event": "clear", "streamSid": c.stream_sid}))
        }
        ToTwilio::Control(e) => {
            let update = control_update(c, &e, app)?;
            if let Some((_, first)) = &c.pending_control {
                log::warn!("call {}: asked {} while {} waits for its audio to play; ignored", c.call_sid, asks(&update), asks(first));
                return None;
            }
            c.marks_sent += 1;
            let name = format!("control-{}", c.marks_sent);
            c.unplayed_marks.insert(name.clone());
            log::info!("call {}: the assistant asks {} (turn {}); once Twilio has played what it holds", c.call_sid, asks(&update), e.turn.unwrap_or(0));
            c.pending_control = Some((name.clone(), update));
            Some(json!({"event": "mark", "streamSid": c.stream_sid, "mark": {"name": name}}))
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

//! The HTTP side: Twilio's voice webhook (`POST /voice`, answered with TwiML), the Media
//! Streams WebSocket (`GET /stream`) and a health check (`GET /healthz`, JSON line counts for a
//! load balancer). Both Twilio endpoints check `X-Twilio-Signature` and refuse the rest (403).

use crate::pool::Pool;
use crate::signature::{self, AuthToken};
use crate::twiml;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use std::net::SocketAddr;
use std::sync::Arc;

pub const VOICE_PATH: &str = "/voice";
pub const STREAM_PATH: &str = "/stream";

pub struct App {
    pub pool: Arc<Pool>,
    pub token: AuthToken,
    /// The public base URL Twilio uses (https://…); None = taken from the Host header.
    pub public_url: Option<String>,
    pub greeting: String,
    pub busy_message: String,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// `--transfer-to`: the only numbers a `transfer` may go to.
    pub transfer_to: Vec<tgvoice::control::Target>,
    /// `--account-sid` (a stream's `start.accountSid` wins).
    pub account_sid: Option<String>,
    /// Twilio's REST API (`--api-base`).
    pub api_base: String,
}

impl App {
    /// The URL Twilio requested, which is what it signed: the public base URL + path (+ query).
    fn signed_url(&self, headers: &HeaderMap, uri: &axum::http::Uri, websocket: bool) -> String {
        let base = match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost")),
        };
        let base = if websocket {
            base.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1)
        } else {
            base
        };
        let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or(uri.path());
        format!("{base}{path_and_query}")
    }

    fn signature_ok(&self, headers: &HeaderMap, url: &str, params: &[(String, String)]) -> bool {
        headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|sig| signature::verify(&self.token, url, params, sig))
    }

    fn caller_allowed(&self, number: &str) -> bool {
        let number = number.trim();
        if self.deny.iter().any(|d| d == number) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|a| a == number)
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(VOICE_PATH, post(voice))
        .route(STREAM_PATH, get(stream))
        .route("/healthz", get(healthz))
        .with_state(app)
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

async fn voice(
    State(app): State<Arc<App>>,
    ConnectInfo(from_addr): ConnectInfo<SocketAddr>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Form(params): Form<Vec<(String, String)>>,
) -> Response {
    let url = app.signed_url(&headers, &uri, false);
    if !app.signature_ok(&headers, &url, &params) {
        log::warn!("refused a voice webhook from {from_addr}: missing or wrong X-Twilio-Signature for {url} (is --public-url the URL configured at Twilio?)");
        return StatusCode::FORBIDDEN.into_response();
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    let (call_sid, caller) = (get("CallSid"), get("From"));
    if !app.caller_allowed(caller) {
        log::info!("call {call_sid} from {caller}: not allowed (--allow/--deny); rejected");
        return xml(twiml::reject());
    }
    if !app.pool.claim() {
        log::info!("call {call_sid} from {caller}: all {} lines busy; told so and hung up", app.pool.config().max_calls);
        return xml(twiml::say_and_hang_up(&app.busy_message));
    }
    let stream_url = app.signed_url(&headers, &STREAM_PATH.parse().expect("a path"), true);
    log::info!("call {call_sid} from {caller}: connecting its stream");
    xml(twiml::connect_stream(&stream_url, &[("from", caller), ("callSid", call_sid)]))
}

async fn stream(
    State(app): State<Arc<App>>,
    ConnectInfo(from_addr): ConnectInfo<SocketAddr>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let url = app.signed_url(&headers, &uri, true);
    if !app.signature_ok(&headers, &url, &[]) {
        log::warn!("refused a stream from {from_addr}: missing or wrong X-Twilio-Signature for {url}");
        return StatusCode::FORBIDDEN.into_response();
    }
    ws.on_upgrade(move |socket| crate::stream::session(socket, app))
}

async fn healthz(State(app): State<Arc<App>>) -> Json<crate::pool::Status> {
    Json(app.pool.status())
}

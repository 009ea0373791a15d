//! One streamed reply: send the request, read SSE events (parsed by `eventsource-stream`, which
//! also reassembles events and multi-byte UTF-8 split across TCP reads), hand each text delta
//! to a callback. Retries with backoff before the first token on connection errors, timeouts,
//! 429, 5xx/529 and retryable in-stream errors; never after text has been delivered.
//!
//! Cancelling is done by the caller dropping this future: reqwest then drops the connection.

use crate::provider::{ChatMessage, Offer, Provider, StreamItem, ToolAssembler, ToolCall};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use std::ops::ControlFlow;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Retries before the first token (so at most `retries + 1` attempts).
    pub retries: u32,
    /// First backoff; doubled per retry (a `retry-after` header, capped at 10 s, wins).
    pub backoff: Duration,
    pub connect_timeout: Duration,
    /// From sending the first request to the first text token, across all retries: a hung
    /// server costs the caller this long, then the apology.
    pub first_token_timeout: Duration,
    /// Longest silence between two events once text is flowing.
    pub idle_timeout: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            retries: 2,
            backoff: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(5),
            first_token_timeout: Duration::from_secs(8),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a reply failed (after retries). `message` is one clear line, without secrets.
#[derive(Debug, Clone)]
pub struct ReplyError {
    pub message: String,
    pub attempts: u32,
    /// Some text had already been delivered when it failed.
    pub partial: bool,
}

struct AttemptError {
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
}

/// Build the HTTP client used for every reply (connection reuse keeps later requests fast).
pub fn client(opts: &StreamOptions) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true)
        .user_agent(concat!("tgvoice-llm-relay/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Stream a reply to `messages`; `on_text` receives each text delta in order and may end the
/// reply early (`ControlFlow::Break`: enough has been said; the stream is dropped, which stops
/// the server generating). Returns the number of attempts on success.
pub async fn stream_reply(
    client: &reqwest::Client,
    provider: &Provider,
    messages: &[ChatMessage],
    opts: &StreamOptions,
    on_text: impl FnMut(&str) -> ControlFlow<()> + Send,
) -> Result<u32, ReplyError> {
    stream_turn(client, provider, messages, Offer::NONE, opts, on_text).await.map(|(attempts, _)| attempts)
}

/// [`stream_reply`] with tools offered: also returns the tool calls the model made (each with
/// why its arguments are unusable, if they are), in order.
pub async fn stream_turn(
    client: &reqwest::Client,
    provider: &Provider,
    messages: &[ChatMessage],
    offer: Offer<'_>,
    opts: &StreamOptions,
    mut on_text: impl FnMut(&str) -> ControlFlow<()> + Send,
) -> Result<(u32, Vec<(ToolCall, Option<String>)>), ReplyError> {
    let mut attempt = 0;
    let first_deadline = tokio::time::Instant::now() + opts.first_token_timeout;
    let no_model = |message: String| ReplyError { message, attempts: 1, partial: false };
    let provider = &tokio::time::timeout_at(first_deadline, provider.with_model(client))
        .await
        .map_err(|_| no_model(format!("no answer from {} within {:?}", provider.base_url, opts.first_token_timeout)))?
        .map_err(no_model)?;
    loop {
        attempt += 1;
        let mut delivered = false;
        let mut tools = ToolAssembler::default();
        let result = one_attempt(client, provider, messages, offer, opts, first_deadline, &mut tools, &mut |t: &str| {
            delivered = true;
            on_text(t)
        })
        .await;
        let delivered = delivered || !tools.is_empty();
        match result {
            Ok(()) => return Ok((attempt, tools.finish())),
            Err(e) if delivered => {
                return Err(ReplyError { message: e.message, attempts: attempt, partial: true });
            }
            Err(e)
                if e.retryable
                    && attempt <= opts.retries
                    && tokio::time::Instant::now() + e.retry_after.unwrap_or(opts.backoff * 2u32.pow(attempt - 1))
                        < first_deadline =>
            {
                let backoff = e.retry_after.unwrap_or(opts.backoff * 2u32.pow(attempt - 1));
                log::warn!(
                    "{} (attempt {attempt} of {}); retrying in {} ms",
                    e.message,
                    opts.retries + 1,
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
            }
            Err(e) => return Err(ReplyError { message: e.message, attempts: attempt, partial: false }),
        }
    }
}

async fn one_attempt(
    client: &reqwest::Client,
    provider: &Provider,
    messages: &[ChatMessage],
    offer: Offer<'_>,
    opts: &StreamOptions,
    first_deadline: tokio::time::Instant,
    tools: &mut ToolAssembler,
    on_text: &mut (dyn FnMut(&str) -> ControlFlow<()> + Send),
) -> Result<(), AttemptError> {
    let url = provider.url();
    let send = provider.request(client, messages, offer).send();
    let response = match tokio::time::timeout_at(first_deadline, send).await {
        Err(_) => return Err(retry(format!("no response from {url} within {:?}", opts.first_token_timeout))),
        Ok(Err(e)) => return Err(transport_error(&url, e)),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if !status.is_success() {
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .map(|s| Duration::from_secs_f64(s.clamp(0.0, 10.0)));
        let body = tokio::time::timeout(Duration::from_secs(2), response.text()).await.ok().and_then(Result::ok);
        let detail = body.as_deref().map(error_detail).unwrap_or_default();
        let (what, retryable) = match status.as_u16() {
            401 | 403 => ("the API key was rejected; check ANTHROPIC_API_KEY / OPENAI_API_KEY", false),
            404 => ("not found; check --base-url and --model", false),
            429 => ("rate limited", true),
            500..=599 => ("server error", true),
            _ => ("request rejected", false),
        };
        return Err(AttemptError {
            message: format!("{url} answered HTTP {status}: {what}{detail}"),
            retryable,
            retry_after,
        });
    }
    let mut events = response.bytes_stream().eventsource();
    let mut got_text = false;
    loop {
        let next = if got_text {
            tokio::time::timeout(opts.idle_timeout, events.next()).await
        } else {
            tokio::time::timeout_at(first_deadline, events.next()).await
        };
        let event = match next {
            Err(_) if got_text => {
                return Err(retry(format!("the stream from {url} stalled for {:?}", opts.idle_timeout)));
            }
            Err(_) => return Err(retry(format!("no reply token from {url} within {:?}", opts.first_token_timeout))),
            Ok(None) if got_text => {
                log::warn!("the stream from {url} ended without an end marker; taking the reply as complete");
                return Ok(());
            }
            Ok(None) => return Err(retry(format!("the stream from {url} ended before any reply text"))),
            Ok(Some(Err(e))) => {
                return Err(AttemptError {
                    message: format!("malformed or broken event stream from {url}: {e}"),
                    retryable: !got_text,
                    retry_after: None,
                });
            }
            Ok(Some(Ok(ev))) => ev,
        };
        match provider.parse_event(&event.event, &event.data) {
            Ok(StreamItem::Text(t)) => {
                got_text = true;
                if on_text(&t).is_break() {
                    return Ok(());
                }
            }
            Ok(StreamItem::Tools { text, deltas }) => {
                got_text = true;
                for d in deltas {
                    tools.push(d);
                }
                if let Some(t) = text {
                    if on_text(&t).is_break() {
                        return Ok(());
                    }
                }
            }
            Ok(StreamItem::Done) => return Ok(()),
            Ok(StreamItem::Ignore) => {}
            Err(e) => {
                let what = if e.malformed { "malformed event stream" } else { "error event" };
                return Err(AttemptError {
                    message: format!("{what} from {url}: {}", e.message),
                    retryable: e.retryable,
                    retry_after: None,
                });
            }
        }
    }
}

fn retry(message: String) -> AttemptError {
    AttemptError { message, retryable: true, retry_after: None }
}

fn transport_error(url: &str, e: reqwest::Error) -> AttemptError {
    // reqwest errors name the URL but never headers, so the key cannot leak here.
    let mut cause = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    let cause = if cause.is_empty() { String::new() } else { format!(" ({cause})") };
    retry(format!("{what} to {url}{cause}"))
}

/// A short, single-line summary of an error body (Anthropic and OpenAI both use
/// `{"error": {"message": …}}`).
fn error_detail(body: &str) -> String {
    let msg = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect());
    let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    if msg.is_empty() {
        String::new()
    } else {
        format!(" — {msg}")
    }
}

//! phone-bridge — phone calls into tgvoice over Twilio Media Streams. It answers Twilio's voice
//! webhook with TwiML that connects the call to its WebSocket, and gives every call its own
//! pipeline instance (`scripts/voicecall --instance <prefix>-line<N>`), standing where tg-bridge
//! stands: the caller's μ-law 8 kHz audio → `tg_input.raw` (s16le 48 kHz), `tg_output.raw` →
//! μ-law back to Twilio, `call-start`/`call-end` on `control.frames`, and Twilio's buffer
//! cleared the moment the caller barges in. The assistant can end the call or transfer it
//! (fifo-layout.md "Call control"): `hangup`/`transfer` on the instance's `line.frames` become,
//! once Twilio has played the goodbye, an update of the live call through Twilio's REST API.

mod call;
mod pool;
mod rest;
mod server;
mod signature;
mod stream;
mod twiml;

use anyhow::Context;
use clap::Parser;
use pool::{Pool, PoolConfig};
use server::App;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tgvoice::cli::{self, exit, fail, LogArgs};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Phone calls into tgvoice: a Twilio Media Streams bridge, one pipeline instance per call",
    after_help = exit::after_help("Endpoints: POST /voice (Twilio's voice webhook), GET /stream (the Media Streams\n\
WebSocket), GET /healthz (line counts as JSON).\n\n\
The auth token comes from TWILIO_AUTH_TOKEN or --auth-token-file (mode 0600); it is never\n\
logged and is not passed on to the pipeline instances.\n\n\
Example (behind a TLS reverse proxy or tunnel that forwards https://voice.example.com):\n  \
TWILIO_AUTH_TOKEN=… phone-bridge --public-url https://voice.example.com --pool 2 --max-calls 3", &[(exit::FAILURE, ""), (exit::OK, "SIGTERM/SIGINT (calls get call-end shutdown, instances are stopped)"), (exit::CONFIG, "no auth token, a token file readable by others, an address that cannot be listened on, or a bad TGVOICE_PHONE_LISTEN")])
)]
struct Args {
    /// Address to listen on (plain HTTP; put TLS in front, Twilio requires https/wss).
    #[arg(long, default_value = "127.0.0.1:8080", env = "TGVOICE_PHONE_LISTEN")]
    listen: SocketAddr,
    /// The public base URL configured at Twilio (e.g. https://voice.example.com). Signatures
    /// are checked against it and the stream URL is built from it [default: http://<Host>].
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Read the Twilio auth token from this file (must not be readable by others)
    /// [default: $TWILIO_AUTH_TOKEN].
    #[arg(long, value_name = "PATH")]
    auth_token_file: Option<PathBuf>,
    /// Pipeline instances kept started and warm for the next calls.
    #[arg(long, default_value_t = 1)]
    pool: usize,
    /// Calls at once; one more is told the lines are busy and hung up on.
    #[arg(long, default_value_t = 2)]
    max_calls: usize,
    /// Spoken when the call is picked up (empty: none).
    #[arg(long, default_value = "Operator.")]
    greeting: String,
    /// Said to a caller over --max-calls before hanging up.
    #[arg(long, default_value = "Sorry, all our lines are busy right now. Please call again later.")]
    busy_message: String,
    /// Only these caller numbers (E.164, comma-separated) are answered [default: everyone].
    #[arg(long, value_delimiter = ',', value_name = "NUMBERS")]
    allow: Vec<String>,
    /// These caller numbers are rejected.
    #[arg(long, value_delimiter = ',', value_name = "NUMBERS")]
    deny: Vec<String>,
    /// Instances are named <PREFIX>-line<N> (state in ~/.local/state/tgvoice/<name>).
    #[arg(long, default_value = "phone")]
    instance_prefix: String,
    /// The supervisor script that starts and stops instances [default: $TGVOICE_ROOT/scripts/voicecall].
    #[arg(long, value_name = "PATH")]
    voicecall: Option<PathBuf>,
    /// The shared OpenAI-compatible LLM server every instance uses (TGVOICE_LLM_BASE_URL);
    /// without it each instance picks its own provider (see llm-relay --help).
    #[arg(long, value_name = "URL")]
    llm_url: Option<String>,
    /// Before deleting a call's instance, move its logs to DIR/<instance>/ (for post-mortems;
    /// by default nothing of a call is kept but phone-bridge's own log lines).
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<PathBuf>,
    /// A number the assistant may transfer callers to, as NAME=NUMBER (E.164; repeated, or
    /// comma-separated in TGVOICE_TRANSFER_TO). Given to every call's llm-relay; a transfer to a
    /// number not on this list is refused [default: no transfers].
    #[arg(long, value_name = "NAME=NUMBER", env = "TGVOICE_TRANSFER_TO", value_delimiter = ',')]
    transfer_to: Vec<String>,
    /// The Twilio account SID for the REST API (ending and transferring calls); Twilio's
    /// stream `start` message carries it too, which wins [default: $TWILIO_ACCOUNT_SID].
    #[arg(long, value_name = "SID", env = "TWILIO_ACCOUNT_SID")]
    account_sid: Option<String>,
    /// The base URL of Twilio's REST API (a stand-in's in tests).
    #[arg(long, value_name = "URL", default_value = "https://api.twilio.com", env = "TWILIO_API_BASE")]
    api_base: String,
    /// Give up on an instance that is not ready after this many seconds.
    #[arg(long, default_value_t = 120)]
    ready_timeout: u64,
    #[command(flatten)]
    log: LogArgs,
}

fn auth_token(args: &Args) -> anyhow::Result<signature::AuthToken> {
    let token = match &args.auth_token_file {
        Some(path) => {
            let meta = std::fs::metadata(path).with_context(|| format!("cannot read --auth-token-file {}", path.display()))?;
            if meta.mode() & 0o077 != 0 {
                return Err(fail(exit::CONFIG, format!("{} is readable by others; chmod 600 it", path.display())));
            }
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => std::env::var("TWILIO_AUTH_TOKEN").unwrap_or_default(),
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(fail(
            exit::CONFIG,
            "no Twilio auth token: set TWILIO_AUTH_TOKEN or --auth-token-file PATH (mode 0600); requests cannot be verified without it",
        ));
    }
    Ok(signature::AuthToken::new(token))
}

fn main() {
    let args: Args = tgvoice::cli::parse_args();
    tgvoice::log::init("phone-bridge", args.log.verbosity());
    cli::exit_on_panic();
    unsafe {
        let _ = nix_ignore_sigpipe();
    }
    cli::exit_with(main_inner(args))
}

unsafe fn nix_ignore_sigpipe() -> libc::sighandler_t {
    libc::signal(libc::SIGPIPE, libc::SIG_IGN)
}

fn main_inner(args: Args) -> anyhow::Result<()> {
    if args.max_calls == 0 {
        return Err(fail(exit::USAGE, "--max-calls must be at least 1"));
    }
    let token = auth_token(&args)?;
    let transfer_to: Vec<tgvoice::control::Target> = args
        .transfer_to
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(tgvoice::control::parse_target)
        .collect::<Result<_, _>>()
        .map_err(|e| fail(exit::USAGE, e))?;
    // The calls' media path gets priority over bulk compute (whisper, the LLM), as callsim's.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } != 0 {
        log::debug!("could not raise priority (not permitted); running at normal priority");
    }
    // The instances are started from this process: they must not inherit the secret.
    std::env::remove_var("TWILIO_AUTH_TOKEN");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(serve(args, token, transfer_to))
}

async fn serve(args: Args, token: signature::AuthToken, transfer_to: Vec<tgvoice::control::Target>) -> anyhow::Result<()> {
    let pool = Pool::new(PoolConfig {
        voicecall: args.voicecall.clone().unwrap_or_else(pool::default_voicecall),
        prefix: args.instance_prefix.clone(),
        warm: args.pool.min(args.max_calls),
        max_calls: args.max_calls,
        llm_url: args.llm_url.clone(),
        keep_logs: args.keep_logs.clone(),
        ready_timeout: Duration::from_secs(args.ready_timeout),
        transfer_to: transfer_to.iter().map(|t| format!("{}={}", t.name, t.number)).collect::<Vec<_>>().join(","),
        claim_timeout: Duration::from_secs(30),
    });
    if args.llm_url.is_none() && std::env::var_os("TGVOICE_LLM_BASE_URL").is_none() && std::env::var_os("ANTHROPIC_API_KEY").is_none() && std::env::var_os("OPENAI_API_KEY").is_none() {
        log::warn!("no --llm-url or API key: every call's instance starts its own local LLM server (slow, memory-hungry); see README \"Phone calls\"");
    }
    pool.remove_leftovers().await;
    let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| fail(exit::CONFIG, format!("cannot listen on {}: {e}", args.listen)))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = Arc::new(App {
        pool: pool.clone(),
        token,
        public_url: args.public_url.clone(),
        greeting: args.greeting.clone(),
        busy_message: args.busy_message.clone(),
        allow: args.allow.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        deny: args.deny.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        shutdown: stop_rx.clone(),
        transfer_to,
        account_sid: args.account_sid.clone().filter(|s| !s.trim().is_empty()),
        api_base: args.api_base.clone(),
    });
    log::info!(
        "listening on http://{} (webhook {}{}, stream {}); {} warm instance(s), at most {} call(s)",
        listener.local_addr()?,
        args.public_url.as_deref().unwrap_or("http://<Host>"),
        server::VOICE_PATH,
        server::STREAM_PATH,
        args.pool.min(args.max_calls),
        args.max_calls
    );
    // Ready (fifo-layout.md §5): listening; signalled before the pool starts its lines, so
    // their `voicecall start` never holds the notification fd.
    cli::notify_ready();
    pool.refill();
    let mut shutdown_rx = stop_rx.clone();
    let server = axum::serve(listener, server::router(app).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            let _ = shutdown_rx.changed().await;
        });
    let server = tokio::spawn(async move { server.await });

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
    };
    log::info!("stopping on {name}: hanging up {} call(s), stopping the instances", pool.active());
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    pool.shutdown().await;
    Ok(())
}

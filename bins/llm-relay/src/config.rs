//! Flags and environment → which provider to use, where the conversation lives, budgets.
//!
//! Provider choice (`--provider auto`, the default): `ANTHROPIC_API_KEY` set → Claude;
//! else `OPENAI_API_KEY` set → OpenAI-compatible (`--base-url`/`OPENAI_BASE_URL`); else
//! `--base-url`/`TGVOICE_LLM_BASE_URL` set → the user's own OpenAI-compatible server (Ollama,
//! LM Studio, vLLM: no key, the model it lists unless `--model`, the general settings); else
//! the local llama.cpp server on 127.0.0.1 (`scripts/llm-server`), announced in the log.
//! `--provider local --base-url URL` is the local model's server elsewhere (a shared one).
//! API keys are read from the environment only (never flags: they would show in `ps`), and
//! are never logged.

use crate::conversation::Budget;
use crate::provider::{Provider, ProviderKind};
use crate::policy::PolicyConfig;
use crate::relay::RelayConfig;
use crate::stream::StreamOptions;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;
use tgvoice::cli::{exit, fail, LinkArgs, LogArgs};

pub const DEFAULT_ANTHROPIC_MODEL: &str = "claude-haiku-4-5";
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";
pub const DEFAULT_LOCAL_MODEL: &str = "SmolLM2-135M-Instruct";
pub const DEFAULT_LOCAL_PORT: u16 = 8088;
/// How long a transcript waits for the end judge's verdict before the words alone decide. It
/// takes 50–150 ms with the conversation's prefix cached on the server; when the history window
/// has moved on, the server evaluates the whole history first (~400 ms here), which the reply
/// would have to do anyway, and then finds it cached.
pub const END_JUDGE_WAIT: Duration = Duration::from_millis(800);

pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a friendly voice assistant talking to someone on a phone call. \
Your words are spoken aloud, so answer in one to three short, natural sentences. \
Use plain spoken language only: no lists, no markdown, no code, no links, no emoji. \
If you did not understand, ask a short question.";

/// The local model (SmolLM2-135M) answers in broken French to any system prompt but the one it
/// was trained with; this is that prompt plus one instruction, chosen with scripts/llm-check
/// (20 spoken questions in one conversation: 16 right, 20 in English, 20 short — the general
/// prompt above at the server's default temperature gave 4, 6 and 20).
/// SmolLM2-135M ignores "one short sentence" (asked for a cat's name it spoke 11 s of three
/// sentences); two sentences keep the answer and drop the rambling.
pub const DEFAULT_LOCAL_MAX_SENTENCES: usize = 2;
pub const DEFAULT_LOCAL_SYSTEM_PROMPT: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Answer in English in one short sentence.";
/// Greedy decoding for the local model: the same question gets the same answer (the demo's
/// too), and sampling only made a model this small wander (scripts/llm-check).
pub const DEFAULT_LOCAL_TEMPERATURE: f32 = 0.0;

pub const DEFAULT_APOLOGY: &str = "Sorry, I can't answer right now. Please try again in a moment.";
pub const DEFAULT_HOLDING_PHRASE: &str = "One moment, please.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderChoice {
    /// Anthropic if ANTHROPIC_API_KEY is set, else OpenAI if OPENAI_API_KEY is set, else the
    /// OpenAI-compatible server at --base-url if one is given, else local.
    Auto,
    /// Anthropic Messages API (needs ANTHROPIC_API_KEY).
    Anthropic,
    /// Any OpenAI-compatible Chat Completions server (OpenAI, Ollama, llama.cpp, LM Studio, vLLM).
    Openai,
    /// The local model's llama.cpp server started by scripts/llm-server (at --base-url if given,
    /// e.g. one shared by several instances), with the settings that model needs.
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BargeIn {
    Pause,
    Cancel,
}

#[derive(Parser, Debug)]
#[command(
    version,
    mut_arg("format", |a| a.env("TGVOICE_LLM_FORMAT")),
    about = "Stream LLM replies to final transcripts as speakable sentence chunks (tgvoice stage)",
    after_help = exit::after_help(&format!("{}\n\n{}", "Examples:\n  \
  sttd < speech.frames | llm-relay | tts-writer\n  \
  llm-relay -i $RUN/text.frames -o $RUN/reply.frames\n  \
  ANTHROPIC_API_KEY=... llm-relay --model claude-haiku-4-5 < text.frames | framecat\n  \
  OPENAI_API_KEY=x llm-relay --base-url http://127.0.0.1:11434/v1 --model llama3.2 # Ollama\n\n\
Provider (--provider auto): ANTHROPIC_API_KEY set → Claude (default model claude-haiku-4-5);\n\
else OPENAI_API_KEY set → OpenAI-compatible at --base-url (default https://api.openai.com/v1);\n\
else --base-url (TGVOICE_LLM_BASE_URL) set → your OpenAI-compatible server (Ollama, LM Studio,\n\
vLLM), no key sent, the model it lists at /models unless --model;\n\
else the local llama.cpp server at http://127.0.0.1:$TGVOICE_LLM_PORT/v1 (default port 8088;\n\
start it with scripts/llm-server). Keys come from the environment only and are never logged.\n\n\
Input events: transcript (final=true starts a reply; a preview, final=false with preview=true,\n\
starts it early but holds it until the final transcript makes the same request, see --preempt;\n\
other final=false transcripts are ignored), speech-start\n\
(forwarded at once; over a reply that may be playing, --barge-in pause waits for the turn's\n\
words: none or a backchannel → resume {turn}, else the reply is cancelled and cancel {turn: N-1}\n\
is sent), cancel (the reply in progress is cancelled), call-start (new\n\
conversation), call-end; anything else is forwarded unchanged. A caller who pauses and goes on\n\
before the reply reached TTS said one message: the parts are merged and answered together\n\
(never two user messages in a row; see --merge-wait). Output: reply-chunk {turn, seq,\n\
text, trace} per sentence (the first one may end at a clause boundary), then reply-end {turn,\n\
cancelled, trace} (error=true when the LLM failed and the apology was spoken).\n\n\
The conversation is kept as JSONL under --state-dir (conversations/<id>.jsonl, the current id\n\
in current-conversation) and continues after a restart; call-start begins a new one.\n\nReadiness (fifo-layout.md §5): with TGVOICE_NOTIFY_FD=N (scripts/supervise sets it), one\nnewline on fd N, then fd N closed, once its configuration is resolved and its inputs are open; at any log level.", tgvoice::render::output_help(tgvoice::TextView::Reply)), &[(exit::FAILURE, ""), (exit::CONFIG, "bad configuration (e.g. --provider anthropic without ANTHROPIC_API_KEY, a bad TGVOICE_LLM_* value) or an unsafe link path")])
)]
pub struct Args {
    #[command(flatten)]
    pub link: LinkArgs,
    /// Read tts-writer's playback reports (`reply-progress`, `reply-played`: the played.frames
    /// link) from this FIFO, so "is a reply playing?" is known, not guessed from its length.
    /// Without it the relay estimates (12 characters a second plus 1.5 s).
    #[arg(long, value_name = "PATH")]
    pub played: Option<std::path::PathBuf>,
    /// Which LLM to talk to.
    #[arg(long, value_enum, env = "TGVOICE_LLM_PROVIDER", default_value = "auto")]
    pub provider: ProviderChoice,
    /// Model name [default: claude-haiku-4-5 (Anthropic), gpt-4o-mini (OpenAI with a key), the
    /// first model a keyless --base-url server lists, SmolLM2-135M-Instruct (local)].
    #[arg(long, env = "TGVOICE_LLM_MODEL")]
    pub model: Option<String>,
    /// API root: for Anthropic the host (default https://api.anthropic.com, or
    /// ANTHROPIC_BASE_URL); for OpenAI-compatible servers the /v1 root (default
    /// OPENAI_BASE_URL or https://api.openai.com/v1); for local http://127.0.0.1:PORT/v1.
    #[arg(long, env = "TGVOICE_LLM_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,
    /// Port of the local llama.cpp server (used when no API key is set).
    #[arg(long, env = "TGVOICE_LLM_PORT", default_value_t = DEFAULT_LOCAL_PORT)]
    pub local_port: u16,
    /// Longest reply, in tokens.
    #[arg(long, env = "TGVOICE_LLM_MAX_TOKENS", default_value_t = 200)]
    pub max_tokens: u32,
    /// Sampling temperature [default: the provider's; 0 for the local model].
    #[arg(long, env = "TGVOICE_LLM_TEMPERATURE")]
    pub temperature: Option<f32>,
    /// System prompt [default: short, plain spoken answers for a phone call; for the local
    /// model, the prompt it was trained with plus "Answer in English in one short sentence."].
    #[arg(long, env = "TGVOICE_LLM_SYSTEM_PROMPT")]
    pub system_prompt: Option<String>,
    /// Spoken when the LLM fails before saying anything ("" = stay silent).
    #[arg(long, env = "TGVOICE_LLM_APOLOGY", default_value = DEFAULT_APOLOGY)]
    pub apology: String,
    /// Spoken once when the LLM has said nothing --holding-after ms after the caller's message
    /// ("" = stay silent until the answer or the apology).
    #[arg(long, env = "TGVOICE_LLM_HOLDING_PHRASE", default_value = DEFAULT_HOLDING_PHRASE)]
    pub holding_phrase: String,
    /// How long a caller may wait in silence for the first words of a reply before the
    /// holding phrase (ms; 0 = never say it).
    #[arg(long, env = "TGVOICE_LLM_HOLDING_AFTER_MS", default_value_t = 3000, value_name = "MS")]
    pub holding_after: u64,
    /// Where the conversation is kept [default: $TGVOICE_STATE_DIR, else
    /// ~/.local/state/tgvoice/<instance> ($XDG_STATE_HOME honoured)].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Instance name (one state directory per instance).
    #[arg(long, env = "TGVOICE_INSTANCE", default_value = "default")]
    pub instance: String,
    /// At most this many earlier messages are sent with each request.
    #[arg(long, default_value_t = 24)]
    pub history_messages: usize,
    /// At most about this many tokens of history (≈ 4 characters per token) per request
    /// [default: 3000; 1200 for the local server, whose context is 2048 tokens].
    #[arg(long)]
    pub history_tokens: Option<usize>,
    /// Retries before the first token (connection errors, timeouts, 429, 5xx, overloaded).
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// Seconds from sending the request to the first token, retries included; then the
    /// apology is spoken (a hung server costs the caller this long, not retries × this)
    /// [default: 8; 10 for the local server, whose CPU-bound first token can take seconds on
    /// a busy 2-core machine; the holding phrase (--holding-after) fills the wait].
    #[arg(long, env = "TGVOICE_LLM_FIRST_TOKEN_TIMEOUT")]
    pub first_token_timeout: Option<f64>,
    /// Seconds of silence mid-stream before giving up.
    #[arg(long, default_value_t = 20.0)]
    pub idle_timeout: f64,
    /// Seconds to wait for a TCP/TLS connection.
    #[arg(long, default_value_t = 5.0)]
    pub connect_timeout: f64,
    /// The first chunk may end at a clause boundary (, ; : —) once it has this many words
    /// (0 = only at sentence ends).
    #[arg(long, default_value_t = 4)]
    pub first_clause_words: usize,
    /// A message held back because the caller went on speaking is answered on its own if the
    /// next turn's transcript has not come this many seconds after that turn ended (or after
    /// the last transcript). sttd always sends one (empty for a turn without words); this
    /// guards against a replacement stage that does not.
    #[arg(long, default_value_t = 20.0, env = "TGVOICE_LLM_MERGE_WAIT", value_name = "SECS")]
    pub merge_wait: f64,
    /// End a reply after this many sentences: the stream is dropped, so the LLM stops and
    /// nothing more is synthesised; the history keeps what was said (0 = no limit)
    /// [default: 0; 2 for the local model, which tends to ramble on a spoken question].
    #[arg(long, env = "TGVOICE_LLM_MAX_SENTENCES", value_name = "N")]
    pub max_sentences: Option<usize>,
    /// Caller speech over a reply: `pause` — tts-writer has paused it at the onset; the
    /// caller's words decide (a backchannel or no words resume it, anything else cancels it);
    /// `cancel` — speech-start cancels the reply at once (every cough and "uh-huh" that makes a
    /// turn kills it).
    #[arg(long, value_enum, default_value = "pause", env = "TGVOICE_LLM_BARGE_IN", value_name = "MODE")]
    pub barge_in: BargeIn,
    /// Comma-separated phrases that, alone or repeated, are a listener's backchannel and not an
    /// interruption: the paused reply resumes and nothing enters the history. Empty = every
    /// word interrupts.
    #[arg(long, default_value = crate::backchannel::DEFAULT_BACKCHANNELS, env = "TGVOICE_LLM_BACKCHANNELS", value_name = "LIST")]
    pub backchannels: String,
    /// Speech over a reply still going after this many ms is an interruption without waiting
    /// for its words (shorter: long interruptions stop the LLM sooner; longer: a long
    /// "mm-hmm, yeah, right" still resumes).
    /// Counted from `speech-start` to the turn's `speech-end`, so it includes vadseg's
    /// end-of-turn silence (350 ms–1.2 s): 2100 lets ~1–1.7 s of voice be a backchannel (a drawn-out
    /// "mm-hmm" was cancelled at 1500 on a busy machine).
    #[arg(long, default_value_t = 2100, env = "TGVOICE_LLM_INTERRUPT_AFTER_MS", value_name = "MS")]
    pub interrupt_after: u64,
    /// `on`: a preview transcript (sttd's decode at a pause: final=false, preview=true) starts
    /// the reply early, held; the final transcript releases it if it makes the same request,
    /// else it is dropped unheard. Hides the LLM's first-token time in vadseg's end-of-turn
    /// wait, at the cost of a wasted request when the caller goes on. `off`: wait for the final
    /// transcript.
    #[arg(long, default_value = "on", env = "TGVOICE_LLM_PREEMPT", value_parser = ["on", "off"])]
    pub preempt: String,
    /// A final transcript that stops mid-sentence ("I'd like a table for", "…near the", a
    /// trailing "um" or "...") is answered only after this many ms without the caller going on;
    /// if they do, their next words join it and one reply answers both (0 = answer at once).
    #[arg(long, default_value_t = 1000, env = "TGVOICE_LLM_UNFINISHED_WAIT_MS", value_name = "MS")]
    pub unfinished_wait: u64,
    /// Ask a language model whether a transcript that passes the words check can stand as a
    /// whole request ("Can you tell me" cannot; README "The end judge"); if not, it waits
    /// --unfinished-wait like one that stops on "for". `auto`: the local llama.cpp server, when
    /// it is the LLM; `off`: the words alone; or the /v1 root of a llama-cpp-python server with
    /// a ChatML model (e.g. http://127.0.0.1:8088/v1) to use it with any provider.
    #[arg(long, default_value = "auto", env = "TGVOICE_LLM_END_JUDGE", value_name = "auto|off|URL")]
    pub end_judge: String,
    /// MCP servers whose tools the LLM may call: a JSON file in the Claude Desktop format
    /// (README "Tools") [default: $XDG_CONFIG_HOME/tgvoice/mcp.json (~/.config/…) if it
    /// exists; "off" = no tools]. No file, no tools.
    #[arg(long, env = "TGVOICE_LLM_TOOLS", value_name = "FILE|off")]
    pub tools: Option<String>,
    /// Requests with tool results per reply, at most; the last asks the LLM for words.
    #[arg(long, default_value_t = 4)]
    pub max_tool_rounds: usize,
    /// Tool calls per reply, at most; more are answered with an error.
    #[arg(long, default_value_t = 8)]
    pub max_tool_calls: usize,
    /// Seconds one tool call may run; then the LLM is told it timed out.
    #[arg(long, default_value_t = 10.0)]
    pub tool_timeout: f64,
    /// Seconds an MCP server has to answer initialize and tools/list when it starts.
    #[arg(long, default_value_t = 5.0)]
    pub tool_start_timeout: f64,
    /// A tool call running this long gets the holding phrase, once per turn (ms; 0 = never).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub tool_holding_after: u64,
    /// Tool results longer than this many bytes are cut, with a note, before the LLM sees them.
    #[arg(long, default_value_t = 16384)]
    pub tool_result_max: usize,
    /// A number `transfer_call` may hand the caller to, as NAME=NUMBER (E.164; repeated). Offered
    /// only on a line whose call-start has the "transfer" control (README "Call control").
    #[arg(long, value_name = "NAME=NUMBER")]
    pub transfer_to: Vec<String>,
    /// Offer the call-control tools (end_call, transfer_call) on a line that supports them:
    /// auto = yes, except with the small local model (SmolLM2-135M cannot call tools); off = never.
    #[arg(long, default_value = "auto", env = "TGVOICE_LLM_CALL_CONTROL", value_parser = ["auto", "off"])]
    pub call_control: String,
    #[command(flatten)]
    pub log: LogArgs,
}

pub struct Config {
    pub relay: RelayConfig,
    pub state_dir: PathBuf,
    /// The MCP servers of the tools file (started by main, in its runtime).
    pub tool_servers: Vec<crate::tools::ServerConfig>,
    pub tool_options: crate::tools::ToolOptions,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    if !(v > 0.0 && v < 3600.0) {
        // exit 2 for a flag, 78 naming the variable for TGVOICE_LLM_FIRST_TOKEN_TIMEOUT
        return Err(tgvoice::cli::bad_value::<Args>(&[&format!("--{name}")], format!("--{name} must be between 0 and 3600 seconds, not {v}")));
    }
    Ok(Duration::from_secs_f64(v))
}

pub fn resolve(args: &Args) -> anyhow::Result<Config> {
    let anthropic_key = env_nonempty("ANTHROPIC_API_KEY");
    let openai_key = env_nonempty("OPENAI_API_KEY");
    let choice = match args.provider {
        ProviderChoice::Auto if anthropic_key.is_some() => ProviderChoice::Anthropic,
        ProviderChoice::Auto if openai_key.is_some() => ProviderChoice::Openai,
        // A server of the user's own (Ollama, LM Studio, vLLM): no key needed, and not the
        // local model, whose prompt, temperature and budgets suit SmolLM2-135M only.
        ProviderChoice::Auto if args.base_url.is_some() => ProviderChoice::Openai,
        ProviderChoice::Auto => ProviderChoice::Local,
        c => c,
    };
    let local_url = format!("http://127.0.0.1:{}/v1", args.local_port);

    let (kind, base_url, api_key, model) = match choice {
        ProviderChoice::Anthropic => {
            let Some(key) = anthropic_key else {
                return Err(fail(exit::CONFIG, "--provider anthropic needs ANTHROPIC_API_KEY in the environment"));
            };
            let base = args
                .base_url
                .clone()
                .or_else(|| env_nonempty("ANTHROPIC_BASE_URL"))
                .unwrap_or_else(|| "https://api.anthropic.com".into());
            (
                ProviderKind::Anthropic,
                base,
                Some(key),
                args.model.clone().unwrap_or_else(|| DEFAULT_ANTHROPIC_MODEL.into()),
            )
        }
        ProviderChoice::Openai => {
            let base = args
                .base_url
                .clone()
                .or_else(|| env_nonempty("OPENAI_BASE_URL"))
                .unwrap_or_else(|| "https://api.openai.com/v1".into());
            // Without a key and a model name, the user's server is asked which model it serves.
            let keyless_server = openai_key.is_none() && args.base_url.is_some();
            let model = args.model.clone().unwrap_or_else(|| if keyless_server { String::new() } else { DEFAULT_OPENAI_MODEL.into() });
            if keyless_server {
                log::info!("no API key; using the OpenAI-compatible server at {base} without one");
            }
            (ProviderKind::OpenAi, base, openai_key, model)
        }
        _ => {
            let base = args.base_url.clone().unwrap_or(local_url);
            log::info!(
                "no API key configured; using the local llama.cpp server at {base} (start it with scripts/llm-server)"
            );
            (ProviderKind::OpenAi, base, None, args.model.clone().unwrap_or_else(|| DEFAULT_LOCAL_MODEL.into()))
        }
    };
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(fail(
            exit::CONFIG,
            format!("the LLM base URL must start with http:// or https://, not {base_url:?}"),
        ));
    }
    // The local defaults suit SmolLM2-135M only, wherever it is served (the local server, or
    // one shared by several instances and named with TGVOICE_LLM_MODEL); another model on an
    // OpenAI-compatible server (Ollama, LM Studio…) gets the general ones.
    let small_local_model = model == DEFAULT_LOCAL_MODEL;
    let local_server = choice == ProviderChoice::Local || small_local_model;
    let history_tokens = args.history_tokens.unwrap_or(if local_server { 1200 } else { 3000 });
    let provider = Provider {
        kind,
        base_url,
        api_key,
        model,
        max_tokens: args.max_tokens,
        temperature: args.temperature.or(small_local_model.then_some(DEFAULT_LOCAL_TEMPERATURE)),
        system_prompt: args.system_prompt.clone().unwrap_or_else(|| {
            if small_local_model { DEFAULT_LOCAL_SYSTEM_PROMPT } else { DEFAULT_SYSTEM_PROMPT }.into()
        }),
        served_model: Default::default(),
    };
    log::info!("LLM: {}", provider.describe());
    let stream = StreamOptions {
        retries: args.retries,
        backoff: Duration::from_millis(300),
        connect_timeout: secs("connect-timeout", args.connect_timeout)?,
        first_token_timeout: secs(
            "first-token-timeout",
            args.first_token_timeout.unwrap_or(if local_server { 10.0 } else { 8.0 }),
        )?,
        idle_timeout: secs("idle-timeout", args.idle_timeout)?,
    };
    let end_judge = match args.end_judge.trim() {
        "off" => None,
        "auto" | "" => (choice == ProviderChoice::Local).then(|| provider.base_url.clone()),
        url if url.starts_with("http://") || url.starts_with("https://") => Some(url.to_string()),
        other => {
            return Err(tgvoice::cli::bad_value::<Args>(
                &["--end-judge"],
                format!("--end-judge must be auto, off or an http(s):// URL, not {other:?}"),
            ))
        }
    };
    if let Some(url) = &end_judge {
        log::info!("end judge: {url} (whether words that pass the words check can stand as a request)");
    }
    let state_dir = args.state_dir.clone().unwrap_or_else(|| tgvoice::paths::instance_state_dir(&args.instance));
    let tools_file = match args.tools.as_deref().map(str::trim) {
        Some("off") | Some("") => None,
        Some(f) => Some(PathBuf::from(f)),
        None => Some(tgvoice::paths::config_dir().join("mcp.json")).filter(|p| p.exists()),
    };
    let tool_servers = match &tools_file {
        None => vec![],
        Some(f) => crate::tools::load(f).map_err(|e| fail(exit::CONFIG, format!("{e:#}; fix it, or --tools off")))?,
    };
    if let Some(f) = &tools_file {
        let names: Vec<&str> = tool_servers.iter().map(|s| s.name.as_str()).collect();
        log::info!("tools: {} MCP server(s) from {}: {}", names.len(), f.display(), names.join(", "));
    }
    // SmolLM2-135M cannot call tools: offering them would only spoil its answers.
    let tool_servers = if small_local_model && !tool_servers.is_empty() {
        log::warn!(
            "tools: the small local model ({DEFAULT_LOCAL_MODEL}) cannot call tools, so the servers of {} are not started and the call goes on without them; for tools use a model that can call them (ANTHROPIC_API_KEY, OPENAI_API_KEY or TGVOICE_LLM_BASE_URL; README \"Tools\")",
            tools_file.as_deref().map(|f| f.display().to_string()).unwrap_or_default()
        );
        vec![]
    } else {
        tool_servers
    };
    let transfer_to = args
        .transfer_to
        .iter()
        .map(|t| crate::control::parse_target(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(exit::USAGE, e))?;
    let tool_options = crate::tools::ToolOptions {
        timeout: secs("tool-timeout", args.tool_timeout)?,
        start_timeout: secs("tool-start-timeout", args.tool_start_timeout)?,
        max_result_bytes: args.tool_result_max.max(256),
    };
    Ok(Config {
        tool_servers,
        tool_options,
        relay: RelayConfig {
            provider,
            stream,
            first_clause_min_words: if args.first_clause_words == 0 { usize::MAX } else { args.first_clause_words },
            max_sentences: args.max_sentences.unwrap_or(if small_local_model { DEFAULT_LOCAL_MAX_SENTENCES } else { 0 }),
            policy: PolicyConfig {
                budget: Budget { max_messages: args.history_messages.max(1), max_tokens: history_tokens.max(1) },
                apology: crate::speakable::clean_for_speech(&args.apology),
                holding: crate::speakable::clean_for_speech(&args.holding_phrase)
                    .filter(|_| args.holding_after > 0)
                    .map(|p| (Duration::from_millis(args.holding_after.min(60_000)), p)),
                tool_holding: crate::speakable::clean_for_speech(&args.holding_phrase)
                    .filter(|_| args.tool_holding_after > 0)
                    .map(|p| (Duration::from_millis(args.tool_holding_after.min(60_000)), p)),
                merge_wait: std::time::Duration::from_secs_f64(args.merge_wait.clamp(0.0, 3600.0)),
                pause_first: args.barge_in == BargeIn::Pause,
                backchannels: crate::backchannel::Backchannels::parse(&args.backchannels),
                interrupt_after: Duration::from_millis(args.interrupt_after.clamp(100, 60_000)),
                preempt: args.preempt == "on",
                unfinished_wait: Duration::from_millis(args.unfinished_wait.min(60_000)),
                judge: end_judge.as_ref().map(|_| END_JUDGE_WAIT),
            },
            end_judge: end_judge.map(|u| crate::judge::EndJudge::new(&u)),
            tools: None,
            max_tool_rounds: args.max_tool_rounds,
            max_tool_calls: args.max_tool_calls,
            transfer_to,
            call_control: args.call_control == "auto" && !small_local_model,
        },
        state_dir,
    })
}

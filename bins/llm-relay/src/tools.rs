//! Tools for the LLM, from MCP servers (README.md "Tools").
//!
//! The servers are declared in one JSON file in the format Claude Desktop uses
//! (`{"mcpServers": {"time": {"command": "…", "args": […], "env": {…}, "tools": […]}}}`; `tools`,
//! an allowlist, is ours). Each runs as a child process spoken to over stdio by the official
//! Rust SDK (`rmcp`): started in the background with the relay (a reply never waits for a
//! server), its tools listed once it answers `initialize`, restarted with a bounded backoff if
//! it exits. A server that cannot start, or does not answer `initialize` in time, is named in
//! one log line and the call goes on without its tools.
//!
//! [`Toolbox`] is what the relay sees: the tools to offer ([`Toolbox::defs`], names unique
//! across servers) and [`Toolbox::call`], which never fails — a tool that errs, times out or
//! whose server is gone gives an error result for the LLM to explain. Dropping a call (the
//! reply was cancelled) sends the server MCP's `notifications/cancelled`. Built-in tools (call
//! control) are meant to sit next to the MCP ones here, behind the same two functions.

use crate::provider::{ToolCall, ToolDef, ToolResult};
use anyhow::{bail, Context, Result};
use rmcp::model::{CallToolRequestParams, CancelledNotificationParam, ClientRequest, Request, RequestId, ServerResult};
use rmcp::service::{Peer, PeerRequestOptions, RoleClient, ServiceExt};
use rmcp::transport::TokioChildProcess;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// One server of the configuration file.
#[derive(Clone)]
pub struct ServerConfig {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Only these tools are offered (None: all the server lists).
    pub allow: Option<Vec<String>>,
}

impl std::fmt::Debug for ServerConfig {
    // The env values may be keys: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("allow", &self.allow)
            .finish()
    }
}

/// Limits on tool calls.
#[derive(Debug, Clone)]
pub struct ToolOptions {
    /// One call's longest run (`--tool-timeout`).
    pub timeout: Duration,
    /// How long a server has to answer `initialize` and `tools/list` (`--tool-start-timeout`).
    pub start_timeout: Duration,
    /// A result longer than this many bytes is cut, with a note, before the LLM sees it.
    pub max_result_bytes: usize,
}

/// Read the configuration file. Errors say what is wrong, where, and what to do.
pub fn load(path: &Path) -> Result<Vec<ServerConfig>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the tools file {} (--tools / TGVOICE_LLM_TOOLS)", path.display()))?;
    parse(&text).with_context(|| format!("{}: not a tools file", path.display()))
}

/// Parse the configuration (see [`load`]).
pub fn parse(text: &str) -> Result<Vec<ServerConfig>> {
    let v: Value = serde_json::from_str(text).context("not JSON")?;
    let Some(servers) = v.get("mcpServers").and_then(Value::as_object) else {
        bail!("expected {{\"mcpServers\": {{\"name\": {{\"command\": …}}}}}} (the Claude Desktop format)");
    };
    let mut out = vec![];
    for (name, s) in servers {
        let strings = |key: &str| -> Result<Option<Vec<String>>> {
            match s.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string).with_context(|| format!("server {name:?}: {key:?} must list strings")))
                    .collect::<Result<Vec<_>>>()
                    .map(Some),
                Some(_) => bail!("server {name:?}: {key:?} must be a list of strings"),
            }
        };
        if s.get("url").is_some() && s.get("command").is_none() {
            bail!("server {name:?}: only stdio servers (\"command\") are supported; remove it or run it through a stdio proxy");
        }
        let command = s
            .get("command")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .with_context(|| format!("server {name:?} has no \"command\""))?
            .to_string();
        let mut env = BTreeMap::new();
        if let Some(e) = s.get("env") {
            let e = e.as_object().with_context(|| format!("server {name:?}: \"env\" must be an object of strings"))?;
            for (k, v) in e {
                let v = v.as_str().with_context(|| format!("server {name:?}: env {k:?} must be a string"))?;
                env.insert(k.clone(), v.to_string());
            }
        }
        out.push(ServerConfig { name: name.clone(), command, args: strings("args")?.unwrap_or_default(), env, allow: strings("tools")? });
    }
    Ok(out)
}

struct Live {
    peer: Peer<RoleClient>,
    tools: Vec<rmcp::model::Tool>,
}

struct Slot {
    cfg: ServerConfig,
    live: RwLock<Option<Live>>,
}

/// The tools of every configured server (see the module doc).
pub struct Toolbox {
    slots: Vec<Arc<Slot>>,
    opts: ToolOptions,
}

/// A name the LLM APIs accept (`^[a-zA-Z0-9_-]{1,64}$`).
fn api_name(s: &str) -> String {
    let mut n: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    n.truncate(64);
    n
}

impl Toolbox {
    /// Start every server in the background (call inside a tokio runtime).
    pub fn start(servers: Vec<ServerConfig>, opts: ToolOptions) -> Arc<Toolbox> {
        let slots: Vec<Arc<Slot>> = servers.into_iter().map(|cfg| Arc::new(Slot { cfg, live: RwLock::new(None) })).collect();
        for slot in &slots {
            tokio::spawn(supervise(slot.clone(), opts.clone()));
        }
        Arc::new(Toolbox { slots, opts })
    }

    /// The tools on offer now (servers still starting, or down, offer none), each with the
    /// server and the tool's own name.
    fn catalog(&self) -> Vec<(ToolDef, Arc<Slot>, String)> {
        let mut seen = HashSet::new();
        let mut out = vec![];
        for slot in &self.slots {
            let live = slot.live.read().unwrap();
            let Some(live) = live.as_ref() else { continue };
            for t in &live.tools {
                let mut name = api_name(&t.name);
                if !seen.insert(name.clone()) {
                    name = api_name(&format!("{}_{}", slot.cfg.name, t.name));
                    if !seen.insert(name.clone()) {
                        continue;
                    }
                }
                let def = ToolDef {
                    name,
                    description: t.description.as_deref().unwrap_or("").to_string(),
                    schema: Value::Object((*t.input_schema).clone()),
                };
                out.push((def, slot.clone(), t.name.to_string()));
            }
        }
        out
    }

    pub fn defs(&self) -> Vec<ToolDef> {
        self.catalog().into_iter().map(|(d, ..)| d).collect()
    }

    /// Run `call` (never fails: problems come back as error results, logged in one line).
    /// Dropping the future cancels the call at the server.
    pub async fn call(&self, call: &ToolCall) -> ToolResult {
        let error = |content: String| ToolResult { id: call.id.clone(), content, is_error: true };
        let Some((_, slot, tool)) = self.catalog().into_iter().find(|(d, ..)| d.name == call.name) else {
            log::warn!("the LLM called a tool {:?} that is not on offer; told it so", call.name);
            return error(format!("There is no tool named {:?} available now.", call.name));
        };
        let server = &slot.cfg.name;
        let Some(peer) = slot.live.read().unwrap().as_ref().map(|l| l.peer.clone()) else {
            log::warn!("tool {:?}: MCP server {server:?} is not running; told the LLM", call.name);
            return error(format!("The tool {:?} is unavailable right now.", call.name));
        };
        log::debug!("tool {:?} (MCP server {server:?}) called with {}", call.name, call.input);
        let t0 = Instant::now();
        let params = CallToolRequestParams { meta: None, name: tool.clone().into(), arguments: call.input.as_object().cloned(), task: None };
        let request = ClientRequest::CallToolRequest(Request::new(params));
        let handle = match peer.send_cancellable_request(request, PeerRequestOptions::no_options()).await {
            Ok(h) => h,
            Err(e) => {
                log::warn!("tool {:?}: cannot reach MCP server {server:?} ({e}); told the LLM", call.name);
                return error(format!("The tool {:?} is unavailable right now.", call.name));
            }
        };
        let mut guard = CancelOnDrop { peer: Some(peer), id: handle.id.clone(), what: format!("tool {:?} (MCP server {server:?})", call.name) };
        let outcome = tokio::time::timeout(self.opts.timeout, handle.rx).await;
        let ms = t0.elapsed().as_millis();
        let result = match outcome {
            Err(_) => {
                guard.what = format!("{} timed out after {} ms; told the LLM", guard.what, self.opts.timeout.as_millis());
                return error(format!("The tool {:?} did not answer within {} s.", call.name, self.opts.timeout.as_secs_f64()));
            }
            Ok(Err(_)) | Ok(Ok(Err(rmcp::ServiceError::TransportClosed))) => {
                guard.peer = None;
                log::warn!("tool {:?}: MCP server {server:?} stopped during the call ({ms} ms); told the LLM", call.name);
                return error(format!("The tool {:?} failed (its server stopped).", call.name));
            }
            Ok(Ok(Err(e))) => {
                guard.peer = None;
                log::warn!("tool {:?}: MCP server {server:?} answered with an error ({e}); told the LLM", call.name);
                return error(format!("The tool {:?} failed: {e}", call.name));
            }
            Ok(Ok(Ok(ServerResult::CallToolResult(r)))) => r,
            Ok(Ok(Ok(_))) => {
                guard.peer = None;
                log::warn!("tool {:?}: MCP server {server:?} gave an answer that is not a tool result; told the LLM", call.name);
                return error(format!("The tool {:?} gave an unexpected answer.", call.name));
            }
        };
        guard.peer = None;
        let mut parts: Vec<String> = vec![];
        for c in &result.content {
            match c.as_text() {
                Some(t) => parts.push(t.text.clone()),
                None => parts.push("[non-text content left out]".into()),
            }
        }
        if parts.is_empty() {
            if let Some(s) = &result.structured_content {
                parts.push(s.to_string());
            }
        }
        let is_error = result.is_error == Some(true);
        let content = truncate(parts.join("\n"), self.opts.max_result_bytes, &call.name);
        log::info!("tool {:?} (MCP server {server:?}): {}{} bytes in {ms} ms", call.name, if is_error { "error, " } else { "" }, content.len());
        log::debug!("tool {:?} result: {content:?}", call.name); // quoted: one line
        ToolResult { id: call.id.clone(), content, is_error }
    }
}

/// Cut `text` to at most `max` bytes (at a character boundary), saying so.
pub fn truncate(text: String, max: usize, tool: &str) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    log::warn!("tool {tool:?} returned {} bytes; the LLM gets the first {end}", text.len());
    format!("{}\n[truncated: the result was {} bytes; only the first {end} are shown]", &text[..end], text.len())
}

/// Sends `notifications/cancelled` for a call dropped before its answer.
struct CancelOnDrop {
    peer: Option<Peer<RoleClient>>,
    id: RequestId,
    what: String,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(peer) = self.peer.take() else { return };
        log::info!("{}: cancelled", self.what);
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let request_id = self.id.clone();
        rt.spawn(async move {
            let _ = peer.notify_cancelled(CancelledNotificationParam { request_id, reason: Some("the reply was cancelled".into()) }).await;
        });
    }
}

/// Keep one server running: start it, list its tools, restart it when it exits (waiting
/// 0.5 s, 1 s, 2 s … 30 s; the wait resets once it has run a minute). A server that never
/// came up is named once and left alone.
async fn supervise(slot: Arc<Slot>, opts: ToolOptions) {
    let name = slot.cfg.name.clone();
    let mut ever_up = false;
    let mut failures: u32 = 0;
    loop {
        match start(&slot.cfg, &opts).await {
            Ok((service, tools)) => {
                let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
                log::info!(
                    "MCP server {name:?} {}: {} tool(s) on offer: {}",
                    if ever_up { "restarted" } else { "ready" },
                    tools.len(),
                    names.join(", ")
                );
                ever_up = true;
                *slot.live.write().unwrap() = Some(Live { peer: service.peer().clone(), tools });
                let up = Instant::now();
                let _ = service.waiting().await;
                *slot.live.write().unwrap() = None;
                if up.elapsed() > Duration::from_secs(60) {
                    failures = 0;
                }
                failures += 1;
                let wait = backoff(failures);
                log::warn!("MCP server {name:?} exited; restarting it in {} ms", wait.as_millis());
                tokio::time::sleep(wait).await;
            }
            Err(e) if !ever_up => {
                log::error!("MCP server {name:?} ({}): {e}; the call goes on without its tools", slot.cfg.command);
                return;
            }
            Err(e) => {
                failures += 1;
                if failures > 8 {
                    log::error!("MCP server {name:?}: {e}, {failures} times in a row; giving up on it for this run");
                    return;
                }
                let wait = backoff(failures);
                log::warn!("MCP server {name:?}: {e}; trying again in {} ms", wait.as_millis());
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(500) * 2u32.pow(failures.saturating_sub(1).min(6))).min(Duration::from_secs(30))
}

type Service = rmcp::service::RunningService<RoleClient, ()>;

async fn start(cfg: &ServerConfig, opts: &ToolOptions) -> Result<(Service, Vec<rmcp::model::Tool>), String> {
    let mut cmd = tokio::process::Command::new(&cfg.command);
    cmd.args(&cfg.args).envs(&cfg.env);
    let (transport, stderr) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start it ({e}); check \"command\" in the tools file"))?;
    if let Some(stderr) = stderr {
        let name = cfg.name.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log::debug!("MCP server {name:?}: {line}");
            }
        });
    }
    let secs = opts.start_timeout.as_secs_f64();
    let service = tokio::time::timeout(opts.start_timeout, ().serve(transport))
        .await
        .map_err(|_| format!("did not answer initialize within {secs} s"))?
        .map_err(|e| format!("failed to initialize ({e})"))?;
    let mut tools = tokio::time::timeout(opts.start_timeout, service.list_all_tools())
        .await
        .map_err(|_| format!("did not answer tools/list within {secs} s"))?
        .map_err(|e| format!("tools/list failed ({e})"))?;
    if let Some(allow) = &cfg.allow {
        for a in allow {
            if !tools.iter().any(|t| t.name == a.as_str()) {
                log::warn!("MCP server {:?} has no tool {a:?} (named in its \"tools\" allowlist)", cfg.name);
            }
        }
        tools.retain(|t| allow.iter().any(|a| t.name == a.as_str()));
    }
    Ok((service, tools))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_in_the_claude_desktop_format() {
        let c = parse(r#"{"mcpServers": {"time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"],
            "env": {"K": "v"}, "tools": ["get_current_time"]}, "b": {"command": "x"}}}"#)
        .unwrap();
        assert_eq!(c.len(), 2);
        let t = c.iter().find(|s| s.name == "time").unwrap();
        assert_eq!(t.args, ["--local-timezone", "UTC"]);
        assert_eq!(t.env.get("K").map(String::as_str), Some("v"));
        assert_eq!(t.allow.as_deref(), Some(&["get_current_time".to_string()][..]));
        assert!(c.iter().find(|s| s.name == "b").unwrap().allow.is_none());
        assert!(!format!("{t:?}").contains("\"v\""), "an env value in Debug output: {t:?}");
        let e = format!("{:#}", parse(r#"{"servers": {}}"#).unwrap_err());
        assert!(e.contains("mcpServers"), "{e}");
        let e = format!("{:#}", parse(r#"{"mcpServers": {"t": {"args": []}}}"#).unwrap_err());
        assert!(e.contains("\"t\" has no \"command\""), "{e}");
    }

    #[test]
    fn long_results_are_cut_at_a_character_boundary_with_a_note() {
        assert_eq!(truncate("short".into(), 10, "t"), "short");
        let cut = truncate("é".repeat(10), 5, "t");
        assert!(cut.starts_with("éé\n[truncated: the result was 20 bytes; only the first 4"), "{cut}");
    }
}

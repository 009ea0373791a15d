//! Pipeline instances for calls: one `scripts/voicecall --instance <prefix>-line<N>` per call,
//! a few started ahead of time and kept warm, a hard maximum, and each instance stopped and
//! deleted (run directory, logs, conversation) once its call is over.

use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Command;
use crate::call::CallLinks;

/// The framed stages a line needs ready before a call is put through: each signals readiness
/// (fifo-layout.md §5) once everything slow (model loading, warm-up) is done and its input is
/// open, and the line's supervisor records it in `<run dir>/supervise/<stage>/ready`, whatever
/// the log level. Until then its upstream writer drops what it writes (sttd's warm-up took 7 s
/// with three lines starting).
const READY_STAGES: &[&str] = &["vadseg", "sttd", "llm-relay", "tts-writer"];

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub voicecall: PathBuf,
    pub prefix: String,
    /// Instances kept warm (started, models loaded) while lines are free.
    pub warm: usize,
    /// Calls at once; the next one is turned away.
    pub max_calls: usize,
    /// Handed to every instance as TGVOICE_LLM_BASE_URL (one shared LLM server).
    pub llm_url: Option<String>,
    /// Where a finished instance's logs are moved (None: deleted with it).
    pub keep_logs: Option<PathBuf>,
    pub ready_timeout: Duration,
    /// `--transfer-to` as NAME=NUMBER,… (TGVOICE_TRANSFER_TO of every instance: its
    /// llm-relay's `--transfer-to`); empty = none.
    pub transfer_to: String,
    /// A webhook's claim on a line lapses if its WebSocket does not arrive in this time.
    pub claim_timeout: Duration,
}

/// A started, ready pipeline instance.
pub struct Instance {
    pub name: String,
    pub run_dir: PathBuf,
    pub started: Instant,
    /// Its links, opened once it was ready (so the FIFOs' writers are attached before a call).
    pub links: Option<CallLinks>,
}

#[derive(Default)]
struct State {
    warm: VecDeque<Instance>,
    starting: usize,
    active: usize,
    /// Webhooks answered with <Connect><Stream> whose WebSocket has not started yet.
    claims: VecDeque<Instant>,
    /// Calls in `take` with no instance yet.
    waiting: usize,
    /// Instances being stopped and deleted.
    destroying: usize,
    seq: u64,
    shutting_down: bool,
}

pub struct Pool {
    cfg: PoolConfig,
    state: Mutex<State>,
    /// Woken whenever an instance becomes warm.
    ready: tokio::sync::Notify,
}

#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub active: usize,
    pub warm: usize,
    pub starting: usize,
    pub claimed: usize,
    pub max_calls: usize,
}

/// Where the instances' state directories are ([`tgvoice::paths::state_base`], the same rule
/// as scripts/voicecall's STATE_BASE).
pub fn state_base() -> PathBuf {
    tgvoice::paths::state_base()
}

impl Pool {
    pub fn new(cfg: PoolConfig) -> Arc<Pool> {
        Arc::new(Pool { cfg, state: Mutex::new(State::default()), ready: tokio::sync::Notify::new() })
    }

    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    pub fn status(&self) -> Status {
        let mut s = self.state.lock().unwrap();
        self.expire_claims(&mut s);
        Status { active: s.active, warm: s.warm.len(), starting: s.starting, claimed: s.claims.len(), max_calls: self.cfg.max_calls }
    }

    fn expire_claims(&self, s: &mut State) {
        while s.claims.front().is_some_and(|t| t.elapsed() > self.cfg.claim_timeout) {
            s.claims.pop_front();
            log::warn!("a line claimed by a webhook was not used within {:?} (no WebSocket came); freed", self.cfg.claim_timeout);
        }
    }

    /// The webhook's question: is a line free? If so it is held for this call's WebSocket.
    pub fn claim(&self) -> bool {
        let mut s = self.state.lock().unwrap();
        self.expire_claims(&mut s);
        if s.shutting_down || s.active + s.claims.len() >= self.cfg.max_calls {
            return false;
        }
        s.claims.push_back(Instant::now());
        true
    }

    /// The stream started: take a warm instance (or start one if none is warm) for it.
    pub async fn take(self: &Arc<Self>) -> Result<Instance> {
        {
            let mut s = self.state.lock().unwrap();
            self.expire_claims(&mut s);
            if s.claims.pop_front().is_none() && s.active >= self.cfg.max_calls {
                bail!("all {} lines are busy", self.cfg.max_calls);
            }
            s.active += 1;
            s.waiting += 1;
        }
        let deadline = Instant::now() + self.cfg.ready_timeout;
        loop {
            let notified = self.ready.notified();
            let got = {
                let mut s = self.state.lock().unwrap();
                let got = s.warm.pop_front();
                if got.is_some() {
                    s.waiting -= 1;
                }
                got
            };
            self.refill();
            if let Some(inst) = got {
                return Ok(inst);
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                let mut s = self.state.lock().unwrap();
                s.active -= 1;
                s.waiting -= 1;
                bail!("no pipeline instance became ready within {:?}", self.cfg.ready_timeout);
            }
        }
    }

    /// The call is over: stop and delete its instance, and warm up a replacement.
    pub fn release(self: &Arc<Self>, mut inst: Instance) {
        inst.links = None; // close our ends first, as a hung-up bridge would
        {
            let mut s = self.state.lock().unwrap();
            s.active -= 1;
            s.destroying += 1;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            pool.destroy(&inst).await;
            pool.state.lock().unwrap().destroying -= 1;
            pool.refill();
        });
    }

    /// Start instances until `warm` are warm or on their way (never more than the free lines).
    pub fn refill(self: &Arc<Self>) {
        let mut s = self.state.lock().unwrap();
        if s.shutting_down {
            return;
        }
        // Spares for the free lines, plus one for each call already waiting in `take`.
        let want = self.cfg.warm.min(self.cfg.max_calls.saturating_sub(s.active)) + s.waiting;
        while s.warm.len() + s.starting < want {
            s.starting += 1;
            s.seq += 1;
            let name = format!("{}-line{}", self.cfg.prefix, s.seq);
            let pool = self.clone();
            tokio::spawn(async move {
                let result = pool.start_instance(&name).await;
                let mut s = pool.state.lock().unwrap();
                s.starting -= 1;
                match result {
                    Ok(inst) if !s.shutting_down => {
                        log::info!("instance {} warm in {:.1} s", inst.name, inst.started.elapsed().as_secs_f64());
                        s.warm.push_back(inst);
                        drop(s);
                        pool.ready.notify_waiters();
                    }
                    Ok(inst) => {
                        drop(s);
                        let p = pool.clone();
                        tokio::spawn(async move { p.destroy(&inst).await });
                    }
                    Err(e) => {
                        drop(s);
                        log::error!("instance {name} did not start: {e:#}; see its logs in {}", instance_state_dir(&name).join("logs").display());
                        let p = pool.clone();
                        tokio::spawn(async move {
                            p.destroy_named(&name).await;
                            tokio::time::sleep(Duration::from_secs(5)).await; // do not spin on a broken setup
                            p.refill();
                        });
                    }
                }
            });
        }
    }

    fn voicecall(&self, name: &str) -> Command {
        let mut c = Command::new(&self.cfg.voicecall);
        c.arg("--instance").arg(name);
        // A line is a plain pipeline: no bridge of its own, the shared LLM server.
        c.env("TGVOICE_PHONE_LINE", "1").env_remove("TGVOICE_PHONE").env_remove("TGVOICE_RUN_DIR");
        // Its caller comes through an 8 kHz μ-law line: vadseg's settings for that line
        // (bins/vadseg/README.md "Phone lines"). One the user set for every line is kept.
        if std::env::var_os("VADSEG_LINE").is_none() {
            c.env("VADSEG_LINE", "phone");
        }
        // The numbers its llm-relay may transfer to are this bridge's, whatever the environment had.
        if self.cfg.transfer_to.is_empty() {
            c.env_remove("TGVOICE_TRANSFER_TO");
        } else {
            c.env("TGVOICE_TRANSFER_TO", &self.cfg.transfer_to);
        }
        if let Some(url) = &self.cfg.llm_url {
            c.env("TGVOICE_LLM_BASE_URL", url);
        }
        // Its own process group: a `voicecall stop` of the front instance signals the front's
        // group, and must not cut short the stop/start commands this bridge is running.
        c.stdin(std::process::Stdio::null()).process_group(0).kill_on_drop(true);
        // The pipeline runs at normal priority, not at the media path's raised one.
        unsafe {
            c.pre_exec(|| {
                libc::setpriority(libc::PRIO_PROCESS, 0, 0);
                Ok(())
            });
        }
        c
    }

    async fn start_instance(&self, name: &str) -> Result<Instance> {
        let started = Instant::now();
        let out = self.voicecall(name).arg("start").output().await.context("cannot run scripts/voicecall")?;
        if !out.status.success() {
            bail!("voicecall start failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let rd = Command::new("tgvoice-rundir").args(["--instance", name, "-q"]).env_remove("TGVOICE_RUN_DIR").output().await;
        let run_dir = match rd {
            Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
            _ => bail!("tgvoice-rundir --instance {name} failed (is target/release on PATH?)"),
        };
        let mut inst = Instance { name: name.to_string(), run_dir, started, links: None };
        let deadline = started + self.cfg.ready_timeout;
        loop {
            let missing = tgvoice::ready::unready(&inst.run_dir, READY_STAGES);
            if missing.is_empty() {
                inst.links = Some(CallLinks::open(&inst.run_dir)?);
                return Ok(inst);
            }
            if Instant::now() > deadline || self.state.lock().unwrap().shutting_down {
                self.destroy(&inst).await;
                bail!("not ready after {:?}: waiting for {}", self.cfg.ready_timeout, missing.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn destroy(&self, inst: &Instance) {
        self.destroy_named(&inst.name).await;
        if inst.run_dir.starts_with("/") && inst.run_dir.ends_with(&inst.name) {
            let _ = std::fs::remove_dir_all(&inst.run_dir);
        }
    }

    /// `voicecall stop`, then delete the instance's state (logs, conversation, metrics).
    async fn destroy_named(&self, name: &str) {
        match self.voicecall(name).arg("stop").output().await {
            Ok(o) if o.status.success() => {}
            Ok(o) => log::warn!("voicecall --instance {name} stop: {}", String::from_utf8_lossy(&o.stderr).trim()),
            Err(e) => log::warn!("cannot run voicecall stop for {name}: {e}"),
        }
        let state = instance_state_dir(name);
        if let Some(keep) = &self.cfg.keep_logs {
            let to = keep.join(name);
            let moved = std::fs::create_dir_all(keep).and_then(|_| std::fs::rename(state.join("logs"), &to));
            if let Err(e) = moved {
                log::warn!("cannot keep the logs of {name} in {}: {e}", to.display());
            }
        }
        if state.exists() {
            if let Err(e) = std::fs::remove_dir_all(&state) {
                log::warn!("cannot delete {}: {e}", state.display());
            }
        }
        log::debug!("instance {name} stopped and deleted");
    }

    /// Instances left by an earlier run of this bridge (killed before it could clean up).
    pub async fn remove_leftovers(&self) {
        let prefix = format!("{}-line", self.cfg.prefix);
        let Ok(rd) = std::fs::read_dir(state_base()) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.strip_prefix(&prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
                log::info!("removing instance {name} left by an earlier run");
                self.destroy_named(&name).await;
                if let Ok(o) = Command::new("tgvoice-rundir").args(["--instance", &name, "-q"]).env_remove("TGVOICE_RUN_DIR").output().await {
                    let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
                    if dir.ends_with(&name) {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                }
            }
        }
    }

    /// Stop every instance (warm ones now; active ones are released by their calls).
    pub async fn shutdown(self: &Arc<Self>) {
        let warm: Vec<Instance> = {
            let mut s = self.state.lock().unwrap();
            s.shutting_down = true;
            s.warm.drain(..).collect()
        };
        let mut stops = tokio::task::JoinSet::new();
        for inst in warm {
            let pool = self.clone();
            stops.spawn(async move { pool.destroy(&inst).await });
        }
        while stops.join_next().await.is_some() {}
        // Instances still starting notice `shutting_down` and delete themselves; released
        // ones are being deleted by their own tasks.
        // Within 4 s: `voicecall stop` of the front sends SIGKILL after 5 s (and then stops
        // whatever lines are left itself).
        for _ in 0..40 {
            let s = self.state.lock().unwrap();
            if s.starting == 0 && s.destroying == 0 && s.active == 0 {
                break;
            }
            drop(s);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn active(&self) -> usize {
        self.state.lock().unwrap().active
    }
}

pub fn instance_state_dir(name: &str) -> PathBuf {
    state_base().join(name)
}

pub fn default_voicecall() -> PathBuf {
    if let Some(root) = std::env::var_os("TGVOICE_ROOT") {
        return Path::new(&root).join("scripts/voicecall");
    }
    // target/release/phone-bridge → <root>/scripts/voicecall
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent()?.parent().map(|r| r.join("scripts/voicecall")))
        .unwrap_or_else(|| PathBuf::from("scripts/voicecall"))
}

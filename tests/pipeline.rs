//! Whole-pipeline tests on the offline defaults (Silero, whisper tiny.en, the local llama.cpp
//! server, Piper): a supervised pipeline started with `scripts/voicecall`, a simulated caller
//! (`callsim`) in tg-bridge's place. Faults: every stage SIGKILLed mid-turn, garbage written
//! into every link. Barge-in. Two calls side by side. Requires `scripts/setup` (scripts/test
//! runs it).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tgvoice::testkit::bin_path;

/// Test speech: the short-question set, its voices and the normalised scoring.
mod common;
use common::{load_average, noises, percentile, piper_wavs, BACKCHANNELS, BARGE_IN_REPLY, INTERRUPTIONS};
/// A stand-in OpenAI-compatible server, for tests that need the replies known in advance.
mod standin_llm;
use standin_llm::{Replies, StandInLlm};

/// These tests each run a whole pipeline; on 2 cores they must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn espeak(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.wav"));
    let ok = Command::new("espeak-ng").args(["-v", "en-us", "-s", "150", "-w"]).arg(&path).arg(text).status();
    assert!(ok.map(|s| s.success()).unwrap_or(false), "espeak-ng failed: run scripts/setup");
    path
}

struct Pipeline {
    instance: String,
    state: tempfile::TempDir,
    run_dir: PathBuf,
    /// Extra environment for scripts/voicecall (e.g. another instance's LLM server).
    env: Vec<(String, String)>,
    llm_port: u16,
    /// The instance runs its own local LLM server (else a stand-in's or another instance's).
    own_llm: bool,
}

impl Pipeline {
    fn voicecall(&self, args: &[&str]) -> std::process::Output {
        tgvoice::testkit::voicecall(&root(), &self.instance, self.state.path())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run scripts/voicecall")
    }

    fn start(instance: &str) -> Pipeline {
        Self::start_with(instance, vec![], None)
    }

    /// Start an instance that uses the local LLM server of `other` instead of its own.
    fn start_sharing_llm(instance: &str, other: &Pipeline) -> Pipeline {
        let url = format!("http://127.0.0.1:{}/v1", other.llm_port);
        // Named, the local model gets its own settings on a server shared by URL.
        let env = vec![("TGVOICE_LLM_BASE_URL".into(), url), ("TGVOICE_LLM_MODEL".into(), "SmolLM2-135M-Instruct".into())];
        Self::start_with(instance, env, Some(other.llm_port))
    }

    fn start_with(instance: &str, env: Vec<(String, String)>, llm_port: Option<u16>) -> Pipeline {
        let state = tempfile::tempdir().unwrap();
        let instance = format!("{instance}-{}", std::process::id());
        let own_llm = llm_port.is_none();
        let llm_port = llm_port.unwrap_or_else(|| local_llm_port(&instance, state.path()));
        let mut p = Pipeline { instance, state, run_dir: PathBuf::new(), env, llm_port, own_llm };
        // --wait: back once every stage (llm-server too, when it runs one) is ready (fifo-layout.md §5).
        let out = p.voicecall(&["start", "--wait", "240"]);
        assert!(out.status.success(), "voicecall start --wait: {}", String::from_utf8_lossy(&out.stderr));
        let rd = Command::new(bin_path("tgvoice-rundir")).args(["--instance", &p.instance, "-q"]).env_remove("TGVOICE_RUN_DIR").output().unwrap();
        p.run_dir = PathBuf::from(String::from_utf8(rd.stdout).unwrap().trim());
        p.wait_ready();
        p
    }

    fn logs(&self) -> PathBuf {
        self.state.path().join(&self.instance).join("logs")
    }

    /// Every stage reads its input link, and the LLM server answers.
    fn wait_ready(&self) {
        self.wait_stages_reading();
        self.wait_llm_ready();
        // `voicecall status` says so too, stage by stage.
        let status = String::from_utf8_lossy(&self.voicecall(&["status"]).stdout).into_owned();
        for stage in ["tgcat", "vadseg", "sttd", "llm-relay", "tts-writer"] {
            let row = status.lines().find(|l| l.split_whitespace().next() == Some(stage));
            assert!(row.is_some_and(|r| r.split_whitespace().nth(4) == Some("yes")), "voicecall status does not show {stage} ready:\n{status}");
        }
    }

    /// Each stage is ready (fifo-layout.md §5): it signalled on its notification fd once
    /// everything slow (model loading and warm-up) was done and its input open, and the
    /// supervisor recorded it (`supervise/<stage>/ready` holding its current pid), whatever the
    /// log level. sttd, for one, needs seconds for that, and a call placed before loses its
    /// first turn (vadseg drops speech while sttd is not there).
    fn wait_stages_reading(&self) {
        let stages = ["tgcat", "vadseg", "sttd", "llm-relay", "tts-writer"];
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        loop {
            let missing = tgvoice::ready::unready(&self.run_dir, &stages);
            if missing.is_empty() {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "not ready after 180 s: {missing:?}; see {}", self.logs().display());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_llm_ready(&self) {
        // The local LLM server answers /v1/models once the model is loaded.
        let port = self.llm_port;
        for _ in 0..600 {
            let ok = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{port}/v1/models")]).stdout(Stdio::null()).status();
            if ok.map(|s| s.success()).unwrap_or(false) {
                // A local server just up gets a moment to settle; a stand-in, or a server
                // another instance already waited for, needs none.
                if self.own_llm {
                    std::thread::sleep(Duration::from_secs(2));
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the local LLM server did not come up; see {}", self.logs().display());
    }

    /// Run callsim with the given turns; returns (per-turn reports, summary).
    fn call(&self, turns: &[String], extra: &[&str]) -> (Vec<Value>, Value) {
        let out = Command::new(bin_path("callsim"))
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(extra)
            .args(turns)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "callsim failed");
        let mut lines: Vec<Value> =
            String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let summary = lines.pop().unwrap();
        (lines, summary)
    }

    fn stage_pid(&self, stage: &str) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.run_dir.join("supervise").join(stage).join("pid")).ok()?.trim().parse().ok()?;
        (unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
    }

    fn restarts(&self, stage: &str) -> u32 {
        std::fs::read_to_string(self.run_dir.join("supervise").join(stage).join("restarts"))
            .map(|s| s.trim().parse().unwrap_or(0))
            .unwrap_or(0)
    }

    fn log(&self, stage: &str) -> String {
        std::fs::read_to_string(self.logs().join(format!("{stage}.log"))).unwrap_or_default()
    }

    /// Every message of the instance's conversations, in file order.
    fn history(&self) -> Vec<Value> {
        walk(&self.state.path().join(&self.instance))
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "jsonl") && f.parent().is_some_and(|d| d.ends_with("conversations")))
            .flat_map(|f| std::fs::read_to_string(f).unwrap_or_default().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect::<Vec<_>>())
            .collect()
    }
}

/// The port scripts/voicecall gives an instance's local LLM server (its own rule, asked).
fn local_llm_port(instance: &str, state: &Path) -> u16 {
    let out = tgvoice::testkit::voicecall(&root(), instance, state).arg("llm-port").env_remove("TGVOICE_LLM_PORT").output().unwrap();
    let port = String::from_utf8_lossy(&out.stdout).trim().to_string();
    port.parse().unwrap_or_else(|_| panic!("voicecall llm-port printed {port:?}: {}", String::from_utf8_lossy(&out.stderr)))
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.voicecall(&["stop"]);
        // Keep the logs for a post-mortem: target/pipeline-logs/<instance>/.
        let keep = root().join("target/pipeline-logs").join(&self.instance);
        let _ = std::fs::create_dir_all(&keep);
        for f in walk(&self.state.path().join(&self.instance)) {
            if let Some(name) = f.file_name() {
                let _ = std::fs::copy(&f, keep.join(name));
            }
        }
        eprintln!("pipeline logs kept in {}", keep.display());
    }
}

fn kill9(pid: i32) {
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Write 4 KiB of random bytes into a link as a second writer (non-blocking; skipped if no
/// reader is attached at that moment).
fn write_garbage(link: &Path) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut x: u32 = 0x9e3779b9;
    let junk: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x & 0xff) as u8
        })
        .collect();
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(link) {
        let _ = f.write(&junk);
    }
}

fn answered(turn: &Value) -> bool {
    turn["voice_to_voice_ms"].is_number()
}

/// Processes whose command line mentions `needle` (to find orphans).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn every_stage_killed_mid_turn_and_garbage_on_every_link_the_call_goes_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let questions = [
        espeak(dir.path(), "q0", "What is the capital of France?"),
        espeak(dir.path(), "q1", "How many legs does a spider have?"),
        espeak(dir.path(), "q2", "What color is the sky on a clear day?"),
    ];
    let q = |i: usize| questions[i % questions.len()].display().to_string();
    // The real local model (its server is one of the stages killed), held to a sentence's
    // worth of words: the replies only need to be heard, and 14 calls wait for each to end.
    let p = Pipeline::start_with("faults", vec![("TGVOICE_LLM_MAX_TOKENS".into(), "12".into())], None);

    // A first turn with nothing wrong.
    let (turns, summary) = p.call(&[q(0)], &[]);
    assert!(answered(&turns[0]), "baseline turn not answered: {turns:?}");
    let blocking = |s: &Value| s["input_worst_blocking_write_ms"].as_f64().unwrap();
    let wall = |s: &Value| s["input_worst_write_ms"].as_f64().unwrap();
    let mut worst_write_ms = blocking(&summary);
    let mut worst_wall_ms = wall(&summary);

    let stages = ["tgcat", "vadseg", "sttd", "llm-relay", "tts-writer", "llm-server"];
    for (i, stage) in stages.iter().enumerate() {
        let before = p.restarts(stage);
        let pid = p.stage_pid(stage).unwrap_or_else(|| panic!("{stage} is not running"));
        // Kill the stage while the caller is speaking (mid-turn); that turn may be lost.
        let run_dir = p.run_dir.clone();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1800));
            kill9(pid);
            run_dir
        });
        let (_, s) = p.call(&[q(i + 1)], &["--lead-in", "1.0", "--reply-timeout", "15", "--no-call-events"]);
        killer.join().unwrap();
        worst_write_ms = worst_write_ms.max(blocking(&s));
        worst_wall_ms = worst_wall_ms.max(wall(&s));
        // The stage comes back, and the next turn is answered.
        for _ in 0..100 {
            if p.stage_pid(stage).is_some_and(|np| np != pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(p.restarts(stage) > before, "{stage} was not restarted");
        assert!(p.stage_pid(stage).is_some(), "{stage} did not come back");
        if *stage == "llm-server" {
            p.wait_llm_ready();
        } else {
            p.wait_stages_reading();
        }
        let (turns, s) = p.call(&[q(i + 2)], &["--no-call-events"]);
        worst_write_ms = worst_write_ms.max(blocking(&s));
        worst_wall_ms = worst_wall_ms.max(wall(&s));
        assert!(answered(&turns[0]), "turn after killing {stage} not answered: {turns:?}");
    }

    // Garbage into every link, then a turn that must be answered.
    for link in ["tg_input.raw", "control.frames", "audio.frames", "speech.frames", "text.frames", "reply.frames", "tg_output.raw"] {
        write_garbage(&p.run_dir.join(link));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (turns, s) = p.call(&[q(0)], &["--no-call-events"]);
    worst_write_ms = worst_write_ms.max(blocking(&s));
    worst_wall_ms = worst_wall_ms.max(wall(&s));
    assert!(answered(&turns[0]), "turn after garbage not answered: {turns:?}");
    for stage in ["tgcat", "vadseg", "sttd", "llm-relay", "tts-writer"] {
        assert!(p.stage_pid(stage).is_some(), "{stage} died after garbage");
    }
    let bad_input_logged = ["vadseg", "sttd", "llm-relay", "tts-writer"].iter().filter(|s| p.log(s).contains("bad input")).count();
    assert!(bad_input_logged >= 3, "garbage was not reported by the stages");

    // The media path never waited on a FIFO. (Wall time also counts being preempted by the
    // other stages on a busy 2-core machine; it is printed, not asserted.)
    println!("tg_input.raw writes: longest blocking {worst_write_ms:.2} ms, longest wall {worst_wall_ms:.2} ms");
    assert!(worst_write_ms < 20.0, "a write into tg_input.raw blocked {worst_write_ms} ms");

    // The conversation survived the llm-relay restart: its history holds every answered turn.
    let history: String = walk(&p.state.path().join(&p.instance))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "jsonl") && !f.ends_with("metrics.jsonl"))
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect();
    assert!(history.to_lowercase().contains("spider"), "history lost the turns before the restart:\n{history}");

    // No process of this instance remains after stop.
    let out = p.voicecall(&["stop"]);
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(500));
    let left = processes_mentioning(&p.run_dir.display().to_string());
    assert!(left.is_empty(), "orphans after stop: {left:?}");
}

/// Write `bytes` into a link as a second writer, in pieces of at most PIPE_BUF (4096) bytes so
/// that each lands whole between the real writer's frames.
fn write_atomic_pieces(link: &Path, pieces: &[Vec<u8>]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(link).unwrap();
    for p in pieces {
        assert!(p.len() <= 4096);
        f.write_all(p).unwrap();
    }
}

fn frame(e: tgvoice::Event) -> Vec<u8> {
    tgvoice::frame::encode(&tgvoice::Frame::Event(e))
}

/// Issue 18 on a live call: every single event that used to break a link silently, injected
/// into the links the way a hostile or buggy writer would, then the caller asks a question.
/// The turn is answered and heard, no stage was restarted (so no thread died and nothing had to
/// be), vadseg stays small and the logs stay short.
#[test]
fn hostile_frames_on_every_link_then_the_next_turn_is_answered() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let question = espeak(dir.path(), "q", "How many legs does a spider have?");
    let p = Pipeline::start("hostile");
    let stages = ["tgcat", "vadseg", "sttd", "llm-relay", "tts-writer"];
    let restarts: Vec<u32> = stages.iter().map(|s| p.restarts(s)).collect();
    let log_lines = |s: &str| p.log(s).lines().count();
    let lines_before: Vec<usize> = stages.iter().map(|s| log_lines(s)).collect();
    let now_ms = tgvoice::clock::now_us() / 1000;

    // control.frames (tgcat): an event that grows over 1 MiB when re-encoded (case 1), a
    // header claiming 1 MiB in front of real frames (case 7), 6000 speech-starts and cancels
    // (case 2: urgent events used to leak the sink's counter at 4096).
    {
        use std::io::Write;
        let big = format!("{{\"type\":\"x-big\",\"v\":[{}9e9]}}", "9e9,".repeat(110_000));
        let mut bytes = b"TGVF\x01\x02\x00\x00".to_vec();
        bytes.extend_from_slice(&(big.len() as u32).to_le_bytes());
        bytes.extend_from_slice(big.as_bytes());
        bytes.extend_from_slice(b"TGVF\x01\x02\x00\x00");
        bytes.extend_from_slice(&(1u32 << 20).to_le_bytes());
        for k in 0..3000 {
            bytes.extend(frame(tgvoice::Event::new("speech-start").with_turn(now_ms - 10_000 + k)));
            bytes.extend(frame(tgvoice::Event::new("cancel").with_turn(now_ms - 10_000 + k)));
        }
        let mut f = std::fs::OpenOptions::new().write(true).open(p.run_dir.join("control.frames")).unwrap();
        f.write_all(&bytes).unwrap();
    }
    // audio.frames (vadseg): 600-byte audio frames declaring 1 Hz (case 3).
    let one_hz = tgvoice::frame::encode(&tgvoice::Frame::Audio(tgvoice::AudioFrame {
        sample_rate: 1,
        channels: 1,
        turn: 0,
        capture_us: 0,
        sample_index: 0,
        samples: vec![0; 284],
    }));
    write_atomic_pieces(&p.run_dir.join("audio.frames"), &vec![one_hz; 20]);
    // text.frames (llm-relay): a header claiming 1 MiB; sttd's real frames follow it (case 7).
    let mut bogus = b"TGVF\x01\x02\x00\x00".to_vec();
    bogus.extend_from_slice(&(1u32 << 20).to_le_bytes());
    write_atomic_pieces(&p.run_dir.join("text.frames"), &[bogus]);
    // reply.frames (tts-writer): a cancel for a far-future turn and a flood of turnless
    // cancels (case 4).
    let mut pieces = vec![frame(tgvoice::Event::new("cancel").with_turn(u64::MAX / 2))];
    for _ in 0..10 {
        pieces.push((0..100).flat_map(|_| frame(tgvoice::Event::new("cancel"))).collect());
    }
    write_atomic_pieces(&p.run_dir.join("reply.frames"), &pieces);
    std::thread::sleep(Duration::from_millis(500));

    let (turns, _) = p.call(&[question.display().to_string()], &["--no-call-events"]);
    assert!(answered(&turns[0]), "the turn after the hostile frames was not answered: {turns:?}");
    let heard = turns[0]["heard"].as_str().unwrap_or_default().to_string();
    println!("after hostile frames on every link: heard {heard:?}, voice-to-voice {} ms", turns[0]["voice_to_voice_ms"]);
    // `voicecall status` shows that turn's latency line, read from tts-writer's metrics.jsonl.
    let status = String::from_utf8_lossy(&p.voicecall(&["status"]).stdout).to_string();
    let last = status.lines().find(|l| l.starts_with("last turn: ")).unwrap_or_default();
    assert!(last.starts_with("last turn: turn ") && last.contains(" = voice-to-voice "), "{status}");
    for (i, stage) in stages.iter().enumerate() {
        assert_eq!(p.restarts(stage), restarts[i], "{stage} had to be restarted: {}", p.log(stage));
        let added = log_lines(stage) - lines_before[i];
        assert!(added < 60, "{stage} logged {added} lines for the hostile frames:\n{}", p.log(stage));
    }
    let vad_rss = std::fs::read_to_string(format!("/proc/{}/status", p.stage_pid("vadseg").unwrap())).unwrap();
    let rss_kb: u64 = vad_rss.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap();
    println!("vadseg RSS after 1 Hz frames: {rss_kb} kB");
    assert!(rss_kb < 400_000, "vadseg grew to {rss_kb} kB");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn caller_talking_over_a_reply_silences_it_and_gets_an_answer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let long = espeak(dir.path(), "long", "Please tell me a long story about a dragon and a knight.");
    // A natural interruption with a voiced onset. (A lone short "Stop." sits at the 250 ms
    // false-barge-in guard: depending on how it falls into Silero's 32 ms windows it is
    // sometimes, by design, ignored as a blip.)
    let interrupt = espeak(dir.path(), "stop", "No, no, wait. What is two plus two?");
    let p = Pipeline::start("bargein");
    let (turns, _) = p.call(&[long.display().to_string(), format!("barge:700:{}", interrupt.display())], &[]);
    assert!(answered(&turns[0]), "no reply to talk over: {turns:?}");
    let stop_ms = turns[1]["barge_in_stop_ms"].as_f64().unwrap_or_else(|| panic!("reply never stopped: {turns:?}"));
    let guard_ms = tgvoice::testkit::vad_min_speech_ms();
    println!("barge-in: output silent {stop_ms:.0} ms after the caller's speech onset (guard {guard_ms} ms)");
    assert!(stop_ms <= 150.0 + guard_ms, "output stopped {stop_ms} ms after speech onset (limit 150 + {guard_ms})");
    assert!(answered(&turns[1]), "the interruption was not answered: {turns:?}");
    let heard = turns[1]["heard"].as_str().unwrap().to_lowercase();
    assert!(heard.contains("two") || heard.contains(" 2 "), "the answer was not to the interruption: heard {heard:?}");
}

#[test]
fn two_calls_side_by_side_do_not_cross() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let qa = espeak(dir.path(), "a", "What is the capital of France?");
    let qb = espeak(dir.path(), "b", "How many legs does a spider have?");
    // One LLM server for both calls (llama.cpp's spinning threads must not oversubscribe 2
    // cores), each call with its own FIFOs, VAD, STT, relay and TTS.
    let a = Pipeline::start("call-a");
    let b = Pipeline::start_sharing_llm("call-b", &a);
    assert!(b.stage_pid("llm-server").is_none(), "call B started its own LLM server");
    assert_ne!(a.run_dir, b.run_dir);
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| a.call(&[qa.display().to_string()], &["--reply-timeout", "40"]));
        let hb = s.spawn(|| b.call(&[qb.display().to_string()], &["--reply-timeout", "40"]));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let heard_a = ra.0[0]["heard"].as_str().unwrap().to_lowercase();
    let heard_b = rb.0[0]["heard"].as_str().unwrap().to_lowercase();
    assert!(heard_a.contains("france") && !heard_a.contains("spider"), "call A heard {heard_a:?}");
    assert!(heard_b.contains("spider") && !heard_b.contains("france"), "call B heard {heard_b:?}");
    assert!(answered(&ra.0[0]) && answered(&rb.0[0]), "{ra:?} {rb:?}");
}

/// Busy loops at normal priority, one per core, until dropped: a deliberately loaded machine.
struct CpuHog {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHog {
    fn start() -> CpuHog {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                })
            })
            .collect();
        CpuHog { stop, threads }
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A slow way to the LLM: an HTTP proxy on loopback that holds each request `delay` before it
/// passes it on to the real local llama.cpp server, as a far or busy LLM takes its time. It
/// keeps the JSON body of every request it was sent.
struct SlowLlmLink {
    port: u16,
    upstream: std::sync::Arc<std::sync::atomic::AtomicU16>,
    requests: std::sync::Arc<Mutex<Vec<Value>>>,
}

impl SlowLlmLink {
    fn start(delay: Duration) -> SlowLlmLink {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let link = SlowLlmLink { port, upstream: Default::default(), requests: Default::default() };
        let (upstream, requests) = (link.upstream.clone(), link.requests.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, requests) = (upstream.clone(), requests.clone());
                std::thread::spawn(move || {
                    let _ = Self::pass_on(client, delay, &upstream, &requests);
                });
            }
        });
        link
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// One request per connection: read it, wait, send it upstream with `Connection: close`,
    /// and copy the answer back until the server closes (or the client hangs up: a cancel).
    fn pass_on(
        client: std::net::TcpStream,
        delay: Duration,
        upstream: &std::sync::atomic::AtomicU16,
        requests: &Mutex<Vec<Value>>,
    ) -> std::io::Result<()> {
        use std::io::{BufRead, Read, Write};
        let mut reader = std::io::BufReader::new(client.try_clone()?);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            if !line.to_ascii_lowercase().starts_with("connection:") {
                head.push_str(&line);
            }
        }
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        if let Ok(json) = serde_json::from_slice::<Value>(&body) {
            requests.lock().unwrap().push(json);
        }
        std::thread::sleep(delay);
        let port = loop {
            match upstream.load(std::sync::atomic::Ordering::Relaxed) {
                0 => std::thread::sleep(Duration::from_millis(50)),
                port => break port,
            }
        };
        let mut server = std::net::TcpStream::connect(("127.0.0.1", port))?;
        server.write_all(head.as_bytes())?;
        server.write_all(b"Connection: close\r\n\r\n")?;
        server.write_all(&body)?;
        let mut client = client;
        std::io::copy(&mut server, &mut client)?;
        client.shutdown(std::net::Shutdown::Both)
    }

    /// The `messages` of every chat request so far.
    fn chats(&self) -> Vec<Vec<Value>> {
        let requests = self.requests.lock().unwrap();
        requests.iter().filter_map(|r| r["messages"].as_array().cloned()).collect()
    }
}

/// A caller pauses long enough to end the turn, then goes on while the first part is still
/// being transcribed or answered, on a machine a CPU hog keeps busy. Both parts must reach the
/// LLM as one user message (no reply to half a sentence, no word lost), and the reply is heard.
///
/// The case needs the first part's reply not to have reached TTS when the second part begins
/// (1.2 s after the first). A fast machine answers within that (speculative transcript at the
/// end of the turn, the local LLM's first words ~100 ms later), and the second part is then,
/// by design, a barge-in over a playing reply. So the LLM is reached over a link that holds
/// each request 3 s, as a far or busy LLM would: the real local model answers, later.
#[test]
fn a_caller_who_pauses_and_goes_on_under_load_is_one_message_answered() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let first = espeak(dir.path(), "first", "I would like to book a table for four people");
    let second = espeak(dir.path(), "second", "tomorrow at seven in the evening please");
    // One WAV: part one, a 1.2 s pause (vadseg ends a turn after 600 ms), part two.
    let read = |p: &Path| tgvoice::resample::read_wav_mono(std::io::BufReader::new(std::fs::File::open(p).unwrap())).unwrap();
    let (rate, mut audio) = read(&first);
    audio.extend(std::iter::repeat(0i16).take(rate as usize * 12 / 10));
    audio.extend(read(&second).1);
    let both = dir.path().join("both.wav");
    tgvoice::resample::write_wav_mono(&both, rate, &audio).unwrap();

    let link = SlowLlmLink::start(Duration::from_secs(3));
    // Silence alone ends the turn (600 ms): this case is about the pause ending one, which the
    // turn model might not do (it waits 1.2 s when it hears the first part as unfinished).
    let env = vec![
        ("TGVOICE_LLM_PROVIDER".into(), "local".into()),
        ("TGVOICE_LLM_BASE_URL".into(), link.url()),
        ("VADSEG_TURN_MODEL".into(), "off".into()),
        // The link's 3 s hold and the CPU hog come on top of the local model's own time (and of
        // the first part's abandoned request, which the one-slot server may still be working
        // on): the default 10 s first-token budget would end this reply in the apology, which is
        // not what this test is about (the hung-server test checks the budget).
        ("TGVOICE_LLM_FIRST_TOKEN_TIMEOUT".into(), "25".into()),
    ];
    let p = Pipeline::start_with("pause", env, None);
    link.upstream.store(p.llm_port, std::sync::atomic::Ordering::Relaxed);
    let hog = CpuHog::start();
    // The link's 3 s hold brings llm-relay's holding phrase ("One moment, please.", after 3 s
    // with nothing from the LLM); callsim must not take that phrase and the silence after it
    // for the whole reply, so it waits out up to 6 s of silence (the answer then comes from a
    // local model under the CPU hog, seconds later).
    let (turns, _) = p.call(&[both.display().to_string()], &["--reply-timeout", "60", "--reply-silence", "6.0"]);
    drop(hog);
    let relay = p.log("llm-relay");
    assert!(!relay.contains("the caller speaks over the reply"), "the first part's reply was playing when the second began:\n{relay}");
    assert!(answered(&turns[0]), "the reply was not heard: {turns:?}");
    let vad = p.log("vadseg");
    let ended = vad.matches("s of speech").count();
    assert!(ended >= 2, "the pause did not end a turn, so this test proved nothing:\n{vad}");
    let history = p.history();
    let users: Vec<String> = history.iter().filter(|e| e["role"] == "user").map(|e| e["text"].as_str().unwrap().to_lowercase()).collect();
    println!("history: {history:?}");
    assert_eq!(users.len(), 1, "the caller's one sentence became {} user messages: {users:?}", users.len());
    // (espeak's voice: tiny.en sometimes mishears a word; each part has two chances.)
    let whole = |text: &str| {
        let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
        has(&["table", "four"]) && has(&["tomorrow", "evening"])
    };
    assert!(whole(&users[0]), "a part of the sentence is missing: {:?}", users[0]);
    let roles: Vec<&str> = history.iter().map(|e| e["role"].as_str().unwrap()).collect();
    assert_eq!(roles, vec!["user", "assistant"], "history: {history:?}");
    // What the LLM was last asked: the whole sentence, as the one user message.
    let chats = link.chats();
    println!("the LLM was asked {} times", chats.len());
    let last = chats.last().expect("the LLM was never asked");
    let asked: Vec<String> = last.iter().filter(|m| m["role"] == "user").map(|m| m["content"].to_string().to_lowercase()).collect();
    assert!(asked.len() == 1 && whole(&asked[0]), "the LLM was last asked {last:?}");
    let sttd = p.log("sttd");
    assert!(!sttd.contains("dropped ("), "sttd dropped a turn:\n{sttd}");
}

/// A mono WAV's rate and samples, without the quiet before and after the speech (espeak-ng and
/// Piper pad with silence), so that a pause put between two of them is exactly as long as meant.
fn read_trimmed(p: &Path) -> (u32, Vec<i16>) {
    let (rate, s) = tgvoice::resample::read_wav_mono(std::io::BufReader::new(std::fs::File::open(p).unwrap())).unwrap();
    let loud = |v: &i16| v.unsigned_abs() > 300;
    let (from, to) = (s.iter().position(loud).unwrap_or(0), s.iter().rposition(loud).map_or(0, |i| i + 1));
    (rate, s[from..to].to_vec())
}

/// A callsim `--record`ing (left: caller, right: assistant) as 10 ms ticks: (caller voiced,
/// assistant voiced), voiced meaning an RMS over 300.
fn voiced_ticks(record: &Path) -> Vec<(bool, bool)> {
    let mut wav = hound::WavReader::open(record).unwrap();
    let tick = wav.spec().sample_rate as usize / 100 * 2;
    let samples: Vec<i16> = wav.samples::<i16>().map(|s| s.unwrap()).collect();
    let voiced = |ch: usize, frame: &[i16]| {
        let x: Vec<f64> = frame.iter().skip(ch).step_by(2).map(|v| *v as f64).collect();
        (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt() > 300.0
    };
    samples.chunks(tick).map(|t| (voiced(0, t), voiced(1, t))).collect()
}

/// The caller's runs in [`voiced_ticks`]: (first, last tick) of each stretch of voice whose
/// pauses are under 1.5 s.
fn caller_runs(ticks: &[(bool, bool)]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = vec![];
    for (t, (caller, _)) in ticks.iter().enumerate() {
        if *caller {
            match runs.last_mut() {
                Some((_, end)) if t - *end < 150 => *end = t,
                _ => runs.push((t, t)),
            }
        }
    }
    runs
}

/// A caller hesitates inside a turn ("I would like a table … for four people please", a 600 ms
/// pause; vadseg ends a turn after 1.2 s of silence here, the wait the turn model gives a turn
/// it judges incomplete). sttd sends the first
/// part as a preview and llm-relay starts its reply early, held; the caller goes on, so that
/// reply must be dropped unheard: no assistant audio before the caller's last word, the history
/// only the final exchange. The early reply is asked of the real local LLM, which answers
/// within the hesitation on this machine, so its chunks are there to leak if holding failed.
/// (The first part is one that can stand as a request, with the end judge off: words that stop
/// mid-sentence, "…a table for", start nothing early.)
#[test]
fn a_hesitation_inside_a_turn_drops_the_reply_started_early_unheard() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let first = espeak(dir.path(), "first", "I would like a table");
    let second = espeak(dir.path(), "second", "for four people please");
    // espeak-ng pads its speech with silence: cut it, so the hesitation is exactly 600 ms.
    let (rate, mut audio) = read_trimmed(&first);
    audio.extend(std::iter::repeat(0i16).take(rate as usize * 6 / 10));
    audio.extend(read_trimmed(&second).1);
    let both = dir.path().join("both.wav");
    tgvoice::resample::write_wav_mono(&both, rate, &audio).unwrap();
    // The case needs sttd's decode at the hesitation to finish before the caller goes on; if a
    // busy machine made it late (no preview), the call is placed again, up to 4 times.
    for attempt in 1..=4 {
        let link = SlowLlmLink::start(Duration::ZERO); // records what the LLM is asked
        let env = vec![
            ("TGVOICE_LLM_PROVIDER".into(), "local".into()),
            ("TGVOICE_LLM_BASE_URL".into(), link.url()),
            // The turn model's "incomplete" wait, for sure: this case is about the held
            // reply, not about whether the model hears the hesitation as one.
            ("VADSEG_TURN_MODEL".into(), "off".into()),
            ("VADSEG_EOT_SILENCE_MS".into(), "1200".into()),
            ("TGVOICE_LLM_END_JUDGE".into(), "off".into()),
        ];
        let p = Pipeline::start_with("hesitate", env, None);
        link.upstream.store(p.llm_port, std::sync::atomic::Ordering::Relaxed);
        let record = dir.path().join(format!("call{attempt}.wav"));
        let (turns, _) = p.call(
            &[both.display().to_string()],
            &["--reply-timeout", "60", "--reply-silence", "2.5", "--record", record.to_str().unwrap()],
        );
        let relay = p.log("llm-relay");
        let vad = p.log("vadseg");
        assert_eq!(vad.matches("s of speech").count(), 1, "the hesitation ended the turn; this test needs it inside one:\n{vad}");
        if !relay.contains("dropped unheard (the caller said more)") {
            println!("attempt {attempt}: no early reply to drop (the decode at the hesitation came too late):\n{relay}");
            continue;
        }
        println!("attempt {attempt}: {relay}");
        assert!(answered(&turns[0]), "the reply was not heard: {turns:?}");
        // No assistant voice before the caller's last word (left: caller, right: assistant).
        let ticks = voiced_ticks(&record);
        let caller_last = ticks.iter().rposition(|t| t.0).expect("the caller's voice is in the recording");
        let assistant_first = ticks.iter().position(|t| t.1).expect("the assistant's voice is in the recording");
        assert!(
            assistant_first > caller_last,
            "assistant audio at {} ms, before the caller's last word at {} ms: the early reply was heard",
            assistant_first * 10,
            caller_last * 10
        );
        // The LLM was asked the first part alone (the early reply), then the whole sentence.
        let asked: Vec<String> = link
            .chats()
            .iter()
            .map(|m| m.iter().filter(|m| m["role"] == "user").map(|m| m["content"].as_str().unwrap_or("").to_lowercase()).collect::<Vec<_>>().join(" | "))
            .collect();
        println!("the LLM was asked: {asked:?}");
        assert!(asked.len() >= 2, "{asked:?}");
        let whole = |t: &str| (t.contains("table") || t.contains("four")) && (t.contains("people") || t.contains("please"));
        assert!(whole(asked.last().unwrap()), "the last request is not the whole sentence: {asked:?}");
        let history = p.history();
        println!("history: {history:?}");
        let roles: Vec<&str> = history.iter().map(|e| e["role"].as_str().unwrap()).collect();
        assert_eq!(roles, vec!["user", "assistant"], "history: {history:?}");
        assert!(whole(&history[0]["text"].as_str().unwrap().to_lowercase()), "history: {history:?}");
        let answer = turns[0]["answer"].as_str().unwrap_or("");
        assert_eq!(history[1]["text"].as_str().unwrap(), answer, "what was played is not what the history holds");
        return;
    }
    panic!("in 4 calls sttd's decode at the hesitation never came before the caller went on: the case was not tested");
}

/// Callers who hesitate mid-sentence with an "um", Piper-voiced, on the offline defaults: "Can
/// you book a flight to, um… (900 ms) Paris next Monday?" Each part is synthesised on its own,
/// so the first ends with a falling, final-sounding voice. vadseg's turn model hears the "um"
/// as unfinished and keeps the request in one turn; failing that, llm-relay merges the parts
/// if the reply was not heard yet. Either way each request must get exactly one answer, to
/// the whole sentence, and none of the assistant's voice may come before the caller's last
/// word. (Without the "um" the model hears most fragments as finished, and Whisper tends to
/// finish them too — "a table for it."; such pauses are held by llm-relay's end judge instead:
/// `a_pause_after_a_phrase_spoken_on_its_own_is_one_message_in_any_voice`.)
#[test]
fn hesitations_with_um_mid_sentence_are_answered_once_as_a_whole() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let requests = [
        ("Can you book a flight to, um...", "Paris next Monday?", 900, ["book", "flight"], ["paris", "monday"]),
        ("I'm looking for a hotel near, um...", "the train station.", 600, ["hotel", "looking"], ["train", "station"]),
        ("I'd like a table for, um...", "four people.", 800, ["table", "like"], ["people", "four"]),
    ];
    let parts: Vec<(String, String)> =
        requests.iter().enumerate().flat_map(|(i, (a, b, ..))| [(format!("a{i}"), a.to_string()), (format!("b{i}"), b.to_string())]).collect();
    let parts = piper_wavs(dir.path(), &parts);
    let mut wavs = vec![];
    for (i, (_, _, pause_ms, _, _)) in requests.iter().enumerate() {
        let (rate, mut audio) = read_trimmed(&parts[2 * i]);
        audio.extend(std::iter::repeat(0i16).take(rate as usize * pause_ms / 1000));
        audio.extend(read_trimmed(&parts[2 * i + 1]).1);
        let wav = dir.path().join(format!("request{i}.wav"));
        tgvoice::resample::write_wav_mono(&wav, rate, &audio).unwrap();
        wavs.push(wav.display().to_string());
    }
    // The real local model, held to a sentence's worth of words (the replies only need to be
    // heard, and the call waits for each to end).
    let p = Pipeline::start_with("hesitations", vec![("TGVOICE_LLM_MAX_TOKENS".into(), "16".into())], None);
    let record = dir.path().join("call.wav");
    let (turns, _) = p.call(&wavs, &["--reply-timeout", "60", "--reply-silence", "2.5", "--record", record.to_str().unwrap()]);
    let vad = p.log("vadseg");
    let relay = p.log("llm-relay");
    println!(
        "vadseg ended {} turns for {} requests; llm-relay merged {} and waited for the rest of {}",
        vad.matches("s of speech").count(),
        requests.len(),
        relay.matches("one message:").count(),
        relay.matches("stops mid-sentence").count()
    );
    let history = p.history();
    println!("history: {history:?}");
    let roles: Vec<&str> = history.iter().map(|e| e["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant"].repeat(requests.len()), "one answer per request, to the whole of it: {history:?}");
    for (i, (_, _, _, first, second)) in requests.iter().enumerate() {
        let said = history[2 * i]["text"].as_str().unwrap().to_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| said.contains(w));
        assert!(has(first) && has(second), "request {i} was not answered as a whole: {said:?}\nvadseg:\n{vad}\nllm-relay:\n{relay}");
        assert!(answered(&turns[i]), "request {i} got no audible answer: {:?}", turns[i]);
    }
    // Per request: the assistant is silent until the caller's last word.
    let ticks = voiced_ticks(&record);
    let runs = caller_runs(&ticks);
    assert_eq!(runs.len(), requests.len(), "caller runs in the recording: {runs:?}");
    for (i, (start, end)) in runs.iter().enumerate() {
        if let Some(t) = (*start..=*end).find(|t| ticks[*t].1) {
            panic!("request {i}: the assistant spoke at {} ms, while the caller was still saying it ({} to {} ms)", t * 10, start * 10, end * 10);
        }
    }
}

/// The short-question set (bins/sttd/tests/data) said by callsim into the supervised
/// pipeline: every third question, the voices taking turns (Piper, espeak-ng en-us 165 wpm,
/// en-gb 140 wpm); `TGVOICE_HEAR_ALL=1` says every question in every voice and prints the
/// table. No repetition loop may reach the LLM, and most questions must be heard exactly:
/// issue 17 asks for 90 %, which tiny.en does not reach on espeak-ng's voices with any
/// decoding setting measured (74-79 % on the whole set: bins/sttd/README.md "Short
/// questions"), so 70 % is the regression bound, under the measured rate, not the target.
/// Run sox (-R: the same input gives the same bytes).
fn sox(args: &[&std::ffi::OsStr]) {
    let ok = Command::new("sox").arg("-R").args(args).status();
    assert!(ok.is_ok_and(|s| s.success()), "sox {args:?} failed: run scripts/setup");
}

/// One of the corpus's speaker and line variants (scripts/corpus) of `samples`, 16 kHz in and
/// out, trimmed.
fn line_variant(dir: &Path, name: &str, samples: &[i16], variant: &str) -> Vec<i16> {
    let effect: &[&str] = match variant {
        "clean" => return samples.to_vec(),
        "tempo90" => &["tempo", "0.9"],
        "tempo110" => &["tempo", "1.1"],
        "pitch-2" => &["pitch", "-200"],
        "pitch+2" => &["pitch", "200"],
        "phone" => &[],
        other => panic!("no variant {other}"),
    };
    let (src, out) = (dir.join(format!("{name}.src.wav")), dir.join(format!("{name}.wav")));
    tgvoice::resample::write_wav_mono(&src, 16_000, samples).unwrap();
    if variant == "phone" {
        // 8 kHz μ-law and back: the phone band and its companding noise.
        let line = dir.join(format!("{name}.8k.wav"));
        sox(&[src.as_os_str(), "-r".as_ref(), "8000".as_ref(), "-e".as_ref(), "u-law".as_ref(), line.as_os_str()]);
        sox(&[line.as_os_str(), "-r".as_ref(), "16000".as_ref(), "-e".as_ref(), "signed".as_ref(), "-b".as_ref(), "16".as_ref(), out.as_os_str()]);
    } else {
        let mut args = vec![src.as_os_str(), out.as_os_str()];
        args.extend(effect.iter().map(|a| std::ffi::OsStr::new(*a)));
        sox(&args);
    }
    read_trimmed(&out).1
}

/// Issue 24 part 4: a caller stops to think for 1.2 s after a phrase that cannot stand as a
/// request, spoken as a sentence of its own (its voice falls, so vadseg's turn model calls it
/// complete), then says the rest. In the project's voices, one voice no other test uses
/// (espeak-ng en-gb-scotland+f3) and the corpus's line variants (tempo ±10 %, pitch ±2
/// semitones, the phone band): each request must be one user message with one answer, and
/// none of the assistant's voice may be heard in the pause. ≥ 9 of 10. What holds them is
/// llm-relay's words check and its end judge (README "The end judge"); the phrases were
/// written for this test, not taken from the judge's measurements.
#[test]
fn a_pause_after_a_phrase_spoken_on_its_own_is_one_message_in_any_voice() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    use common::Voice;
    let scotland = Voice::Espeak { voice: "en-gb-scotland+f3", wpm: 160 };
    // (first part, rest, voice name, voice, variant, words of the first part, of the rest)
    let requests: [(&str, &str, &str, Voice, &str, &[&str], &[&str]); 10] = [
        ("Could you find me.", "A cheap hotel in Rome.", "piper-joe", Voice::Piper, "clean", &["find"], &["hotel", "rome"]),
        ("I would like to order.", "Two large pizzas.", "espeak-us-165", common::VOICES[1].1, "clean", &["order"], &["pizza"]),
        ("Can you explain to me.", "How a rainbow forms.", "espeak-gb-140", common::VOICES[2].1, "clean", &["explain"], &["rainbow"]),
        ("Please tell me.", "The time in Tokyo.", "espeak-scotland", scotland, "clean", &["tell"], &["tokyo", "time"]),
        ("What is the best time.", "To visit Japan.", "piper-joe", Voice::Piper, "tempo90", &["best"], &["japan", "visit"]),
        ("I'm trying to remember.", "The name of that song.", "espeak-us-165", common::VOICES[1].1, "pitch+2", &["remember"], &["song", "name"]),
        ("Could you help me choose.", "A gift for my sister.", "piper-joe", Voice::Piper, "phone", &["choose", "help"], &["gift", "sister"]),
        ("Do you know.", "Who invented the telephone.", "espeak-gb-140", common::VOICES[2].1, "tempo110", &["know"], &["telephone", "invent"]),
        ("I need to know.", "How far Paris is from London.", "piper-joe", Voice::Piper, "pitch-2", &["need"], &["paris", "london"]),
        ("Can you recommend.", "A good movie for tonight.", "espeak-scotland", scotland, "phone", &["recommend"], &["movie", "tonight"]),
    ];
    let trim = |s: Vec<i16>| {
        let loud = |v: &i16| v.unsigned_abs() > 300;
        let (from, to) = (s.iter().position(loud).unwrap_or(0), s.iter().rposition(loud).map_or(0, |i| i + 1));
        s[from..to].to_vec()
    };
    let mut wavs = vec![];
    for (i, (a, b, _, voice, variant, _, _)) in requests.iter().enumerate() {
        let mut audio = line_variant(dir.path(), &format!("a{i}"), &trim(voice.speak(a)), variant);
        audio.extend(std::iter::repeat(0i16).take(16_000 * 1200 / 1000));
        audio.extend(line_variant(dir.path(), &format!("b{i}"), &trim(voice.speak(b)), variant));
        let wav = dir.path().join(format!("request{i}.wav"));
        tgvoice::resample::write_wav_mono(&wav, 16_000, &audio).unwrap();
        wavs.push(wav.display().to_string());
    }
    let p = Pipeline::start_with("pauses", vec![("TGVOICE_LLM_MAX_TOKENS".into(), "16".into())], None);
    let record = dir.path().join("call.wav");
    p.call(&wavs, &["--reply-timeout", "60", "--reply-silence", "2.5", "--record", record.to_str().unwrap()]);
    let relay = p.log("llm-relay");
    let users: Vec<String> = p
        .history()
        .iter()
        .filter(|e| e["role"] == "user")
        .map(|e| e["text"].as_str().unwrap_or("").to_lowercase())
        .collect();
    let ticks = voiced_ticks(&record);
    let runs = caller_runs(&ticks);
    assert_eq!(runs.len(), requests.len(), "caller runs in the recording: {runs:?}\nllm-relay:\n{relay}");
    let mut kept = 0;
    for (i, ((a, b, voice, _, variant, first, second), (start, end))) in requests.iter().zip(&runs).enumerate() {
        let has = |said: &str, words: &[&str]| words.iter().any(|w| said.contains(w));
        // One message: the one that starts the request goes on past its first part (what
        // Whisper makes of the rest in these voices is sttd's business: printed, not judged).
        let n_words = |t: &str| t.split_whitespace().count();
        let whole = users.iter().find(|u| has(u, first) && n_words(u) >= n_words(a) + 2);
        let heard_rest = whole.is_some_and(|u| has(u, second));
        let spoke_at = (*start..=*end).find(|t| ticks[*t].1);
        let ok = whole.is_some() && spoke_at.is_none();
        kept += ok as usize;
        eprintln!(
            "{i}: {voice:15} {variant:8} {:4} {a:?} + {b:?}: {}{}{}",
            if ok { "ok" } else { "FAIL" },
            whole.map_or("no one message with both parts".to_string(), |u| format!("one message {u:?}")),
            if whole.is_some() && !heard_rest { " (the rest misheard)" } else { "" },
            spoke_at.map_or(String::new(), |t| format!("; the assistant spoke {} ms into the request", (t - start) * 10)),
        );
    }
    eprintln!("user messages: {users:?}");
    eprintln!(
        "vadseg ended {} turns for 10 requests; llm-relay held {} by the words check and {} by the end judge, and let {} through",
        p.log("vadseg").matches("s of speech").count(),
        relay.matches("stops mid-sentence; waiting").count(),
        relay.matches("wants more").count(),
        relay.matches("can stand as a request").count()
    );
    eprintln!("{kept}/10 requests kept whole with no assistant voice in the pause (load {})", load_average());
    assert!(kept >= 9, "only {kept} of 10 hesitating requests were one message with a quiet pause\nllm-relay:\n{relay}");
}

#[test]
fn short_questions_through_the_supervised_pipeline_are_heard_exactly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let all = std::env::var_os("TGVOICE_HEAR_ALL").is_some();
    let questions = common::short_questions();
    let mut said = vec![]; // (voice, question, wav)
    for (i, q) in questions.iter().enumerate() {
        for (v, (voice_name, voice)) in common::VOICES.iter().enumerate() {
            if all || (i % 3 == 0 && (i / 3) % 3 == v) {
                let wav = dir.path().join(format!("q{i}-{voice_name}.wav"));
                tgvoice::resample::write_wav_mono(&wav, common::RATE, &voice.speak(q)).unwrap();
                said.push((*voice_name, *q, wav.display().to_string()));
            }
        }
    }
    // What is heard is this test's subject, not the answer: a stand-in LLM says one word, so
    // each question costs its own length and a second, not a local model's two sentences.
    let llm = StandInLlm::start(Replies::Match { rules: vec![], otherwise: "Okay.".into() });
    let p = Pipeline::start_with("hear", vec![("TGVOICE_LLM_BASE_URL".into(), llm.base_url())], Some(llm.port));
    let wavs: Vec<String> = said.iter().map(|s| s.2.clone()).collect();
    let (turns, _) = p.call(&wavs, &["--reply-timeout", "30"]);
    let (mut exact, mut errors, mut words) = (0, 0, 0);
    for ((voice, q, _), turn) in said.iter().zip(&turns) {
        let heard = turn["heard"].as_str().unwrap_or("");
        let ok = common::exact_match(q, heard);
        exact += ok as usize;
        let (e, n) = common::word_errors(q, heard);
        errors += e;
        words += n;
        println!("{} {voice}: {q:?} → {heard:?}", if ok { "ok  " } else { "MISS" });
        assert!(sttd::guard::cut_loop(heard).is_none(), "a repetition loop reached the LLM: {heard:?}");
    }
    let sttd_log = p.log("sttd");
    let speculative = sttd_log.lines().filter(|l| l.contains(", speculative")).count();
    let rate = exact as f64 / said.len() as f64;
    println!(
        "supervised pipeline: heard exactly {exact}/{} ({:.0} %), WER {:.1} %, {speculative} speculative",
        said.len(),
        rate * 100.0,
        errors as f64 / words.max(1) as f64 * 100.0
    );
    assert!(rate >= 0.7, "only {exact}/{} short questions heard exactly:\n{sttd_log}", said.len());
}

// ---- barge-in: pause at the onset, then cancel (real words) or resume (false alarm) ----

fn wav16k(dir: &Path, name: &str, samples: &[i16]) -> PathBuf {
    let path = dir.join(format!("{name}.wav"));
    tgvoice::resample::write_wav_mono(&path, 16_000, samples).unwrap();
    path
}

/// The `reply-played` records tts-writer appended to metrics.jsonl since `from` lines.
fn replies_played(p: &Pipeline, from: usize) -> (Vec<Value>, usize) {
    let text = std::fs::read_to_string(p.state.path().join(&p.instance).join("metrics.jsonl")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let played = lines[from.min(lines.len())..]
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "reply-played")
        .collect();
    (played, lines.len())
}

/// One call per sound: a question with a long reply, and `sound` said 700 ms into the reply.
/// Returns (the long reply's reply-played record, callsim's turn reports).
fn talk_over_reply(p: &Pipeline, question: &Path, sound: &Path, metrics_from: &mut usize) -> (Value, Vec<Value>) {
    // On a loaded machine a reply can take half a minute to start (sttd starved of CPU).
    let (turns, _) = p.call(&[question.display().to_string(), format!("barge:700:{}", sound.display())], &["--reply-timeout", "120"]);
    assert!(answered(&turns[0]), "no reply to talk over: {turns:?}");
    let (played, next) = replies_played(p, *metrics_from);
    *metrics_from = next;
    let first = played.first().cloned().unwrap_or_else(|| panic!("no reply-played record: {turns:?}"));
    (first, turns)
}

#[test]
fn one_and_two_word_interruptions_stop_a_reply_and_false_alarms_do_not() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Every sound in the Piper voice, made side by side while the pipeline starts.
    let mut texts = vec![("question".to_string(), "Tell me a story.".to_string())];
    texts.extend(INTERRUPTIONS.iter().enumerate().map(|(i, w)| (format!("interrupt-{i}"), w.to_string())));
    texts.extend(BACKCHANNELS.iter().enumerate().map(|(i, w)| (format!("backchannel-{i}"), w.to_string())));
    let making = std::thread::spawn({
        let dir = dir.path().to_path_buf();
        move || piper_wavs(&dir, &texts)
    });
    // The LLM is not this test's subject: a stand-in answers the question with a known reply of
    // ~6 s (long enough to talk over, short enough to hear to its end) and an interruption with
    // a word, so twenty calls take minutes, not the local model's ten-second replies.
    let llm = StandInLlm::start(Replies::Match {
        rules: vec![("story".into(), BARGE_IN_REPLY.into()), ("tell me".into(), BARGE_IN_REPLY.into())],
        otherwise: "Okay.".into(),
    });
    let p = Pipeline::start_with("bargein-words", vec![("TGVOICE_LLM_BASE_URL".into(), llm.base_url())], Some(llm.port));
    let wavs = making.join().unwrap();
    let question = wavs[0].clone();
    let mut from = 0;
    let mut stops = vec![];
    let mut cancelled = 0;
    for (i, words) in INTERRUPTIONS.iter().enumerate() {
        let (reply, turns) = talk_over_reply(&p, &question, &wavs[1 + i], &mut from);
        let stop = turns[1]["barge_in_stop_ms"].as_f64();
        println!(
            "interruption {words:?}: heard {:?}, reply cancelled {}, output silent {stop:?} ms after the onset; played {:?}",
            turns[1]["heard"], reply["cancelled"], reply["played_text"]
        );
        stops.extend(stop);
        if reply["cancelled"] == true {
            cancelled += 1;
        }
    }
    let (mut noises_resumed, mut backchannels_resumed, mut misheard) = (0, 0, vec![]);
    let mut sounds: Vec<(String, PathBuf)> = noises().into_iter().map(|(n, s)| (n.to_string(), wav16k(dir.path(), n, &s))).collect();
    for (i, words) in BACKCHANNELS.iter().enumerate() {
        sounds.push((words.to_string(), wavs[1 + INTERRUPTIONS.len() + i].clone()));
    }
    let mut backchannel_gaps = vec![];
    for (name, wav) in &sounds {
        let (reply, turns) = talk_over_reply(&p, &question, wav, &mut from);
        let whole = reply["cancelled"] == false && reply["played_text"] == reply["text"];
        let gap = turns[1]["barge_in_resume_ms"].as_f64();
        println!(
            "false alarm {name}: heard {:?}, reply cancelled {}, played whole {whole}; stop {:?} ms, resumed {gap:?} ms after the caller's last sound",
            turns[1]["heard"], reply["cancelled"], turns[1]["barge_in_stop_ms"]
        );
        let is_backchannel = BACKCHANNELS.contains(&name.as_str());
        if whole && is_backchannel {
            backchannels_resumed += 1;
            backchannel_gaps.extend(gap);
        } else if whole {
            noises_resumed += 1;
        } else if is_backchannel {
            misheard.push(format!("{name} heard as {}", turns[1]["heard"]));
        }
    }
    stops.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "barge-in onset → output silence over {} one-/two-word interruptions: median {:.0} ms, p90 {:.0} ms (load {})",
        stops.len(),
        percentile(&stops, 0.5),
        percentile(&stops, 0.9),
        load_average()
    );
    assert!(!backchannel_gaps.is_empty(), "no backchannel let the reply play to its end");
    backchannel_gaps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "backchannel → reply resumed, over {} backchannels played whole: median {:.0} ms, p90 {:.0} ms",
        backchannel_gaps.len(),
        percentile(&backchannel_gaps, 0.5),
        percentile(&backchannel_gaps, 0.9)
    );
    let n_noises = sounds.len() - BACKCHANNELS.len();
    println!(
        "interruptions cancelled: {cancelled}/10; noises resumed and played whole: {noises_resumed}/{n_noises}; \
         backchannels: {backchannels_resumed}/{}; cancelled by a mishearing: {misheard:?}",
        BACKCHANNELS.len()
    );
    assert!(cancelled >= 9, "only {cancelled} of 10 one-/two-word interruptions stopped the reply");
    // A cough, click or breath has no words to mishear: every one must give the reply back.
    assert_eq!(noises_resumed, n_noises, "a noise with no words stopped the reply for good");
    // A backchannel is words, and whisper tiny.en mishears a short one now and then ("Mhm." as
    // "and may Chen.", "Got it." as "That is."), which reads as an interruption. Issue 24 asks
    // for ≥ 8/10 backchannels resumed; the ears, not the policy, are what is missing above it.
    assert!(backchannels_resumed * 10 >= BACKCHANNELS.len() * 8, "only {backchannels_resumed} of {} backchannels let the reply play to its end: {misheard:?}", BACKCHANNELS.len());
    // A backchannel resumes the reply on sttd's preview at the caller's first pause, not after
    // the end of their turn and a second decode (1.3–2.1 s before, issue 24).
    assert!(percentile(&backchannel_gaps, 0.5) <= 600.0, "a backchannel left a hole in the reply: {backchannel_gaps:?}");
    assert!(stops.len() >= 9, "the output did not go silent for most spoken interruptions: {stops:?}");
    // The pause comes at the level onset (the first loud 10 ms block), not at Silero's first
    // voiced chunk: Silero alone gave a median of 70–110 ms (the "s" of "Stop." 190 ms), the
    // level onset 10–20 ms. So the median is held to the issue's target (≤ 60 ms), which
    // Silero alone does not reach; its p90 (≤ 100 ms) is printed here and measured by
    // scripts/bench-bargein. (Only interruptions count: after a false alarm the reply resumes,
    // and callsim's "silent" is then the reply's end.)
    assert!(percentile(&stops, 0.5) <= 60.0, "the reply went silent only after Silero's onset: onset → silence {stops:?}");
}

/// The replies of the echo test: two sentences each (the cap for a server without a key),
/// with quotations after commas, nested and curly quotes, parentheses, an ellipsis, decimals
/// and abbreviations.
const ECHO_TEST_REPLIES: [&str; 10] = [
    "The capital of France is Paris. It is known as \"the city of light,\" and it sits on the Seine.",
    "The sun is a star, about 4.6 billion years old. Its light takes roughly 8.3 minutes to reach us.",
    "Two plus two is four. That is one of the first sums (and the easiest) that children learn.",
    "Once, a dragon called \"Ember,\" who guarded a mountain, met a shepherd. They became friends… slowly.",
    "The sky is blue on a clear day. Sunlight is scattered by the air, e.g. by nitrogen and oxygen.",
    "Romeo and Juliet was written by William Shakespeare. He said, “a rose by any other name,” in it.",
    "The largest ocean is the Pacific. It covers about 63 million square miles (more than all land).",
    "A week has seven days, known as \"days per week,\" which allows for accurate calculations.",
    "Bees make honey, from the nectar of flowers. Dr. Smith says a hive can make 30 kg a year.",
    "The moon orbits the Earth every 27.3 days. Its pull, called \"the tide,\" moves the seas.",
];

#[test]
fn our_own_voice_fed_back_at_minus_10_db_interrupts_no_reply() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let questions = [
        "What is the capital of France?",
        "Tell me about the sun.",
        "What is two plus two?",
        "Tell me a story about a dragon.",
        "What color is the sky?",
        "Who wrote Romeo and Juliet?",
        "What is the largest ocean?",
        "How many days are in a week?",
        "What do bees make?",
        "Tell me about the moon.",
    ];
    let texts: Vec<(String, String)> = questions.iter().enumerate().map(|(i, q)| (format!("q{i}"), q.to_string())).collect();
    let wavs: Vec<String> = piper_wavs(dir.path(), &texts).iter().map(|w| w.display().to_string()).collect();
    // vadseg follows the played audio (tg_output.tap), as `voicecall mic` with speakers needs;
    // the run directory is known before the start.
    let instance = format!("bargein-echo-{}", std::process::id());
    let rd = Command::new(bin_path("tgvoice-rundir")).args(["--instance", &instance, "-q"]).env_remove("TGVOICE_RUN_DIR").output().unwrap();
    let run_dir = PathBuf::from(String::from_utf8(rd.stdout).unwrap().trim());
    let echo_ref = run_dir.join("tg_output.tap").display().to_string();
    // Known replies, so the played-text check sees the punctuation that once made a reply
    // played whole look cut (issue 30: `week," allows` reported as `week, " allows`).
    let llm = StandInLlm::start(Replies::Cycle(ECHO_TEST_REPLIES.iter().map(|r| r.to_string()).collect()));
    let p = Pipeline::start_with(
        "bargein-echo",
        vec![("VADSEG_ECHO_REF".into(), echo_ref), ("TGVOICE_LLM_BASE_URL".into(), llm.base_url())],
        Some(llm.port),
    );
    assert_eq!(p.run_dir, run_dir);
    let (turns, _) = p.call(&wavs, &["--echo-gain-db", "-10", "--echo-delay-ms", "50", "--reply-timeout", "120"]);
    let (played, _) = replies_played(&p, 0);
    let answered_n = turns.iter().filter(|t| answered(t)).count();
    let whole = played.iter().filter(|r| r["cancelled"] == false && r["played_text"] == r["text"]).count();
    let pauses = p.log("tts-writer").lines().filter(|l| l.contains("reply paused")).count();
    for r in &played {
        println!("reply {}: cancelled {}, played {:?}", r["turn"], r["cancelled"], r["played_text"]);
    }
    println!("echo at -10 dB: {answered_n}/10 answered, {whole} replies played whole, {pauses} pauses");
    assert_eq!(answered_n, 10, "{turns:?}");
    assert!(played.len() >= 10 && whole == played.len(), "a reply was interrupted by its own echo: {played:?}");
    let quoted = played.iter().filter(|r| r["text"].as_str().is_some_and(|t| t.contains(",\" "))).count();
    assert!(quoted >= 2, "the replies with a quotation after a comma were not among those played: {played:?}");
    assert_eq!(pauses, 0, "the assistant paused for its own voice");
}

/// Issue 25: llm-relay once guessed how long a reply plays (12 characters a second plus 1.5 s),
/// so a question asked 2 s after a long reply had ended was taken for speech over it: paused,
/// decided by its words, and a spurious cancel sent. tts-writer now reports playback on
/// played.frames and the relay goes by that.
#[test]
fn a_question_two_seconds_after_a_finished_reply_is_answered_without_a_cancel() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Long replies (~11 s by the old guess, ~8 s spoken), so the next question comes within
    // the guess but well after the audio.
    let long = "The answer takes a little while to say, because it goes on for a good many words in a row. \
                It ends here, and then there is silence for a couple of seconds before the next question.";
    let llm = StandInLlm::start(Replies::Cycle(vec![long.to_string()]));
    let questions = ["What is the capital of France?", "What is two plus two?", "What color is the sky?"];
    let texts: Vec<(String, String)> = questions.iter().enumerate().map(|(i, q)| (format!("q{i}"), q.to_string())).collect();
    let wavs: Vec<String> = piper_wavs(dir.path(), &texts).iter().map(|w| w.display().to_string()).collect();
    let p = Pipeline::start_with("after-reply", vec![("TGVOICE_LLM_BASE_URL".into(), llm.base_url())], Some(llm.port));
    let (turns, _) = p.call(&wavs, &["--reply-silence", "2.0", "--reply-timeout", "60"]);
    let relay = p.log("llm-relay");
    let tts = p.log("tts-writer");
    for t in &turns {
        println!("turn: {t}");
    }
    assert!(turns.iter().all(answered), "every question answered: {turns:?}");
    let (played, _) = replies_played(&p, 0);
    assert!(played.len() >= 3 && played.iter().all(|r| r["cancelled"] == false), "{played:?}");
    for line in relay.lines().chain(tts.lines()) {
        assert!(!line.contains("speaks over the reply") && !line.contains("cancel"), "no barge-in, no cancel: {line}");
    }
}

//! Helpers for the project's integration tests and benchmarks (not used by the programs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Path of a program built into the same target directory as the running test or bench
/// (`target/release/NAME` for `cargo test --release`). Panics with what to do if missing.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run `cargo build --release --workspace` (scripts/test does this) first",
        path.display()
    );
    path
}

/// Where scripts/setup put models, ONNX Runtime and the venv (the programs' own default,
/// [`crate::paths::cache_dir`]; tests read it from here).
pub use crate::paths::cache_dir;

/// vadseg's minimum speech duration in ms (the barge-in guard), from its `--help` default.
pub fn vad_min_speech_ms() -> f64 {
    let help = Command::new(bin_path("vadseg")).arg("--help").output().expect("run vadseg --help");
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    help.lines()
        .skip_while(|l| !l.contains("--min-speech"))
        .take(4)
        .find_map(|l| l.split("[default: ").nth(1).and_then(|r| r.split(']').next()).and_then(|v| v.parse::<f64>().ok()))
        .expect("vadseg --help shows the --min-speech-ms default")
}

/// `scripts/voicecall --instance INSTANCE` for a test: state under `state_dir`, the programs of
/// this build, no run-directory override and no cloud API keys (the offline defaults).
pub fn voicecall(root: &Path, instance: &str, state_dir: &Path) -> Command {
    let bin_dir = bin_path("tgcat").parent().expect("bin dir").to_path_buf();
    let mut c = Command::new("bash");
    c.arg(root.join("scripts/voicecall"))
        .args(["--instance", instance])
        .env("TGVOICE_STATE_DIR", state_dir)
        .env("TGVOICE_BIN", &bin_dir)
        .env_remove("TGVOICE_RUN_DIR")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("TGVOICE_LLM_BASE_URL")
        .stdin(Stdio::null());
    c
}

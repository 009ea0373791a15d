//! Where tgvoice keeps things: one rule per directory, used by every program. scripts/env.sh,
//! scripts/voicecall, launchd/install.sh and tg-bridge (`tgvoice_bridge/paths.py`) follow the
//! same rules; README.md "Where things live" states them. An empty variable counts as unset.

use std::path::PathBuf;

/// The ONNX Runtime release vadseg (Silero) and tts-writer (Piper) are built against.
pub const ONNX_RUNTIME_VERSION: &str = "1.22.1";

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn home() -> PathBuf {
    env_dir("HOME").unwrap_or_default()
}

/// Models, ONNX Runtime, the venv and wheels (made by scripts/setup): `$TGVOICE_CACHE`, else
/// `$XDG_CACHE_HOME/tgvoice`, else `~/.cache/tgvoice`.
pub fn cache_dir() -> PathBuf {
    env_dir("TGVOICE_CACHE").unwrap_or_else(|| env_dir("XDG_CACHE_HOME").unwrap_or_else(|| home().join(".cache")).join("tgvoice"))
}

/// Hand-written configuration (llm-relay's tools file, `mcp.json`): `$XDG_CONFIG_HOME/tgvoice`,
/// else `~/.config/tgvoice`.
pub fn config_dir() -> PathBuf {
    env_dir("XDG_CONFIG_HOME").unwrap_or_else(|| home().join(".config")).join("tgvoice")
}

/// `$TGVOICE_MODELS`, else `<cache>/models`.
pub fn models_dir() -> PathBuf {
    env_dir("TGVOICE_MODELS").unwrap_or_else(|| cache_dir().join("models"))
}

/// The ONNX Runtime library: `$ORT_DYLIB_PATH`, else the copy scripts/setup unpacks into
/// `<cache>/onnxruntime/`.
pub fn onnx_runtime() -> PathBuf {
    env_dir("ORT_DYLIB_PATH")
        .unwrap_or_else(|| cache_dir().join("onnxruntime").join(format!("libonnxruntime.so.{ONNX_RUNTIME_VERSION}")))
}

/// Where a supervisor (scripts/voicecall, phone-bridge) keeps one directory per instance:
/// `$TGVOICE_STATE_DIR`, else `$XDG_STATE_HOME/tgvoice`, else `~/.local/state/tgvoice`.
pub fn state_base() -> PathBuf {
    env_dir("TGVOICE_STATE_DIR").unwrap_or_else(xdg_state_base)
}

fn xdg_state_base() -> PathBuf {
    env_dir("XDG_STATE_HOME").unwrap_or_else(|| home().join(".local/state")).join("tgvoice")
}

/// A stage's own state (conversation, metrics.jsonl) when it has no `--state-dir` (the
/// supervisor passes `--state-dir <state base>/<instance>`): `$TGVOICE_STATE_DIR`, else
/// `~/.local/state/tgvoice/<instance>` (`$XDG_STATE_HOME` honoured).
pub fn instance_state_dir(instance: &str) -> PathBuf {
    env_dir("TGVOICE_STATE_DIR").unwrap_or_else(|| xdg_state_base().join(instance))
}

/// The run directory of an instance: `$TGVOICE_RUN_DIR`, else
/// `$XDG_RUNTIME_DIR/tgvoice/<instance>` (Linux) or `$TMPDIR/tgvoice/<instance>` (macOS), else
/// `/tmp/tgvoice-$UID/<instance>`.
pub fn run_dir(instance: &str) -> PathBuf {
    if let Some(dir) = env_dir("TGVOICE_RUN_DIR") {
        return dir;
    }
    let base = env_dir(if cfg!(target_os = "macos") { "TMPDIR" } else { "XDG_RUNTIME_DIR" }).map(|t| t.join("tgvoice"));
    base.unwrap_or_else(|| PathBuf::from(format!("/tmp/tgvoice-{}", nix::unistd::geteuid()))).join(instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each rule, through a child process so the variables it sets touch no other test.
    #[test]
    fn each_directory_follows_its_variables_in_order() {
        if std::env::var_os("TGVOICE_PATHS_CHILD").is_some() {
            let show = |name: &str, p: PathBuf| println!("@@{name}={}", p.display());
            show("cache", cache_dir());
            show("models", models_dir());
            show("ort", onnx_runtime());
            show("state_base", state_base());
            show("instance", instance_state_dir("line1"));
            show("run", run_dir("line1"));
            return;
        }
        let run = |vars: &[(&str, &str)]| -> String {
            let mut c = std::process::Command::new(std::env::current_exe().unwrap());
            c.args(["--exact", "paths::tests::each_directory_follows_its_variables_in_order", "--nocapture", "--test-threads=1"]);
            for v in ["TGVOICE_CACHE", "XDG_CACHE_HOME", "TGVOICE_MODELS", "ORT_DYLIB_PATH", "TGVOICE_STATE_DIR", "XDG_STATE_HOME", "TGVOICE_RUN_DIR", "XDG_RUNTIME_DIR", "TMPDIR"] {
                c.env_remove(v);
            }
            c.env("TGVOICE_PATHS_CHILD", "1").env("HOME", "/h").envs(vars.iter().copied());
            String::from_utf8(c.output().unwrap().stdout).unwrap()
        };
        let defaults = run(&[]);
        for line in [
            "cache=/h/.cache/tgvoice",
            "models=/h/.cache/tgvoice/models",
            "ort=/h/.cache/tgvoice/onnxruntime/libonnxruntime.so.1.22.1",
            "state_base=/h/.local/state/tgvoice",
            "instance=/h/.local/state/tgvoice/line1",
        ] {
            assert!(defaults.contains(&format!("@@{line}\n")), "{line} not in\n{defaults}");
        }
        let xdg = run(&[("XDG_CACHE_HOME", "/x/c"), ("XDG_STATE_HOME", "/x/s"), ("XDG_RUNTIME_DIR", "/x/r"), ("TGVOICE_MODELS", "")]);
        for line in ["cache=/x/c/tgvoice", "models=/x/c/tgvoice/models", "state_base=/x/s/tgvoice", "instance=/x/s/tgvoice/line1"] {
            assert!(xdg.contains(&format!("@@{line}\n")), "{line} not in\n{xdg}");
        }
        if !cfg!(target_os = "macos") {
            assert!(xdg.contains("@@run=/x/r/tgvoice/line1\n"), "{xdg}");
        }
        let own = run(&[("TGVOICE_CACHE", "/c"), ("TGVOICE_MODELS", "/m"), ("ORT_DYLIB_PATH", "/o.so"), ("TGVOICE_STATE_DIR", "/s"), ("TGVOICE_RUN_DIR", "/r")]);
        for line in ["cache=/c", "models=/m", "ort=/o.so", "state_base=/s", "instance=/s", "run=/r"] {
            assert!(own.contains(&format!("@@{line}\n")), "{line} not in\n{own}");
        }
    }
}

//! Helpers for the project's integration tests and benchmarks (not used by the programs).

use std::path::PathBuf;

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

/// The project's cache directory (`$TGVOICE_CACHE`, default `~/.cache/tgvoice`), where
/// scripts/setup puts models, ONNX Runtime and the venv.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TGVOICE_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    base.join("tgvoice")
}

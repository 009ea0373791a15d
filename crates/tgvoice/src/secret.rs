//! API keys for the servers a stage talks to (a speech-to-text or TTS server): from a key file
//! its owner alone can read, else from an environment variable, else none (a server on the LAN
//! usually wants none). Never a flag, so no process list shows it; [`Secret`]'s Debug never
//! prints it.

use crate::cli::{exit, fail};
use std::path::Path;

/// An API key, kept out of every log line (its Debug shows only that there is one).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The key from `file` (given by `flag`; it must be mode 0600 or stricter: exit 78 otherwise),
/// else from `env_var`, else none.
pub fn api_key(flag: &str, file: Option<&Path>, env_var: &str) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = file {
        return read_key_file(flag, path).map(|k| Some(Secret(k)));
    }
    Ok(std::env::var(env_var).ok().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).map(Secret))
}

fn read_key_file(flag: &str, path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| fail(exit::CONFIG, format!("{flag} {}: {e}", path.display())))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(fail(
            exit::CONFIG,
            format!("{flag} {}: the key file is open to others (mode {mode:04o}); make it the owner's alone: chmod 600 {}", path.display(), path.display()),
        ));
    }
    let key = std::fs::read_to_string(path).map_err(|e| fail(exit::CONFIG, format!("{flag} {}: {e}", path.display())))?;
    let key = key.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(fail(exit::CONFIG, format!("{flag} {}: expected the API key alone on one line", path.display())));
    }
    Ok(key.to_string())
}

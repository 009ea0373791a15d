//! The private run directory (`$RUN`) and its FIFOs (fifo-layout.md §1).

use crate::fifo::ensure_fifo;
use anyhow::{bail, Context, Result};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Framed and raw links, in pipeline order. Each has a `<stem>.tap` companion.
pub const LINKS: &[&str] = &[
    "tg_input.raw",
    "control.frames",
    "audio.frames",
    "speech.frames",
    "text.frames",
    "reply.frames",
    "tg_output.raw",
    "played.frames",
    "line.frames",
];

/// The default run directory of `instance` ([`crate::paths::run_dir`]).
pub fn default_run_dir(instance: &str) -> PathBuf {
    crate::paths::run_dir(instance)
}

/// Whether a directory owned by `owner` with `mode` may hold a run directory of user `me`:
/// nobody but us (or root) can have planted or be able to swap what is inside it. Someone
/// else's directory is refused, and so is one that others may write to without the sticky bit.
pub fn parent_is_safe(owner: u32, mode: u32, me: u32) -> bool {
    let others_can_swap = mode & 0o022 != 0 && mode & 0o1000 == 0;
    (owner == me || owner == 0) && !others_can_swap
}

/// Create (mode 0700) or validate a private directory: refuse symlinks, non-directories,
/// directories owned by someone else, and a parent directory someone else controls; tighten a
/// looser mode on our own directory.
pub fn prepare_private_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let meta = std::fs::metadata(parent).with_context(|| format!("cannot inspect {}", parent.display()))?;
        let me = nix::unistd::geteuid().as_raw();
        if !parent_is_safe(meta.uid(), meta.mode(), me) {
            bail!(
                "the parent of run directory {} is {} (owner uid {}, mode {:o}), which another user \
                 controls; refusing it (choose a --run-dir under a directory of your own)",
                dir.display(),
                parent.display(),
                meta.uid(),
                meta.mode() & 0o7777
            );
        }
    }
    match std::fs::symlink_metadata(dir) {
        Err(_) => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create run directory {}", dir.display()))?;
        }
        Ok(meta) => {
            if meta.file_type().is_symlink() {
                bail!("run directory {} is a symlink; refusing it (remove it or choose another --run-dir)", dir.display());
            }
            if !meta.is_dir() {
                bail!("run directory {} exists but is not a directory", dir.display());
            }
            let uid = nix::unistd::geteuid().as_raw();
            if meta.uid() != uid {
                bail!(
                    "run directory {} is owned by uid {}, not by you (uid {uid}); refusing it",
                    dir.display(),
                    meta.uid()
                );
            }
            if meta.mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("cannot make {} private (chmod 700)", dir.display()))?;
            }
        }
    }
    Ok(())
}

/// Create the run directory and every link and tap FIFO in it.
pub fn create_run_dir(dir: &Path) -> Result<()> {
    prepare_private_dir(dir)?;
    for link in LINKS {
        let path = dir.join(link);
        ensure_fifo(&path)?;
        ensure_fifo(&crate::fifo::Tap::path_for(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn creates_private_dir_with_all_fifos() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        create_run_dir(&run).unwrap();
        assert_eq!(std::fs::metadata(&run).unwrap().mode() & 0o777, 0o700);
        for link in LINKS {
            assert!(std::fs::metadata(run.join(link)).unwrap().file_type().is_fifo());
        }
        assert!(std::fs::metadata(run.join("speech.tap")).unwrap().file_type().is_fifo());
        create_run_dir(&run).unwrap(); // idempotent
    }

    /// The links are those of the pipeline table (pipeline.table, read by scripts/voicecall).
    #[test]
    fn links_are_the_pipeline_tables() {
        let table = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipeline.table")).unwrap();
        let mut in_table: Vec<&str> = table
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split_whitespace().skip(2).take(1)) // the outputs: each link has one writer
            .flat_map(|f| f.split(','))
            .filter(|l| *l != "-")
            .collect();
        in_table.sort();
        let mut links = LINKS.to_vec();
        links.sort();
        assert_eq!(in_table, links);
    }

    #[test]
    fn refuses_symlink_and_non_fifo() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = create_run_dir(&link).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");

        let run = tmp.path().join("run2");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join("audio.frames"), b"x").unwrap();
        let err = create_run_dir(&run).unwrap_err().to_string();
        assert!(err.contains("not a FIFO"), "{err}");
    }

    /// Case 8 of issue 18: another user's 0777 directory could swap the run dir under us.
    #[test]
    fn parent_controlled_by_someone_else_is_refused() {
        let me = 1000;
        assert!(parent_is_safe(me, 0o40700, me));
        assert!(parent_is_safe(0, 0o41777, me), "/tmp: root's, sticky");
        assert!(parent_is_safe(0, 0o40755, me));
        assert!(!parent_is_safe(1001, 0o40777, me), "another user's 0777 directory");
        assert!(!parent_is_safe(1001, 0o40755, me), "another user's directory");
        assert!(!parent_is_safe(me, 0o40777, me), "ours, but anyone may rename inside it");
        assert!(!parent_is_safe(0, 0o40777, me), "root's world-writable without the sticky bit");
    }

    #[test]
    fn tightens_loose_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("loose");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_private_dir(&run).unwrap();
        assert_eq!(std::fs::metadata(&run).unwrap().mode() & 0o777, 0o700);
    }
}

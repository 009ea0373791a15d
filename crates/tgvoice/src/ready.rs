//! Readiness by protocol (fifo-layout.md §5), in the way of s6's `notification-fd`: a stage
//! started with `TGVOICE_NOTIFY_FD=N` (and file descriptor N open for writing) writes one
//! newline to fd N and closes it once it is ready: its models are loaded and its input link is
//! open (a FIFO input is opened as soon as a writer comes). It does so whatever the log level.
//! Without the variable (a stage run by hand, by launchd or systemd), [`notify`] does nothing.
//!
//! `scripts/supervise` gives every run of a stage such an fd and records the readiness as the
//! file `ready` in `$RUN/supervise/<stage>/` (its content is the stage's pid).

use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable naming the notification fd.
pub const NOTIFY_FD_VAR: &str = "TGVOICE_NOTIFY_FD";

static DONE: AtomicBool = AtomicBool::new(false);

/// Signal readiness: once per process, a newline on the fd named by `TGVOICE_NOTIFY_FD`, then
/// close it. A missing or bad variable, or an fd that is not open, is ignored (logged at debug
/// level): readiness is a courtesy to the supervisor, never a reason to fail.
pub fn notify() {
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let Ok(value) = std::env::var(NOTIFY_FD_VAR) else { return };
    match value.trim().parse::<i32>() {
        // 0–2 are the stage's own stdin, stdout and stderr: never written to or closed here.
        Ok(fd) if fd > 2 => {
            if let Err(e) = notify_fd(fd) {
                log::debug!("{NOTIFY_FD_VAR}={fd}: cannot signal readiness: {e}");
            }
        }
        _ => log::debug!("{NOTIFY_FD_VAR}={value} is not a file descriptor above 2; readiness not signalled"),
    }
}

/// Write one newline to `fd` and close it.
pub fn notify_fd(fd: i32) -> std::io::Result<()> {
    // Only an fd that is open: never one the process did not inherit.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let r = loop {
        let n = unsafe { libc::write(fd, b"\n".as_ptr().cast(), 1) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break if n == 1 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    };
    unsafe { libc::close(fd) };
    r
}

/// The readiness of one supervised stage, as `scripts/supervise` records it in
/// `<run_dir>/supervise/<stage>/`: ready when `ready` holds the pid in `pid` and that process is
/// alive (not a zombie is not checked: the supervisor reaps its service at once).
pub fn stage_ready(run_dir: &std::path::Path, stage: &str) -> bool {
    let dir = run_dir.join("supervise").join(stage);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok().and_then(|s| s.trim().parse::<i32>().ok());
    match (read("pid"), read("ready")) {
        (Some(pid), Some(ready)) if pid == ready && pid > 0 => unsafe { libc::kill(pid, 0) == 0 },
        _ => false,
    }
}

/// The stages of `stages` that are not [`stage_ready`].
pub fn unready<'a>(run_dir: &std::path::Path, stages: &[&'a str]) -> Vec<&'a str> {
    stages.iter().copied().filter(|s| !stage_ready(run_dir, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    #[test]
    fn writes_exactly_one_newline_and_closes() {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        notify_fd(fds[1]).unwrap();
        // The write end is closed: reading to the end returns, with exactly one newline.
        let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"\n");
        assert_eq!(unsafe { libc::fcntl(fds[1], libc::F_GETFD) }, -1, "the fd is closed");
    }

    #[test]
    fn an_fd_that_is_not_open_is_an_error_not_a_write_elsewhere() {
        // Far above any fd this test process has open (a closed low number could be reused
        // at once by another test's thread).
        let fd = 1_000_000;
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1);
        assert!(notify_fd(fd).is_err());
    }

    #[test]
    fn a_stage_is_ready_only_with_its_own_live_pid_recorded() {
        let run = tempfile::tempdir().unwrap();
        let dir = run.path().join("supervise/sttd");
        std::fs::create_dir_all(&dir).unwrap();
        let me = std::process::id().to_string();
        assert!(!stage_ready(run.path(), "sttd"), "nothing recorded");
        std::fs::write(dir.join("pid"), format!("{me}\n")).unwrap();
        assert!(!stage_ready(run.path(), "sttd"), "started, not ready");
        std::fs::write(dir.join("ready"), "1\n").unwrap();
        assert!(!stage_ready(run.path(), "sttd"), "an earlier run's readiness");
        std::fs::write(dir.join("ready"), format!("{me}\n")).unwrap();
        assert!(stage_ready(run.path(), "sttd"));
        assert_eq!(unready(run.path(), &["sttd", "vadseg"]), vec!["vadseg"]);
    }
}

//! Readiness by protocol (fifo-layout.md §5): every stage started with `TGVOICE_NOTIFY_FD=N`
//! and fd N open writes exactly one newline there once its model is loaded and its input open,
//! then closes it; at `TGVOICE_LOG=warn` too (the level at which no `reading <link>` line is
//! logged). One case per stage, on the real programs with their real models.
//! Requires the programs built (`cargo build --release --workspace`) and the models
//! (scripts/setup).

use std::io::Read;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tgvoice::testkit::{bin_path, cache_dir};

/// The fd number the stages are given (the supervisor uses 5 too).
const FD: RawFd = 5;

fn ort_dylib() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).unwrap_or_else(|| cache_dir().join("onnxruntime/libonnxruntime.so.1.22.1"))
}

/// In the child before exec: `w` becomes fd 5, kept across exec (dup2 clears FD_CLOEXEC on
/// the copy; when `w` already is fd 5, dup2 does nothing and the flag is cleared by hand).
fn give_fd(w: RawFd) -> std::io::Result<()> {
    let r = if w == FD { unsafe { libc::fcntl(FD, libc::F_SETFD, 0) } } else { unsafe { libc::dup2(w, FD) } };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Start `program` with the write end of a pipe as fd 5 and `TGVOICE_NOTIFY_FD=5`, its input
/// on an open stdin; return what it wrote on fd 5 until it closed it (or `limit` passed), and
/// whether it was still running then.
fn readiness(program: &str, args: &[&str], env: &[(&str, &str)], limit: Duration) -> (Vec<u8>, bool, String) {
    let state = tempfile::tempdir().unwrap();
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (r, w) = (fds[0], fds[1]);
    let mut cmd = Command::new(bin_path(program));
    cmd.args(args)
        .env("TGVOICE_STATE_DIR", state.path())
        .env("ORT_DYLIB_PATH", ort_dylib())
        .env("TGVOICE_LOG", "warn")
        .env("TGVOICE_NOTIFY_FD", FD.to_string())
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    unsafe {
        cmd.pre_exec(move || give_fd(w));
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    unsafe { libc::close(w) };
    let stdin = child.stdin.take(); // held open: the stage's input stays open
    let mut reader = unsafe { std::fs::File::from_raw_fd(r) };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = reader.read_to_end(&mut got);
        let _ = tx.send(got);
    });
    let t0 = Instant::now();
    let got = rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{program}: fd {FD} not closed within {limit:?} (no readiness, or it kept the fd open)"));
    println!("{program}: {:?} on fd {FD} after {:.0} ms", String::from_utf8_lossy(&got), t0.elapsed().as_secs_f64() * 1e3);
    let running = child.try_wait().unwrap().is_none();
    drop(stdin);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (got, running, err)
}

#[test]
fn every_stage_signals_readiness_once_at_warn_level() {
    let cases: &[(&str, &[&str], &[(&str, &str)])] = &[
        ("tgcat", &["-"], &[]),
        ("vadseg", &[], &[]),
        ("sttd", &[], &[]),
        // A server of the user's that is never asked before a question comes.
        ("llm-relay", &[], &[("TGVOICE_LLM_BASE_URL", "http://127.0.0.1:9/v1"), ("TGVOICE_LLM_MODEL", "test")]),
        ("tts-writer", &[], &[]),
    ];
    for (program, args, env) in cases {
        let (got, running, err) = readiness(program, args, env, Duration::from_secs(120));
        assert_eq!(got, b"\n", "{program} must write exactly one newline on its notification fd, then close it; stderr:\n{err}");
        assert!(running, "{program} had exited when it signalled readiness; stderr:\n{err}");
        assert!(!err.contains(" info: "), "{program} logged at info level with TGVOICE_LOG=warn:\n{err}");
    }
}

#[test]
fn without_the_variable_fd_5_is_left_alone() {
    // A stage run by hand (no TGVOICE_NOTIFY_FD) never writes to an fd it happens to have.
    let state = tempfile::tempdir().unwrap();
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (r, w) = (fds[0], fds[1]);
    let mut cmd = Command::new(bin_path("tgcat"));
    cmd.arg("-").env("TGVOICE_STATE_DIR", state.path()).env_remove("TGVOICE_NOTIFY_FD").stdin(Stdio::piped()).stdout(Stdio::null());
    unsafe {
        cmd.pre_exec(move || give_fd(w));
    }
    let mut child = cmd.spawn().unwrap();
    unsafe { libc::close(w) };
    std::thread::sleep(Duration::from_millis(500));
    drop(child.stdin.take()); // end of input: tgcat exits, fd 5 closes with it
    child.wait().unwrap();
    let mut got = Vec::new();
    unsafe { std::fs::File::from_raw_fd(r) }.read_to_end(&mut got).unwrap();
    assert!(got.is_empty(), "tgcat wrote {got:?} on fd 5 without TGVOICE_NOTIFY_FD");
}

//! Exit code 70 (fifo-layout.md §4): a panic on any thread of a program run through
//! `tgvoice::cli::run` ends the whole process with 70 and one log line. No input makes a
//! program panic on purpose, so this test runs its own binary as such a program.

use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = "TGVOICE_TEST_PANIC_CHILD";

#[test]
fn a_panic_on_a_worker_thread_exits_70() {
    if std::env::var_os(CHILD).is_some() {
        let log = tgvoice::cli::LogArgs::default();
        tgvoice::cli::run("panic-test", &log, || {
            std::thread::Builder::new().name("worker".into()).spawn(|| panic!("deliberate")).unwrap();
            // The main thread would go on for ever: the hook must end the process.
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        });
    }
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_panic_on_a_worker_thread_exits_70", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(tgvoice::cli::exit::SOFTWARE), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "the process lived on after the panic");
    assert!(err.contains("internal error on thread \"worker\"") && err.contains("deliberate"), "{err}");
}

//! A reader that leaves ends the writer quietly: `… | STAGE | head -c 1` returns promptly with
//! exit 0 for every stage, while its input keeps coming (ripgrep's rule: a broken pipe is a
//! normal end). Requires the programs built (`cargo build --release --workspace`) and, for
//! vadseg and tts-writer, ONNX Runtime / espeak-ng (scripts/setup).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tgvoice::frame::encode;
use tgvoice::testkit::bin_path;
use tgvoice::{AudioFrame, Event, Frame};

/// Run `program args`, feed it `input()` every 20 ms, read one byte of its output, close the
/// output, and return (exit code, seconds from closing to exit, its stderr).
fn head_c1(program: &str, args: &[&str], input: impl Fn(u64) -> Vec<u8> + Send + 'static) -> (Option<i32>, f64, String) {
    let mut child = Command::new(bin_path(program))
        .args(args)
        .env("TGVOICE_STATE_DIR", std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let feeding = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && stdin.write_all(&input(i)).is_ok() {
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).unwrap_or_else(|e| panic!("{program} wrote nothing: {e}"));
    drop(stdout);
    let closed = Instant::now();
    let mut status = None;
    while closed.elapsed() < Duration::from_secs(10) {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let secs = closed.elapsed().as_secs_f64();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = feeding.join();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).ok();
    (status.and_then(|s| s.code()), secs, log)
}

fn event_bytes(i: u64) -> Vec<u8> {
    encode(&Frame::Event(Event::new("x-test-tick").with("i", i)))
}

fn assert_quiet_end(program: &str, (code, secs, log): (Option<i32>, f64, String)) {
    println!("{program}: exit {code:?} {secs:.2} s after its reader left");
    assert_eq!(code, Some(0), "{program} did not end with exit 0 after its reader left ({secs:.1} s)\n{log}");
    assert!(secs < 5.0, "{program} took {secs:.1} s to notice its reader left\n{log}");
}

#[test]
fn tgcat_ends_when_its_reader_leaves() {
    assert_quiet_end("tgcat", head_c1("tgcat", &["-"], |_| vec![0u8; 1920]));
}

#[test]
fn vadseg_ends_when_its_reader_leaves() {
    let frames = |i: u64| {
        let audio = Frame::Audio(AudioFrame {
            sample_rate: 48_000,
            channels: 1,
            turn: 0,
            capture_us: tgvoice::clock::now_us(),
            sample_index: i * 960,
            samples: vec![0; 960],
        });
        let mut b = encode(&audio);
        b.extend(event_bytes(i));
        b
    };
    assert_quiet_end("vadseg", head_c1("vadseg", &[], frames));
}

#[test]
fn sttd_ends_when_its_reader_leaves() {
    assert_quiet_end("sttd", head_c1("sttd", &[], event_bytes));
}

#[test]
fn llm_relay_ends_when_its_reader_leaves() {
    assert_quiet_end("llm-relay", head_c1("llm-relay", &["--provider", "local"], event_bytes));
}

#[test]
fn tts_writer_ends_when_its_reader_leaves() {
    assert_quiet_end("tts-writer", head_c1("tts-writer", &["--engine", "espeak-ng"], |_| b"hello there\n".to_vec()));
}

#[test]
fn framecat_ends_when_its_reader_leaves() {
    assert_quiet_end("framecat", head_c1("framecat", &[], event_bytes));
}

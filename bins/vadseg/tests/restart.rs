//! Restarting vadseg mid-call: `tgcat --realtime` writes a generated call into a named FIFO;
//! vadseg reads it; we SIGKILL vadseg in the middle of the second utterance and start a new
//! one on the same FIFO (what the supervisor does). The first instance segments utterance 1;
//! the second segments utterances 3 and 4, each exactly once; at most utterance 2 is lost.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tgvoice::testkit::bin_path;

fn start_vadseg(fifo: &std::path::Path) -> (Child, std::thread::JoinHandle<Vec<u8>>) {
    let mut c = Command::new(bin_path("vadseg"))
        .arg("--input")
        .arg(fifo)
        .env("ORT_DYLIB_PATH", ort_dylib())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = collect(c.stdout.take().unwrap());
    (c, out)
}

#[test]
fn restart_mid_utterance_loses_at_most_that_utterance() {
    let dir = tempfile::tempdir().unwrap();
    let utts = sentences(dir.path());
    let chosen = vec![utts[0].clone(), utts[1].clone(), utts[3].clone(), utts[4].clone()];
    let call = build_call(&chosen, 1.0, &[1.5, 1.8, 1.5], 1.5);
    let wav = dir.path().join("call.wav");
    tgvoice::resample::write_wav_mono(&wav, RATE, &call.samples).unwrap();
    let fifo = dir.path().join("audio.frames");
    tgvoice::fifo::ensure_fifo(&fifo).unwrap();

    let (mut first, first_out) = start_vadseg(&fifo);
    // Let the first instance load the model before audio flows.
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let mut tgcat = Command::new(bin_path("tgcat"))
        .args(["--realtime", "-q", "-o"])
        .arg(&fifo)
        .arg(&wav)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // Kill in the middle of utterance 2.
    let (on2, off2) = call.spans[1];
    let kill_at = Duration::from_secs_f64((on2 + off2) as f64 / 2.0 / RATE as f64);
    std::thread::sleep(kill_at.saturating_sub(t0.elapsed()));
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let (mut second, second_out) = start_vadseg(&fifo);

    assert!(tgcat.wait().unwrap().success());
    // tgcat closing the FIFO is a writer restart for vadseg (it waits for a new writer), so
    // stop it the way the supervisor does, with SIGTERM, once the call has played.
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(second.id() as i32, libc::SIGTERM) }, 0);
    second.wait().unwrap();

    let a = decode_output(&first_out.join().unwrap());
    let b = decode_output(&second_out.join().unwrap());
    // tgcat stamps file input with capture time = its start + sample offset; the first
    // vadseg saw sample 0, so its frames give that start time.
    let seg0 = a.segments.first().expect("first instance segmented nothing");
    let epoch_us = seg0.first_capture_us - seg0.first_index * 1_000_000 / 16_000;
    let to_48k = |us: u64| ((us - epoch_us) as f64 * RATE as f64 / 1e6) as usize;
    let span = |s: &Segment| {
        let a = to_48k(s.first_capture_us);
        (a, a + s.samples * 3)
    };
    let fmt = |o: &Output| o.segments.iter().map(|s| (secs(span(s).0), secs(span(s).1))).collect::<Vec<_>>();
    let report = format!(
        "utterances {:?}; killed at {:.2} s; first instance {:?}; second instance {:?}",
        call.spans.iter().map(|&(x, y)| (secs(x), secs(y))).collect::<Vec<_>>(),
        kill_at.as_secs_f64(),
        fmt(&a),
        fmt(&b)
    );
    eprintln!("{report}");

    let covers = |s: &Segment, (on, off): (usize, usize)| {
        let (x, y) = span(s);
        x <= on + RATE as usize / 10 && y >= off
    };
    // First instance: utterance 1 exactly once, then at most the start of utterance 2.
    assert!(covers(&a.segments[0], call.spans[0]), "{report}");
    assert!(a.segments.len() <= 2, "{report}");
    // Second instance: utterances 3 and 4 exactly once each; anything before is a piece of
    // utterance 2 (the one that was interrupted).
    for u in [2, 3] {
        let n = b.segments.iter().filter(|s| covers(s, call.spans[u])).count();
        assert_eq!(n, 1, "utterance {} segmented {n} times; {report}", u + 1);
    }
    for s in &b.segments {
        let (x, _) = span(s);
        let inside_u2 = x + RATE as usize / 2 >= call.spans[1].0 && x <= call.spans[1].1;
        assert!(inside_u2 || covers(s, call.spans[2]) || covers(s, call.spans[3]), "unexpected segment; {report}");
        assert!(s.end.is_some(), "{report}");
    }
    // Turn ids stay unique and increasing across the restart.
    let ids: Vec<u64> = a.segments.iter().chain(&b.segments).map(|s| s.turn).collect();
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "turn ids {ids:?}");
}

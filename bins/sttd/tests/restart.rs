//! Restarting sttd mid-turn (under a named FIFO, as the supervisor runs it): the turn in
//! progress is lost at most, and the next turn is transcribed by the new sttd.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tgvoice::event::kind;
use tgvoice::fifo::{ensure_fifo, FifoWriter, WriteOutcome};
use tgvoice::{Endpoint, Event, Frame};

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut buf = vec![];
    for f in frames {
        tgvoice::frame::encode_into(f, &mut buf).expect("test frames are under the cap");
    }
    buf
}

fn spawn_sttd(fifo: &std::path::Path) -> (std::process::Child, crossbeam_channel::Receiver<(Instant, Frame)>) {
    let mut child = Command::new(tgvoice::testkit::bin_path("sttd"))
        .arg("--model")
        .arg(model_path())
        .arg("--input")
        .arg(fifo)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = decode_thread(child.stdout.take().unwrap());
    (child, rx)
}

/// Send pings until this sttd echoes one (it has opened the FIFO and is forwarding).
fn wait_connected(w: &mut FifoWriter, rx: &crossbeam_channel::Receiver<(Instant, Frame)>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        w.write_chunk(&encode(&[Frame::Event(Event::new("x-ping"))]));
        if let Ok((_, Frame::Event(e))) = rx.recv_timeout(Duration::from_millis(200)) {
            if e.kind == "x-ping" {
                while rx.recv_timeout(Duration::from_millis(100)).is_ok() {}
                return;
            }
        }
    }
    panic!("sttd did not start reading its FIFO within 60 s");
}

#[test]
fn restart_mid_turn_loses_that_turn_at_most() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("speech.frames");
    ensure_fifo(&fifo).unwrap();
    let mut w = FifoWriter::open(Endpoint::Path(fifo.clone())).unwrap();

    let first = with_rolls(&speak("What time does the train leave for London", 135));
    let half = first.len() / 2;
    let (mut a, rx_a) = spawn_sttd(&fifo);
    wait_connected(&mut w, &rx_a);
    let mut frames = vec![speech_start(1)];
    frames.extend(audio_frames(1, &first[..half], 0));
    assert_eq!(w.write_chunk(&encode(&frames)), WriteOutcome::Delivered);
    std::thread::sleep(Duration::from_millis(300));
    a.kill().unwrap(); // SIGKILL mid-turn
    a.wait().unwrap();

    let (mut b, rx_b) = spawn_sttd(&fifo);
    wait_connected(&mut w, &rx_b);
    // The rest of turn 1 reaches the new sttd, which never saw its start; then turn 2.
    let mut frames = audio_frames(1, &first[half..], half as u64);
    frames.push(speech_end(1));
    let text = "Turn off the lights before you leave the room";
    frames.extend(segment(2, &speak(text, 135)));
    assert_eq!(w.write_chunk(&encode(&frames)), WriteOutcome::Delivered);

    let mut transcripts = vec![];
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && transcripts.iter().all(|e: &Event| e.turn != Some(2)) {
        if let Ok((_, Frame::Event(e))) = rx_b.recv_timeout(Duration::from_millis(500)) {
            if e.kind == kind::TRANSCRIPT {
                transcripts.push(e);
            }
        }
    }
    // Anything late for turn 1 would arrive right after turn 2's transcript.
    while let Ok((_, f)) = rx_b.recv_timeout(Duration::from_millis(500)) {
        if let Frame::Event(e) = f {
            if e.kind == kind::TRANSCRIPT {
                transcripts.push(e);
            }
        }
    }
    b.kill().unwrap();
    b.wait().unwrap();
    assert_eq!(transcripts.len(), 1, "only turn 2 is transcribed: {transcripts:?}");
    assert_eq!(transcripts[0].turn, Some(2));
    assert!(word_errors(text, transcripts[0].text.as_deref().unwrap()).0 <= 2, "{:?}", transcripts[0].text);
}

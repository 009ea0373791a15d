//! `--unpaced --output-format frames` (the voice-message pipeline): each reply's audio comes out
//! as audio frames carrying its turn id, followed by a `reply-played` event, as fast as the
//! engine makes it.

mod common;
use common::*;
use std::time::Instant;
use tgvoice::frame::FrameDecoder;
use tgvoice::Frame;

const LONG: &str = "This reply is long enough that pacing it in real time would take many seconds, \
so an unpaced writer must finish far sooner than the audio lasts, and every sample must still \
arrive, in order, before the event that closes the reply.";

#[test]
fn unpaced_frames_carry_turn_ids_and_end_each_reply_with_reply_played() {
    require_espeak();
    let state = tempfile::tempdir().unwrap();
    let mut input = chunk(5, 0, LONG);
    input.extend(reply_end(5));
    input.extend(chunk(9, 0, "Short second reply."));
    input.extend(reply_end(9));
    let t0 = Instant::now();
    let out = run_with_input(&["--engine", "espeak-ng", "--unpaced", "--output-format", "frames"], &input, state.path());
    let elapsed = t0.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut decoder = FrameDecoder::new();
    decoder.push(&out.stdout);
    // (turn, samples) per reply, closed by its reply-played event
    let mut replies: Vec<(u64, usize, serde_json::Value)> = vec![];
    let (mut turn, mut count, mut index) = (None, 0usize, 0u64);
    while let Some(f) = decoder.next() {
        match f.expect("a valid frame stream") {
            Frame::Audio(a) => {
                assert_eq!((a.sample_rate, a.channels), (48_000, 1));
                assert_eq!(a.sample_index, index, "sample_index runs on without gaps");
                index += a.samples.len() as u64;
                assert_ne!(a.turn, 0, "audio without a turn id");
                assert!(turn.is_none() || turn == Some(a.turn), "audio of turn {} inside reply {turn:?}", a.turn);
                turn = Some(a.turn);
                count += a.samples.len();
            }
            Frame::Event(e) => {
                assert_eq!(e.kind, "reply-played", "{e:?}");
                assert_eq!(e.turn, turn, "reply-played must follow its own audio");
                replies.push((e.turn.unwrap(), count, serde_json::to_value(&e).unwrap()));
                (turn, count) = (None, 0);
            }
        }
    }
    assert!(decoder.finish().is_none(), "the stream ends on a frame boundary");
    assert_eq!(replies.iter().map(|r| r.0).collect::<Vec<_>>(), vec![5, 9]);
    for (turn, samples, ev) in &replies {
        let ms = *samples as f64 / 48.0;
        assert!((ev["played_ms"].as_f64().unwrap() - ms).abs() < 0.2, "turn {turn}: {ev} vs {ms:.1} ms of frames");
        assert_eq!(ev["cancelled"], false);
    }
    assert_eq!(replies[0].2["played_text"], LONG);
    let audio_s = (replies[0].1 + replies[1].1) as f64 / 48_000.0;
    assert!(audio_s > 10.0, "{audio_s:.1} s of speech");
    // Paced, this would take at least audio_s; unpaced it is bounded by synthesis (espeak-ng RTF ~0.01).
    assert!(elapsed < audio_s / 2.0, "took {elapsed:.1} s for {audio_s:.1} s of audio: still paced?");
}

#[test]
fn raw_output_is_unchanged_by_default() {
    require_espeak();
    let state = tempfile::tempdir().unwrap();
    let out = run_with_input(&["--engine", "espeak-ng", "--unpaced"], b"Hello there.\n", state.path());
    assert!(out.status.success());
    assert!(!out.stdout.starts_with(b"TGVF"), "raw PCM expected without --output-format frames");
    assert!(samples(&out.stdout).len() > 48_000 / 2);
}

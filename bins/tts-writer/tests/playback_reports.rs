//! `--played PATH` (the played.frames link to llm-relay): while a reply's audio is written,
//! `reply-progress {turn, played_ms}` at its first audio and every 500 ms of audio; when it
//! ends, its `reply-played` record. llm-relay takes "is a reply playing?" from these.

mod common;
use common::*;
use tgvoice::frame::FrameDecoder;
use tgvoice::{Event, Frame};

#[test]
fn progress_every_half_second_of_audio_then_the_reply_played() {
    require_espeak();
    let dir = tempfile::tempdir().unwrap();
    let (played, reader) = fifo_read_to_end(dir.path(), "played.frames");
    let text = "This reply lasts a few seconds, so that its progress is reported several times over.";
    let mut input = chunk(8, 0, text);
    input.extend(reply_end(8));
    let args = ["--engine", "espeak-ng", "--unpaced", "--played", played.to_str().unwrap()];
    let out = run_with_input(&args, &input, dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let audio_ms = samples(&out.stdout).len() as f64 / 48.0;

    let mut decoder = FrameDecoder::new();
    decoder.push(&reader.join().unwrap());
    let mut events: Vec<Event> = vec![];
    while let Some(f) = decoder.next() {
        match f.expect("a valid frame stream") {
            Frame::Event(e) => events.push(e),
            other => panic!("only events on the played link: {other:?}"),
        }
    }
    let (last, progress) = events.split_last().expect("events");
    assert!(last.is("reply-played") && last.turn == Some(8), "{last:?}");
    assert_eq!(last.get_bool("cancelled"), Some(false));
    assert_eq!(last.get_str("played_text"), Some(text));
    let ms: Vec<f64> = progress
        .iter()
        .map(|e| {
            assert!(e.is("reply-progress") && e.turn == Some(8), "{e:?}");
            e.get_u64("played_ms").expect("played_ms") as f64
        })
        .collect();
    assert!(ms[0] <= 20.0, "the first report comes with the first audio: {ms:?}");
    assert!(ms.windows(2).all(|w| (w[1] - w[0] - 500.0).abs() <= 20.0), "every 500 ms of audio: {ms:?}");
    assert!(audio_ms - ms.last().unwrap() <= 520.0, "{ms:?} for {audio_ms:.0} ms of audio");
    assert!(ms.len() >= 5, "{ms:?}");
}

//! `--line PATH` (the line.frames link to the line owner): llm-relay's call control
//! (`hangup`, `transfer`) goes out once the audio of the replies before it is written; with
//! `--output-format frames` it is also in the output, after the reply's audio and
//! `reply-played` (fifo-layout.md "Call control").

mod common;
use common::*;
use tgvoice::frame::FrameDecoder;
use tgvoice::{Event, Frame};

fn decode(bytes: &[u8]) -> Vec<Frame> {
    let mut decoder = FrameDecoder::new();
    decoder.push(bytes);
    std::iter::from_fn(|| decoder.next()).map(|f| f.expect("a valid frame stream")).collect()
}

#[test]
fn hangup_goes_to_the_line_link_after_the_goodbye_audio() {
    require_espeak();
    let dir = tempfile::tempdir().unwrap();
    let (line, reader) = fifo_read_to_end(dir.path(), "line.frames");
    let mut input = chunk(8, 0, "Goodbye, and take care.");
    input.extend(reply_end(8));
    input.extend(event_bytes(Event::new("hangup").with_turn(8).with("reason", "assistant")));
    input.extend(chunk(9, 0, "Not after the hangup."));
    input.extend(reply_end(9));
    let args = ["--engine", "espeak-ng", "--unpaced", "--output-format", "frames", "--line", line.to_str().unwrap()];
    let out = run_with_input(&args, &input, dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let on_link: Vec<Event> = decode(&reader.join().unwrap())
        .into_iter()
        .map(|f| match f {
            Frame::Event(e) => e,
            other => panic!("only events on the line link: {other:?}"),
        })
        .collect();
    assert_eq!(on_link.len(), 1, "{on_link:?}");
    assert!(on_link[0].is("hangup") && on_link[0].turn == Some(8), "{on_link:?}");
    assert_eq!(on_link[0].get_str("reason"), Some("assistant"));

    // In the framed output: every audio frame of turn 8, its reply-played, then the hangup;
    // the hangup does not hold back the next reply.
    let frames = decode(&out.stdout);
    let at = |pred: &dyn Fn(&Frame) -> bool| frames.iter().position(pred).expect("present");
    let hangup = at(&|f| matches!(f, Frame::Event(e) if e.is("hangup")));
    let played = at(&|f| matches!(f, Frame::Event(e) if e.is("reply-played") && e.turn == Some(8)));
    let last_audio_8 = frames.iter().rposition(|f| matches!(f, Frame::Audio(a) if a.turn == 8)).unwrap();
    assert!(last_audio_8 < played && played < hangup, "audio {last_audio_8}, reply-played {played}, hangup {hangup}");
    assert!(frames.iter().any(|f| matches!(f, Frame::Audio(a) if a.turn == 9)));
}

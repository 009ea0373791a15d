//! The input side: frames (reply-chunk, reply-end, speech-start, cancel, …) or plain text lines.
//!
//! Read with the workspace's one frame reader, [`FrameSource`] in [`Mode::FramesOrText`]: a
//! frame stream starts with the magic "TGVF"; anything else is read as lines, each line a reply
//! of its own (so `echo hi | tts-writer` speaks), and each new FIFO writer is sniffed again.
//! Runs on its own thread, handing each item straight to a handler on that thread (no extra
//! hop), so a cancel reaches the player while synthesis is busy.

use anyhow::Result;
use tgvoice::fifo::Endpoint;
use tgvoice::source::{FrameSource, Item, Mode};
use tgvoice::{Event, Frame};

#[derive(Debug)]
pub enum Incoming {
    Event(Event),
    /// One line of plain text.
    Line(String),
    /// The writer of the input FIFO went away (it will be re-opened).
    WriterGone,
    /// End of stdin or file.
    End,
}

/// Start reading `endpoint` on a thread that calls `handler` for every item (the last one is
/// [`Incoming::End`]).
pub fn spawn(endpoint: Endpoint, mut handler: impl FnMut(Incoming) + Send + 'static) -> Result<std::thread::JoinHandle<()>> {
    let mut source = FrameSource::open_with(endpoint, Mode::FramesOrText)?;
    let run = move || {
        let mut audio_frames_ignored = 0u64;
        loop {
            match source.try_next_item() {
                Ok(Some(Item::Frame(Frame::Event(e)))) => handler(Incoming::Event(e)),
                Ok(Some(Item::Frame(Frame::Audio(_)))) => {
                    audio_frames_ignored += 1;
                    if audio_frames_ignored == 1 {
                        log::warn!("{} carries audio frames; tts-writer speaks text and ignores them", source.label());
                    }
                }
                Ok(Some(Item::Line(text))) => handler(Incoming::Line(text)),
                Ok(Some(Item::WriterGone)) => handler(Incoming::WriterGone),
                Ok(None) => break,
                Err(e) => {
                    log::error!("{e:#}");
                    break;
                }
            }
        }
        handler(Incoming::End);
    };
    Ok(std::thread::Builder::new().name("input".into()).spawn(run)?)
}

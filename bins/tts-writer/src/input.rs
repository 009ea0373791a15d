//! The input side: frames (reply-chunk, reply-end, speech-start, cancel, …) or plain text lines.
//!
//! The first bytes decide: a frame stream starts with the magic "TGVF"; anything else that
//! looks like text is read as lines, each line a reply of its own (so `echo hi | tts-writer`
//! speaks). The sniff happens before a decoder sees the bytes, so text never produces
//! "bad frame" noise. On a named FIFO whose writer restarts, the next writer is sniffed again.
//! Runs on its own thread, handing each item straight to a handler on that thread (no extra
//! hop), so a cancel reaches the player while synthesis is busy.

use anyhow::Result;
use tgvoice::fifo::{ByteInput, Endpoint, ReadOutcome};
use tgvoice::frame::{FrameDecoder, InputGuess, MAGIC};
use tgvoice::source::BadInputLog;
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

#[derive(PartialEq, Eq, Debug, Clone, Copy)]
enum Mode {
    Sniffing,
    Frames,
    Text,
}

struct InputReader {
    input: ByteInput,
    label: String,
    mode: Mode,
    pending: Vec<u8>,
    decoder: FrameDecoder,
    errors: BadInputLog,
    audio_frames_ignored: u64,
    handler: Box<dyn FnMut(Incoming) + Send>,
}

/// Start reading `endpoint` on a thread that calls `handler` for every item (the last one is
/// [`Incoming::End`]).
pub fn spawn(endpoint: Endpoint, handler: impl FnMut(Incoming) + Send + 'static) -> Result<std::thread::JoinHandle<()>> {
    let label = endpoint.describe("stdin");
    let input = ByteInput::open(endpoint)?;
    let mut reader = InputReader {
        input,
        errors: BadInputLog::new(label.clone()),
        label,
        mode: Mode::Sniffing,
        pending: vec![],
        decoder: FrameDecoder::new(),
        audio_frames_ignored: 0,
        handler: Box::new(handler),
    };
    Ok(std::thread::Builder::new().name("input".into()).spawn(move || reader.run())?)
}

impl InputReader {
    fn run(&mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.input.read(&mut buf) {
                Ok(ReadOutcome::Data(n)) => self.push(&buf[..n]),
                Ok(ReadOutcome::WriterGone) => {
                    self.finish();
                    log::info!("writer of {} went away; waiting for it to return", self.label);
                    self.mode = Mode::Sniffing;
                    (self.handler)(Incoming::WriterGone);
                }
                Ok(ReadOutcome::End) => {
                    self.finish();
                    (self.handler)(Incoming::End);
                    return;
                }
                Err(e) => {
                    log::error!("cannot read {}: {e}", self.label);
                    self.finish();
                    (self.handler)(Incoming::End);
                    return;
                }
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        match self.mode {
            Mode::Frames => self.decoder.push(bytes),
            _ => self.pending.extend_from_slice(bytes),
        }
        if self.mode == Mode::Sniffing {
            self.sniff(false);
        }
        self.drain();
    }

    /// Decide frames or text from the first bytes (at `end`, decide with what there is).
    fn sniff(&mut self, end: bool) {
        let n = self.pending.len().min(MAGIC.len());
        if self.pending.is_empty() || (!end && n < MAGIC.len() && self.pending[..n] == MAGIC[..n]) {
            return; // could still become "TGVF"
        }
        if self.pending.starts_with(&MAGIC) {
            log::debug!("{} carries frames", self.label);
            self.mode = Mode::Frames;
            self.decoder = FrameDecoder::new();
            let bytes = std::mem::take(&mut self.pending);
            self.decoder.push(&bytes);
            return;
        }
        let guess = InputGuess::of(&self.pending[..self.pending.len().min(4096)]);
        if guess != InputGuess::Text {
            log::warn!(
                "{} starts with {}, not frames or text; reading it as text lines anyway (expected reply frames from llm-relay or plain text)",
                self.label,
                guess.describe()
            );
        } else {
            log::debug!("{} carries plain text lines", self.label);
        }
        self.mode = Mode::Text;
    }

    fn drain(&mut self) {
        match self.mode {
            Mode::Sniffing => {}
            Mode::Frames => {
                while let Some(r) = self.decoder.next() {
                    match r {
                        Ok(Frame::Event(e)) => {
                            (self.handler)(Incoming::Event(e));
                        }
                        Ok(Frame::Audio(_)) => {
                            self.audio_frames_ignored += 1;
                            if self.audio_frames_ignored == 1 {
                                log::warn!("{} carries audio frames; tts-writer speaks text and ignores them", self.label);
                            }
                        }
                        Err(e) => self.errors.report(&e),
                    }
                }
            }
            Mode::Text => {
                while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.pending.drain(..=pos).collect();
                    self.send_line(&line);
                }
                if self.pending.len() > 64 * 1024 {
                    let line = std::mem::take(&mut self.pending);
                    self.send_line(&line);
                }
            }
        }
    }

    fn send_line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if !text.is_empty() {
            (self.handler)(Incoming::Line(text.to_string()));
        }
    }

    /// The writer is gone or the input ended: decide, drain and flush what is left.
    fn finish(&mut self) {
        if self.mode == Mode::Sniffing {
            self.sniff(true);
        }
        self.drain();
        match self.mode {
            Mode::Frames => {
                if let Some(e) = self.decoder.finish() {
                    self.errors.report(&e);
                }
                self.decoder = FrameDecoder::new();
            }
            Mode::Text => {
                let rest = std::mem::take(&mut self.pending);
                self.send_line(&rest);
            }
            Mode::Sniffing => {}
        }
    }
}

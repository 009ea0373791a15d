//! [`FrameSource`]: a stage's framed input.
//!
//! Reads stdin, a file or a named FIFO through [`ByteInput`], decodes with [`FrameDecoder`],
//! logs bad input (rate-limited, one clear line each) and skips it, and on a FIFO survives its
//! writer restarting (the partial frame is dropped). [`FrameSource::spawn`] runs it on a thread
//! and hands frames over a channel, so a stage busy with inference still sees urgent events.

use crate::fifo::{ByteInput, Endpoint, ReadOutcome};
use crate::frame::{DecodeError, Frame, FrameDecoder};
use anyhow::Result;
use crossbeam_channel::{unbounded, Receiver};
use crate::log::LogLimit;

/// What the source delivers besides frames.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Frame(Frame),
    /// The writer of the input FIFO went away (it will be re-opened).
    WriterGone,
}

pub struct FrameSource {
    input: ByteInput,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    label: String,
    pending: std::collections::VecDeque<Input>,
    errors: BadInputLog,
    ended: bool,
}

impl FrameSource {
    pub fn open(endpoint: Endpoint) -> Result<Self> {
        let label = endpoint.describe("stdin");
        Ok(FrameSource {
            input: ByteInput::open(endpoint)?,
            decoder: FrameDecoder::new(),
            buf: vec![0; 64 * 1024],
            label: label.clone(),
            pending: Default::default(),
            errors: BadInputLog::new(label),
            ended: false,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Bad-input errors seen so far.
    pub fn error_count(&self) -> u64 {
        self.errors.total
    }

    /// The next frame or writer-gone notice; `None` at the end of stdin/file (or on an
    /// unrecoverable read error, which is logged).
    pub fn next_input(&mut self) -> Option<Input> {
        loop {
            if let Some(x) = self.pending.pop_front() {
                return Some(x);
            }
            while let Some(r) = self.decoder.next() {
                match r {
                    Ok(f) => return Some(Input::Frame(f)),
                    Err(e) => self.errors.report(&e),
                }
            }
            if self.ended {
                return None;
            }
            match self.input.read(&mut self.buf) {
                Ok(ReadOutcome::Data(n)) => self.decoder.push(&self.buf[..n]),
                Ok(ReadOutcome::WriterGone) => {
                    if let Some(e) = self.decoder.finish() {
                        self.errors.report(&e);
                    }
                    log::info!("writer of {} went away; waiting for it to return", self.label);
                    self.pending.push_back(Input::WriterGone);
                }
                Ok(ReadOutcome::End) => {
                    if let Some(e) = self.decoder.finish() {
                        self.errors.report(&e);
                    }
                    self.ended = true;
                }
                Err(e) => {
                    log::error!("cannot read {}: {e}", self.label);
                    self.ended = true;
                }
            }
        }
    }

    /// The next frame, skipping writer-gone notices.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match self.next_input()? {
                Input::Frame(f) => return Some(f),
                Input::WriterGone => continue,
            }
        }
    }

    /// Read on a thread of its own; the channel closes at end of input.
    pub fn spawn(mut self) -> Receiver<Input> {
        let (tx, rx) = unbounded();
        std::thread::Builder::new()
            .name(format!("source {}", self.label))
            .spawn(move || {
                while let Some(x) = self.next_input() {
                    if tx.send(x).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn reader thread");
        rx
    }
}

impl Iterator for FrameSource {
    type Item = Frame;
    fn next(&mut self) -> Option<Frame> {
        self.next_frame()
    }
}

/// Logs bad input one clear line at a time, a few per kind of error per window
/// ([`LogLimit`]), with suppressed counts.
pub struct BadInputLog {
    label: String,
    pub total: u64,
    limit: LogLimit,
}

impl BadInputLog {
    pub fn new(label: String) -> Self {
        BadInputLog { label, total: 0, limit: LogLimit::new() }
    }

    pub fn report(&mut self, e: &DecodeError) {
        self.total += 1;
        let kind = match e {
            DecodeError::Garbage { .. } => "bad input: garbage",
            DecodeError::Oversize { .. } => "bad input: oversize",
            DecodeError::BadHeader { .. } => "bad input: header",
            DecodeError::BadPayload { .. } => "bad input: payload",
            DecodeError::Truncated { .. } => "bad input: truncated",
        };
        self.limit.log(log::Level::Warn, kind, format_args!("bad input on {}: {e}", self.label));
    }
}

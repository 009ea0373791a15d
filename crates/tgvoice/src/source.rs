//! [`FrameSource`]: a stage's framed input, the one frame reader of the workspace.
//!
//! Reads stdin, a file or a named FIFO through [`ByteInput`], decodes with [`StreamDecoder`],
//! logs bad input (rate-limited, one clear line each) and skips it, and on a FIFO survives its
//! writer restarting (the partial frame is dropped). [`FrameSource::spawn`] runs it on a thread
//! and hands frames over a channel, so a stage busy with inference still sees urgent events.
//!
//! Three [`Mode`]s: plain frames (the stages), frames where bad input before the first frame
//! fails at once (framecat, the inspector), and frames or plain text lines (tts-writer).

use crate::cli::{exit, fail};
use crate::fifo::{ByteInput, Endpoint, ReadOutcome};
use crate::frame::{DecodeError, Frame, FrameDecoder, InputGuess, MAGIC};
use crate::log::LogLimit;
use anyhow::Result;
use crossbeam_channel::{unbounded, Receiver};
use std::collections::VecDeque;

/// How a source reads its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Frames; bad input is logged and skipped, and reading resyncs on the next frame.
    #[default]
    Frames,
    /// As `Frames`, but bad input before the first valid frame means "this is not a frame
    /// stream": fail with exit 65, saying what it looks like, without logging it as bad input.
    FramesStrict,
    /// Frames if the stream starts with the magic "TGVF", else plain text, one [`Item::Line`]
    /// per line (so `echo hi | tts-writer` speaks). The first bytes of each new FIFO writer
    /// decide again. The sniff comes before the decoder, so text never logs "bad frame".
    FramesOrText,
}

/// What the source delivers besides frames.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Frame(Frame),
    /// The writer of the input FIFO went away (it will be re-opened).
    WriterGone,
}

/// What a source delivers in any [`Mode`]: [`Input`] plus text lines.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Frame(Frame),
    /// One line of plain text, trimmed, never empty ([`Mode::FramesOrText`] only).
    Line(String),
    /// The writer of the input FIFO went away (it will be re-opened).
    WriterGone,
}

/// A text "line" longer than this is handed on as it is, so a stream without newlines
/// cannot grow the buffer without end.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrying {
    Undecided,
    Frames,
    Text,
}

/// The byte-to-item half of [`FrameSource`], without I/O: push bytes, tell it the writer went
/// away or the input ended, and pop the items. Errors come only in [`Mode::FramesStrict`].
pub struct StreamDecoder {
    mode: Mode,
    label: String,
    carrying: Carrying,
    /// Bytes not yet decided on (sniffing) or not yet a full line (text).
    text: Vec<u8>,
    decoder: FrameDecoder,
    errors: BadInputLog,
    out: VecDeque<Item>,
}

impl StreamDecoder {
    pub fn new(mode: Mode, label: impl Into<String>) -> Self {
        let label = label.into();
        let carrying = if mode == Mode::FramesOrText { Carrying::Undecided } else { Carrying::Frames };
        StreamDecoder {
            mode,
            errors: BadInputLog::new(label.clone()),
            label,
            carrying,
            text: vec![],
            decoder: FrameDecoder::new(),
            out: VecDeque::new(),
        }
    }

    /// Bad-input errors seen so far.
    pub fn error_count(&self) -> u64 {
        self.errors.total
    }

    /// The next decoded item, if any is ready.
    pub fn pop(&mut self) -> Option<Item> {
        self.out.pop_front()
    }

    /// True if [`pop`](Self::pop) has an item ready.
    pub fn has_items(&self) -> bool {
        !self.out.is_empty()
    }

    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        match self.carrying {
            Carrying::Frames => self.decoder.push(bytes),
            Carrying::Undecided | Carrying::Text => self.text.extend_from_slice(bytes),
        }
        if self.carrying == Carrying::Undecided {
            self.sniff(false);
        }
        self.drain()
    }

    /// The FIFO's writer went away: flush what it left, queue [`Item::WriterGone`], and (in
    /// [`Mode::FramesOrText`]) sniff the next writer afresh.
    pub fn writer_gone(&mut self) -> Result<()> {
        self.finish()?;
        self.out.push_back(Item::WriterGone);
        if self.mode == Mode::FramesOrText {
            self.carrying = Carrying::Undecided;
        }
        Ok(())
    }

    /// End of stdin or file: flush what is left (a partial frame is reported, a last line
    /// without a newline is a line).
    pub fn end(&mut self) -> Result<()> {
        self.finish()
    }

    /// Decide frames or text from the first bytes (at `end`, decide with what there is).
    fn sniff(&mut self, end: bool) {
        let n = self.text.len().min(MAGIC.len());
        if self.text.is_empty() || (!end && n < MAGIC.len() && self.text[..n] == MAGIC[..n]) {
            return; // could still become "TGVF"
        }
        if self.text.starts_with(&MAGIC) {
            log::debug!("{} carries frames", self.label);
            self.carrying = Carrying::Frames;
            self.decoder = FrameDecoder::new();
            let bytes = std::mem::take(&mut self.text);
            self.decoder.push(&bytes);
            return;
        }
        let guess = InputGuess::of(&self.text[..self.text.len().min(4096)]);
        if guess != InputGuess::Text {
            log::warn!(
                "{} starts with {}, not frames or text; reading it as text lines anyway (expected reply frames from llm-relay or plain text)",
                self.label,
                guess.describe()
            );
        } else {
            log::debug!("{} carries plain text lines", self.label);
        }
        self.carrying = Carrying::Text;
    }

    fn drain(&mut self) -> Result<()> {
        match self.carrying {
            Carrying::Undecided => {}
            Carrying::Frames => {
                while let Some(r) = self.decoder.next() {
                    match r {
                        Ok(f) => self.out.push_back(Item::Frame(f)),
                        Err(e) => self.bad_input(&e)?,
                    }
                }
            }
            Carrying::Text => {
                while let Some(pos) = self.text.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.text.drain(..=pos).collect();
                    self.line(&line);
                }
                if self.text.len() > MAX_LINE {
                    let line = std::mem::take(&mut self.text);
                    self.line(&line);
                }
            }
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if !text.is_empty() {
            self.out.push_back(Item::Line(text.to_string()));
        }
    }

    fn finish(&mut self) -> Result<()> {
        if self.carrying == Carrying::Undecided {
            self.sniff(true);
        }
        self.drain()?;
        match self.carrying {
            Carrying::Frames => {
                if let Some(e) = self.decoder.finish() {
                    self.bad_input(&e)?;
                }
            }
            Carrying::Text => {
                let rest = std::mem::take(&mut self.text);
                self.line(&rest);
            }
            Carrying::Undecided => {}
        }
        Ok(())
    }

    fn bad_input(&mut self, e: &DecodeError) -> Result<()> {
        if self.mode == Mode::FramesStrict && !self.decoder.seen_frame() {
            return Err(not_a_stream(e, &self.label));
        }
        self.errors.report(e);
        Ok(())
    }
}

/// Before the first valid frame, bad input means "this is not a frame stream" (exit 65).
fn not_a_stream(e: &DecodeError, label: &str) -> anyhow::Error {
    let what = match e {
        DecodeError::Garbage { looks_like, .. } => {
            format!("it looks like {}; {}", looks_like.describe(), looks_like.advice())
        }
        DecodeError::Truncated { .. } => "it ends inside the first frame".to_string(),
        other => other.to_string(),
    };
    fail(exit::DATA, format!("{label} is not a tgvoice frame stream: {what}"))
}

pub struct FrameSource {
    input: ByteInput,
    decoder: StreamDecoder,
    buf: Vec<u8>,
    label: String,
    ended: bool,
    /// A read error, returned once the items before it are delivered.
    failed: Option<anyhow::Error>,
}

impl FrameSource {
    /// A source in [`Mode::Frames`].
    pub fn open(endpoint: Endpoint) -> Result<Self> {
        Self::open_with(endpoint, Mode::Frames)
    }

    pub fn open_with(endpoint: Endpoint, mode: Mode) -> Result<Self> {
        let label = endpoint.describe("stdin");
        Ok(FrameSource {
            input: ByteInput::open(endpoint)?,
            decoder: StreamDecoder::new(mode, label.clone()),
            buf: vec![0; 64 * 1024],
            label,
            ended: false,
            failed: None,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Bad-input errors seen so far.
    pub fn error_count(&self) -> u64 {
        self.decoder.error_count()
    }

    /// True if the next item is already decoded, so asking for it will not block. A reader
    /// that buffers its output flushes when this is false, to show a live FIFO as it flows.
    pub fn has_buffered(&self) -> bool {
        self.decoder.has_items()
    }

    /// The next item; `Ok(None)` at the end of stdin/file. Errors: a read error (after the
    /// items before it), or in [`Mode::FramesStrict`] input that is not a frame stream.
    pub fn try_next_item(&mut self) -> Result<Option<Item>> {
        loop {
            if let Some(x) = self.decoder.pop() {
                return Ok(Some(x));
            }
            if self.ended {
                return self.failed.take().map_or(Ok(None), Err);
            }
            match self.input.read(&mut self.buf) {
                Ok(ReadOutcome::Data(n)) => self.decoder.push(&self.buf[..n])?,
                Ok(ReadOutcome::WriterGone) => {
                    log::info!("writer of {} went away; waiting for it to return", self.label);
                    self.decoder.writer_gone()?;
                }
                Ok(ReadOutcome::End) => {
                    self.ended = true;
                    self.decoder.end()?;
                }
                Err(e) => {
                    self.ended = true;
                    self.failed = Some(anyhow::anyhow!("cannot read {}: {e}", self.label));
                    // Still hand on what was read (a last text line); the read error wins.
                    let _ = self.decoder.end();
                }
            }
        }
    }

    /// The next frame or writer-gone notice; `None` at the end of stdin/file (or on an
    /// unrecoverable error, which is logged).
    pub fn next_input(&mut self) -> Option<Input> {
        match self.try_next_item() {
            Ok(Some(Item::Frame(f))) => Some(Input::Frame(f)),
            Ok(Some(Item::WriterGone)) => Some(Input::WriterGone),
            Ok(Some(Item::Line(_))) => unreachable!("only Mode::FramesOrText gives lines; read it with try_next_item"),
            Ok(None) => None,
            Err(e) => {
                log::error!("{e:#}");
                None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ExitError;
    use crate::frame::encode;
    use crate::Event;

    fn event(kind: &str, turn: u64) -> Vec<u8> {
        encode(&Frame::Event(Event::new(kind).with_turn(turn)))
    }

    fn items(d: &mut StreamDecoder) -> Vec<String> {
        std::iter::from_fn(|| d.pop())
            .map(|i| match i {
                Item::Frame(Frame::Event(e)) => format!("event {}", e.kind),
                Item::Frame(Frame::Audio(_)) => "audio".into(),
                Item::Line(l) => format!("line {l}"),
                Item::WriterGone => "writer gone".into(),
            })
            .collect()
    }

    /// Push `bytes` one byte at a time: every split point must give the same items.
    fn push_bytewise(d: &mut StreamDecoder, bytes: &[u8]) {
        for b in bytes {
            d.push(std::slice::from_ref(b)).unwrap();
        }
    }

    /// Decode all of `bytes` (byte by byte) to the end: the items and the bad-input count.
    fn decode_all(mode: Mode, bytes: &[u8]) -> (Vec<String>, u64) {
        let mut d = StreamDecoder::new(mode, "test");
        push_bytewise(&mut d, bytes);
        d.end().unwrap();
        (items(&mut d), d.error_count())
    }

    fn exit_code(e: &anyhow::Error) -> Option<i32> {
        e.downcast_ref::<ExitError>().map(|x| x.code)
    }

    #[test]
    fn frames_resync_after_garbage_and_report_it() {
        let s = [event("a", 1), b"some garbage between frames".to_vec(), event("b", 2)].concat();
        assert_eq!(decode_all(Mode::Frames, &s), (vec!["event a".to_string(), "event b".to_string()], 1));
    }

    #[test]
    fn frames_report_a_truncated_end_and_keep_what_came_before() {
        let mut d = StreamDecoder::new(Mode::Frames, "test");
        let mut s = event("a", 1);
        let b = event("b", 2);
        s.extend(&b[..b.len() - 3]);
        d.push(&s).unwrap();
        assert_eq!(d.error_count(), 0, "a partial frame is not an error until the input ends");
        d.end().unwrap();
        assert_eq!(items(&mut d), ["event a"]);
        assert_eq!(d.error_count(), 1);
    }

    #[test]
    fn frames_drop_the_partial_frame_when_the_writer_goes_and_read_the_next_one() {
        let mut d = StreamDecoder::new(Mode::Frames, "test");
        let a = event("a", 1);
        d.push(&a[..a.len() - 2]).unwrap();
        d.writer_gone().unwrap();
        d.push(&event("b", 2)).unwrap();
        assert_eq!(items(&mut d), ["writer gone", "event b"]);
        assert_eq!(d.error_count(), 1);
    }

    #[test]
    fn strict_fails_with_65_when_the_input_is_not_frames() {
        for (bytes, expect) in [
            (b"hello there\nthis is text\n".to_vec(), "text"),
            (event("a", 1)[..10].to_vec(), "ends inside the first frame"),
        ] {
            let mut d = StreamDecoder::new(Mode::FramesStrict, "stdin");
            let err = d.push(&bytes).and_then(|_| d.end()).unwrap_err();
            assert_eq!(exit_code(&err), Some(exit::DATA), "{err}");
            let msg = err.to_string();
            assert!(msg.contains("stdin is not a tgvoice frame stream") && msg.contains(expect), "{msg}");
            assert_eq!(d.error_count(), 0, "the failure is the one message, not a bad-input line too");
        }
    }

    #[test]
    fn strict_skips_garbage_after_the_first_frame() {
        let s = [event("a", 1), b"garbage".to_vec(), event("b", 2), event("c", 3)[..8].to_vec()].concat();
        assert_eq!(decode_all(Mode::FramesStrict, &s), (vec!["event a".to_string(), "event b".to_string()], 2));
    }

    #[test]
    fn frames_or_text_reads_text_as_trimmed_lines() {
        let mut d = StreamDecoder::new(Mode::FramesOrText, "test");
        push_bytewise(&mut d, b"Hello there.\n\n   \n  Second line  \nno newline at the end");
        assert_eq!(items(&mut d), ["line Hello there.", "line Second line"]);
        d.end().unwrap();
        assert_eq!(items(&mut d), ["line no newline at the end"]);
        assert_eq!(d.error_count(), 0);
    }

    #[test]
    fn frames_or_text_waits_for_the_magic_then_reads_frames() {
        let s = [event("a", 1), event("b", 2)].concat();
        let mut d = StreamDecoder::new(Mode::FramesOrText, "test");
        d.push(&s[..2]).unwrap(); // "TG": could still be frames
        assert!(!d.has_items() && d.carrying == Carrying::Undecided);
        // Byte by byte: no split point makes the start look like text.
        assert_eq!(decode_all(Mode::FramesOrText, &s), (vec!["event a".to_string(), "event b".to_string()], 0));
    }

    #[test]
    fn frames_or_text_decides_short_text_at_the_end() {
        assert_eq!(decode_all(Mode::FramesOrText, b"TG"), (vec!["line TG".to_string()], 0));
    }

    #[test]
    fn frames_or_text_sniffs_each_new_writer() {
        let mut d = StreamDecoder::new(Mode::FramesOrText, "test");
        d.push(&event("a", 1)).unwrap();
        d.writer_gone().unwrap();
        d.push(b"now text\n").unwrap();
        d.writer_gone().unwrap();
        d.push(&event("b", 2)).unwrap();
        d.end().unwrap();
        assert_eq!(items(&mut d), ["event a", "writer gone", "line now text", "writer gone", "event b"]);
    }

    #[test]
    fn frames_or_text_hands_on_an_endless_line_in_pieces() {
        let mut d = StreamDecoder::new(Mode::FramesOrText, "test");
        d.push(&vec![b'x'; MAX_LINE + 1]).unwrap();
        let got: Vec<Item> = std::iter::from_fn(|| d.pop()).collect();
        assert!(matches!(&got[..], [Item::Line(l)] if l.len() == MAX_LINE + 1), "{}", got.len());
    }

    #[test]
    fn source_reads_a_file_in_each_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, b"just text\n").unwrap();
        let open = |mode| FrameSource::open_with(Endpoint::Path(path.clone()), mode).unwrap();

        let mut text = open(Mode::FramesOrText);
        assert_eq!(text.try_next_item().unwrap(), Some(Item::Line("just text".into())));
        assert_eq!(text.try_next_item().unwrap(), None);

        let err = open(Mode::FramesStrict).try_next_item().unwrap_err();
        assert_eq!(exit_code(&err), Some(exit::DATA), "{err}");

        let mut lenient = open(Mode::Frames);
        assert_eq!(lenient.next_input(), None);
        assert_eq!(lenient.error_count(), 1);
    }
}

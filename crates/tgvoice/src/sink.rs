//! [`FrameSink`]: a stage's framed output — a bounded queue drained by its own thread.
//!
//! The stage calls [`FrameSink::send`], which never blocks: frames go into an in-memory queue
//! and a writer thread delivers them through a [`FifoWriter`] (dropping while there is no
//! reader) and mirrors them into the link's [`Tap`]. Urgent events (speech-start, cancel)
//! overtake queued frames. On overflow the oldest *audio* frame is dropped and counted; events
//! have their own bound. Policy documented in fifo-layout.md §3.

use crate::fifo::{Endpoint, FifoWriter, Tap, WriteOutcome};
use crate::frame::Frame;
use crate::render::{Format, Renderer, TextView};
use crate::log::LogLimit;
use anyhow::Result;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Default bound on queued audio bytes (~85 s of 48 kHz mono s16).
pub const DEFAULT_QUEUE_BYTES: usize = 8 << 20;
/// Bound on queued events.
pub const EVENT_QUEUE_LEN: usize = 4096;

/// What a link's tap carries (fifo-layout.md §1 "Taps").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapFormat {
    /// Audio payloads as raw s16le PCM (for ffplay).
    Pcm,
    /// Events as JSON lines (for cat/jq).
    JsonLines,
}

#[derive(Default)]
struct Queue {
    urgent: VecDeque<Frame>,
    ordered: VecDeque<Frame>,
    audio_bytes: usize,
    events: usize,
    dropped_audio: u64,
    dropped_events: u64,
    closing: bool,
    /// Frames handed to the writer but not yet written (for flush).
    in_flight: usize,
    /// stdout closed (downstream pipeline ended).
    closed: bool,
    log: LogLimit,
}

impl Queue {
    /// Account for a frame leaving either queue (written, dropped or filtered out), so the
    /// counters stay exact however long the stage runs.
    fn forget(&mut self, f: &Frame) {
        match f {
            Frame::Audio(a) => self.audio_bytes -= a.samples.len() * 2,
            Frame::Event(_) => self.events -= 1,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    pub delivered: u64,
    pub dropped_no_reader: u64,
    pub dropped_overflow: u64,
    /// Frames that could not be encoded (an event that grew over the 1 MiB cap).
    pub dropped_too_large: u64,
    pub queued: usize,
    /// Longest time the writer thread spent on one frame in `Tap::mirror` (µs): the tap must
    /// never hold the link, so this stays tiny whatever the tap reader does.
    pub max_tap_us: u64,
    /// Longest time spent in `FifoWriter::write_chunk` for one frame (µs): a slow reader.
    pub max_write_us: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    stats: Mutex<SinkStats>,
}

pub struct FrameSink {
    handle: SinkHandle,
    thread: Option<JoinHandle<()>>,
}

/// A cheap, clonable handle that can queue frames from any thread.
#[derive(Clone)]
pub struct SinkHandle {
    shared: Arc<Shared>,
    max_audio_bytes: usize,
    label: Arc<str>,
}

impl FrameSink {
    /// Open a framed output that carries frames whatever it is. `tap`: explicit tap path, or
    /// `None` for the conventional `<stem>.tap` beside a FIFO output (used only if that FIFO
    /// exists).
    pub fn open(endpoint: Endpoint, tap: Option<PathBuf>, tap_format: TapFormat) -> Result<Self> {
        Self::open_as(endpoint, tap, tap_format, Some(Format::Frames), TextView::Events)
    }

    /// Open a program's output in `format`, or when `None` by what the output is: text (as
    /// `view`) to a terminal, frames to a pipe, FIFO or file (see [`crate::render`]).
    pub fn open_as(endpoint: Endpoint, tap: Option<PathBuf>, tap_format: TapFormat, format: Option<Format>, view: TextView) -> Result<Self> {
        let writer = FifoWriter::open(endpoint.clone())?;
        let format = Format::resolve(format, writer.is_terminal());
        if format != Format::Frames {
            log::info!("writing {} as {} (--format frames for the frame stream)", writer.label(), format.name());
        }
        let renderer = Renderer::new(format, view);
        let tap_path = tap.or_else(|| match &endpoint {
            Endpoint::Path(p) if writer.is_fifo() => Some(Tap::path_for(p)),
            _ => None,
        });
        let label = writer.label().to_string();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            stats: Mutex::new(SinkStats::default()),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sink {label}"))
            .spawn(move || writer_loop(thread_shared, writer, renderer, tap_path.map(Tap::new), tap_format))?;
        let handle = SinkHandle { shared, max_audio_bytes: DEFAULT_QUEUE_BYTES, label: label.into() };
        Ok(FrameSink { handle, thread: Some(thread) })
    }

    pub fn with_queue_bytes(mut self, bytes: usize) -> Self {
        self.handle.max_audio_bytes = bytes;
        self
    }

    /// A handle for queuing frames from other threads.
    pub fn handle(&self) -> SinkHandle {
        self.handle.clone()
    }

    pub fn label(&self) -> &str {
        &self.handle.label
    }

    /// Queue a frame for delivery. Never blocks on the reader.
    pub fn send(&self, frame: Frame) {
        self.handle.send(frame)
    }

    pub fn stats(&self) -> SinkStats {
        self.handle.stats()
    }

    /// True once stdout's reader has gone (the downstream pipeline ended).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Keep only the queued (not yet written) frames for which `keep` is true — e.g. drop a
    /// cancelled turn's audio after a barge-in.
    pub fn retain(&self, keep: impl FnMut(&Frame) -> bool) {
        self.handle.retain(keep)
    }

    /// Deliver everything queued (or drop it if no reader), then stop the writer thread.
    pub fn finish(mut self) -> SinkStats {
        self.close();
        self.stats()
    }

    fn close(&mut self) {
        self.handle.shared.queue.lock().unwrap().closing = true;
        self.handle.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where a stage's frames go: a [`FrameSink`] in the program, a `Vec<Frame>` in unit tests
/// (which then read what the stage emitted, in order).
pub trait Output {
    fn send(&mut self, frame: Frame);
    /// The reader has gone for good (stdout closed, e.g. `STAGE | head`): stop.
    fn is_closed(&self) -> bool {
        false
    }
}

impl Output for FrameSink {
    fn send(&mut self, frame: Frame) {
        FrameSink::send(self, frame)
    }
    fn is_closed(&self) -> bool {
        FrameSink::is_closed(self)
    }
}

impl Output for Vec<Frame> {
    fn send(&mut self, frame: Frame) {
        self.push(frame)
    }
}

impl Drop for FrameSink {
    fn drop(&mut self) {
        self.close();
    }
}

impl SinkHandle {
    /// Queue a frame for delivery. Never blocks on the reader.
    pub fn send(&self, frame: Frame) {
        let mut q = self.shared.queue.lock().unwrap();
        match &frame {
            Frame::Audio(a) => {
                q.audio_bytes += a.samples.len() * 2;
                while q.audio_bytes > self.max_audio_bytes {
                    let Some(i) = q.ordered.iter().position(|f| matches!(f, Frame::Audio(_))) else { break };
                    let old = q.ordered.remove(i).expect("found above");
                    q.forget(&old);
                    q.dropped_audio += 1;
                    let n = q.dropped_audio;
                    q.log.log(log::Level::Warn, "audio queue full", format_args!(
                        "output queue for {} is full (reader too slow); dropped {n} oldest audio frames so far",
                        self.label
                    ));
                }
            }
            Frame::Event(_) => {
                q.events += 1;
                if q.events > EVENT_QUEUE_LEN {
                    let ordered = q.ordered.iter().position(|f| matches!(f, Frame::Event(_)));
                    let old = match ordered {
                        Some(i) => q.ordered.remove(i),
                        None => q.urgent.pop_front(),
                    };
                    if let Some(old) = old {
                        q.forget(&old);
                        q.dropped_events += 1;
                        let n = q.dropped_events;
                        q.log.log(log::Level::Warn, "event queue full", format_args!(
                            "event queue for {} is full; dropped {n} oldest events so far",
                            self.label
                        ));
                    }
                }
            }
        }
        if frame.is_urgent() {
            q.urgent.push_back(frame);
        } else {
            q.ordered.push_back(frame);
        }
        drop(q);
        self.shared.wake.notify_one();
    }

    pub fn stats(&self) -> SinkStats {
        let mut s = *self.shared.stats.lock().unwrap();
        let q = self.shared.queue.lock().unwrap();
        s.dropped_overflow = q.dropped_audio + q.dropped_events;
        s.queued = q.urgent.len() + q.ordered.len() + q.in_flight;
        s
    }

    /// True once stdout's reader has gone (the downstream pipeline ended).
    pub fn is_closed(&self) -> bool {
        self.shared.queue.lock().unwrap().closed
    }

    pub fn retain(&self, mut keep: impl FnMut(&Frame) -> bool) {
        let mut q = self.shared.queue.lock().unwrap();
        let before: Vec<Frame> = q.ordered.drain(..).collect();
        for f in before {
            if keep(&f) {
                q.ordered.push_back(f);
            } else {
                q.forget(&f);
            }
        }
    }
}

fn writer_loop(shared: Arc<Shared>, mut writer: FifoWriter, mut renderer: Renderer, mut tap: Option<Tap>, tap_format: TapFormat) {
    let label = writer.label().to_string();
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let frame = {
            let mut q = shared.queue.lock().unwrap();
            loop {
                if let Some(f) = q.urgent.pop_front().or_else(|| q.ordered.pop_front()) {
                    q.forget(&f);
                    break Some(f);
                }
                if q.closing {
                    break None;
                }
                q = shared.wake.wait_timeout(q, Duration::from_millis(200)).unwrap().0;
            }
        };
        let Some(frame) = frame else {
            // What the text format still holds (the last audio summary, an open reply line).
            buf.clear();
            renderer.finish(&mut buf);
            if !buf.is_empty() {
                writer.write_chunk(&buf);
            }
            return;
        };
        buf.clear();
        if let Err(e) = renderer.render(&frame, &mut buf) {
            // Input can grow on re-encoding (`9e9` → `9000000000.0`): drop it, keep the link.
            shared.stats.lock().unwrap().dropped_too_large += 1;
            let what = if matches!(frame, Frame::Audio(_)) { "audio frame" } else { "event" };
            let mut q = shared.queue.lock().unwrap();
            q.log.log(log::Level::Warn, "frame too large", format_args!("dropped an {what} for {label}: {e}"));
            continue;
        }
        shared.queue.lock().unwrap().in_flight = 1;
        let tap_start = std::time::Instant::now();
        if let Some(tap) = tap.as_mut() {
            match (&frame, tap_format) {
                (Frame::Audio(a), TapFormat::Pcm) => tap.mirror(&a.pcm_bytes()),
                (Frame::Event(e), TapFormat::JsonLines) => {
                    let mut line = e.to_json_line();
                    line.push('\n');
                    tap.mirror(line.as_bytes());
                }
                _ => {}
            }
        }
        let write_start = std::time::Instant::now();
        // Text shows some frames only later (audio summaries) or not at all.
        let outcome = if buf.is_empty() { WriteOutcome::Delivered } else { writer.write_chunk(&buf) };
        {
            let mut s = shared.stats.lock().unwrap();
            s.max_tap_us = s.max_tap_us.max((write_start - tap_start).as_micros() as u64);
            s.max_write_us = s.max_write_us.max(write_start.elapsed().as_micros() as u64);
            match outcome {
                WriteOutcome::Delivered => s.delivered += 1,
                WriteOutcome::Dropped | WriteOutcome::Closed => s.dropped_no_reader += 1,
            }
        }
        let mut q = shared.queue.lock().unwrap();
        q.in_flight = 0;
        if outcome == WriteOutcome::Closed {
            q.closed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{kind, Event};

    /// Case 2 of issue 18: urgent events must leave the event count when written, or after
    /// 4096 of them every later event is "over the bound" and dropped.
    #[test]
    fn event_count_returns_to_zero_after_urgent_events() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("text.frames");
        crate::fifo::ensure_fifo(&link).unwrap();
        let sink = FrameSink::open(Endpoint::Path(link), None, TapFormat::JsonLines).unwrap();
        for turn in 0..3 * EVENT_QUEUE_LEN as u64 {
            sink.send(Frame::Event(Event::new(kind::SPEECH_START).with_turn(turn)));
            sink.send(Frame::Event(Event::new(kind::CANCEL)));
            while sink.stats().queued > 0 {
                std::thread::yield_now();
            }
        }
        let stats = sink.stats();
        assert_eq!(stats.dropped_overflow, 0, "{stats:?}");
        assert_eq!(sink.handle.shared.queue.lock().unwrap().events, 0);
    }

    /// Case 1 of issue 18: an event over the cap is dropped and the link carries on.
    #[test]
    fn oversize_event_is_dropped_and_the_next_one_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.frames"); // a regular file: everything is delivered
        let sink = FrameSink::open(Endpoint::Path(out.clone()), None, TapFormat::JsonLines).unwrap();
        let json = format!("{{\"type\":\"x\",\"v\":[{}9e9]}}", "9e9,".repeat(110_000));
        sink.send(Frame::Event(serde_json::from_str(&json).unwrap()));
        sink.send(Frame::Event(Event::new(kind::TRANSCRIPT).with_text("next")));
        let stats = sink.finish();
        assert_eq!((stats.dropped_too_large, stats.delivered), (1, 1), "{stats:?}");
        let mut d = crate::frame::FrameDecoder::new();
        d.push(&std::fs::read(&out).unwrap());
        assert!(matches!(d.next(), Some(Ok(Frame::Event(e))) if e.text.as_deref() == Some("next")));
    }
}

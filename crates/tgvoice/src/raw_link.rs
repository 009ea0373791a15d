//! The bridge's side of a pipeline instance, with the bridge's rules (fifo-layout.md §3): the
//! call's media path never waits on a FIFO. [`RawInputWriter`] writes `tg_input.raw`
//! non-blocking (no reader or full pipe: drop and count) and, as the link's writer, mirrors the
//! caller's audio into its tap `tg_input.tap` while someone reads it; [`RawOutputReader`] polls
//! `tg_output.raw` non-blocking (nothing there: the caller hears silence); [`TapLines`] follows
//! a JSON-lines tap (`text.tap`, `reply.tap`) non-blocking; [`LineEvents`] polls tts-writer's
//! `line.frames` (call control, fifo-layout.md "Call control"). Used by callsim and phone-bridge.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::path::Path;
use std::time::{Duration, Instant};
use serde_json::Value;
use crate::fifo::Tap;

pub struct RawInputWriter {
    path: PathBuf,
    file: Option<File>,
    /// `tg_input.tap`: `voicecall tap tg_input` plays the caller as the pipeline got it.
    tap: Tap,
    next_try: Instant,
    pub dropped_chunks: u64,
    /// Longest wall time one write took (includes being preempted by other processes).
    pub worst_write: Duration,
    /// Longest wall time of a write during which the thread *blocked* (a voluntary context
    /// switch happened: it waited on the FIFO). Being preempted is involuntary and not counted.
    pub worst_blocking_write: Duration,
    pub blocking_writes: u64,
}

/// Voluntary context switches of the calling thread so far.
fn voluntary_switches() -> i64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    ru.ru_nvcsw
}

impl RawInputWriter {
    pub fn new(path: PathBuf) -> Self {
        RawInputWriter {
            tap: Tap::new(Tap::path_for(&path)),
            path,
            file: None,
            next_try: Instant::now(),
            dropped_chunks: 0,
            worst_write: Duration::ZERO,
            worst_blocking_write: Duration::ZERO,
            blocking_writes: 0,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let switches = voluntary_switches();
        let t0 = Instant::now();
        if self.file.is_none() && t0 >= self.next_try {
            self.next_try = t0 + Duration::from_millis(100);
            self.file = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&self.path).ok();
        }
        match self.file.as_mut().map(|f| f.write(bytes)) {
            Some(Ok(n)) if n == bytes.len() => {}
            Some(Ok(_)) => self.dropped_chunks += 1, // partial: the rest is dropped, as a full pipe would
            Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => self.dropped_chunks += 1,
            Some(Err(_)) => {
                self.file = None; // EPIPE: reader gone
                self.dropped_chunks += 1;
            }
            None => self.dropped_chunks += 1,
        }
        let took = t0.elapsed();
        self.worst_write = self.worst_write.max(took);
        if voluntary_switches() != switches {
            self.blocking_writes += 1;
            self.worst_blocking_write = self.worst_blocking_write.max(took);
        }
        // What the caller said, whether or not tgcat took it (as tg-bridge's tap does). Never
        // blocks: one stat every 250 ms while nobody taps, whole chunks dropped for a slow reader.
        self.tap.mirror(bytes);
    }
}

pub struct RawOutputReader {
    file: File,
}

impl RawOutputReader {
    pub fn open(path: PathBuf) -> std::io::Result<Self> {
        // O_NONBLOCK read-open of a FIFO succeeds at once, writer or not.
        let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
        Ok(RawOutputReader { file })
    }

    /// Everything available now (possibly nothing). Never blocks.
    pub fn read_available(&mut self, out: &mut Vec<u8>) {
        let mut buf = [0u8; 16384];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => return, // no writer right now
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return, // EAGAIN: nothing yet
            }
        }
    }
}

/// Non-blocking reader of a JSON-lines tap (text.tap, reply.tap).
pub struct TapLines {
    file: Option<File>,
    partial: Vec<u8>,
}

impl TapLines {
    pub fn open(path: &Path) -> Self {
        let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).ok();
        TapLines { file, partial: vec![] }
    }

    /// Every complete event line that arrived since the last call (possibly none). Never blocks.
    pub fn poll(&mut self) -> Vec<Value> {
        let mut out = vec![];
        let Some(f) = self.file.as_mut() else { return out };
        let mut buf = [0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.partial.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                out.push(v);
            }
        }
        out
    }
}

/// Non-blocking reader of `line.frames`, tts-writer's call control for the line owner
/// (fifo-layout.md "Call control"): the events that arrived since the last poll. Anything that
/// is not an event frame is one log line and skipped.
pub struct LineEvents {
    reader: RawOutputReader,
    decoder: crate::frame::FrameDecoder,
}

impl LineEvents {
    /// `<run_dir>/line.frames` when the instance has that FIFO (None: no call control).
    pub fn open(run_dir: &Path) -> std::io::Result<Option<Self>> {
        let path = run_dir.join("line.frames");
        if !crate::fifo::is_fifo(&path) {
            return Ok(None);
        }
        Ok(Some(LineEvents { reader: RawOutputReader::open(path)?, decoder: crate::frame::FrameDecoder::new() }))
    }

    pub fn poll(&mut self) -> Vec<crate::Event> {
        let mut bytes = vec![];
        self.reader.read_available(&mut bytes);
        self.decoder.push(&bytes);
        let mut out = vec![];
        while let Some(frame) = self.decoder.next() {
            match frame {
                Ok(crate::Frame::Event(e)) => out.push(e),
                Ok(_) => log::warn!("line.frames: audio on an event link; skipped"),
                Err(e) => log::warn!("line.frames: {e}; skipped"),
            }
        }
        out
    }
}

//! The bridge's side of the raw links, with the bridge's rules (fifo-layout.md §3): the call's
//! media path never waits on a FIFO. [`RawInputWriter`] writes `tg_input.raw` non-blocking
//! (no reader or full pipe: drop and count); [`RawOutputReader`] polls `tg_output.raw`
//! non-blocking (nothing there: the caller hears silence).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct RawInputWriter {
    path: PathBuf,
    file: Option<File>,
    next_try: Instant,
    pub dropped_chunks: u64,
    /// Longest time one write call took.
    pub worst_write: Duration,
}

impl RawInputWriter {
    pub fn new(path: PathBuf) -> Self {
        RawInputWriter { path, file: None, next_try: Instant::now(), dropped_chunks: 0, worst_write: Duration::ZERO }
    }

    pub fn write(&mut self, bytes: &[u8]) {
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
        self.worst_write = self.worst_write.max(t0.elapsed());
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

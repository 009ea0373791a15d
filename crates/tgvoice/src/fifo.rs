//! Byte-level endpoints that follow the FIFO rules of `fifo-layout.md` §3.
//!
//! * [`ByteInput`] reads stdin, a file or a named FIFO; on a FIFO, EOF (the writer restarted)
//!   is reported as [`ReadOutcome::WriterGone`] and the FIFO is re-opened on the next read.
//! * [`FifoWriter`] writes stdout, a file or a named FIFO; with no reader on a FIFO it drops and
//!   counts instead of blocking, and reconnects (at most every 100 ms) when a reader returns.
//! * [`Tap`] mirrors bytes into a `<name>.tap` FIFO only while someone reads it, never blocking.

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a writer with no reader retries opening its FIFO.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// How often a tap with no reader is re-checked.
pub const TAP_RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// Bytes a slow tap reader may fall behind before whole chunks are dropped.
pub const TAP_BACKLOG: usize = 256 * 1024;

/// Where a stage reads from or writes to: `-`/absent means stdin/stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Stdio,
    Path(PathBuf),
}

impl Endpoint {
    pub fn from_arg(arg: Option<&Path>) -> Endpoint {
        match arg {
            None => Endpoint::Stdio,
            Some(p) if p.as_os_str() == "-" => Endpoint::Stdio,
            Some(p) => Endpoint::Path(p.to_path_buf()),
        }
    }

    pub fn describe(&self, stdio: &str) -> String {
        match self {
            Endpoint::Stdio => stdio.to_string(),
            Endpoint::Path(p) => p.display().to_string(),
        }
    }
}

/// True if `path` exists and is a named FIFO (not following symlinks).
pub fn is_fifo(path: &Path) -> bool {
    std::fs::symlink_metadata(path).map(|m| m.file_type().is_fifo()).unwrap_or(false)
}

/// Refuse paths an attacker could have planted: symlinks and things owned by another user; and
/// a path named like a run-dir link (`audio.frames`, `tg_output.raw`, `text.tap`, …) that is not
/// a FIFO, so a stray regular file never silently takes a link's traffic. Errors exit 78.
pub fn check_link_path(path: &Path) -> Result<()> {
    use crate::cli::{exit, fail};
    let link_name = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        crate::rundir::LINKS.iter().any(|l| *l == n || Tap::path_for(Path::new(l)).as_os_str() == n)
    });
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        if link_name {
            return Err(fail(exit::CONFIG, format!(
                "{} does not exist; it is a link name, which must be a FIFO (create the run directory with tgvoice-rundir)",
                path.display()
            )));
        }
        return Ok(());
    };
    if meta.file_type().is_symlink() {
        return Err(fail(exit::CONFIG, format!("{} is a symlink; refusing to use it as a link (remove it and let the supervisor create the FIFO)", path.display())));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(fail(exit::CONFIG, format!("{} is owned by uid {}, not by you (uid {uid}); refusing to use it", path.display(), meta.uid())));
    }
    if link_name && !meta.file_type().is_fifo() {
        return Err(fail(exit::CONFIG, format!(
            "{} is a link name but not a FIFO; move it away and create the run directory with tgvoice-rundir",
            path.display()
        )));
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Data(usize),
    /// The writer of a named FIFO went away; the FIFO will be re-opened on the next read.
    WriterGone,
    /// End of stdin or of a regular file.
    End,
}

/// An input byte stream with the reopen-on-EOF rule for named FIFOs.
pub struct ByteInput {
    endpoint: Endpoint,
    fifo: bool,
    file: Option<Box<dyn Read + Send>>,
}

impl ByteInput {
    pub fn open(endpoint: Endpoint) -> Result<Self> {
        let mut fifo = false;
        let file: Option<Box<dyn Read + Send>> = match &endpoint {
            Endpoint::Stdio => Some(Box::new(io::stdin())),
            Endpoint::Path(p) => {
                check_link_path(p)?;
                fifo = is_fifo(p);
                // Informational only: readiness is signalled on the notification fd (fifo-layout.md §5).
                log::info!("reading {}", p.display());
                if fifo {
                    None // opened lazily: opening a FIFO blocks until a writer appears
                } else {
                    let f = File::open(p).with_context(|| format!("cannot open input {}", p.display()))?;
                    Some(Box::new(f))
                }
            }
        };
        Ok(ByteInput { endpoint, fifo, file })
    }

    pub fn is_fifo(&self) -> bool {
        self.fifo
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Blocking read. On a named FIFO this waits for a writer, and reports a writer leaving.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<ReadOutcome> {
        loop {
            if self.file.is_none() {
                let Endpoint::Path(p) = &self.endpoint else { return Ok(ReadOutcome::End) };
                match File::open(p) {
                    Ok(f) => self.file = Some(Box::new(f)),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            let file = self.file.as_mut().expect("opened above");
            match file.read(buf) {
                Ok(0) if self.fifo => {
                    self.file = None;
                    return Ok(ReadOutcome::WriterGone);
                }
                Ok(0) => return Ok(ReadOutcome::End),
                Ok(n) => return Ok(ReadOutcome::Data(n)),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Delivered,
    /// Nobody is reading this named FIFO right now; the bytes were dropped and counted.
    Dropped,
    /// stdout's reader is gone (e.g. `| head`): the stream is over.
    Closed,
}

/// An output byte stream that never blocks or dies because its reader is missing.
pub struct FifoWriter {
    endpoint: Endpoint,
    fifo: bool,
    file: Option<File>,
    stdout: Option<io::Stdout>,
    next_attempt: Instant,
    /// Bytes and chunks dropped since the last reconnect (for the log) and in total.
    pub dropped_bytes: u64,
    pub dropped_chunks: u64,
    pub total_dropped_chunks: u64,
    was_connected: bool,
    label: String,
}

impl FifoWriter {
    pub fn open(endpoint: Endpoint) -> Result<Self> {
        let mut w = FifoWriter {
            fifo: false,
            file: None,
            stdout: None,
            next_attempt: Instant::now(),
            dropped_bytes: 0,
            dropped_chunks: 0,
            total_dropped_chunks: 0,
            was_connected: false,
            label: endpoint.describe("stdout"),
            endpoint,
        };
        match &w.endpoint {
            Endpoint::Stdio => w.stdout = Some(io::stdout()),
            Endpoint::Path(p) => {
                check_link_path(p)?;
                if is_fifo(p) {
                    w.fifo = true;
                    w.try_connect();
                } else {
                    let f = File::create(p).with_context(|| format!("cannot create output {}", p.display()))?;
                    w.file = Some(f);
                }
            }
        }
        Ok(w)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn is_fifo(&self) -> bool {
        self.fifo
    }

    /// True if this output is a terminal: stdout on one, or a path such as `/dev/tty`. A named
    /// FIFO never is, whatever stdout is (a supervised stage's stdout is its log).
    pub fn is_terminal(&self) -> bool {
        use std::io::IsTerminal;
        match (&self.stdout, &self.file) {
            (Some(out), _) => out.is_terminal(),
            (None, Some(f)) if !self.fifo => f.is_terminal(),
            _ => false,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.stdout.is_some() || self.file.is_some()
    }

    /// Raw fd of an open FIFO (for FIONREAD / F_SETPIPE_SZ by pacing writers).
    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// Try to open the FIFO for writing without blocking (ENXIO = no reader yet).
    fn try_connect(&mut self) -> bool {
        let Endpoint::Path(p) = &self.endpoint else { return true };
        self.next_attempt = Instant::now() + RECONNECT_INTERVAL;
        match OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(p) {
            Ok(f) => {
                // Blocking writes from here on: this writer runs on its own thread, and a dead
                // reader turns a blocked write into EPIPE at once.
                if let Ok(flags) = fcntl(f.as_raw_fd(), FcntlArg::F_GETFL) {
                    let mut flags = OFlag::from_bits_truncate(flags);
                    flags.remove(OFlag::O_NONBLOCK);
                    let _ = fcntl(f.as_raw_fd(), FcntlArg::F_SETFL(flags));
                }
                if self.dropped_chunks > 0 {
                    log::info!(
                        "reader connected to {}; dropped {} chunks ({} bytes) while it was away",
                        self.label, self.dropped_chunks, self.dropped_bytes
                    );
                } else {
                    log::debug!("reader connected to {}", self.label);
                }
                self.dropped_bytes = 0;
                self.dropped_chunks = 0;
                self.file = Some(f);
                self.was_connected = true;
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => false,
            Err(e) => {
                log::warn!("cannot open {} for writing: {e}; retrying", self.label);
                false
            }
        }
    }

    /// Deliver `bytes` whole, or drop them if nobody is reading. Never blocks on a missing
    /// reader; may block while a live reader is slow (callers run this on their own thread).
    pub fn write_chunk(&mut self, bytes: &[u8]) -> WriteOutcome {
        if let Some(out) = self.stdout.as_mut() {
            return match out.write_all(bytes).and_then(|_| out.flush()) {
                Ok(()) => WriteOutcome::Delivered,
                Err(_) => WriteOutcome::Closed,
            };
        }
        if self.file.is_none() && self.fifo && Instant::now() >= self.next_attempt {
            self.try_connect();
        }
        let Some(file) = self.file.as_mut() else {
            self.count_drop(bytes.len());
            return WriteOutcome::Dropped;
        };
        match file.write_all(bytes) {
            Ok(()) => WriteOutcome::Delivered,
            Err(e) => {
                if e.raw_os_error() == Some(libc::EPIPE) {
                    log::warn!("reader of {} went away; dropping output until it returns", self.label);
                } else {
                    log::warn!("write to {} failed: {e}; reconnecting", self.label);
                }
                // Closing our end discards anything left in the pipe, so the next reader
                // starts on a frame boundary.
                self.file = None;
                self.count_drop(bytes.len());
                if !self.fifo {
                    return WriteOutcome::Closed;
                }
                WriteOutcome::Dropped
            }
        }
    }

    /// Take back bytes written to this named FIFO that its reader has not read yet (at most
    /// `max` bytes, a multiple of `align`), by reading them out of the pipe ourselves through a
    /// second, momentary read end. A paced audio writer uses it to silence the lead it keeps in
    /// the pipe at once on barge-in instead of after it has played. Empty when not a FIFO.
    pub fn take_back(&mut self, max: usize, align: usize) -> Vec<u8> {
        let (Endpoint::Path(p), Some(file)) = (&self.endpoint, self.file.as_ref()) else { return vec![] };
        if !self.fifo {
            return vec![];
        }
        let mut unread: libc::c_int = 0;
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::FIONREAD, &mut unread) } < 0 || unread <= 0 {
            return vec![];
        }
        let align = align.max(1);
        let want = (unread as usize).min(max) / align * align;
        if want == 0 {
            return vec![];
        }
        let Ok(mut reader) = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(p) else { return vec![] };
        let mut buf = vec![0u8; want];
        let mut got = 0;
        // The real reader may take some at the same moment; whatever we get is ours. Both
        // sides read whole samples (writes and reads are even-sized), so alignment holds.
        while got < want {
            match reader.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(_) => break,
            }
        }
        buf.truncate(got / align * align);
        buf
    }

    fn count_drop(&mut self, n: usize) {
        if self.dropped_chunks == 0 && !self.was_connected {
            log::info!("no reader on {} yet; dropping output until one connects", self.label);
        }
        if self.dropped_chunks == 0 {
            self.was_connected = false;
        }
        self.dropped_bytes += n as u64;
        self.dropped_chunks += 1;
        self.total_dropped_chunks += 1;
    }
}

/// Mirror of a link into `<stem>.tap`, present only while someone reads it.
pub struct Tap {
    path: PathBuf,
    file: Option<File>,
    next_try: Instant,
    backlog: Vec<u8>,
    pub dropped_chunks: u64,
}

impl Tap {
    pub fn new(path: PathBuf) -> Self {
        Tap { path, file: None, next_try: Instant::now(), backlog: Vec::new(), dropped_chunks: 0 }
    }

    /// The conventional tap of a link: `$RUN/speech.frames` → `$RUN/speech.tap`.
    pub fn path_for(link: &Path) -> PathBuf {
        link.with_extension("tap")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_attached(&self) -> bool {
        self.file.is_some()
    }

    /// Offer a chunk to the tap. Never blocks: with no tap reader this is one cheap check every
    /// 250 ms; with a slow one, whole chunks are dropped.
    pub fn mirror(&mut self, chunk: &[u8]) {
        if self.file.is_none() {
            let now = Instant::now();
            if now < self.next_try {
                return;
            }
            self.next_try = now + TAP_RETRY_INTERVAL;
            if !is_fifo(&self.path) {
                return;
            }
            match OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&self.path) {
                Ok(f) => {
                    log::info!("tap {} attached", self.path.display());
                    self.file = Some(f);
                    self.backlog.clear();
                }
                Err(_) => return, // ENXIO: nobody is tapping
            }
        }
        if self.backlog.len() + chunk.len() > TAP_BACKLOG {
            self.dropped_chunks += 1;
        } else {
            self.backlog.extend_from_slice(chunk);
        }
        self.flush();
    }

    fn flush(&mut self) {
        let Some(file) = self.file.as_mut() else { return };
        while !self.backlog.is_empty() {
            match file.write(&self.backlog) {
                Ok(n) => {
                    self.backlog.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    log::info!("tap {} detached", self.path.display());
                    self.file = None;
                    self.backlog.clear();
                    return;
                }
            }
        }
    }
}

/// Create a FIFO (mode 0600) unless a safe one is already there.
pub fn ensure_fifo(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            check_link_path(path)?;
            if !meta.file_type().is_fifo() {
                bail!("{} exists but is not a FIFO; move it away and try again", path.display());
            }
            Ok(())
        }
        Err(_) => match nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => bail!("cannot create FIFO {}: {e}", path.display()),
        },
    }
}

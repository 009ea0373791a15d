//! The logging convention every program uses (fifo-layout.md §4):
//! `<RFC3339 UTC time> <program>[<pid>] <level>: <message>` on stderr, one line per event.
//! Level from `-v`/`-q` or `TGVOICE_LOG` (error, warn, info, debug, trace); default info.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct StderrLog {
    program: &'static str,
    pid: u32,
}

impl Log for StderrLog {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let now = time::OffsetDateTime::now_utc();
        let ts = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "?".into());
        let level = match r.level() {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        // One write per line so lines from several threads never interleave.
        let line = format!("{ts} {}[{}] {level}: {}\n", self.program, self.pid, r.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// The first `max` characters of `bytes` (a server's answer that was not what was asked for,
/// a malformed event) on one line, whitespace runs as one space, "…" when cut: fit for a log
/// line or an error message.
pub fn snippet(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// Install the logger. `verbosity`: +1 per `-v`, −1 per `-q`, relative to `TGVOICE_LOG`/info.
pub fn init(program: &'static str, verbosity: i8) {
    let base = match std::env::var("TGVOICE_LOG").unwrap_or_default().to_ascii_lowercase().as_str() {
        "error" => 1,
        "warn" => 2,
        "debug" => 4,
        "trace" => 5,
        "off" => 0,
        _ => 3,
    };
    let level = match (base + verbosity as i32).clamp(0, 5) {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let logger = Box::leak(Box::new(StderrLog { program, pid: std::process::id() }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Rate limit for log lines, per kind of line: at most [`LogLimit::PER_WINDOW`] lines of one
/// kind per [`LogLimit::WINDOW`], so a flood of bad input or events costs a few lines, not one
/// per event. The first line of a kind after a window with suppressed lines says how many.
pub struct LogLimit {
    kinds: std::collections::HashMap<&'static str, Window>,
}

struct Window {
    start: std::time::Instant,
    shown: u32,
    suppressed: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLimit {
    pub const PER_WINDOW: u32 = 5;
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

    pub fn new() -> Self {
        LogLimit { kinds: Default::default() }
    }

    /// Log `args` at `level` unless this `kind` already used up its lines in this window.
    pub fn log(&mut self, level: Level, kind: &'static str, args: std::fmt::Arguments) {
        let now = std::time::Instant::now();
        let w = self.kinds.entry(kind).or_insert(Window { start: now, shown: 0, suppressed: 0 });
        if now.duration_since(w.start) > Self::WINDOW {
            if w.suppressed > 0 {
                log::log!(level, "{} more \"{kind}\" lines were not shown (at most {} per {} s)", w.suppressed, Self::PER_WINDOW, Self::WINDOW.as_secs());
            }
            *w = Window { start: now, shown: 0, suppressed: 0 };
        }
        if w.shown < Self::PER_WINDOW {
            w.shown += 1;
            log::log!(level, "{args}");
        } else {
            w.suppressed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_kind_separately() {
        log::set_max_level(LevelFilter::Info);
        let mut limit = LogLimit::new();
        for i in 0..1000 {
            limit.log(Level::Info, "a", format_args!("a {i}"));
            limit.log(Level::Info, "b", format_args!("b {i}"));
        }
        assert_eq!(limit.kinds["a"].shown, LogLimit::PER_WINDOW);
        assert_eq!(limit.kinds["a"].suppressed, 1000 - LogLimit::PER_WINDOW as u64);
        assert_eq!(limit.kinds["b"].shown, LogLimit::PER_WINDOW);
    }

    #[test]
    fn a_snippet_is_one_line_cut_at_a_character() {
        assert_eq!(snippet(b"<html>\n  <body>Bad\tGateway</body>", 80), "<html> <body>Bad Gateway</body>");
        assert_eq!(snippet("naïve café au lait".as_bytes(), 9), "naïve caf…");
        assert_eq!(snippet(&[0xff, b'o', b'k'], 10), "\u{fffd}ok");
    }
}

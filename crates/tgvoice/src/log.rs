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

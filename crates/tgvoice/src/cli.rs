//! Command-line pieces shared by every stage (flattened into each program's clap parser),
//! and the `run` wrapper that gives every program the same start-up, signals and exit codes.

use crate::fifo::Endpoint;
use std::path::PathBuf;

/// `--input`, `--output`, `--tap`: where a stage reads and writes (stdin/stdout by default).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LinkArgs {
    /// Read from this named FIFO or file instead of stdin ("-" = stdin). On a FIFO the stage
    /// survives its writer restarting.
    #[arg(short, long, value_name = "PATH")]
    pub input: Option<PathBuf>,
    /// Write to this named FIFO or file instead of stdout. With no reader on a FIFO, output is
    /// dropped (and counted) until one connects.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Mirror the output into this tap FIFO while someone reads it
    /// [default: <output stem>.tap beside a FIFO output, if it exists].
    #[arg(long, value_name = "PATH")]
    pub tap: Option<PathBuf>,
    /// How the output is written: frames (the binary stream the next stage reads), jsonl (one
    /// JSON object per frame per line, audio summarised) or text (lines for a person)
    /// [default: text when the output is a terminal, else frames].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<crate::render::Format>,
}

impl LinkArgs {
    pub fn input(&self) -> Endpoint {
        Endpoint::from_arg(self.input.as_deref())
    }
    pub fn output(&self) -> Endpoint {
        Endpoint::from_arg(self.output.as_deref())
    }

    /// The framed output, written in `--format` (else text to a terminal, frames to anything
    /// else), showing `view` as text.
    pub fn open_output(&self, tap_format: crate::sink::TapFormat, view: crate::render::TextView) -> anyhow::Result<crate::sink::FrameSink> {
        crate::sink::FrameSink::open_as(self.output(), self.tap.clone(), tap_format, self.format, view)
    }
}

/// `-v`/`-q`: log more or less (see also TGVOICE_LOG).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// Log more (repeat for more detail); TGVOICE_LOG=debug does the same.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log less (warnings and errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub quiet: u8,
}

impl LogArgs {
    pub fn verbosity(&self) -> i8 {
        self.verbose as i8 - self.quiet as i8
    }
}

/// An error that carries its exit code (fifo-layout.md §4).
#[derive(Debug)]
pub struct ExitError {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitError {}

/// Exit codes: the one table every program's `--help` section and fifo-layout.md §4 come from
/// (a test checks the document against [`exit::TABLE`]).
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const DATA: i32 = 65;
    pub const UNAVAILABLE: i32 = 69;
    pub const SOFTWARE: i32 = 70;
    pub const CONFIG: i32 = 78;

    /// One exit code: its number, short name (sysexits.h where one exists) and meaning.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Code {
        pub code: i32,
        pub name: &'static str,
        pub meaning: &'static str,
    }

    pub const TABLE: &[Code] = &[
        Code { code: OK, name: "ok", meaning: "done: end of input on stdin or a file, a closed stdout, or SIGTERM/SIGINT/SIGHUP (a stage that has work in hand finishes it first, at most 3 s)" },
        Code { code: FAILURE, name: "failure", meaning: "a runtime failure not covered below (e.g. an input that cannot be opened)" },
        Code { code: USAGE, name: "usage", meaning: "a bad flag, a bad value given as a flag, or an output the program will not write to (raw audio to a terminal)" },
        Code { code: DATA, name: "dataerr", meaning: "the input is not what was expected (e.g. framecat given raw PCM)" },
        Code { code: UNAVAILABLE, name: "unavailable", meaning: "a required engine, library or model is missing (the message says how to install it)" },
        Code { code: SOFTWARE, name: "software", meaning: "an internal error: a panic on any thread ends the process, so its supervisor restarts it" },
        Code { code: CONFIG, name: "config", meaning: "a configuration error: an unsafe run directory or link path, or a bad value in an environment variable (the message names it)" },
    ];

    /// The row of `code` in [`TABLE`].
    pub fn lookup(code: i32) -> Option<&'static Code> {
        TABLE.iter().find(|c| c.code == code)
    }

    /// Codes every program run through [`super::run`] can exit with: success, a bad flag, a panic.
    pub const COMMON: &[i32] = &[OK, USAGE, SOFTWARE];

    /// The "Exit codes" section of a program's `--help`: [`COMMON`] plus `more`, each
    /// `(code, what it means for this program)` ("" = the table's meaning alone), in code order.
    pub fn help(more: &[(i32, &str)]) -> String {
        let mut rows: Vec<(i32, &str)> = COMMON.iter().map(|&c| (c, "")).collect();
        for &(code, detail) in more {
            match rows.iter_mut().find(|r| r.0 == code) {
                Some(r) => r.1 = detail,
                None => rows.push((code, detail)),
            }
        }
        rows.sort_by_key(|r| r.0);
        let mut out = String::from("Exit codes (fifo-layout.md §4):");
        for (code, detail) in rows {
            let row = lookup(code).unwrap_or_else(|| panic!("exit code {code} is not in tgvoice::cli::exit::TABLE"));
            out.push_str(&format!("\n  {:<3} {:<12} {}", row.code, row.name, row.meaning));
            if !detail.is_empty() {
                out.push_str(&format!("; here: {detail}"));
            }
        }
        out
    }

    /// `text`, a blank line, then [`help`]`(more)`: a program's whole `after_help`.
    pub fn after_help(text: &str, more: &[(i32, &str)]) -> String {
        format!("{text}\n\n{}", help(more))
    }

    /// The codes a `--help` text lists in its "Exit codes" section (for tests).
    pub fn listed_in_help(help_text: &str) -> Vec<i32> {
        help_text
            .lines()
            .skip_while(|l| !l.starts_with("Exit codes"))
            .skip(1)
            .map_while(|l| l.strip_prefix("  ")?.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// §4's table in fifo-layout.md, as Markdown.
    pub fn markdown_table() -> String {
        let mut out = String::from("| exit code | name | meaning |\n|---|---|---|\n");
        for c in TABLE {
            out.push_str(&format!("| {} | {} | {} |\n", c.code, c.name, c.meaning));
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn fifo_layout_states_the_table() {
            let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fifo-layout.md")).unwrap();
            let table = markdown_table();
            assert!(doc.contains(&table), "fifo-layout.md §4 must hold exactly this table (from tgvoice::cli::exit::TABLE):\n{table}");
        }

        #[test]
        fn help_lists_common_codes_and_the_programs_own_in_order() {
            let h = help(&[(CONFIG, "unsafe link path"), (UNAVAILABLE, ""), (FAILURE, "")]);
            assert_eq!(listed_in_help(&h), vec![0, 1, 2, 69, 70, 78]);
            assert!(h.contains("78  config       a configuration error") && h.ends_with("; here: unsafe link path"), "{h}");
        }
    }
}

/// Build an error that exits with `code`.
pub fn fail(code: i32, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ExitError { code, message: message.into() })
}

/// A value that parsed but fails a check of the program's own (a range, or an order between
/// flags), as fifo-layout.md §4 says: exit 2 (usage) when one of `flags` was given on the
/// command line, else, when one came from its environment variable, exit 78 (config) naming
/// the variable. `flags` are the long names involved (`"--eot-silence"`).
pub fn bad_value<T: clap::CommandFactory>(flags: &[&str], message: impl Into<String>) -> anyhow::Error {
    bad_value_from::<T, _, _>(std::env::args_os(), flags, message)
}

fn bad_value_from<T, I, A>(argv: I, flags: &[&str], message: impl Into<String>) -> anyhow::Error
where
    T: clap::CommandFactory,
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    use clap::parser::ValueSource;
    let message = message.into();
    let cmd = T::command();
    // Parsed again, only to learn where each value came from (the first parse succeeded).
    let matches = cmd.clone().try_get_matches_from(argv).ok();
    let (mut vars, mut on_command_line) = (vec![], false);
    for flag in flags {
        let long = flag.trim_start_matches('-');
        let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(long)) else { continue };
        match matches.as_ref().and_then(|m| m.value_source(arg.get_id().as_str())) {
            Some(ValueSource::CommandLine) => on_command_line = true,
            Some(ValueSource::EnvVariable) => vars.extend(arg.get_env().map(|v| v.to_string_lossy().into_owned())),
            _ => {}
        }
    }
    match (vars.is_empty(), on_command_line) {
        (true, _) => fail(exit::USAGE, message),
        (false, true) => fail(exit::USAGE, format!("{message} (also from the environment: {})", vars.join(", "))),
        (false, false) => fail(exit::CONFIG, format!("{message} (from the environment variable {}; fix or unset it)", vars.join(", "))),
    }
}

#[cfg(test)]
mod bad_value_tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Args {
        #[arg(long, default_value_t = 1, env = "TGVOICE_TEST_BAD_VALUE_LOW")]
        low: u32,
        #[arg(long, default_value_t = 2)]
        high: u32,
    }

    fn code_and_message(argv: &[&str]) -> (i32, String) {
        let e = bad_value_from::<Args, _, _>(argv.iter().copied(), &["--low", "--high"], "need --low ≤ --high");
        let x = e.downcast_ref::<ExitError>().unwrap();
        (x.code, x.message.clone())
    }

    #[test]
    fn a_value_from_the_environment_is_a_config_error_naming_the_variable() {
        // One test touches the variable, so no other test sees it.
        std::env::set_var("TGVOICE_TEST_BAD_VALUE_LOW", "5");
        let from_env = code_and_message(&["prog"]);
        let flag_too = code_and_message(&["prog", "--high", "3"]);
        std::env::remove_var("TGVOICE_TEST_BAD_VALUE_LOW");
        let flags_only = code_and_message(&["prog", "--low", "5"]);
        assert_eq!(from_env.0, exit::CONFIG, "{from_env:?}");
        assert!(from_env.1.contains("TGVOICE_TEST_BAD_VALUE_LOW") && from_env.1.starts_with("need --low"), "{from_env:?}");
        assert_eq!(flag_too.0, exit::USAGE, "{flag_too:?}");
        assert!(flag_too.1.contains("TGVOICE_TEST_BAD_VALUE_LOW"), "{flag_too:?}");
        assert_eq!(flags_only, (exit::USAGE, "need --low ≤ --high".to_string()));
    }
}

/// Common `main`: logging, signals (SIGPIPE ignored; SIGTERM/SIGINT/SIGHUP exit 0 with a log
/// line), then `body`; an error is printed as one line (with its causes) and sets the exit code.
pub fn run(program: &'static str, log: &LogArgs, body: impl FnOnce() -> anyhow::Result<()>) -> ! {
    crate::log::init(program, log.verbosity());
    exit_on_panic();
    install_signal_handlers();
    exit_with(body())
}

/// Exit with the code `result` calls for, printing an error as one line (with its causes).
/// For programs that handle signals themselves (e.g. to hang up calls first) instead of [`run`].
pub fn exit_with(result: anyhow::Result<()>) -> ! {
    match result {
        Ok(()) => std::process::exit(exit::OK),
        Err(e) => {
            let code = e.downcast_ref::<ExitError>().map(|x| x.code).unwrap_or(exit::FAILURE);
            let msg = e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ");
            log::error!("{msg}");
            std::process::exit(code)
        }
    }
}

/// A panic on any thread ends the whole process (one log line, exit 70): a live process with a
/// dead writer or reader thread would look healthy to the supervisor and never be restarted.
pub fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current().name().unwrap_or("main").to_string();
        log::error!("internal error on thread \"{thread}\": {info}; exiting so the supervisor restarts this stage");
        // _exit: no atexit handlers or stdout flush, which could wait on the thread that died.
        unsafe { libc::_exit(exit::SOFTWARE) }
    }));
}

/// `T::parse()`, except that a bad value taken from an environment variable exits 78 (a
/// configuration error, fifo-layout.md §4) naming the variable; bad flags still exit 2.
pub fn parse_args<T: clap::Parser>() -> T {
    let err = match T::try_parse() {
        Ok(args) => return args,
        Err(e) => e,
    };
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let value_error = matches!(err.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation);
    let invalid_arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let cmd = T::command();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let from_env = cmd.get_arguments().find_map(|a| {
        let var = a.get_env()?.to_str()?.to_string();
        let long = a.get_long()?;
        let on_command_line = argv.iter().any(|x| x == &format!("--{long}") || x.starts_with(&format!("--{long}=")));
        (invalid_arg.starts_with(&format!("--{long}")) && !on_command_line && std::env::var_os(&var).is_some())
            .then_some(var)
    });
    match from_env {
        Some(var) if value_error => {
            let msg = err.to_string();
            let first = msg.lines().next().unwrap_or("invalid value").trim_start_matches("error: ");
            eprintln!("{}: error: {first} (from the environment variable {var}; fix or unset it)", cmd.get_name());
            std::process::exit(exit::CONFIG)
        }
        _ => err.exit(),
    }
}

/// How long a stage that asked for [`graceful_stop`] may take to finish after a stop signal
/// before it is ended anyway (a supervisor's patience is 5 s).
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

static GRACEFUL: std::sync::OnceLock<crossbeam_channel::Sender<&'static str>> = std::sync::OnceLock::new();

/// Ask to finish work on SIGTERM/SIGINT/SIGHUP instead of exiting at once: the returned channel
/// receives the signal's name, and the stage has [`STOP_GRACE`] to flush (e.g. vadseg closes
/// the open turn, sttd transcribes it) and return from its body; after that it exits 0 anyway.
/// A second signal exits at once.
pub fn graceful_stop() -> crossbeam_channel::Receiver<&'static str> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let _ = GRACEFUL.set(tx);
    rx
}

/// Ignore SIGPIPE (writers see EPIPE instead); exit 0 on SIGTERM, SIGINT, SIGHUP (after a
/// grace period for stages that asked for [`graceful_stop`]).
pub fn install_signal_handlers() {
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn);
    }
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let name = |sig| match sig {
                    SIGTERM => "SIGTERM",
                    SIGINT => "SIGINT",
                    _ => "SIGHUP",
                };
                let Some(sig) = signals.forever().next() else { return };
                if let Some(tx) = GRACEFUL.get() {
                    log::info!("stopping on {}: finishing the work in hand", name(sig));
                    let _ = tx.try_send(name(sig));
                    let deadline = std::time::Instant::now() + STOP_GRACE;
                    while std::time::Instant::now() < deadline {
                        if signals.pending().next().is_some() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    log::warn!("stopping now (work not finished within {} s or a second signal)", STOP_GRACE.as_secs());
                } else {
                    log::info!("stopping on {}", name(sig));
                }
                std::process::exit(exit::OK);
            })
            .ok();
    }
}

/// Tell the supervisor this stage is ready (its model loaded, its input open): one newline on
/// the fd named by `TGVOICE_NOTIFY_FD`, then closed; nothing without the variable. Each stage
/// calls it once, whatever the log level (fifo-layout.md §5, [`crate::ready`]).
pub fn notify_ready() {
    crate::ready::notify()
}

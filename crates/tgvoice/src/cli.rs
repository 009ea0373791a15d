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
}

impl LinkArgs {
    pub fn input(&self) -> Endpoint {
        Endpoint::from_arg(self.input.as_deref())
    }
    pub fn output(&self) -> Endpoint {
        Endpoint::from_arg(self.output.as_deref())
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

/// Exit codes.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    /// Input is not what was expected.
    pub const DATA: i32 = 65;
    /// A required engine, library or model is missing.
    pub const UNAVAILABLE: i32 = 69;
    /// An internal error (a panic): the stage exits so its supervisor restarts it.
    pub const SOFTWARE: i32 = 70;
    /// Unsafe or invalid configuration.
    pub const CONFIG: i32 = 78;
}

/// Build an error that exits with `code`.
pub fn fail(code: i32, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ExitError { code, message: message.into() })
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
fn exit_on_panic() {
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

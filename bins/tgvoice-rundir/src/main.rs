//! tgvoice-rundir — create (or check) the private run directory of one call instance with every
//! link and tap FIFO in it (fifo-layout.md §1), and print its path. Used by the supervisor.

use clap::Parser;
use std::path::PathBuf;
use tgvoice::cli::{self, exit, fail, LogArgs};
use tgvoice::rundir::{create_run_dir, default_run_dir};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Create a private tgvoice run directory (mode 0700) with all its FIFOs; print its path",
    after_help = exit::after_help("The directory is $TGVOICE_RUN_DIR, or --dir, or the per-instance default\n\
($XDG_RUNTIME_DIR/tgvoice/INSTANCE on Linux, $TMPDIR/tgvoice/INSTANCE on macOS).\n\
Refuses (exit 78) a path that is a symlink, not a directory, or owned by someone else,\n\
and link paths that exist but are not FIFOs.", &[(exit::USAGE, "also a bad --instance name"), (exit::CONFIG, "an unsafe run directory")])
)]
struct Args {
    /// Instance name (one pipeline per call).
    #[arg(long, default_value = "default")]
    instance: String,
    /// Use this directory instead of the default.
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
}

fn main() {
    let args: Args = tgvoice::cli::parse_args();
    cli::run("tgvoice-rundir", &args.log.clone(), move || {
        if args.instance.is_empty() || args.instance.contains('/') || args.instance.starts_with('.') {
            return Err(fail(exit::USAGE, format!("bad instance name {:?}: use letters, digits, - and _", args.instance)));
        }
        let dir = args.dir.clone().unwrap_or_else(|| default_run_dir(&args.instance));
        create_run_dir(&dir).map_err(|e| fail(exit::CONFIG, format!("{e:#}")))?;
        println!("{}", dir.display());
        Ok(())
    })
}

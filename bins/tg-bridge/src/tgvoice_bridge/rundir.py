"""The private run directory ($RUN) and the FIFOs the bridge uses (fifo-layout.md §1).

Same rules as the Rust side: the directory is 0700 and ours (not a symlink); each link is a
FIFO (0600, ours, not a symlink), created when missing. Violations raise ``UnsafeRunDir``
(the CLI exits 78).
"""
import os
import stat
from pathlib import Path

from . import paths

BRIDGE_LINKS = ("tg_input.raw", "tg_output.raw", "control.frames", "line.frames")
BRIDGE_TAPS = ("tg_input.tap", "tg_output.tap")


class UnsafeRunDir(Exception):
    pass


def default_run_dir(instance="default"):
    return paths.run_dir(instance)


def prepare(run_dir):
    """Create/validate $RUN and the bridge's links and taps; return the directory."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = os.lstat(run_dir)
    except FileNotFoundError:
        os.mkdir(run_dir, 0o700)
        st = os.lstat(run_dir)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeRunDir(f"run directory {run_dir} is a symlink; refusing it (remove it or choose another --run-dir)")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeRunDir(f"run directory {run_dir} exists but is not a directory")
    if st.st_uid != os.geteuid():
        raise UnsafeRunDir(f"run directory {run_dir} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()}); refusing it")
    if st.st_mode & 0o077:
        os.chmod(run_dir, 0o700)
    for name in BRIDGE_LINKS + BRIDGE_TAPS:
        ensure_fifo(run_dir / name)
    return run_dir


def ensure_fifo(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.mkfifo(path, 0o600)
        return
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISFIFO(st.st_mode):
        raise UnsafeRunDir(f"{path} exists but is not a FIFO; remove it (the bridge creates the FIFOs itself)")
    if st.st_uid != os.geteuid():
        raise UnsafeRunDir(f"{path} is owned by uid {st.st_uid}, not by you; refusing it")

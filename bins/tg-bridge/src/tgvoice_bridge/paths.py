"""Where tgvoice keeps things: the rules of crates/tgvoice/src/paths.rs, which README.md
"Where things live" states. An empty variable counts as unset."""
import os
import sys
from pathlib import Path


def _env(var):
    return os.environ.get(var) or None


def xdg_state_base():
    """``$XDG_STATE_HOME/tgvoice``, else ``~/.local/state/tgvoice``."""
    return Path(_env("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "tgvoice"


def state_base():
    """Where a supervisor keeps one directory per instance: ``$TGVOICE_STATE_DIR``, else
    :func:`xdg_state_base`."""
    return Path(_env("TGVOICE_STATE_DIR") or xdg_state_base())


def run_dir(instance="default"):
    """``$TGVOICE_RUN_DIR``, else ``$XDG_RUNTIME_DIR/tgvoice/<instance>`` (Linux) or
    ``$TMPDIR/tgvoice/<instance>`` (macOS), else ``/tmp/tgvoice-$UID/<instance>``."""
    if _env("TGVOICE_RUN_DIR"):
        return Path(os.environ["TGVOICE_RUN_DIR"])
    base = _env("TMPDIR" if sys.platform == "darwin" else "XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "tgvoice" / instance
    return Path(f"/tmp/tgvoice-{os.geteuid()}") / instance

"""Command line: ``tg-bridge login`` and ``tg-bridge run`` (argparse), logging in the project
format, signal handling and exit codes."""
import argparse
import asyncio
import logging
import os
import signal
import sys
import time

from . import __version__, exit_codes, paths
from .msgpipeline import ProgramsNotFound
from .telegram import ConfigError, SessionMissing

# The codes tg-bridge uses, by their names in the one table.
_CODE = {name: code for code, name, _ in exit_codes.TABLE}
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_CONFIG = (
    _CODE["ok"], _CODE["failure"], _CODE["usage"], _CODE["unavailable"], _CODE["config"])


def exit_codes_help(here):
    """The "exit codes:" section of a --help, from the one table (fifo-layout.md §4): the codes
    in ``here`` ({code: what it means for tg-bridge, or ""}) in code order."""
    rows = {code: (name, meaning) for code, name, meaning in exit_codes.TABLE}
    out = ["exit codes:"]
    for code in sorted(here):
        name, meaning = rows[code]
        out.append(f"  {code:<3} {name:<12} {meaning}" + (f"; here: {here[code]}" if here[code] else ""))
    return "\n".join(out)


EXIT_CODES = exit_codes_help({
    EXIT_OK: "SIGTERM/SIGINT, or (--call) the call ended",
    EXIT_FAILURE: "e.g. the call could not be placed or joined",
    EXIT_USAGE: "",
    EXIT_UNAVAILABLE: "no session (run `tg-bridge login`), py-tgcalls/ntgcalls/kurigram not installed (run scripts/setup), "
                      "or (--voice-messages) the stage programs not found (set TGVOICE_BIN)",
    EXIT_CONFIG: "API credentials missing or malformed, or an unsafe run directory",
})

ENVIRONMENT = """environment:
  TG_API_ID, TG_API_HASH   Telegram API credentials (https://my.telegram.org)
  TGVOICE_TG_SESSION       session file (default ~/.local/state/tgvoice/telegram.session)
  TGVOICE_RUN_DIR          the FIFO directory ($RUN)
  TGVOICE_ALLOW            comma-separated user ids/@usernames allowed to call (run)
  TGVOICE_BIN              where vadseg, sttd, llm-relay, tts-writer are (--voice-messages; default:
                           the checkout's target/release recorded by scripts/setup, else PATH)
  TGVOICE_LOG              debug|info|warn|error"""


class _Formatter(logging.Formatter):
    def format(self, record):
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = {"WARNING": "warn", "CRITICAL": "error"}.get(record.levelname, record.levelname.lower())
        return f"{t}.{int(record.msecs):03d}Z tg-bridge[{os.getpid()}] {level}: {record.getMessage()}"


def setup_logging(verbose=0, quiet=0):
    env = os.environ.get("TGVOICE_LOG", "info").lower()
    level = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
             "warning": logging.WARNING, "error": logging.ERROR}.get(env, logging.INFO)
    if verbose:
        level = logging.DEBUG
    if quiet:
        level = logging.WARNING if quiet == 1 else logging.ERROR
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)           # py-tgcalls/pyrogram: warnings only
    logging.getLogger("tg-bridge").setLevel(level)


def build_parser():
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="tg-bridge", formatter_class=fmt,
        description="Put the tgvoice FIFO pipeline into a Telegram call: group voice chats and "
                    "private 1-on-1 calls of a user account, through py-tgcalls.",
        epilog="examples:\n"
               "  tg-bridge login                         # once: phone, code, 2FA password\n"
               "  tg-bridge run --allow 123456789         # answer private calls from that user\n"
               "  tg-bridge run --call @alice --greeting 'Operator.'\n"
               "  tg-bridge run --chat -1001234567890 --start   # join (and start) a group voice chat\n\n"
               + ENVIRONMENT + "\n\n" + EXIT_CODES)
    p.add_argument("--version", action="version", version=f"tg-bridge {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp):
        sp.add_argument("--api-id", help="Telegram API id (default $TG_API_ID)")
        sp.add_argument("--api-hash", help="Telegram API hash (default $TG_API_HASH; prefer the variable: flags show in ps)")
        sp.add_argument("--session", help="session file (default $TGVOICE_TG_SESSION or ~/.local/state/tgvoice/telegram.session)")
        sp.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
        sp.add_argument("-q", "--quiet", action="count", default=0, help="less logging (-qq: errors only)")

    lp = sub.add_parser("login", formatter_class=fmt, help="log the user account in once and store the session (0600)",
                        description="Interactive one-time login of the Telegram user account: phone number, "
                                    "the code Telegram sends, and the 2FA password if set (or --qr). Stores the "
                                    "session in a 0600 file; never prints secrets.",
                        epilog="example:\n  TG_API_ID=12345 TG_API_HASH=0123…cdef tg-bridge login\n\n" + EXIT_CODES)
    common(lp)
    lp.add_argument("--phone", help="phone number in international format (asked for when omitted)")
    lp.add_argument("--qr", action="store_true", help="log in by scanning a QR code in the Telegram app (needs the qrcode package)")

    rp = sub.add_parser("run", formatter_class=fmt, help="bridge calls to the FIFO pipeline",
                        description="Bridge Telegram calls to $RUN/tg_input.raw (caller audio, s16le 48 kHz "
                                    "mono) and $RUN/tg_output.raw (what to say), and report call start/end on "
                                    "$RUN/control.frames. Without --chat or --call it waits for private calls "
                                    "and answers only users in --allow (default deny).",
                        epilog="examples:\n"
                               "  tg-bridge run --allow 123456789,@alice --greeting 'Operator.'\n"
                               "  tg-bridge run --call 123456789\n"
                               "  tg-bridge run --chat -1001234567890 --start\n"
                               "  tg-bridge run --allow 123456789 --voice-messages --voice-caption\n\n" + ENVIRONMENT + "\n\n" + EXIT_CODES)
    common(rp)
    mode = rp.add_mutually_exclusive_group()
    mode.add_argument("--chat", help="join this group's voice chat (chat id like -100…, or @username)")
    mode.add_argument("--call", metavar="USER", help="place a private call to USER (id or @username); exit when it ends")
    rp.add_argument("--start", action="store_true", help="with --chat: start the voice chat if none is running (needs admin rights)")
    rp.add_argument("--allow", action="append", default=[], metavar="USERS",
                    help="comma-separated user ids/@usernames whose private calls are answered (repeatable; default $TGVOICE_ALLOW; nobody otherwise)")
    rp.add_argument("--greeting", help="text sent as \"greeting\" in call-start, spoken on pickup by the pipeline (e.g. 'Operator.')")
    rp.add_argument("--run-dir", help="FIFO directory (default $TGVOICE_RUN_DIR, else $XDG_RUNTIME_DIR/tgvoice/<instance>)")
    rp.add_argument("--instance", default="default", help="instance name in the default run directory (default: default)")
    rp.add_argument("--call-timeout", type=int, default=60, metavar="S", help="with --call: seconds to wait for an answer (default 60)")
    rp.add_argument("--poll", type=float, default=1.0, metavar="S", help="seconds between connection checks (default 1)")
    vm = rp.add_argument_group("voice messages", "answer voice notes from the --allow users with a voice note (text /reset "
                               "starts a new conversation for that chat); see bins/tg-bridge/README.md")
    vm.add_argument("--voice-messages", action="store_true", help="answer voice notes in private chats")
    vm.add_argument("--voice-groups", action="store_true",
                    help="also in groups, when the note replies to the account or mentions it")
    vm.add_argument("--voice-caption", action="store_true", help="attach the transcript and the answer text as a caption")
    vm.add_argument("--voice-max-seconds", type=float, default=120, metavar="S",
                    help="longest voice note answered (default 120); longer ones get a spoken 'too long'")
    vm.add_argument("--voice-state-dir", metavar="DIR",
                    help="conversations per chat, metrics and stage logs (default ~/.local/state/tgvoice/messages)")
    vm.add_argument("--voice-stage", action="append", default=[], metavar="STAGE=CMD",
                    help="run CMD instead of the built STAGE (vadseg, sttd, llm-relay, tts-writer) for voice messages")
    return p


def _allow_list(args):
    specs = args.allow or [os.environ.get("TGVOICE_ALLOW", "")]
    return [u.strip() for spec in specs for u in spec.split(",") if u.strip()]


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    setup_logging(args.verbose, args.quiet)
    log = logging.getLogger("tg-bridge")
    try:
        if args.command == "login":
            return _login(args, log)
        return _run(args, log)
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_CONFIG
    except SessionMissing as e:
        log.error("%s", e)
        return EXIT_UNAVAILABLE
    except ProgramsNotFound as e:
        log.error("voice messages: %s", e)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return EXIT_OK


def _login(args, log):
    from .telegram import credentials, default_session_path, login
    api_id, api_hash = credentials(args.api_id, args.api_hash)
    session = args.session or default_session_path()
    who = asyncio.run(login(api_id, api_hash, session, phone=args.phone, qr=args.qr))
    log.info("logged in as %s; session stored in %s (mode 0600)", who, session)
    return EXIT_OK


def _run(args, log):
    from . import rundir
    from .telegram import credentials, default_session_path, make_client, require_session
    if args.start and not args.chat:
        raise ConfigError("--start only makes sense with --chat")
    api_id, api_hash = credentials(args.api_id, args.api_hash)
    session = require_session(args.session or default_session_path())
    try:
        run_dir = rundir.prepare(args.run_dir or rundir.default_run_dir(args.instance))
    except (rundir.UnsafeRunDir, OSError) as e:
        raise ConfigError(str(e)) from None
    try:
        from .backend import PyTgCallsBackend
        import pytgcalls  # noqa: F401
    except ImportError as e:
        raise SessionMissing(f"py-tgcalls/ntgcalls missing ({e}): run scripts/setup venv bridge") from None
    voice = _voice_options(args) if args.voice_messages or args.voice_groups else None
    client = make_client(api_id, api_hash, session)
    backend = PyTgCallsBackend(client)
    mode = "group" if args.chat else "call" if args.call else "answer"
    return asyncio.run(serve(backend, run_dir, mode=mode, chat=args.chat, call_user=args.call,
                             allow=_allow_list(args), greeting=args.greeting, auto_start=args.start,
                             poll_s=args.poll, call_timeout_s=args.call_timeout, voice=voice))


def _voice_options(args):
    from .msgpipeline import MessagePipeline, stage_commands
    if args.voice_max_seconds <= 0:
        raise ConfigError("--voice-max-seconds must be positive")
    state = args.voice_state_dir or str(paths.xdg_state_base() / "messages")
    try:
        commands = stage_commands(overrides=args.voice_stage)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return {"pipeline": MessagePipeline(state, commands), "groups": args.voice_groups,
            "caption": args.voice_caption, "max_seconds": args.voice_max_seconds}


async def serve(backend, run_dir, **bridge_args):
    """Run a Bridge until SIGTERM/SIGINT (or, with mode "call", until the call ends)."""
    from .bridge import Bridge
    log = logging.getLogger("tg-bridge")
    bridge = Bridge(backend, run_dir, **bridge_args)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, bridge.finished.set)
    log.info("run directory %s", run_dir)
    failed = False
    try:
        try:
            await bridge.start()
        except SessionMissing:
            raise
        except Exception as e:
            log.error("cannot start: %s: %s", type(e).__name__, e)
            return EXIT_FAILURE
        if bridge.mode != "answer" and bridge.current is None and bridge.finished.is_set():
            failed = True
        await bridge.finished.wait()
    finally:
        await bridge.stop()
    return EXIT_FAILURE if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

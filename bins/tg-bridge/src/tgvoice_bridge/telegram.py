"""Telegram account plumbing: API credentials, the session file, interactive login, and the
client that ``run`` hands to py-tgcalls. Never prints or logs secrets (API hash, code,
password, session contents).

Credentials: ``--api-id``/``--api-hash`` or ``TG_API_ID``/``TG_API_HASH`` (from
https://my.telegram.org → API development tools). Session: ``--session`` or
``TGVOICE_TG_SESSION``, default ``~/.local/state/tgvoice/telegram.session`` (a Pyrogram
SQLite session; directory 0700, file 0600).
"""
import os
from pathlib import Path

from . import paths


class ConfigError(Exception):
    """Missing or bad configuration: the CLI prints it as one line and exits 78."""


class SessionMissing(Exception):
    """No usable session: the CLI prints it and exits 69 (run `tg-bridge login`)."""


def default_session_path():
    if os.environ.get("TGVOICE_TG_SESSION"):
        return Path(os.environ["TGVOICE_TG_SESSION"]).expanduser()
    return paths.xdg_state_base() / "telegram.session"


def credentials(api_id=None, api_hash=None):
    api_id = api_id or os.environ.get("TG_API_ID")
    api_hash = api_hash or os.environ.get("TG_API_HASH")
    if not api_id or not api_hash:
        raise ConfigError("Telegram API credentials missing: set TG_API_ID and TG_API_HASH (or pass "
                          "--api-id/--api-hash); create them at https://my.telegram.org → API development tools")
    try:
        api_id = int(api_id)
    except ValueError:
        raise ConfigError("TG_API_ID / --api-id must be a number (the 'App api_id' from my.telegram.org)") from None
    if len(api_hash) != 32 or any(c not in "0123456789abcdefABCDEF" for c in api_hash):
        raise ConfigError("TG_API_HASH / --api-hash must be the 32-hex-digit 'App api_hash' from my.telegram.org")
    return api_id, api_hash


def _session_parts(session_path):
    """Pyrogram stores ``<workdir>/<name>.session``."""
    session_path = Path(session_path).expanduser()
    if session_path.suffix != ".session":
        raise ConfigError(f"session file {session_path} must end in .session")
    return session_path.parent, session_path.stem


def make_client(api_id, api_hash, session_path, **kwargs):
    try:
        from pyrogram import Client
    except ImportError:
        raise SessionMissing("kurigram (pyrogram) is not installed: run scripts/setup venv bridge") from None
    workdir, name = _session_parts(session_path)
    return Client(name, api_id=api_id, api_hash=api_hash, workdir=str(workdir), **kwargs)


def require_session(session_path):
    session_path = Path(session_path).expanduser()
    if not session_path.is_file() or session_path.stat().st_size == 0:
        raise SessionMissing(f"no Telegram session at {session_path}: run `tg-bridge login` first "
                             "(or point --session / TGVOICE_TG_SESSION at one)")
    if session_path.stat().st_mode & 0o077:
        os.chmod(session_path, 0o600)
    return session_path


async def login(api_id, api_hash, session_path, phone=None, qr=False):
    """Interactive one-time login (phone + code + 2FA password, or QR); returns a short
    description of the account (name and id, nothing secret)."""
    session_path = Path(session_path).expanduser()
    workdir, _ = _session_parts(session_path)
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    old_umask = os.umask(0o077)       # the SQLite session (and its journal) are born 0600
    try:
        client = make_client(api_id, api_hash, session_path, phone_number=phone, hide_password=True)
        if qr:
            await client.connect()
            user = await client.authorize_qr()
            await client.disconnect()
        else:
            async with client:
                user = await client.get_me()
    finally:
        os.umask(old_umask)
    os.chmod(session_path, 0o600)
    return f"{user.first_name or ''} (id {user.id})".strip()

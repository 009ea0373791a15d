#!/usr/bin/env bash
# tg-bridge (bins/tg-bridge) into $TGVOICE_VENV: its pinned wheels come from bridge.pip (20-venv.sh);
# this step installs the package itself (console script $TGVOICE_VENV/bin/tg-bridge) and the one
# frame helper it imports, python/tgvoice_frames.py (as the module tgvoice_frames).
# Re-installs only when the package sources change (hash stamp in the venv). Every run records
# where this checkout's programs are ($TGVOICE_BIN) in $TGVOICE_VENV/share/tgvoice/bin-dir: the
# installed bridge runs them for voice messages and cannot find the checkout from its own path.
set -euo pipefail
. "$(dirname "$0")/../env.sh"
pkg="$TGVOICE_ROOT/bins/tg-bridge"
frames="$TGVOICE_ROOT/python"
[ -x "$TGVOICE_VENV/bin/pip" ] || die "no venv at $TGVOICE_VENV: run scripts/setup venv first"
mkdir -p "$TGVOICE_VENV/share/tgvoice"
(cd "$TGVOICE_BIN" 2>/dev/null && pwd || printf '%s' "$TGVOICE_BIN") > "$TGVOICE_VENV/share/tgvoice/bin-dir"
stamp="$TGVOICE_VENV/.tgvoice-bridge"
hash=$( (cd "$pkg" && find pyproject.toml src -type f -name '*.py' -o -name pyproject.toml | sort | xargs cat; cat "$frames/pyproject.toml" "$frames/tgvoice_frames.py") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] && [ -x "$TGVOICE_VENV/bin/tg-bridge" ]; then
    say "tg-bridge up to date"; exit 0
fi
# Build isolation fetches setuptools+wheel from PyPI once (cached by pip); the pinned
# dependencies are already there from bridge.pip, so pip only checks them.
"$TGVOICE_VENV/bin/pip" install -q --disable-pip-version-check "$frames" "$pkg"
rm -rf "$pkg/build" "$pkg"/src/*.egg-info "$frames/build" "$frames"/*.egg-info   # pip builds in-tree; leave the checkout clean
printf '%s' "$hash" > "$stamp"
say "tg-bridge installed: $TGVOICE_VENV/bin/tg-bridge"

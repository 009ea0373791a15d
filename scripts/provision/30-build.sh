#!/usr/bin/env bash
# Build every Rust program into target/release/, starting a fresh checkout from the cached
# dependencies (build-seed.sh) and caching them after.
set -euo pipefail
. "$(dirname "$0")/../env.sh"
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) and re-run"
cd "$TGVOICE_ROOT"
. scripts/provision/build-seed.sh
seed_restore
progress "building every program into target/release" "a fresh build takes about 4 min on 2 cores, ~1 min from the cache" \
    cargo build --release --workspace
seed_save

# Sourced by scripts/provision/30-build.sh and scripts/test: a cache of compiled dependencies.
#
# A fresh clone compiles every dependency from source (~7 min on 2 cores: whisper.cpp, ONNX
# Runtime bindings, tokio…), though only this project's own crates differ between clones. The
# seed, $TGVOICE_CACHE/cargo-seed, holds target/release's dependency outputs (deps, build
# scripts' outputs, fingerprints) without this project's crates, as a CI cache would. A
# checkout with no target/release starts from a copy of it, and cargo rebuilds what is not
# fresh, by its own fingerprints: a changed Cargo.lock, compiler or flag rebuilds what it
# concerns, so a stale seed costs time, never correctness. The seed is written again when
# Cargo.lock, the compiler or the cargo settings changed since it was made.

seed_dir() { printf '%s' "$TGVOICE_CACHE/cargo-seed"; }

# What the seed depends on.
seed_key() {
    { cat Cargo.lock .cargo/config.toml 2>/dev/null; sed -n '/^\[profile/,$p' Cargo.toml; rustc -vV; } | sha256sum | cut -d' ' -f1
}

# Copy the seed into an empty target/release (a fresh checkout).
seed_restore() {
    local seed; seed=$(seed_dir)
    [ ! -d target/release ] && [ -f "$seed/key" ] || return 0
    say "starting the build from the cached dependencies in $seed (cargo rebuilds what changed)"
    mkdir -p target/release
    cp -a --reflink=auto "$seed/release/." target/release/ || { rm -rf target/release; say "could not copy the seed; building from scratch"; }
}

# Save target/release's dependency outputs as the seed: a new seed when its key changed, else
# only what the seed lacks (the tests' own dependencies, after the first test build).
seed_save() {
    local seed key tmp; seed=$(seed_dir); key=$(seed_key)
    [ -d target/release/deps ] || return 0
    if [ "$(cat "$seed/key" 2>/dev/null)" = "$key" ]; then
        tmp=$seed
    else
        tmp="$seed.new.$$"; rm -rf "$tmp"; mkdir -p "$tmp/release"
    fi
    # This project's packages and targets (their outputs are rebuilt in every clone anyway).
    local own; own=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
m = json.load(sys.stdin)
names = set()
for p in m["packages"]:
    names.add(p["name"])
    for t in p["targets"]:
        names.add(t["name"].replace("-", "_"))
        names.add(t["name"])
print("\n".join(sorted(names)))')
    local d f base mine n
    for d in deps build .fingerprint; do
        [ -d "target/release/$d" ] || continue
        mkdir -p "$tmp/release/$d"
        for f in target/release/"$d"/*; do
            base=${f##*/}; base=${base#lib}; mine=0
            while IFS= read -r n; do
                case "$base" in "$n"-*) mine=1; break ;; esac
            done <<<"$own"
            [ $mine = 1 ] || [ -e "$tmp/release/$d/${f##*/}" ] || cp -a --reflink=auto "$f" "$tmp/release/$d/"
        done
    done
    if [ "$tmp" != "$seed" ]; then
        echo "$key" > "$tmp/key"
        rm -rf "$seed"; mv "$tmp" "$seed"
        say "cached the compiled dependencies for the next fresh clone: $seed ($(du -sh "$seed" | cut -f1))"
    fi
}

#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, from the seed corpus,
# failing loudly on a crash. Needs nightly and cargo-fuzz.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${1:-60}"
seed="${FUZZ_SEED:-0}" # 0: libFuzzer picks a random seed
for target in $(cargo +nightly fuzz list); do
    # New inputs go to a scratch corpus; the committed seeds are read only.
    scratch="target/corpus/$target"
    mkdir -p "$scratch" "corpus/$target"
    echo "== fuzzing $target for ${seconds}s"
    cargo +nightly fuzz run "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -seed="$seed"
done

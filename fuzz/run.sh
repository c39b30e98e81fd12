#!/usr/bin/env bash
# Runs each fuzz target for a while (default 60 s each):  fuzz/run.sh [SECONDS] [TARGET...]
# cargo-fuzz needs nightly features; on a stable toolchain RUSTC_BOOTSTRAP=1 enables them.
# A crash is saved under fuzz/artifacts/TARGET/; copy it to fuzz/regressions/TARGET/ and
# `cargo test --test it fuzz_corpora` replays it on stable from then on.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(route scope authorization token config)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
rustc --version | grep -q nightly || export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    echo "== $t for ${seconds}s"
    # New inputs go to work/ (not committed); corpus/ holds the seeds that are.
    mkdir -p "work/$t" "corpus/$t"
    cargo fuzz run --sanitizer none "$t" "work/$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=4096
done

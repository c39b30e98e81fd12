#!/usr/bin/env bash
# regate benchmark: registry:2 alone vs nginx (distribution recipe) vs regate, on loopback.
#
#   benches/run.sh [--quick] [--keep] [--tmpdir DIR] [--save-baseline] [--serve]
#   benches/run.sh --connections-only   # idle-connection RSS rows alone (about a minute)
#   (all options: benches/run.sh --help)
#
# Debian packages this needs (installed with apt-get when missing):
#   docker-registry nginx skopeo apache2-utils openssl python3 curl wrk hey
# plus a Rust toolchain (cargo) to build regate's release binary.
#
# Everything runs as the current user on 127.0.0.1 with free ports and a temp dir that is
# removed at the end (--keep leaves it for inspection). See BENCHMARKS.md.
set -euo pipefail

PACKAGES=(docker-registry nginx skopeo apache2-utils openssl python3 curl wrk hey)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    # Installing nginx starts the distribution's service on :80 where a service manager
    # runs; the benchmark does not use it (its own nginx runs from the temp dir).
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
echo "building regate and the storm load generator (release) in $CARGO_TARGET_DIR" >&2
(cd "$repo" && cargo build --release --quiet --bin regate)
# benches/storm.rs (the pull storm, manifest rows and the delay relay): cargo names the
# binary with a hash, so ask it where it put it.
storm="$(cd "$repo" && cargo build --release --quiet --bench storm --message-format=json \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "storm" and m.get("executable"):
        print(m["executable"])')"
[ -x "$storm" ] || { echo "could not build benches/storm.rs" >&2; exit 1; }

exec python3 "$here/bench.py" --regate "$CARGO_TARGET_DIR/release/regate" --storm "$storm" "$@"

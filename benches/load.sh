#!/usr/bin/env bash
# The concurrent load test (tests/it/load.rs) at a larger size than CI runs it: LOAD_CLIENTS
# skopeo clients (default 64) each push an image of LOAD_LAYERS layers (default 8) through
# one regate and pull it back, all at once; then every image is pulled a second time and
# each manifest and blob digest is checked against what the registry serves; regate must
# answer no request with a 5xx.
#
#   benches/load.sh                          # 64 clients x 8 layers
#   LOAD_CLIENTS=200 LOAD_LAYERS=4 benches/load.sh
#
# Needs what the integration tests need: docker-registry and skopeo (tests/run.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

export REGATE_LOAD_CLIENTS="${LOAD_CLIENTS:-64}"
export REGATE_LOAD_LAYERS="${LOAD_LAYERS:-8}"
# Each skopeo process holds a few descriptors, and regate one or two per client.
ulimit -n 65536 2>/dev/null || true
exec cargo test --release --locked --test it -- --exact load::concurrent_pushes_and_pulls_lose_nothing --nocapture

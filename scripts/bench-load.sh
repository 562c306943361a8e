#!/usr/bin/env bash
# Side-by-side load run: bare Pingora (also with nexus-edge's timeouts) vs nexus-edge (cache on / off)
# vs HAProxy and nginx (installed by deps.sh --load).
# Pass --smoke for a 1-second-per-target check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --load
cargo build -q --release -p nexus-edge --bin nexus-edge -p nexus-bench --bin load --bin bare-proxy
exec "${CARGO_TARGET_DIR:-target}/release/load" "$@"

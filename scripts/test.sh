#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit + property + end-to-end tests (real
# nexus-edge binary, real HTTP backends, real redis-server), the shipped example config, and a
# smoke run of the benchmarks so they never rot. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --test

echo "== fmt"
cargo fmt --all --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
# The end-to-end tests run the real binary: build it first.
cargo build -q -p nexus-edge --bin nexus-edge
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
echo "== example config"
cargo run -q -p nexus-edge -- check --config deploy/nexus-edge.example.toml
echo "== bench smoke"
NEXUS_BENCH_SMOKE=1 cargo bench -q -p nexus-bench --bench decision -- --test
echo "all checks passed"

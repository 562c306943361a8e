#!/usr/bin/env bash
# Runs every check and test: formatting, lints, the shipped example config, a smoke run of the
# benchmarks and harnesses (so they never rot), then unit + property + end-to-end tests (real
# nexus-edge binary, real HTTP backends, real redis-server). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --test

# A clean build of every profile this script uses (check, debug, release) takes about 5 GB of
# target dir. Say so before starting rather than dying halfway with "No space left on device".
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
free_kb=$(df -Pk "$target_dir" | awk 'NR==2 {print $4}')
if [[ -n "$free_kb" ]] && ((free_kb < 6 * 1024 * 1024)); then
  echo "warning: only $((free_kb / 1024)) MB free for $target_dir; a clean run needs about 6 GB" >&2
fi
# Incremental caches only pay off when rebuilding; a CI run builds once and they double the disk.
if [[ "${CI:-}" == "true" ]]; then
  export CARGO_INCREMENTAL=0
fi

echo "== fmt"
cargo fmt --all --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== fuzz targets compile (fuzzing itself: fuzz/README.md)"
# Its own workspace, so its own lock file: --locked fails (instead of rewriting a tracked file)
# when a dependency change in the main workspace was not carried into fuzz/Cargo.lock.
cargo clippy -q --locked --manifest-path fuzz/Cargo.toml --target-dir "$target_dir" --bins -- -D warnings
echo "== example config"
cargo run -q -p nexus-edge -- check --config deploy/nexus-edge.example.toml
echo "== bench smoke (the benches and harnesses must keep working; figures are not judged here)"
NEXUS_BENCH_SMOKE=1 cargo bench -q -p nexus-bench --bench decision --bench table --bench certs --bench scale -- --test
cargo build -q --release -p nexus-edge --bin nexus-edge -p nexus-bench --bin load --bin bare-proxy --bin redis-bench
"$target_dir/release/load" --smoke
"$target_dir/release/load" --smoke --addresses
"$target_dir/release/redis-bench" --smoke
echo "== tests"
# The end-to-end tests run the real binary: build it first.
cargo build -q -p nexus-edge --bin nexus-edge
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

#!/usr/bin/env bash
# Installs the system packages Nexus Edge needs, or says exactly what is missing.
#   cmake, a C compiler: Pingora's compression dependency (zlib-ng) and ring build C code.
#   redis-server:        the integration tests start real Redis servers (only with --test).
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(gcc)
if [[ "${1:-}" == "--test" ]]; then
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
fi
command -v cargo >/dev/null 2>&1 || { echo "error: cargo is not installed (install Rust with rustup first)" >&2; exit 1; }

if ((${#need[@]})); then
  echo "installing system packages: ${need[*]}" >&2
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "error: missing system packages: ${need[*]} — install them with your package manager" >&2
    exit 1
  fi
fi

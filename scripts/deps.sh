#!/usr/bin/env bash
# Installs the system packages Nexus Edge needs, or says exactly what is missing.
#   cmake, make, cc:     Pingora's compression dependency (zlib-ng), ring and aws-lc build C code.
#   c++:                 libFuzzer, built for the fuzz targets' compile check (--test).
#   redis-server, wrk:   the tests start real Redis servers; CI runs the load harness smoke (--test).
#   faketime:            tests run a replica or admin whose clock is off from the host's (--test).
#   promtool:            the shipped Prometheus alert rules are checked and unit-tested (--test;
#                        Debian's prometheus package, without its recommends: no server is run).
#   wrk, haproxy, nginx: the side-by-side load harness (--load).
set -euo pipefail

need=()
lean=() # installed without their recommended packages
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v make >/dev/null 2>&1 || need+=(make) # cmake generates Makefiles for zlib-ng
command -v cc >/dev/null 2>&1 || need+=(gcc)
if [[ "${1:-}" == "--test" ]]; then
  command -v c++ >/dev/null 2>&1 || need+=(g++) # libFuzzer, built for the fuzz targets' compile check
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v faketime >/dev/null 2>&1 || need+=(faketime)
  command -v promtool >/dev/null 2>&1 || lean+=(prometheus)
fi
if [[ "${1:-}" == "--load" ]]; then
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
  command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
  command -v taskset >/dev/null 2>&1 || need+=(util-linux)
fi
command -v cargo >/dev/null 2>&1 || { echo "error: cargo is not installed (install Rust with rustup first)" >&2; exit 1; }

all=("${need[@]}" "${lean[@]}")
if ((${#all[@]})); then
  echo "installing system packages: ${all[*]}" >&2
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
    sudo=()
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "error: missing system packages: ${all[*]} — install them with your package manager" >&2
    exit 1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  if ((${#need[@]})); then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if ((${#lean[@]})); then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
  fi
fi

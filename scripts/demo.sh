#!/usr/bin/env bash
# Builds nexus-edge and starts the demo: three tenants, two demo instances, copy-paste curl lines.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
exec cargo run -q -p nexus-edge -- demo "$@"

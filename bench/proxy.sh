#!/usr/bin/env bash
# Proxy benchmark: Shakedown vs direct, nginx, HAProxy and Envoy, side by side on loopback.
# Usage: bash bench/proxy.sh [--quick] [--rounds N]   (installs peers via bench/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/setup.sh
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 bench/proxy.py "$@"

#!/usr/bin/env bash
# Proxy benchmark: Shakedown vs direct, nginx, HAProxy and Envoy, side by side on loopback.
#
#   bash bench/proxy.sh            # 3 interleaved rounds, about 7 minutes
#   bash bench/proxy.sh --quick    # 1 short round, a smoke run of under 2 minutes
#   bash bench/proxy.sh --rounds 5
#
# Prints a markdown table and writes it to bench/results/proxy-<date>[-quick].md.
# The measuring and the process bookkeeping are in bench/proxy.py (see its docstring); this
# wrapper only prepares the machine. Only 127.0.0.1 is ever targeted.
set -euo pipefail
cd "$(dirname "$0")/.."

# Peers (nginx, HAProxy, Envoy) and load generators (wrk, oha); a no-op when all are there.
bash bench/setup.sh

# The binary under test, and the upstream every target forwards to (`shakedown stub`).
cargo build --release -q -p shakedown

# 1000 held connections per server plus wrk's and oha's: the default 1024 fds is not enough.
# Children (the servers, the load generators) inherit the raised limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# exec: the Python process receives the signals sent to this script, and on SIGINT, SIGTERM or
# SIGHUP (or any failure) stops every server it started before exiting.
exec python3 bench/proxy.py "$@"

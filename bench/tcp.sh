#!/usr/bin/env bash
# TCP proxy benchmark: Shakedown's Toxiproxy-compatible TCP proxy vs direct and `fault`
# (crates.io fault-cli 1.x), side by side on loopback: throughput both ways, connections per
# second, and the precision of a 100 ms latency fault.
#
#   bash bench/tcp.sh              # 5 interleaved rounds, about 4 minutes
#   bash bench/tcp.sh --quick      # 1 short round, a smoke run of about a minute
#   bash bench/tcp.sh --rounds 3 --gib 1
#
# Prints markdown tables and writes them to bench/results/tcp-<date>[-quick].md.
# The measuring and the process bookkeeping are in bench/tcp.py (see its docstring); this
# wrapper only prepares the machine. Only 127.0.0.1 is ever targeted.
set -euo pipefail
cd "$(dirname "$0")/.."

# The peer (fault, into bench/.venv) and iperf3 (the direct path's cross-check); setup.sh also
# installs the HTTP benchmarks' peers. A no-op when all are there.
bash bench/setup.sh

# The binary under test (`shakedown toxiproxy`).
cargo build --release -q -p shakedown

# A rate run opens thousands of connections per target, each one twice through a proxy.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# exec: the Python process receives the signals sent to this script, and on SIGINT, SIGTERM or
# SIGHUP (or any failure) stops the upstreams, the proxies and any client still running.
exec python3 bench/tcp.py "$@"

#!/usr/bin/env bash
# Load-generator benchmark: `shakedown load` vs oha and wrk, side by side on loopback.
#
#   bash bench/load.sh                # 3 interleaved rounds of 5 s runs, about 2 minutes
#   bash bench/load.sh --quick        # 1 round of 3 s runs, a smoke run of under a minute
#   bash bench/load.sh --rounds 5 --rates 500,1000,20000
#
# Prints markdown tables and writes them to bench/results/load-<date>[-quick].md.
# The measuring and the process bookkeeping are in bench/load.py (see its docstring); this
# wrapper only prepares the machine. Only 127.0.0.1 is ever targeted.
set -euo pipefail
cd "$(dirname "$0")/.."

# The load generators compared against (wrk, oha; setup.sh also installs the proxy bench's peers);
# a no-op when all are there.
bash bench/setup.sh

# The load generator under test, and the upstream every tool targets (`shakedown stub`).
cargo build --release -q -p shakedown

# exec: the Python process receives the signals sent to this script, and on SIGINT, SIGTERM or
# SIGHUP (or any failure) stops the upstream and any load generator still running before exiting.
exec python3 bench/load.py "$@"

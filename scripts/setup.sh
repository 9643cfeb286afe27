#!/usr/bin/env bash
# Installs everything the demo and the test suite need on a fresh machine, and nothing else.
# Idempotent and non-interactive (safe under CI=true with no stdin).
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
    echo "setup: cargo is missing; install the Rust toolchain named in rust-toolchain.toml" >&2
    exit 1
fi
# The toolchain pinned in rust-toolchain.toml, with rustfmt and clippy (a no-op when present).
if need rustup; then
    rustup show active-toolchain >/dev/null
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
# cargo-nextest runs the suite (one summary line, per-test timeouts).
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
# Debian packages: a C++ compiler (libFuzzer, for the fuzz target's build check) and a real
# Prometheus (the test that runs seed 000's PromQL against the proxy).
missing=()
need c++ || missing+=(g++)
need prometheus || missing+=(prometheus)
# Node.js and npm: a Toxiproxy client library we did not write drives our Toxiproxy API.
need node || missing+=(nodejs)
need npm || missing+=(npm)
if ((${#missing[@]})); then
    if ! need apt-get; then
        echo "setup: please install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends and policy-rc.d: install the binary, do not start a system service.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi
# Toxiproxy's Node client, pinned by its lockfile (crates/shakedown/tests/toxiproxy_client.rs).
npm ci --prefix crates/shakedown/tests/toxiproxy-client --no-audit --no-fund --loglevel=error
echo "setup: ok"

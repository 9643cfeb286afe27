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
# C and C++ compilers build libFuzzer for the fuzz target's build check.
if ! need c++; then
    if need apt-get; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq g++ >/dev/null
    else
        echo "setup: a C++ compiler is needed to build the fuzz target" >&2
        exit 1
    fi
fi
echo "setup: ok"

#!/usr/bin/env bash
# The whole test suite: formatting, lints, docs, the fuzz target's build, doc tests, then every
# unit and integration test (last, so its summary closes the output).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "fuzz target builds"
cargo build --quiet --manifest-path fuzz/Cargo.toml

step "doc tests"
cargo test --workspace --doc --quiet

step "tests"
cargo nextest run --workspace --no-fail-fast

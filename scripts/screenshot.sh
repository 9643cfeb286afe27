#!/usr/bin/env bash
# Renders the README's report screenshots: runs the demo experiment (fragile mode, so the report
# shows a failure) and the inflection sweep, then has headless Chromium draw their HTML reports
# into docs/report.png and docs/sweep.png. Installs Debian's chromium if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
cargo build --release -p shakedown
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# Exit 1 is the expected verdict of the fragile search service.
./target/release/shakedown --log warn run examples/seed-000/experiment.yaml --set resilience=off \
    --state-dir "$out/state" --report-dir "$out/report" || test $? -eq 1
./target/release/shakedown --log warn run examples/seed-000/sweep.yaml \
    --state-dir "$out/state" --report-dir "$out/sweep" >/dev/null

shot() {
    timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --screenshot="$1" --window-size="$2" "file://$3" 2>/dev/null
}
mkdir -p docs
shot docs/report.png 1280,1800 "$out/report/report.html"
shot docs/sweep.png 900,800 "$out/sweep/sweep.html"
echo "screenshot: docs/report.png, docs/sweep.png"

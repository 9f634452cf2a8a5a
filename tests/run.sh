#!/usr/bin/env bash
# The whole test run: prerequisites, formatting, lints, every test, and
# `sluice check` on each example config. Used by CI (.ci/run) and by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/prereqs.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

echo "== cargo build"
cargo build --quiet

echo "== sluice check conf/*.toml"
./target/debug/sluice check conf/*.toml

echo "== cargo test (all but the real llama-server tier)"
cargo test --no-fail-fast -- --skip real_server:: 2>&1 | tee target/test-output.txt

# Tiers with real external parts; each installs what it needs and prints
# "<name>: N passed, M failed". Run them all, then fail if any failed.
failed=0
for tier in .ci/real.sh .ci/observability.sh .ci/ops.sh .ci/console.sh .ci/cluster.sh .ci/bench-smoke.sh; do
  [ -f "$tier" ] || continue
  echo "== $tier"
  if ! bash "$tier" 2>&1 | tee -a target/test-output.txt; then
    echo "$tier FAILED"
    failed=1
  fi
done

summary=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' target/test-output.txt \
  | awk '{p += $4; f += $6} END {print p+0 " passed, " f+0 " failed"}')
echo "tests: $summary"
exit $failed

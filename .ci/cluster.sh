#!/usr/bin/env bash
# Cluster tier, called by tests/run.sh (and .ci/run): replicas sharing
# limits and a fleet through a REAL redis-server (tests/cluster_redis.rs,
# tests/cluster_fleet.rs), and a smoke of the 100-backend simulation
# (loadtest/fleet100 --smoke, ~35 s: 100 simulated servers behind 4
# replicas; fails on an error or a refusal without Retry-After). Installs
# Debian's redis-server when it is missing; the tests start and kill their
# own servers on free loopback ports. A missing redis-server fails the
# tests, it never skips them.
#
# Prints "cluster: N passed, M failed" and exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null; then
  echo "cluster: installing redis-server with apt-get" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
    || { echo "cluster: apt-get install redis-server failed"; echo "cluster: 0 passed, 1 failed"; exit 1; }
fi
# Debian's package starts a system redis on 6379; the tests do not use it.
echo "== $(redis-server --version)"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test --test cluster_redis --test cluster_fleet -- --test-threads=1 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$out" | awk '{p += $4} END {print p+0}')
failed=$(grep -Eo '[0-9]+ failed' "$out" | tail -1 | awk '{print $1+0}')
failed=${failed:-0}
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "== loadtest/fleet100 --smoke"
if timeout 120 python3 loadtest/fleet100 --smoke --binary target/debug/sluice; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi
echo "cluster: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

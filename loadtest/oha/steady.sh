#!/usr/bin/env bash
# oha steady: a constant rate well under capacity (default 10 req/s: ~40 % of
# the local 3x4-slot fleet at n_predict 32) for DURATION (default 60s), with
# latency correction (no coordinated omission). Read p95/p99 and expect 200s;
# the run fails on any answer but 200 or 503 (a 503 is a shed answer: allowed,
# since a slow machine may fill the fleet; read the share in the summary).
source "$(dirname "$0")/common.sh"
ensure_oha; ensure_target
run_oha steady -z "${DURATION:-60s}" -q "${RATE:-10}" -c "${CONNS:-32}" --latency-correction -t 30s
check_statuses "$OUT/steady.json" 200 503

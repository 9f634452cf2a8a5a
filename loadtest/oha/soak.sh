#!/usr/bin/env bash
# oha soak: 70 % of capacity (default 20 req/s) for DURATION (default 30m).
# Compare p99 and the gateway's RSS at the start and the end (printed when
# the local Sluice is used) to spot leaks and slow drifts. Fails on any
# answer but 200 or 503.
source "$(dirname "$0")/common.sh"
ensure_oha; ensure_target
rss() { [ -n "${SLUICE_PID:-}" ] && awk '/VmRSS/ {print "sluice RSS: " $2 " KiB"}' "/proc/$SLUICE_PID/status" >&2 || true; }
rss
run_oha soak -z "${DURATION:-30m}" -q "${RATE:-20}" -c "${CONNS:-64}" --latency-correction -t 30s
rss
check_statuses "$OUT/soak.json" 200 503

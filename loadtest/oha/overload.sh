#!/usr/bin/env bash
# oha overload: 3x the fleet's capacity (default 80 req/s against the local
# 3x4-slot fleet, ~28/s at n_predict 32) for DURATION (default 60s), each
# request allowed DEADLINE (default 1s) of waiting at the gateway. Expect a
# mix of 200s and fast 503s; a Retry-After probe of PROBES (20; 0: none) curl
# requests runs halfway through. Fails
# on any answer but 200 or 503, and when a probed 503 lacks Retry-After.
source "$(dirname "$0")/common.sh"
ensure_oha; ensure_target
DUR=${DURATION:-60s}
half=${DUR%s}; [[ "$half" =~ ^[0-9]+$ ]] && half=$((half / 2)) || half=30
probe=
if [ "${PROBES:-20}" -gt 0 ]; then
  ( sleep "$half"; probe_retry_after "${PROBES:-20}" ) &
  probe=$!
fi
run_oha overload -z "$DUR" -q "${RATE:-80}" -c "${CONNS:-256}" --latency-correction -t 30s \
  -H "x-sluice-deadline: ${DEADLINE:-1s}"
[ -z "$probe" ] || wait "$probe"
check_statuses "$OUT/overload.json" 200 503

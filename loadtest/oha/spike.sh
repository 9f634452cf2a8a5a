#!/usr/bin/env bash
# oha spike: a baseline (default 8 req/s for 40s) with a burst of SPIKE_RATE
# (default 150 req/s, ~5x the local fleet) on up to SPIKE_CONNS (200)
# connections from t=10s to t=20s on top. Two JSON files: spike-baseline.json
# (what steady users saw through the spike) and spike.json. Fails on any
# answer but 200 or 503 in either.
source "$(dirname "$0")/common.sh"
ensure_oha; ensure_target
run_oha spike-baseline -z "${BASE_DURATION:-40s}" -q "${RATE:-8}" -c 32 --latency-correction -t 30s \
  -H "x-sluice-deadline: ${DEADLINE:-2s}" &
base=$!
sleep "${SPIKE_AT:-10}"
run_oha spike -z "${SPIKE_DURATION:-10s}" -q "${SPIKE_RATE:-150}" -c "${SPIKE_CONNS:-200}" --latency-correction -t 30s \
  -H "x-sluice-deadline: ${DEADLINE:-2s}"
wait "$base"
check_statuses "$OUT/spike-baseline.json" 200 503
check_statuses "$OUT/spike.json" 200 503

#!/usr/bin/env bash
# oha smoke: REQUESTS (default 20) requests, 2 connections. Every answer must be a 200.
#   bash loadtest/oha/smoke.sh                    # local Sluice + 3 sims
#   TARGET=http://127.0.0.1:8080 bash loadtest/oha/smoke.sh
source "$(dirname "$0")/common.sh"
ensure_oha; ensure_target
run_oha smoke -n "${REQUESTS:-20}" -c 2 -t 30s
check_statuses "$OUT/smoke.json" 200
echo "smoke: ok; JSON in $OUT" >&2

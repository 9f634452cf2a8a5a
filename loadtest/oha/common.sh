# Shared by the oha profiles (sourced, not run). Each profile:
#   - uses $OHA_BIN, else `oha` on PATH, else the pinned oha cached by
#     .ci/loadgen-tools.sh ($SLUICE_CACHE/oha/bin/oha), installing it there
#     when missing (it compiles: ~10 minutes; NO_INSTALL=1 makes a missing oha
#     an error instead),
#   - sends its load to $TARGET (e.g. http://127.0.0.1:8080) or, when TARGET
#     is unset, to a local Sluice in front of 3 `sluice sim` (4 slots each)
#     that it starts on free loopback ports and stops on exit (binary:
#     $SLUICE_BIN, default target/release/sluice, built if missing),
#   - keeps oha's JSON output in $OUT (default loadtest/out/oha/<time>/),
#     prints a one-line summary per run, and fails when an answer was neither
#     a 200 nor (where the profile allows it) a 503, or a request got no
#     answer (check_statuses). oha's JSON has no headers: Retry-After is not
#     checked here (the k6 profiles check it on every answer).
# Request: POST /completion {"prompt":"Hello","n_predict":$N_PREDICT}.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
N_PREDICT=${N_PREDICT:-32}
OUT=${OUT:-$ROOT/loadtest/out/oha/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
BODY="{\"prompt\":\"Hello\",\"n_predict\":$N_PREDICT}"
_pids=()
_cleanup() { for p in "${_pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap _cleanup EXIT INT TERM

ensure_oha() {
  if [ -z "${OHA_BIN:-}" ]; then
    OHA_BIN=$(command -v oha || true)
    if [ -z "$OHA_BIN" ]; then
      # shellcheck source=../../.ci/loadgen-tools.sh
      source "$ROOT/.ci/loadgen-tools.sh"
      if [ "${NO_INSTALL:-0}" = 1 ] && [ ! -x "$LOADGEN_CACHE/oha/bin/oha" ]; then
        echo "oha not found (bash .ci/loadgen-tools.sh installs it)" >&2; exit 1
      fi
      ensure_oha_bin || exit 1
    fi
  fi
  # oha >= 1.9 spells JSON output --output-format json; older ones --json
  if "$OHA_BIN" --help 2>&1 | grep -q -- '--output-format'; then OHA_JSON=(--output-format json); else OHA_JSON=(--json); fi
  # -z runs: wait for the requests still in flight at the deadline instead of
  # counting them as aborted (oha >= 1.5)
  OHA_WAIT=()
  if "$OHA_BIN" --help 2>&1 | grep -q -- '--wait-ongoing-requests-after-deadline'; then OHA_WAIT=(-w); fi
}

_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts 3 simulated backends and Sluice unless TARGET is set.
ensure_target() {
  if [ -n "${TARGET:-}" ]; then echo "target: $TARGET" >&2; return; fi
  local bin=${SLUICE_BIN:-$ROOT/target/release/sluice} work servers="" i port gw admin
  [ -x "$bin" ] || (cd "$ROOT" && cargo build --release --quiet)
  work=$(mktemp -d)
  for i in 0 1 2; do
    port=$(_free_port)
    "$bin" sim --listen "127.0.0.1:$port" --slots 4 --seed $((i + 1)) >"$work/sim$i.log" 2>&1 &
    _pids+=($!)
    servers+=$'[[backends]]\n'"name = \"b$i\""$'\n'"url = \"http://127.0.0.1:$port\""$'\n\n'
  done
  gw=$(_free_port); admin=$(_free_port)
  python3 - "$ROOT/loadtest/conf/sluice.toml.tmpl" "$work/sluice.toml" "$gw" "$admin" "${SLUICE_WAIT:-2s}" "$servers" <<'PY'
import string, sys
t = string.Template(open(sys.argv[1]).read())
open(sys.argv[2], "w").write(t.substitute(port=sys.argv[3], admin_port=sys.argv[4], threads=1,
                                          queue_timeout=sys.argv[5], servers=sys.argv[6]))
PY
  RUST_LOG=warn "$bin" run --config "$work/sluice.toml" --run-dir "$work" >"$work/sluice.log" 2>&1 &
  SLUICE_PID=$!
  _pids+=($SLUICE_PID)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null || { cat "$work/sluice.log" >&2; echo "sluice not ready" >&2; exit 1; }
  TARGET=http://127.0.0.1:$gw
  ADMIN=http://127.0.0.1:$admin
  echo "target: local Sluice $TARGET (admin $ADMIN) in front of 3 sims x 4 slots; logs in $work" >&2
}

# run_oha NAME [oha flags...]: one oha run, JSON kept in $OUT/NAME.json.
run_oha() {
  local name=$1; shift
  echo "oha $name: $*" >&2
  local wait=() a
  for a in "$@"; do [ "$a" = -z ] && wait=("${OHA_WAIT[@]}"); done
  "$OHA_BIN" --no-tui "${OHA_JSON[@]}" "${wait[@]}" -m POST -T application/json -d "$BODY" "$@" "$TARGET/completion" >"$OUT/$name.json"
  summarize "$OUT/$name.json" "$name"
}

# One line per run from oha's JSON (field names of oha 1.x).
summarize() {
  python3 - "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s, p = d.get("summary", {}), d.get("latencyPercentiles", {})
codes = d.get("statusCodeDistribution", {})
errs = d.get("errorDistribution", {})
total = sum(codes.values())
ms = lambda v: "-" if v is None else f"{v * 1000:.0f} ms"
print(f"{sys.argv[2]}: {total} responses, {s.get('requestsPerSec', 0):.1f} req/s, "
      f"p50 {ms(p.get('p50'))}, p95 {ms(p.get('p95'))}, p99 {ms(p.get('p99'))}, "
      f"status {codes}, errors {errs or 'none'}  [{sys.argv[1]}]")
PY
}

# check_statuses FILE CODE...: fails (exit 1) unless every answer in oha's
# JSON FILE has one of the status CODEs, there was at least one answer, and
# no request ended in an error (refused, reset, timed out, aborted).
check_statuses() {
  local file=$1; shift
  python3 - "$file" "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
allowed = set(sys.argv[2:])
codes = d.get("statusCodeDistribution", {})
errs = d.get("errorDistribution", {})
bad = {k: v for k, v in codes.items() if k not in allowed}
problems = []
if not codes:
    problems.append("no answers")
if bad:
    problems.append(f"answers other than {sorted(allowed)}: {bad}")
if errs:
    problems.append(f"requests without an answer: {errs}")
if problems:
    sys.exit(f"{sys.argv[1]}: " + "; ".join(problems))
PY
}

# probe_retry_after N: N concurrent curl requests (while load runs); prints how
# many were 503 and how many of those carried Retry-After (oha's JSON has no
# headers), and fails when a 503 lacked it or a request got no answer.
probe_retry_after() {
  local n=${1:-20} d i cpids=(); d=$(mktemp -d)
  for i in $(seq "$n"); do
    curl -s -o /dev/null -D "$d/$i" -XPOST -H 'content-type: application/json' \
      -H "x-sluice-deadline: ${DEADLINE:-1s}" -d "$BODY" --max-time 30 "$TARGET/completion" &
    cpids+=($!)
  done
  wait "${cpids[@]}" || true # curl's own failures are counted below, as unanswered
  local n503=0 nra=0 nnone=0 f
  for f in "$d"/*; do
    if ! grep -q '^HTTP/' "$f"; then nnone=$((nnone + 1)); continue; fi
    if grep -q '^HTTP/1.1 503' "$f"; then
      n503=$((n503 + 1))
      if grep -qi '^retry-after:' "$f"; then nra=$((nra + 1)); fi
    fi
  done
  echo "retry-after probe: $n requests, $nnone unanswered, $n503 answered 503, $nra of them with Retry-After" | tee "$OUT/retry-after-probe.txt" >&2
  rm -rf "$d"
  [ "$n503" -eq "$nra" ] && [ "$nnone" -eq 0 ]
}

# Shared by the oha profiles (sourced, not run). Each profile:
#   - installs oha with `cargo install oha --locked` when it is missing
#     (~10 minutes; NO_INSTALL=1 makes a missing oha an error instead),
#   - sends its load to $TARGET (e.g. http://127.0.0.1:8080) or, when TARGET
#     is unset, to a local Sluice in front of 3 `sluice sim` (4 slots each)
#     that it starts on free loopback ports and stops on exit (binary:
#     $SLUICE_BIN, default target/release/sluice, built if missing),
#   - keeps oha's JSON output in $OUT (default loadtest/out/oha/<time>/) and
#     prints a one-line summary per run.
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
  if ! command -v oha >/dev/null && [ -x "$HOME/.cargo/bin/oha" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi
  if ! command -v oha >/dev/null; then
    [ "${NO_INSTALL:-0}" = 1 ] && { echo "oha not found (cargo install oha --locked)" >&2; exit 1; }
    echo "oha not found: cargo install oha --locked (takes ~10 minutes)" >&2
    cargo install oha --locked >&2
    PATH="$HOME/.cargo/bin:$PATH"
  fi
  # oha >= 1.9 spells JSON output --output-format json; older ones --json
  if oha --help 2>&1 | grep -q -- '--output-format'; then OHA_JSON=(--output-format json); else OHA_JSON=(--json); fi
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
  oha --no-tui "${OHA_JSON[@]}" -m POST -T application/json -d "$BODY" "$@" "$TARGET/completion" >"$OUT/$name.json"
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

# probe_retry_after N: N concurrent curl requests (while load runs); prints how
# many were 503 and how many of those carried Retry-After (oha's JSON has no headers).
probe_retry_after() {
  local n=${1:-20} d i cpids=(); d=$(mktemp -d)
  for i in $(seq "$n"); do
    curl -s -o /dev/null -D "$d/$i" -XPOST -H 'content-type: application/json' \
      -H "x-sluice-deadline: ${DEADLINE:-1s}" -d "$BODY" --max-time 30 "$TARGET/completion" &
    cpids+=($!)
  done
  wait "${cpids[@]}"
  local n503=0 nra=0 f
  for f in "$d"/*; do
    if grep -q '^HTTP/1.1 503' "$f"; then
      n503=$((n503 + 1))
      if grep -qi '^retry-after:' "$f"; then nra=$((nra + 1)); fi
    fi
  done
  echo "retry-after probe: $n requests, $n503 answered 503, $nra of them with Retry-After" | tee "$OUT/retry-after-probe.txt" >&2
  rm -rf "$d"
}

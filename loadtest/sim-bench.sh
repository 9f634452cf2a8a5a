#!/usr/bin/env bash
# Throughput of one `sluice sim` process on small non-streaming requests
# with zero-length generation (`n_predict: 0`): the cost of the simulator
# itself (HTTP, JSON, the queueing model), not of a modelled GPU.
#
# Not a timed test: run it by hand and read the figure.
#   loadtest/sim-bench.sh                 # defaults below
#   DURATION=20s CONNS=64 THREADS=1 loadtest/sim-bench.sh
#   SIM_FLAGS="--slots 64" loadtest/sim-bench.sh   # realistic 1000 tok/s prompts
#
# Needs wrk (`apt-get install -y wrk`). Builds the release binary if needed.
# The sim gets enough slots and prompt speed that it never queues, so the
# figure is the HTTP/engine ceiling: 64 slots; a 2-token prompt at 1e6
# tok/s is 2 µs of modelled work.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}          # wrk threads; leave a core to the sim
SIM_THREADS=${SIM_THREADS:-}   # TOKIO_WORKER_THREADS for the sim (default: cores)
PORT=${PORT:-18181}
BIN=${BIN:-target/release/sluice}
# Enough slots that nothing queues; prompt work of microseconds.
SIM_FLAGS=${SIM_FLAGS:---slots 64 --prompt-tps 1000000}

command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release --bin sluice

LUA=$(mktemp --suffix .lua)
OUT=$(mktemp)
trap 'kill "$SIM_PID" 2>/dev/null || true; rm -f "$LUA" "$OUT"' EXIT
cat >"$LUA" <<'LUA'
wrk.method = "POST"
wrk.path   = "/completion"
wrk.body   = '{"prompt":"hi","n_predict":0}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("non-2xx (counted by wrk): %d\n", summary.errors.status))
end
LUA

${SIM_THREADS:+env TOKIO_WORKER_THREADS=$SIM_THREADS} "$BIN" sim \
  --listen "127.0.0.1:$PORT" $SIM_FLAGS >"$OUT" 2>&1 &
SIM_PID=$!
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { cat "$OUT"; echo "sim did not start" >&2; exit 1; }

echo "# one request:"
curl -s -XPOST "http://127.0.0.1:$PORT/completion" -d '{"prompt":"hi","n_predict":0}' | head -c 200; echo
echo "# warm-up 2s"
wrk -t"$THREADS" -c"$CONNS" -d2s -s "$LUA" "http://127.0.0.1:$PORT" >/dev/null
echo "# wrk -t$THREADS -c$CONNS -d$DURATION  (cores: $(nproc))"
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$LUA" "http://127.0.0.1:$PORT"
echo "# sim counters:"
curl -s "http://127.0.0.1:$PORT/sim/counters"; echo

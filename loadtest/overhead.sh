#!/usr/bin/env bash
# Proxy overhead: small non-streaming requests straight to one simulated
# llama-server and through Sluice, same load generator (wrk), one run.
# Prints a Markdown table (requests/s, p50/p99 latency, ratios, Sluice CPU
# time per request) and appends it to loadtest/RESULTS.md with --write.
#
#   bash loadtest/overhead.sh [--duration 10] [--connections 32] [--write]
#
# Loopback only; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10
CONNS=32
WRITE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --write) WRITE=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

command -v wrk >/dev/null || { echo "installing wrk" >&2; apt-get install -y -qq wrk >/dev/null; }
bash tests/prereqs.sh
cargo build --release --quiet
BIN=target/release/sluice

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

SIM_PORT=$(free_port)
$BIN sim --listen 127.0.0.1:$SIM_PORT --slots 256 >/dev/null 2>&1 &
pids+=($!)

GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
WORK=$(mktemp -d)
cat > "$WORK/sluice.toml" <<CONF
[server]
listen = "127.0.0.1:$GW_PORT"
threads = 1
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[[backends]]
name = "sim"
url = "http://127.0.0.1:$SIM_PORT"
CONF
RUST_LOG=warn $BIN run --config "$WORK/sluice.toml" --run-dir "$WORK" >"$WORK/sluice.log" 2>&1 &
GW_PID=$!
pids+=($GW_PID)

for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null || { echo "gateway not ready" >&2; cat "$WORK/sluice.log" >&2; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run_wrk() { wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s loadtest/post.lua "$1/completion"; }

echo "warming up" >&2
wrk -t1 -c"$CONNS" -d2s -s loadtest/post.lua "http://127.0.0.1:$SIM_PORT/completion" >/dev/null
wrk -t1 -c"$CONNS" -d2s -s loadtest/post.lua "http://127.0.0.1:$GW_PORT/completion" >/dev/null

echo "direct to the simulator (${DURATION}s, $CONNS connections)" >&2
DIRECT=$(run_wrk "http://127.0.0.1:$SIM_PORT")
echo "through Sluice" >&2
T0=$(cpu_ticks $GW_PID)
PROXIED=$(run_wrk "http://127.0.0.1:$GW_PORT")
T1=$(cpu_ticks $GW_PID)

rps() { echo "$1" | awk '/Requests\/sec/ {print $2}'; }
pct() { echo "$1" | awk -v p="$2" '$1 == p {v=$2; if (v ~ /us$/) {sub("us","",v); v=v/1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v=v*1000}; print v}'; }
total() { echo "$1" | awk '/requests in/ {print $1}'; }
non2xx() { echo "$1" | awk '/non-2xx/ {print $2}'; }

D_RPS=$(rps "$DIRECT"); P_RPS=$(rps "$PROXIED")
D50=$(pct "$DIRECT" 50%); D99=$(pct "$DIRECT" 99%)
P50=$(pct "$PROXIED" 50%); P99=$(pct "$PROXIED" 99%)
TICK=$(getconf CLK_TCK)
CPU_US=$(awk -v a="$T0" -v b="$T1" -v n="$(total "$PROXIED")" -v t="$TICK" 'BEGIN {printf "%.1f", (b-a)/t*1e6/n}')

TABLE=$(cat <<MD
| path | requests/s | p50 ms | p99 ms | non-2xx |
|---|---|---|---|---|
| direct to simulator | $D_RPS | $D50 | $D99 | $(non2xx "$DIRECT") |
| through Sluice | $P_RPS | $P50 | $P99 | $(non2xx "$PROXIED") |
| ratio Sluice / direct | $(awk -v a="$P_RPS" -v b="$D_RPS" 'BEGIN{printf "%.2f", a/b}') | $(awk -v a="$P50" -v b="$D50" 'BEGIN{printf "%.2f", a/b}') | $(awk -v a="$P99" -v b="$D99" 'BEGIN{printf "%.2f", a/b}') | |

Sluice CPU time per proxied request: **$CPU_US µs** (1 proxy worker thread; user+system time of the sluice process over the run, divided by requests).
MD
)
echo "$TABLE"
if [ "$WRITE" = 1 ]; then
  {
    echo
    echo "## Proxy overhead — $(date -u +%Y-%m-%d)"
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r). Load: wrk, 1 thread, $CONNS connections, ${DURATION}s, POST /completion with n_predict 0 to one \`sluice sim --slots 256\`. Command: \`bash loadtest/overhead.sh --duration $DURATION --connections $CONNS --write\`."
    echo
    echo "$TABLE"
  } >> loadtest/RESULTS.md
fi

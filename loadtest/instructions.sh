#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: Sluice and
# pingora's floor (loadtest/min_pingora.rs) in front of one fast simulator,
# one worker thread each, N sequential keep-alive `POST /completion`
# (n_predict 0). The counts do not depend on the machine's speed or load, so
# a change to the request path can be measured on a busy machine, to the
# hundred instructions.
#
#   bash loadtest/instructions.sh [--sluice BIN] [--floor BIN] [--requests 1000] [--top 25]
#                                 [--stream TOKENS]
#
# Each proxy runs twice, with BASE and BASE + N requests (BASE 300); the
# difference over N is the cost of one request, start-up and warm-up
# cancelled out. With --stream, each request is a stream of TOKENS events
# (`"stream": true`, the simulator at 400 tokens/s so that events arrive one
# per read even under callgrind; BASE 20, N 100 unless given) and the cost is
# also given per event. Reported:
# the connection task's inclusive count (what serving a request costs, the
# background loops left out), the whole process's count (with the scrape and
# console loops, which grow with the run's length), Sluice's hooks, and the
# functions whose own counts differ most from the floor's.
#
# Loopback only; every process it starts is stopped on exit. Needs valgrind
# (apt-get install valgrind) and a release build with debug info (the
# default profile here: `cargo build --release --bin sluice --example min_pingora`).
set -euo pipefail
cd "$(dirname "$0")/.."

SLUICE=target/release/sluice
FLOOR=target/release/examples/min_pingora
N=
TOP=25
STREAM=0
while [ $# -gt 0 ]; do
  case "$1" in
    --stream) STREAM=$2; shift 2 ;;
    --sluice) SLUICE=$2; shift 2 ;;
    --floor) FLOOR=$2; shift 2 ;;
    --requests) N=$2; shift 2 ;;
    --top) TOP=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$STREAM" -gt 0 ]; then
  BASE=20; N=${N:-100}; SIM_ARGS=(--gen-tps 400)
  BODY="{\"prompt\": \"Hello\", \"n_predict\": $STREAM, \"stream\": true}"
else
  BASE=300; N=${N:-1000}; SIM_ARGS=()
  BODY='{"prompt": "Hello", "n_predict": 0}'
fi
command -v valgrind >/dev/null || { echo "installing valgrind" >&2; apt-get install -y -qq valgrind >/dev/null; }
for b in "$SLUICE" "$FLOOR"; do
  [ -x "$b" ] || { echo "missing $b (cargo build --release --bin sluice --example min_pingora)" >&2; exit 2; }
done

WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

SIM_PORT=$(free_port)
"$SLUICE" sim --listen 127.0.0.1:$SIM_PORT --slots 256 --prompt-tps 1000000 "${SIM_ARGS[@]}" >"$WORK/sim.log" 2>&1 &
pids+=($!)

# one KIND (sluice | floor) with REQUESTS requests, into DIR
one() {
  local kind=$1 requests=$2 dir=$3 port admin cmd
  mkdir -p "$dir"
  port=$(free_port); admin=$(free_port)
  if [ "$kind" = sluice ]; then
    cat >"$dir/sluice.toml" <<T
[server]
listen = "127.0.0.1:$port"
threads = 1
grace_period = "1s"
[admin]
listen = "127.0.0.1:$admin"
[[backends]]
name = "b0"
url = "http://127.0.0.1:$SIM_PORT"
T
    cmd=("$SLUICE" run --config "$dir/sluice.toml" --run-dir "$dir")
    ready="http://127.0.0.1:$admin/readyz"
  else
    cmd=("$FLOOR" "127.0.0.1:$port" "127.0.0.1:$SIM_PORT" 1)
    ready="http://127.0.0.1:$port/health"
  fi
  RUST_LOG=warn valgrind --tool=callgrind --separate-threads=no \
    --callgrind-out-file="$dir/callgrind.out" "${cmd[@]}" >"$dir/proxy.log" 2>&1 &
  local pid=$!
  pids+=($pid)
  python3 - "$ready" "$port" "$requests" "$BODY" <<'PY'
import http.client, sys, time, urllib.request
ready, port, n, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + 120
while True:
    try:
        if urllib.request.urlopen(ready, timeout=5).status == 200:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"not ready: {ready}")
    time.sleep(0.5)
time.sleep(1.5)   # the first scrape
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
bad = 0
for _ in range(n):
    c.request("POST", "/completion", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    bad += r.status != 200
if bad:
    sys.exit(f"{bad} of {n} answers were not 200")
PY
  kill -INT "$pid"
  wait "$pid" || true
  callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$dir/callgrind.out" >"$dir/inclusive.txt" 2>/dev/null
  callgrind_annotate --auto=no --inclusive=no --threshold=100 "$dir/callgrind.out" >"$dir/self.txt" 2>/dev/null
}

for kind in sluice floor; do
  one $kind $BASE "$WORK/$kind-base"
  one $kind $((BASE + N)) "$WORK/$kind-more"
done

python3 - "$WORK" "$N" "$TOP" "$STREAM" <<'PY'
import re, sys
work, n, top, events = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def load(path, key=max):
    d = {}
    for line in open(path):
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", line)
        if m:
            name = re.sub(r" \[.*\]$", "", m.group(2)).split(":", 1)[-1]
            d[name] = key(d.get(name, 0), int(m.group(1).replace(",", "")))
    return d
def per(kind, which, key=max):
    a, b = load(f"{work}/{kind}-base/{which}.txt", key), load(f"{work}/{kind}-more/{which}.txt", key)
    return {k: (b.get(k, 0) - a.get(k, 0)) / n for k in set(a) | set(b)}
def find(d, pat):
    return max((v for k, v in d.items() if re.search(pat, k)), default=0.0)
conn = r"ServerApp>::process_new::\{\{closure\}\}$"
inc = {k: per(k, "inclusive") for k in ("sluice", "floor")}
what = f"streams of {events} events" if events else "requests"
print(f"Instructions per request ({n} {what}, callgrind):\n")
print("| | Sluice | pingora floor | Sluice ÷ floor |\n|---|---|---|---|")
for label, pat in (("connection task", conn), ("whole process", "PROGRAM TOTALS")):
    s, f = find(inc["sluice"], pat), find(inc["floor"], pat)
    print(f"| {label} | {s:,.0f} | {f:,.0f} | {s / f:.2f} |")
    if events:
        print(f"| {label}, per event | {s / events:,.0f} | {f / events:,.0f} | {s / f:.2f} |")
print("\nSluice's hooks (inclusive):\n")
for hook in ("early_request_filter", "request_filter", "upstream_peer", "upstream_request_filter",
             "response_filter", "response_body_filter", "logging"):
    print(f"- `{hook}`: {find(inc['sluice'], rf'SluiceProxy as pingora_proxy::proxy_trait::ProxyHttp>::{hook}(::|$)'):,.0f}")
own = {k: per(k, "self", key=lambda a, b: a + b) for k in ("sluice", "floor")}
rows = sorted(((own["sluice"].get(k, 0) - own["floor"].get(k, 0), k)
               for k in (set(own["sluice"]) | set(own["floor"])) - {"PROGRAM TOTALS"}), reverse=True)
print(f"\nOwn instructions, Sluice above the floor (top {top}):\n")
print("| Sluice − floor | Sluice | floor | function |\n|---|---|---|---|")
for d, k in rows[:top]:
    print(f"| {d:,.0f} | {own['sluice'].get(k, 0):,.0f} | {own['floor'].get(k, 0):,.0f} | `{k[-100:]}` |")
PY

#!/usr/bin/env python3
"""Start the real llama-server on loopback and measure what the gateway cares about.

    source "${SLUICE_CACHE:-$HOME/.cache/sluice}/llama-server.env"
    python3 tests/real/measure.py            # uses $LLAMA_SERVER_BIN and $LLAMA_MODEL

Stdlib only. Every server it starts listens on 127.0.0.1 on a free port and is
killed (by its own pid) before it exits. Reports:
  - loading phase: time to port open, /health status codes and bodies seen
    before 200, time to /health 200;
  - single-request generation speed (n_predict 100, ignore_eos);
  - 8 concurrent 100-token requests against -np 2: requests_processing /
    requests_deferred as scraped every 0.1 s (distinct states in order);
  - the same server's /slots status (is it on by default?);
  - a second start WITHOUT --metrics: /metrics status and body;
  - a third start with the default --threads-http and 12 concurrent requests.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

BIN = os.environ.get("LLAMA_SERVER_BIN")
MODEL = os.environ.get("LLAMA_MODEL")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http(port: int, path: str, body: dict | None = None, timeout: float = 60.0):
    """Returns (status, text, seconds). status -1 on connection failure."""
    url = f"http://{HOST}:{port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace"), time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace"), time.monotonic() - t0
    except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as e:
        return -1, str(e), time.monotonic() - t0


def start(extra: list[str], threads_http: bool = True) -> tuple[subprocess.Popen, int, str]:
    port = free_port()
    log = f"/tmp/sluice-measure-{port}.log"
    args = [BIN, "-m", MODEL, "--host", HOST, "--port", str(port), "-np", "2", "-c", "4096", "-t", "1",
            *(["--threads-http", "32"] if threads_http else []), *extra]
    print(f"\n$ {' '.join(args)}   (log {log})")
    proc = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port, log


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: only what we started
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_ready(proc: subprocess.Popen, port: int) -> None:
    t0 = time.monotonic()
    t_open = None
    seen: dict[tuple[int, str], int] = {}
    while time.monotonic() - t0 < 120:
        if proc.poll() is not None:
            sys.exit(f"llama-server exited with {proc.returncode} while loading")
        st, body, _ = http(port, "/health", timeout=5)
        if st != -1 and t_open is None:
            t_open = time.monotonic() - t0
        if st == 200:
            t_ready = time.monotonic() - t0
            print(f"port open after {t_open:.2f}s; /health 200 after {t_ready:.2f}s")
            for (s, b), n in seen.items():
                print(f"  before that: {n} x /health {s} {b.strip()[:160]}")
            return
        if st != -1:
            seen[(st, body)] = seen.get((st, body), 0) + 1
        time.sleep(0.02)
    sys.exit("llama-server not healthy within 120 s")


def gauges(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"^llamacpp:(\w+)\s+(\S+)", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def completion(port: int, results: list, i: int) -> None:
    t0 = time.monotonic()
    st, body, _ = http(port, "/completion", {"prompt": f"Request {i}: once upon a time", "n_predict": 100,
                                             "ignore_eos": True, "cache_prompt": False}, timeout=300)
    dt = time.monotonic() - t0
    try:
        j = json.loads(body)
        results[i] = (st, dt, j["timings"]["predicted_n"], j["timings"]["predicted_per_second"])
    except Exception:
        results[i] = (st, dt, 0, 0.0)


def concurrent(port: int, n: int) -> None:
    """n concurrent 100-token completions; scrape /metrics every 0.1 s meanwhile."""
    results: list = [None] * n
    threads = [threading.Thread(target=completion, args=(port, results, i)) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    states = []
    scrape_max = 0.0
    while any(t.is_alive() for t in threads):
        st, body, dt = http(port, "/metrics", timeout=10)
        scrape_max = max(scrape_max, dt)
        if st == 200:
            g = gauges(body)
            s = (int(g.get("requests_processing", -1)), int(g.get("requests_deferred", -1)))
            if not states or states[-1][1] != s:
                states.append((time.monotonic() - t0, s))
        time.sleep(0.1)
    wall = time.monotonic() - t0
    for t in threads:
        t.join()
    print(f"{n} concurrent x 100 tokens: wall {wall:.2f}s, aggregate {n * 100 / wall:.0f} tok/s, "
          f"slowest /metrics scrape {scrape_max * 1000:.0f} ms")
    print("  (processing, deferred) over time: " +
          " -> ".join(f"{s}@{t:.1f}s" for t, s in states))
    print("  per request (status, seconds, tokens, predicted_per_second): " +
          ", ".join(f"({s},{d:.1f},{k},{p:.0f})" for s, d, k, p in results))


def main() -> None:
    if not BIN or not MODEL:
        sys.exit("set LLAMA_SERVER_BIN and LLAMA_MODEL (source $SLUICE_CACHE/llama-server.env)")
    print(f"bin {BIN}\nmodel {MODEL} ({os.path.getsize(MODEL) / 1e6:.0f} MB)")

    proc, port, _ = start(["--metrics"])
    try:
        wait_ready(proc, port)
        st, body, _ = http(port, "/slots")
        print(f"/slots (no --slots flag): {st} {body.strip()[:100]}")
        st, body, _ = http(port, "/props")
        print(f"/props total_slots: {json.loads(body).get('total_slots') if st == 200 else st}")

        # warm-up, then single requests
        r: list = [None]
        completion(port, r, 0)
        for k in range(3):
            completion(port, r, 0)
            st, dt, n, tps = r[0]
            print(f"single request {k}: status {st}, {n} tokens in {dt:.2f}s, predicted_per_second {tps:.1f}")

        concurrent(port, 8)
    finally:
        stop(proc)

    proc, port, _ = start([])
    try:
        wait_ready(proc, port)
        st, body, _ = http(port, "/metrics")
        print(f"/metrics WITHOUT --metrics: {st} {body.strip()[:200]}")
    finally:
        stop(proc)

    # Default --threads-http: this build keeps max(np + 4, cores - 1) threads
    # plus up to 1024 on demand, so surplus requests should still be deferred
    # inside llama-server rather than stuck in the HTTP library's queue.
    proc, port, _ = start(["--metrics"], threads_http=False)
    try:
        wait_ready(proc, port)
        concurrent(port, 12)
    finally:
        stop(proc)


if __name__ == "__main__":
    main()

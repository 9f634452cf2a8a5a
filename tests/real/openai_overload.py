#!/usr/bin/env python3
"""Drive a transient overload with the real OpenAI Python client.

    python tests/real/openai_overload.py --base-url http://127.0.0.1:8080/v1 \\
        --phase 24:6 --phase 8:6 [--timeout 30] [--max-retries 2] [--max-tokens 20]

Each `--phase RATE:SECS` starts RATE calls per second (evenly spaced, open
loop: a call starts on time whether or not earlier ones finished) for SECS
seconds; phases run one after the other. Every call is one
`client.chat.completions.create` of the official `openai` package with its
default retry behaviour (`max_retries`, default 2: it honours
`retry-after-ms` / `Retry-After` and `x-should-retry`, and sends
`x-stainless-read-timeout` and `x-stainless-retry-count`). An httpx event
hook records every attempt the SDK makes (status and retry headers), so
attempts per call are counted, not inferred.

Before the load, `--unloaded N` calls run one at a time: their median is the
unloaded latency the summary's ratios are relative to.

Prints ONE line of JSON on stdout (everything else goes to stderr):

    {"ok": true, "openai_version": "3.51.0", "calls": 192, "succeeded": 190,
     "success_share": 0.99, "attempts": 210, "attempts_per_call": 1.09,
     "unloaded_s": 0.52, "p50_s": 0.6, "p99_s": 4.1, "p50_x": 1.15, "p99_x": 7.9,
     "failures": {"503": 2}, "refusals": 20, "refusals_with_retry_after": 20,
     "refusals_with_ms": 20, "should_retry_false": 2, "other_errors": [],
     "unfinished": 0, "window_s": 12.0, "goodput_per_s": 15.2}

`failures` counts calls that finally failed, by the status of their last
attempt (or the exception's name). The exit status is 0 when every call
ended (none hung past the run), 1 otherwise; the caller asserts on the JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def parse_phase(s: str) -> tuple[float, float]:
    rate, secs = s.split(":")
    return float(rate), float(secs)


def quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return xs[i]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True, help="gateway URL + /v1")
    ap.add_argument("--phase", action="append", type=parse_phase, required=True,
                    help="RATE:SECS, calls per second for that long (repeatable)")
    ap.add_argument("--timeout", type=float, default=30.0, help="the SDK's timeout, seconds")
    ap.add_argument("--max-retries", type=int, default=2, help="the SDK's max_retries (default 2)")
    ap.add_argument("--max-tokens", type=int, default=20)
    ap.add_argument("--unloaded", type=int, default=5, help="sequential calls before the load")
    ap.add_argument("--threads", type=int, default=400, help="most calls open at once")
    args = ap.parse_args()

    out: dict = {"ok": False, "error": None}
    try:
        import openai
        from openai import OpenAI
    except ImportError as e:
        out["error"] = f"cannot import openai: {e} (python: {sys.executable})"
        print(json.dumps(out))
        return 1
    out["openai_version"] = openai.__version__

    lock = threading.Lock()
    attempts: dict[str, list[dict]] = {}

    def on_response(response) -> None:
        call = response.request.headers.get("x-call-id")
        h = response.headers
        rec = {
            "status": response.status_code,
            "retry_after": h.get("retry-after"),
            "retry_after_ms": h.get("retry-after-ms"),
            "should_retry": h.get("x-should-retry"),
            "sent_count": response.request.headers.get("x-stainless-retry-count"),
            "sent_timeout": response.request.headers.get("x-stainless-read-timeout"),
        }
        with lock:
            attempts.setdefault(call, []).append(rec)

    http_client = openai.DefaultHttpxClient(event_hooks={"response": [on_response]})
    client = OpenAI(
        base_url=args.base_url,
        api_key="sk-sluice-test",
        timeout=args.timeout,
        max_retries=args.max_retries,
        http_client=http_client,
    )

    def call(cid: str) -> dict:
        t0 = time.monotonic()
        try:
            client.chat.completions.create(
                model="sim",
                messages=[{"role": "user", "content": "Say something."}],
                max_tokens=args.max_tokens,
                extra_headers={"x-call-id": cid},
            )
            return {"id": cid, "ok": True, "s": time.monotonic() - t0, "end": time.monotonic()}
        except openai.APIStatusError as e:
            return {"id": cid, "ok": False, "s": time.monotonic() - t0,
                    "failure": str(e.status_code)}
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            return {"id": cid, "ok": False, "s": time.monotonic() - t0,
                    "failure": type(e).__name__}

    unloaded = [call(f"u{i}") for i in range(args.unloaded)]
    bad = [u for u in unloaded if not u["ok"]]
    if bad:
        out["error"] = f"unloaded calls failed: {bad}"
        print(json.dumps(out))
        return 1
    unloaded_s = statistics.median(u["s"] for u in unloaded) if unloaded else None
    with lock:
        attempts.clear()

    results: list[dict] = []
    futures = []
    pool = ThreadPoolExecutor(max_workers=args.threads)
    start = time.monotonic()
    at = 0.0
    n = 0
    for rate, secs in args.phase:
        end = at + secs
        while at < end - 1e-9:
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(call, f"c{n}"))
            n += 1
            at += 1.0 / rate
        at = end
    # Every call ends within its attempts: (timeout + longest hint) each.
    budget = (args.max_retries + 1) * (args.timeout + 120.0) + 10.0
    deadline = time.monotonic() + budget
    unfinished = 0
    for f in futures:
        try:
            results.append(f.result(timeout=max(0.0, deadline - time.monotonic())))
        except Exception:  # noqa: BLE001 - a hung call
            unfinished += 1
    pool.shutdown(wait=False, cancel_futures=True)

    ok = [r for r in results if r["ok"]]
    lat = [r["s"] for r in ok]
    failures: dict[str, int] = {}
    for r in results:
        if not r["ok"]:
            failures[r["failure"]] = failures.get(r["failure"], 0) + 1
    with lock:
        per_call = {k: list(v) for k, v in attempts.items()}
    all_attempts = [a for v in per_call.values() for a in v]
    refusals = [a for a in all_attempts if a["status"] in (429, 503)]
    other = sorted({a["status"] for a in all_attempts if a["status"] not in (200, 429, 503)})
    calls = len(futures)
    p50, p99 = quantile(lat, 0.5), quantile(lat, 0.99)
    out.update({
        "ok": unfinished == 0,
        "calls": calls,
        "succeeded": len(ok),
        "success_share": len(ok) / calls if calls else None,
        "attempts": len(all_attempts),
        "attempts_per_call": len(all_attempts) / calls if calls else None,
        "unloaded_s": unloaded_s,
        "p50_s": p50,
        "p99_s": p99,
        "p50_x": p50 / unloaded_s if p50 and unloaded_s else None,
        "p99_x": p99 / unloaded_s if p99 and unloaded_s else None,
        "failures": failures,
        "refusals": len(refusals),
        "refusals_with_retry_after": sum(1 for a in refusals if a["retry_after"]),
        "refusals_with_ms": sum(1 for a in refusals if a["retry_after_ms"]),
        "should_retry_false": sum(1 for a in refusals if a["should_retry"] == "false"),
        "sent_counts": sorted({a["sent_count"] for a in all_attempts if a["sent_count"]}),
        "sent_timeouts": sorted({a["sent_timeout"] for a in all_attempts if a["sent_timeout"]}),
        "other_statuses": other,
        "unfinished": unfinished,
        "wall_s": time.monotonic() - start,
        # Calls served while the load ran, per second: the goodput.
        "window_s": at,
        "goodput_per_s": sum(1 for r in ok if r["end"] - start <= at) / at if at else None,
    })
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

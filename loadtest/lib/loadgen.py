"""Asyncio HTTP/1.1 load generator for the side-by-side benchmark.

Standard library only. One TCP connection per request (`Connection: close`),
so every proxy sees the same client behaviour and no client-side pool hides
a connect cost. Bodies are read by Content-Length, chunked framing or EOF;
for streams the time of the first `data:` event is recorded (time to first
token: the simulator sends headers at once and the first event when a slot
produces the first token).

Every request yields one `Result` with times relative to the run start, so
the report can plot latency over time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    t: float                    # start, seconds since run start
    latency: float              # until the response ended (or the error / timeout)
    status: int = 0             # 0: no HTTP status (connect error, reset, timeout)
    outcome: str = "ok"         # ok | http_error | timeout | conn_error | reset
    retry_after: bool = False
    reason: str = ""            # x-sluice-reason, if any
    ttft: float | None = None   # streams: time to the first data: event
    error: str = ""


@dataclass
class Target:
    """Where requests go: one address (a proxy) or several (direct, round-robin)."""
    name: str
    addrs: list[tuple[str, int]]
    extra_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self._rr = itertools.cycle(range(len(self.addrs)))

    def pick(self) -> tuple[str, int]:
        return self.addrs[next(self._rr)]


def completion_body(n_predict: int, stream: bool = False, prompt: str = "Hello") -> bytes:
    return json.dumps({"prompt": prompt, "n_predict": n_predict, "stream": stream}).encode()


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], on_data) -> None:
    te = headers.get("transfer-encoding", "").lower()
    if "chunked" in te:
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # trailers (normally none) end with an empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            chunk = await reader.readexactly(size + 2)
            on_data(chunk)
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if n:
            on_data(await reader.readexactly(n))
    else:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            on_data(chunk)


async def request(target: Target, path: str, body: bytes, *, t0: float, timeout: float,
                  headers: dict[str, str] | None = None, hold: asyncio.Event | None = None,
                  started: asyncio.Event | None = None) -> Result:
    """One request. `hold`: for streams, stop reading after the first event and
    wait until the event is set (footprint scenario), then drop the connection."""
    host, port = target.pick()
    hdrs = dict(target.extra_headers)
    if headers:
        hdrs.update(headers)
    start = time.monotonic()
    res = Result(t=start - t0, latency=0.0)
    writer = None
    first = [None]

    def on_data(chunk: bytes):
        if first[0] is None and b"data:" in chunk:
            first[0] = time.monotonic()

    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(build_request(host, port, path, body, hdrs))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            res.status = int(lines[0].split()[1])
            h = {}
            for ln in lines[1:]:
                if ":" in ln:
                    k, v = ln.split(":", 1)
                    h[k.strip().lower()] = v.strip()
            res.retry_after = "retry-after" in h
            res.reason = h.get("x-sluice-reason", "")
            if hold is not None:
                while first[0] is None:
                    chunk = await reader.read(4096)
                    if not chunk:
                        break
                    on_data(chunk)
                if started is not None and first[0] is not None:
                    started.set()
        if hold is not None:
            await hold.wait()
        else:
            async with asyncio.timeout(max(0.001, timeout - (time.monotonic() - start))):
                await _read_body(reader, h, on_data)
        res.outcome = "ok" if res.status == 200 else "http_error"
    except TimeoutError:
        res.outcome = "timeout"
    except (ConnectionRefusedError,) as e:
        res.outcome, res.error = "conn_error", type(e).__name__
    except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError, ValueError, IndexError, OSError) as e:
        res.outcome, res.error = ("reset" if res.status else "conn_error"), type(e).__name__
    finally:
        if writer is not None:
            writer.transport.abort()
    end = time.monotonic()
    res.latency = end - start
    if first[0] is not None:
        res.ttft = first[0] - start
    return res


class Progress:
    """Prints a line every `every` seconds while a phase runs."""

    def __init__(self, label: str, duration: float, results: list[Result], every: float = 5.0, log=print):
        self.label, self.duration, self.results, self.every, self.log = label, duration, results, every, log

    async def run(self, t0: float):
        while True:
            await asyncio.sleep(self.every)
            el = time.monotonic() - t0
            ok = sum(r.outcome == "ok" for r in self.results)
            rej = sum(r.outcome == "http_error" for r in self.results)
            oth = len(self.results) - ok - rej
            self.log(f"    {self.label}: {min(el, self.duration):4.0f}/{self.duration:.0f} s, "
                     f"done {len(self.results)} (200: {ok}, non-200: {rej}, timeout/error: {oth})")


async def poisson(target: Target, rate: float, duration: float, *, path: str, body: bytes,
                  timeout: float, headers: dict[str, str] | None = None, seed: int = 1,
                  label: str = "", at: list[tuple[float, "callable"]] | None = None,
                  log=print) -> tuple[list[Result], float]:
    """Open-loop Poisson arrivals at `rate`/s for `duration` s; waits for the
    stragglers (up to `timeout`). `at`: callbacks run at given offsets (kill a
    backend mid-run). Returns the results and the wall time of the run."""
    rng = random.Random(seed)
    results: list[Result] = []
    tasks = set()
    t0 = time.monotonic()
    prog = asyncio.create_task(Progress(label, duration, results, log=log).run(t0))
    pending = sorted(at or [], key=lambda x: x[0])

    async def one():
        results.append(await request(target, path, body, t0=t0, timeout=timeout, headers=headers))

    next_t = 0.0
    while True:
        next_t += rng.expovariate(rate)
        if next_t >= duration:
            break
        while pending and pending[0][0] <= next_t:
            off, fn = pending.pop(0)
            delay = t0 + off - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            fn()
        delay = t0 + next_t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for off, fn in pending:
        fn()
    if tasks:
        await asyncio.wait(list(tasks))
    prog.cancel()
    return results, time.monotonic() - t0


# Instant refusals timed beside a measured run, per second (see `floor`).
FLOOR_RATE = 20.0


async def floor(target: Target, duration: float, *, path: str, body: bytes, timeout: float,
                seed: int = 17) -> list[float]:
    """The client's floor: `target` is an instant refuser (`procs.start_refuser`,
    nginx `return 503`), timed at FLOOR_RATE/s for `duration` s by the same
    event loop as the run it is gathered with. What any refusal costs this
    client at that moment; returns the latencies of its 503s."""
    res, _ = await poisson(target, FLOOR_RATE, duration, path=path, body=body, timeout=timeout,
                           seed=seed, label="floor", log=lambda *_: None)
    return [r.latency for r in res if r.status == 503]


async def closed_loop(target: Target, concurrency: int, duration: float, *, path: str,
                      body: bytes, timeout: float, headers: dict[str, str] | None = None,
                      label: str = "", log=print) -> tuple[list[Result], float]:
    """`concurrency` workers, each sending the next request when the last ends."""
    results: list[Result] = []
    t0 = time.monotonic()
    stop = t0 + duration
    prog = asyncio.create_task(Progress(label, duration, results, log=log).run(t0))

    async def worker():
        while time.monotonic() < stop:
            results.append(await request(target, path, body, t0=t0, timeout=timeout, headers=headers))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    prog.cancel()
    return results, time.monotonic() - t0


async def hold_streams(target: Target, n: int, *, path: str, body: bytes, timeout: float,
                       ramp: float, settle: float, sample, log=print) -> dict:
    """Open `n` streaming requests (spread over `ramp` s), wait until each has
    its first event (or `settle` s), call `sample()` while they are all open,
    then drop them. Returns counts and the sample."""
    hold = asyncio.Event()
    started = [asyncio.Event() for _ in range(n)]
    t0 = time.monotonic()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(request(target, path, body, t0=t0, timeout=timeout,
                                                 hold=hold, started=started[i])))
        if ramp > 0:
            await asyncio.sleep(ramp / n)
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        n_started = sum(e.is_set() for e in started)
        if n_started >= n:
            break
        await asyncio.sleep(0.2)
    n_started = sum(e.is_set() for e in started)
    log(f"    {n_started}/{n} streams open and producing tokens")
    sampled = sample()
    hold.set()
    results = await asyncio.gather(*tasks)
    return {"open": n_started, "sample": sampled,
            "ok": sum(r.status == 200 for r in results),
            "non200": sum(r.status not in (0, 200) for r in results)}


async def stream_events(target: Target, concurrency: int, warmup: float, duration: float, *,
                        path: str, body: bytes, timeout: float, mark, log=print) -> dict:
    """`concurrency` closed-loop streaming requests, each read to its end,
    counting the SSE events (`data:` lines) received. `mark()` is called
    once the streams have run `warmup` s and again `duration` s later (it
    returns e.g. the proxy's CPU seconds); the events counted between the
    two calls are the window's. Returns both marks and the window's events."""
    events = [0]
    errors = [0]
    t0 = time.monotonic()
    stop = t0 + warmup + duration + 0.5

    def on_data(chunk: bytes):
        events[0] += chunk.count(b"data:")

    async def one():
        host, port = target.pick()
        writer = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(build_request(host, port, path, body, dict(target.extra_headers)))
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                if int(lines[0].split()[1]) != 200:
                    errors[0] += 1
                    return
                h = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        h[k.strip().lower()] = v.strip()
                await _read_body(reader, h, on_data)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, IndexError):
            errors[0] += 1
        finally:
            if writer is not None:
                writer.transport.abort()

    async def worker(i):
        # spread the starts over the warm-up so the streams do not move in step
        await asyncio.sleep(warmup * 0.5 * i / max(1, concurrency))
        while time.monotonic() < stop:
            await one()

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(warmup)
    m0, e0, w0 = mark(), events[0], time.monotonic()
    await asyncio.sleep(duration)
    m1, e1, w1 = mark(), events[0], time.monotonic()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    log(f"    {e1 - e0} events in {w1 - w0:.1f} s over {concurrency} streams, {errors[0]} errors")
    return {"mark0": m0, "mark1": m1, "events": e1 - e0, "window_s": w1 - w0, "errors": errors[0]}

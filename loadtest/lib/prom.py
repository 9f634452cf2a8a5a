"""Reading a Prometheus text exposition (Sluice's /metrics) in the load
tests: one sample, and a histogram's quantile, optionally of what was
observed between two readings. Standard library only."""

from __future__ import annotations

import re


def sample(text: str, name: str, labels: str = "") -> float:
    """The value of `name{labels}` (labels as written, braces included), 0 if absent."""
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def hist_buckets(text: str, name: str) -> list[tuple[float, float]]:
    """The cumulative buckets of histogram `name` (no other labels), as (le, count)."""
    out = []
    for m in re.finditer(rf'^{re.escape(name)}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M):
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        out.append((le, float(m.group(2))))
    return out


def hist_quantile(text: str, name: str, q: float, before: str = ""):
    """Quantile of a Prometheus histogram (linear within a bucket); with
    `before`, of what was observed between the two readings. None if empty."""
    buckets = hist_buckets(text, name)
    if before:
        b0 = dict(hist_buckets(before, name))
        buckets = [(le, c - b0.get(le, 0.0)) for le, c in buckets]
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_c = None, 0.0
    for le, c in buckets:
        if c >= rank:
            if prev_le is None or le == float("inf"):
                return le if le != float("inf") else prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return prev_le

"""Latency histograms with logarithmic buckets: cheap to fill on the receive path, exact to
merge across worker processes (add the counts), percentiles within one bucket width (5 %)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

BASE_MS = 0.01  # the first bucket holds everything up to 10 microseconds
RATIO = 1.05  # each bucket is 5 % wider than the one before
NBUCKETS = 400  # 0.01 ms * 1.05**400 is about 3e6 ms: an hour, far beyond any step
_INV_LOG = 1.0 / math.log(RATIO)


def bucket(latency_s: float) -> int:
    """The bucket of a latency in seconds (negative latencies, from clock noise, go to 0)."""
    ms = latency_s * 1000.0
    if ms <= BASE_MS:
        return 0
    b = int(math.log(ms / BASE_MS) * _INV_LOG) + 1
    return b if b < NBUCKETS else NBUCKETS - 1


def upper_ms(b: int) -> float:
    """The upper edge of bucket b in milliseconds (what a percentile in it is reported as)."""
    return BASE_MS * RATIO ** b


def merge(hists: Iterable[Mapping[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in hists:
        for b, n in h.items():
            b = int(b)
            out[b] = out.get(b, 0) + n
    return out


def percentile(hist: Mapping[int, int], q: float) -> float | None:
    """The q-th percentile (0..100) in milliseconds, or None for an empty histogram."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(total * q / 100.0))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return upper_ms(b)
    return upper_ms(max(hist))


def summary(hist: Mapping[int, int]) -> dict:
    """count, p50, p90, p99 and max (ms) of a histogram."""
    return {
        "count": sum(hist.values()),
        "p50_ms": percentile(hist, 50),
        "p90_ms": percentile(hist, 90),
        "p99_ms": percentile(hist, 99),
        "max_ms": upper_ms(max(hist)) if hist else None,
    }


def exact_percentiles(samples_s: list[float]) -> dict:
    """p50/p99/mean (ms) of a small list of exact samples (the Redis floor)."""
    if not samples_s:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None}
    xs = sorted(samples_s)

    def at(q: float) -> float:
        return xs[min(len(xs) - 1, max(0, math.ceil(len(xs) * q / 100.0) - 1))] * 1000.0

    return {"count": len(xs), "p50_ms": at(50), "p99_ms": at(99), "mean_ms": sum(xs) / len(xs) * 1000.0}

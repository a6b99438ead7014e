"""The benchmark's event frame. The publisher puts `sent_at` (time.time() just before the
publish request) and the step tag `k` first, so a receiver finds them at fixed offsets
without parsing JSON: the server keeps the published object's key order (events.prepare
re-encodes the dict, and dicts keep insertion order)."""

from __future__ import annotations

import time

PREFIX = '{"sent_at":'
BPREFIX = PREFIX.encode()
_P = len(PREFIX)
_K = len(',"k":')


def event(k: int, n: int, pad: str) -> dict:
    """One published frame of step `k`; `n` numbers it within the run, `pad` sets its size."""
    return {"sent_at": time.time(), "k": k, "type": "bench:event", "payload": {"n": n, "pad": pad}}


def parse(data: str) -> tuple[float, int] | None:
    """(sent_at, k) of a benchmark frame, None for anything else (acks, pongs)."""
    if not data.startswith(PREFIX):
        return None
    j = data.index(",", _P)
    e = data.index(",", j + _K)
    return float(data[_P:j]), int(data[j + _K:e])


def parse_bytes(data: bytes) -> tuple[float, int] | None:
    """parse() for a frame's raw UTF-8 payload (float() and int() take ASCII bytes)."""
    if not data.startswith(BPREFIX):
        return None
    j = data.index(b",", _P)
    e = data.index(b",", j + _K)
    return float(data[_P:j]), int(data[j + _K:e])

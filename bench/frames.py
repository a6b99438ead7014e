"""The benchmark's event frame. The publisher puts `sent_at` (time.time() just before the
publish request) and the step tag `k` first, so a receiver finds them at fixed offsets
without parsing JSON when the server keeps the published object's key order (the reference
does: events.prepare re-encodes the dict, and dicts keep insertion order).

An implementation may re-encode the object in another order (Go's maps sort their keys) or
add fields: EV-2 allows both. A frame that does not start the fast way but names the bench's
event type is parsed as JSON; one that still yields no `sent_at` and `k` is UNATTRIBUTED, which
the load generator counts and the report shows: it is never a silent loss."""

from __future__ import annotations

import json
import time

EVENT_TYPE = "bench:event"
UNATTRIBUTED = (-1.0, -1)  # a benchmark event the receiver could not attribute to a step

PREFIX = '{"sent_at":'
BPREFIX = PREFIX.encode()
_P = len(PREFIX)
_K = len(',"k":')


def event(k: int, n: int, pad: str) -> dict:
    """One published frame of step `k`; `n` numbers it within the run, `pad` sets its size."""
    return {"sent_at": time.time(), "k": k, "type": EVENT_TYPE, "payload": {"n": n, "pad": pad}}


def _fast(data, comma) -> tuple[float, int] | None:
    """The reference's layout: `{"sent_at":S,"k":K,...`; None when it is not exactly that."""
    try:
        j = data.index(comma, _P)
        if data[j:j + _K] != (',"k":' if comma == "," else b',"k":'):
            return None
        e = data.index(comma, j + _K)
        return float(data[_P:j]), int(data[j + _K:e])
    except ValueError:
        return None


def _by_content(data: str | bytes) -> tuple[float, int]:
    try:
        doc = json.loads(data)
    except ValueError:
        return UNATTRIBUTED
    if not isinstance(doc, dict) or doc.get("type") != EVENT_TYPE:
        return UNATTRIBUTED
    sent, k = doc.get("sent_at"), doc.get("k")
    if isinstance(sent, bool) or not isinstance(sent, int | float) or isinstance(k, bool) or not isinstance(k, int):
        return UNATTRIBUTED
    return float(sent), k


def parse(data: str) -> tuple[float, int] | None:
    """(sent_at, k) of a benchmark frame, UNATTRIBUTED for one that cannot be read, None for
    anything else (acks, pongs)."""
    if data.startswith(PREFIX):
        got = _fast(data, ",")
        if got is not None:
            return got
    elif EVENT_TYPE not in data:
        return None
    return _by_content(data)


def parse_bytes(data: bytes) -> tuple[float, int] | None:
    """parse() for a frame's raw UTF-8 payload (float() and int() take ASCII bytes)."""
    if data.startswith(BPREFIX):
        got = _fast(data, b",")
        if got is not None:
            return got
    elif b"bench:event" not in data:
        return None
    return _by_content(data)

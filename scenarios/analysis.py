"""Figures from a simulation's history: delivery ratio per logical client (a client's
connections across reconnects), latency, resumes and per-node throughput. The verdicts come
from conformance.checker; this module only measures."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values) if not getattr(values, "_sorted", False) else values
    k = min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))
    return round(values[k], 2)


def _logical(conn: str) -> str:
    return conn.rsplit(".", 1)[0]


LIVENESS_S = 5.0  # DEL-1's bound: what a connection that closes sooner is not owed


def summarize(records: Iterable[dict], *, t0: float, publish_end: float, node_names: dict[str, str],
              windows: list, resume: bool = True) -> tuple[dict, dict]:
    """(summary, series) for summary.json and the report's plots. With `resume` a client is owed
    what was published while it reconnected (it resumes); without, only what was published
    while one of its connections was open, long enough to be delivered (DEL-1)."""
    invoked = acked = failed = indeterminate = 0
    pub: dict[str, dict] = {}  # event_id -> {"t", "ok_t", "scope", "id", "exclude", "warm"}
    conn_info: dict[str, tuple[str, str, str]] = {}  # conn -> (user, workspace, node)
    first_ok: dict[str, float] = {}  # logical client -> first connect ok t
    online: dict[str, list[list]] = defaultdict(list)  # logical client -> [connect ok t, close t or inf]
    wanted: dict[str, dict] = defaultdict(dict)  # logical client -> scope -> when first held
    left: dict[str, set] = defaultdict(set)  # scopes it unsubscribed from at some point (churn)
    got: dict[str, set] = defaultdict(set)
    received_any: set = set()  # event ids some connection received
    seen_on_conn: dict[str, set] = defaultdict(set)
    duplicated = 0
    latency: list[list[float]] = []
    node_buckets: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    publish_buckets: dict[int, int] = defaultdict(int)
    resume_pending: dict[tuple[str, str, str], float] = {}
    last_close: dict[str, float] = {}
    resumes = {"attempted": 0, "recovered": 0, "not_recovered": 0, "failed": 0}
    resume_series: list[list] = []
    replay_open: dict[str, tuple[float, float]] = {}  # conn -> (subscribe invoke t, close t of previous)
    replay_done: dict[str, float] = {}
    lines = 0
    for r in records:
        lines += 1
        typ, f = r.get("type"), r.get("f")
        t = r.get("t", 0.0)
        if f == "publish":
            eid = r.get("event_id")
            if typ == "invoke":
                invoked += 1
                warm = (r.get("frame") or {}).get("type") == "sim:warmup"
                pub[eid] = {"t": t, "ok_t": None, "scope": (r["scope"], r["id"]), "exclude": r.get("exclude_workspace"), "warm": warm}
            elif typ == "ok":
                acked += 1
                if eid in pub:
                    pub[eid]["ok_t"] = t
                    publish_buckets[int(t - t0)] += 1
            elif typ == "fail":
                failed += 1
            elif typ == "info":
                indeterminate += 1
        elif f == "connect" and typ == "invoke":
            conn_info[r["conn"]] = (r.get("user"), r.get("workspace"), r.get("node"))
        elif f == "connect" and typ == "ok":
            key = _logical(r["conn"])
            first_ok.setdefault(key, t)
            online[key].append([t, math.inf, r["conn"]])
            user, ws, _ = conn_info.get(r["conn"], (None, None, None))
            wanted[key].setdefault(("workspace", ws), t)
            wanted[key].setdefault(("user", user), t)
        elif f == "subscribe" and typ == "invoke" and "since" in r:
            resume_pending[(r["conn"], r["scope"], r["id"])] = t
            key = _logical(r["conn"])
            replay_open.setdefault(r["conn"], (t, last_close.get(key, t)))
        elif f == "subscribe" and typ == "ok":
            if r.get("answer") == "ack":
                wanted[_logical(r["conn"])].setdefault((r["scope"], r["id"]), t)
            if (r["conn"], r["scope"], r["id"]) in resume_pending:
                resume_pending.pop((r["conn"], r["scope"], r["id"]))
                resumes["attempted"] += 1
                outcome = "failed" if r.get("answer") != "ack" else ("recovered" if r.get("recovered") else "not_recovered")
                resumes[outcome] += 1
                resume_series.append([round(t - t0, 3), outcome])
        elif f == "subscribe" and typ == "info" and (r["conn"], r["scope"], r["id"]) in resume_pending:
            resume_pending.pop((r["conn"], r["scope"], r["id"]))
            resumes["attempted"] += 1
            resumes["failed"] += 1
            resume_series.append([round(t - t0, 3), "failed"])
        elif f == "unsubscribe" and typ == "invoke":
            left[_logical(r["conn"])].add((r["scope"], r["id"]))
        elif typ == "close":
            last_close[_logical(r["conn"])] = t
            for span in online.get(_logical(r["conn"]), ()):
                if span[2] == r["conn"]:
                    span[1] = t
        elif typ == "recv":
            frame = r.get("frame") or {}
            eid, conn = frame.get("event_id"), r.get("conn")
            if eid in seen_on_conn[conn]:
                duplicated += 1
                continue
            seen_on_conn[conn].add(eid)
            key = _logical(conn)
            p = pub.get(eid)
            if p is None or p["warm"]:
                continue
            if eid not in got[key]:
                got[key].add(eid)
                received_any.add(eid)
                latency.append([round(t - t0, 3), round((t - p["t"]) * 1000, 2)])
                node = node_names.get(conn_info.get(conn, (None, None, None))[2], "?")
                node_buckets[node][int(t - t0)] += 1
            if conn in replay_open and p["t"] < replay_open[conn][0]:
                replay_done[conn] = t
    # Expected: every acknowledged event to a scope the client held throughout (workspace, user,
    # acked subscriptions it never left; global always), published after it first connected.
    # Scopes it churned in and out of are judged by the checker (DEL-1, DEL-5), not counted here.
    expected = delivered = 0
    owed: set = set()  # acknowledged events some client held the scope for
    by_scope: dict[tuple, list[tuple[float, str, str | None]]] = defaultdict(list)
    for eid, p in pub.items():
        if p["ok_t"] is not None and not p["warm"] and p["t"] <= publish_end:
            by_scope[p["scope"]].append((p["t"], eid, p["exclude"]))
    for key, scopes in wanted.items():
        ws = next((sid for s, sid in scopes if s == "workspace"), None)
        held = {x: since for x, since in scopes.items() if x not in left[key]}
        held[("global", "all")] = first_ok.get(key, math.inf)
        for scope, since in held.items():
            for t, eid, exclude in by_scope.get(scope, ()):
                if not resume and not any(a <= t and b >= pub[eid]["ok_t"] + LIVENESS_S for a, b, _ in online[key]):
                    continue  # published while it was away, and nothing can bring it back
                if t >= since and not (exclude and exclude == ws):
                    expected += 1
                    delivered += eid in got[key]
                    owed.add(eid)
    lat = sorted(x[1] for x in latency)
    # Replay: from the resume request to the last missed frame; catch-up adds the outage before it
    # (the cut, the client's back-off and its reconnect), which the server does not control.
    replay = sorted((done - replay_open[c][0]) * 1000 for c, done in replay_done.items())
    catch_up = sorted((done - replay_open[c][1]) * 1000 for c, done in replay_done.items())
    span = max(1.0, publish_end - t0)
    per_node = {n: {"deliveries": sum(b.values()), "per_s": round(sum(b.values()) / span, 1)} for n, b in node_buckets.items()}
    summary = {
        "published": {"invoked": invoked, "acknowledged": acked, "failed": failed, "indeterminate": indeterminate},
        "delivery_ratio": round(delivered / expected, 6) if expected else None,
        "expected_deliveries": expected, "delivered": delivered, "lost": expected - delivered,
        "duplicated": duplicated,
        # acknowledged events that no connection ever received although some client held the
        # scope: lost by the store (a failover without durability), not merely missed by a client
        "lost_acknowledged": len(owed - received_any), "owed_events": len(owed),
        "lost_acknowledged_first": sorted(owed - received_any, key=lambda e: pub[e]["t"])[:10],
        "latency_ms": {"p50": _pct(lat, 50), "p95": _pct(lat, 95), "p99": _pct(lat, 99), "max": lat[-1] if lat else None},
        "resumes": resumes,
        "replay_latency_ms": {"p50": _pct(replay, 50), "p99": _pct(replay, 99), "max": round(replay[-1], 2) if replay else None},
        "catch_up_ms": {"p50": _pct(catch_up, 50), "p99": _pct(catch_up, 99), "max": round(catch_up[-1], 2) if catch_up else None},
        "per_node": per_node, "history_lines": lines,
        "window": {"t0": round(t0, 3), "publish_end": round(publish_end, 3)},
    }
    step = max(1, len(latency) // 50_000)
    series = {
        "latency": latency[::step],
        "faults": [{"kind": w.kind, "target": w.target, "start": w.start, "end": w.end} for w in windows],
        "node_rate": {n: sorted([k, v] for k, v in b.items()) for n, b in node_buckets.items()},
        "publish_rate": sorted([k, v] for k, v in publish_buckets.items()),
        "resumes": resume_series,
    }
    return summary, series


def resume_honesty(checked) -> dict:
    """The checker's judgement of resumes: recovered true that missed an event (REP-3's
    lying_recovered: a lie), and REP-4 (recovered false replayed nothing), with their counts."""
    def status(rid):
        v = checked.verdicts.get(rid)
        return (v.status.value if hasattr(v.status, "value") else str(v.status)) if v is not None else None

    def violations(rid):
        v = checked.verdicts.get(rid)
        return v.violations if v is not None else None
    n = checked.counts
    return {"recovered_true": n.get("resumes_true", 0), "recovered_false": n.get("resumes_false", 0),
            "lying": n.get("resumes_lying", 0), "rep3": status("REP-3"), "rep4": status("REP-4"),
            "rep4_violations": violations("REP-4")}


#: faults after which a node's connections are expected to be gone: the node died or restarted
_CUTTING_FAULTS = {"kill_node", "restart_node"}
_CUT_GRACE_S = 2.0


def readers_cut(records: Iterable[dict]) -> dict:
    """Connections that kept reading and were closed by the server anyway, outside a fault that
    kills or restarts their node: healthy readers evicted as slow consumers, or dropped. A
    connection that had stopped reading (a `pause` in effect) may be evicted (DEL-6) and is not
    counted. {"count": n, "codes": {close code: n}, "first": conn id or None}."""
    node_of: dict[str, str] = {}
    paused: set[str] = set()
    windows: list[tuple[str, float, float]] = []  # (node url, start, end) of cutting faults
    open_faults: dict[tuple[str, str], float] = {}
    closes: list[tuple[float, str, object]] = []
    for r in records:
        typ = r.get("type")
        if typ == "invoke" and r.get("f") == "connect":
            node_of[r["conn"]] = r.get("node", "")
        elif typ == "pause":
            paused.add(r["conn"])
        elif typ == "resume":
            paused.discard(r["conn"])
        elif typ == "fault" and r.get("fault") in _CUTTING_FAULTS:
            for url in r.get("nodes", []):
                if r.get("phase") == "start":
                    open_faults[(r["fault"], url)] = r["t"]
                else:
                    windows.append((url, open_faults.pop((r["fault"], url), r["t"]), r["t"]))
        elif typ == "close" and r.get("by") == "server" and r["conn"] not in paused:
            closes.append((r["t"], r["conn"], r.get("code")))
    windows += [(url, start, float("inf")) for (_, url), start in open_faults.items()]
    cut = [(t, conn, code) for t, conn, code in closes
           if not any(url == node_of.get(conn) and start <= t <= end + _CUT_GRACE_S for url, start, end in windows)]
    codes: dict[str, int] = {}
    for _, _, code in cut:
        codes[str(code)] = codes.get(str(code), 0) + 1
    return {"count": len(cut), "codes": codes, "first": cut[0][1] if cut else None}

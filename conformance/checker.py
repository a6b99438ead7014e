"""The offline checker: one history in, one verdict per requirement out.

The conformance suite and the simulator both record what their clients did and saw (see
``conformance/history.py`` and ``docs/history.md``) and hand the history to :func:`check`.
The checker knows nothing about the target beyond the history: it does no I/O and opens no
connection. It is strict where the history is certain and lenient inside uncertainty
windows, in the manner of Jepsen/Maelstrom checkers: an operation without a definite answer
(a publish that timed out or got 503, a subscribe that timed out) may or may not have taken
effect, so both outcomes are accepted.

The state model
---------------
* An **event** (``_Event``) is one publish: its scope, the node it went through, its publish
  window ``[t_inv, t_out]`` and status: ``ok`` (acknowledged), ``fail`` (definitely not
  published: a 4xx), ``maybe`` (503 or no answer), or ``pending`` (no outcome recorded).
* A **connection** (``_Conn``) has per scope a current state (``_Scope``: phase and current
  holding period), its pauses, and its close.
* A **holding period** (``_Period``) of a connection on a scope runs from the ack that granted
  it (``start``; ``connect`` ok for the auto scopes) to the unsubscribe invoke or the close
  (``end``). DEL-1 obligations are computed over it, DEL-2 counts duplicates in it. It is split
  into **segments** at each resume (subscribe with ``since``) of a scope already held, because
  REP-3's order guarantee restarts there; each segment keeps the received events in order.

Processing is one pass over the records (``feed``) that updates this state and checks what can
be checked on the spot (duplicates, leaks), then one pass over the collected state
(``report``) for everything that needs the final outcome of publishes (losses, order, stale
and replayed events). Time is linear in records plus due deliveries; memory holds the events,
the connections and one small entry per delivery, never the received frames themselves.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import math
import sys
import time
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .history import STALLS, STORE_RECOVERY_S
from .requirements import CHECKER_IDS, REQUIREMENTS
from .verdict import Anomaly, Outcome, Verdict, applicability, checker_verdict

KINDS = ("loss", "duplicate", "reorder", "leak", "late_after_unsubscribe",
         "gap_on_open_connection", "lying_recovered", "replay_out_of_order", "stale_event",
         "replay_after_false", "missing_recovered_flag", "field_mismatch", "phantom")

SERVER_KEYS = ("scope", "scope_id", "pos")  # REP-1 fields the server sets (EV-2)
INF = math.inf


# --- the report -------------------------------------------------------------------------------


@dataclass
class Report:
    verdicts: dict[str, Verdict]
    counts: dict[str, int | float]
    profile: str = "default"
    capabilities: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no requirement failed."""
        return not self.failed()

    def failed(self) -> list[str]:
        return [r for r, v in self.verdicts.items() if v.status == Outcome.FAIL]

    def anomalies(self) -> list[Anomaly]:
        """Every witness of every verdict, each once."""
        seen, out = set(), []
        for v in self.verdicts.values():
            for a in v.witnesses:
                if id(a) not in seen:
                    seen.add(id(a))
                    out.append(a)
        return out

    def to_dict(self) -> dict:
        return {"profile": self.profile, "capabilities": list(self.capabilities), "ok": self.ok,
                "counts": self.counts,
                "verdicts": {r: v.to_dict() for r, v in self.verdicts.items()}}

    def summary(self, witnesses: bool = True) -> str:
        lines = [f"profile {self.profile}; capabilities: {', '.join(self.capabilities) or '-'}",
                 "counts: " + ", ".join(f"{k}={_fmt_num(v)}" for k, v in self.counts.items())]
        for r, v in self.verdicts.items():
            lines.append(f"{r:7} {v.status:12} {v.reason}")
            if witnesses and v.status == Outcome.FAIL:
                for a in v.witnesses:
                    lines.append(f"        - [{a.kind}] {a.explanation}")
        return "\n".join(lines)


def _fmt_num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


# --- the state model ----------------------------------------------------------------------------

# event status
E_PENDING, E_OK, E_FAIL, E_MAYBE = "pending", "ok", "fail", "maybe"
# period status
P_PENDING, P_HELD, P_MAYBE, P_DENIED = "pending", "held", "maybe", "denied"
# phase of a (connection, scope): what a frame of that scope arriving now means
NONE, PENDING, HELD, MAYBE, ENDING, GRACE, DENIED = range(7)
_ROUTED = (PENDING, HELD, MAYBE, ENDING, GRACE)  # frames go into the current period


class _Event:
    __slots__ = ("eid", "skey", "stype", "sid", "node", "t_inv", "t_out", "status", "pos",
                 "excl", "expected", "ref_frame", "inv", "out", "recv_count", "first_recv", "recv_pos",
                 "mark")

    def __init__(self, eid: str) -> None:
        self.eid = eid
        self.skey = self.stype = self.sid = self.node = None
        self.t_inv = self.t_out = None  # t_inv None: the publish invoke is not (yet) known
        self.status = None
        self.pos = self.excl = self.expected = self.ref_frame = None
        self.inv = self.out = None  # (line, record)
        self.recv_count = 0
        self.first_recv = None  # (conn, t, line)
        self.recv_pos = None  # the pos the first receiver saw
        self.mark = 0  # scratch stamp for one-pass dedup in segment scans


class _Segment:
    """Received events of one period in arrival order, from the period start or a resume ack."""

    __slots__ = ("evs", "ts", "lines", "mode", "op", "ack_index", "since_ev")

    def __init__(self, mode: str = "live", op: "_Op | None" = None) -> None:
        self.evs: list[_Event] = []
        self.ts = array("d")
        self.lines = array("q")
        self.mode = mode  # live | recovered | false (REP-3 / REP-4 apply after ack_index)
        self.op = op  # the subscribe with since that opened it
        self.ack_index = 0  # receipts before this index arrived before the ack
        self.since_ev: _Event | None = None


class _Period:
    __slots__ = ("conn", "skey", "stype", "sid", "status", "asked", "start", "end", "unsub_ack",
                 "prev", "open", "ended", "received", "segs", "foreign", "denial", "max_tinv")

    def __init__(self, conn: "_Conn", skey: str, stype: str, sid: str, asked: float,
                 prev: "_Period | None", seg: _Segment) -> None:
        self.conn = conn
        self.skey, self.stype, self.sid = skey, stype, sid
        self.status = P_PENDING
        self.asked = asked  # when the connection asked for it (DEL-7)
        self.start: float | None = None  # ack t: from here it is held (DEL-1)
        self.end: float | None = None  # unsubscribe invoke t or close t
        self.unsub_ack: float | None = None  # DEL-5 applies after this
        self.prev = prev  # the period before on this (connection, scope), for in-flight frames
        self.open = self.ended = self.denial = None  # (line, record) for excerpts
        self.received: dict[_Event, int] = {}  # event -> index of the segment it first came in
        self.segs = [seg]
        self.foreign = False  # another workspace's / user's scope: nothing may arrive
        self.max_tinv: float | None = None


class _Op:
    """A subscribe or unsubscribe in flight."""

    __slots__ = ("t", "line", "rec", "since", "has_since", "period", "ack_t")

    def __init__(self, t: float, line: int, rec: dict, period: _Period | None) -> None:
        self.t, self.line, self.rec = t, line, rec
        self.since = rec.get("since")
        self.has_since = self.since is not None  # absent or null: not a resume (REP-2)
        self.period = period
        self.ack_t: float | None = None


class _Scope:
    __slots__ = ("phase", "period", "subs", "unsubs")

    def __init__(self) -> None:
        self.phase = NONE
        self.period: _Period | None = None
        self.subs: list[_Op] = []
        self.unsubs: list[_Op] = []


class _Stall:
    """A fault window that keeps a node's clients from receiving (a frozen or restarting node,
    a node cut off from its store, a store that is down): deadlines move past it, by `grace`."""

    __slots__ = ("fault", "target", "start", "end", "grace", "lossy", "items")

    def __init__(self, fault: str, target: str, start: float, grace: float, lossy: bool, item) -> None:
        self.fault, self.target, self.start, self.grace, self.lossy = fault, target, start, grace, lossy
        self.end = INF  # a fault that never ended stalls until the end of the history
        self.items = [item]

    def __str__(self) -> str:
        return f"{self.fault} on {self.target} from t={_ts(self.start)} to t={_ts(self.end)}"


class _Conn:
    __slots__ = ("cid", "node", "user", "ws", "t_inv", "t_ok", "inv", "ok", "closed_t", "closed_by",
                 "close", "last_recv_t", "last_recv_before_close", "pauses", "pause_ends", "scopes",
                 "periods", "stalls")

    def __init__(self, cid: str, rec: dict, line: int) -> None:
        self.cid = cid
        self.node, self.user, self.ws = rec.get("node"), rec.get("user"), rec.get("workspace")
        self.t_inv, self.t_ok = rec["t"], None
        self.inv, self.ok, self.close = (line, rec), None, None
        self.closed_t: float | None = None
        self.closed_by: str | None = None
        self.last_recv_t = -INF
        self.last_recv_before_close = -INF
        self.pauses: list[list] = []  # [start, end or None], in order
        self.pause_ends: list[float] = []  # their ends (inf: never resumed), for bisect
        self.stalls: list[_Stall] = []  # faults that stalled this connection's node, by start
        self.scopes: dict[str, _Scope] = {}
        self.periods: list[_Period] = []


# --- anomaly collection ---------------------------------------------------------------------------


class _Collector:
    """Counts every violation per requirement and keeps the first ``cap`` as witnesses. The
    explanation and excerpt are built lazily, only for kept witnesses. NODE-1 is kept apart,
    per originating requirement, because whether an origin counts (REP-* only when resume is
    claimed, DEL-4/DEL-7 only in strict) is known only at the end."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.count: dict[str, int] = defaultdict(int)
        self.kept: dict[str, list[Anomaly]] = defaultdict(list)
        self.node_count: dict[tuple[str, ...], int] = defaultdict(int)
        self.node_kept: dict[tuple[str, ...], list[tuple[int, Anomaly]]] = defaultdict(list)
        self.seq = 0

    def add(self, req: str, kind: str, conn: "_Conn | None", ev: "_Event | None",
            explain: Callable[[], str] | str, excerpt: Callable[[], list] | list = (),
            also: tuple[str, ...] = ()) -> None:
        # NODE-1: every DEL, AZ and REP requirement must hold across nodes
        cross = (conn is not None and ev is not None and ev.node is not None and conn.node is not None
                 and ev.node != conn.node and req.startswith(("DEL", "AZ", "REP")))
        anomaly = None

        def build() -> Anomaly:
            return Anomaly(kind, req, conn.cid if conn else None, ev.eid if ev else None,
                           explain() if callable(explain) else explain,
                           excerpt() if callable(excerpt) else list(excerpt),
                           also + (("NODE-1",) if cross else ()))

        for r in (req,) + also:
            self.count[r] += 1
            if len(self.kept[r]) < self.cap:
                if anomaly is None:
                    anomaly = build()
                self.kept[r].append(anomaly)
        if cross:
            key = (req,) + also
            self.node_count[key] += 1
            if len(self.node_kept[key]) < self.cap:
                self.node_kept[key].append((self.seq, anomaly or build()))
                self.seq += 1

    def node1(self, active: Callable[[str], bool]) -> tuple[int, list[Anomaly]]:
        keys = [k for k in self.node_count if any(active(r) for r in k)]
        kept = sorted((e for k in keys for e in self.node_kept[k]), key=lambda e: e[0])
        return sum(self.node_count[k] for k in keys), [a for _, a in kept[: self.cap]]


def _x(*items: tuple[int, dict] | None) -> list[dict]:
    """An excerpt: the given (line, record) pairs, in stream order, each with its line."""
    out = {}
    for it in items:
        if it is not None:
            line, rec = it
            out[line] = {"line": line, **rec}
    return [out[k] for k in sorted(out)]


def _recv_item(conn: _Conn, eid: str, t: float, line: int, frame: dict | None = None) -> tuple[int, dict]:
    """A recv record for an excerpt. The checker does not keep received frames (memory), so
    unless it has the frame at hand the record is rebuilt with the frame abridged."""
    fr = frame if frame is not None else {"event_id": eid, "...": "abridged"}
    return (line, {"t": t, "p": conn.inv[1].get("p"), "type": "recv", "conn": conn.cid, "frame": fr})


def _ts(t: float | None) -> str:
    return "never" if t is None else ("inf" if t == INF else f"{t:.3f}")


# --- the checker --------------------------------------------------------------------------------------


class Checker:
    """Incremental form of :func:`check`: ``feed`` records in stream order, then ``report()``.
    Parameters given as ``None`` are taken from ``meta`` records, else the defaults."""

    def __init__(self, *, capabilities: Iterable[str] | None = None, profile: str | None = None,
                 liveness_s: float | None = None, slow_close_s: float | None = None,
                 max_witnesses: int = 5) -> None:
        self._caps_arg = None if capabilities is None else tuple(capabilities)
        self._profile_arg = profile
        self._liveness_arg = liveness_s
        self._slow_arg = slow_close_s
        self.meta: dict[str, Any] = {}
        self.anoms = _Collector(max_witnesses)
        self.events: dict[str, _Event] = {}
        self.conns: dict[str, _Conn] = {}
        self.scope_events: dict[str, list[_Event]] = defaultdict(list)
        self.scope_periods: dict[str, list[_Period]] = defaultdict(list)
        self.resumes: list[tuple[_Conn, _Period, _Segment, _Op]] = []
        self.deferred: list[tuple] = []  # receipts whose publish was not known yet
        self.scope_suspects: list[tuple] = []  # frames whose scope/scope_id differ from the publish
        self.pos_conflicts: list[tuple] = []  # receivers of one event that saw different pos
        self.open_faults: dict[tuple[str, str], _Stall] = {}
        self.node_stalls: dict[str, list[_Stall]] = defaultdict(list)
        self.line = 0
        self.t_end = -INF
        self.n = defaultdict(int)  # counts and evidence
        self.n_deliveries = self.n_compared = self.n_cross = self.n_grace = 0  # hot counters
        self._ops = {
            ("invoke", "publish"): self._publish_invoke, ("ok", "publish"): self._publish_outcome,
            ("fail", "publish"): self._publish_outcome, ("info", "publish"): self._publish_outcome,
            ("invoke", "connect"): self._connect_invoke, ("ok", "connect"): self._connect_answer,
            ("fail", "connect"): self._connect_answer, ("info", "connect"): self._connect_answer,
            ("invoke", "subscribe"): self._subscribe_invoke, ("ok", "subscribe"): self._subscribe_answer,
            ("fail", "subscribe"): self._subscribe_answer, ("info", "subscribe"): self._subscribe_answer,
            ("invoke", "unsubscribe"): self._unsubscribe_invoke,
            ("ok", "unsubscribe"): self._unsubscribe_answer,
            ("fail", "unsubscribe"): self._unsubscribe_answer,
            ("info", "unsubscribe"): self._unsubscribe_answer,
        }

    # ----------------------------------------------------------------- stream: dispatch
    def feed(self, rec: dict) -> None:
        self.line += 1
        typ = rec.get("type")
        if typ == "recv":  # by far the most frequent
            try:
                self._recv(rec, self.line)
            except (KeyError, TypeError, AttributeError):
                self.n["malformed_records"] += 1
            return
        if typ == "meta":
            self.meta.update({k: v for k, v in rec.items() if k != "type"})
            return
        t = rec.get("t")
        if t is not None and t > self.t_end:
            self.t_end = t
        if typ in ("invoke", "ok", "fail", "info"):
            handler = self._ops.get((typ, rec.get("f")))
        else:
            handler = {"close": self._close, "pause": self._pause, "resume": self._resume,
                       "fault": self._fault}.get(typ)
        if handler is None:
            self.n["unknown_records"] += 1
            return
        try:
            handler(rec, self.line)
        except (KeyError, TypeError, AttributeError):
            self.n["malformed_records"] += 1

    def feed_all(self, records: Iterable[dict]) -> "Checker":
        feed = self.feed
        for rec in records:
            feed(rec)
        return self

    # ----------------------------------------------------------------- stream: publishes
    def _event(self, eid: str) -> _Event:
        ev = self.events.get(eid)
        if ev is None:
            ev = self.events[eid] = _Event(eid)
        return ev

    def _publish_invoke(self, r: dict, line: int) -> None:
        ev = self._event(r["event_id"])
        if ev.t_inv is not None:  # the recorder must choose unique event ids
            self.n["recorder_errors"] += 1
            return
        ev.stype, ev.sid = r["scope"], r["id"]
        ev.skey = f"{ev.stype}:{ev.sid}"
        ev.node, ev.t_inv, ev.excl, ev.inv = r.get("node"), r["t"], r.get("exclude_workspace"), (line, r)
        if ev.status is None:
            ev.status = E_PENDING
        frame = r.get("frame")
        if type(frame) is not dict:
            frame = {}
        if frame.get("event_id") == ev.eid and not any(k in frame for k in SERVER_KEYS):
            exp = frame  # the usual case: no copy (nothing mutates it)
        else:
            exp = {k: v for k, v in frame.items() if k not in SERVER_KEYS}
            exp["event_id"] = ev.eid
        ev.expected = exp  # EV-2: what every receiver must see, apart from the server-set keys
        self.scope_events[ev.skey].append(ev)
        self.n["events"] += 1

    def _publish_outcome(self, r: dict, line: int) -> None:
        ev = self._event(r["event_id"])
        if ev.out is not None:
            self.n["recorder_errors"] += 1
            return
        ev.t_out, ev.out = r["t"], (line, r)
        typ = r["type"]
        if typ == "ok":
            ev.status, ev.pos = E_OK, r.get("pos")
        elif typ == "fail" and r.get("status") != 503:
            ev.status = E_FAIL  # e.g. 400: definitely not stored
        else:
            ev.status = E_MAYBE  # 503 (NODE-3: may still be delivered) or no answer

    # ----------------------------------------------------------------- stream: connections
    def _connect_invoke(self, r: dict, line: int) -> None:
        cid = r["conn"]
        if cid in self.conns:
            self.n["recorder_errors"] += 1
            return
        c = self.conns[cid] = _Conn(cid, r, line)
        # HS-6: the connection will hold its workspace and user scopes, and global:all, from
        # the connect ok on; until then they are pending (frames are neither due nor leaks)
        for stype, sid in (("workspace", c.ws), ("user", c.user), ("global", "all")):
            st = c.scopes[f"{stype}:{sid}"] = _Scope()
            st.period = self._new_period(c, stype, sid, r["t"], None, _Segment())
            st.phase = PENDING

    def _new_period(self, c: _Conn, stype: str, sid: str, asked: float, prev: _Period | None,
                    seg: _Segment) -> _Period:
        p = _Period(c, f"{stype}:{sid}", stype, sid, asked, prev, seg)
        c.periods.append(p)
        return p

    def _connect_answer(self, r: dict, line: int) -> None:
        c = self.conns[r["conn"]]
        t = r["t"]
        ok = r["type"] == "ok"
        if ok:
            c.t_ok, c.ok = t, (line, r)
            self.n["connections"] += 1
        for st in c.scopes.values():
            p = st.period
            if st.phase != PENDING or p.asked != c.t_inv or p.status != P_PENDING:
                continue
            if ok:
                self._grant(c, st, p, t, (line, r))
            else:
                p.status = P_DENIED if r["type"] == "fail" else P_MAYBE
                st.phase = DENIED if r["type"] == "fail" else MAYBE
                p.denial = (line, r)
                if st.phase == DENIED:
                    self._leak_received_while_pending(c, p)

    def _grant(self, c: _Conn, st: _Scope, p: _Period, t: float, open_item: tuple) -> None:
        p.status, p.start, p.open = P_HELD, t, open_item
        if st.period is p and st.phase == PENDING:
            st.phase = HELD
        p.segs[0].ack_index = len(p.segs[0].evs)
        # another workspace's or user's scope is never granted, whatever the server says
        p.foreign = ((p.stype == "workspace" and p.sid != c.ws) or (p.stype == "user" and p.sid != c.user))
        if not p.foreign:
            self.scope_periods[p.skey].append(p)

    def _close(self, r: dict, line: int) -> None:
        c = self.conns.get(r["conn"])
        if c is None or c.closed_t is not None:
            self.n["recorder_errors"] += 1
            return
        t = r["t"]
        c.closed_t, c.closed_by, c.close = t, r.get("by"), (line, r)
        c.last_recv_before_close = c.last_recv_t
        for st in c.scopes.values():
            p = st.period
            if p is not None and p.end is None and p.status in (P_HELD, P_PENDING, P_MAYBE):
                p.end, p.ended = t, (line, r)
                if p.status == P_PENDING:
                    p.status = P_MAYBE

    def _fault(self, r: dict, line: int) -> None:
        """A nemesis fault: its window stalls the nodes it names (see history.STALLS)."""
        kind = STALLS.get(r["fault"])
        key = (r["fault"], r["target"])
        if r["phase"] == "start":
            if kind is None:
                return  # client-side faults show up as the clients' own closes and pauses
            grace = self._liveness() if kind == "liveness" else max(self._liveness(), STORE_RECOVERY_S)
            stall = _Stall(r["fault"], r["target"], r["t"], grace, r["fault"] == "restart_redis", (line, r))
            self.open_faults[key] = stall
            for node in r["nodes"]:
                self.node_stalls[node].append(stall)
        elif key in self.open_faults:
            stall = self.open_faults.pop(key)
            stall.end = r["t"]
            stall.items.append((line, r))

    def _liveness(self) -> float:
        return float(self._liveness_arg if self._liveness_arg is not None else self.meta.get("liveness_s", 5.0))

    def _pause(self, r: dict, line: int) -> None:
        c = self.conns.get(r["conn"])
        if c is not None and (not c.pauses or c.pauses[-1][1] is not None):
            c.pauses.append([r["t"], None])

    def _resume(self, r: dict, line: int) -> None:
        c = self.conns.get(r["conn"])
        if c is not None and c.pauses and c.pauses[-1][1] is None:
            c.pauses[-1][1] = r["t"]

    # ----------------------------------------------------------------- stream: subscriptions
    def _scope(self, c: _Conn, r: dict) -> tuple[str, _Scope]:
        skey = f"{r['scope']}:{r['id']}"
        st = c.scopes.get(skey)
        if st is None:
            st = c.scopes[skey] = _Scope()
        return skey, st

    def _subscribe_invoke(self, r: dict, line: int) -> None:
        c = self.conns[r["conn"]]
        skey, st = self._scope(c, r)
        t = r["t"]
        if st.phase in (HELD, PENDING):
            p = st.period  # held already (SUB-5: same period) or asked already
        elif st.phase == MAYBE and st.period.end is None:
            p = st.period  # a subscribe that timed out: this one decides
            p.status, st.phase = P_PENDING, PENDING
        else:  # not held (never, denied, unsubscribed): a new period, pending until the answer
            mode = "since" if r.get("since") is not None else "live"
            p = self._new_period(c, r["scope"], r["id"], t, st.period, _Segment(mode))
            st.period, st.phase = p, PENDING
        op = _Op(t, line, r, p)
        if st.phase == PENDING and op.has_since and p.segs[0].op is None and not p.segs[0].evs:
            p.segs[0].mode, p.segs[0].op = "since", op
        st.subs.append(op)

    def _subscribe_answer(self, r: dict, line: int) -> None:
        c = self.conns[r["conn"]]
        skey, st = self._scope(c, r)
        if not st.subs:
            self.n["recorder_errors"] += 1
            return
        op = st.subs.pop(0)
        p = op.period
        t = r["t"]
        answer = r.get("answer") if r["type"] == "ok" else None
        if answer == "ack":
            self.n["subscribe_acks"] += 1
            recovered = r.get("recovered")
            # REP-2: with since, a boolean recovered; without, none at all
            if op.has_since and type(recovered) is not bool:
                self.anoms.add("REP-2", "missing_recovered_flag", c, None,
                               f"conn {c.cid} subscribed to {skey} with since={op.since!r} but the "
                               f"subscribe_ack carried recovered={recovered!r}, not true or false",
                               lambda: _x((op.line, op.rec), (line, r)))
            elif not op.has_since and "recovered" in r:
                self.anoms.add("REP-2", "field_mismatch", c, None,
                               f"conn {c.cid} subscribed to {skey} without since but the "
                               f"subscribe_ack carried recovered={recovered!r}",
                               lambda: _x((op.line, op.rec), (line, r)))
            op.ack_t = t
            resumed = op.has_since and type(recovered) is bool
            if resumed:
                self.n["resumes"] += 1
            if p.status in (P_PENDING, P_MAYBE, P_DENIED) and p.start is None:
                self._grant(c, st, p, t, (line, r))
                seg = p.segs[0]
                if resumed:
                    seg.mode, seg.op = ("recovered" if recovered else "false"), op
                    self.resumes.append((c, p, seg, op))
                elif seg.mode == "since":
                    seg.mode = "live"
            elif resumed and p.status == P_HELD:
                # a resume of a scope already held: same period (DEL-2 keeps counting), but a
                # new segment, since REP-3's order guarantee starts from here
                seg = _Segment("recovered" if recovered else "false", op)
                p.segs.append(seg)
                self.resumes.append((c, p, seg, op))
        elif p.status == P_PENDING and not any(o.period is p for o in st.subs):
            if answer == "error":
                self.n["subscribe_errors"] += 1
                p.status, p.denial = P_DENIED, (line, r)
                st.phase = DENIED if st.period is p else st.phase
                self._leak_received_while_pending(c, p)
            else:  # timeout, or no answer we understand: may or may not be held
                p.status = P_MAYBE
                if st.period is p and st.phase == PENDING:
                    st.phase = MAYBE
        # an error for a scope already held leaves it held (the reference server does so too)

    def _leak_received_while_pending(self, c: _Conn, p: _Period) -> None:
        """Frames that arrived between the subscribe and its subscribe_error (or a failed
        connect) were frames of a scope never granted: AZ-4."""
        seg = p.segs[0]
        for ev, t, line in zip(seg.evs, seg.ts, seg.lines):
            self._leak(c, ev, t, line, p.skey, p, "it arrived before the answer that refused it")
        p.received.clear()
        seg.evs.clear()
        del seg.ts[:], seg.lines[:]

    def _unsubscribe_invoke(self, r: dict, line: int) -> None:
        c = self.conns[r["conn"]]
        skey, st = self._scope(c, r)
        p = None
        if skey != "global:all" and st.phase in (HELD, PENDING, MAYBE):  # SUB-4: global stays
            p = st.period
            if p.end is None:
                p.end, p.ended = r["t"], (line, r)
            st.phase = ENDING
        st.unsubs.append(_Op(r["t"], line, r, p))

    def _unsubscribe_answer(self, r: dict, line: int) -> None:
        c = self.conns[r["conn"]]
        skey, st = self._scope(c, r)
        if not st.unsubs:
            self.n["recorder_errors"] += 1
            return
        op = st.unsubs.pop(0)
        if op.period is not None and r["type"] == "ok":
            op.period.unsub_ack = r["t"]
            op.period.ended = (line, r)
            if st.period is op.period and st.phase == ENDING:
                st.phase = GRACE  # in-flight frames may still come; newer ones may not (DEL-5)
        # without an ack the phase stays ENDING: frames are neither due nor late

    # ----------------------------------------------------------------- stream: receipts
    def _recv(self, r: dict, line: int) -> None:
        self.n_deliveries += 1
        t = r["t"]
        if t > self.t_end:
            self.t_end = t
        c = self.conns.get(r.get("conn"))
        if c is None or c.closed_t is not None:
            self.n["unattributed_deliveries"] += 1
            return
        frame = r.get("frame")
        eid = frame.get("event_id") if type(frame) is dict else None
        if type(eid) is not str or not eid:
            self.anoms.add("EV-2", "field_mismatch", c, None,
                           f"conn {c.cid} received an event frame whose event_id is {eid!r}, not a "
                           f"non-empty string", lambda: _x((line, r)))
            return
        c.last_recv_t = t
        ev = self.events.get(eid)
        if ev is None:
            ev = self.events[eid] = _Event(eid)
        ev.recv_count += 1
        if ev.first_recv is None:
            ev.first_recv = (c, t, line)
        if frame == ev.ref_frame:
            # fast path: identical to an earlier frame of this event that passed the EV-2 and
            # REP-1 field checks (the usual case: every receiver gets the same frame)
            known = True
            skey = ev.skey
            self.n_compared += 1
            if c.node != ev.node:
                self.n_cross += 1
        else:
            sc, sid, pos = frame.get("scope"), frame.get("scope_id"), frame.get("pos")
            fields_ok = type(sc) is str and type(sid) is str and type(pos) is str
            if not fields_ok:
                self._rep1_fields(c, ev, frame, t, line)
            if pos is not None:
                if ev.recv_pos is None:
                    ev.recv_pos = pos
                elif pos != ev.recv_pos:
                    self.pos_conflicts.append((c, ev, pos, t, line))
            known = ev.t_inv is not None
            if known:
                skey = ev.skey
                self.n_compared += 1
                if self._compare(c, ev, frame, t, line) and fields_ok and ev.ref_frame is None:
                    ev.ref_frame = frame
                if c.node != ev.node:
                    self.n_cross += 1
            elif type(sc) is str and type(sid) is str:
                skey = f"{sc}:{sid}"  # the publish comes later in the stream: route by the frame
            else:
                self.n["unattributed_deliveries"] += 1
                return
        st = c.scopes.get(skey)
        phase = st.phase if st is not None else NONE
        p = st.period if st is not None else None
        if phase in _ROUTED:
            if ev in p.received:
                self._duplicate(c, p, ev, t, line)
            else:
                p.received[ev] = len(p.segs) - 1
            seg = p.segs[-1]
            seg.evs.append(ev)
            seg.ts.append(t)
            seg.lines.append(line)
            if p.foreign:
                self._leak(c, ev, t, line, skey, p, "a scope of another workspace or user")
        else:
            why = "after a subscribe_error" if phase == DENIED else "never granted"
            self._leak(c, ev, t, line, skey, p, why)
        if known:
            if phase == GRACE:
                self.n_grace += 1
            if phase == GRACE or ev.excl is not None:
                self._late_or_excluded(c, ev, t, line, phase, p)
        else:
            self.deferred.append((c, ev, dict(frame), t, line, phase, p))

    def _late_or_excluded(self, c: _Conn, ev: _Event, t: float, line: int, phase: int,
                          p: _Period | None) -> None:
        # DEL-5: after the unsubscribe_ack only frames published before the ack may still come
        if phase == GRACE and ev.t_inv > p.unsub_ack:
            self.anoms.add(
                "DEL-5", "late_after_unsubscribe", c, ev,
                lambda: f"conn {c.cid} got {ev.eid} of {ev.skey} at t={_ts(t)} although its "
                        f"unsubscribe was acknowledged at t={_ts(p.unsub_ack)} and the publish only "
                        f"started at t={_ts(ev.t_inv)}",
                lambda: _x(p.ended, ev.inv, _recv_item(c, ev.eid, t, line)), also=("AZ-4",))
        # EV-1: a user event with exclude_workspace X skips that user's connections in X
        if ev.excl is not None and ev.stype == "user" and ev.excl == c.ws:
            self.anoms.add(
                "EV-1", "leak", c, ev,
                lambda: f"conn {c.cid} (workspace {c.ws}) received {ev.eid} of {ev.skey} published "
                        f"with exclude_workspace={ev.excl}: expected it to be skipped",
                lambda: _x(c.inv, ev.inv, _recv_item(c, ev.eid, t, line)))

    def _leak(self, c: _Conn, ev: _Event, t: float, line: int, skey: str, p: _Period | None,
              why: str) -> None:
        def explain() -> str:
            rep7 = ""
            if p is not None and p.denial is not None and p.segs[0].op is not None:
                rep7 = " (a resume denied by subscribe_error must replay nothing, REP-7)"
            return (f"conn {c.cid} (workspace {c.ws}, user {c.user}) received {ev.eid} of {skey} "
                    f"at t={_ts(t)}, a scope it did not hold: {why}{rep7}")

        self.anoms.add("AZ-4", "leak", c, ev, explain,
                       lambda: _x(ev.inv, p.denial if p is not None else None,
                                  _recv_item(c, ev.eid, t, line)))

    def _duplicate(self, c: _Conn, p: _Period, ev: _Event, t: float, line: int) -> None:
        cur = p.segs[-1]
        first_seg = p.received[ev]
        # a resume of a held scope must skip what this period already delivered (REP-3)
        replayed = cur.mode == "recovered" and first_seg < len(p.segs) - 1
        req, also = ("REP-3", ("DEL-2",)) if replayed else ("DEL-2", ())

        def first() -> tuple[float, int]:  # only looked up for kept witnesses
            seg = p.segs[first_seg]
            k = seg.evs.index(ev)
            return seg.ts[k], seg.lines[k]

        def explain() -> str:
            extra = " (the resume replayed an event it had already delivered)" if replayed else ""
            return (f"conn {c.cid} received {ev.eid} of {p.skey} twice in one holding period: "
                    f"first at t={_ts(first()[0])}, again at t={_ts(t)}{extra}")

        self.anoms.add(req, "duplicate", c, ev, explain,
                       lambda: _x(ev.inv, _recv_item(c, ev.eid, *first()),
                                  cur.op and (cur.op.line, cur.op.rec), _recv_item(c, ev.eid, t, line)),
                       also=also)

    def _compare(self, c: _Conn, ev: _Event, frame: dict, t: float, line: int) -> bool:
        """EV-2: the frame is the published object plus event_id, apart from the server keys,
        whose scope and scope_id must name the published scope (judged in the final pass, when
        the capabilities are known). True when nothing is suspicious."""
        got = frame.copy()
        for k in SERVER_KEYS:
            got.pop(k, None)
        sc, sid = frame.get("scope"), frame.get("scope_id")
        suspect = (sc is not None and sc != ev.stype) or (sid is not None and sid != ev.sid)
        if suspect:
            self.scope_suspects.append((c, ev, dict(frame), t, line))
        if got == ev.expected:
            return not suspect
        else:
            exp = ev.expected
            diff = sorted(k for k in set(got) | set(exp) if got.get(k, ...) != exp.get(k, ...))
            self.anoms.add(
                "EV-2", "field_mismatch", c, ev,
                lambda: f"conn {c.cid} received {ev.eid} with field(s) {', '.join(diff)} differing "
                        f"from the published frame: expected "
                        f"{ {k: exp.get(k, '<absent>') for k in diff} }, got "
                        f"{ {k: got.get(k, '<absent>') for k in diff} }",
                lambda: _x(ev.inv, _recv_item(c, ev.eid, t, line, frame)))
            return False

    def _rep1_fields(self, c: _Conn, ev: _Event, frame: dict, t: float, line: int) -> None:
        bad = [k for k in SERVER_KEYS if type(frame.get(k)) is not str]
        self.anoms.add("REP-1", "field_mismatch", c, ev,
                       lambda: f"conn {c.cid} received {ev.eid} without string "
                               f"{', '.join(bad)} (got {', '.join(f'{k}={frame.get(k)!r}' for k in bad)})",
                       lambda: _x(ev.inv, _recv_item(c, ev.eid, t, line, frame)))

    # ----------------------------------------------------------------- final pass
    def report(self) -> Report:
        caps = self._caps_arg if self._caps_arg is not None else tuple(self.meta.get("capabilities") or ())
        self.caps = frozenset(caps)
        self.resume = "resume" in self.caps
        self.profile = self._profile_arg or self.meta.get("profile") or "default"
        self.strict = self.profile == "strict"
        self.L = float(self._liveness_arg if self._liveness_arg is not None else self.meta.get("liveness_s", 5.0))
        self.slow = float(self._slow_arg if self._slow_arg is not None else self.meta.get("slow_close_s", 10.0))
        if self.t_end == -INF:
            self.t_end = 0.0
        self.n["deliveries"] = self.n_deliveries
        self.n["compared_frames"] = self.n_compared
        self.n["cross_node_deliveries"] = self.n_cross
        self._index()
        for c in self.conns.values():
            c.pause_ends = [INF if pe is None else pe for _, pe in c.pauses]
            c.stalls = sorted(self.node_stalls.get(c.node, ()), key=lambda s: s.start)
        self._deferred()
        self._events_final()
        self._completeness()  # DEL-1, DEL-6, EV-1 evidence
        self._replay_obligations()  # REP-3 lying_recovered
        self._sequences()  # DEL-3, DEL-7, REP-2 early replays, REP-3 order/stale, REP-4, DEL-4 graph
        if self.strict or self.resume:
            self._scope_order()  # DEL-4 (and REP-1's scope order)
        self._evidence()
        return self._verdicts()

    def _index(self) -> None:
        self.sorted: dict[str, tuple[list[_Event], list[float]]] = {}
        for skey, evs in self.scope_events.items():
            evs.sort(key=lambda e: e.t_inv)
            self.sorted[skey] = (evs, [e.t_inv for e in evs])
        self.pos_index: dict[tuple[str, str], _Event] = {}
        for ev in self.events.values():
            if ev.status == E_OK and type(ev.pos) is str and ev.skey is not None:
                self.pos_index[(ev.skey, ev.pos)] = ev

    def _deferred(self) -> None:
        """Receipts that arrived before their publish was recorded: check them now."""
        for c, ev, frame, t, line, phase, p in self.deferred:
            if ev.t_inv is None:
                self.n["unattributed_deliveries"] += 1
                continue
            self.n_compared += 1
            self._compare(c, ev, frame, t, line)
            self._late_or_excluded(c, ev, t, line, phase, p)

    def _events_final(self) -> None:
        """Per event: phantoms (EV-2), pos and scope consistency (EV-2, REP-1)."""
        n = self.n
        for ev in self.events.values():
            if ev.t_inv is None:
                continue
            st = ev.status
            n["acknowledged" if st == E_OK else "indeterminate" if st in (E_MAYBE, E_PENDING) else "failed"] += 1
            if ev.recv_count and st == E_FAIL:
                c, t, line = ev.first_recv
                self.anoms.add(
                    "EV-2", "phantom", c, ev,
                    lambda: f"{ev.eid} was refused (HTTP {ev.out[1].get('status')}), so it was never "
                            f"published, but conn {c.cid} received it at t={_ts(t)}",
                    lambda: _x(ev.inv, ev.out, _recv_item(c, ev.eid, t, line)))
            if self.resume and st == E_OK:
                if type(ev.pos) is not str:
                    self.anoms.add("REP-1", "field_mismatch", None, ev,
                                   lambda: f"publish of {ev.eid} was acknowledged with pos={ev.pos!r}, "
                                           f"not a string, although resume is claimed",
                                   lambda: _x(ev.inv, ev.out))
                elif ev.recv_pos is not None and ev.recv_pos != ev.pos:
                    c, t, line = ev.first_recv
                    self.anoms.add("EV-2", "field_mismatch", c, ev,
                                   lambda: f"conn {c.cid} received {ev.eid} with pos={ev.recv_pos!r} "
                                           f"but its publish returned pos={ev.pos!r}",
                                   lambda: _x(ev.inv, ev.out, _recv_item(c, ev.eid, t, line)))
        if self.resume:
            for c, ev, pos, t, line in self.pos_conflicts:
                if ev.status == E_OK and pos != ev.pos:
                    self.anoms.add("EV-2", "field_mismatch", c, ev,
                                   lambda: f"conn {c.cid} received {ev.eid} with pos={pos!r} but its "
                                           f"publish returned pos={ev.pos!r}",
                                   lambda: _x(ev.inv, ev.out, _recv_item(c, ev.eid, t, line)))
        for c, ev, frame, t, line in self.scope_suspects:
            pub = ev.inv[1].get("frame") or {}
            for k, want in (("scope", ev.stype), ("scope_id", ev.sid)):
                got = frame.get(k, want)
                # without resume a server may leave a published scope/scope_id untouched
                if got != want and (self.resume or got != pub.get(k)):
                    self.anoms.add("EV-2", "field_mismatch", c, ev,
                                   lambda: f"conn {c.cid} received {ev.eid} with {k}={got!r} but it "
                                           f"was published to {ev.skey} (expected {k}={want!r})",
                                   lambda: _x(ev.inv, _recv_item(c, ev.eid, t, line, frame)))
                    break

    # -- deadlines ----------------------------------------------------------------------
    def _deadline(self, c: _Conn, t0: float, d: float) -> tuple[float, float | None]:
        """The delivery deadline ``d`` for something due from ``t0``, moved for every pause of
        the connection that overlaps ``[t0, d]``: a client that stops reading cannot receive.
        The new deadline is the later of (old deadline + time paused) and (resume + liveness).
        A pause that never ended makes it infinite. Returns (deadline, start of first pause)."""
        first = None
        pauses = c.pauses
        # pauses do not overlap, so their ends are increasing: skip those over before t0
        for k in range(bisect.bisect_left(c.pause_ends, t0), len(pauses)):
            ps, pe = pauses[k]
            if ps > d:
                break
            if first is None:
                first = ps
            if pe is None:
                return INF, first
            d = max(d + (pe - max(ps, t0)), pe + self.L)
        return d, first

    def _stalled(self, c: _Conn, t0: float, d: float, stored: float | None = None) -> tuple[float, bool]:
        """The deadline `d` of something due from `t0`, moved past every fault that stalled the
        connection's node meanwhile: a stalled node cannot deliver, and delivers again within
        the stall's grace once it ends. True as well when a store restart may have taken the
        event (stored at `stored`) with it before it was due."""
        for s in c.stalls:
            if s.start > d:
                break
            if s.end < t0:
                continue
            if s.lossy and stored is not None and stored <= s.start:
                return d, True
            d = max(d + (min(s.end, d) - max(s.start, t0)), s.end + s.grace)
        return d, False

    def _faults_during(self, c: _Conn, t0: float, t1: float) -> str:
        """The faults that hit the connection's node between t0 and t1, for a witness."""
        hit = [str(s) for s in c.stalls if s.start <= t1 and s.end >= t0]
        return f"; fault(s) active meanwhile: {', '.join(hit)}" if hit else ""

    def _slow_close_excuse(self, c: _Conn, anchor: float) -> bool:
        """DEL-6: a server MAY close a connection that falls behind, within slow_close_s of the
        overflow. We cannot see the overflow; we accept a server close within slow_close_s of
        the last frame the connection received after ``anchor`` (a pause or an ack), or of
        ``anchor`` itself."""
        if c.closed_by != "server" or c.closed_t is None:
            return False
        return c.closed_t - max(anchor, c.last_recv_before_close) <= self.slow

    def _max_tinv(self, p: _Period) -> float:
        if p.max_tinv is None:
            p.max_tinv = max((e.t_inv for s in p.segs for e in s.evs if e.t_inv is not None), default=-INF)
        return p.max_tinv

    # -- DEL-1 / DEL-6 ------------------------------------------------------------------
    def _completeness(self) -> None:
        """For every holding period, every acknowledged publish of its scope that started
        inside it is due if the period lasted until the deadline (publish ok + liveness,
        moved by pauses). Receipts are looked up in the period's received set."""
        n, L, t_end = self.n, self.L, self.t_end
        for skey, periods in self.scope_periods.items():
            evs, tinvs = self.sorted.get(skey, ((), ()))
            if not evs:
                continue
            is_global = skey == "global:all"
            for p in periods:
                c = p.conn
                end = p.end if p.end is not None else t_end
                lo = bisect.bisect_left(tinvs, p.start)
                hi = bisect.bisect_left(tinvs, end, lo)
                received = p.received
                pauses = c.pauses
                for i in range(lo, hi):
                    ev = evs[i]
                    if ev.status != E_OK:
                        continue  # indeterminate or refused: receiving it or not are both fine
                    if ev.excl is not None and ev.excl == c.ws and ev.stype == "user":
                        continue  # EV-1: must not be sent to this connection at all
                    d = ev.t_out + L
                    pz = None
                    if pauses:
                        d, pz = self._deadline(c, ev.t_inv, d)
                    got = ev in received
                    if c.stalls and not got:
                        d, lost = self._stalled(c, ev.t_inv, d, ev.t_out)
                        if lost or d > end:  # what the active fault made impossible
                            n["excused_by_fault"] += 1
                            continue
                    if d > end and not got:
                        continue  # closed, unsubscribed or history ended first: may
                    n["due"] += 1  # a delivery is evidence even when the period ended early
                    if is_global:
                        n["due_global"] += 1
                    if pz is not None:
                        n["due_paused"] += 1
                    if got:
                        continue
                    self._missing(c, p, ev, d, pz)

    def _missing(self, c: _Conn, p: _Period, ev: _Event, d: float, pz: float | None) -> None:
        if pz is not None and self._slow_close_excuse(c, pz):
            self.n["excused_slow_close"] += 1
            return
        gap = self._max_tinv(p) > ev.t_out
        until = f"t={_ts(p.end)}" if p.end is not None else "the end of the history"
        base = (f"conn {c.cid} held {p.skey} from t={_ts(p.start)} until {until}, so {ev.eid} "
                f"(publish t={_ts(ev.t_inv)}, acknowledged t={_ts(ev.t_out)}) was due by t={_ts(d)}, "
                f"but it never arrived{self._faults_during(c, ev.t_inv, d)}")
        items = lambda: _x(p.open, ev.inv, ev.out, p.ended, c.close)  # noqa: E731
        if pz is not None and gap:
            self.anoms.add("DEL-6", "gap_on_open_connection", c, ev,
                           base + f"; it was paused at t={_ts(pz)}, received later events of the "
                                  f"scope and was not closed by the server in time",
                           items)
        else:
            why = f"; it was paused at t={_ts(pz)}" if pz is not None else ""
            self.anoms.add("DEL-1", "loss", c, ev, base + why + (", though later events arrived" if gap else ""),
                           items)

    # -- REP-3 obligations ---------------------------------------------------------------
    def _replay_obligations(self) -> None:
        n, L, t_end = self.n, self.L, self.t_end
        for c, p, seg, op in self.resumes:
            if seg.mode == "false":
                n["resumes_false"] += 1
                continue
            since_ev = self.pos_index.get((p.skey, op.since))
            if since_ev is None:
                n["resumes_unknown_since"] += 1  # cannot tell what is owed: no evidence
                continue
            seg.since_ev = since_ev
            n["resumes_true"] += 1
            evs, tinvs = self.sorted.get(p.skey, ((), ()))
            end = p.end if p.end is not None else t_end
            d, pz = self._deadline(c, op.ack_t, op.ack_t + L)
            if c.stalls:
                d, _ = self._stalled(c, op.ack_t, d)
            if d > end:
                continue  # the connection ended before the replay was due
            lo = bisect.bisect_right(tinvs, since_ev.t_out)
            hi = bisect.bisect_left(tinvs, op.ack_t, lo)
            lied = False
            for i in range(lo, hi):
                ev = evs[i]
                if ev.status != E_OK or ev is since_ev:
                    continue
                if ev.excl is not None and ev.excl == c.ws and ev.stype == "user":
                    continue
                n["due_replay"] += 1
                if ev in p.received:
                    continue
                if self._slow_close_excuse(c, op.ack_t if pz is None else pz):
                    n["excused_slow_close"] += 1
                    continue
                if not lied:  # resumes answered recovered=true that missed an event (a lie)
                    lied = True
                    n["resumes_lying"] += 1
                self.anoms.add(
                    "REP-3", "lying_recovered", c, ev,
                    lambda: f"conn {c.cid} resumed {p.skey} since {op.since!r} ({since_ev.eid}) and got "
                            f"recovered=true at t={_ts(op.ack_t)}, but never received {ev.eid}, "
                            f"published after it (t={_ts(ev.t_inv)}, ok t={_ts(ev.t_out)})",
                    lambda: _x(since_ev.out, ev.inv, ev.out, (op.line, op.rec), p.open, c.close))

    # -- per-sequence checks ---------------------------------------------------------------
    def _sequences(self) -> None:
        """One pass over every segment's receipts: publisher order (DEL-3), replay order and
        stale replays (REP-3), early replays (REP-2), replays after recovered=false (REP-4),
        stale events (DEL-7), late-delivery counts, and the edges of the scope order graph."""
        n, L = self.n, self.L
        strict, graph = self.strict, (self.strict or self.resume)
        self.edges: dict[tuple[_Event, _Event], tuple] = {}
        edges = self.edges
        stamp = 0
        late = 0
        for c in self.conns.values():
            for p in c.periods:
                if p.status == P_DENIED:
                    continue
                for seg in p.segs:
                    stamp += 1
                    mode, op, since_ev = seg.mode, seg.op, seg.since_ev
                    top, top_i, min_ok = -INF, -1, INF
                    prev, prev_i = None, -1
                    for i, ev in enumerate(seg.evs):
                        if ev.mark == stamp or ev.t_inv is None:
                            continue  # repeats are DEL-2's; unknown publishes cannot be ordered
                        ev.mark = stamp
                        ok = ev.status == E_OK
                        if ok:
                            t_ok = ev.t_out
                            if p.start is not None and ev.t_inv >= p.start and seg.ts[i] > t_ok + L:
                                late += 1  # counted, not judged: DEL-1 asks for receipt
                            if t_ok < top:
                                self._reorder(c, p, seg, ev, i, top_i)
                            if min_ok < ev.t_inv:
                                n["ordered_pairs"] += 1
                            if t_ok < min_ok:
                                min_ok = t_ok
                            if mode == "live":
                                if strict and t_ok < p.asked and not self._in_flight_prev(p, ev):
                                    self._stale(c, p, seg, ev, i)
                            elif i < seg.ack_index:
                                if t_ok < op.t and not self._in_flight_prev(p, ev):
                                    self._early_replay(c, p, seg, ev, i)
                            elif mode == "false":
                                if (t_ok < op.t and ev.t_inv < p.start and not self._in_flight_prev(p, ev)):
                                    self._replay_after_false(c, p, seg, ev, i)
                            elif since_ev is not None and (ev is since_ev or t_ok < since_ev.t_inv):
                                if ev.t_inv < p.start and not self._in_flight_prev(p, ev):
                                    self._replayed_too_much(c, p, seg, ev, i)
                        if ev.t_inv > top:
                            top, top_i = ev.t_inv, i
                        if graph:
                            if prev is not None:
                                key = (prev, ev)
                                known = edges.get(key)
                                if known is None:
                                    edges[key] = (c, seg, prev_i, i)
                                elif known[0] is not c:
                                    n["shared_order_pairs"] += 1
                            prev, prev_i = ev, i
        n["late_deliveries"] = late

    def _in_flight_prev(self, p: _Period, ev: _Event) -> bool:
        """A frame published while the previous period of this (connection, scope) was held and
        before its unsubscribe_ack, not received then, may legitimately arrive now."""
        q = p.prev
        return (q is not None and q.start is not None and q.start <= ev.t_inv
                and (q.unsub_ack is None or ev.t_inv < q.unsub_ack) and ev not in q.received)

    def _seg_item(self, c: _Conn, seg: _Segment, i: int) -> tuple[int, dict]:
        return _recv_item(c, seg.evs[i].eid, seg.ts[i], seg.lines[i])

    def _reorder(self, c: _Conn, p: _Period, seg: _Segment, ev: _Event, i: int, j: int) -> None:
        other = seg.evs[j]
        replay = seg.mode == "recovered" and ev.t_inv < seg.op.t
        if replay:  # a missed (replayed) event arriving after a newer one
            req, kind, also = "REP-3", "replay_out_of_order", (("REP-1",) if self.resume else ())
        else:
            req, kind, also = "DEL-3", "reorder", (("REP-1",) if self.resume else ())
        self.anoms.add(
            req, kind, c, ev,
            lambda: f"conn {c.cid} received {ev.eid} (publish ok t={_ts(ev.t_out)}) after "
                    f"{other.eid} (publish started t={_ts(other.t_inv)}, later) on {p.skey}: "
                    f"expected {ev.eid} first" + (" (replayed after a live event)" if replay else ""),
            lambda: _x(ev.inv, ev.out, other.inv, (seg.op.line, seg.op.rec) if replay else None,
                       self._seg_item(c, seg, j), self._seg_item(c, seg, i)),
            also=also)

    def _stale(self, c: _Conn, p: _Period, seg: _Segment, ev: _Event, i: int) -> None:
        self.anoms.add(
            "DEL-7", "stale_event", c, ev,
            lambda: f"conn {c.cid} asked for {p.skey} at t={_ts(p.asked)} without since but received "
                    f"{ev.eid}, acknowledged earlier (t={_ts(ev.t_out)})",
            lambda: _x(ev.inv, ev.out, p.open, self._seg_item(c, seg, i)))

    def _early_replay(self, c: _Conn, p: _Period, seg: _Segment, ev: _Event, i: int) -> None:
        self.anoms.add(
            "REP-2", "replay_out_of_order", c, ev,
            lambda: f"conn {c.cid} received {ev.eid} (published before its resume of {p.skey}) before "
                    f"the subscribe_ack: replayed frames must follow the ack",
            lambda: _x(ev.inv, (seg.op.line, seg.op.rec), self._seg_item(c, seg, i), p.open))

    def _replay_after_false(self, c: _Conn, p: _Period, seg: _Segment, ev: _Event, i: int) -> None:
        op = seg.op
        self.anoms.add(
            "REP-4", "replay_after_false", c, ev,
            lambda: f"conn {c.cid} resumed {p.skey} and got recovered=false at t={_ts(op.ack_t)}, but "
                    f"then received {ev.eid}, acknowledged before the subscribe (t={_ts(ev.t_out)}): "
                    f"recovered=false must replay nothing",
            lambda: _x(ev.inv, ev.out, (op.line, op.rec), p.open if p.open and p.open[0] > op.line else None,
                       self._seg_item(c, seg, i)))

    def _replayed_too_much(self, c: _Conn, p: _Period, seg: _Segment, ev: _Event, i: int) -> None:
        op, since_ev = seg.op, seg.since_ev
        self.anoms.add(
            "REP-3", "stale_event", c, ev,
            lambda: f"conn {c.cid} resumed {p.skey} since {op.since!r} ({since_ev.eid}) but received "
                    f"{ev.eid}, which is not after since",
            lambda: _x(since_ev.out, ev.inv, (op.line, op.rec), self._seg_item(c, seg, i)))

    # -- DEL-4 ----------------------------------------------------------------------------------
    def _scope_order(self) -> None:
        """Connections must agree on one order per scope: the union of every sequence's
        consecutive pairs must be acyclic. Kahn's algorithm; whatever remains sits on a cycle."""
        succ: dict[_Event, list[_Event]] = defaultdict(list)
        pred: dict[_Event, list[_Event]] = defaultdict(list)
        indeg: dict[_Event, int] = defaultdict(int)
        for a, b in self.edges:
            succ[a].append(b)
            pred[b].append(a)
            indeg[b] += 1
            indeg.setdefault(a, 0)
        queue = [e for e, d in indeg.items() if d == 0]
        while queue:
            a = queue.pop()
            for b in succ.get(a, ()):
                indeg[b] -= 1
                if indeg[b] == 0:
                    queue.append(b)
        left = {e for e, d in indeg.items() if d > 0}
        reported = set()
        for start in left:
            if start.skey in reported:
                continue
            reported.add(start.skey)
            # walk predecessors inside the remainder until one repeats: that is a cycle
            seen: dict[_Event, int] = {}
            path = [start]
            e = start
            while e not in seen:
                seen[e] = len(path) - 1
                e = next(q for q in pred[e] if q in left)
                path.append(e)
            cycle = path[seen[e]:]  # e ... e, walking backwards: reverse to follow the edges
            cycle.reverse()
            self._order_conflict(cycle)

    def _order_conflict(self, cycle: list[_Event]) -> None:
        hops = []
        for a, b in zip(cycle, cycle[1:]):
            c, seg, i, j = self.edges[(a, b)]
            hops.append((a, b, c, seg, i, j))
        c0 = hops[-1][2]
        ev0 = hops[-1][1]
        also = ("REP-1",) if self.resume else ()
        text = "; ".join(f"conn {c.cid} received {a.eid} before {b.eid}" for a, b, c, *_ in hops)
        self.anoms.add(
            "DEL-4", "reorder", c0, ev0,
            lambda: f"connections disagree on the order of {ev0.skey}: {text}",
            lambda: _x(*[self._seg_item(c, seg, k) for _, _, c, seg, i, j in hops for k in (i, j)][:8]),
            also=also)
        if self.resume:
            self.n["order_conflicts"] += 1

    # -- evidence and verdicts ----------------------------------------------------------------
    def _evidence(self) -> None:
        n = self.n
        # DEL-5: an unsubscribe was acknowledged while events of its scope went on being published
        del5 = 0
        az4 = sum(1 for c in self.conns.values() for p in c.periods if p.status == P_DENIED or p.foreign)
        for c in self.conns.values():
            for p in c.periods:
                if p.unsub_ack is None:
                    continue
                az4 += 1
                _, tinvs = self.sorted.get(p.skey, ((), ()))
                i = bisect.bisect_right(tinvs, p.unsub_ack)
                if i < len(tinvs) and tinvs[i] < (c.closed_t if c.closed_t is not None else self.t_end):
                    del5 += 1
        n["unsubscribed_while_publishing"] = del5 + self.n_grace  # + frames after an unsubscribe_ack
        # AZ-4: events published to scopes that some connection did not hold
        holders: dict[str, set] = defaultdict(set)
        for c in self.conns.values():
            for p in c.periods:
                if p.status == P_HELD:
                    holders[p.skey].add(c)
        nconn = sum(1 for c in self.conns.values() if c.t_ok is not None)
        for skey in self.scope_events:
            if len(holders.get(skey, ())) < nconn:
                az4 += 1
        n["leak_opportunities"] = az4
        # EV-1: exclude_workspace with a connection of that user in that workspace
        pairs = {(c.user, c.ws) for c in self.conns.values() if c.t_ok is not None}
        n["exclusion_opportunities"] = sum(
            1 for ev in self.events.values()
            if ev.excl is not None and ev.stype == "user" and (ev.sid, ev.excl) in pairs)

    _EVIDENCE = {
        "DEL-1": ("due", "due deliveries"),
        "DEL-2": ("deliveries", "deliveries"),
        "DEL-3": ("ordered_pairs", "publisher-ordered pairs received"),
        "DEL-4": ("shared_order_pairs", "consecutive pairs seen by several connections"),
        "DEL-5": ("unsubscribed_while_publishing", "unsubscribes followed by publishes"),
        "DEL-6": ("due_paused", "due deliveries to paused connections"),
        "DEL-7": ("stale_opportunities", "subscribes after acknowledged publishes"),
        "AZ-4": ("leak_opportunities", "scopes or subscriptions a connection did not hold"),
        "EV-1": ("ev1", "excluded workspaces and global deliveries"),
        "EV-2": ("compared_frames", "frames compared with their publish"),
        "REP-1": ("deliveries", "deliveries"),
        "REP-2": ("subscribe_acks", "subscribe acks"),
        "REP-3": ("resumes_true", "resumes answered recovered=true"),
        "REP-4": ("resumes_false", "resumes answered recovered=false"),
        "NODE-1": ("node1", "cross-node deliveries"),
    }

    def _active(self, req: str) -> bool:
        return applicability(REQUIREMENTS[req], self.caps, self.profile) is None

    def _verdicts(self) -> Report:
        n = self.n
        # DEL-7: a subscribe (or connect) later than some acknowledged publish of its scope
        min_ok = {}
        for skey, (evs, _) in self.sorted.items():
            oks = [e.t_out for e in evs if e.status == E_OK]
            if oks:
                min_ok[skey] = min(oks)
        n["stale_opportunities"] = sum(1 for c in self.conns.values() for p in c.periods
                                       if p.status == P_HELD and min_ok.get(p.skey, INF) < p.asked)
        n["ev1"] = n["exclusion_opportunities"] + n["due_global"]
        n["node1"] = n["cross_node_deliveries"]
        verdicts = {}
        for req in CHECKER_IDS:
            key, what = self._EVIDENCE[req]
            if req == "NODE-1":
                found, witnesses = self.anoms.node1(self._active)
            else:
                found, witnesses = self.anoms.count.get(req, 0), self.anoms.kept.get(req, [])
            verdicts[req] = checker_verdict(req, claimed=self.caps, profile=self.profile, violations=found,
                                            witnesses=witnesses, evidence=n.get(key, 0), what=what)
        counts = {k: n.get(k, 0) for k in (
            "events", "acknowledged", "indeterminate", "failed", "connections", "deliveries",
            "due", "due_replay", "late_deliveries", "excused_slow_close", "resumes",
            "resumes_unknown_since", "resumes_true", "resumes_false", "resumes_lying", "cross_node_deliveries", "unattributed_deliveries",
            "recorder_errors", "malformed_records", "unknown_records", "excused_by_fault")}
        counts["records"] = self.line
        counts["checked_events"] = counts["events"]
        return Report(verdicts, counts, self.profile, tuple(sorted(self.caps)))


def check(records: Iterable[dict], *, capabilities: Iterable[str] | None = None,
          profile: str | None = None, liveness_s: float | None = None,
          slow_close_s: float | None = None, max_witnesses: int = 5) -> Report:
    """Check a history (records in stream order: one recorder's file, or several merged by
    ``t`` with :func:`conformance.history.merge_histories`). ``capabilities``, ``profile``
    (``"default"`` or ``"strict"``), ``liveness_s`` (default 5.0) and ``slow_close_s`` (default
    10.0) fall back to the history's ``meta`` records, then to the defaults."""
    # The checker allocates one small object per delivery and frees nothing until the end;
    # the cyclic GC would rescan that growing heap again and again (about a third of the run
    # time on a million-line history) and could not free any of it. Pause it meanwhile.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return Checker(capabilities=capabilities, profile=profile, liveness_s=liveness_s,
                       slow_close_s=slow_close_s, max_witnesses=max_witnesses).feed_all(records).report()
    finally:
        if was_enabled:
            gc.enable()


# --- synthetic histories and the benchmark -----------------------------------------------------------


def synthetic_history(lines: int, *, seed: int = 1, nodes: int = 3, conns: int = 40,
                      fanout_tasks: int = 8) -> list[dict]:
    """Records of a correct run, about ``lines`` long, in ``t`` order: connections on several
    nodes in two workspaces, task subscriptions, publishes to workspace, user (some with
    exclude_workspace), task and global scopes, delivered to every holder in publisher order;
    unsubscribes followed by resumes (mostly recovered with replay, some recovered=false),
    paused readers that catch up after resuming, closes and reconnects. Publishes are 2 ms
    apart, so a million lines span a few minutes of history. For the benchmark and tests."""
    import random

    rnd = random.Random(seed)
    node_urls = [f"http://127.0.0.1:{8100 + i}" for i in range(nodes)]
    wss = ["ws-a", "ws-b"]
    users = [f"u-{i}" for i in range(max(1, conns // 2))]
    tasks = {ws: [f"{ws}-task-{k}" for k in range(fanout_tasks)] for ws in wss}
    clock = [1000.0]
    pos_ctr: dict[str, int] = defaultdict(int)
    log: dict[str, list[tuple[str, dict, str]]] = defaultdict(list)  # scope -> (eid, frame, pos)
    out: list[dict] = [{"type": "meta", "capabilities": ["resume", "global", "exclude_workspace"],
                        "liveness_s": 5, "seed": seed}]

    def rec(r: dict, dt: float = 0.0001) -> None:
        clock[0] += dt
        r["t"] = round(clock[0], 6)
        out.append(r)

    class C:
        pass

    live: dict[str, Any] = {}
    serial = [0]

    def connect(user: str, ws: str) -> None:
        serial[0] += 1
        c = C()
        c.id, c.user, c.ws, c.node = f"c{serial[0]}", user, ws, rnd.choice(node_urls)
        c.p = f"client-{c.id}"
        c.scopes = {f"workspace:{ws}", f"user:{user}", "global:all"}
        c.last, c.paused, c.buffer = {}, False, []
        rec({"p": c.p, "type": "invoke", "f": "connect", "conn": c.id, "node": c.node, "user": user,
             "workspace": ws, "auth": "token"})
        rec({"p": c.p, "type": "ok", "f": "connect", "conn": c.id})
        live[c.id] = c
        for task in rnd.sample(tasks[ws], 3):
            subscribe(c, task)

    def subscribe(c, task: str, since: str | None = None) -> None:
        r = {"p": c.p, "type": "invoke", "f": "subscribe", "conn": c.id, "scope": "task", "id": task}
        if since is not None:
            r["since"] = since
        rec(r)
        ok = {"p": c.p, "type": "ok", "f": "subscribe", "conn": c.id, "scope": "task", "id": task,
              "answer": "ack", "error": None}
        skey = f"task:{task}"
        replay = []
        if since is not None:
            ok["recovered"] = rnd.random() < 0.8  # else: as if the stream had been trimmed
            if ok["recovered"]:
                entries = log[skey]
                idx = next(k for k, e in enumerate(entries) if e[2] == since)
                replay = entries[idx + 1:]
        rec(ok)
        for _, frame, _ in replay:
            deliver(c, skey, frame)
        c.scopes.add(skey)

    def deliver(c, skey: str, frame: dict) -> None:
        if c.paused:  # not read yet: it arrives after the resume
            c.buffer.append((skey, frame))
            return
        rec({"p": c.p, "type": "recv", "conn": c.id, "frame": frame}, 0.00002)
        c.last[skey] = frame["pos"]

    def publish() -> None:
        roll = rnd.random()
        c0 = rnd.choice(list(live.values()))
        excl = None
        if roll < 0.2:
            stype, sid = "workspace", c0.ws
        elif roll < 0.3:
            stype, sid = "user", c0.user
            if roll < 0.23:
                excl = rnd.choice(wss)
        elif roll < 0.32:
            stype, sid = "global", "all"
        else:
            stype, sid = "task", rnd.choice(tasks[c0.ws])
        skey = f"{stype}:{sid}"
        serial[0] += 1
        eid = f"e{serial[0]}"
        pos_ctr[skey] += 1
        pos = f"{skey}#{pos_ctr[skey]}"
        body = {"type": "task:message", "payload": {"n": serial[0], "text": "hello"}, "event_id": eid}
        rec({"p": "publisher", "type": "invoke", "f": "publish", "node": rnd.choice(node_urls),
             "scope": stype, "id": sid, "event_id": eid, "frame": body, "exclude_workspace": excl}, 0.002)
        frame = dict(body, scope=stype, scope_id=sid, pos=pos)
        log[skey].append((eid, frame, pos))
        for c in list(live.values()):
            if skey in c.scopes and not (excl is not None and c.ws == excl):
                deliver(c, skey, frame)
        rec({"p": "publisher", "type": "ok", "f": "publish", "event_id": eid, "pos": pos})

    for i in range(conns):
        connect(users[i % len(users)], wss[i % 2])
    parked: list[tuple[Any, str, str]] = []  # (conn, task, last pos) unsubscribed, to resume
    paused: list[Any] = []
    while len(out) < lines:
        publish()
        roll = rnd.random()
        c = rnd.choice(list(live.values()))
        if roll < 0.02:  # unsubscribe a task, resume it a little later
            held = sorted(s for s in c.scopes if s.startswith("task:") and s in c.last)
            if held and not c.paused:
                skey = rnd.choice(held)
                task = skey.split(":", 1)[1]
                rec({"p": c.p, "type": "invoke", "f": "unsubscribe", "conn": c.id, "scope": "task", "id": task})
                c.scopes.discard(skey)
                rec({"p": c.p, "type": "ok", "f": "unsubscribe", "conn": c.id, "scope": "task", "id": task,
                     "answer": "ack", "error": None})
                parked.append((c, task, c.last[skey]))
        elif roll < 0.04 and parked:
            pc, task, since = parked.pop(0)
            if pc.id in live and not pc.paused:
                subscribe(pc, task, since)
        elif roll < 0.045 and not c.paused:  # a connection closes, another opens
            rec({"p": c.p, "type": "close", "conn": c.id, "by": "client", "code": 1000})
            del live[c.id]
            connect(c.user, c.ws)
        elif roll < 0.05 and not c.paused:  # a slow reader stops reading for a while
            c.paused = True
            rec({"p": c.p, "type": "pause", "conn": c.id})
            paused.append(c)
        if paused and rnd.random() < 0.05:  # ... and catches up after about 20 publishes
            c = paused.pop(0)
            c.paused = False
            rec({"p": c.p, "type": "resume", "conn": c.id})
            for skey, frame in c.buffer:
                deliver(c, skey, frame)
            c.buffer = []
    return out


def _bench(n: int, path: str | None, profile: str | None = None) -> int:
    import os
    import tempfile

    from conformance.history import HistoryWriter, read_history

    t0 = time.perf_counter()
    records = synthetic_history(n)
    t1 = time.perf_counter()
    tmp = path or os.path.join(tempfile.mkdtemp(prefix="scopehub-bench-"), "history.jsonl")
    with HistoryWriter(tmp, append=False, process="bench") as w:
        for r in records:
            w.write(r, r.get("t"))
    t2 = time.perf_counter()
    del records
    c2 = time.process_time()
    report = check(read_history(tmp), profile=profile)
    t3, c3 = time.perf_counter(), time.process_time()
    lines = report.counts["records"]
    print(f"generated {lines} lines in {t1 - t0:.2f} s; wrote them in {t2 - t1:.2f} s "
          f"({lines / (t2 - t1):,.0f} lines/s)")
    print(f"checked {lines} lines (read + check) in {t3 - t2:.2f} s: {lines / (t3 - t2):,.0f} lines/s "
          f"(CPU {c3 - c2:.2f} s: {lines / max(c3 - c2, 1e-9):,.0f} lines/s)")
    print("verdicts: " + ", ".join(f"{r}={v.status}" for r, v in report.verdicts.items()))
    if not path:
        os.remove(tmp)
        os.rmdir(os.path.dirname(tmp))
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m conformance.checker",
                                 description="Check recorded histories (docs/history.md) offline.")
    ap.add_argument("paths", nargs="*", help="history files (JSON lines); several are merged by t")
    ap.add_argument("--capabilities", help="comma-separated; default: the history's meta records")
    ap.add_argument("--profile", choices=("default", "strict"))
    ap.add_argument("--liveness", type=float, dest="liveness_s")
    ap.add_argument("--slow-close", type=float, dest="slow_close_s")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--bench", type=int, metavar="N",
                    help="generate an N-line history of a correct run, check it, print lines/s")
    ap.add_argument("--bench-file", help="with --bench: keep the generated history here")
    a = ap.parse_args(argv)
    if a.bench:
        return _bench(a.bench, a.bench_file, a.profile)
    if not a.paths:
        ap.error("give history files, or --bench N")
    from conformance.history import merge_histories

    caps = a.capabilities.split(",") if a.capabilities is not None else None
    report = check(merge_histories(*a.paths), capabilities=caps, profile=a.profile,
                   liveness_s=a.liveness_s, slow_close_s=a.slow_close_s)
    print(json.dumps(report.to_dict(), indent=1) if a.json else report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

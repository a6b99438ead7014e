"""Histories: what a recorder saw, one JSON object per line, for the offline checker.

The format is described for people writing their own recorder in ``docs/history.md``. In
short, every line is an object with ``t`` (seconds from ``time.monotonic()``, which on Linux
is one clock for every process on the machine), ``p`` (the recording process or actor) and
``type``: ``invoke`` / ``ok`` / ``fail`` / ``info`` for operations (``f`` names the operation:
``publish``, ``connect``, ``subscribe``, ``unsubscribe``), ``recv`` for every event frame a
connection received, ``close``, ``pause`` / ``resume`` for connections whose reading is
stopped on purpose, and ``meta`` for facts about the run (capabilities, profile, seed).

:class:`HistoryWriter` appends such lines to a file (or keeps the records in memory);
:func:`read_history` yields them back; :func:`merge_histories` merges the files of several
recorder processes into one stream ordered by ``t``, which is what the checker wants.
"""

from __future__ import annotations

import heapq
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, Literal, TypedDict

# --- record types -----------------------------------------------------------------------------

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
RECV, CLOSE, PAUSE, RESUME, META, FAULT = "recv", "close", "pause", "resume", "meta", "fault"
OP_TYPES = frozenset({INVOKE, OK, FAIL, INFO})
RECORD_TYPES = frozenset({INVOKE, OK, FAIL, INFO, RECV, CLOSE, PAUSE, RESUME, META, FAULT})
#: fault kinds whose window stalls what they hit (the checker moves deadlines past them), and
#: how long after the window delivery may take to resume: a node frozen or restarted resumes at
#: the contract's liveness bound; a node cut off from its store, or a store that was down,
#: within NODE-3's 10 s
STALLS = {"pause_node": "liveness", "kill_node": "liveness", "restart_node": "liveness",
          "link_cut": "store", "link_latency": "store", "restart_redis": "store", "pause_redis": "store",
          "failover": "store", "reshard": "store"}
STORE_RECOVERY_S = 10.0
PUBLISH, CONNECT, SUBSCRIBE, UNSUBSCRIBE = "publish", "connect", "subscribe", "unsubscribe"
OPERATIONS = frozenset({PUBLISH, CONNECT, SUBSCRIBE, UNSUBSCRIBE})

#: A publish ``fail`` with this status is indeterminate: NODE-3 lets a 503'd event be delivered.
INDETERMINATE_STATUS = 503

#: Passed as ``since`` / ``recovered`` to mean "leave the field out of the record".
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT", "__bool__": lambda self: False})()


class _Base(TypedDict):
    t: float  # time.monotonic() of the moment the recorder saw it
    p: str  # recording process / actor


class PublishInvoke(_Base):
    type: Literal["invoke"]
    f: Literal["publish"]
    node: str  # base URL of the node the publish was sent to
    scope: str  # scope type: workspace | user | task | chat | global
    id: str  # scope id ("all" for global)
    event_id: str  # chosen by the recorder and put in the frame, so every outcome is attributable
    frame: dict
    exclude_workspace: str | None


class PublishOk(_Base):
    type: Literal["ok"]
    f: Literal["publish"]
    event_id: str
    pos: str | None


class PublishFail(_Base):  # status 503: indeterminate (NODE-3); any other: definitely not stored
    type: Literal["fail"]
    f: Literal["publish"]
    event_id: str
    status: int
    error: str


class PublishInfo(_Base):  # no answer (timeout, connection reset): indeterminate
    type: Literal["info"]
    f: Literal["publish"]
    event_id: str
    error: str


class ConnectInvoke(_Base):
    type: Literal["invoke"]
    f: Literal["connect"]
    conn: str
    node: str
    user: str
    workspace: str
    auth: Literal["token", "cookie"]


class ConnectOk(_Base):  # auth_ack received (token) or upgrade done (cookie): HS-6 scopes held
    type: Literal["ok"]
    f: Literal["connect"]
    conn: str


class ConnectFail(_Base):
    type: Literal["fail"]
    f: Literal["connect"]
    conn: str
    error: str


class SubscribeInvoke(_Base, total=False):  # also f="unsubscribe" (never with since)
    type: Literal["invoke"]
    f: Literal["subscribe", "unsubscribe"]
    conn: str
    scope: str
    id: str
    since: str | None  # absent: a plain subscribe


class SubscribeOk(_Base, total=False):
    type: Literal["ok"]
    f: Literal["subscribe", "unsubscribe"]
    conn: str
    scope: str
    id: str
    answer: Literal["ack", "error"]
    error: str | None
    recovered: bool  # copied from the ack only when the ack carried it


class Recv(_Base):
    type: Literal["recv"]
    conn: str
    frame: dict  # the whole event frame as received


class Close(_Base):
    type: Literal["close"]
    conn: str
    by: Literal["client", "server"]
    code: int | None


class Fault(_Base):
    """A fault of the simulator's nemesis: one record when it starts, one when it ends."""
    type: Literal["fault"]
    fault: str  # kill_node, pause_node, restart_node, restart_redis, link_cut, link_latency, ...
    phase: Literal["start", "end"]
    target: str  # what it hit, as the report names it: node-2, redis, clients
    nodes: list[str]  # base URLs of the nodes whose clients it stalls (every node for the store)


class Pause(_Base):  # also type="resume"
    type: Literal["pause", "resume"]
    conn: str


_REQUIRED: dict[tuple[str, str | None], tuple[str, ...]] = {
    (INVOKE, PUBLISH): ("node", "scope", "id", "event_id", "frame"),
    (OK, PUBLISH): ("event_id",),
    (FAIL, PUBLISH): ("event_id", "status"),
    (INFO, PUBLISH): ("event_id",),
    (INVOKE, CONNECT): ("conn", "node", "user", "workspace"),
    (OK, CONNECT): ("conn",),
    (FAIL, CONNECT): ("conn",),
    (INFO, CONNECT): ("conn",),
    (INVOKE, SUBSCRIBE): ("conn", "scope", "id"),
    (OK, SUBSCRIBE): ("conn", "scope", "id", "answer"),
    (INFO, SUBSCRIBE): ("conn", "scope", "id"),
    (FAIL, SUBSCRIBE): ("conn", "scope", "id"),
    (INVOKE, UNSUBSCRIBE): ("conn", "scope", "id"),
    (OK, UNSUBSCRIBE): ("conn", "scope", "id"),
    (INFO, UNSUBSCRIBE): ("conn", "scope", "id"),
    (FAIL, UNSUBSCRIBE): ("conn", "scope", "id"),
    (RECV, None): ("conn", "frame"),
    (CLOSE, None): ("conn", "by"),
    (PAUSE, None): ("conn",),
    (RESUME, None): ("conn",),
    (META, None): (),
    (FAULT, None): ("fault", "phase", "target", "nodes"),
}


def validate(record: Any) -> list[str]:
    """Problems with one record (an empty list when it is well formed). For recorder authors and
    tests; the checker itself does not call it on every line."""
    if not isinstance(record, dict):
        return ["a record is a JSON object"]
    problems = []
    typ = record.get("type")
    if typ not in RECORD_TYPES:
        return [f"unknown type {typ!r}"]
    if typ != META:
        if not isinstance(record.get("t"), (int, float)):
            problems.append("t must be a number (time.monotonic())")
        if not isinstance(record.get("p"), str):
            problems.append("p must be a string")
    f = record.get("f") if typ in OP_TYPES else None
    if typ in OP_TYPES and f not in OPERATIONS:
        return problems + [f"unknown operation f={f!r}"]
    for k in _REQUIRED.get((typ, f), ()):
        if k not in record:
            problems.append(f"{typ} {f or ''} record without {k!r}".replace("  ", " "))
    if typ == RECV and not isinstance(record.get("frame"), dict):
        problems.append("recv frame must be an object")
    if typ == RECV and isinstance(record.get("frame"), dict) and "event_id" not in record["frame"]:
        problems.append("recv is only for frames with an event_id")
    if (typ, f) == (OK, SUBSCRIBE) and record.get("answer") not in ("ack", "error"):
        problems.append("subscribe ok answer must be 'ack' or 'error'")
    if typ == FAULT and (record.get("phase") not in ("start", "end") or not isinstance(record.get("nodes"), list)):
        problems.append("fault phase must be 'start' or 'end' and nodes a list of node URLs")
    if typ == CLOSE and record.get("by") not in ("client", "server"):
        problems.append("close by must be 'client' or 'server'")
    return problems


# --- writing ----------------------------------------------------------------------------------


def default_process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class HistoryWriter:
    """Appends history records as JSON lines to ``path`` (or, with ``path=None``, keeps them in
    ``self.records``). Every record gets ``t`` (``time.monotonic()`` now, unless given) and
    ``p`` (the writer's ``process``). Writes are buffered; :meth:`flush` / :meth:`close` (or
    leaving the ``with`` block) push them to the file. One writer per process (or per event
    loop); several processes each write their own file and :func:`merge_histories` merges them.

    In-memory records are kept as given, not copied: do not mutate a frame after recording it.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, process: str | None = None,
                 append: bool = True, buffering: int = 1 << 20) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.process = process or default_process_id()
        self.records: list[dict] | None = None if path is not None else []
        self._file: IO[str] | None = None
        self.lines = 0
        if self.path is not None:
            self._file = open(self.path, "a" if append else "w", encoding="utf-8", buffering=buffering)
        self._dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                                       check_circular=False).encode

    # -- the one primitive --
    def write(self, record: dict, t: float | None = None) -> dict:
        """Record ``record`` (``type`` and the rest of its fields); fills in ``t`` and ``p``
        unless present. Returns the record as written."""
        rec = {"t": time.monotonic() if t is None else t, "p": self.process}
        rec.update(record)
        if self.records is not None:
            self.records.append(rec)
        else:
            if self._file is None:
                raise ValueError("HistoryWriter is closed")
            self._file.write(self._dumps(rec) + "\n")
        self.lines += 1
        return rec

    # -- one helper per record kind (they all return the record) --
    def meta(self, **fields: Any) -> dict:
        """Facts about the run (capabilities, profile, seed, liveness_s). Timeless: no ``t``."""
        rec = {"type": META, "p": self.process, **fields}
        if self.records is not None:
            self.records.append(rec)
        else:
            if self._file is None:
                raise ValueError("HistoryWriter is closed")
            self._file.write(self._dumps(rec) + "\n")
        self.lines += 1
        return rec

    def publish_invoke(self, node: str, scope: str, id: str, event_id: str, frame: dict,
                       exclude_workspace: str | None = None, *, t: float | None = None) -> dict:
        return self.write({"type": INVOKE, "f": PUBLISH, "node": node, "scope": scope, "id": id,
                           "event_id": event_id, "frame": frame,
                           "exclude_workspace": exclude_workspace}, t)

    def publish_ok(self, event_id: str, pos: str | None, *, t: float | None = None) -> dict:
        return self.write({"type": OK, "f": PUBLISH, "event_id": event_id, "pos": pos}, t)

    def publish_fail(self, event_id: str, status: int, error: str, *, t: float | None = None) -> dict:
        return self.write({"type": FAIL, "f": PUBLISH, "event_id": event_id, "status": status,
                           "error": error}, t)

    def publish_info(self, event_id: str, error: str = "timeout", *, t: float | None = None) -> dict:
        return self.write({"type": INFO, "f": PUBLISH, "event_id": event_id, "error": error}, t)

    def connect_invoke(self, conn: str, node: str, user: str, workspace: str,
                       auth: str = "token", *, t: float | None = None) -> dict:
        return self.write({"type": INVOKE, "f": CONNECT, "conn": conn, "node": node, "user": user,
                           "workspace": workspace, "auth": auth}, t)

    def connect_ok(self, conn: str, *, t: float | None = None) -> dict:
        return self.write({"type": OK, "f": CONNECT, "conn": conn}, t)

    def connect_fail(self, conn: str, error: str, *, t: float | None = None) -> dict:
        return self.write({"type": FAIL, "f": CONNECT, "conn": conn, "error": error}, t)

    def subscribe_invoke(self, conn: str, scope: str, id: str, since: Any = ABSENT, *,
                         t: float | None = None) -> dict:
        rec = {"type": INVOKE, "f": SUBSCRIBE, "conn": conn, "scope": scope, "id": id}
        if since is not ABSENT:
            rec["since"] = since
        return self.write(rec, t)

    def subscribe_ok(self, conn: str, scope: str, id: str, answer: str = "ack",
                     error: str | None = None, recovered: Any = ABSENT, *,
                     t: float | None = None) -> dict:
        rec = {"type": OK, "f": SUBSCRIBE, "conn": conn, "scope": scope, "id": id,
               "answer": answer, "error": error}
        if recovered is not ABSENT:
            rec["recovered"] = recovered
        return self.write(rec, t)

    def subscribe_info(self, conn: str, scope: str, id: str, error: str = "timeout", *,
                       t: float | None = None) -> dict:
        return self.write({"type": INFO, "f": SUBSCRIBE, "conn": conn, "scope": scope, "id": id,
                           "error": error}, t)

    def unsubscribe_invoke(self, conn: str, scope: str, id: str, *, t: float | None = None) -> dict:
        return self.write({"type": INVOKE, "f": UNSUBSCRIBE, "conn": conn, "scope": scope, "id": id}, t)

    def unsubscribe_ok(self, conn: str, scope: str, id: str, *, t: float | None = None) -> dict:
        return self.write({"type": OK, "f": UNSUBSCRIBE, "conn": conn, "scope": scope, "id": id,
                           "answer": "ack", "error": None}, t)

    def unsubscribe_info(self, conn: str, scope: str, id: str, error: str = "timeout", *,
                         t: float | None = None) -> dict:
        return self.write({"type": INFO, "f": UNSUBSCRIBE, "conn": conn, "scope": scope, "id": id,
                           "error": error}, t)

    def recv(self, conn: str, frame: dict, *, t: float | None = None) -> dict:
        return self.write({"type": RECV, "conn": conn, "frame": frame}, t)

    def closed(self, conn: str, by: str, code: int | None = None, *, t: float | None = None) -> dict:
        """The connection ended: ``by="client"`` (we closed it) or ``"server"`` (we saw the
        server close or drop it)."""
        return self.write({"type": CLOSE, "conn": conn, "by": by, "code": code}, t)

    def pause(self, conn: str, *, t: float | None = None) -> dict:
        return self.write({"type": PAUSE, "conn": conn}, t)

    def fault(self, fault: str, phase: str, target: str, nodes: list[str], *, t: float | None = None,
              **extra: Any) -> dict:
        """A nemesis fault starts (``phase="start"``) or ends (``"end"``); ``nodes`` are the base
        URLs of the nodes whose clients it affects."""
        return self.write({"type": FAULT, "fault": fault, "phase": phase, "target": target,
                           "nodes": list(nodes), **extra}, t)

    def resume(self, conn: str, *, t: float | None = None) -> dict:
        return self.write({"type": RESUME, "conn": conn}, t)

    # -- lifecycle --
    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "HistoryWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --- reading ----------------------------------------------------------------------------------


class HistoryError(ValueError):
    pass


def read_history(path: str | os.PathLike, *, chunk: int = 4096) -> Iterator[dict]:
    """Yield the records of one history file, in file order. Blank lines are skipped. A last
    line without a newline that is not valid JSON (the recorder died mid-write) is dropped;
    any other malformed line raises :class:`HistoryError` naming the line."""
    loads = json.loads
    name = os.fspath(path)
    with open(path, "r", encoding="utf-8") as f:
        lineno = 0
        while True:
            lines = f.readlines(chunk * 128) if chunk > 1 else f.readlines(1)
            if not lines:
                return
            first = lineno + 1
            lineno += len(lines)
            body = [ln for ln in lines if not ln.isspace()]
            # fast path: one parse for the whole chunk (JSON lines joined into one array)
            try:
                recs = loads("[" + ",".join(body) + "]") if body else []
            except ValueError:
                recs = None
            if recs is not None and len(recs) == len(body) and all(type(r) is dict for r in recs):
                yield from recs
                continue
            # slow path: line by line, to name the bad line (or drop a truncated last one)
            for k, line in enumerate(lines, first):
                if line.isspace():
                    continue
                try:
                    rec = loads(line)
                except ValueError as e:
                    if not line.endswith("\n"):
                        return  # truncated final line
                    raise HistoryError(f"{name}:{k}: not JSON: {e}") from None
                if type(rec) is not dict:
                    raise HistoryError(f"{name}:{k}: a record must be a JSON object")
                yield rec


def write_history(records: Iterable[dict], path: str | os.PathLike) -> int:
    """Write records as a history file (one JSON object per line); returns how many."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(dumps(rec) + "\n")
            n += 1
    return n


def merge_files(paths: list[str | os.PathLike], out: str | os.PathLike) -> int:
    """Merge several recorders' files into one history file ordered by ``t`` (a truncated last
    line of a recorder that died mid-write is dropped, as :func:`read_history` does)."""
    return write_history(merge_histories(*[p for p in paths if os.path.exists(p)]), out)


def merge_histories(*sources: str | os.PathLike | Iterable[dict]) -> Iterator[dict]:
    """Merge several histories (paths or iterables of records, each ordered by ``t``, as one
    recorder process writes them) into one stream ordered by ``t``; ties keep source order.
    A record without ``t`` (``meta``) keeps its place after the record before it in its source
    (leading ones come first)."""
    iters = [read_history(s) if isinstance(s, (str, os.PathLike)) else iter(s) for s in sources]
    if len(iters) == 1:
        yield from iters[0]
        return
    for _, _, _, rec in heapq.merge(*(_keyed(it, n) for n, it in enumerate(iters))):
        yield rec


def _keyed(it: Iterator[dict], n: int) -> Iterator[tuple[float, int, int, dict]]:
    last = float("-inf")
    for seq, rec in enumerate(it):
        t = rec.get("t")
        if t is None:
            t = last
        else:
            last = t
        yield (t, n, seq, rec)

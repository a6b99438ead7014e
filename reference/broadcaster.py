"""The Broadcaster seam (Multica PR #1429): every publish goes through it, and it hands
finished frames back to the local hub. The in-memory one serves a single node; the Redis
relays in `reference.relay` drop in behind the same interface."""

from __future__ import annotations

import abc
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from . import events, positions


class Sink(Protocol):
    """What a broadcaster delivers into: the local hub."""

    def deliver(self, scope_type: str, scope_id: str, data: str, etype: str,
                exclude_workspace: str | None, seq: tuple[int, int]) -> int: ...

    def has_local(self, scope_type: str, scope_id: str) -> bool: ...


class PublishFailed(Exception):
    """The event could not be handed to the relay store (NODE-3: publish answers 503)."""


class Broadcaster(abc.ABC):
    name: str = "abstract"
    capabilities: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.sink: Sink | None = None
        # Called with (workspace id, user id) for each revocation another node received (AZ-5).
        self.on_revocation: Callable[[str, str], object] | None = None

    def bind(self, sink: Sink) -> None:
        self.sink = sink

    async def start(self) -> None:
        """Connect to the store, start background readers."""

    async def stop(self) -> None:
        """Stop readers and close connections."""

    @abc.abstractmethod
    async def publish(
        self, scope_type: str, scope_id: str, frame: dict, exclude_workspace: str | None = None
    ) -> tuple[str, str | None]:
        """Hand one event to every node; return (event_id, pos) once it is durable."""

    async def revoke(self, workspace_id: str, user_id: str) -> None:
        """Hand a revocation to every other node of the cluster (AZ-5), which applies it through
        `on_revocation`; raises PublishFailed when it cannot. A single node has no one to tell."""

    async def on_first_subscriber(self, scope_type: str, scope_id: str) -> None:
        """Called, and awaited before the ack, when a scope gains its first local subscriber."""

    async def on_last_unsubscribed(self, scope_type: str, scope_id: str) -> None:
        """Called when a scope loses its last local subscriber (it may have gained one since)."""

    async def replay(self, scope_type: str, scope_id: str, since: tuple[int, int]) -> list | None:
        """Every retained event of the scope after `since`, as (seq, frame, exclude_workspace)
        in scope order; None when any event after `since` may be missing (REP-4)."""
        return None

    def cursor(self, scope_type: str, scope_id: str) -> tuple[int, int] | None:
        """The newest entry of an open scope already handed to the hub: every later entry is
        still to come (used by resume to tell replayed from live)."""
        return None

    async def ends(self, scopes: tuple[tuple[str, str], ...]) -> dict[tuple[str, str], tuple[int, int] | None]:
        """Each scope's newest entry in the store (None: none, or unknown), in one round trip.
        It can be ahead of cursor() while this node's reader lags behind the store."""
        return {scope: self.cursor(*scope) for scope in scopes}

    async def end(self, scope_type: str, scope_id: str) -> tuple[int, int] | None:
        return (await self.ends(((scope_type, scope_id),)))[(scope_type, scope_id)]

    def retention(self) -> dict:
        return {"max_len": None, "max_age_s": None}

    def snapshot(self) -> dict:
        """Relay state for /health/realtime."""
        return {}


@dataclass(eq=False)
class _Entry:
    seq: tuple[int, int]
    prev: tuple[int, int] | None  # the scope's previous entry: proves nothing between was trimmed
    data: str
    exclude: str | None
    t: float
    gone: bool = False  # trimmed from its scope already


class MemoryBroadcaster(Broadcaster):
    """Single node: publish is delivery. Each scope keeps its last `max_len` events (and none
    older than `max_age_s`) for resume, and all scopes together at most `max_bytes` of frames,
    the oldest going first. Entry ids are `<boot ms>-<counter>`, so a position from an earlier
    process never continues this one's chain."""

    name = "memory"
    capabilities = ("resume",)

    def __init__(self, node_id: str = "node-1", max_len: int = 10_000, max_age_s: float | None = 3600.0,
                 max_bytes: int = 256 * 1024 * 1024) -> None:
        super().__init__()
        self.node_id = node_id
        self.max_len, self.max_age_s, self.max_bytes = max_len, max_age_s, max_bytes
        self._boot_ms = int(time.time() * 1000)
        self._counter = 0
        self._history: dict[tuple[str, str], deque[_Entry]] = {}
        self._order: deque[tuple[tuple[str, str], _Entry]] = deque()  # every scope's entries, oldest first
        self._bytes = 0
        self._last: dict[tuple[str, str], tuple[int, int]] = {}
        self.published = 0

    async def publish(self, scope_type, scope_id, frame, exclude_workspace=None):
        event_id, body = events.prepare(frame)
        key = (scope_type, scope_id)
        self._counter += 1
        seq = (self._boot_ms, self._counter)
        entry_id = positions.entry_str(seq)
        pos = positions.encode(scope_type, scope_id, entry_id)
        data = events.finish(body, scope_type, scope_id, pos)
        history = self._history.get(key)
        if history is None:
            history = self._history[key] = deque()
        now = time.monotonic()
        entry = _Entry(seq, self._last.get(key), data, exclude_workspace, now)
        history.append(entry)
        self._order.append((key, entry))
        self._bytes += len(data)
        self._last[key] = seq
        while len(history) > self.max_len:
            self._trim(key)
        self._trim_oldest(now)
        self.published += 1
        assert self.sink is not None, "broadcaster not bound to a hub"
        self.sink.deliver(scope_type, scope_id, data, events.type_of(frame), exclude_workspace, seq)
        return event_id, pos

    def _trim(self, key: tuple[str, str]) -> None:
        """Drop the scope's oldest entry."""
        history = self._history[key]
        entry = history.popleft()
        entry.gone = True
        self._bytes -= len(entry.data)
        if not history:
            del self._history[key]

    def _trim_oldest(self, now: float) -> None:
        """Across scopes: drop entries over the byte cap or past max_age_s, oldest first."""
        order = self._order
        while order:
            key, entry = order[0]
            if not entry.gone and self._bytes <= self.max_bytes and not (
                    self.max_age_s and now - entry.t > self.max_age_s):
                return
            order.popleft()
            if not entry.gone:  # the oldest entry overall is its scope's oldest
                self._trim(key)

    async def replay(self, scope_type, scope_id, since):
        key = (scope_type, scope_id)
        if self._last.get(key) == since:
            return []  # nothing published since
        history = self._history.get(key, ())
        now = time.monotonic()
        after = [e for e in history if e.seq > since and not (self.max_age_s and now - e.t > self.max_age_s)]
        if not after or after[0].prev != since:
            return None
        return [(e.seq, e.data, e.exclude) for e in after]

    def cursor(self, scope_type, scope_id):
        return self._last.get((scope_type, scope_id))  # delivery is synchronous with publish

    def retention(self) -> dict:
        return {"max_len": self.max_len, "max_age_s": self.max_age_s, "max_bytes": self.max_bytes}

    def snapshot(self) -> dict:
        # HL-1: a node without a relay store reports no node id and connected: false, as Multica's
        # single-node mode does
        return {"strategy": self.name, "node_id": "", "connected": False, "published_total": self.published,
                "retained_bytes": self._bytes}

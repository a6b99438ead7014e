"""The Broadcaster seam (Multica PR #1429): every publish goes through it, and it hands
finished frames back to the local hub. The in-memory one serves a single node; the Redis
relays in `reference.relay` drop in behind the same interface."""

from __future__ import annotations

import abc
from typing import Protocol

from . import events


class Sink(Protocol):
    """What a broadcaster delivers into: the local hub."""

    def deliver(self, scope_type: str, scope_id: str, data: str, etype: str, exclude_workspace: str | None) -> None: ...

    def has_local(self, scope_type: str, scope_id: str) -> bool: ...


class PublishFailed(Exception):
    """The event could not be handed to the relay store (NODE-3: publish answers 503)."""


class Broadcaster(abc.ABC):
    name: str = "abstract"
    capabilities: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.sink: Sink | None = None

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

    async def on_first_subscriber(self, scope_type: str, scope_id: str) -> None:
        """Called, and awaited before the ack, when a scope gains its first local subscriber."""

    async def on_last_unsubscribed(self, scope_type: str, scope_id: str) -> None:
        """Called when a scope loses its last local subscriber (it may have gained one since)."""

    def retention(self) -> dict:
        return {"max_len": None, "max_age_s": None}

    def snapshot(self) -> dict:
        """Relay state for /health/realtime."""
        return {}


class MemoryBroadcaster(Broadcaster):
    """Single node: publish is delivery. Positions are a per-scope counter within this process."""

    name = "memory"

    def __init__(self, node_id: str = "node-1") -> None:
        super().__init__()
        self.node_id = node_id
        self._seq: dict[tuple[str, str], int] = {}
        self.published = 0

    async def publish(self, scope_type, scope_id, frame, exclude_workspace=None):
        event_id, body = events.prepare(frame)
        key = (scope_type, scope_id)
        seq = self._seq.get(key, 0) + 1
        self._seq[key] = seq
        pos = f"m-{seq}"
        self.published += 1
        assert self.sink is not None, "broadcaster not bound to a hub"
        self.sink.deliver(scope_type, scope_id, events.finish(body, scope_type, scope_id, pos),
                          events.type_of(frame), exclude_workspace)
        return event_id, pos

    def snapshot(self) -> dict:
        return {"strategy": self.name, "node_id": self.node_id, "connected": True, "published_total": self.published}

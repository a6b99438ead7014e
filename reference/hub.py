"""The hub: which local connection holds which scope, and fanout of finished frames.

Subscribing awaits the broadcaster's first-subscriber callback before the connection joins
the scope and its ack is queued, so the relay is reading the scope before the client can
see the ack (DEL-1). Joining and queueing the ack happen with no await between them, so
no event frame of the scope precedes its ack and none follows an unsubscribe_ack (DEL-5)."""

from __future__ import annotations

import asyncio
import logging

from .broadcaster import Broadcaster
from .connection import Connection
from .metrics import Metrics

log = logging.getLogger("scopehub.hub")

Scope = tuple[str, str]


class Hub:
    def __init__(self, broadcaster: Broadcaster, metrics: Metrics) -> None:
        self.broadcaster = broadcaster
        self.metrics = metrics
        self.connections: set[Connection] = set()
        self.scopes: dict[Scope, set[Connection]] = {}
        self._joining: dict[Scope, int] = {}
        self._attaching: set[Connection] = set()  # not live yet: no global frame before auth_ack
        self._closing: set[asyncio.Task] = set()  # strong refs so callbacks are not collected
        broadcaster.bind(self)

    # -- Sink interface for the broadcaster ---------------------------------------------------
    def has_local(self, scope_type: str, scope_id: str) -> bool:
        """True while the scope has a subscriber or a join in flight: the relay keeps reading it."""
        key = (scope_type, scope_id)
        return key in self.scopes or self._joining.get(key, 0) > 0

    def deliver(self, scope_type: str, scope_id: str, data: str, etype: str,
                exclude_workspace: str | None = None) -> int:
        if scope_type == "global":
            targets = tuple(c for c in self.connections if c not in self._attaching)
        else:
            subs = self.scopes.get((scope_type, scope_id))
            if not subs:
                return 0
            targets = tuple(subs)  # enqueue may evict, which mutates the set
        n = 0
        for conn in targets:
            if exclude_workspace is not None and conn.workspace_id == exclude_workspace:
                continue
            n += conn.enqueue(data)
        if n:
            self.metrics.sends_by_type[etype] += n
        return n

    # -- connections and subscriptions ---------------------------------------------------------
    async def attach(self, conn: Connection, ack: str | None) -> bool:
        """Register an authenticated connection, auto-subscribed to its workspace and user
        before `ack` (HS-6) is queued."""
        self.connections.add(conn)
        self.metrics.connects += 1
        self.metrics.active_connections += 1
        self._attaching.add(conn)
        try:
            return await self.join(conn, (("workspace", conn.workspace_id), ("user", conn.user_id)), ack)
        finally:
            self._attaching.discard(conn)

    def detach(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.metrics.disconnects += 1
        self.metrics.active_connections -= 1
        for scope in tuple(conn.subscriptions):
            self.leave(conn, scope)

    async def join(self, conn: Connection, scopes: tuple[Scope, ...], ack: str | None) -> bool:
        """Subscribe conn to scopes (idempotent, SUB-5), then queue `ack` in the same step.

        The broadcaster is asked to open every scope first; a join in flight counts as a local
        subscriber, so a concurrent last-unsubscribe cannot stop a reader we are about to use."""
        if all(scope in conn.subscriptions for scope in scopes):
            if ack is not None:
                conn.enqueue(ack)
            return True
        for scope in scopes:
            self._joining[scope] = self._joining.get(scope, 0) + 1
        try:
            for scope in scopes:
                await self.broadcaster.on_first_subscriber(*scope)
        finally:
            for scope in scopes:
                left = self._joining[scope] - 1
                if left:
                    self._joining[scope] = left
                else:
                    del self._joining[scope]
        if conn.closed or conn not in self.connections:
            for scope in scopes:
                self._maybe_close(scope)
            return False
        for scope in scopes:
            self.scopes.setdefault(scope, set()).add(conn)
            conn.subscriptions.add(scope)
        if ack is not None:
            conn.enqueue(ack)
        return True

    def leave(self, conn: Connection, scope: Scope) -> None:
        conn.subscriptions.discard(scope)
        subs = self.scopes.get(scope)
        if subs is None:
            return
        subs.discard(conn)
        if not subs:
            del self.scopes[scope]
            self._maybe_close(scope)

    def _maybe_close(self, scope: Scope) -> None:
        if not self.has_local(*scope):
            task = asyncio.get_running_loop().create_task(self.broadcaster.on_last_unsubscribed(*scope))
            self._closing.add(task)
            task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task) -> None:
        self._closing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("last-subscriber callback failed: %r", task.exception())

    # -- publishing ---------------------------------------------------------------------------
    async def publish(self, scope_type: str, scope_id: str, frame: dict,
                      exclude_workspace: str | None = None) -> tuple[str, str | None]:
        return await self.broadcaster.publish(scope_type, scope_id, frame, exclude_workspace)


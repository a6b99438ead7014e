"""The hub: which local connection holds which scope, and fanout of finished frames.

Subscribing awaits the broadcaster's first-subscriber callback before the connection joins
the scope and its ack is queued, so the relay is reading the scope before the client can
see the ack (DEL-1). Joining and queueing the ack happen with no await between them, so
no event frame of the scope precedes its ack and none follows an unsubscribe_ack (DEL-5)."""

from __future__ import annotations

import asyncio
import json
import logging

from .broadcaster import Broadcaster
from .connection import Connection, text_frame
from .metrics import Metrics

log = logging.getLogger("scopehub.hub")

Scope = tuple[str, str]
REVOKED = "membership revoked"  # the close reason of a revoked connection (AZ-5: code 1008)
Seq = tuple[int, int]


class Hub:
    def __init__(self, broadcaster: Broadcaster, metrics: Metrics) -> None:
        self.broadcaster = broadcaster
        self.metrics = metrics
        self.connections: set[Connection] = set()  # live ones: authenticated and acked
        self.scopes: dict[Scope, set[Connection]] = {}
        self._joining: dict[Scope, int] = {}
        self._closing: set[asyncio.Task] = set()  # strong refs so callbacks are not collected
        broadcaster.bind(self)

    # -- Sink interface for the broadcaster ---------------------------------------------------
    def has_local(self, scope_type: str, scope_id: str) -> bool:
        """True while the scope has a subscriber or a join in flight: the relay keeps reading it."""
        key = (scope_type, scope_id)
        return key in self.scopes or self._joining.get(key, 0) > 0

    def deliver(self, scope_type: str, scope_id: str, data: str, etype: str,
                exclude_workspace: str | None, seq: Seq) -> int:
        key = (scope_type, scope_id)
        if scope_type == "global":
            targets = tuple(self.connections)
        else:
            subs = self.scopes.get(key)
            if not subs:
                return 0
            targets = tuple(subs)  # enqueue may evict, which mutates the set
        n = 0
        frame = None  # the WebSocket frame, built once for every subscriber (text_frame)
        for conn in targets:
            if exclude_workspace is not None and conn.workspace_id == exclude_workspace:
                continue
            buffers = conn.buffers
            if buffers is not None and key in buffers:
                buffers[key].append((seq, data))
                continue
            floors = conn.floors
            if floors and key in floors:
                if seq <= floors[key]:
                    continue
                del floors[key]
            if frame is None:
                frame = text_frame(data)
            n += conn.enqueue(data, frame)
        if n:
            self.metrics.events_sent_by_type[etype] += n
            self.metrics.messages_sent += n  # HL-1: event frames handed to connections, not answers
        return n

    # -- connections and subscriptions ---------------------------------------------------------
    async def attach(self, conn: Connection, ack: str | None) -> bool:
        """Register an authenticated connection, auto-subscribed to its workspace and user
        before `ack` (HS-6) is queued. It receives global frames from then on, not before."""
        self.metrics.connects += 1
        self.metrics.active_connections += 1
        return await self.join(conn, (("workspace", conn.workspace_id), ("user", conn.user_id)), ack, attach=True)

    def detach(self, conn: Connection) -> None:
        if not conn.counted:
            return
        conn.counted = False
        self.connections.discard(conn)
        self.metrics.disconnects += 1
        self.metrics.active_connections -= 1
        for scope in tuple(conn.subscriptions):
            self.leave(conn, scope)

    def revoke(self, workspace_id: str, user_id: str) -> int:
        """Close the user's live connections to the workspace (AZ-5) with 1008. Each leaves its
        scopes first, so no event reaches it after the revocation, whatever its peer still reads."""
        gone = [c for c in self.connections if c.workspace_id == workspace_id and c.user_id == user_id]
        for conn in gone:
            self.detach(conn)
            conn.goodbye(1008, REVOKED)
        return len(gone)

    async def _open(self, scopes: tuple[Scope, ...], ends: bool = False) -> dict[Scope, Seq | None]:
        """Have the broadcaster read these scopes. A join in flight counts as a local subscriber,
        so a concurrent last-unsubscribe cannot stop a reader we are about to use. With `ends`,
        also returns each scope's newest stored entry, read after the reader is in place."""
        # A scope the broadcaster is not reading yet starts at the store's end now: nothing its
        # reader hands over can predate this join, so only the others need their end read.
        reading = tuple(s for s in scopes if self.broadcaster.cursor(*s) is not None) if ends else ()
        for scope in scopes:
            self._joining[scope] = self._joining.get(scope, 0) + 1
        try:
            for scope in scopes:
                await self.broadcaster.on_first_subscriber(*scope)
            if not reading:
                return {}
            try:
                return await self.broadcaster.ends(reading)
            except Exception as e:  # the store is unreachable: no floor, the reader decides
                log.warning("ends of %s unknown: %r", scopes, e)
                return {}
        finally:
            for scope in scopes:
                left = self._joining[scope] - 1
                if left:
                    self._joining[scope] = left
                else:
                    del self._joining[scope]

    async def join(self, conn: Connection, scopes: tuple[Scope, ...], ack: str | None, *,
                   attach: bool = False) -> bool:
        """Subscribe conn to scopes (idempotent, SUB-5), then queue `ack` in the same step."""
        if attach:
            conn.counted = True
        missing = tuple(s for s in scopes if s not in conn.subscriptions)
        ends = await self._open(missing, ends=True) if missing else {}
        if conn.closed or not conn.counted:
            for scope in missing:
                self._maybe_close(scope)
            return False
        for scope in missing:
            self._add(conn, scope, ends.get(scope))
        if attach:
            self.connections.add(conn)
        if ack is not None:
            conn.enqueue(ack)
        return True

    def _add(self, conn: Connection, scope: Scope, end: Seq | None = None) -> None:
        self.scopes.setdefault(scope, set()).add(conn)
        conn.subscriptions.add(scope)
        # Entries after the broadcaster's cursor reach this connection live; older ones did not.
        cursor = conn.live_from[scope] = self.broadcaster.cursor(*scope)
        if end is not None and (cursor is None or end > cursor):
            # The reader is behind the store: what it hands over up to `end` predates this
            # subscription (DEL-7), and a resume answered false must not show it (REP-4).
            self._skip_to(conn, scope, end)

    @staticmethod
    def _skip_to(conn: Connection, scope: Scope, floor: Seq) -> None:
        """Entries up to `floor` are not live for conn: deliver skips them (a resume replays them)."""
        conn.floors[scope] = floor
        conn.live_from[scope] = floor

    def leave(self, conn: Connection, scope: Scope) -> None:
        conn.subscriptions.discard(scope)
        conn.live_from.pop(scope, None)
        conn.floors.pop(scope, None)
        if conn.buffers:
            conn.release(scope)
        subs = self.scopes.get(scope)
        if subs is None:
            return
        subs.discard(conn)
        if not subs:
            del self.scopes[scope]
            self._maybe_close(scope)

    # -- resume (REP) -------------------------------------------------------------------------
    async def resume(self, conn: Connection, scope: Scope, since: Seq | None) -> None:
        """Subscribe with `since` (REP-2..4). `since` None means it cannot be honoured (another
        scope's position): answer recovered false.

        Live frames of the scope are held back from the moment the connection holds it until
        the replay has been read; then the ack, the replayed frames and the held-back ones
        newer than the replay go out in scope order, each once (REP-3)."""
        held = scope in conn.subscriptions
        if not held:
            await self._open((scope,))
            if conn.closed or not conn.counted:
                self._maybe_close(scope)
                return
            self._add(conn, scope)
        live_from = conn.live_from.get(scope)  # entries after it reach conn live
        conn.hold(scope)
        entries = floor = None
        if since is not None:
            try:
                entries = await self.broadcaster.replay(*scope, since)
            except Exception as e:  # the store is unreachable: an honest "not recovered"
                log.warning("replay of %s failed: %r", scope, e)
        if entries is None and not held:
            # Nothing is replayed, so nothing stored before this answer may follow it, neither
            # held back meanwhile nor handed over late by a reader behind the store (REP-4). (On
            # a scope held already, what came after `live_from` is owed to conn: DEL-1.)
            try:
                floor = await self.broadcaster.end(*scope)
            except Exception as e:
                log.warning("end of %s unknown: %r", scope, e)
        if conn.closed or scope not in conn.subscriptions:
            conn.release(scope)
            return
        payload = {"scope": scope[0], "id": scope[1], "recovered": entries is not None}
        conn.enqueue(json.dumps({"type": "subscribe_ack", "payload": payload}, separators=(",", ":")))
        last = since
        for seq, data, exclude in entries or ():
            if live_from is not None and seq > live_from:
                break  # delivered live already, or held back below
            if exclude is not None and exclude == conn.workspace_id:
                continue
            if not await conn.put(data):
                return
            self.metrics.messages_sent += 1
            last = seq
        if entries is None:
            last = floor if floor is not None else live_from if held else None
        for seq, data in conn.release(scope):
            if last is None or seq > last:
                if not conn.enqueue(data):
                    return
                self.metrics.messages_sent += 1
        if floor is not None and (live_from is None or floor > live_from):
            self._skip_to(conn, scope, floor)

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

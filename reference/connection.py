"""One client connection after authentication: identity, subscriptions, and a bounded
send queue drained by a single writer task (DEL-6), plus transport keepalive (IN-5).

Every outbound text frame (acks, errors, events) goes through the same queue, so the
order in which the hub enqueues is the order the client reads."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger("scopehub.conn")


class Connection:
    __slots__ = (
        "ws", "transport", "user_id", "workspace_id", "subscriptions", "limit", "_queue",
        "_wakeup", "_on_evict", "_metrics", "closed", "evicted", "last_pong", "_tasks",
        "buffers", "live_from", "_drained", "counted",
    )

    def __init__(self, ws: web.WebSocketResponse, transport, user_id: str, workspace_id: str,
                 limit: int, metrics, on_evict: Callable[["Connection"], None]) -> None:
        self.ws = ws
        self.transport = transport
        self.user_id = user_id
        self.workspace_id = workspace_id
        self.subscriptions: set[tuple[str, str]] = set()
        self.limit = limit
        self._queue: deque[str] = deque()
        self._wakeup = asyncio.Event()
        self._on_evict = on_evict
        self._metrics = metrics
        self.closed = False
        self.evicted = False
        self.last_pong = asyncio.get_running_loop().time()
        self._tasks: list[asyncio.Task] = []
        # Resume (REP-3): live frames of a scope held back while its replay is read, and per
        # scope the last entry the hub had delivered when this connection joined it.
        self.buffers: dict[tuple[str, str], list] | None = None
        self.live_from: dict[tuple[str, str], tuple[int, int] | None] = {}
        self._drained = asyncio.Event()
        self.counted = False  # registered with the hub (attach) and not yet detached

    # -- sending ---------------------------------------------------------------------------
    def enqueue(self, data: str) -> bool:
        """Queue one frame. A full queue evicts the connection instead of dropping a frame."""
        if self.closed:
            return False
        if len(self._queue) >= self.limit:
            self.evict()
            return False
        self._queue.append(data)
        self._wakeup.set()
        return True

    async def put(self, data: str, timeout: float = 10.0) -> bool:
        """Queue one frame, waiting (bounded) for room: replays can be longer than the queue.
        A connection that takes no frame for `timeout` is evicted (DEL-6), never left with a gap."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.closed and len(self._queue) >= self.limit:
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                self.evict()
        return self.enqueue(data)

    def hold(self, scope: tuple[str, str]) -> None:
        """Start holding back live frames of `scope` (see Hub.resume)."""
        if self.buffers is None:
            self.buffers = {}
        self.buffers[scope] = []

    def release(self, scope: tuple[str, str]) -> list:
        held = self.buffers.pop(scope, []) if self.buffers else []
        if not self.buffers:
            self.buffers = None
        return held

    def evict(self) -> None:
        if self.closed:
            return
        self.evicted = True
        self._metrics.slow_evictions += 1
        self._metrics.messages_dropped += len(self._queue) + 1
        self._on_evict(self)
        self.abort()

    async def _writer(self) -> None:
        queue, ws, metrics = self._queue, self.ws, self._metrics
        try:
            while True:
                if not queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await ws.send_str(queue.popleft())
                metrics.messages_sent += 1
                if len(queue) <= self.limit // 2:
                    self._drained.set()
        except (ConnectionError, RuntimeError):
            self.abort()

    # -- keepalive (IN-5) -------------------------------------------------------------------
    def saw_pong(self) -> None:
        self.last_pong = asyncio.get_running_loop().time()

    async def _keepalive(self, ping_s: float, pong_s: float) -> None:
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + ping_s
        while not self.closed:
            deadline = self.last_pong + pong_s
            await asyncio.sleep(max(0.0, min(next_ping, deadline) - loop.time()))
            now = loop.time()
            if now >= self.last_pong + pong_s:
                log.info("pong timeout user=%s workspace=%s", self.user_id, self.workspace_id)
                self.abort()
                return
            if now >= next_ping:
                next_ping = now + ping_s
                try:
                    await asyncio.wait_for(self.ws.ping(), 5.0)
                except (ConnectionError, RuntimeError):
                    self.abort()
                    return

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, ping_s: float, pong_s: float) -> None:
        self._tasks = [
            asyncio.create_task(self._writer()),
            asyncio.create_task(self._keepalive(ping_s, pong_s)),
        ]

    def abort(self) -> None:
        """Close at once, without waiting for a peer that may not be reading."""
        if self.closed:
            return
        self.closed = True
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    async def close(self) -> None:
        """Close once the read loop has ended: stop the tasks, send a close frame if still possible."""
        if self.closed:
            return
        self.closed = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if not self.ws.closed:
            try:
                await asyncio.wait_for(self.ws.close(), 2.0)
            except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                pass
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


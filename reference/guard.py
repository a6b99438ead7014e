"""What a socket may hold before it is a request: a header timeout and a connection cap.

aiohttp's own keepalive timer would do as a header timeout, but it also cuts idle keep-alive
connections (a client reusing one races the close). Here a connection that has not delivered
complete request headers within `header_timeout_s` is closed, and no more than
`max_connections` sockets are open at once: at the cap, the oldest socket still sending its
headers makes room (slow-header floods cannot lock clients and /health/realtime out), and when
there is none, the newcomer gets 503 and is closed. Both are counted in health and logged at most
once per 10 s, so the process stays below its open-file limit and its log stays readable."""

from __future__ import annotations

import asyncio
import logging
import resource

from aiohttp import web

from .metrics import Metrics
from .ratelog import RateLimitedLog

log = logging.getLogger("scopehub.guard")

REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
FD_RESERVE = 128  # descriptors the cap leaves for Redis, the log and the listening socket


def default_max_connections() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(16, soft - FD_RESERVE)


class ConnectionGuard:
    def __init__(self, max_connections: int, header_timeout_s: float, metrics: Metrics) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.metrics = metrics
        self.open: set = set()
        # sockets still sending their first request's headers, oldest first, with their timers
        self.waiting: dict[object, asyncio.TimerHandle] = {}
        self._refused_log = RateLimitedLog(log, f"connection cap ({max_connections}) reached")
        self._timeout_log = RateLimitedLog(log, "request headers not complete in time", level=logging.INFO)

    # -- hooks -------------------------------------------------------------------------------------
    def install(self, server: web.Server) -> None:
        """Watch the sockets of an aiohttp Server (runner.server, after runner.setup())."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler, transport) -> None:
            made(handler, transport)
            self._made(handler, transport)

        def connection_lost(handler, exc=None) -> None:
            self._lost(handler)
            lost(handler, exc)

        server.connection_made = connection_made
        server.connection_lost = connection_lost

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        """A request reached the application: its socket has sent complete headers."""
        timer = self.waiting.pop(request.protocol, None)
        if timer is not None:
            timer.cancel()
        return await handler(request)

    # -- bookkeeping -------------------------------------------------------------------------------
    def _made(self, handler, transport) -> None:
        if len(self.open) >= self.max_connections and not self._make_room():
            self.metrics.connections_refused += 1
            self._refused_log.note(f"refused a connection from {_peer(transport)}")
            transport.write(REFUSAL)
            transport.close()
            return
        self.open.add(handler)
        loop = asyncio.get_running_loop()
        self.waiting[handler] = loop.call_later(self.header_timeout_s, self._timed_out, handler)

    def _lost(self, handler) -> None:
        self.open.discard(handler)
        timer = self.waiting.pop(handler, None)
        if timer is not None:
            timer.cancel()

    def _make_room(self) -> bool:
        """Close the oldest socket still sending headers; False when there is none."""
        for handler in self.waiting:
            self._close(handler, "closed to make room under the connection cap")
            return True
        return False

    def _timed_out(self, handler) -> None:
        if handler in self.waiting:
            self._close(handler, f"closed after {self.header_timeout_s:g} s")

    def _close(self, handler, why: str) -> None:
        self.waiting.pop(handler).cancel()
        self.open.discard(handler)
        self.metrics.header_timeouts += 1
        transport = handler.transport
        self._timeout_log.note(f"{why}: {_peer(transport)}")
        if transport is not None:
            transport.abort()


def _peer(transport) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "an unknown peer"

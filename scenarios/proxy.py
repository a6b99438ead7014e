"""A TCP proxy on one node's link to Redis, so the simulator can slow down or cut that link only.

One `LinkProxy` per cluster node: the node is given `proxy.url_for(db)` instead of the Redis URL,
and every byte between that node and Redis then passes through this process, where the link can be

  * delayed   -- `set_latency(s)`: every chunk, in both directions, is delivered `s` seconds after
                 it arrived (due = arrival + s; the delays do not add up, order is kept per
                 direction, so a round trip costs 2*s);
  * cut       -- `await cut()`: every open connection is reset (RST on both sides) and new
                 connections are accepted and reset at once, until `heal()`; a node sees
                 "connection reset" / "connection closed by server" right away;
  * blackholed -- `await blackhole()`: nothing is closed, but nothing is read from either side any
                 more, so requests hang until the client's own timeouts (a silent partition);
                 `heal()` resumes reading and everything that was held is delivered, late;
  * healed    -- `heal()`: no cut, no blackhole, latency 0; chunks still waiting out a latency are
                 released at once.

Implemented with asyncio Protocols: with no latency and no fault a chunk is written to the other
side inside `data_received` (no queue, no task), so the proxy costs one extra hop per message and
no scheduling. Delayed chunks go into a per-direction FIFO with one timer for its head (not one
sleep per chunk). Backpressure is end to end: when one side's write buffer is full, or a delay
queue holds more than `max_buffer` bytes, the proxy stops reading from the other side. The only
task is the short-lived upstream connect of each new connection; `stop()` cancels and awaits those,
resets every connection and closes the listening socket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import socket
import struct
import time
from dataclasses import dataclass, replace

__all__ = ["LinkProxy", "ProxyStats"]

# A timer may fire up to one clock tick before its due time; treat such a chunk as due.
_SLACK = max(time.get_clock_info("monotonic").resolution, 1e-6)

# Why a side's reading is paused (a bitmask; reading resumes when no reason is left). The
# blackhole is proxy-wide and checked separately.
_CONNECTING = 1  # client side: its upstream connection is not up yet
_PEER_FULL = 2   # the other side's write buffer is above its high-water mark
_QUEUED = 4      # the delay queue out of this side holds more than max_buffer bytes

_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


def _reset(transport: asyncio.BaseTransport) -> None:
    """Abort a transport so the peer sees a reset (not a graceful FIN)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    transport.abort()


@dataclass
class ProxyStats:
    """Counters of one LinkProxy (live object; `snapshot()` for a copy).

    bytes_up: forwarded node -> Redis; bytes_down: forwarded Redis -> node; accepted: connections
    proxied; refused: connections reset on arrival (cut, stopping); upstream_failures: connections
    reset because Redis could not be reached; active: proxied connections open now."""

    bytes_up: int = 0
    bytes_down: int = 0
    accepted: int = 0
    refused: int = 0
    upstream_failures: int = 0
    active: int = 0

    def snapshot(self) -> ProxyStats:
        return replace(self)


class _Side(asyncio.Protocol):
    """One TCP connection of a link: the accepted client side or the upstream (Redis) side."""

    __slots__ = ("link", "transport", "inbound", "outbound", "pause_mask", "paused", "lost")

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.inbound: _Flow  # the direction that writes to this side
        self.outbound: _Flow  # the direction that reads from this side
        self.pause_mask = 0
        self.paused = False
        self.lost = False

    # asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.link.side_made(self)

    def data_received(self, data: bytes) -> None:
        self.outbound.push(data)

    def eof_received(self) -> bool:
        self.outbound.feed_eof()
        return True  # keep the transport open: the other direction may still be sending

    def pause_writing(self) -> None:
        self.inbound.set_full(True)

    def resume_writing(self) -> None:
        self.inbound.set_full(False)

    def connection_lost(self, exc) -> None:
        self.link.side_lost(self, exc)

    # reading control

    def hold(self, reason: int, on: bool) -> None:
        mask = (self.pause_mask | reason) if on else (self.pause_mask & ~reason)
        if mask != self.pause_mask:
            self.pause_mask = mask
            self.sync_reading()

    def sync_reading(self) -> None:
        t = self.transport
        if t is None or self.lost or t.is_closing():
            return
        want = bool(self.pause_mask) or self.link.proxy._blackholed
        if want != self.paused:
            self.paused = want
            if want:
                t.pause_reading()
            else:
                t.resume_reading()


class _Flow:
    """One direction of a link: chunks read from `src`, written to `dst` when due, in order."""

    __slots__ = ("link", "proxy", "up", "src", "dst", "queue", "queued", "timer", "full", "eof",
                 "close_after", "done")

    def __init__(self, link: _Link, src: _Side, dst: _Side, up: bool) -> None:
        self.link = link
        self.proxy = link.proxy
        self.up = up
        self.src = src
        self.dst = dst
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0  # bytes in the queue
        self.timer: asyncio.TimerHandle | None = None
        self.full = False  # dst's write buffer is above its high-water mark
        self.eof = False  # src sent EOF: pass it on once the queue is drained
        self.close_after = False  # src is gone: close dst once the queue is drained
        self.done = False  # nothing more will be written to dst

    def ready(self) -> bool:
        dst = self.dst
        return (dst.transport is not None and not dst.lost and not self.full and not self.done
                and not self.proxy._blackholed)

    def push(self, data: bytes) -> None:
        proxy = self.proxy
        latency = proxy._latency
        if not self.queue and latency <= 0.0 and self.ready():
            self.dst.transport.write(data)  # the fast path: no fault, nothing waiting
            if self.up:
                proxy.stats.bytes_up += len(data)
            else:
                proxy.stats.bytes_down += len(data)
            return
        if self.done:
            return
        self.queue.append((proxy._loop.time() + latency, data))
        self.queued += len(data)
        if self.queued > proxy.max_buffer:
            self.src.hold(_QUEUED, True)
        if len(self.queue) == 1:  # otherwise the head already has its timer (or is held)
            self.pump()

    def _fire(self) -> None:
        self.timer = None
        self.pump()

    def release(self) -> None:
        """Make every queued chunk due now (heal), then deliver whatever can be delivered."""
        if self.queue:
            self.queue = collections.deque((0.0, data) for _, data in self.queue)
        self.pump()

    def pump(self) -> None:
        """Write every due chunk and arm the timer for the next one."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.ready():
            return
        queue = self.queue
        if queue:
            now = self.proxy._loop.time() + _SLACK
            batch = []
            size = 0
            while queue:
                due, data = queue[0]
                if due > now:
                    self.timer = self.proxy._loop.call_at(due, self._fire)
                    break
                queue.popleft()
                batch.append(data)
                size += len(data)
            if batch:
                self.queued -= size
                self.dst.transport.write(batch[0] if len(batch) == 1 else b"".join(batch))
                if self.up:
                    self.proxy.stats.bytes_up += size
                else:
                    self.proxy.stats.bytes_down += size
            if self.queued <= self.proxy.max_buffer // 2:
                self.src.hold(_QUEUED, False)
        if not queue and (self.eof or self.close_after):
            self._finish()

    def set_full(self, full: bool) -> None:
        self.full = full
        self.src.hold(_PEER_FULL, full)
        if not full:
            self.pump()

    def feed_eof(self) -> None:
        self.eof = True
        if not self.queue:
            self.pump()

    def drop(self) -> None:
        """Discard whatever is queued; nothing more will be written."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.queued = 0
        self.done = True

    def _finish(self) -> None:
        self.done = True
        t = self.dst.transport
        if self.close_after:
            t.close()  # flushes what is buffered, then closes
            return
        if t.can_write_eof() and not t.is_closing():
            t.write_eof()
        other = self.link.down if self.up else self.link.up
        if other.done:  # EOF both ways: done with this link
            self.link.close()


class _Link:
    """A proxied connection: the client side, the upstream side and the two directions."""

    def __init__(self, proxy: LinkProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self)
        self.upstream = _Side(self)
        self.up = _Flow(self, self.client, self.upstream, up=True)
        self.down = _Flow(self, self.upstream, self.client, up=False)
        self.client.outbound = self.upstream.inbound = self.up
        self.client.inbound = self.upstream.outbound = self.down
        self.connector: asyncio.Task | None = None
        self.registered = False
        self.closed = False
        self.finished = False

    # lifecycle

    def side_made(self, side: _Side) -> None:
        proxy = self.proxy
        if side is self.client:
            if proxy._cut or proxy._stopping:
                proxy.stats.refused += 1
                self.closed = True
                _reset(side.transport)
                return
            self.registered = True
            proxy._links.add(self)
            proxy.stats.accepted += 1
            proxy.stats.active = len(proxy._links)
            side.transport.set_write_buffer_limits(high=proxy.write_buffer)
            side.hold(_CONNECTING, True)
            self.connector = proxy._loop.create_task(self._connect())
            return
        # the upstream side
        if self.closed:
            _reset(side.transport)
            return
        side.transport.set_write_buffer_limits(high=proxy.write_buffer)
        side.sync_reading()  # a blackhole already in force
        self.client.hold(_CONNECTING, False)
        self.up.pump()

    async def _connect(self) -> None:
        proxy = self.proxy
        try:
            await asyncio.wait_for(
                proxy._loop.create_connection(lambda: self.upstream, proxy.upstream_host,
                                              proxy.upstream_port),
                proxy.connect_timeout)
        except (OSError, asyncio.TimeoutError):
            if not self.closed:
                proxy.stats.upstream_failures += 1
                self.abort()
        finally:
            self.connector = None
            self._maybe_finished()

    def side_lost(self, side: _Side, exc) -> None:
        side.lost = True
        if not self.registered:
            return
        side.inbound.drop()  # nothing more can be written to it
        peer = self.upstream if side is self.client else self.client
        if exc is not None or self.closed:
            self.abort()
        elif side.outbound.done and peer.transport is not None and not peer.lost:
            peer.transport.close()  # its EOF was passed on already; nobody to write back to
        elif peer.transport is not None and not peer.lost:
            side.outbound.close_after = True  # deliver what it sent, then close the peer
            side.outbound.pump()
        elif self.connector is not None:
            self.connector.cancel()
        self._maybe_finished()

    def _maybe_finished(self) -> None:
        if self.finished or not self.registered or not self.client.lost:
            return
        up = self.upstream
        if up.lost or (up.transport is None and self.connector is None):
            self.finished = True
            proxy = self.proxy
            proxy._links.discard(self)
            proxy.stats.active = len(proxy._links)
            if not proxy._links and proxy._idle is not None:
                proxy._idle.set()

    def close(self) -> None:
        """Graceful close of both sides (after EOF both ways)."""
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.lost:
                side.transport.close()

    def abort(self) -> None:
        """Reset both sides now, dropping whatever is queued."""
        self.closed = True
        self.up.drop()
        self.down.drop()
        if self.connector is not None:
            self.connector.cancel()
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.lost:
                _reset(side.transport)

    def unhold(self) -> None:
        """Apply a change of the proxy's mode: reading on/off, held chunks released."""
        self.client.sync_reading()
        self.upstream.sync_reading()


class LinkProxy:
    """A TCP proxy in front of Redis for one node (see the module docstring).

    ``await start()`` returns the listening port; the node connects to ``url_for(db)``.
    A proxy can be started again after ``stop()``: it comes back on the same port.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, name: str = "", connect_timeout: float = 5.0,
                 max_buffer: int = 8 << 20, write_buffer: int = 1 << 20) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = int(upstream_port)
        self.listen_host = listen_host
        self.name = name
        self.connect_timeout = connect_timeout
        self.max_buffer = max_buffer  # bytes a delay queue may hold before reading pauses
        self.write_buffer = write_buffer  # high-water mark of each side's write buffer
        self.stats = ProxyStats()
        self._port = int(listen_port) or None
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._links: set[_Link] = set()
        self._idle: asyncio.Event | None = None
        self._latency = 0.0
        self._cut = False
        self._blackholed = False
        self._stopping = False

    def __repr__(self) -> str:
        return (f"<LinkProxy {self.name or '-'} {self.listen_host}:{self._port} -> "
                f"{self.upstream_host}:{self.upstream_port} {self.mode}>")

    # ---- properties

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, db: int = 0) -> str:
        if self._port is None:
            raise RuntimeError("LinkProxy has no port yet: call start() first")
        return f"redis://{self.listen_host}:{self._port}/{int(db)}"

    @property
    def latency(self) -> float:
        return self._latency

    @property
    def pending_bytes(self) -> int:
        """Bytes read but not yet forwarded: waiting out a latency or held by a blackhole."""
        return sum(link.up.queued + link.down.queued for link in self._links)

    @property
    def mode(self) -> str:
        """'cut', 'blackhole', 'latency' or 'ok' (plus 'stopped' when not listening)."""
        if self._server is None:
            return "stopped"
        if self._cut:
            return "cut"
        if self._blackholed:
            return "blackhole"
        return "latency" if self._latency > 0 else "ok"

    # ---- lifecycle

    async def start(self) -> int:
        """Listen (on the port chosen the first time, when restarted) and return the port."""
        if self._server is not None:
            return self._port  # type: ignore[return-value]
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._server = await self._loop.create_server(
            self._accept, self.listen_host, self._port or 0, reuse_address=True, backlog=512)
        self._port = self._server.sockets[0].getsockname()[1]
        return self._port

    def _accept(self) -> _Side:
        return _Link(self).client

    async def stop(self) -> None:
        """Stop listening and reset every connection; returns when all of them are gone."""
        server, self._server = self._server, None
        self._stopping = True
        if server is not None:
            server.close()
        await self._drop_all()
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def __aenter__(self) -> LinkProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def _drop_all(self) -> None:
        links = list(self._links)
        connectors = [link.connector for link in links if link.connector is not None]
        for link in links:
            link.abort()
        if connectors:
            await asyncio.gather(*connectors, return_exceptions=True)
        if self._links and self._idle is not None:
            self._idle.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 2.0)

    # ---- faults

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk, both directions, by `seconds` (one way) from now on. Chunks already
        waiting keep their due time; order is preserved either way."""
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"latency must be a finite number >= 0, not {seconds!r}")
        self._latency = seconds

    async def cut(self) -> None:
        """Partition: reset every open connection, and reset new ones on arrival, until heal()."""
        self._cut = True
        await self._drop_all()

    async def blackhole(self) -> None:
        """Silent partition: keep every connection open but stop reading from both sides (and
        hold chunks not yet delivered) until heal(), which delivers everything, late."""
        self._blackholed = True
        for link in list(self._links):
            link.unhold()
            link.up.pump()  # not ready any more: cancels the timers
            link.down.pump()

    def heal(self) -> None:
        """Back to normal: no cut, no blackhole, no latency; held and delayed chunks go now."""
        self._cut = False
        self._blackholed = False
        self._latency = 0.0
        for link in list(self._links):
            link.unhold()
            link.up.release()
            link.down.release()

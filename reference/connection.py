"""One client connection after authentication: identity, subscriptions, and a bounded
send queue (DEL-6), plus transport keepalive (IN-5).

Every outbound text frame (acks, errors, events) goes through the same queue, so the
order in which the hub enqueues is the order the client reads.

The queue holds finished WebSocket frames (bytes). A server frame is never masked and this
server never compresses (compress=False), so a frame is the same bytes for every receiver:
the hub builds it once per event (`text_frame`) and queues that one object on every
subscriber. Queued frames are written once per event-loop iteration, all of a connection's
frames in one `transport.write`, by one callback for all connections (`_Flusher`), instead of
a writer task per connection re-framing every frame through aiohttp's WebSocketWriter.

Backpressure is the transport's: while its write buffer is above the high-water mark
(`protocol.writing_paused`), frames stay in the queue and the connection's writer task
waits for the drain, then writes them. Only those held-back frames are the send queue of DEL-6:
a queue that reaches `limit` while the peer is not draining evicts, with a close frame. Frames
queued during one loop turn while the transport takes them are not a backlog (a burst after a
stall, a client's pipelined requests), however many there are."""

from __future__ import annotations

import asyncio
import logging
import struct
import weakref
from collections import deque
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger("scopehub.conn")

_HEAD1 = struct.Struct("!BB").pack
_HEAD2 = struct.Struct("!BBH").pack
_HEAD3 = struct.Struct("!BBQ").pack
_FIN_TEXT = 0x81  # FIN + opcode 1 (text); no RSV bits: never compressed


def close_frame(code: int, reason: str) -> bytes:
    payload = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return _HEAD1(0x88, len(payload)) + payload


def text_frame(data: str) -> bytes:
    """The WebSocket frame a server sends for `data`: FIN, text, unmasked, uncompressed: the
    bytes aiohttp's WebSocketWriter writes for ws.send_str(data) with compression off."""
    payload = data.encode("utf-8")
    n = len(payload)
    if n < 126:
        return _HEAD1(_FIN_TEXT, n) + payload
    if n < 65536:
        return _HEAD2(_FIN_TEXT, 126, n) + payload
    return _HEAD3(_FIN_TEXT, 127, n) + payload


class _Flusher:
    """Writes what connections queued during one event-loop iteration: the first enqueue of
    an iteration schedules one callback (call_soon), which writes each pending connection's
    frames with one transport.write."""

    __slots__ = ("loop", "pending", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[Connection] = []

    def add(self, conn: "Connection") -> None:
        if not self.pending:
            self.loop.call_soon(self.run)
        self.pending.append(conn)

    def run(self) -> None:
        pending, self.pending = self.pending, []
        for conn in pending:
            conn._flush()


_flushers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _flusher_for(loop: asyncio.AbstractEventLoop) -> _Flusher:
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = _Flusher(loop)
    return flusher


class Connection:
    __slots__ = (
        "ws", "transport", "user_id", "workspace_id", "subscriptions", "limit", "_queue",
        "_wakeup", "_on_evict", "_metrics", "closed", "evicted", "last_pong", "_tasks",
        "buffers", "live_from", "_drained", "counted", "_protocol", "_flusher", "_scheduled",
        "_started", "_room_wanted", "floors",
    )

    def __init__(self, ws: web.WebSocketResponse, transport, user_id: str, workspace_id: str,
                 limit: int, metrics, on_evict: Callable[["Connection"], None]) -> None:
        loop = asyncio.get_running_loop()
        self.ws = ws
        self.transport = transport
        self._protocol = transport.get_protocol() if transport is not None else None
        self.user_id = user_id
        self.workspace_id = workspace_id
        self.subscriptions: set[tuple[str, str]] = set()
        self.limit = limit
        self._queue: deque[bytes] = deque()  # finished frames not yet handed to the transport
        self._wakeup = asyncio.Event()  # the writer task: the transport paused with frames queued
        self._on_evict = on_evict
        self._metrics = metrics
        self._flusher = _flusher_for(loop)
        self._scheduled = False  # queued frames will be written: by the flusher or after a drain
        self._started = False  # frames are written only once start() ran (after the upgrade)
        self.closed = False
        self.evicted = False
        self.last_pong = loop.time()
        self._tasks: list[asyncio.Task] = []
        # Resume (REP-3): live frames of a scope held back while its replay is read, and per
        # scope the last entry the hub had delivered when this connection joined it.
        self.buffers: dict[tuple[str, str], list] | None = None
        self.live_from: dict[tuple[str, str], tuple[int, int] | None] = {}
        # Per scope, entries up to here were stored before this connection held the scope (or
        # before a `recovered: false` answer, REP-4): skipped when a reader behind the store
        # hands them over late (the hub drops an entry once a newer one arrives).
        self.floors: dict[tuple[str, str], tuple[int, int]] = {}
        self._drained = asyncio.Event()  # put() waits on it for room in the queue
        self._room_wanted = 0  # put() calls waiting: while any, each write sets _drained
        self.counted = False  # registered with the hub (attach) and not yet detached

    # -- sending ---------------------------------------------------------------------------
    def enqueue(self, data: str, frame: bytes | None = None) -> bool:
        """Queue one frame. A full queue evicts the connection instead of dropping a frame.
        `frame`, when given, is text_frame(data) built once for many connections."""
        if self.closed:
            return False
        queue = self._queue
        if len(queue) >= self.limit and self._behind():
            self.evict()
            return False
        queue.append(text_frame(data) if frame is None else frame)
        if not self._scheduled:
            self._scheduled = True
            self._flusher.add(self)
        return True

    async def put(self, data: str, timeout: float = 10.0) -> bool:
        """Queue one frame, waiting (bounded) for room: replays can be longer than the queue.
        A connection that takes no frame for `timeout` is evicted (DEL-6), never left with a gap."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.closed and len(self._queue) >= self.limit and self._behind():
            self._drained.clear()
            self._room_wanted += 1
            try:
                await asyncio.wait_for(self._drained.wait(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                self.evict()
            finally:
                self._room_wanted -= 1
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

    def _behind(self) -> bool:
        """The peer is not taking what it was sent: the transport holds more than its high-water
        mark (or the socket is not writable yet)."""
        return not self._started or self._protocol is None or self._protocol.writing_paused

    def evict(self) -> None:
        if self.closed:
            return
        self.evicted = True
        self._metrics.slow_evictions += 1
        self._metrics.messages_dropped += len(self._queue) + 1
        self._on_evict(self)
        self._queue.clear()
        self.goodbye(1013, "slow consumer")  # try again later: reconnect, and resume what was missed

    def goodbye(self, code: int, reason: str, grace: float = 2.0) -> None:
        """Close with a close frame, written after whatever the transport still holds; a peer that
        has not taken it within `grace` seconds is cut."""
        if self.closed:
            return
        transport = self.transport
        if transport is None or transport.is_closing() or not self._started:
            self.abort()
            return
        self.closed = True
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        try:
            transport.write(close_frame(code, reason))
            transport.close()  # once its buffer is written
        except (ConnectionError, RuntimeError):
            transport.abort()
            return
        asyncio.get_running_loop().call_later(grace, transport.abort)

    def _flush(self) -> None:
        """Hand every queued frame to the transport in one write, unless it asked us to wait."""
        if self.closed or not self._started:
            self._scheduled = False  # closed: nothing more goes out; not started: start() flushes
            return
        queue = self._queue
        if not queue:
            self._scheduled = False
            return
        transport = self.transport
        if transport is None or transport.is_closing() or self.ws.closed:
            self.abort()  # as ws.send_str on a closing connection: ConnectionResetError, abort
            return
        if self._protocol.writing_paused:
            self._wakeup.set()  # the writer task writes them once the transport drains
            return
        data = queue[0] if len(queue) == 1 else b"".join(queue)
        queue.clear()
        self._scheduled = False
        try:
            transport.write(data)
        except (ConnectionError, RuntimeError):
            self.abort()
            return
        if self._room_wanted:
            self._drained.set()

    async def _writer(self) -> None:
        """Waits for the transport to drain while frames are held back, then writes them."""
        protocol, wakeup = self._protocol, self._wakeup
        try:
            while True:
                await wakeup.wait()
                wakeup.clear()
                while protocol.writing_paused:
                    # What aiohttp's writers do (StreamWriter.drain, WebSocketWriter.send_frame):
                    # resolved by resume_writing(); raises ConnectionError once the peer is gone.
                    await protocol._drain_helper()
                self._flush()
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
        """Start writing (frames queued before the upgrade completed go out now) and pinging."""
        self._started = True
        self._tasks = [
            asyncio.create_task(self._writer()),
            asyncio.create_task(self._keepalive(ping_s, pong_s)),
        ]
        if self._queue and not self._scheduled:
            self._scheduled = True
            self._flusher.add(self)

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

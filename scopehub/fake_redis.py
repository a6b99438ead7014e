"""The simulator's last-resort Redis: fakeredis served over TCP from a thread of this process.

Used only where no Redis can be had otherwise (no URL, no Docker engine, no redis-server binary),
and always labelled "in-process fakeredis" so that nobody reads its figures as Redis's. Nodes stay
separate processes talking RESP over real sockets, so the simulator's faults (signals to nodes,
the per-node link proxies) work unchanged; what is not real is the store, which shares this
process's GIL with the simulator. Lua scripts need `lupa` (the `fakeredis[lua]` extra).
"""

from __future__ import annotations

import threading

from .redis_provision import HOST, LocalRedis, RedisServerError

LABEL = "in-process fakeredis (not a real Redis: no redis-server found)"


class FakeRedisServer(LocalRedis):
    """The RedisServer interface the simulator uses: start, stop, restart (same port, empty
    dataset, like a redis-server with persistence off), url, label."""

    def __init__(self) -> None:
        self._port: int | None = None
        self._tcp = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def pid(self) -> None:  # nothing to signal: it lives in this process
        return None

    @property
    def label(self) -> str:
        return f"{LABEL} on {HOST}:{self._port}"

    def start(self) -> FakeRedisServer:
        if self.running:
            return self
        try:
            from fakeredis import TcpFakeServer
        except ImportError as e:
            raise RedisServerError(f"fakeredis is not installed ({e})") from None
        try:
            # a fresh FakeServer each time: a restart loses the dataset, as redis-server's does
            self._tcp = TcpFakeServer((HOST, self._port or 0), server_type="redis")
        except OSError as e:
            raise RedisServerError(f"in-process fakeredis cannot listen on {HOST}:{self._port}: {e}") from None
        self._port = self._tcp.server_address[1]
        self._thread = threading.Thread(target=self._tcp.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fakeredis", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        tcp, thread, self._tcp, self._thread = self._tcp, self._thread, None, None
        if tcp is not None:
            tcp.shutdown()  # stops accepting; tells every connection's thread to close its socket
            tcp.server_close()  # joins those threads: the clients see the connection drop
        if thread is not None:
            thread.join(timeout=5)

    def restart(self) -> FakeRedisServer:
        self.stop()
        return self.start()

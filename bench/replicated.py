"""A redis-server primary with one replica attached, both children of this process: the store of
the durability workload (WAIT needs a replica to count).

`start()` starts the primary, sets `repl-diskless-sync-delay 0` on it (a replica syncs at once,
not after the default 5 s), starts a second redis-server, makes it `REPLICAOF` the primary and
waits (bounded) until the primary's `INFO replication` shows it `state=online`. `stop()` stops
both by PID (RedisServer), also when `start()` failed half way."""

from __future__ import annotations

import time

import redis

from scopehub.redis_provision import HOST, RedisServer, RedisServerError


class ReplicatedRedis:
    def __init__(self, *, online_timeout: float = 20.0) -> None:
        self.primary = RedisServer()
        self.replica = RedisServer()
        self.online_timeout = online_timeout

    @property
    def url(self) -> str:
        return self.primary.url

    @property
    def pids(self) -> dict[str, int | None]:
        return {"redis": self.primary.pid, "redis-replica": self.replica.pid}

    @property
    def label(self) -> str:
        return f"{self.primary.label} with replica {self.replica.label}"

    def start(self) -> ReplicatedRedis:
        try:
            self.primary.start()
            with redis.Redis(host=HOST, port=self.primary.port, socket_timeout=5) as p:
                p.config_set("repl-diskless-sync-delay", 0)
            self.replica.start()
            with redis.Redis(host=HOST, port=self.replica.port, socket_timeout=5) as r:
                r.replicaof(HOST, self.primary.port)
            self.wait_online()
        except BaseException:
            self.stop()
            raise
        return self

    def _state(self) -> str:
        with redis.Redis(host=HOST, port=self.primary.port, socket_timeout=5, decode_responses=True) as p:
            slave = p.info("replication").get("slave0")
        return slave.get("state", "?") if isinstance(slave, dict) else "not attached"

    def wait_online(self) -> None:
        """Poll the primary's INFO replication every 50 ms until its replica is online."""
        deadline = time.monotonic() + self.online_timeout
        state = "no answer yet"
        while True:
            if not self.replica.running:
                raise RedisServerError(f"the replica redis-server on {HOST}:{self.replica.port} exited")
            try:
                state = self._state()
            except redis.RedisError as e:
                state = str(e).splitlines()[0] if str(e) else type(e).__name__
            if state == "online":
                return
            if time.monotonic() >= deadline:
                raise RedisServerError(f"the replica on {HOST}:{self.replica.port} was not online within "
                                       f"{self.online_timeout:g}s (state: {state})")
            time.sleep(0.05)

    def flush(self) -> None:
        """An empty store for the next system: FLUSHALL on the primary (the replica follows)."""
        with redis.Redis(host=HOST, port=self.primary.port, socket_timeout=5) as p:
            p.flushall()
        self.wait_online()

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()

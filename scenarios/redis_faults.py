"""Faults on a local Redis Cluster's own nodes (scopehub.redis_provision.RedisClusterServer):
a failover (freeze a primary until one of its replicas is promoted, then bring the old one back
as a replica) and a reshard (move slots from one primary to another with `redis-cli --cluster
reshard`). Every wait is bounded; the figures (promotion and rejoin times, slots moved) go into
the fault's window and the history."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time

import redis

HOST = "127.0.0.1"
PROMOTE_TIMEOUT_S = 30.0  # node timeout (2 s) + failure report + election: seconds in practice
REJOIN_TIMEOUT_S = 30.0  # the old primary learns of the new epoch, then resyncs as a replica
RESHARD_TIMEOUT_S = 120.0


class ClusterFaultError(RuntimeError):
    """A Redis Cluster fault that did not complete within its bound (one line)."""


def _client(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, decode_responses=True, socket_timeout=1,
                       socket_connect_timeout=1)


def role(node) -> list:
    """ROLE of a RedisServer handle: ["master", ...] or ["slave", host, port, state, offset]."""
    with contextlib.closing(_client(node.port)) as c:
        return c.execute_command("ROLE")


def _poll(cond, timeout: float, what: str, interval: float = 0.05):
    """cond() -> truthy when done (errors count as not yet); bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            got = cond()
            if got:
                return got
        except redis.RedisError as e:
            last = str(e).splitlines()[0] if str(e) else type(e).__name__
        if time.monotonic() >= deadline:
            raise ClusterFaultError(f"{what} did not happen within {timeout:g}s (last: {last})")
        time.sleep(interval)


class Failover:
    """One failover of primary `index`: start() freezes it and watches its replicas until one says
    it is a master; finish() waits for that (bounded), thaws the old primary and waits until it
    reports itself a replica whose link is up. The store's handle lists are then swapped, so
    `primaries[index]` is again the node serving that slot range (and a later fault finds it)."""

    def __init__(self, store, index: int):
        r = store.replica_count
        if r < 1:
            raise ClusterFaultError("a failover needs replicas to promote (a Redis Cluster M:R with R >= 1)")
        self.store, self.index = store, index
        self.old = store.primaries[index]
        self.replicas = store.replicas[index * r:(index + 1) * r]
        self.frozen_at: float | None = None
        self.promoted_at: float | None = None
        self.rejoined_at: float | None = None
        self.promoted = None  # the replica handle now primary
        self._watch: asyncio.Task | None = None

    async def start(self) -> None:
        self.old.pause()
        self.frozen_at = time.monotonic()
        self._watch = asyncio.create_task(asyncio.to_thread(self._wait_promoted))

    def _wait_promoted(self):
        def promoted():
            for rep in self.replicas:
                with contextlib.suppress(redis.RedisError):
                    if role(rep)[0] == "master":
                        return rep
            return None
        rep = _poll(promoted, PROMOTE_TIMEOUT_S, f"a replica of primary {self.index} taking over", 0.1)
        self.promoted_at = time.monotonic()
        self.promoted = rep
        return rep

    async def finish(self) -> None:
        """Bounded: raises ClusterFaultError when no replica was promoted or the old primary did not
        come back as a replica; the old primary is thawed in every case."""
        try:
            await self._watch
        finally:
            self.old.resume()

        def rejoined():
            r = role(self.old)
            return r[0] == "slave" and r[3] == "connected"
        await asyncio.to_thread(_poll, rejoined, REJOIN_TIMEOUT_S,
                                f"the old primary {HOST}:{self.old.port} rejoining as a replica", 0.1)
        self.rejoined_at = time.monotonic()
        s, r = self.store, self.store.replica_count
        j = s.replicas.index(self.promoted)
        s.primaries[self.index], s.replicas[j] = self.promoted, self.old
        # keep replicas[i*R + j] -> primaries[i]: the old primary now sits where its promoted replica was
        assert j // r == self.index

    def figures(self) -> dict:
        def since_freeze(t):
            return round(t - self.frozen_at, 2) if t is not None and self.frozen_at is not None else None
        return {"primary": self.index, "old": f"{HOST}:{self.old.port}",
                "promoted": f"{HOST}:{self.promoted.port}" if self.promoted else None,
                "promoted_after_s": since_freeze(self.promoted_at),
                "rejoined_after_s": since_freeze(self.rejoined_at)}


class Reshard:
    """`redis-cli --cluster reshard` moving `slots` slots from primary `src` to primary `dst`, run as
    a subprocess while traffic flows; finish() waits for it (bounded, killed past the bound)."""

    def __init__(self, store, src: int, dst: int, slots: int):
        self.store, self.src, self.dst, self.slots = store, src, dst, slots
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.output = ""

    async def start(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise ClusterFaultError("reshard needs redis-cli (Debian's redis-tools) on PATH")
        a, b = self.store.primaries[self.src], self.store.primaries[self.dst]
        ids = [await asyncio.to_thread(lambda n=n: _myid(n)) for n in (a, b)]
        self.started_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            cli, "--cluster", "reshard", f"{HOST}:{a.port}", "--cluster-from", ids[0], "--cluster-to", ids[1],
            "--cluster-slots", str(self.slots), "--cluster-yes",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)

    async def finish(self) -> None:
        try:
            out, _ = await asyncio.wait_for(self.proc.communicate(), RESHARD_TIMEOUT_S)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise ClusterFaultError(f"redis-cli --cluster reshard did not finish within {RESHARD_TIMEOUT_S:g}s") from None
        finally:
            self.ended_at = time.monotonic()
        self.output = out.decode(errors="replace")
        if self.proc.returncode != 0:
            bad = [ln for ln in self.output.splitlines() if "ERR" in ln or "rror" in ln]
            raise ClusterFaultError(f"redis-cli --cluster reshard exited {self.proc.returncode}: "
                                    f"{(bad or self.output.splitlines() or ['no output'])[-1].strip()}")

    def figures(self) -> dict:
        took = round(self.ended_at - self.started_at, 2) if self.ended_at and self.started_at else None
        return {"from": self.src, "to": self.dst, "slots": self.slots, "took_s": took,
                "ok": self.proc is not None and self.proc.returncode == 0}


def _myid(node) -> str:
    with contextlib.closing(_client(node.port)) as c:
        return c.execute_command("CLUSTER", "MYID")

"""Faults on a timeline (Jepsen's nemesis): process signals on nodes, Redis restarts, latency
and cuts on one node's link to Redis through its proxy, and client-side faults sent to the
client workers. Every fault's start and end go into the history (`fault` records: what, which
nodes it stalls), so the checker can excuse what a fault makes impossible and a report can be
rendered from the history alone; everything is healed at the end of the fault phase."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from .redis_faults import ClusterFaultError, Failover, Reshard
from .spec import Fault, Scenario

log = logging.getLogger("scopehub.nemesis")


#: faults on the store: they affect every node's clients
STORE_WIDE = ("restart_redis", "pause_redis", "failover", "reshard")


class NemesisError(RuntimeError):
    """A fault this run cannot apply (the simulator reports it, one line)."""


@dataclass
class Window:
    kind: str
    target: str
    start: float
    end: float | None = None
    figures: dict | None = None  # failover / reshard: promotion and rejoin times, slots moved


class Nemesis:
    def __init__(self, sc: Scenario, cluster, broadcast_to_clients, history=None):
        self.sc, self.cluster = sc, cluster  # cluster: scenarios.sim.SimCluster
        self.tell_clients = broadcast_to_clients
        self.history = history  # conformance.history.HistoryWriter of this process
        self.windows: list[Window] = []
        self.down: set[int] = set()  # nodes killed or paused now
        self._heals: dict[int, asyncio.Task] = {}
        self._open: dict[int, tuple[Fault, Window]] = {}
        self._store_faults: dict[int, Failover | Reshard] = {}  # open failovers and reshards

    def active(self) -> list[str]:
        return [f"{w.kind}:{w.target}" for w in self.windows if w.end is None]

    async def run(self, started: float) -> None:
        loop = asyncio.get_running_loop()
        for i, fault in enumerate(sorted(self.sc.faults, key=lambda f: f.at)):
            await asyncio.sleep(max(0.0, started + fault.at - loop.time()))
            window = Window(fault.kind, self._target(fault), loop.time() - started)
            self.windows.append(window)
            self._record(fault, "start")
            await self.apply(fault, i)
            self._open[i] = (fault, window)
            if fault.duration > 0 or fault.kind in ("restart_node", "restart_redis", "reshard"):
                self._heals[i] = asyncio.create_task(self._heal_later(i, started, fault.duration))

    def _record(self, f: Fault, phase: str, **figures) -> None:
        if self.history is None:
            return
        urls = self.cluster.urls
        if f.node is not None:
            nodes = [urls[f.node]]
        elif f.kind in STORE_WIDE:
            nodes = list(urls)  # the store: every node's clients
        else:
            nodes = []  # client-side: the clients' own closes and pauses are in the history
        self.history.fault(f.kind, phase, self._target(f), nodes, **figures)

    def _target(self, f: Fault) -> str:
        if f.node is not None:
            return f"node-{f.node + 1}"
        if f.kind in ("failover", "reshard"):
            return f"redis-primary-{f.primary + 1}"
        return {"restart_redis": "redis", "pause_redis": "redis", "client_jitter": "clients", "slow_readers": "clients"}.get(f.kind, "")

    async def _heal_later(self, i: int, started: float, after: float) -> None:
        await asyncio.sleep(after)
        await self._heal(i, started)

    async def _heal(self, i: int, started: float) -> None:
        fault, window = self._open.pop(i, (None, None))
        if fault is None:
            return
        try:
            await self.revert(fault, i)
        finally:  # a failover or reshard that failed its bound still ends its window, with its figures
            done = self._store_faults.pop(i, None)
            window.figures = done.figures() if done is not None else None
            self._record(fault, "end", **({"figures": window.figures} if window.figures else {}))
            window.end = asyncio.get_running_loop().time() - started

    async def apply(self, f: Fault, i: int = -1) -> None:
        c = self.cluster
        log.info("fault %s", f)
        if f.kind == "kill_node":
            self.down.add(f.node)
            c.nodes[f.node].kill()
        elif f.kind == "pause_node":
            self.down.add(f.node)
            c.nodes[f.node].pause()
        elif f.kind == "restart_node":
            self.down.add(f.node)
            await c.restart_node(f.node)
            self.down.discard(f.node)
        elif f.kind == "restart_redis":
            await asyncio.to_thread(self._store().restart)
        elif f.kind == "pause_redis":
            self._store().pause()
        elif f.kind == "link_latency":
            c.proxies[f.node].set_latency(f.latency_s)
        elif f.kind == "link_cut":
            await c.proxies[f.node].cut()
        elif f.kind == "client_jitter":
            self.tell_clients({"cmd": "jitter", "on": True, "period_s": f.period_s, "down_s": f.down_s})
        elif f.kind == "slow_readers":
            self.tell_clients({"cmd": "slow", "on": True})
        elif f.kind in ("failover", "reshard"):
            store = self._cluster_store()
            m = store.primary_count
            op = Failover(store, f.primary) if f.kind == "failover" else Reshard(store, f.primary, (f.primary + 1) % m, f.slots)
            self._store_faults[i] = op
            try:
                await op.start()
            except ClusterFaultError as e:
                raise NemesisError(str(e)) from None

    async def revert(self, f: Fault, i: int = -1) -> None:
        c = self.cluster
        if f.kind == "kill_node":
            await c.restart_node(f.node)
        elif f.kind == "pause_node":
            c.nodes[f.node].resume()
        elif f.kind == "pause_redis":
            self._store().resume()
        elif f.kind in ("link_latency", "link_cut"):
            c.proxies[f.node].heal()
        elif f.kind == "client_jitter":
            self.tell_clients({"cmd": "jitter", "on": False})
        elif f.kind == "slow_readers":
            self.tell_clients({"cmd": "slow", "on": False})
        elif f.kind in ("failover", "reshard") and i in self._store_faults:
            try:
                await self._store_faults[i].finish()
            except ClusterFaultError as e:
                log.error("%s: %s", f.kind, e)
                raise NemesisError(str(e)) from None
        if f.node is not None:
            self.down.discard(f.node)

    def _store(self):
        server = self.cluster.redis_server
        if server is None or not hasattr(server, "pause"):
            raise NemesisError(f"this fault needs a redis-server the simulator started; the run has {self.cluster.redis_label}")
        return server

    def _cluster_store(self):
        server = self.cluster.redis_server
        if server is None or not hasattr(server, "primaries"):
            raise NemesisError(f"this fault needs a Redis Cluster the simulator started; the run has {self.cluster.redis_label}")
        return server

    async def heal_all(self, started: float) -> None:
        """End of the fault phase: undo whatever is still in effect."""
        for i, t in self._heals.items():
            if i in self._open:  # not being undone yet: undone below, now
                t.cancel()
        # those being undone finish (each wait in them is bounded): a failover half-undone would
        # leave its old primary frozen or the store's handles stale
        for r in await asyncio.gather(*self._heals.values(), return_exceptions=True):
            if isinstance(r, Exception):
                log.error("a fault could not be undone on time: %r (healing it now)", r)
        for i in list(self._open):
            await self._heal(i, started)

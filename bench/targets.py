"""The systems under test: reference nodes this run starts (real processes through
scopehub.cluster, Redis from a redis-server child of our own), or nodes given by URL.

Also the benchmark's fixture world (one user, a few workspaces, an issue per workspace and
its tasks) and CPU accounting by PID."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import psutil

from conformance.client import Control
from scopehub.cluster import Cluster, ClusterSpec


def _id() -> str:
    return str(uuid.uuid4())


@dataclass
class BenchWorld:
    """One user, member of every workspace; each workspace has one issue and `tasks_per_ws` tasks."""

    workspaces: int = 1
    tasks_per_ws: int = 0
    user: str = field(default_factory=_id)
    ws: list[str] = field(default_factory=list)
    issues: dict[str, str] = field(default_factory=dict)  # workspace -> issue
    tasks: dict[str, list[str]] = field(default_factory=dict)  # workspace -> task ids

    def __post_init__(self) -> None:
        for _ in range(self.workspaces):
            w = _id()
            self.ws.append(w)
            self.issues[w] = _id()
            self.tasks[w] = [_id() for _ in range(self.tasks_per_ws)]

    def fixtures(self) -> dict:
        return {
            "workspaces": {w: {"slug": f"bench-{i}-{w[:8]}", "members": [self.user]} for i, w in enumerate(self.ws)},
            "issues": {iss: {"workspace": w} for w, iss in self.issues.items()},
            "tasks": {t: {"issue": self.issues[w]} for w, ts in self.tasks.items() for t in ts},
        }


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes, the kernel)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


class CpuMeter:
    """CPU seconds (user + system) of a set of processes, by PID; a PID that is gone reads None."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.procs: dict[str, psutil.Process | None] = {}
        for name, pid in pids.items():
            try:
                self.procs[name] = psutil.Process(pid) if pid else None
            except psutil.Error:
                self.procs[name] = None

    def read(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, p in self.procs.items():
            if p is None:
                out[name] = None
                continue
            try:
                t = p.cpu_times()
                out[name] = t.user + t.system
            except psutil.Error:
                out[name] = None
        return out


@dataclass
class System:
    """Nodes to benchmark: their URLs, control clients and (when we started them) PIDs."""

    label: str
    relay: str
    urls: list[str]
    controls: list[Control]
    pids: list[int | None]
    redis_pid: int | None = None
    cluster: Cluster | None = None
    # How a step offers load: None publishes through the control API (bench.publisher); the
    # floor drives its own send loop instead: async (targets, rate, seconds, k, pad) -> PublishResult.
    driver: Callable[..., Awaitable] | None = None
    extra_pids: dict[str, int | None] = field(default_factory=dict)  # more processes to meter, e.g. a replica

    @property
    def nodes(self) -> int:
        return len(self.urls)

    def cpu_pids(self) -> dict[str, int | None]:
        pids = {f"node-{i + 1}": pid for i, pid in enumerate(self.pids)}
        if self.redis_pid:
            pids["redis"] = self.redis_pid
        return {**pids, **self.extra_pids}

    async def load_world(self, world: BenchWorld) -> str:
        """Install the fixture world on every node and return an auth cookie for its user."""
        for c in self.controls:
            await c.fixtures(world.fixtures())
        return await self.controls[0].token(world.user, ttl_s=24 * 3600)

    async def stop(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop()
            self.cluster = None


# Pings every 54 s would only add noise; a bench node keeps the default send queue (DEL-6).
NODE_FLAGS = ("--ping-interval", "600", "--pong-timeout", "900")


async def start_system(session: aiohttp.ClientSession, relay: str, nodes: int, token: str, *,
                       redis_url: str | None = None, redis_pid: int | None = None,
                       node_flags: tuple[str, ...] = (), label: str | None = None) -> System:
    spec = ClusterSpec(nodes=nodes, relay=relay, redis_url=redis_url, control_token=token,
                       node_flags=NODE_FLAGS + tuple(node_flags))
    if relay != "memory" and not redis_url:
        raise ValueError("a Redis relay needs redis_url (bench starts its own redis-server)")
    cluster = Cluster(spec)
    await cluster.start()
    controls = [Control(session, u, token) for u in cluster.urls]
    return System(label=label or f"{relay} x{nodes}", relay=relay, urls=list(cluster.urls), controls=controls,
                  pids=[n.pid for n in cluster.nodes], redis_pid=redis_pid if relay != "memory" else None,
                  cluster=cluster)


async def given_system(session: aiohttp.ClientSession, urls: list[str], token: str) -> System:
    """Nodes somebody else runs (--node URL ...): no PIDs, so no CPU figures unless local."""
    controls = [Control(session, u, token) for u in urls]
    relay = (await controls[0].info()).get("relay", "?")
    return System(label=f"{relay} x{len(urls)} (given)", relay=relay, urls=[u.rstrip("/") for u in urls],
                  controls=controls, pids=[loopback_pid_of(u) for u in urls])


def loopback_pid_of(url: str) -> int | None:
    """The PID listening on a loopback URL's port, when this machine can tell (for --node)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or not parts.port:
        return None
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.laddr and c.laddr.port == parts.port and c.status == psutil.CONN_LISTEN and c.pid:
                return c.pid if c.pid != os.getpid() else None
    except (psutil.Error, OSError):
        return None
    return None

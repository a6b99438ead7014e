"""Targets the project's tests point the conformance suite at, all started the way any other
implementation is (separate node processes, real Redis, the control API over TCP):

* the reference, in the shapes its cases need (3 streams nodes, 1 memory node, a node behind a
  trusted proxy with an allow-list, a node with a metrics token and a JWT secret the suite does
  not know);
* the permissive twin (tests/permissive_node.py): the reference using liberties the contract
  grants, on which the suite must find nothing wrong;
* broken targets (tests/broken_node.py): the reference with one realistic bug, which the suite
  must fail with the right requirement.

`run_suite` runs cases against one target and returns their results; tests/suite_runs.py runs
each target once per pytest session for every case test that asks for it."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from conformance.cases import Case
from conformance.runner import CaseResult, run_cases
from conformance.target import Target
from scopehub.cluster import Cluster, ClusterSpec

HERE = Path(__file__).parent
# Short timeouts keep the auth-timeout and keepalive cases quick; a short retention lets the
# REP-4 case exceed it. The cases read all of them from info.
FAST = "--auth-timeout 2 --ping-interval 1 --pong-timeout 3 --header-timeout 2"
ALLOWED = "https://app.example.com"


@dataclass(frozen=True)
class TargetSpec:
    name: str
    nodes: int = 3
    flags: str = ""  # `scopehub serve` flags
    relay: str = "streams"
    script: str | None = None  # "broken_node.py --bug X" or "permissive_node.py --liberty X": None is the reference
    concurrency: int = 6  # cases side by side (a target that answers slowly keeps more of them waiting)
    group: str = ""  # targets of one group run side by side (tests/suite_runs.py)
    redis_cluster: str | None = None  # "M[:R]": the target's store is a local Redis Cluster of its own

    def command(self) -> str | None:
        """The node-command template (None: the reference's own)."""
        if self.script is None:
            return None
        file, _, switch = self.script.partition(" ")
        return (f"{shlex.quote(sys.executable)} {shlex.quote(str(HERE / file))} {switch} --host {{host}} --port {{port}} "
                f"--node-id {{name}} --control-token {{token}} --relay {self.relay} --redis {{redis_url}} "
                f"{'--redis-cluster ' if self.redis_cluster else ''}{self.flags}").strip()

    def cluster(self, redis_url: str) -> Cluster:
        return Cluster(ClusterSpec(nodes=self.nodes, relay=self.relay, redis_url=redis_url,
                                   node_flags=tuple(shlex.split(self.flags)), node_command=self.command(),
                                   redis_cluster=self.redis_cluster))


REFERENCE = {t.name: t for t in [
    TargetSpec("reference-3", 3, f"{FAST} --allowed-origins {ALLOWED} --max-len 400", group="reference"),
    TargetSpec("reference-1", 1, f"{FAST} --max-len 400", relay="memory", group="reference"),
    TargetSpec("reference-proxy", 1, f"{FAST} --trusted-proxies 127.0.0.1/32 --allowed-origins {ALLOWED} "
               "--max-subscriptions 24",
               relay="memory", group="reference"),
    # NODE-4: the cases that spread scopes over a Redis Cluster (3 primaries, a replica each)
    TargetSpec("reference-rediscluster", 3, FAST, redis_cluster="3:1", group="reference"),
    TargetSpec("reference-secrets", 1, f"{FAST} --metrics-token m-{'x' * 8} --jwt-secret another-secret-{'y' * 32}",
               relay="memory", group="reference"),
]}


async def run_suite(spec: TargetSpec, cases: list[Case], redis_url: str, *, quick: bool = False
                    ) -> tuple[Target, list[CaseResult]]:
    """Start the target, run the cases against it (probes first, as `scopehub conform` does), stop it."""
    cluster = spec.cluster(redis_url)
    try:
        await cluster.start()
        async with aiohttp.ClientSession() as session:
            target = await Target.open(session, cluster.urls, cluster.spec.control_token)
            target.cluster = cluster
            results = await run_cases(target, cases, quick=quick, concurrency=spec.concurrency)
        return target, results
    finally:
        await cluster.stop()


async def run_suites(runs: list[tuple[TargetSpec, list[Case]]], redis_url: str, *, parallel: int = 3,
                     quick: bool = False) -> dict[str, tuple[Target, list[CaseResult]]]:
    """Several targets, `parallel` at a time (a broken target mostly waits out its timeouts)."""
    gate = asyncio.Semaphore(parallel)

    async def one(spec: TargetSpec, cases: list[Case]):
        async with gate:
            return spec.name, await run_suite(spec, cases, redis_url, quick=quick)
    return dict(await asyncio.gather(*(one(spec, cases) for spec, cases in runs)))


@contextlib.contextmanager
def local_redis_cluster(primaries: int = 3, replicas: int = 1):
    """A local Redis Cluster of our own (scopehub.redis_provision), stopped by PID afterwards."""
    from scopehub.redis_provision import RedisClusterServer

    server = RedisClusterServer(primaries, replicas)
    try:
        yield server.start()
    finally:
        server.stop()

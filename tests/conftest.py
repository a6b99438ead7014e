"""Shared fixtures: reference nodes on ephemeral ports over real TCP, a fixture world, and
clients that speak the wire protocol."""

from __future__ import annotations

import asyncio
import os
import signal
import secrets
from dataclasses import dataclass, replace

import aiohttp
import pytest
from aiohttp import web

from conformance.client import Control, WsClient
from conformance.world import TestWorld
from reference.app import build_app, install_guard
from reference.config import ServerConfig
from reference.state import STATE, NodeState

# Hypothesis profiles: `dev` while working, `ci` (derandomized, no example database) when the
# CI variable is set, `nightly` for long explorations: HYPOTHESIS_PROFILE=nightly make test.
from hypothesis import HealthCheck, settings

# The conformance cases run as the project's tests (tests/suite_runs.py, tests/test_cases.py).
pytest_plugins = ["suite_runs"]

_slow_ok = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("dev", max_examples=10, deadline=None, print_blob=True, suppress_health_check=_slow_ok)
settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True, database=None,
                          print_blob=True, suppress_health_check=_slow_ok)
settings.register_profile("nightly", max_examples=300, deadline=None, print_blob=True, suppress_health_check=_slow_ok)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


@dataclass
class Node:
    base: str
    control: Control
    config: ServerConfig
    state: NodeState
    runner: web.AppRunner


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def world() -> TestWorld:
    return TestWorld()


@pytest.fixture
async def start_node(session, world):
    """start_node(**config) -> Node: an in-process reference node with the test world loaded."""
    runners: list[web.AppRunner] = []

    async def start(broadcaster=None, **overrides) -> Node:
        cfg = replace(ServerConfig(control_token=secrets.token_hex(8)), **overrides)
        app = build_app(cfg, broadcaster=broadcaster)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        install_guard(runner)
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}"
        control = Control(session, base, cfg.control_token or "none")
        if cfg.control_token:
            await control.fixtures(world.fixtures())
        return Node(base, control, cfg, app[STATE], runner)

    yield start
    for r in runners:
        await r.cleanup()


@pytest.fixture
async def node(start_node) -> Node:
    return await start_node()


@pytest.fixture
async def raw_ws(session):
    """raw_ws(node, params, **ws_connect kwargs) -> aiohttp ClientWebSocketResponse, unauthenticated;
    closed in teardown."""
    opened: list[aiohttp.ClientWebSocketResponse] = []

    async def open_(node, params: dict, **kw) -> aiohttp.ClientWebSocketResponse:
        ws = await asyncio.wait_for(
            session.ws_connect(node.base + "/ws", params=params,
                               timeout=aiohttp.ClientWSTimeout(ws_close=2.0), max_msg_size=0, **kw), 5.0)
        opened.append(ws)
        return ws

    yield open_
    for ws in opened:
        await ws.close()


@pytest.fixture
async def connect(session, node):
    """connect(user, workspace=None, **kw) -> WsClient authenticated by token on `node`."""
    clients: list[WsClient] = []

    async def open_(user: str, workspace: str, *, on: Node | None = None, **kw) -> WsClient:
        target = on or node
        token = kw.pop("token", None) or await target.control.token(user)
        c = await WsClient.connect(session, target.base, workspace_id=workspace, token=token, **kw)
        clients.append(c)
        return c

    yield open_
    for c in clients:
        await c.close()


@pytest.fixture
def redis_server():
    """A redis-server child of our own on a free loopback port (never 6379, never a Redis someone
    else started); stopped, reaped and its temp dir removed in teardown."""
    from scopehub.redis_provision import RedisServer, RedisUnavailable

    try:
        server = RedisServer()
    except RedisUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class ClusterHandle:
    cluster: object  # scopehub.cluster.Cluster
    controls: list  # Control per node
    redis: object  # the RedisServer the nodes use

    @property
    def urls(self) -> list[str]:
        return self.cluster.urls


@pytest.fixture
async def start_cluster(session, world, redis_server):
    """start_cluster(relay, nodes=3, node_flags=()) -> ClusterHandle: reference nodes as OS
    processes on the test's own redis-server, with the test world loaded on every node."""
    from scopehub.cluster import Cluster, ClusterSpec

    started = []

    async def start(relay: str, nodes: int = 3, node_flags: tuple[str, ...] = ()) -> ClusterHandle:
        cluster = Cluster(ClusterSpec(nodes=nodes, relay=relay, redis_url=redis_server.url, node_flags=node_flags))
        started.append(cluster)
        await cluster.start()
        controls = [Control(session, url, cluster.spec.control_token) for url in cluster.urls]
        for c in controls:
            await c.fixtures(world.fixtures())
        return ClusterHandle(cluster, controls, redis_server)

    yield start
    for cluster in started:
        await cluster.stop()


# -- tiers: `pytest` runs everything but the slow tier; `--slow` adds it (each twin liberty alone,
# long explorations); `--quick` leaves out what starts clusters or runs scenarios (the inner loop).

def pytest_configure(config):
    # A run stopped with SIGTERM (CI's timeout, `timeout`, a supervisor) unwinds like Ctrl-C, so
    # every fixture's teardown still stops the node and redis-server processes it started.
    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, stop)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (long runs)")
    parser.addoption("--quick", action="store_true",
                     help="leave out the tests marked heavy (clusters, scenarios, suite runs): the inner loop")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: run with --slow")
    keep = []
    for item in items:
        if config.getoption("--quick") and item.get_closest_marker("heavy"):
            continue
        if not config.getoption("--slow") and item.get_closest_marker("slow"):
            item.add_marker(skip_slow)
        keep.append(item)
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep

"""A cluster of nodes as separate OS processes sharing one Redis: reference nodes, or nodes of
any implementation started from a command template. The Redis may be a Redis Cluster: a local
one started for the run (`ClusterSpec.redis_cluster = "M[:R]"`) or an existing one
(`redis_cluster_urls`); `{redis_url}` is then its seed URL and reference nodes get
`--redis-cluster`.

Used by `scopehub cluster`, `scopehub conform --node-command`, the tests, the benchmarks and
the simulator. Each node gets a fixed port, so a node killed and restarted comes back at the
same URL; a node is ready when its control API answers GET /_control/info."""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from .processes import NodeProcess
from .redis_provision import LocalRedis, ProvisionedRedis, free_port, provision, provision_cluster

# What starts one reference node; another implementation's template uses the same placeholders.
REFERENCE_COMMAND = (f"{shlex.quote(sys.executable)} -m scopehub serve --host {{host}} --port {{port}} "
                     "--node-id {name} --control-token {token} --relay {relay}")
PLACEHOLDERS = ("port", "redis_url", "token", "name", "host", "relay")


def render_command(template: str, **values: str) -> list[str]:
    """The argv of one node: the template with its placeholders filled (unknown ones are an error)."""
    try:
        return shlex.split(template.format(**values))
    except (KeyError, IndexError) as e:
        raise ValueError(f"node command: unknown placeholder {e} (known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})") from None
    except ValueError as e:
        raise ValueError(f"node command: {e}") from None


@dataclass
class ClusterSpec:
    nodes: int = 3
    relay: str = "streams"
    redis_url: str | None = None  # None: provision one (a redis-server binary here)
    redis_cluster: str | None = None  # "M[:R]": start a local Redis Cluster instead (redis_url unused)
    redis_cluster_urls: tuple[str, ...] = ()  # an existing Redis Cluster: its seed URLs (the first is given to nodes)
    fakeredis_fallback: bool = False  # the simulator's embedded default: fakeredis where nothing else is
    control_token: str = field(default_factory=lambda: secrets.token_hex(12))
    host: str = "127.0.0.1"
    base_port: int | None = None  # None: free ports
    node_flags: tuple[str, ...] = ()  # extra flags for reference nodes, e.g. ("--max-len", "50")
    node_command: str | None = None  # another implementation: a template with PLACEHOLDERS
    log_dir: str | None = None


class Cluster:
    def __init__(self, spec: ClusterSpec, *, link: Callable[[int, str], Awaitable[str]] | None = None):
        """`link(index, redis_url)` may return another URL for node `index` to use (the
        simulator puts a proxy there); it is not used when the store is a Redis Cluster."""
        self.spec = spec
        self.link = link
        self.redis: ProvisionedRedis | None = None
        self.nodes: list[NodeProcess] = []
        self._own_log_dir: tempfile.TemporaryDirectory | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def urls(self) -> list[str]:
        return [n.base_url or n.probe_url or "" for n in self.nodes]

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    @property
    def redis_server(self) -> LocalRedis | None:
        """The Redis this cluster started, if it did (only that one can be restarted)."""
        return self.redis.server if self.redis is not None else None

    @property
    def redis_is_cluster(self) -> bool:
        """The store is a Redis Cluster (the one we started, or an existing one)."""
        return self.spec.redis_cluster is not None or bool(self.spec.redis_cluster_urls)

    @property
    def uses_redis(self) -> bool:
        return self.spec.node_command is not None or self.spec.relay != "memory"

    def node_argv(self, index: int, port: int, redis_url: str) -> list[str]:
        s = self.spec
        values = dict(port=str(port), redis_url=redis_url, token=s.control_token, name=f"node-{index + 1}",
                      host=s.host, relay=s.relay)
        if s.node_command:
            return render_command(s.node_command, **values)
        argv = render_command(REFERENCE_COMMAND, **values)
        if s.relay != "memory":
            argv += ["--redis", redis_url]
            if self.redis_is_cluster:
                argv.append("--redis-cluster")  # the --redis URL is a seed node of a Redis Cluster
        return argv + list(s.node_flags)

    def _ready(self, base: str):
        async def probe() -> bool:
            async with self._session.get(base + "/_control/info", timeout=aiohttp.ClientTimeout(total=1),
                                         headers={"Authorization": f"Bearer {self.spec.control_token}"}) as r:
                return r.status == 200
        return probe

    async def start(self, timeout: float = 30) -> "Cluster":
        s = self.spec
        self._session = aiohttp.ClientSession()
        try:
            if self.uses_redis and self.redis_is_cluster:
                self.redis = await asyncio.to_thread(provision_cluster, s.redis_cluster,
                                                     urls=tuple(s.redis_cluster_urls))
            elif self.uses_redis:
                self.redis = await asyncio.to_thread(provision, s.redis_url,
                                                     fakeredis_fallback=s.fakeredis_fallback)
            log_dir = s.log_dir
            if log_dir is None:
                self._own_log_dir = tempfile.TemporaryDirectory(prefix="scopehub-cluster-")
                log_dir = self._own_log_dir.name
            os.makedirs(log_dir, exist_ok=True)
            for i in range(s.nodes):
                port = s.base_port + i if s.base_port else free_port(s.host)
                url = self.redis.url if self.redis else ""
                # a Redis Cluster redirects clients to its nodes' own addresses: no link in between
                if self.link is not None and url and not self.redis.is_cluster:
                    url = await self.link(i, url)
                base = f"http://{s.host}:{port}"
                self.nodes.append(NodeProcess(self.node_argv(i, port, url), f"node-{i + 1}",
                                              log_path=os.path.join(log_dir, f"node-{i + 1}.log"),
                                              probe=self._ready(base), url=base))
            await asyncio.gather(*(n.start(timeout) for n in self.nodes))
        except BaseException:
            await self.stop()
            raise
        return self

    async def restart_node(self, index: int, timeout: float = 30) -> str:
        return await self.nodes[index].restart(timeout)

    async def stop(self) -> None:
        await asyncio.gather(*(n.terminate() for n in self.nodes), return_exceptions=True)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._own_log_dir is not None:
            self._own_log_dir.cleanup()
            self._own_log_dir = None

    async def __aenter__(self) -> "Cluster":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

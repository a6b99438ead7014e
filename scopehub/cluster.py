"""A cluster of reference nodes as separate OS processes sharing one Redis.

Used by `scopehub cluster`, the relay tests and the simulator. Each node gets a fixed port,
so a node killed and restarted comes back at the same URL."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass, field

from .processes import NodeProcess
from .redis_provision import ProvisionedRedis, free_port, provision


@dataclass
class ClusterSpec:
    nodes: int = 3
    relay: str = "streams"
    redis_url: str | None = None  # None: provision one (binary redis-server here)
    control_token: str = field(default_factory=lambda: secrets.token_hex(12))
    host: str = "127.0.0.1"
    base_port: int | None = None  # None: free ports
    node_flags: tuple[str, ...] = ()  # extra `scopehub serve` flags, e.g. ("--max-len", "50")
    log_dir: str | None = None


class Cluster:
    def __init__(self, spec: ClusterSpec):
        self.spec = spec
        self.redis: ProvisionedRedis | None = None
        self.nodes: list[NodeProcess] = []
        self._own_log_dir: tempfile.TemporaryDirectory | None = None

    @property
    def urls(self) -> list[str]:
        return [n.base_url or "" for n in self.nodes]

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    def node_argv(self, index: int, port: int, redis_url: str) -> list[str]:
        s = self.spec
        argv = [sys.executable, "-m", "scopehub", "serve", "--host", s.host, "--port", str(port),
                "--node-id", f"node-{index + 1}", "--control-token", s.control_token, "--relay", s.relay]
        if s.relay != "memory":
            argv += ["--redis", redis_url]
        return argv + list(s.node_flags)

    async def start(self, timeout: float = 30) -> "Cluster":
        s = self.spec
        if s.relay != "memory":
            self.redis = await asyncio.to_thread(provision, s.redis_url)
        log_dir = s.log_dir
        if log_dir is None:
            self._own_log_dir = tempfile.TemporaryDirectory(prefix="scopehub-cluster-")
            log_dir = self._own_log_dir.name
        os.makedirs(log_dir, exist_ok=True)
        try:
            for i in range(s.nodes):
                port = s.base_port + i if s.base_port else free_port(s.host)
                url = self.redis.url if self.redis else ""
                self.nodes.append(NodeProcess(self.node_argv(i, port, url), f"node-{i + 1}",
                                              log_path=os.path.join(log_dir, f"node-{i + 1}.log")))
            await asyncio.gather(*(n.start(timeout) for n in self.nodes))
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        await asyncio.gather(*(n.terminate() for n in self.nodes), return_exceptions=True)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
        if self._own_log_dir is not None:
            self._own_log_dir.cleanup()
            self._own_log_dir = None

    async def __aenter__(self) -> "Cluster":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

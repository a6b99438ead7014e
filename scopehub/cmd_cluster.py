"""`scopehub cluster`: start N reference nodes on one Redis (or a Redis Cluster) and keep them running."""

from __future__ import annotations

import argparse
import asyncio
import signal

from rich.console import Console
from rich.table import Table

from .cluster import Cluster, ClusterSpec
from .cmd_serve import _count, _port
from .processes import NodeStartError
from .redis_provision import HOST, RedisServerError, RedisUnavailable
from .target_args import add_redis_flags, redis_fields


def register(sub) -> None:
    p = sub.add_parser("cluster", help="start a cluster of reference nodes on one Redis",
                       description="Start N reference nodes as separate processes sharing one Redis, "
                       "print their URLs and control token, and stop them all on Ctrl-C. Redis comes "
                       "from --redis, else $REDIS_URL, else a Docker engine (testcontainers), else a "
                       "redis-server binary started for the run; --redis-cluster M[:R] starts a local "
                       "Redis Cluster instead (docs/redis-cluster.md).")
    p.add_argument("--nodes", type=_count, default=3, help="number of nodes (default 3)")
    p.add_argument("--relay", choices=("streams", "sharded"), default="streams",
                   help="relay strategy of every node (default streams)")
    add_redis_flags(p)
    p.add_argument("--control-token", metavar="T", help="control API token (default: random, printed)")
    p.add_argument("--base-port", type=_port, help="first node's port; the others follow (default: free ports)")
    p.add_argument("--node-flag", action="append", default=[], metavar="FLAG",
                   help="extra flag passed to every `scopehub serve`, e.g. --node-flag=--max-len=100 (repeatable)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    spec = ClusterSpec(nodes=args.nodes, relay=args.relay, base_port=args.base_port,
                       node_flags=tuple(args.node_flag), **redis_fields(args))
    if args.control_token:
        spec.control_token = args.control_token
    return asyncio.run(_run(spec))


async def _run(spec: ClusterSpec) -> int:
    from .cli import UserError

    console = Console()
    cluster = Cluster(spec)
    try:
        store = f" on a Redis Cluster of {spec.redis_cluster}" if spec.redis_cluster else ""
        with console.status(f"starting {spec.nodes} {spec.relay} nodes{store}..."):
            await cluster.start()
    except (RedisUnavailable, RedisServerError) as e:
        raise UserError(str(e)) from None
    except NodeStartError as e:
        raise UserError(f"a node did not start: {e}") from None
    try:
        table = Table(title=f"scopehub cluster ({spec.relay} relay)")
        table.add_column("node")
        table.add_column("url")
        table.add_column("pid")
        for n in cluster.nodes:
            table.add_row(n.name, n.base_url or "", str(n.pid))
        console.print(table)
        console.print(f"redis: {cluster.redis.label if cluster.redis else '-'}")
        if cluster.redis is not None and cluster.redis.kind == "cluster":
            server = cluster.redis.server
            console.print("redis cluster nodes: " + ", ".join(
                f"{role} {HOST}:{n.port} (pid {n.pid})" for role, group in
                (("primary", server.primaries), ("replica", server.replicas)) for n in group))
        console.print(f"control token: {spec.control_token}")
        console.print("press Ctrl-C to stop", style="dim")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # Stop when asked, or when every node has died.
        while not stop.is_set() and any(n.running for n in cluster.nodes):
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
    finally:
        await cluster.stop()
    console.print("cluster stopped")
    return 0

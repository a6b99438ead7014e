"""The flags that name a target's nodes, shared by the commands that judge one (conform, fuzz):
running nodes by URL, or a node command the command starts itself on a fresh Redis. Also the
Redis flags of every command that starts nodes (--redis, --redis-cluster; `scopehub cluster`
uses them too)."""

from __future__ import annotations

import argparse
import contextlib


def add_target_flags(p: argparse.ArgumentParser, *, default_nodes: int, node_command_help: str) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--node", dest="nodes", action="append", metavar="URL",
                       help="base URL of one running node, e.g. http://127.0.0.1:8080 (repeat for every node)")
    where.add_argument("--node-command", metavar="CMD", help=node_command_help)
    p.add_argument("--nodes", dest="node_count", type=int, default=default_nodes, metavar="N",
                   help=f"with --node-command: how many nodes to start (default {default_nodes})")
    add_redis_flags(p, when="with --node-command: ")
    p.add_argument("--control-token", metavar="T",
                   help="the target's control API token (required with --node; generated with --node-command)")


def _redis_cluster(text: str) -> str | tuple[str, ...]:
    """--redis-cluster: "M[:R]" (kept as text), or the URLs of an existing cluster (a tuple)."""
    from .redis_provision import parse_cluster_spec

    if text.strip().startswith(("redis://", "rediss://")):
        return _urls(text)
    try:
        parse_cluster_spec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text.strip()


def _urls(text: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in text.split(",") if u.strip())
    bad = [u for u in urls if not u.startswith(("redis://", "rediss://"))]
    if not urls or bad:
        raise argparse.ArgumentTypeError(f"expected redis:// URLs separated by commas, got {text!r}")
    return urls


def add_redis_flags(p: argparse.ArgumentParser, *, when: str = "") -> None:
    p.add_argument("--redis", metavar="URL", help=f"{when}use this Redis instead of starting one; a comma "
                   "list of two or more URLs is an existing Redis Cluster (its seed nodes)")
    p.add_argument("--redis-cluster", metavar="M[:R]|URLS", type=_redis_cluster,
                   help=f"{when}start a local Redis Cluster of M primaries (at least 3) with R replicas each "
                        "(default 0) from the redis-server binary, stopped at the end; or, given redis:// URLs "
                        "(comma-separated), use that existing Redis Cluster. Nodes get the first URL as "
                        "{redis_url}; reference nodes also get --redis-cluster. See docs/redis-cluster.md")


def redis_fields(args: argparse.Namespace) -> dict:
    """The ClusterSpec fields that say where the nodes' Redis comes from. UserError (one line)
    when --redis and --redis-cluster are both given."""
    from .cli import UserError

    if args.redis and args.redis_cluster:
        raise UserError("give --redis or --redis-cluster, not both")
    if args.redis and "," in args.redis:
        try:
            return {"redis_cluster_urls": _urls(args.redis)}
        except argparse.ArgumentTypeError as e:
            raise UserError(f"--redis: {e}") from None
    if isinstance(args.redis_cluster, tuple):
        return {"redis_cluster_urls": args.redis_cluster}
    return {"redis_url": args.redis, "redis_cluster": args.redis_cluster}


def node_template(args: argparse.Namespace) -> str | None:
    """Check the target flags; return the node-command template (None: running nodes, or the
    reference's own command). Raises UserError with one line."""
    from .cli import UserError

    if args.node_command is None and not args.control_token:
        raise UserError("--control-token is required with --node")
    if args.node_count < 1:
        raise UserError("--nodes must be at least 1")
    if args.node_command is None and args.redis_cluster:
        raise UserError("--redis-cluster needs --node-command (running nodes have their own Redis)")
    redis_fields(args)  # --redis with --redis-cluster
    for url in args.nodes or ():
        if not url.startswith(("http://", "https://")):
            raise UserError(f"--node {url!r} is not an http(s) URL")
    if args.node_command is None or args.node_command == "reference":
        return None
    from .cluster import render_command

    template = args.node_command
    if "{port}" not in template:
        raise UserError("--node-command must contain {port}")
    try:
        render_command(template, port="1", redis_url="redis://x", token="t", name="n", host="h", relay="r")
    except ValueError as e:
        raise UserError(str(e)) from None
    return template


@contextlib.asynccontextmanager
async def started_target(args: argparse.Namespace, spec, console):
    """Start the nodes of `spec` (a ClusterSpec), point args.nodes and args.control_token at them,
    and stop them (by PID) when the block ends, whatever happens in it. A node that does not start
    is the user's one-line error."""
    from .cli import UserError
    from .cluster import Cluster
    from .processes import NodeStartError
    from .redis_provision import RedisServerError, RedisUnavailable

    if args.control_token:
        spec.control_token = args.control_token
    cluster = Cluster(spec)
    try:
        try:
            console.print(f"starting {spec.nodes} node(s) ({spec.relay})")
            await cluster.start()
        except (NodeStartError, RedisUnavailable, RedisServerError, OSError) as e:
            raise UserError(f"the target's nodes did not start: {str(e).splitlines()[0]}") from None
        args.nodes, args.control_token = cluster.urls, spec.control_token
        yield cluster
    finally:
        await cluster.stop()

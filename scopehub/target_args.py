"""The flags that name a target's nodes, shared by the commands that judge one (conform, fuzz):
running nodes by URL, or a node command the command starts itself on a fresh Redis."""

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
    p.add_argument("--redis", metavar="URL", help="with --node-command: use this Redis instead of starting one")
    p.add_argument("--control-token", metavar="T",
                   help="the target's control API token (required with --node; generated with --node-command)")


def node_template(args: argparse.Namespace) -> str | None:
    """Check the target flags; return the node-command template (None: running nodes, or the
    reference's own command). Raises UserError with one line."""
    from .cli import UserError

    if args.node_command is None and not args.control_token:
        raise UserError("--control-token is required with --node")
    if args.node_count < 1:
        raise UserError("--nodes must be at least 1")
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
    from .redis_provision import RedisUnavailable

    if args.control_token:
        spec.control_token = args.control_token
    cluster = Cluster(spec)
    try:
        try:
            console.print(f"starting {spec.nodes} node(s) ({spec.relay})")
            await cluster.start()
        except (NodeStartError, RedisUnavailable, OSError) as e:
            raise UserError(f"the target's nodes did not start: {str(e).splitlines()[0]}") from None
        args.nodes, args.control_token = cluster.urls, spec.control_token
        yield cluster
    finally:
        await cluster.stop()

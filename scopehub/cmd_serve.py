"""`scopehub serve`: run one reference node."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import math
import os
import signal
import sys

from aiohttp import web

from reference.app import build_app, install_guard
from reference.relay import STRATEGIES, RelaySettings, make_broadcaster
from reference.config import DEV_JWT_SECRET, ServerConfig, parse_cidrs, parse_list
from reference.guard import default_max_connections
from reference.state import STATE
from reference.world import FixtureError, parse_world


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:  # nan and inf would break every deadline
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return int(text)


def _cidrs(text: str):
    try:
        return parse_cidrs(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad CIDR list {text!r}: {e}") from None


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _whole(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def add_node_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by every command that starts reference nodes."""
    p.add_argument("--control-token", metavar="T",
                   help="enable the test-only control API (/_control/*) behind this bearer token; "
                        "without it those paths answer 404")
    p.add_argument("--jwt-secret", metavar="S", default=DEV_JWT_SECRET,
                   help="HS256 secret for JWTs (default: a development secret; every node of a "
                        "cluster needs the same one)")
    p.add_argument("--allowed-origins", metavar="LIST", type=parse_list, default=(),
                   help="comma-separated origins allowed to open a WebSocket besides same-origin (HS-5)")
    p.add_argument("--trusted-proxies", metavar="CIDRS", type=_cidrs, default=(),
                   help="comma-separated CIDRs whose X-Forwarded-Host is honoured for the origin check")
    p.add_argument("--metrics-token", metavar="M",
                   help="require 'Authorization: Bearer M' on /health/realtime; without it only "
                        "direct loopback peers may read it (HL-2)")
    p.add_argument("--auth-timeout", metavar="S", type=_positive, default=10.0,
                   help="seconds a token-auth client has to send its auth frame (default 10)")
    p.add_argument("--ping-interval", metavar="S", type=_positive, default=54.0,
                   help="seconds between transport pings (default 54)")
    p.add_argument("--pong-timeout", metavar="S", type=_positive, default=60.0,
                   help="close a connection that has not answered a ping for this long (default 60)")
    p.add_argument("--send-queue", metavar="N", type=_count, default=256,
                   help="frames a connection may have held back while its peer is not reading "
                        "before it is evicted as slow, with close code 1013 (default 256)")
    p.add_argument("--drain", metavar="S", type=_positive, default=3.0,
                   help="on SIGTERM, seconds to wait for clients to answer the 1001 close frame "
                        "before cutting them; the node exits within about this plus 1 s (default 3)")
    p.add_argument("--header-timeout", metavar="S", type=_positive, default=10.0,
                   help="close a connection that has not sent complete request headers within S seconds "
                        "(default 10)")
    p.add_argument("--max-connections", metavar="N", type=_count, default=None,
                   help="open sockets at most; at the cap the oldest socket still sending headers is closed, "
                        "else the newcomer gets 503 (default: the open-file limit minus 128)")
    p.add_argument("--max-subscriptions", metavar="N", type=_whole, default=1000,
                   help="task and chat scopes one connection may hold; one more is answered "
                        "'too many subscriptions' (default 1000; 0: no cap)")


def config_from(args: argparse.Namespace, node_id: str) -> ServerConfig:
    return ServerConfig(
        node_id=node_id,
        control_token=args.control_token,
        jwt_secret=args.jwt_secret,
        allowed_origins=tuple(args.allowed_origins),
        trusted_proxies=tuple(args.trusted_proxies),
        metrics_token=args.metrics_token,
        auth_timeout_s=args.auth_timeout,
        ping_s=args.ping_interval,
        pong_s=args.pong_timeout,
        send_queue=args.send_queue,
        drain_s=args.drain,
        header_timeout_s=args.header_timeout,
        max_connections=args.max_connections or default_max_connections(),
        max_subscriptions=args.max_subscriptions,
    )


def register(sub) -> None:
    p = sub.add_parser("serve", help="run one reference node",
                       description="Run one reference node of the realtime fanout protocol: "
                       "WebSocket at /ws, metrics at /health/realtime, control API at /_control/*.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port to listen on; 0 picks a free one (default 8080)")
    p.add_argument("--node-id", default="node-1", help="this node's name in info and metrics (default node-1)")
    p.add_argument("--fixtures", metavar="FILE",
                   help="JSON file with the fixture world (workspaces, members, PATs, issues, tasks, "
                        "chats), in the format of PUT /_control/fixtures")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    add_node_flags(p)
    add_relay_flags(p)
    p.set_defaults(run=run)


def add_relay_flags(p: argparse.ArgumentParser, *, with_url: bool = True) -> None:
    p.add_argument("--relay", choices=STRATEGIES, default=None,
                   help="how events reach other nodes: memory (one node, no Redis), streams (a Redis "
                        "stream per scope, read through this node's consumer group) or sharded (fixed "
                        "shard streams read by every node); default: streams when a Redis URL is "
                        "given, else memory")
    if with_url:
        p.add_argument("--redis", metavar="URL",
                       help="Redis URL for the streams and sharded relays (default: $REDIS_URL)")
        p.add_argument("--redis-cluster", action="store_true", help="the --redis URL is a seed node of a Redis Cluster")
    p.add_argument("--max-len", metavar="N", type=_count, default=RelaySettings.max_len,
                   help=f"entries kept per stream (default {RelaySettings.max_len})")
    p.add_argument("--max-age", metavar="S", type=_positive, default=RelaySettings.max_age_s,
                   help=f"seconds an entry is kept; idle streams expire after it (default {RelaySettings.max_age_s:g})")
    p.add_argument("--max-bytes", metavar="N", type=_count, default=RelaySettings.max_bytes,
                   help="memory relay: bytes of event frames kept for resume, all scopes together; the "
                        f"oldest go first (default {RelaySettings.max_bytes // 2**20} MiB)")
    p.add_argument("--shards", metavar="N", type=_count, default=RelaySettings.shards,
                   help=f"shard streams of the sharded relay (default {RelaySettings.shards})")
    p.add_argument("--linger", metavar="S", type=float, default=RelaySettings.linger_s,
                   help="streams relay: seconds a node keeps reading a scope after its last local subscriber "
                        f"left, so reconnecting clients do not tear its reader down (default {RelaySettings.linger_s:g})")
    p.add_argument("--heartbeat", metavar="S", type=_positive, default=RelaySettings.heartbeat_s,
                   help=f"seconds between node heartbeats (default {RelaySettings.heartbeat_s:g}); "
                        "the sweeper runs every third heartbeat")


def broadcaster_from(args: argparse.Namespace, node_id: str, redis_url: str | None):
    from .cli import UserError

    strategy = args.relay or ("streams" if redis_url else "memory")
    if strategy != "memory" and not redis_url:
        raise UserError(f"the {strategy} relay needs a Redis: pass --redis URL or set REDIS_URL")
    settings = RelaySettings(url=redis_url or "", max_len=args.max_len, max_age_s=args.max_age, max_bytes=args.max_bytes,
                             shards=args.shards, heartbeat_s=args.heartbeat, sweep_s=3 * args.heartbeat,
                             linger_s=max(0.0, args.linger))
    return make_broadcaster(strategy, node_id, settings)


def load_fixtures(path: str | None):
    from .cli import UserError

    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return parse_world(json.load(f))
    except OSError as e:
        raise UserError(f"cannot read fixtures {path}: {e.strerror}") from None
    except ValueError as e:  # JSONDecodeError and FixtureError
        kind = "bad fixtures" if isinstance(e, FixtureError) else "fixtures are not JSON"
        raise UserError(f"{kind} in {path}: {e}") from None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    world = load_fixtures(args.fixtures)
    redis_url = args.redis or os.environ.get("REDIS_URL") or None
    broadcaster = broadcaster_from(args, args.node_id, redis_url)
    app = build_app(config_from(args, args.node_id), broadcaster=broadcaster, world=world)
    return asyncio.run(serve(app, args.host, args.port))


async def serve(app: web.Application, host: str, port: int) -> int:
    from .cli import UserError

    # NODE-5: on SIGTERM the node stops listening, sends every client a close frame and waits
    # at most drain_s for them (then cuts what is left): it exits within drain_s + about 1 s.
    # keepalive_timeout: an idle keep-alive socket is closed after 75 s (aiohttp's AppRunner would
    # keep it an hour, holding a place under the connection cap)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, keepalive_timeout=75.0,
                           shutdown_timeout=app[STATE].config.drain_s)
    await runner.setup()
    install_guard(runner)
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use") from None
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    bound = runner.addresses[0]
    # One machine-readable line so a parent process can learn the port it got.
    print(f"scopehub: listening on http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    print("scopehub: stopped", file=sys.stderr, flush=True)
    return 0

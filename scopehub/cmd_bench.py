"""`scopehub bench`: throughput and latency of the reference against a measured floor."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys

from rich.console import Console

from .cmd_serve import _count, _positive
from .processes import NodeStartError
from .redis_provision import RedisServerError, RedisUnavailable

DEFAULT_OUT = os.path.join("out", "bench")


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure throughput and latency against a floor",
                       description="Benchmark the reference: one hot scope on one node (memory and streams "
                       "relays) at a rising publish rate, three nodes through Redis (streams vs sharded), "
                       "many scopes with few subscribers; and, in the same run, the floor: a bare aiohttp "
                       "send loop over the same connections and raw Redis XADD/XREAD round trips; and what --durability 1 "
                       "costs a publish (streams nodes on a primary with one replica, side by side with the default). Writes a "
                       "table, bench.json and latency_throughput.png. Without --node it starts its own "
                       "nodes and a redis-server of its own.")
    p.add_argument("--quick", action="store_true", help="small sizes for a CI smoke run (~30 s)")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--node", metavar="URL", action="append", default=[],
                   help="benchmark this running node instead of starting nodes (repeatable; needs --control-token)")
    p.add_argument("--control-token", metavar="T", help="control API token of the --node nodes")
    p.add_argument("--only", action="append", choices=("floor", "hot_scope", "three_nodes", "many_scopes", "durability"),
                   help="run only these parts (repeatable; default: all)")
    p.add_argument("--connections", type=_count, help="subscribers of the hot scope (default 1000, --quick 200)")
    p.add_argument("--workers", type=_count, help="load generator processes (default 2)")
    p.add_argument("--client", choices=("raw", "aiohttp"),
                   help="load generator's WebSocket client: raw (lean, default) or aiohttp's (about twice the CPU per frame)")
    p.add_argument("--step-seconds", type=_positive, help="seconds per publish-rate step (default 5, --quick 1.5)")
    p.add_argument("--rates", metavar="LIST", help="comma-separated events/s of the rising steps, e.g. 50,100,200")
    p.set_defaults(run=run)


def _rates(text: str) -> tuple[float, ...]:
    from .cli import UserError

    try:
        rates = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--rates expects numbers separated by commas, got {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise UserError(f"--rates expects positive numbers, got {text!r}")
    return rates


def run(args: argparse.Namespace) -> int:
    from bench import report, runner, workloads

    from .cli import UserError

    if args.node and not args.control_token:
        raise UserError("--node needs --control-token (the nodes' control API token)")
    if args.control_token and not args.node:
        raise UserError("--control-token is for --node; without --node the bench starts its own nodes")
    sizes = workloads.QUICK if args.quick else workloads.FULL
    changes = {}
    if args.connections:
        changes["connections"] = args.connections
    if args.workers:
        changes["workers"] = args.workers
    if args.client:
        changes["client"] = args.client
    if args.step_seconds:
        changes["step_s"] = args.step_seconds
    if args.rates:
        changes["rates"] = _rates(args.rates)
    sizes = dataclasses.replace(sizes, **changes)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {args.out}: {e.strerror or e}") from None
    if not os.access(args.out, os.W_OK):
        raise UserError(f"cannot write to {args.out}")
    only = tuple(args.only) if args.only else runner.WORKLOADS
    # Wide tables: a pipe or a CI log gets 160 columns instead of rich's 80.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(f"[dim]{runner.CAVEAT.format(cores=os.cpu_count())}[/]")
    try:
        result = asyncio.run(runner.run(sizes, nodes=args.node or None, control_token=args.control_token,
                                        only=only, progress=lambda m: console.print(f"[dim]{m}[/]"),
                                        quick=args.quick))
    except (RedisUnavailable, RedisServerError) as e:
        raise UserError(str(e)) from None
    except NodeStartError as e:
        raise UserError(f"a node did not start: {e}") from None
    except OSError as e:  # a given node that does not answer, a port we could not use
        raise UserError(f"{type(e).__name__}: {e}") from None
    report.render(result, console)
    path = report.write_json(result, args.out)
    png = report.plot(result, args.out)
    console.print(f"wrote {path} and {png}")
    return 0

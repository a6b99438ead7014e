"""`scopehub conform`: point the suite at a target's nodes and get a verdict per requirement.

Exit 0 when every checked requirement passed, 1 when any failed, 2 when the target could not
be tested."""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import sys

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from conformance import cases as case_registry
from conformance.requirements import REQUIREMENTS, SIMULATOR_ONLY, select
from conformance.runner import run_cases, verdicts
from conformance.target import Target, TargetError
from conformance import report


def register(sub) -> None:
    p = sub.add_parser(
        "conform", help="run the conformance suite against a target's nodes",
        description="Check an implementation of the realtime fanout contract (docs/protocol.md) through "
        "its WebSocket endpoint and control API only, and report a verdict per requirement. "
        "Exit 0: every checked requirement passed; 1: some failed; 2: the target could not be tested.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--node", dest="nodes", action="append", metavar="URL",
                       help="base URL of one running node, e.g. http://127.0.0.1:8080 (repeat for every node)")
    where.add_argument("--node-command", metavar="CMD",
                       help="start the target's nodes yourself on a fresh Redis, run, and stop them: a command "
                            "template with {port}, {redis_url}, {token}, {name} (and {host}, {relay}); "
                            "'reference' starts the reference")
    p.add_argument("--nodes", dest="node_count", type=int, default=3, metavar="N",
                   help="with --node-command: how many nodes to start (default 3)")
    p.add_argument("--redis", metavar="URL", help="with --node-command: use this Redis instead of starting one")
    p.add_argument("--control-token", metavar="T",
                   help="the target's control API token (required with --node; generated with --node-command)")
    p.add_argument("--profile", choices=("default", "strict"), default="default",
                   help="strict adds DEL-4 (scope order) and DEL-7 (no stale events)")
    p.add_argument("--only", metavar="IDS", help="check only these requirements or groups, e.g. HS,DEL-1")
    p.add_argument("--exclude", metavar="IDS", help="leave out these requirements or groups")
    p.add_argument("--seed", type=int, help="seed of the exploration (default: random, printed)")
    p.add_argument("--examples", type=int, metavar="N", help="exploration runs (default 12, --quick 3)")
    p.add_argument("--quick", action="store_true", help="short run: no long-timeout cases, a short exploration")
    p.add_argument("--no-explore", action="store_true", help="run the deterministic cases only")
    p.add_argument("--report", metavar="DIR", help="write report.json, junit.xml and report.html here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .cli import UserError

    if args.node_command is None:
        if not args.control_token:
            raise UserError("--control-token is required with --node")
        return _run(args)
    if args.node_count < 1:
        raise UserError("--nodes must be at least 1")
    from .cluster import Cluster, ClusterSpec, render_command
    from .processes import NodeStartError
    from .redis_provision import RedisUnavailable

    template = None if args.node_command == "reference" else args.node_command
    if template is not None:
        if "{port}" not in template:
            raise UserError("--node-command must contain {port}")
        try:
            render_command(template, port="1", redis_url="redis://x", token="t", name="n", host="h", relay="r")
        except ValueError as e:
            raise UserError(str(e)) from None
    spec = ClusterSpec(nodes=args.node_count, node_command=template, redis_url=args.redis)
    if args.control_token:
        spec.control_token = args.control_token
    cluster = Cluster(spec)
    try:
        asyncio.run(cluster.start())
    except (NodeStartError, RedisUnavailable, OSError) as e:
        asyncio.run(cluster.stop())
        raise UserError(f"the target's nodes did not start: {str(e).splitlines()[0]}") from None
    try:
        args.nodes, args.control_token = cluster.urls, spec.control_token
        args.started_with = args.node_command
        return _run(args)
    finally:
        asyncio.run(cluster.stop())


def _run(args: argparse.Namespace) -> int:
    from .cli import UserError

    try:
        selected = select(args.only) or set(REQUIREMENTS)
        selected -= select(args.exclude)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not selected:
        raise UserError("--only/--exclude leave no requirement to check")
    for url in args.nodes:
        if not url.startswith(("http://", "https://")):
            raise UserError(f"--node {url!r} is not an http(s) URL")
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    console = Console(stderr=False)
    try:
        target, results = asyncio.run(_cases(args, selected, console))
    except TargetError as e:
        console.print(f"[bold red]cannot test the target:[/] {e}")
        return 2
    checker_verdicts, exploration = None, {}
    if not args.no_explore:
        from conformance import explore

        try:
            checker_verdicts, exploration = explore.run(
                args.nodes, args.control_token, seed=seed, examples=args.examples or (3 if args.quick else 12),
                profile=args.profile, capabilities=target.capabilities, console=console,
                shrink=not args.quick)  # shrinking a failure can take minutes
        except TargetError as e:
            console.print(f"[bold red]cannot test the target:[/] {e}")
            return 2
    found = verdicts(selected, results, checker_verdicts, target.capabilities, args.profile)
    for rid in SIMULATOR_ONLY:
        if rid in found and found[rid].status == "no evidence":
            found[rid].status, found[rid].reason = "not checked", "needs process and network faults: use scopehub sim"
    command = " ".join(shlex.quote(a) for a in sys.argv) if sys.argv else "scopehub conform"
    replay = _replay_command(args, seed)
    report.print_table(console, found, f"scopehub conform: {target.implementation} ({len(args.nodes)} nodes)")
    console.print(f"seed {seed}; replay: {replay}")
    if args.report:
        meta = {"target": {"urls": args.nodes, "implementation": target.implementation,
                           "node_command": getattr(args, "started_with", None),
                           "capabilities": sorted(target.capabilities), "infos": target.infos},
                "profile": args.profile, "seed": seed, "command": command, "replay": replay,
                "exploration": exploration}
        for path in report.write(args.report, found, meta):
            console.print(f"wrote {path}")
    return 1 if any(v.status == "fail" for v in found.values()) else 0


def _replay_command(args: argparse.Namespace, seed: int) -> str:
    if getattr(args, "started_with", None):
        parts = ["scopehub", "conform", "--node-command", shlex.quote(args.started_with), "--nodes", str(len(args.nodes))]
    else:
        parts = ["scopehub", "conform"] + [f"--node {shlex.quote(u)}" for u in args.nodes]
    parts += ["--control-token", shlex.quote(args.control_token), "--profile", args.profile, "--seed", str(seed)]
    for flag in ("only", "exclude", "examples"):
        if getattr(args, flag):
            parts += [f"--{flag}", shlex.quote(str(getattr(args, flag)))]
    if args.quick:
        parts.append("--quick")
    return " ".join(parts)


async def _cases(args, selected: set[str], console: Console):
    chosen = [c for c in case_registry.load_all() if set(c.reqs) & selected]
    async with aiohttp.ClientSession() as session:
        target = await Target.open(session, args.nodes, args.control_token)
        console.print(f"target: {target.implementation} · nodes: {len(target.urls)} · "
                      f"capabilities: {', '.join(sorted(target.capabilities)) or 'none'}")
        failing = 0
        with Progress(TextColumn("[bold]cases"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=console, transient=True) as progress:
            task = progress.add_task("", total=len(chosen))

            def done(r):
                nonlocal failing
                failing += r.status == "fail"
                progress.update(task, advance=1, description=f"failing {failing} · last {r.case.name}")

            results = await run_cases(target, chosen, quick=args.quick, on_done=done)
    return target, results

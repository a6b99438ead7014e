"""`scopehub conform`: point the suite at a target's nodes and get a verdict per requirement.

Exit 0: every judged requirement held; 1: at least one failed; 2: the suite could not check
(a bad invocation, a target it cannot reach or drive, or checks that ended in error while
nothing failed). One event loop owns the whole run: the nodes it starts, the cases and the
exploration (on a thread of its own, whose loop the state machine drives), so nothing is left
for a closed loop to clean up."""

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
from conformance import report
from conformance.explore import SHRINK_BUDGET_S
from conformance.requirements import CHECKER_IDS, REQUIREMENTS, select
from conformance.runner import run_cases, verdicts
from conformance.target import Target, TargetError
from conformance.verdict import Outcome, exit_code

from .target_args import add_target_flags, node_template, redis_fields, started_target


def register(sub) -> None:
    p = sub.add_parser(
        "conform", help="run the conformance suite against a target's nodes",
        description="Check an implementation of the realtime fanout contract (docs/protocol.md) through "
        "its WebSocket endpoint and control API only, and report a verdict per requirement: pass, fail, "
        "error (a check could not run), not checked, not claimed or no evidence. "
        "Exit 0: every judged requirement passed; 1: some failed; 2: the suite could not check "
        "(bad flags, an unreachable target, or errors while nothing failed).")
    add_target_flags(p, default_nodes=3, node_command_help=(
        "start the target's nodes yourself on a fresh Redis, run, and stop them: a command template with {port}, "
        "{redis_url}, {token}, {name} (and {host}, {relay}); 'reference' starts the reference"))
    p.add_argument("--profile", choices=("default", "strict"), default="default",
                   help="strict adds DEL-4 (scope order) and DEL-7 (no stale events)")
    p.add_argument("--only", metavar="IDS", help="check only these requirements or groups, e.g. HS,DEL-1")
    p.add_argument("--exclude", metavar="IDS", help="leave out these requirements or groups")
    p.add_argument("--seed", type=int, metavar="N", help="seed of the exploration (default: random, printed)")
    p.add_argument("--examples", type=int, metavar="N",
                   help="exploration runs (default 100, --quick 20): each enables a random subset of its rules "
                        "(hypothesis's swarm testing), so fewer runs reach fewer kinds of step")
    p.add_argument("--shrink-budget", type=float, default=SHRINK_BUDGET_S, metavar="SECONDS",
                   help=f"how long the exploration may shrink a failing run (default {SHRINK_BUDGET_S:g}); "
                        "the best failing steps found by then are reported")
    p.add_argument("--quick", action="store_true",
                   help="short run: no long-timeout cases, a short exploration without shrinking")
    p.add_argument("--no-explore", action="store_true", help="run the deterministic cases only")
    p.add_argument("--report", metavar="DIR", help="write report.json, junit.xml and report.html here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .cli import UserError

    template = node_template(args)
    if args.shrink_budget <= 0:
        raise UserError("--shrink-budget must be a positive number of seconds")
    try:
        selected = (select(args.only) or set(REQUIREMENTS)) - select(args.exclude)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not selected:
        raise UserError("--only/--exclude leave no requirement to check")
    console = Console()
    return asyncio.run(_main(args, selected, template, console))


async def _main(args: argparse.Namespace, selected: set[str], template: str | None, console: Console) -> int:
    if args.node_command is None:
        return await _conform(args, selected, console)
    from .cluster import ClusterSpec

    spec = ClusterSpec(nodes=args.node_count, node_command=template, **redis_fields(args))
    async with started_target(args, spec, console) as cluster:
        args.started_with, args.cluster = args.node_command, cluster
        return await _conform(args, selected, console)


async def _conform(args: argparse.Namespace, selected: set[str], console: Console) -> int:
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    replay = _replay_command(args, seed)
    try:
        target, results = await _cases(args, selected, console)
    except TargetError as e:
        console.print(f"[bold red]cannot test the target:[/] {e}")
        return 2
    selected = selected | {why.split(":", 1)[0] for holds, why in target.facts.values() if not holds}
    checked = None
    exploration: dict = {}
    if not args.no_explore and selected & set(CHECKER_IDS):
        checked, exploration = await _explore(args, target, seed, replay, console)
        if checked is None:
            return 2
    found = verdicts(selected, results, checked, target.capabilities, args.profile)
    report.print_table(console, found, f"scopehub conform: {target.implementation} ({len(args.nodes)} nodes)")
    console.print(f"seed {seed}; replay: {replay}")
    if exploration.get("steps"):
        console.print(f"exploration: failing run of {len(exploration['steps'])} steps (in the report with --report)")
    if args.report:
        command = " ".join(shlex.quote(a) for a in sys.argv) if sys.argv else "scopehub conform"
        meta = {"target": {"urls": args.nodes, "implementation": target.implementation,
                           "node_command": getattr(args, "started_with", None),
                           "capabilities": sorted(target.capabilities), "infos": target.infos},
                "profile": args.profile, "seed": seed, "command": command, "replay": replay,
                "exploration": exploration}
        for path in report.write(args.report, found, meta):
            console.print(f"wrote {path}")
    return exit_code(found.values())


async def _explore(args, target: Target, seed: int, replay: str, console: Console):
    """The exploration, on a thread with its own event loop. (None, {}) when the target cannot
    be driven; the checker's verdicts 'not checked' when a probe found what it relies on missing."""
    from conformance import explore

    for fact in ("event_id", "given_event_id"):  # the exploration attributes frames by the ids it gives
        missing = target.facts.get(fact)
        if missing is not None and not missing[0]:
            return explore.not_checked(f"depends on {missing[1]}"), {"skipped": f"depends on {missing[1]}"}
    loop = asyncio.get_running_loop()

    def restart(i: int) -> None:  # called from the exploration's thread; the nodes live on this loop
        asyncio.run_coroutine_threadsafe(target.restart_node(i, reload=False), loop).result(60)
    try:
        return await asyncio.to_thread(
            explore.run, args.nodes, args.control_token, seed=seed, examples=args.examples or (20 if args.quick else 100),
            profile=args.profile, capabilities=target.capabilities, console=console, shrink=not args.quick,
            shrink_budget_s=args.shrink_budget, replay=replay,
            restart=restart if target.restartable else None)  # only nodes the suite started itself
    except TargetError as e:
        console.print(f"[bold red]cannot test the target:[/] {e}")
        return None, {}


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
    # the probes always run: what they find missing is reported at its root, whatever was selected
    chosen = [c for c in case_registry.load_all() if c.first or set(c.reqs) & selected]
    async with aiohttp.ClientSession() as session:
        target = await Target.open(session, args.nodes, args.control_token)
        target.cluster = getattr(args, "cluster", None)  # the nodes it started: a case may restart one
        console.print(f"target: {target.implementation} · nodes: {len(target.urls)} · "
                      f"capabilities: {', '.join(sorted(target.capabilities)) or 'none'}")
        counts = {Outcome.FAIL: 0, Outcome.ERROR: 0}
        with Progress(TextColumn("[bold]cases"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=console, transient=True) as progress:
            task = progress.add_task("", total=len(chosen))

            def done(r):
                if r.status in counts:
                    counts[r.status] += 1
                progress.update(task, advance=1, description=f"failing {counts[Outcome.FAIL]} · errors "
                                f"{counts[Outcome.ERROR]} · last {r.case.name}")

            results = await run_cases(target, chosen, quick=args.quick, on_done=done)
    return target, results

"""`scopehub sim`: run a scenario (or the built-in smoke scenario) and report."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

from scenarios.spec import ScenarioError, builtin, catalogue, load


def register(sub) -> None:
    names = ", ".join(catalogue())
    p = sub.add_parser(
        "sim", help="simulate a cluster under load and faults, and check what it delivered",
        description="Run a scenario: start Redis, a cluster of nodes behind per-node Redis proxies, client "
        "worker processes and a publisher; apply the scenario's faults on their timeline; heal; let the "
        "cluster settle; then judge the recorded history with the conformance checker. Writes history.jsonl, "
        f"summary.json and report.html to --out. Built-in scenarios: {names}. Exit 0 when every check passed.")
    p.add_argument("scenario", nargs="?", default="smoke",
                   help="a scenario file (TOML, see docs/scenarios.md) or a built-in name (default: smoke)")
    p.add_argument("--seed", type=int, help="seed for the population and the workload (default: the scenario's)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: out/sim/<scenario>)")
    p.add_argument("--duration", type=float, metavar="S",
                   help="length of the fault phase in seconds; the fault timeline is scaled to fit")
    p.add_argument("--clients", type=int, metavar="N", help="override the number of clients")
    p.add_argument("--redis", metavar="auto|URL", default=None,
                   help="auto (default): $REDIS_URL, else a redis-server started for the run, else in-process "
                        "fakeredis (labelled as such: not a real Redis); or a Redis URL")
    p.add_argument("--node-command", metavar="CMD",
                   help="start each node with this command instead of the reference: placeholders {port}, "
                        "{redis_url}, {token}, {name}, {relay}")
    p.add_argument("--nodes", type=int, metavar="N", help="override the number of nodes")
    p.set_defaults(run=run)


class _Progress:
    """One status line: phase, elapsed, events, deliveries, clients, faults."""

    def __init__(self, console: Console):
        self.console, self.live = console, Live(Text(""), console=console, refresh_per_second=4, transient=True)
        self.phase_name, self.started = "", time.monotonic()

    def phase(self, name: str) -> None:
        self.phase_name = name
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/] {name}")

    def note(self, text: str) -> None:
        self.live.update(Text(f"{self.phase_name}: {text}"))

    def tick(self, elapsed: float, publisher, stats, faults: list[str]) -> None:
        r = stats.resumes
        self.live.update(Text(
            f"{self.phase_name} · {elapsed:5.1f}s · events {publisher.acked} ok / {publisher.failed} failed · "
            f"deliveries {stats.deliveries} · connected {stats.connected} · resumes {r.get('recovered', 0)}/"
            f"{r.get('attempted', 0)} · faults: {', '.join(faults) or 'none'}"))


def run(args: argparse.Namespace) -> int:
    from scenarios import report  # matplotlib: only when a simulation runs
    from scenarios.sim import SimError, simulate

    from .cli import UserError

    path = args.scenario if os.path.exists(args.scenario) else None
    if path is None:
        if args.scenario.endswith(".toml") or os.sep in args.scenario:
            raise UserError(f"no scenario file {args.scenario}")
        if args.scenario not in catalogue():
            raise UserError(f"unknown scenario {args.scenario!r} (built-in: {', '.join(catalogue())})")
        path = builtin(args.scenario)
    try:
        sc = load(path)
    except ScenarioError as e:
        raise UserError(str(e)) from None
    if args.duration is not None:
        if args.duration < 1:
            raise UserError("--duration must be at least 1 second")
        sc.scaled(args.duration)
    if args.clients is not None:
        if args.clients < 1:
            raise UserError("--clients must be at least 1")
        sc.clients = args.clients
    if args.nodes is not None:
        if args.nodes < 1 or any(f.node is not None and f.node >= args.nodes for f in sc.faults):
            raise UserError(f"--nodes {args.nodes} does not fit the scenario's faults")
        sc.nodes = args.nodes
    if args.node_command:
        if "{port}" not in args.node_command:
            raise UserError("--node-command must contain {port}")
        sc.node_command = args.node_command
    if args.redis not in (None, "auto") and not args.redis.startswith(("redis://", "rediss://")):
        raise UserError("--redis takes auto or a redis:// URL")
    if args.redis not in (None, "auto") and sc.redis_cluster is not None:
        raise UserError(f"this scenario starts a local Redis Cluster ({sc.redis_cluster}, its [redis] cluster): "
                        "--redis cannot be given")
    if args.redis not in (None, "auto") and any(f.kind == "restart_redis" for f in sc.faults):
        raise UserError("this scenario restarts Redis: it needs a Redis the simulator starts (--redis auto)")
    seed = args.seed if args.seed is not None else sc.seed
    out = args.out or os.path.join("out", "sim", sc.name)
    console = Console()
    console.print(f"[bold]scenario {sc.name}[/]: {sc.description}")
    console.print(f"{sc.nodes} nodes ({sc.relay}) · {sc.clients} clients in {sc.processes} processes · "
                  f"{sc.duration_s:g}s · {len(sc.faults)} faults · seed {seed}")
    progress = _Progress(console)
    command = " ".join(shlex.quote(a) for a in ["scopehub", "sim", *sys.argv[2:]])
    try:
        with progress.live:
            result = asyncio.run(simulate(sc, out, seed=seed, redis=args.redis, progress=progress, command=command))
    except SimError as e:
        raise UserError(f"the simulation could not run: {e}") from None
    for name in ("history.jsonl", "summary.json", "report.html"):
        console.print(f"wrote {os.path.join(result.out_dir, name)}")
    report.print_summary(console, meta=result.summary["meta"], summary=result.summary, verdicts=result.verdicts)
    return 0 if result.passed else 1

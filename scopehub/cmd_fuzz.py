"""`scopehub fuzz`: throw generated inbound frames at a target's nodes while a canary subscriber
counts its deliveries; report crashes, answers outside the contract and canary losses.

Exit 0: no finding; 1: findings; 2: the fuzzer could not run (bad flags, a target it cannot
reach or drive). docs/fuzz.md says what is sent and how it is judged."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shlex
import sys
import tempfile

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from conformance.target import TargetError
from conformance.verdict import Outcome

from .target_args import add_target_flags, node_template, redis_fields, started_target

DEFAULT_FRAMES = 5000
DEFAULT_LANES = 16


def register(sub) -> None:
    p = sub.add_parser(
        "fuzz", help="throw generated frames at a target's nodes and judge every answer",
        description="Throw generated inbound WebSocket traffic (valid and malformed JSON, wrong types, odd "
        "strings, binary frames, sizes around 65,536 bytes, pre-auth junk, token attacks, fragmentation and "
        "protocol violations) at a target's nodes over many connections, judge every answer and close against "
        "the contract (docs/protocol.md), and count a canary subscriber's deliveries. "
        "Exit 0: no finding; 1: findings; 2: could not run (bad flags, an unreachable target).")
    add_target_flags(p, default_nodes=2, node_command_help=(
        "start the nodes yourself on a fresh Redis, fuzz, stop them and scan their logs for tracebacks: a command "
        "template with {port}, {redis_url}, {token}, {name} (and {host}, {relay}); 'reference' starts the reference"))
    p.add_argument("--relay", choices=("streams", "sharded", "memory"), default="streams",
                   help="with --node-command: the relay of the nodes, {relay} in a template (default streams)")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, metavar="N",
                   help=f"how many generated frames to send in all (default {DEFAULT_FRAMES:,})")
    p.add_argument("--time", dest="time_s", type=float, metavar="SECONDS",
                   help="stop sending after this many seconds, whatever --frames says")
    p.add_argument("--seed", type=int, metavar="N", help="seed of the generation (default: random, printed)")
    p.add_argument("--connections", type=int, default=DEFAULT_LANES, metavar="N",
                   help=f"connections open side by side, spread over the nodes (default {DEFAULT_LANES}); "
                        "part of what a seed replays")
    p.add_argument("--canary-rate", type=float, default=40.0, metavar="PER_S",
                   help="events the canary's publisher sends per second (default 40)")
    p.add_argument("--out", metavar="FILE", help="write the findings and figures as JSON here")
    p.add_argument("--log-dir", metavar="DIR", help="with --node-command: keep the nodes' logs here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .cli import UserError

    template = node_template(args)
    for flag, value, ok in (("--frames", args.frames, args.frames >= 1),
                            ("--connections", args.connections, args.connections >= 1),
                            ("--canary-rate", args.canary_rate, math.isfinite(args.canary_rate) and args.canary_rate > 0),
                            ("--time", args.time_s, args.time_s is None or (math.isfinite(args.time_s) and args.time_s > 0))):
        if not ok:
            raise UserError(f"{flag} {value} is out of range (a positive number)")
    args.seed = args.seed if args.seed is not None else random.randrange(2**31)
    return asyncio.run(_main(args, template, Console()))


async def _main(args: argparse.Namespace, template: str | None, console: Console) -> int:
    if args.node_command is None:
        return await _fuzz(args, console, None)
    from conformance.fuzz import logs
    from .cluster import ClusterSpec

    own_logs = None if args.log_dir else tempfile.TemporaryDirectory(prefix="scopehub-fuzz-")
    log_dir = args.log_dir or own_logs.name
    spec = ClusterSpec(nodes=args.node_count, relay=args.relay, node_command=template, **redis_fields(args),
                       log_dir=log_dir)
    try:
        async with started_target(args, spec, console) as cluster:
            return await _fuzz(args, console, lambda: logs.scan(log_dir), cluster)
    finally:
        if own_logs is not None:
            own_logs.cleanup()


async def _fuzz(args: argparse.Namespace, console: Console, scan_logs, cluster=None) -> int:
    from conformance.fuzz.runner import Config, fuzz

    cfg = Config(args.nodes, args.control_token, args.seed, frames=args.frames, time_s=args.time_s,
                 lanes=args.connections, canary_rate=args.canary_rate)
    replay = _replay(args)
    console.print(f"seed {args.seed} · {args.frames:,} frames"
                  + (f" or {args.time_s:g} s" if args.time_s else "") + f" · {args.connections} connections · "
                  f"{len(args.nodes)} node(s)")
    with Progress(TextColumn("[bold]frames"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=True) as progress:
        task = progress.add_task("", total=args.frames)

        def show(s) -> None:
            progress.update(task, completed=s.frames, description=f"connections {s.connections} · findings "
                            f"{s.findings} · canary {s.canary_received}/{s.canary_acked}")
        try:
            result = await fuzz(cfg, on_progress=show)
        except TargetError as e:
            console.print(f"[bold red]cannot fuzz the target:[/] {escape(str(e))}")
            return 2
        except RuntimeError as e:  # the canary could not subscribe: nothing to count deliveries with
            console.print(f"[bold red]cannot fuzz the target:[/] {escape(str(e))}")
            return 2
    if scan_logs is not None:
        await cluster.stop()  # every line the nodes wrote is in their logs now
        for f in scan_logs():
            result.findings.add(f)
    _summary(console, result, args, replay)
    if args.out:
        _write(args.out, result, args, replay)
        console.print(f"wrote {args.out}")
    return 1 if result.findings.total else 0


def _replay(args: argparse.Namespace) -> str:
    if args.node_command is not None:
        parts = ["scopehub", "fuzz", "--node-command", shlex.quote(args.node_command), "--nodes",
                 str(args.node_count), "--relay", args.relay]
    else:
        parts = ["scopehub", "fuzz"] + [f"--node {shlex.quote(u)}" for u in args.nodes] + [
            "--control-token", shlex.quote(args.control_token)]
    parts += ["--frames", str(args.frames)] + (["--time", f"{args.time_s:g}"] if args.time_s else [])
    parts += ["--connections", str(args.connections), "--seed", str(args.seed)]
    return " ".join(parts)


def _verdicts(result) -> dict[str, str]:
    """The project's outcome words per requirement the run exercised or found broken."""
    out = {r: str(Outcome.PASS) for r in result.exercised}
    out.update({r: str(Outcome.FAIL) for r in result.findings.reqs})
    return dict(sorted(out.items()))


def _summary(console: Console, result, args, replay: str) -> None:
    rate = result.frames / result.elapsed if result.elapsed else 0.0
    console.print(f"[bold]scopehub fuzz[/]: {escape(result.implementation)} · {result.frames:,} frames on "
                  f"{result.connections:,} connections in {result.elapsed:.1f} s ({rate:,.0f} frames/s) · canary "
                  f"{result.canary_received:,} received of {result.canary_acked:,} acknowledged"
                  + (f" ({result.canary_refused} publishes refused)" if result.canary_refused else ""))
    findings = result.findings
    if not findings.total:
        console.print("[bold green]no findings[/]: every answer and close was one the contract allows, "
                      "and the canary got every event once")
    else:
        table = Table(title=f"{findings.total} findings", show_lines=True)
        table.add_column("kind", no_wrap=True)
        table.add_column("count", justify="right")
        table.add_column("requirements")
        table.add_column("example", overflow="fold")
        for kind, n in findings.counts.most_common():
            ex = findings.examples[kind][0]
            lines = [ex.what] + [f"→ {s}" for s in ex.sent[:4]] + [f"← {g}" for g in ex.got[:4]]
            if ex.culprits is not None:
                lines.append("alone, " + ("these reproduce it: " + " | ".join(ex.culprits) if ex.culprits
                                          else "no single step reproduces it"))
            table.add_row(f"[bold red]{escape(kind)}[/]", str(n), ", ".join(ex.reqs) or "-",
                          escape("\n".join(_abridge(x, 400) for x in lines)))
        console.print(table)
    verdicts = _verdicts(result)
    failed = [r for r, v in verdicts.items() if v == str(Outcome.FAIL)]
    console.print(f"requirements exercised: {len(verdicts)}" + (f"; failing: {', '.join(failed)}" if failed else ""))
    console.print(f"seed {args.seed}; replay: {replay}")


def _abridge(text: str, limit: int) -> str:
    """Printable: abridged, lone surrogates (which no terminal encoding takes) escaped."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "…"


def _write(path: str, result, args, replay: str) -> None:
    doc = {
        "seed": args.seed, "replay": replay,
        "command": " ".join(shlex.quote(a) for a in sys.argv) if sys.argv else "scopehub fuzz",
        "target": {"urls": args.nodes, "implementation": result.implementation,
                   "node_command": args.node_command, "relay": args.relay if args.node_command else None},
        "frames": result.frames, "connections": result.connections, "elapsed_s": round(result.elapsed, 3),
        "frames_per_s": round(result.frames / result.elapsed, 1) if result.elapsed else None,
        "canary": {"acknowledged": result.canary_acked, "received": result.canary_received,
                   "refused": result.canary_refused},
        "exercised": dict(sorted(result.exercised.items())), "verdicts": _verdicts(result),
        "findings": {"total": result.findings.total, "counts": dict(result.findings.counts.most_common()),
                     "examples": {k: [f.to_dict() for f in v] for k, v in result.findings.examples.items()}},
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, ensure_ascii=True)

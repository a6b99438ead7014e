"""Runs the selected cases against a target: the probes first, then the others side by side
(each with its own fixture world), then the cases that change node-wide state, one at a time.
Every case result carries one Finding per requirement it judged; `verdicts` turns them, with
the checker's, into one Verdict per requirement (conformance/verdict.py decides)."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .cases import Case, Failed, NotChecked, SetupError
from .context import CaseContext
from .requirements import REQUIREMENTS, order
from .target import Target
from .verdict import Finding, Outcome, Verdict, decide
from .world import TestWorld

CASE_TIMEOUT = 120.0


@dataclass
class CaseResult:
    case: Case
    status: Outcome
    reason: str = ""
    expected: Any = None
    received: Any = None
    duration_s: float = 0.0
    findings: dict[str, Finding] = field(default_factory=dict)  # requirement -> what this case found


def merge_fixtures(worlds: list[TestWorld]) -> dict:
    """One fixtures document holding every case's world, so cases can run side by side."""
    merged: dict = {"workspaces": {}, "disabled_users": [], "pats": {}, "issues": {}, "tasks": {}, "chats": {}}
    for w in worlds:
        f = w.fixtures()
        for key in ("workspaces", "pats", "issues", "tasks", "chats"):
            merged[key].update(f[key])
        merged["disabled_users"].extend(f["disabled_users"])
    return merged


def _one_line(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {tb[-1].name}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {e}{where}".replace("\n", " ")


def judge(c: Case, ctx: CaseContext, ended: BaseException | None) -> CaseResult:
    """The case's result and its finding per requirement, from how it ended (None: it returned)
    and the soft failures it recorded on the way."""
    primary = c.reqs[0]
    findings: dict[str, Finding] = {}
    for f in ctx.failures:  # ctx.check: judged, the case went on
        findings.setdefault(f.req or primary, Finding(Outcome.FAIL, f.reason, f.expected, f.received))
    if isinstance(ended, Failed):
        findings.setdefault(ended.req or primary, Finding(Outcome.FAIL, ended.reason, ended.expected, ended.received))
    elif isinstance(ended, SetupError) and ended.req:
        findings.setdefault(ended.req, Finding(Outcome.FAIL, f"{ended} (expected {ended.expected})"
                                               if ended.expected else str(ended), ended.expected, ended.got))
    if ended is None:
        rest = Finding(Outcome.PASS)
    elif isinstance(ended, Failed):
        rest = Finding(Outcome.NOT_CHECKED, f"the case stopped at a failure of {ended.req or primary}")
    elif isinstance(ended, NotChecked):
        rest = Finding(Outcome.NOT_CHECKED, str(ended))
    elif isinstance(ended, SetupError):
        rest = Finding(Outcome.ERROR, str(ended), ended.expected, ended.got)
    elif isinstance(ended, asyncio.TimeoutError):
        rest = Finding(Outcome.ERROR, f"the case did not finish within {CASE_TIMEOUT:g} s")
    else:  # the target answered in a way the case did not foresee
        rest = Finding(Outcome.ERROR, _one_line(ended))
    for rid in c.reqs:
        findings.setdefault(rid, rest)
    for rid, what in ctx.skipped:
        if rid in findings and findings[rid].outcome == Outcome.PASS:
            findings[rid] = Finding(Outcome.PASS, skipped=[*findings[rid].skipped, what])
    failed = [f for f in findings.values() if f.outcome == Outcome.FAIL]
    head = failed[0] if failed else rest
    status = Outcome.FAIL if failed else rest.outcome
    return CaseResult(c, status, head.reason, head.expected, head.received, findings=findings)


async def run_case(c: Case, target: Target, world: TestWorld, quick: bool) -> CaseResult:
    ctx = CaseContext(target, world, quick=quick)
    ctx.primary = c.reqs[0]
    started = time.monotonic()
    ended: BaseException | None = None
    try:
        await asyncio.wait_for(ctx.prepare(), CASE_TIMEOUT)
        await asyncio.wait_for(c.fn(ctx), CASE_TIMEOUT)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - every way a case ends is judged below
        ended = e
    finally:
        await ctx.close_all()
    result = judge(c, ctx, ended)
    result.duration_s = time.monotonic() - started
    return result


def _skip(c: Case, target: Target, quick: bool) -> CaseResult | None:
    """A case that does not run against this target, with why."""
    if c.capability and c.capability not in target.capabilities:
        outcome, why = Outcome.NOT_CLAIMED, f"the target does not claim {c.capability}"
    elif c.min_nodes > len(target.urls):
        outcome, why = Outcome.NOT_CHECKED, f"needs {c.min_nodes} nodes, got {len(target.urls)}"
    elif quick and c.slow:
        outcome, why = Outcome.NOT_CHECKED, "left out by --quick (waits on long timeouts)"
    elif c.restarts and not target.restartable:
        outcome, why = Outcome.NOT_CHECKED, "restarts a node: only when the suite starts the nodes (--node-command)"
    else:
        return None
    return CaseResult(c, outcome, why, findings={rid: Finding(outcome, why) for rid in c.reqs})


async def run_cases(target: Target, cases: list[Case], *, quick: bool, concurrency: int = 6,
                    on_done: Callable[[CaseResult], None] | None = None) -> list[CaseResult]:
    results: list[CaseResult] = []
    runnable: list[Case] = []
    for c in cases:
        skipped = _skip(c, target, quick)
        if skipped is None:
            runnable.append(c)
        else:
            results.append(skipped)
            if on_done:
                on_done(skipped)
    worlds = {c.name: TestWorld.sized(c.tasks) for c in runnable}
    await target.load(merge_fixtures(list(worlds.values())))
    gate = asyncio.Semaphore(concurrency)

    async def one(c: Case) -> None:
        async with gate:
            r = await run_case(c, target, worlds[c.name], quick)
        results.append(r)
        if on_done:
            on_done(r)

    # Probes establish what later cases depend on; cases that change node-wide state run alone, last.
    for c in runnable:
        if c.first:
            await one(c)
    await asyncio.gather(*(one(c) for c in runnable if not c.exclusive and not c.first))
    for c in runnable:
        if c.exclusive and not c.first:
            await one(c)
    return results


def verdicts(selected: set[str], results: list[CaseResult], checked: dict[str, Verdict] | None,
             claimed: set[str], profile: str) -> dict[str, Verdict]:
    """One verdict per selected requirement, in the registry's order."""
    checked = checked or {}
    return {rid: decide(rid, claimed=claimed, profile=profile, case_results=results, checked=checked.get(rid),
                        elsewhere=REQUIREMENTS[rid].elsewhere)
            for rid in sorted(selected, key=order)}

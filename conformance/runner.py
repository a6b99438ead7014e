"""Runs the selected cases against a target and turns case results and checker verdicts
into one verdict per requirement."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .cases import Case, Failed, NotChecked
from .context import CaseContext
from .requirements import REQUIREMENTS
from .target import Target
from .world import TestWorld

CASE_TIMEOUT = 120.0


@dataclass
class CaseResult:
    case: Case
    status: str  # pass | fail | not claimed | not checked
    reason: str = ""
    expected: Any = None
    received: Any = None
    duration_s: float = 0.0


@dataclass
class RequirementVerdict:
    id: str
    title: str
    status: str  # pass | fail | not claimed | not checked | no evidence
    reason: str = ""
    cases: list[CaseResult] = field(default_factory=list)
    anomalies: list[Any] = field(default_factory=list)  # from the history checker


def merge_fixtures(worlds: list[TestWorld]) -> dict:
    """One fixtures document holding every case's world, so cases can run side by side."""
    merged: dict = {"workspaces": {}, "disabled_users": [], "pats": {}, "issues": {}, "tasks": {}, "chats": {}}
    for w in worlds:
        f = w.fixtures()
        for key in ("workspaces", "pats", "issues", "tasks", "chats"):
            merged[key].update(f[key])
        merged["disabled_users"].extend(f["disabled_users"])
    return merged


async def run_case(c: Case, target: Target, world: TestWorld, quick: bool) -> CaseResult:
    ctx = CaseContext(target, world, quick=quick)
    started = time.monotonic()
    try:
        await asyncio.wait_for(ctx.prepare(), CASE_TIMEOUT)
        await asyncio.wait_for(c.fn(ctx), CASE_TIMEOUT)
        result = CaseResult(c, "pass")
    except Failed as e:
        result = CaseResult(c, "fail", e.reason, e.expected, e.received)
    except NotChecked as e:
        result = CaseResult(c, "not checked", str(e))
    except asyncio.TimeoutError:
        result = CaseResult(c, "fail", f"the case did not finish within {CASE_TIMEOUT:g} s")
    except Exception as e:  # the target misbehaved in a way the case did not foresee
        tb = traceback.extract_tb(e.__traceback__)[-1]
        result = CaseResult(c, "fail", f"{type(e).__name__}: {e} (at {tb.name}:{tb.lineno})".replace("\n", " "))
    finally:
        await ctx.close_all()
    result.duration_s = time.monotonic() - started
    return result


async def run_cases(target: Target, cases: list[Case], *, quick: bool, concurrency: int = 6,
                    on_done: Callable[[CaseResult], None] | None = None) -> list[CaseResult]:
    results: list[CaseResult] = []
    runnable: list[Case] = []
    for c in cases:
        if c.capability and c.capability not in target.capabilities:
            results.append(CaseResult(c, "not claimed", f"the target does not claim {c.capability}"))
        elif c.min_nodes > len(target.urls):
            results.append(CaseResult(c, "not checked", f"needs {c.min_nodes} nodes, got {len(target.urls)}"))
        elif quick and c.slow:
            results.append(CaseResult(c, "not checked", "left out by --quick (waits on long timeouts)"))
        else:
            runnable.append(c)
    for r in results:
        if on_done:
            on_done(r)
    worlds = {c.name: TestWorld() for c in runnable}
    await target.load(merge_fixtures(list(worlds.values())))
    gate = asyncio.Semaphore(concurrency)

    async def one(c: Case) -> None:
        async with gate:
            r = await run_case(c, target, worlds[c.name], quick)
        results.append(r)
        if on_done:
            on_done(r)

    # Cases that change node-wide state run alone, after the others.
    await asyncio.gather(*(one(c) for c in runnable if not c.exclusive))
    for c in runnable:
        if c.exclusive:
            await one(c)
    return results


def verdicts(selected: set[str], results: list[CaseResult], checker_verdicts: dict | None,
             claimed: set[str], profile: str) -> dict[str, RequirementVerdict]:
    """Per requirement: fail if any case or the checker failed it; pass if something checked
    it and nothing failed; otherwise say why it was not judged."""
    out: dict[str, RequirementVerdict] = {}
    for rid in sorted(selected, key=_order):
        req = REQUIREMENTS[rid]
        v = RequirementVerdict(rid, req.title, "no evidence", "no case or exploration exercised it")
        v.cases = [r for r in results if rid in r.case.reqs]
        if req.capability and req.capability not in claimed:
            v.status, v.reason = "not claimed", f"the target does not claim {req.capability}"
        elif req.profile == "strict" and profile != "strict":
            v.status, v.reason = "not checked", "strict profile only (--profile strict)"
        else:
            checked = checker_verdicts.get(rid) if checker_verdicts else None
            failing = [r for r in v.cases if r.status == "fail"]
            passing = [r for r in v.cases if r.status == "pass"]
            if checked is not None:
                v.anomalies = list(getattr(checked, "witnesses", []) or [])
            if failing:
                v.status, v.reason = "fail", failing[0].reason
            elif checked is not None and checked.status == "fail":
                v.status, v.reason = "fail", checked.reason
            elif passing or (checked is not None and checked.status == "pass"):
                v.status, v.reason = "pass", ""
            elif v.cases:
                v.status, v.reason = v.cases[0].status, v.cases[0].reason
        out[rid] = v
    return out


def _order(rid: str) -> tuple[int, int]:
    ids = list(REQUIREMENTS)
    return ids.index(rid), 0

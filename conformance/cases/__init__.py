"""Deterministic conformance cases, one or more per requirement (h2spec / Autobahn style).

A case is an async function taking a CaseContext. It judges the requirements it is registered
with, and each of its checks names the one requirement it enforces (`ctx.expect(..., req=)`,
the case's first ID by default): a loss is DEL-1's, a duplicate DEL-2's, an inversion DEL-3's.
`cites` quotes, per requirement, the words of docs/protocol.md the case enforces (tests check
that every quote is in that requirement's sentence). A case ends in one of four ways:

  pass         it returned: every requirement it judges held;
  fail         a check raised `Failed` (or `ctx.check` recorded one and the case went on);
  error        it could not run: a set-up step broke (`SetupError` names the step and what came
               back) or the target answered in a way the case could not use. An error is never
               the failure of the case's requirements; where the set-up step itself broke a
               rule of the contract, `SetupError.req` names that one requirement, which fails;
  not checked  `NotChecked`: the case cannot judge this target in this run (a timeout longer
               than --quick allows, a secret the suite lacks, a requirement it depends on that
               already failed).

Register a case with `@case`; modules in this package register theirs on import (`load_all`)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


class Failed(AssertionError):
    """A check failed: `req` is the requirement it enforces (None: the case's first)."""

    def __init__(self, reason: str, expected: Any = None, received: Any = None, req: str | None = None):
        super().__init__(reason)
        self.reason, self.expected, self.received, self.req = reason, expected, received, req


class NotChecked(Exception):
    """The case cannot judge this target in this run."""


class SetupError(Exception):
    """A step the case needs, not what it judges, did not work: the case ends `error`.
    `step` says which (e.g. "connect alice to workspace A on node 1"), `got` what came back.
    `req` names a requirement the step's answer itself violates (e.g. HS-3 when a valid token
    is refused), which then fails on its own."""

    def __init__(self, step: str, got: Any = None, req: str | None = None, expected: Any = None):
        super().__init__(f"could not {step}: {got}" if got is not None else f"could not {step}")
        self.step, self.got, self.req, self.expected = step, got, req, expected


@dataclass(frozen=True)
class Case:
    name: str
    reqs: tuple[str, ...]
    title: str
    fn: Callable[[Any], Awaitable[None]]
    cites: dict[str, str] = field(default_factory=dict)  # requirement -> the words it enforces
    capability: str | None = None  # `not claimed` without it
    exclusive: bool = False  # changes node-wide state (faults, counts at rest): runs alone
    slow: bool = False  # waits on long timeouts: left out with --quick
    min_nodes: int = 1
    first: bool = False  # a probe: runs before every other case (it establishes facts others need)
    restarts: bool = False  # stops and starts a node: only where the suite started the nodes itself
    tasks: int = 0  # further issue tasks its world needs (many scopes)
    catches: str = ""  # the class of defect, seen in real implementations, it is built to catch

    @property
    def module(self) -> str:
        return self.fn.__module__.rsplit(".", 1)[-1]


REGISTRY: list[Case] = []


def case(*reqs: str, title: str, cites: dict[str, str] | str | None = None, capability: str | None = None,
         exclusive: bool = False, slow: bool = False, min_nodes: int = 1, first: bool = False,
         restarts: bool = False, tasks: int = 0, catches: str = ""):
    """Register a case judging `reqs`. `cites` is the quoted words of docs/protocol.md it
    enforces: a dict per requirement, or one string for the first requirement."""
    if isinstance(cites, str):
        cites = {reqs[0]: cites}

    def register(fn):
        REGISTRY.append(Case(fn.__name__, reqs, title, fn, dict(cites or {}), capability, exclusive, slow,
                             min_nodes, first, restarts, tasks, catches))
        return fn
    return register


def load_all() -> list[Case]:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    return list(REGISTRY)


def by_requirement() -> dict[str, list[Case]]:
    """The registry's cases per requirement they judge."""
    out: dict[str, list[Case]] = {}
    for c in load_all():
        for rid in c.reqs:
            out.setdefault(rid, []).append(c)
    return out

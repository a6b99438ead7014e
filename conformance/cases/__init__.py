"""Deterministic conformance cases, one or more per requirement (h2spec / Autobahn style).

A case is an async function taking a CaseContext; it passes by returning and fails by
raising `Failed` with what it expected and what it received. Register it with `@case`.
Modules in this package register their cases on import (see `load_all`)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


class Failed(AssertionError):
    def __init__(self, reason: str, expected: Any = None, received: Any = None):
        super().__init__(reason)
        self.reason, self.expected, self.received = reason, expected, received


class NotChecked(Exception):
    """The case cannot judge this target in this run (e.g. a timeout longer than --quick allows)."""


@dataclass(frozen=True)
class Case:
    name: str
    reqs: tuple[str, ...]
    title: str
    fn: Callable[[Any], Awaitable[None]]
    capability: str | None = None  # skipped as `not claimed` without it
    exclusive: bool = False  # changes node-wide state (faults, counts at rest): runs alone
    slow: bool = False  # waits on long timeouts: left out with --quick
    min_nodes: int = 1


REGISTRY: list[Case] = []


def case(*reqs: str, title: str, capability: str | None = None, exclusive: bool = False,
         slow: bool = False, min_nodes: int = 1):
    def register(fn):
        REGISTRY.append(Case(fn.__name__, reqs, title, fn, capability, exclusive, slow, min_nodes))
        return fn
    return register


def load_all() -> list[Case]:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    return list(REGISTRY)

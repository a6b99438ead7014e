"""A pytest plugin: the conformance cases are the project's tests.

Every case test is marked `suite_case(target, case)`. After collection the plugin knows, per
target, which cases the session wants; the first test of a target's group starts every target of
the group (two side by side), runs exactly the cases each is wanted for (probes first, as
`scopehub conform` does) on the session's own redis-server and stops them; every test then
judges its own case's result. So `pytest -k del1_` runs only the DEL-1 cases, and a full run
starts each target once."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

from conformance import cases as registry
from conformance.runner import CaseResult

from targets import TargetSpec, run_suites


RUN_TIMEOUT_S = 600


class SuiteRuns:
    def __init__(self) -> None:
        self.wanted: dict[str, set[str]] = defaultdict(set)
        self.specs: dict[str, TargetSpec] = {}
        self.done: dict[str, dict[str, CaseResult]] = {}
        self.facts: dict[str, dict] = {}
        self.redis = None

    @pytest.hookimpl(trylast=True)  # after the tiers have deselected what this session leaves out
    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            m = item.get_closest_marker("suite_case")
            if m is not None:
                spec, case = m.args
                self.specs[spec.name] = spec
                self.wanted[spec.name].add(case)
                # the first case test of a target runs the whole target (every case it wants)
                item.add_marker(pytest.mark.timeout(RUN_TIMEOUT_S))

    def pytest_sessionfinish(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def result(self, spec: TargetSpec, case_name: str) -> CaseResult:
        if spec.name not in self.done:
            self._run([s for name, s in self.specs.items() if name not in self.done and s.group == spec.group])
        return self.done[spec.name][case_name]

    def _run(self, specs: list[TargetSpec]) -> None:
        """Run every target of a group the session wants, two side by side: a run mostly waits on
        its target's answers, and the first test of each would otherwise pay for one at a time."""
        from scopehub.redis_provision import RedisServer

        if self.redis is None:
            self.redis = RedisServer()
            self.redis.start()
        cases = registry.load_all()
        runs = [(spec, [c for c in cases if c.name in self.wanted[spec.name] or c.first]) for spec in specs]
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(asyncio.run, run_suites(runs, self.redis.url, parallel=2)).result()
        for name, (target, results) in done.items():
            self.facts[name] = dict(target.facts)
            self.done[name] = {r.case.name: r for r in results}


PLUGIN = SuiteRuns()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "suite_case(target, case): a conformance case run against a test target")
    config.pluginmanager.register(PLUGIN, "scopehub-suite-runs")


@pytest.fixture(scope="session")
def suite() -> SuiteRuns:
    return PLUGIN


def explain(r: CaseResult) -> str:
    """A failing case result as a person reads it: outcome, reason, and per requirement what it found."""
    lines = [f"{r.case.name} ({', '.join(r.case.reqs)}): {r.status}: {r.reason}"]
    for rid, f in r.findings.items():
        lines.append(f"  {rid}: {f.outcome} {f.reason}")
        if f.outcome in ("fail", "error"):
            lines.append(f"    expected: {f.expected!r}\n    received: {f.received!r}")
    return "\n".join(lines)

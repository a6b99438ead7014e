"""A pytest plugin: the conformance cases are the project's tests.

Every case test is marked `suite_case(target, case)`. After collection the plugin knows, per
target, which cases the session wants; the first test of a target starts it once, runs exactly
those cases side by side (probes first, as `scopehub conform` does) on the session's own
redis-server, stops it, and every test of that target then judges its own case's result. So
`pytest -k del1_` runs only the DEL-1 cases, and a full run starts each target once."""

from __future__ import annotations

from collections import defaultdict

import pytest

from conformance import cases as registry
from conformance.runner import CaseResult

from targets import TargetSpec, run_suite_blocking


RUN_TIMEOUT_S = 600


class SuiteRuns:
    def __init__(self) -> None:
        self.wanted: dict[str, set[str]] = defaultdict(set)
        self.done: dict[str, dict[str, CaseResult]] = {}
        self.facts: dict[str, dict] = {}
        self.redis = None

    @pytest.hookimpl(trylast=True)  # after the tiers have deselected what this session leaves out
    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            m = item.get_closest_marker("suite_case")
            if m is not None:
                self.wanted[m.args[0]].add(m.args[1])
                # the first case test of a target runs the whole target (every case it wants)
                item.add_marker(pytest.mark.timeout(RUN_TIMEOUT_S))

    def pytest_sessionfinish(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def result(self, spec: TargetSpec, case_name: str) -> CaseResult:
        if spec.name not in self.done:
            self.done[spec.name] = self._run(spec)
        return self.done[spec.name][case_name]

    def _run(self, spec: TargetSpec) -> dict[str, CaseResult]:
        from scopehub.redis_provision import RedisServer

        if self.redis is None:
            self.redis = RedisServer()
            self.redis.start()
        wanted = self.wanted[spec.name]
        chosen = [c for c in registry.load_all() if c.name in wanted or c.first]
        target, results = run_suite_blocking(spec, chosen, self.redis.url)
        self.facts[spec.name] = dict(target.facts)
        return {r.case.name: r for r in results}


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

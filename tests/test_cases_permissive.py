"""No false verdicts: the permissive twin (tests/permissive_node.py) uses the liberties the
contract grants, and every case must pass it or say it could not check (`not checked`, `not
claimed`), never `fail` and never `error`.

Every case runs against the liberties that combine, on three streams nodes and on one memory
node with the capabilities claimed differently; with --slow, against each liberty alone too."""

from __future__ import annotations

import pytest

from conformance import cases as registry
from conformance.verdict import Outcome

from permissive_node import LIBERTIES
from suite_runs import explain
from targets import FAST, TargetSpec

pytestmark = pytest.mark.heavy  # the suite against permissive twin clusters: left out by --quick

CASES = registry.load_all()
ALLOWED = "https://app.example.com"
THREE = f"{FAST} --allowed-origins {ALLOWED} --max-len 400"
ONE = f"{FAST} --max-len 400"

TWINS = {t.name: t for t in [
    # every liberty that combines with the others, where cross-node cases run
    TargetSpec("twin-3", 3, THREE, group="twin", script="permissive_node.py --liberty early-events,extra-fields,"
               "close-drop,reorder-scopes,pos-format,global-no-id,health-multica,age-retention,unbounded-queue,"
               "uuid-normalised,blank-forwarding-absent,surrogate-replaced,parser-limits,header-408,revoke-lazily,sorted-events"),
    # slow answers, the other close and a target claiming nothing, without resume
    TargetSpec("twin-1", 1, ONE, relay="memory", group="twin", concurrency=12,  # slow answers: more cases wait
               script="permissive_node.py --liberty no-resume,claims-none,close-4401,early-events,extra-fields,"
                      "slow-answers"),
]}
ALONE = {name: TargetSpec(f"twin-{name}", 3, THREE, group="twin-alone", script=f"permissive_node.py --liberty {name}")
         for name in LIBERTIES}


def _params(targets: dict[str, TargetSpec], marks=()):
    for name, spec in targets.items():
        for c in CASES:
            yield pytest.param(spec, c, id=f"{spec.name}::{c.name}",
                               marks=[pytest.mark.req(*c.reqs), pytest.mark.suite_case(spec, c.name), *marks])


def _judge(result) -> None:
    assert result.status not in (Outcome.FAIL, Outcome.ERROR), explain(result)


@pytest.mark.parametrize("spec,case", list(_params(TWINS)))
def test_the_suite_finds_nothing_wrong_with_the_liberties_the_contract_grants(spec, case, suite):
    _judge(suite.result(spec, case.name))


def pytest_generate_tests(metafunc):
    # each liberty alone: 13 more suite runs, so only with --slow (the combined twins run always)
    if metafunc.function is test_each_liberty_alone:
        metafunc.parametrize("spec,case", list(_params(ALONE)) if metafunc.config.getoption("--slow") else [])


@pytest.mark.slow
def test_each_liberty_alone(spec, case, suite):
    _judge(suite.result(spec, case.name))


def test_the_combined_twins_use_every_liberty():
    used = {n for spec in TWINS.values() for n in spec.script.split("--liberty ")[1].split(",")}
    assert used == set(LIBERTIES), sorted(set(LIBERTIES) - used)

"""The simulator against nodes started from a command template (any implementation): the
reference started that way gets the built-in path's verdicts, and a broken node command is
caught by the scenario that targets it, with the right requirement ID."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from scenarios.sim import simulate
from scenarios.spec import builtin, load
from scopehub.cluster import REFERENCE_COMMAND

pytestmark = pytest.mark.heavy  # node processes behind --node-command and scenario runs: left out by --quick

BROKEN = os.path.join(os.path.dirname(__file__), "broken_node.py")


class _Quiet:
    def phase(self, name): pass
    def note(self, text): pass
    def tick(self, *a): pass


def _scenario(name: str, node_command: str | None, **over):
    sc = load(builtin(name))
    sc.clients, sc.processes, sc.settle_s = 40, 1, 12.0
    sc.scaled(over.pop("duration", 4.5))
    sc.node_command = node_command
    for k, v in over.items():
        setattr(sc, k, v)
    return sc


@pytest.mark.req("DEL-1", "REP-3", "NODE-1", "NODE-2")
async def test_reference_through_the_node_command_gets_the_same_verdicts(tmp_path):
    template = REFERENCE_COMMAND + " --redis {redis_url}"
    generic, builtin_ = await asyncio.gather(  # side by side: two light loads on clusters of their own
        simulate(_scenario("smoke", template), str(tmp_path / "generic"), seed=5, redis=None, progress=_Quiet()),
        simulate(_scenario("smoke", None), str(tmp_path / "builtin"), seed=5, redis=None, progress=_Quiet()))
    assert generic.passed and builtin_.passed
    assert {v["id"]: v["status"] for v in generic.verdicts} == {v["id"]: v["status"] for v in builtin_.verdicts}
    assert generic.summary["meta"]["node_command"] == template


@pytest.mark.req("DEL-1")
async def test_a_node_that_loses_the_first_moments_of_a_subscription_is_caught(tmp_path):
    """The consumer group is created after the ack (Multica's asynchronous XGROUP CREATE): events
    published right after a subscribe are lost on a node that did not read the scope yet. Under
    reconnect-storm every reconnect opens the client's user scope on another node; sockets live
    longer than the liveness bound here, so a loss is a DEL-1 violation, not an excused one."""
    command = (f"{sys.executable} {BROKEN} --bug async-group --host {{host}} --port {{port}} --node-id {{name}} "
               "--control-token {token} --relay streams --redis {redis_url}")
    sc = _scenario("reconnect-storm", command, duration=12.0)
    sc.rate, sc.mix = [(0.0, 200.0)], {"user": 1.0}
    for f in sc.faults:
        f.period_s, f.down_s = 7.0, 0.3
    sc.checks = ["DEL-1", "DEL-2", "REP-3"]
    result = await simulate(sc, str(tmp_path), seed=11, redis=None, progress=_Quiet())
    failing = {v["id"] for v in result.verdicts if v["status"] == "fail"}
    assert not result.passed
    assert "DEL-1" in failing, failing

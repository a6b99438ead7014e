"""The conformance cases are the project's tests: every case, run against the reference in the
shapes that reach its branches, is one test here, marked with the requirements it judges.

The reference must pass every case it can be judged by; a case it cannot be judged by in a
shape says `not checked` for a reason the table below names (never `fail`, never `error`)."""

from __future__ import annotations

import pytest

from conformance import cases as registry
from conformance.verdict import Outcome

from suite_runs import explain
from targets import REFERENCE

CASES = registry.load_all()
MULTI_NODE = {c.name for c in CASES if c.min_nodes > 1}

# target -> (the case modules it runs, the cases that are `not checked` there and why)
UNTRUSTED = {"hs5_forwarded_host_from_trusted_proxy": "the suite's address is not a trusted proxy",
             "lim2_subscription_cap": "the default cap (1000) is more than the world lets alice hold"}
SHAPES = {
    "reference-3": (None, UNTRUSTED),
    "reference-1": (None, {**{n: "needs 2 nodes" for n in MULTI_NODE}, **UNTRUSTED,
                           "hs5_allow_list_is_exact": "nothing is allow-listed"}),
    "reference-proxy": ({"handshake", "limits"}, {**{n: "needs 2 nodes" for n in MULTI_NODE},
                                        "hs5_forwarded_host_from_untrusted_peer": "the suite's address is trusted"}),
    "reference-rediscluster": ({"redis_cluster"}, {}),
    "reference-secrets": ({"handshake", "health"}, {
        **{n: "needs 2 nodes" for n in MULTI_NODE}, **UNTRUSTED,
        "hs5_allow_list_is_exact": "nothing is allow-listed",
        "hs4_expired_at_exp_now": "signing a token whose exp is now needs the JWT secret",
        "hs4_other_hmac_algorithms": "signing HS384/HS512 needs the JWT secret",
        "hs4_non_string_sub": "a non-string sub needs the JWT secret",
        "hs4_exp_as_a_string_in_the_past": "a string exp needs the JWT secret",
        "hl2_blank_forwarding_headers": "a metrics token the suite does not know",
        "hl1_snapshot_fields": "a metrics token the suite does not know",
        "hl1_counters_follow": "a metrics token the suite does not know",
        "hl2_loopback_and_forwarding_headers": "a metrics token the suite does not know",
        "hl3_active_count": "a metrics token the suite does not know",
    }),
}


def _params():
    for target, (modules, _) in SHAPES.items():
        for c in CASES:
            if c.capability == "redis_cluster" and not REFERENCE[target].redis_cluster:
                continue  # `not claimed` off a Redis Cluster; judged in the shape that has one
            if modules is None or c.module in modules or c.first:
                yield pytest.param(target, c, id=f"{target}::{c.name}",
                                   marks=[pytest.mark.req(*c.reqs), pytest.mark.suite_case(REFERENCE[target], c.name)])


@pytest.mark.parametrize("target,case", list(_params()))
def test_reference(target, case, suite):
    result = suite.result(REFERENCE[target], case.name)
    why = SHAPES[target][1].get(case.name)
    if why is None:
        assert result.status == Outcome.PASS, explain(result)
    else:  # it cannot be judged in this shape: it says so, it does not fail
        assert result.status == Outcome.NOT_CHECKED, f"expected not checked ({why}):\n{explain(result)}"

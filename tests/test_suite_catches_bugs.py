"""The suite must be shown to fail: deliberately broken targets, each caught with the right
requirement ID and no other, while the correct reference passes the cases each bug must fail.

Broken targets come two ways, both started exactly as another implementation would be:
* tests/broken_node.py --bug NAME: the reference with ONE test-only bug monkeypatched in,
  started through the generic node-command path of scopehub.cluster (tests/targets.py);
* tests/mangling_proxy.py: a correct node behind a WebSocket man-in-the-middle that drops one
  event frame in N on the way to the client.

The suite runs through its Python API as `scopehub conform --quick --no-explore --only IDS`
does (the probes and the cases whose requirements include a selected ID, then the verdicts);
a bug marked narrow runs only the cases it must fail. The broken targets run three side by side,
once per session. Further tests run the hypothesis exploration alone (explore.run, fixed seed)
and show the history checker catches bugs too, within --quick."""

from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aiohttp
import pytest

from conformance import cases as registry
from conformance import explore
from conformance.runner import run_cases, verdicts
from conformance.target import Target
from scopehub.cluster import Cluster

from mangling_proxy import ManglingProxy
from targets import TargetSpec, run_suites

pytestmark = pytest.mark.heavy  # the suite against clusters of broken targets: left out by --quick


@dataclass(frozen=True)
class Bug:
    name: str
    fails: tuple[str, ...]  # requirements whose verdict must be "fail"
    only: tuple[str, ...]  # the selection (--only): cases whose requirements include one of these
    nodes: int = 1
    flags: str = ""  # extra `scopehub serve` flags, for the broken node and its reference alike
    cases: tuple[str, ...] = ()  # cases that must be among the failing ones
    narrow: bool = False  # run only `cases`, not every case of the selection (a bug that makes most of
    # them wait out their timeouts: the wider run proves nothing more and costs a minute)
    profile: str = "default"
    redis_cluster: str | None = None  # "M[:R]": on a Redis Cluster of its own (NODE-4)

    @property
    def shape(self) -> tuple[int, str, str | None]:
        return self.nodes, self.flags, self.redis_cluster


BUGS = [
    Bug("chat-any-member", ("AZ-2", "AZ-4"), ("AZ-2", "AZ-4"), cases=("az2_chat_of_another_user_forbidden",)),
    Bug("task-cross-workspace", ("AZ-1",), ("AZ-1",), cases=("az1_issue_task_other_workspace",
                                                              "az1_task_judged_by_the_connections_workspace")),
    Bug("nonuuid-lookup", ("AZ-3",), ("AZ-3",), cases=("az3_non_uuid_forbidden_without_lookup",)),
    # The cross-node subscribe race: the group appears ~50 ms after the ack, at "$".
    Bug("async-group", ("DEL-1",), ("DEL-1",), nodes=3,
        cases=("del1_publish_right_after_subscribe_ack_cross_node",), narrow=True),
    Bug("duplicate-delivery", ("DEL-2",), ("DEL-2",), cases=("del2_resubscribe_while_events_flow",)),
    Bug("reorder", ("DEL-3",), ("DEL-3",), cases=("del1_burst_complete_once_in_order",)),
    Bug("unsubscribe-noop", ("DEL-5",), ("DEL-5",), cases=("del5_nothing_after_unsubscribe_ack",)),
    Bug("slow-drop", ("DEL-6",), ("DEL-6",), cases=("del6_slow_consumer",), narrow=True),
    Bug("exclude-ignored", ("EV-1",), ("EV-1",), cases=("ev1_exclude_workspace",)),
    Bug("event-id-replaced", ("EV-2",), ("EV-2",), cases=("ev2_given_event_id_is_kept",)),
    # A small retention, so a gap can be trimmed: recovered true over it is the lie.
    Bug("lying-recovered", ("REP-4",), ("REP-4",), flags="--max-len 50",
        cases=("rep4_gap_beyond_max_len", "rep4_pos_of_another_scope"), narrow=True),
    Bug("replay-off-by-one", ("REP-3",), ("REP-3",), cases=("rep3_missed_then_live",)),
    Bug("resume-unauthorized", ("REP-7", "AZ-4"), ("REP-7", "AZ-4"), cases=("rep7_forbidden_resume_replays_nothing",)),
    Bug("expired-tokens", ("HS-4",), ("HS-4",), cases=("hs4_expired",)),
    # Revocation: the case revokes through node 1 and looks at the last node too.
    Bug("revoke-local-only", ("AZ-5",), ("AZ-5",), nodes=2, cases=("az5_revoke_closes_everywhere_and_refuses",)),
    Bug("revoke-close-1000", ("AZ-5",), ("AZ-5",), cases=("az5_revoke_closes_everywhere_and_refuses",)),
    Bug("revoke-forgets", ("AZ-5",), ("AZ-5",), cases=("az5_revoke_closes_everywhere_and_refuses",)),
    Bug("fixtures-reset", ("AZ-5",), ("AZ-5",), cases=("az5_replacing_fixtures_closes_nothing",)),
    Bug("sigterm-drop", ("NODE-5",), ("NODE-5",), nodes=2, cases=("node5_sigterm_drains_the_node",), narrow=True),
    # What only longer runs show (two nodes, as `scopehub conform --node-command ... --nodes 2`):
    Bug("dedup-window", ("DEL-2",), ("DEL-2",), nodes=2, cases=("del2_sustained_load_every_event_once",), narrow=True),
    Bug("bounded-read-pool", ("DEL-1",), ("DEL-1",), nodes=2, cases=("del1_many_scopes_on_one_node",), narrow=True),
    Bug("stuck-writer", ("DEL-6",), ("DEL-6",), nodes=2, cases=("del6_long_burst_to_a_stopped_reader",), narrow=True),
    Bug("replay-after-restart", ("DEL-7",), ("DEL-7",), nodes=2, cases=("del7_no_stale_events_after_a_restart",),
        narrow=True, profile="strict"),
    Bug("local-fast-path", ("DEL-3",), ("DEL-3",), nodes=2, cases=("del3_publishes_alternating_between_nodes",),
        narrow=True),
    # Hostile input (issue 16): each as it was first seen in the reference, one case each.
    Bug("tag-per-scope", ("NODE-4",), ("NODE-4",), nodes=3, redis_cluster="3",
        cases=("node4_many_scopes_deliver_and_resume",), narrow=True),
    Bug("surrogate-crash", ("IN-1",), ("IN-1",), cases=("in1_lone_surrogates",), narrow=True),
    # no error frame at all is HS-3's failure ("Any failure is answered with one text frame")
    Bug("token-surrogate-crash", ("HS-3",), ("HS-3", "HS-4"), cases=("hs4_tokens_in_odd_encodings",), narrow=True),
    Bug("lenient-json", ("IN-3",), ("IN-3",), cases=("in3_only_rfc8259_json",), narrow=True),
    Bug("unmasked-ok", ("IN-6",), ("IN-6",), cases=("in6_rfc6455_violations_fail_with_1002",), narrow=True),
    Bug("uuid-spellings", ("AZ-3",), ("AZ-3",), cases=("az3_other_spellings_are_forbidden_or_the_same_scope",),
        narrow=True),
    Bug("blank-forwarding", ("HL-2",), ("HL-2",), cases=("hl2_blank_forwarding_headers",), narrow=True),
    Bug("last-cookie", ("HS-2",), ("HS-2",), cases=("hs2_first_of_two_cookies_counts",), narrow=True),
    Bug("string-exp", ("HS-4",), ("HS-4",), cases=("hs4_exp_as_a_string_in_the_past",), narrow=True),
    Bug("nan-control", ("CTL-3", "CTL-4"), ("CTL-3", "CTL-4"),
        cases=("ctl3_ttl_not_finite_is_400", "ctl4_numbers_json_cannot_carry_are_400"), narrow=True),
    Bug("unicode-digits-since", ("REP-5",), ("REP-5",), cases=("rep5_real_position_respelled",), narrow=True),
    Bug("no-header-timeout", ("LIM-1",), ("LIM-1",), flags="--header-timeout 2",
        cases=("lim1_slow_headers_are_closed",), narrow=True),
    Bug("sub-cap-closes", ("LIM-2",), ("LIM-2",), flags="--max-subscriptions 24", cases=("lim2_subscription_cap",),
        narrow=True),
]
SHAPES = sorted({b.shape for b in BUGS}, key=lambda s: (s[0], s[1], s[2] or ""))


async def start(bug: str, nodes: int, flags: str, redis_url: str, redis_cluster: str | None = None) -> Cluster:
    """A (broken) reference node started the way any implementation is (tests/targets.py)."""
    cluster = TargetSpec(f"broken-{bug}", nodes, flags, script=f"broken_node.py --bug {bug}",
                         redis_cluster=redis_cluster).cluster(redis_url)
    await cluster.start()
    return cluster


async def conform(urls: list[str], token: str, only: set[str], names: tuple[str, ...] = (), *,
                  cluster: Cluster | None = None, profile: str = "default"):
    """What `scopehub conform --quick --no-explore --only IDS` does: (results, verdicts, capabilities);
    with `names`, only those cases of the selection run; with `cluster`, the suite may restart a
    node, as when it started the nodes itself."""
    chosen = [c for c in registry.load_all() if set(c.reqs) & only and (not names or c.name in names or c.first)]
    async with aiohttp.ClientSession() as session:
        target = await Target.open(session, urls, token)
        target.cluster = cluster
        results = await run_cases(target, chosen, quick=True)
    return results, verdicts(only, results, None, target.capabilities, profile), target.capabilities


def failing_cases(results) -> dict[str, str]:
    return {r.case.name: r.reason for r in results if r.status == "fail"}


def explain(found, results) -> str:
    lines = [f"{rid}: {v.status} {v.reason}" for rid, v in found.items()]
    lines += [f"  {r.case.name}: {r.status} {r.reason}" for r in results if r.status != "pass"]
    return "\n".join(lines)


# -- each bug is caught -----------------------------------------------------------------------------

def selection(bug: Bug) -> list:
    """The cases `scopehub conform --only IDS` runs for the bug (probes included), or only its named
    cases when the bug is narrow."""
    only = set(bug.only)
    return [c for c in registry.load_all()
            if c.first or (set(c.reqs) & only and (not bug.narrow or c.name in bug.cases))]


def target_of(bug: Bug) -> TargetSpec:
    return TargetSpec(f"broken-{bug.name}", bug.nodes, bug.flags, script=f"broken_node.py --bug {bug.name}",
                      redis_cluster=bug.redis_cluster)


@pytest.fixture(scope="module")
def broken_runs(request):
    """Every broken target this session selected, three side by side (a broken target mostly
    waits out its timeouts), on one redis-server of the module's own."""
    from scopehub.redis_provision import RedisServer

    wanted = [item.callspec.params["bug"] for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec") and "bug" in item.callspec.params]
    redis = RedisServer()
    redis.start()
    try:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, run_suites([(target_of(b), selection(b)) for b in wanted],
                                                       redis.url, quick=True)).result()
    finally:
        redis.stop()


@pytest.mark.parametrize("bug", [pytest.param(b, id=b.name, marks=pytest.mark.req(*b.fails)) for b in BUGS])
def test_suite_fails_the_broken_target(bug: Bug, broken_runs):
    target, results = broken_runs[target_of(bug).name]
    found = verdicts(set(bug.only), results, None, target.capabilities, bug.profile)
    failed = failing_cases(results)
    print(f"\n{bug.name}: " + "; ".join(f"{rid} {found[rid].status}" for rid in bug.only)
          + f"; failing cases: {', '.join(sorted(failed))}")
    for rid in bug.fails:
        assert found[rid].status == "fail", f"{bug.name} was not caught as {rid}:\n{explain(found, results)}"
        assert found[rid].reason, f"{rid} failed without a reason"
    blamed = {rid for rid, v in found.items() if v.status == "fail"}
    assert blamed == set(bug.fails), f"{bug.name} blamed {sorted(blamed - set(bug.fails))} too:\n{explain(found, results)}"
    missing = [c for c in bug.cases if c not in failed]
    assert not missing, f"{bug.name}: these cases did not fail: {missing}\n{explain(found, results)}"


# -- ... and the reference passes the same selections ------------------------------------------------

def _shape_id(shape: tuple[int, str, str | None]) -> str:
    nodes, flags, redis_cluster = shape
    on = [f"redis-cluster-{redis_cluster}"] if redis_cluster else []
    return "-".join([f"{nodes}-node", *flags.replace("--", "").split(), *on])


@pytest.mark.parametrize("shape", [
    pytest.param(s, id=_shape_id(s), marks=pytest.mark.req(*sorted({r for b in BUGS if b.shape == s for r in b.fails})))
    for s in SHAPES])
async def test_reference_passes_the_same_selections(shape: tuple[int, str, str | None], redis_server):
    nodes, flags, redis_cluster = shape
    bugs = [b for b in BUGS if b.shape == shape]
    union = {rid for b in bugs for rid in b.only}
    # the cases each bug must fail; every case passes the reference in tests/test_cases.py anyway
    names = tuple(n for b in bugs for n in b.cases)
    cluster = await start("none", nodes, flags, redis_server.url, redis_cluster)
    try:
        results, found, claimed = await conform(cluster.urls, cluster.spec.control_token, union, names,
                                                cluster=cluster)
    finally:
        await cluster.stop()
    assert not failing_cases(results), explain(found, results)
    for b in bugs:  # each bug's own selection, judged from the same results
        own = verdicts(set(b.only), results, None, claimed, b.profile)
        assert not [rid for rid, v in own.items() if v.status == "fail"], explain(own, results)
        for rid in b.fails:  # and the requirement it must fail was really checked, and passed
            assert own[rid].status == "pass", f"reference, selection of {b.name}: {rid} {own[rid].status}"
        passed = {r.case.name for r in results if r.status == "pass"}
        assert set(b.cases) <= passed, f"reference, selection of {b.name}: {set(b.cases) - passed} did not pass"


# -- a correct node behind a frame-dropping proxy ---------------------------------------------------------

PROXY_CASES = ("del1_burst_complete_once_in_order", "del1_publish_right_after_subscribe_ack",
               "del3_order_per_scope_interleaved")


@pytest.mark.req("DEL-1")
async def test_suite_fails_a_correct_node_behind_a_frame_dropping_proxy(redis_server):
    cluster = await start("none", 1, "", redis_server.url)
    try:
        outcome = {}
        for drop_every in (20, 0):  # 0: the same proxy forwarding faithfully is the control
            async with ManglingProxy(cluster.urls[0], drop_every=drop_every) as proxy:
                results, found, _ = await conform([proxy.url], cluster.spec.control_token, {"DEL-1"}, PROXY_CASES)
            outcome[drop_every] = (results, found, proxy.dropped)
    finally:
        await cluster.stop()
    results, found, dropped = outcome[20]
    print(f"\nproxy dropping 1 in 20: DEL-1 {found['DEL-1'].status} ({len(dropped)} frames dropped); "
          f"failing cases: {', '.join(sorted(failing_cases(results)))}")
    assert dropped, "the proxy dropped nothing"
    assert found["DEL-1"].status == "fail" and found["DEL-1"].reason, explain(found, results)
    results, found, dropped = outcome[0]
    assert not dropped and found["DEL-1"].status == "pass" and not failing_cases(results), explain(found, results)


# -- the exploration alone: the history checker's path -------------------------------------------------

EXPLORE_SEED = 1  # fixed: the run is reproducible, and this seed reaches a 7th event on one connection


async def test_an_exploration_the_target_stops_answering_ends_in_errors_not_a_traceback(redis_server):
    """A node frozen (SIGSTOP) in the middle of the exploration: the step it holds up is bounded,
    the run ends, and no requirement passes on what could not be finished."""
    cluster = await start("none", 1, "", redis_server.url)
    pid = cluster.nodes[0].pid
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as session:
            claimed = (await Target.open(session, cluster.urls, cluster.spec.control_token)).capabilities
        loop.call_later(1.5, os.kill, pid, signal.SIGSTOP)
        found, summary = await asyncio.to_thread(
            explore.run, cluster.urls, cluster.spec.control_token, seed=EXPLORE_SEED, examples=200,
            profile="default", capabilities=claimed, shrink=False)
    finally:
        os.kill(pid, signal.SIGCONT)
        await cluster.stop()
    assert "did not finish" in (summary["failure"] or ""), summary
    assert not [rid for rid, v in found.items() if v.status == "pass"], {r: v.status for r, v in found.items()}
    assert any(v.status == "error" and "could not go on" in v.reason for v in found.values())


@pytest.mark.req("DEL-2")
async def test_exploration_alone_catches_duplicate_delivery(redis_server):
    checked = {}
    for bug in ("duplicate-delivery", "none"):
        cluster = await start(bug, 2, "", redis_server.url)
        try:
            async with aiohttp.ClientSession() as session:
                claimed = (await Target.open(session, cluster.urls, cluster.spec.control_token)).capabilities
            found, summary = await asyncio.to_thread(
                explore.run, cluster.urls, cluster.spec.control_token, seed=EXPLORE_SEED, examples=12,
                profile="default", capabilities=claimed, shrink=False)  # shrinking: 70-300 s here
        finally:
            await cluster.stop()
        checked[bug] = verdicts(set(found), [], found, claimed, "default")  # no case results: the checker only
        print(f"\nexploration, seed {EXPLORE_SEED}, bug {bug}: {summary['runs']} runs; "
              + "; ".join(f"{rid} {v.status}" for rid, v in checked[bug].items() if v.status not in ("no evidence", "not checked")))
    broken = checked["duplicate-delivery"]
    assert broken["DEL-2"].status == "fail", explain(broken, [])
    assert "exploration" in broken["DEL-2"].reason, broken["DEL-2"].reason
    assert broken["DEL-2"].witnesses and broken["DEL-2"].witnesses[0].kind == "duplicate", broken["DEL-2"]
    assert not [rid for rid, v in checked["none"].items() if v.status == "fail"], explain(checked["none"], [])
    assert checked["none"]["DEL-2"].status == "pass"  # the same seed exercised DEL-2 on the reference


@pytest.mark.req("DEL-2")
async def test_a_failing_exploration_reports_its_steps_within_the_shrink_budget(redis_server):
    """Shrinking is cut at the budget, and the report still holds the shortest failing run found
    so far as steps, whatever hypothesis printed."""
    cluster = await start("duplicate-delivery", 2, "", redis_server.url)
    try:
        async with aiohttp.ClientSession() as session:
            claimed = (await Target.open(session, cluster.urls, cluster.spec.control_token)).capabilities
        loop = asyncio.get_running_loop()
        began = loop.time()
        found, summary = await asyncio.to_thread(
            explore.run, cluster.urls, cluster.spec.control_token, seed=EXPLORE_SEED, examples=12,
            profile="default", capabilities=claimed, shrink=True, shrink_budget_s=3, replay="scopehub conform ...")
        took = loop.time() - began
    finally:
        await cluster.stop()
    assert found["DEL-2"].status == "fail", found["DEL-2"]
    steps = summary["steps"]
    assert steps and all(isinstance(s, str) and "(" in s for s in steps), summary
    assert summary["seed"] == EXPLORE_SEED and summary["replay"] and summary["failure"]
    assert took < 120, f"the exploration took {took:.0f} s with a 3 s shrink budget"


QUICK_EXAMPLES = 20  # what `scopehub conform --quick` runs


@pytest.mark.req("DEL-5", "NODE-1")
async def test_the_quick_exploration_reaches_unsubscribes_and_restarts(redis_server):
    """Within --quick the exploration publishes right after unsubscribing (DEL-5, rarely reached
    by chance) and restarts a node the suite started; the reference passes, and DEL-5 has evidence."""
    cluster = await start("none", 2, "", redis_server.url)
    loop = asyncio.get_running_loop()
    restarted = []

    def restart(i: int) -> None:
        restarted.append(i)
        asyncio.run_coroutine_threadsafe(cluster.restart_node(i), loop).result(60)
    try:
        async with aiohttp.ClientSession() as session:
            claimed = (await Target.open(session, cluster.urls, cluster.spec.control_token)).capabilities
        found, summary = await asyncio.to_thread(
            explore.run, cluster.urls, cluster.spec.control_token, seed=EXPLORE_SEED, examples=QUICK_EXAMPLES,
            profile="default", capabilities=claimed, shrink=False, restart=restart)
    finally:
        await cluster.stop()
    assert summary["rules"].get("unsubscribe_then_publish", 0) > 0 and restarted, summary["rules"]
    assert not [rid for rid, v in found.items() if v.status == "fail"], {r: v.reason for r, v in found.items()}
    assert found["DEL-5"].status == "pass" and found["DEL-5"].evidence > 0, found["DEL-5"]


@pytest.mark.req("DEL-5")
async def test_exploration_alone_catches_an_unsubscribe_that_does_nothing(redis_server):
    cluster = await start("unsubscribe-noop", 2, "", redis_server.url)
    try:
        async with aiohttp.ClientSession() as session:
            claimed = (await Target.open(session, cluster.urls, cluster.spec.control_token)).capabilities
        found, _ = await asyncio.to_thread(
            explore.run, cluster.urls, cluster.spec.control_token, seed=EXPLORE_SEED, examples=QUICK_EXAMPLES,
            profile="default", capabilities=claimed, shrink=False)
    finally:
        await cluster.stop()
    assert found["DEL-5"].status == "fail" and found["DEL-5"].witnesses[0].kind == "late_after_unsubscribe", \
        found["DEL-5"]

"""The Redis Cluster faults (failover, reshard): scenario validation, the nemesis's failover on a
real 3:1 RedisClusterServer, live delivery after a real failover, and the catalogue scenarios
redis-cluster, redis-failover and redis-failover-durable in short form (every process stopped by
PID: RedisClusterServer.stop and the simulator's own teardown)."""

from __future__ import annotations

import asyncio
import shutil

import aiohttp
import pytest
from redis.crc import key_slot

from conformance.client import Control, WsClient
from scenarios.nemesis import Nemesis
from scenarios.redis_faults import role
from scenarios.sim import simulate
from scenarios.spec import ScenarioError, builtin, load, parse
from scopehub.cluster import Cluster, ClusterSpec
from scopehub.redis_provision import CLUSTER_SLOTS
from reference.relay.streams import stream_key
from targets import local_redis_cluster

needs_binary = pytest.mark.skipif(not shutil.which("redis-server"), reason="no redis-server binary")


# ---- validation: one line naming the key


@pytest.mark.parametrize("doc, key, words", [
    ({"name": "x", "faults": [{"kind": "failover", "at": 1, "duration": 6}]}, "faults[0].kind", "needs a Redis Cluster"),
    ({"name": "x", "redis": {"cluster": "3"}, "faults": [{"kind": "failover", "at": 1, "duration": 6}]},
     "faults[0].kind", "replicas"),
    ({"name": "x", "redis": {"cluster": "3:1"}, "faults": [{"kind": "failover", "at": 1, "duration": 2}]},
     "faults[0].duration", ">= 4"),
    ({"name": "x", "redis": {"cluster": "3:1"}, "faults": [{"kind": "failover", "at": 1, "duration": 6, "primary": 3}]},
     "faults[0].primary", "0..2"),
    ({"name": "x", "faults": [{"kind": "reshard", "at": 1}]}, "faults[0].kind", "needs a Redis Cluster"),
    ({"name": "x", "redis": {"cluster": "3:1"}, "faults": [{"kind": "reshard", "at": 1, "slots": 0}]},
     "faults[0].slots", "1..16383"),
])
def test_cluster_faults_are_validated_in_one_line(doc, key, words):
    with pytest.raises(ScenarioError) as e:
        parse(doc)
    assert str(e.value).startswith(key) and words in str(e.value) and "\n" not in str(e.value)


def test_cluster_faults_parse():
    sc = parse({"name": "x", "redis": {"cluster": "3:1"}, "faults": [
        {"kind": "failover", "at": 1, "duration": 5, "primary": 2}, {"kind": "reshard", "at": 2, "slots": 10}]})
    assert [(f.kind, f.primary, f.slots) for f in sc.faults] == [("failover", 2, 1000), ("reshard", 0, 10)]


# ---- the nemesis on a real Redis Cluster


class _History:
    def __init__(self):
        self.records = []

    def fault(self, kind, phase, target, nodes, **extra):
        self.records.append({"fault": kind, "phase": phase, "target": target, "nodes": nodes, **extra})


class _Cluster:  # what the nemesis needs of scenarios.sim.SimCluster for store faults
    def __init__(self, store):
        self.redis_server, self.urls, self.redis_label = store, ["http://node-1", "http://node-2"], store.label


@pytest.fixture
def cluster_3_1():  # per test: a failover changes who is primary
    with local_redis_cluster(3, 1) as cluster:
        yield cluster


@needs_binary
@pytest.mark.heavy
def test_the_nemesis_fails_a_primary_over_and_brings_it_back_as_a_replica(cluster_3_1):
    store = cluster_3_1
    old, replica = store.primaries[0], store.replicas[0]
    sc = parse({"name": "x", "redis": {"cluster": "3:1"}, "faults": [{"kind": "failover", "at": 0, "duration": 4}]})
    history = _History()
    nemesis = Nemesis(sc, _Cluster(store), lambda cmd: None, history=history)

    async def run():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await nemesis.run(t0)
        await asyncio.wait_for(asyncio.gather(*nemesis._heals.values()), 60)  # bounded by the fault's own bounds
        await nemesis.heal_all(t0)
    asyncio.run(run())
    w = nemesis.windows[0]
    assert w.end is not None and w.figures["promoted"] == f"127.0.0.1:{replica.port}"
    assert 2.0 <= w.figures["promoted_after_s"] <= 30 and w.figures["rejoined_after_s"] <= 60
    assert role(replica)[0] == "master"
    r = role(old)
    assert r[0] == "slave" and r[2] == replica.port and r[3] == "connected"
    assert store.primaries[0] is replica and store.replicas[0] is old  # handles follow the roles
    # store-wide in the history, with the figures at the end
    assert [(x["fault"], x["phase"], x["nodes"]) for x in history.records] == [
        ("failover", "start", _Cluster(store).urls), ("failover", "end", _Cluster(store).urls)]
    assert history.records[1]["figures"]["promoted_after_s"] == w.figures["promoted_after_s"]


@needs_binary
@pytest.mark.heavy
def test_a_subscriber_keeps_receiving_after_a_real_failover(cluster_3_1):
    """The streams relay's reader slot follows its tag to the promoted replica (redis-py's
    MovedError carries no "MOVED" in its message: told by class)."""
    from conformance.world import TestWorld
    from scenarios.redis_faults import Failover

    store = cluster_3_1

    async def run():
        cluster = Cluster(ClusterSpec(nodes=1, relay="streams", redis_cluster_urls=(store.url,)))
        await cluster.start()
        try:
            async with aiohttp.ClientSession() as session:
                world = TestWorld()
                ctl = Control(session, cluster.urls[0], cluster.spec.control_token)
                await ctl.fixtures(world.fixtures())
                ws = world.ws_a
                c = await WsClient.connect(session, cluster.urls[0], workspace_id=ws, token=await ctl.token(world.alice))

                async def delivered() -> bool:
                    p = await ctl.publish("workspace", ws, {"type": "x"})
                    await c.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == p["event_id"], timeout=10)
                    return True
                assert await delivered()
                owner = key_slot(stream_key("workspace", ws).encode()) * store.primary_count // CLUSTER_SLOTS
                f = Failover(store, owner)
                await f.start()
                await asyncio.sleep(4)  # the fault's window: frozen at least this long
                await f.finish()
                assert await delivered()
                await c.close()
        finally:
            await cluster.stop()
    asyncio.run(run())


# ---- the catalogue scenarios, short


class _Quiet:
    def phase(self, name): pass
    def note(self, text): pass
    def tick(self, *a): pass


def _short(name: str, duration: float):
    sc = load(builtin(name))
    sc.clients, sc.processes, sc.settle_s = 40, 1, 12.0
    sc.scaled(duration)
    return sc


def _run(name: str, duration: float, tmp_path):
    return asyncio.run(simulate(_short(name, duration), str(tmp_path), seed=7, redis=None, progress=_Quiet()))


def _failing(result):
    return [(v["id"], v["reason"]) for v in result.verdicts if v["status"] == "fail"]


@needs_binary
@pytest.mark.heavy
def test_redis_cluster_scenario_passes_through_a_reshard(tmp_path):
    result = _run("redis-cluster", 7.0, tmp_path)
    assert result.passed, _failing(result)
    (reshard,) = result.summary["store_faults"]
    assert reshard["kind"] == "reshard" and reshard["ok"] and reshard["slots"] == 1000
    assert result.summary["lost_acknowledged"] == 0 and result.summary["published"]["acknowledged"] > 0


@needs_binary
@pytest.mark.heavy
# the durable run judges the same machinery more strictly (nothing acknowledged lost): the other
# one is in the slow tier, to keep the CI run short
@pytest.mark.parametrize("name", [pytest.param("redis-failover", marks=pytest.mark.slow), "redis-failover-durable"])
def test_redis_failover_scenarios_keep_resumes_honest(name, tmp_path):
    result = _run(name, 14.0, tmp_path)
    assert result.passed, _failing(result)
    s = result.summary
    (failover,) = [f for f in s["store_faults"] if f["kind"] == "failover"]
    assert failover["promoted"] and failover["rejoined_after_s"] is not None
    honesty = s["resume_honesty"]
    assert honesty["rep4"] == "pass" and honesty["recovered_false"] > 0  # resumes across the failover
    assert honesty["lying"] == 0
    if name == "redis-failover-durable":
        assert s["lost_acknowledged"] == 0 and s["delivery_ratio"] == 1.0
    report = (tmp_path / "report.html").read_text()
    assert "acknowledged events lost" in report and "promoted after" in report

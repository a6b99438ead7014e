"""The Redis relays across real node processes on a real redis-server (NODE-1..3, DEL-1..3
across nodes). Every test runs for both strategies."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from conformance.client import ControlError, WsClient
from reference.relay.streams import nodes_key, stream_key

pytestmark = [pytest.mark.parametrize("relay", ["streams", "sharded"]),
              pytest.mark.heavy]  # clusters of node processes: left out by --quick


async def _connect(session, handle, i, user, workspace, control=None) -> WsClient:
    control = control or handle.controls[i]
    token = await control.token(user)
    return await WsClient.connect(session, handle.urls[i], workspace_id=workspace, token=token)


def _event(published):
    eid = published["event_id"]
    return lambda f: isinstance(f, dict) and f.get("event_id") == eid


async def _until(cond, timeout: float, step: float = 0.05):
    """Poll an async condition until it holds; bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await cond():
            return
        if loop.time() >= deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


@pytest.mark.req("NODE-1", "DEL-1", "EV-1")
async def test_every_scope_type_crosses_nodes(relay, start_cluster, session, world):
    h = await start_cluster(relay)
    alice = await _connect(session, h, 0, world.alice, world.ws_a)
    assert (await alice.subscribe("task", world.task_a))["type"] == "subscribe_ack"
    assert (await alice.subscribe("chat", world.chat_alice))["type"] == "subscribe_ack"
    for scope, sid in [("workspace", world.ws_a), ("user", world.alice), ("task", world.task_a),
                       ("chat", world.chat_alice), ("global", "all")]:
        for publisher in (1, 2):
            p = await h.controls[publisher].publish(scope, sid, {"type": f"{scope}:x"})
            frame = await alice.wait_for(_event(p))
            assert (frame["scope"], frame["scope_id"], frame["pos"]) == (scope, sid, p["pos"])
    await alice.close()


@pytest.mark.req("NODE-1", "EV-1", "AZ-4")
async def test_exclude_workspace_and_global_across_nodes(relay, start_cluster, session, world):
    h = await start_cluster(relay)
    both = world.fixtures()
    both["workspaces"][world.ws_b]["members"].append(world.alice)
    for c in h.controls:
        await c.fixtures(both)
    in_a = await _connect(session, h, 0, world.alice, world.ws_a)
    in_b = await _connect(session, h, 1, world.alice, world.ws_b)
    carol = await _connect(session, h, 2, world.carol, world.ws_b)
    skipped = await h.controls[2].publish("user", world.alice, {"type": "inbox:new"}, exclude_workspace=world.ws_a)
    await in_b.wait_for(_event(skipped))
    g = await h.controls[0].publish("global", "all", {"type": "system"})
    for c in (in_a, in_b, carol):
        await c.wait_for(_event(g))
    assert not any(f.get("event_id") == skipped["event_id"] for f in in_a.events())
    assert not any(f.get("event_id") == skipped["event_id"] for f in carol.events())


@pytest.mark.req("DEL-1", "NODE-1")
async def test_subscribe_then_publish_elsewhere_never_loses(relay, start_cluster, session, world):
    """The subscribe race: fresh scopes, publish on another node the moment the ack arrives."""
    h = await start_cluster(relay)
    tasks = [str(uuid.uuid4()) for _ in range(500)]
    fixtures = world.fixtures()
    fixtures["tasks"].update({t: {"issue": world.issue_a} for t in tasks})
    for c in h.controls:
        await c.fixtures(fixtures)
    clients = [await _connect(session, h, i, world.alice, world.ws_a) for i in range(3)]

    async def one(k: int, task: str):
        sub, pub = clients[k % 3], h.controls[(k + 1) % 3]
        assert (await sub.subscribe("task", task))["type"] == "subscribe_ack"
        p = await pub.publish("task", task, {"type": "task:progress", "k": k})
        await sub.wait_for(_event(p), timeout=5)
        await sub.unsubscribe("task", task)

    for start in range(0, len(tasks), 25):  # 25 races in flight at a time
        await asyncio.gather(*(one(k, tasks[k]) for k in range(start, min(start + 25, len(tasks)))))


@pytest.mark.req("DEL-1", "DEL-2", "DEL-3", "NODE-1")
async def test_burst_of_2000_keeps_every_event_once_in_order(relay, start_cluster, session, world):
    h = await start_cluster(relay)
    subs = [await _connect(session, h, i, world.bob, world.ws_a) for i in range(3)]
    sent = []
    for k in range(2000):  # one publisher, sequential: each publish acked before the next starts
        sent.append((await h.controls[k % 3].publish("workspace", world.ws_a, {"type": "issue:updated", "k": k}))["event_id"])
    for s in subs:
        await s.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == sent[-1], timeout=15)
        got = [f["event_id"] for f in s.events() if f.get("scope") == "workspace"]
        assert got == sent


@pytest.mark.req("NODE-2", "DEL-1")
async def test_sigkill_of_one_node_loses_nothing_elsewhere(relay, start_cluster, session, world):
    h = await start_cluster(relay)
    doomed = await _connect(session, h, 0, world.alice, world.ws_a)
    survivors = [await _connect(session, h, i, world.bob, world.ws_a) for i in (1, 2)]
    sent = []
    for k in range(300):
        if k == 100:
            h.cluster.nodes[0].kill()
            await doomed.wait_closed(timeout=5)
        sent.append((await h.controls[1 + k % 2].publish("workspace", world.ws_a, {"k": k}))["event_id"])
    for s in survivors:
        await s.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == sent[-1], timeout=10)
        assert [f["event_id"] for f in s.events() if f.get("scope") == "workspace"] == sent


@pytest.mark.req("NODE-3")
async def test_redis_restart_mid_traffic(relay, start_cluster, session, world):
    """Publishes fail with 503 while Redis is down and never answer 200 for an unstored event;
    after the restart every node delivers again by itself, within 10 s."""
    h = await start_cluster(relay)
    subs = [await _connect(session, h, i, world.alice, world.ws_a) for i in range(3)]
    before = await h.controls[0].publish("user", world.alice, {"type": "before"})
    for s in subs:
        await s.wait_for(_event(before))
    h.redis.kill()
    with pytest.raises(ControlError) as down:
        await h.controls[1].publish("user", world.alice, {"type": "during"})
    assert down.value.status == 503
    h.redis.start()  # same port, empty: persistence is off
    acked, attempts = [], []

    async def delivered_everywhere():
        attempts.append(1)
        try:
            acked.append(await h.controls[len(attempts) % 3].publish("user", world.alice, {"type": "after"}))
        except ControlError as e:
            assert e.status == 503
            return False
        return all(any(f.get("event_id") == acked[-1]["event_id"] for f in s.events()) for s in subs)

    await _until(delivered_everywhere, timeout=10, step=0.2)
    last = await h.controls[2].publish("user", world.alice, {"type": "final"})
    for s in subs:
        await s.wait_for(_event(last), timeout=5)
        ids = {f["event_id"] for f in s.events()}
        assert all(a["event_id"] in ids for a in acked)  # every event answered 200 arrived


@pytest.mark.req("NODE-3", "DEL-1")
async def test_redis_pause_loses_nothing_acknowledged(relay, start_cluster, session, world):
    """A stalled store (SIGSTOP): publishes time out with 503; the stream survives, so every
    acknowledged event arrives once Redis continues."""
    h = await start_cluster(relay)
    subs = [await _connect(session, h, i, world.bob, world.ws_a) for i in range(3)]
    acked = [await h.controls[0].publish("workspace", world.ws_a, {"k": -1})]
    h.redis.pause()
    try:
        with pytest.raises(ControlError) as stalled:
            await h.controls[1].publish("workspace", world.ws_a, {"k": 0}, timeout=10)
        assert stalled.value.status == 503
    finally:
        h.redis.resume()
    for k in range(1, 20):
        acked.append(await h.controls[k % 3].publish("workspace", world.ws_a, {"k": k}))
    for s in subs:
        await s.wait_for(_event(acked[-1]), timeout=10)
        ids = [f["event_id"] for f in s.events() if f.get("scope") == "workspace"]
        expected = [a["event_id"] for a in acked]
        assert [i for i in ids if i in set(expected)] == expected


@pytest.mark.req("NODE-1")
async def test_churn_leaves_no_reader_or_group_behind(relay, start_cluster, session, world):
    h = await start_cluster(relay, node_flags=("--linger", "0.5"))
    tasks = [str(uuid.uuid4()) for _ in range(40)]
    fixtures = world.fixtures()
    fixtures["tasks"].update({t: {"issue": world.issue_a} for t in tasks})
    for c in h.controls:
        await c.fixtures(fixtures)
    clients = [await _connect(session, h, i % 3, world.alice, world.ws_a) for i in range(6)]
    for round_ in range(3):
        for i, c in enumerate(clients):
            for t in tasks[i::6]:
                await c.subscribe("task", t)
        p = await h.controls[round_].publish("task", tasks[0], {"round": round_})
        await clients[0].wait_for(_event(p))
        for i, c in enumerate(clients):
            for t in tasks[i::6]:
                await c.unsubscribe("task", t)
    for c in clients[3:]:
        await c.close()

    r = aioredis.Redis.from_url(h.redis.url, decode_responses=True)
    try:
        async def no_task_groups():
            for t in tasks:
                key = stream_key("task", t)
                if await r.exists(key) and await r.xinfo_groups(key):
                    return False
                if await r.zcard(nodes_key("task", t)):
                    return False
            return True

        await _until(no_task_groups, timeout=5)
        for i, url in enumerate(h.urls[:3]):
            async with session.get(url + "/health/realtime") as resp:
                relay_state = (await resp.json())["redis"]
            if relay == "streams":  # readers follow subscribers: only workspace, user and global remain
                held = {("workspace", world.ws_a), ("user", world.alice)} if i < 3 else set()
                assert relay_state["active_readers"] == len(held) + 1
            else:
                assert relay_state["active_readers"] == 8  # one per shard, always
    finally:
        await r.aclose()

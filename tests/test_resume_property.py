"""REP-3/REP-4/REP-6 as a property: over random interleavings of publish (through any node),
disconnect, and reconnect-to-any-node-and-resume on a 3-node cluster, a resume answers
`recovered: true` exactly when every missed event is retained, and then the connection
receives exactly the events published after `since`, each once.

Hypothesis runs the test body synchronously; each example's async work runs on one event
loop that lives as long as the module's cluster."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.client import Control, WsClient
from conformance.world import TestWorld
from scopehub.cluster import Cluster, ClusterSpec
from scopehub.redis_provision import RedisServer

MAX_LEN = 12

steps = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(0, 2), st.integers(1, 6)),
        st.tuples(st.just("disconnect")),
        st.tuples(st.just("resume"), st.integers(0, 2)),
    ),
    min_size=1, max_size=10,
)


@pytest.fixture(scope="module", params=["streams", "sharded"])
def cluster(request):
    loop = asyncio.new_event_loop()
    redis = RedisServer().start()
    c = Cluster(ClusterSpec(nodes=3, relay=request.param, redis_url=redis.url, node_flags=("--max-len", str(MAX_LEN))))
    try:
        loop.run_until_complete(c.start())
        session = loop.run_until_complete(_session())
        yield loop, c, session
        loop.run_until_complete(session.close())
    finally:
        loop.run_until_complete(c.stop())
        redis.stop()
        loop.close()


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


@pytest.mark.req("REP-3", "REP-4", "REP-6", "NODE-1")
@given(plan=steps)
def test_recovered_true_means_exactly_the_missed_events(cluster, plan):
    loop, c, session = cluster
    loop.run_until_complete(asyncio.wait_for(_run(c, session, plan), 60))


async def _run(c: Cluster, session, plan) -> None:
    world, user = TestWorld(), str(uuid.uuid4())
    fixtures = world.fixtures()
    fixtures["workspaces"][world.ws_a]["members"].append(user)
    controls = [Control(session, url, c.spec.control_token) for url in c.urls]
    for ctl in controls:
        await ctl.fixtures(fixtures)
    published: list[dict] = []

    async def publish(node: int) -> dict:
        p = await controls[node].publish("user", user, {"type": "tick", "n": len(published)})
        published.append(p)
        return p

    async def connect(node: int) -> WsClient:
        return await WsClient.connect(session, c.urls[node], workspace_id=world.ws_a, token=await controls[node].token(user))

    client: WsClient | None = await connect(0)
    first = await publish(1)
    await client.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == first["event_id"])
    newest = first  # the newest event any of our connections received
    try:
        for step in plan:
            if step[0] == "publish":
                for _ in range(step[2]):
                    await publish(step[1])
            elif step[0] == "disconnect" and client is not None:
                await _drain(client, published[-1])
                newest = _newest(client, published, newest)
                await client.close()
                client = None
            elif step[0] == "resume":
                if client is not None:
                    await _drain(client, published[-1])
                    newest = _newest(client, published, newest)
                    await client.close()
                client = await connect(step[1])
                ack = await client.subscribe("user", user, since=newest["pos"])
                ids = [p["event_id"] for p in published]
                missed = ids[ids.index(newest["event_id"]) + 1:]
                assert ack["payload"]["recovered"] is (len(missed) <= MAX_LEN), (len(missed), ack)
                marker = await publish(step[1])
                await client.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == marker["event_id"])
                got = [f["event_id"] for f in client.events() if f.get("scope") == "user"]
                expected = (missed if ack["payload"]["recovered"] else []) + [marker["event_id"]]
                ids.append(marker["event_id"])
                # The connection came after every missed publish: all it may hold beyond the
                # marker is a replay, and a replay only after `recovered: true`.
                assert len(got) == len(set(got)), "duplicate delivery"
                assert sorted(got, key=ids.index) == expected, "replay differs from what was missed"
                newest = marker
    finally:
        if client is not None:
            await client.close()


async def _drain(client: WsClient, last: dict) -> None:
    await client.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == last["event_id"])


def _newest(client: WsClient, published: list[dict], current: dict) -> dict:
    order = {p["event_id"]: i for i, p in enumerate(published)}
    seen = [order[f["event_id"]] for f in client.events() if f.get("event_id") in order]
    best = max(seen, default=-1)
    return published[best] if best > order[current["event_id"]] else current

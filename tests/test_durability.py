"""The durability option (issue 17): with --durability K a publish is answered 200 only once K
replicas hold its entry (Redis WAIT on the connection that appended it), else 503 (NODE-3: an
event answered 503 may still be delivered; one answered 200 is on K replicas)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from conformance.client import ControlError
from scopehub.redis_provision import RedisServer

pytestmark = pytest.mark.heavy


async def _until(check, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.req("NODE-3", "CTL-4")
@pytest.mark.parametrize("relay", ["streams", "sharded"])
async def test_a_publish_waits_for_its_replicas(start_cluster, world, relay):
    h = await start_cluster(relay, nodes=1, node_flags=("--durability", "1"))
    info = await h.controls[0].info()
    assert info["retention"]["replicas_acked"] == 1
    with pytest.raises(ControlError) as refused:  # no replica yet: not durable, 503
        await h.controls[0].publish("task", world.task_a, {"type": "x"})
    assert refused.value.status == 503 and "replicas" in str(refused.value.body)

    replica = RedisServer()
    replica.start()
    primary = aioredis.Redis.from_url(h.redis.url, decode_responses=True)
    try:
        await primary.config_set("repl-diskless-sync-delay", 0)  # sync at once, not after 5 s
        follower = aioredis.Redis.from_url(replica.url, decode_responses=True)
        await follower.replicaof("127.0.0.1", h.redis.port)
        await follower.aclose()

        async def online() -> bool:  # attached and synced (a diskless sync starts after a few seconds)
            state = (await primary.info("replication")).get("slave0")
            return isinstance(state, dict) and state.get("state") == "online"
        await _until(online, timeout=20.0)
        answer = await h.controls[0].publish("task", world.task_a, {"type": "x"})
        assert answer["event_id"]
    finally:
        await primary.aclose()
        replica.stop()


@pytest.mark.req("NODE-3", "NODE-4")
async def test_on_a_redis_cluster_a_publish_waits_for_its_primarys_replica(session, world):
    """3 primaries with a replica each: a publish is acknowledged once the replica of the primary
    that owns its scope has it; while that replica is frozen, the same publish is a 503."""
    from redis.asyncio.cluster import RedisCluster

    from conformance.client import Control
    from reference.relay.streams import stream_key
    from scopehub.cluster import Cluster, ClusterSpec

    cluster = Cluster(ClusterSpec(nodes=1, relay="streams", redis_cluster="3:1", node_flags=("--durability", "1")))
    await cluster.start()
    store = cluster.redis.server
    router = RedisCluster.from_url(store.url)
    try:
        control = Control(session, cluster.urls[0], cluster.spec.control_token)
        await control.fixtures(world.fixtures())
        assert "redis_cluster" in (await control.info())["capabilities"]
        await router.initialize()
        owner = router.get_node_from_key(stream_key("task", world.task_a))
        index = next(i for i, p in enumerate(store.primaries) if p.port == owner.port)
        assert (await control.publish("task", world.task_a, {"type": "x"}))["event_id"]
        store.replicas[index].pause()
        try:
            with pytest.raises(ControlError) as refused:
                await control.publish("task", world.task_a, {"type": "x"})
            assert refused.value.status == 503
        finally:
            store.replicas[index].resume()
        assert (await control.publish("task", world.task_a, {"type": "x"}))["event_id"]
    finally:
        await router.aclose()
        await cluster.stop()

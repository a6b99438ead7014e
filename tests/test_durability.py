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

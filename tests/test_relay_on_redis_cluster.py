"""NODE-4 at the store: on a local Redis Cluster, a scope's keys share one slot and the relays'
streams spread over every primary (issue 17). The suite's case judges delivery and resume from
outside (conformance/cases/redis_cluster.py); here, what only the store shows."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from conformance.client import Control
from reference.relay.sharded import shard_key
from reference.relay.streams import TAG_GROUPS, nodes_key, stream_key
from scopehub.cluster import Cluster, ClusterSpec


def _tag_slot(key: str) -> int:
    return key_slot(key[key.index("{") + 1:key.index("}")].encode())


def test_a_scopes_keys_share_one_slot():
    for scope in (("task", str(uuid.uuid4())), ("workspace", "ws-{odd}-id"), ("user", "u}{x")):
        assert _tag_slot(stream_key(*scope)) == _tag_slot(nodes_key(*scope))
        assert key_slot(stream_key(*scope).encode()) == key_slot(nodes_key(*scope).encode())
    assert key_slot(shard_key(3).encode()) == key_slot((shard_key(3) + ":last").encode())


@pytest.mark.req("NODE-4")
@pytest.mark.parametrize("relay", ["streams", "sharded"])
@pytest.mark.heavy
async def test_the_streams_spread_over_every_primary(session, world, relay):
    cluster = Cluster(ClusterSpec(nodes=1, relay=relay, redis_cluster="3"))
    await cluster.start()
    try:
        control = Control(session, cluster.urls[0], cluster.spec.control_token)
        await control.fixtures(world.fixtures())
        for i in range(4 * TAG_GROUPS):  # workspace scopes need no fixtures; any id may be published to
            await control.publish("workspace", f"ws-{i}", {"type": "spread"})
        counts = []
        for primary in cluster.redis.server.primaries:
            r = aioredis.Redis.from_url(primary.url, decode_responses=True)
            try:
                keys = [k async for k in r.scan_iter(match="ws:scope:*:stream" if relay == "streams" else "ws:relay:*")]
                counts.append(sum([await r.xlen(k) for k in keys if await r.type(k) == "stream"]))
            finally:
                await r.aclose()
        assert len(counts) == 3 and all(c > 0 for c in counts), counts
        assert sum(counts) == 4 * TAG_GROUPS
    finally:
        await cluster.stop()

"""Relay strategies behind the Broadcaster seam.

- `memory`  (reference.broadcaster.MemoryBroadcaster): one node, no store.
- `streams` (streams.StreamsRelay): a Redis stream per scope, read through this node's own
  consumer group only for scopes with local subscribers (the seed change, PR #1429).
- `sharded` (sharded.ShardedRelay): a fixed set of shard streams, every node reads every
  shard and filters locally (Multica's current design)."""

from __future__ import annotations

from ..broadcaster import Broadcaster, MemoryBroadcaster
from .base import RelaySettings

STRATEGIES = ("memory", "streams", "sharded")


def make_broadcaster(strategy: str, node_id: str, settings: RelaySettings | None = None) -> Broadcaster:
    if strategy == "memory":
        if settings is None:
            return MemoryBroadcaster(node_id)
        return MemoryBroadcaster(node_id, max_len=settings.max_len, max_age_s=settings.max_age_s,
                                 max_bytes=settings.max_bytes)
    if settings is None or not settings.url:
        raise ValueError(f"the {strategy} relay needs a Redis URL")
    if strategy == "streams":
        from .streams import StreamsRelay

        return StreamsRelay(node_id, settings)
    if strategy == "sharded":
        from .sharded import ShardedRelay

        return ShardedRelay(node_id, settings)
    raise ValueError(f"unknown relay strategy {strategy!r} (expected one of {', '.join(STRATEGIES)})")

"""The `sharded` strategy (Multica's current design): a fixed number of shard streams
`ws:relay:{shard:n}`, the shard chosen by FNV-1a of the scope (as Multica's shardFor). A shard's
stream and its last-id hash share the hash tag `{shard:n}`, so on a Redis Cluster (NODE-4) the
append script touches one slot and the shards spread over the primaries.
Every node runs one blocking XREAD per shard, always, and the hub drops events of scopes
it has no subscriber for. Because a shard reader never stops, it is positioned before any
subscribe is acknowledged (DEL-1)."""

from __future__ import annotations

import asyncio

from .. import positions
from .base import RedisRelay, RelaySettings, crossed_epochs, epoch_key, new_client


def fnv1a32(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def shard_of(scope_type: str, scope_id: str, shards: int) -> int:
    return fnv1a32(scope_type.encode() + b"\0" + scope_id.encode()) % shards


def shard_key(n: int) -> str:
    return f"ws:relay:{{shard:{n}}}"


class ShardedRelay(RedisRelay):
    name = "sharded"

    def __init__(self, node_id: str, settings: RelaySettings):
        super().__init__(node_id, settings)
        read_timeout = settings.block_ms / 1000 + 3.0
        self.readers = [new_client(settings.url, read_timeout=read_timeout, cluster=settings.cluster)
                        for _ in range(settings.shards)]
        self.cursors: list[str] = []

    def shard_for(self, scope_type: str, scope_id: str) -> int:
        return shard_of(scope_type, scope_id, self.settings.shards)

    def _target(self, scope_type, scope_id):
        n = self.shard_for(scope_type, scope_id)
        return shard_key(n), shard_key(n) + ":last", f"{scope_type}\0{scope_id}", ["s", scope_type, "i", scope_id]

    def active_readers(self) -> int:
        return len(self.readers)

    async def start(self) -> None:
        await super().start()
        self.cursors = [await self._end_of(shard_key(n)) for n in range(self.settings.shards)]
        for n in range(self.settings.shards):
            self._spawn(f"reader-{n}", lambda n=n: self._read_loop(n))

    def cursor(self, scope_type, scope_id):
        if not self.cursors:
            return None
        return positions.parse_entry(self.cursors[self.shard_for(scope_type, scope_id)])

    async def replay(self, scope_type, scope_id, since):
        key, since_id = shard_key(self.shard_for(scope_type, scope_id)), positions.entry_str(since)
        # The scope's newest entry first: one appended while we scan then shows up in the scan.
        field = f"{scope_type}\0{scope_id}"
        pipe = self.write.pipeline(transaction=False)
        pipe.hget(key + ":last", field)
        pipe.hget(key + ":last", "e\0" + field)  # the epoch that wrote the scope's last entry
        pipe.get(epoch_key(key))
        last, last_epoch, epoch = await asyncio.wait_for(pipe.execute(), 5.0)
        mine = []
        async for page in self._entries_after(key, since_id):
            for entry in page:
                fields = entry[1]
                if fields.get("s") == scope_type and fields.get("i") == scope_id:
                    if not mine and fields.get("p") != since_id:
                        return None  # the scope's chain is broken: something after `since` is gone
                    mine.append(entry)
        if mine:
            return None if crossed_epochs(mine) else self._replayed(scope_type, scope_id, mine)
        # nothing after `since`: recovered only if this server wrote it (a promoted replica may lack
        # entries acknowledged after it, REP-4)
        return [] if last == since_id and last_epoch == epoch else None

    async def ends(self, scopes):
        pipe = self.write.pipeline(transaction=False)
        for scope_type, scope_id in scopes:
            pipe.hget(shard_key(self.shard_for(scope_type, scope_id)) + ":last", f"{scope_type}\0{scope_id}")
        lasts = await asyncio.wait_for(pipe.execute(), 2.0)
        return {scope: positions.parse_entry(last) if last else None for scope, last in zip(scopes, lasts)}

    async def _close_clients(self) -> None:
        for r in self.readers:
            await r.aclose()

    async def _read_loop(self, n: int) -> None:
        def deliver(entry_id: str, fields: dict) -> None:
            scope_type, scope_id = fields.get("s", ""), fields.get("i", "")
            if scope_type == "global" or self.sink.has_local(scope_type, scope_id):
                self._deliver(scope_type, scope_id, entry_id, fields)
            self.cursors[n] = entry_id

        await self._follow(n, self.readers[n], shard_key(n), lambda: self.cursors[n], deliver, self.settings.read_count)

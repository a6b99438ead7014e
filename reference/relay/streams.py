"""The `streams` strategy (the seed change): one stream per scope, `ws:scope:{rN}:{type}:{id}:stream`.

A node reads a scope only while it has local subscribers, through its own consumer group.
Opening a scope creates (or moves) the group at the stream's end and returns that cursor
before the hub sends the ack, so an event appended after the ack is always read (DEL-1).
Readers are a few blocking connections ("slots"), each reading all of its scopes in one
XREADGROUP; a slot is woken with CLIENT UNBLOCK when its scope set changes.

Every key of a scope carries the hash tag `{rN}`, N = the scope's reader group (of TAG_GROUPS):
the keys one slot reads together then share one Redis Cluster slot (NODE-4), as XREADGROUP over
several streams requires, and the groups spread over the primaries. On a cluster each reader
slot talks straight to the node that owns its tag, and follows it when the slot moves."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zlib
from dataclasses import dataclass, field

from redis.exceptions import ResponseError

from .. import positions
from . import scripts
from .base import PAGE, TRANSIENT, Backoff, RedisRelay, RelaySettings, crossed_epochs, epoch_key, new_client, now_entry_id, redirected

log = logging.getLogger("scopehub.relay.streams")

GLOBAL = ("global", "all")
_NOGROUP_KEY = re.compile(r"No such key '([^']+)'")


TAG_GROUPS = 16  # fixed cluster-wide: every node must name a scope's keys alike


def tag_group(scope_type: str, scope_id: str) -> int:
    return zlib.crc32(f"{scope_type}\0{scope_id}".encode()) % TAG_GROUPS


def stream_key(scope_type: str, scope_id: str) -> str:
    return f"ws:scope:{{r{tag_group(scope_type, scope_id)}}}:{scope_type}:{scope_id}:stream"


def nodes_key(scope_type: str, scope_id: str) -> str:
    return f"ws:scope:{{r{tag_group(scope_type, scope_id)}}}:{scope_type}:{scope_id}:nodes"


@dataclass
class _Reading:
    scope_type: str
    scope_id: str
    cursor: str  # the last entry delivered (or the group's start)


@dataclass
class _Slot:
    index: int
    client: object | None  # None: on a cluster, not pointed at its tag's owner yet
    client_id: int | None = None
    streams: dict[str, _Reading] = field(default_factory=dict)
    needs_group: set[str] = field(default_factory=set)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    blocked: bool = False  # a read is in flight
    unblocking: bool = False  # and a CLIENT UNBLOCK for it has been sent
    moved: bool = False  # cluster: find the tag's owner again before the next read
    waker: object | None = None  # cluster: a client of the same server, for CLIENT UNBLOCK
    reissued: list[asyncio.Future] = field(default_factory=list)  # wait for a read without a closed key


class StreamsRelay(RedisRelay):
    name = "streams"

    def __init__(self, node_id: str, settings: RelaySettings):
        super().__init__(node_id, settings)
        self.group = f"node:{self.instance}"
        self._read_timeout = settings.block_ms / 1000 + 3.0
        # On a cluster a slot reads one tag group, so there are exactly TAG_GROUPS of them, each
        # connected (lazily) to the node that owns its tag.
        count = TAG_GROUPS if settings.cluster else max(1, settings.reader_slots)
        self.slots = [_Slot(i, None if settings.cluster else new_client(settings.url, read_timeout=self._read_timeout))
                      for i in range(count)]
        self._open: dict[tuple[str, str], _Slot] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._open_group = self.write.register_script(scripts.OPEN_GROUP)
        self._repair_group = self.write.register_script(scripts.REPAIR_GROUP)
        self._last_sweep = 0.0

    def _target(self, scope_type, scope_id):
        key = stream_key(scope_type, scope_id)
        return key, key, "", []

    def active_readers(self) -> int:
        return len(self._open)

    async def start(self) -> None:
        await super().start()
        for i, slot in enumerate(self.slots):
            self._spawn(f"reader-{i}", lambda slot=slot: self._read_loop(slot))
        await self.on_first_subscriber(*GLOBAL)  # every node delivers global events

    async def _close_clients(self) -> None:
        for slot in self.slots:
            for client in (slot.client, slot.waker):
                if client is not None:
                    await client.aclose()

    async def _point_at_owner(self, slot: _Slot) -> None:
        """Cluster: connect the slot to the node that owns its tag now (after a failover or a
        resharding, the topology is read again first)."""
        await self.write.nodes_manager.initialize()
        node = self.write.get_node_from_key(f"{{r{slot.index}}}")
        url = f"redis://{node.host}:{node.port}"
        old = (slot.client, slot.waker)
        slot.client = new_client(url, read_timeout=self._read_timeout)
        slot.waker = new_client(url, read_timeout=2.0, max_connections=2)  # CLIENT UNBLOCK goes to the same server
        slot.client_id = None
        slot.needs_group.update(slot.streams)  # the owner may have changed: repair from the cursors
        for client in old:
            if client is not None:
                await self._best_effort(client.aclose())

    # -- first / last subscriber ----------------------------------------------------------------
    def _lock(self, scope: tuple[str, str]) -> asyncio.Lock:
        lock = self._locks.get(scope)
        if lock is None:
            lock = self._locks[scope] = asyncio.Lock()
        return lock

    async def on_first_subscriber(self, scope_type: str, scope_id: str) -> None:
        scope = (scope_type, scope_id)
        async with self._lock(scope):
            if scope in self._open:
                return
            key = stream_key(*scope)
            slot = self.slots[tag_group(*scope) % len(self.slots)]
            try:
                cursor = await asyncio.wait_for(self._open_group(
                    keys=[key, nodes_key(*scope)],
                    args=[self.group, self.ttl_ms, self.instance, self._node_expiry()]), 2.0)
                needs_group = False
            except TRANSIENT as e:
                # DEL-1 allows the ack; the reader creates the group once the store is back (and
                # the heartbeat lists this node in the scope's node set).
                self.metrics.error("xread_errors", e)
                cursor, needs_group = now_entry_id(), True
            slot.streams[key] = _Reading(scope_type, scope_id, cursor)
            if needs_group:
                slot.needs_group.add(key)
            self._open[scope] = slot
            await self._wake(slot)

    async def on_last_unsubscribed(self, scope_type: str, scope_id: str) -> None:
        scope = (scope_type, scope_id)
        if scope == GLOBAL or self._stopping:
            return
        if self.settings.linger_s:
            await asyncio.sleep(self.settings.linger_s)
            if self._stopping:
                return
        async with self._lock(scope):
            if scope not in self._open or (self.sink is not None and self.sink.has_local(*scope)):
                return
            slot = self._open.pop(scope)
            key = stream_key(*scope)
            slot.streams.pop(key, None)
            slot.needs_group.discard(key)
            # Destroying a group under a blocked read fails that whole read (NOGROUP): let the
            # slot re-issue its read without this key first.
            reissued = asyncio.get_running_loop().create_future()
            slot.reissued.append(reissued)
            await self._wake(slot)
            try:
                await asyncio.wait_for(reissued, self.settings.block_ms / 1000 + 3.0)
            except asyncio.TimeoutError:
                pass
            pipe = self.write.pipeline(transaction=False)
            pipe.xgroup_destroy(key, self.group)
            pipe.zrem(nodes_key(*scope), self.instance)
            await self._best_effort(pipe.execute(raise_on_error=False))

    async def _best_effort(self, aw) -> None:
        try:
            await asyncio.wait_for(aw, 2.0)
        except TRANSIENT as e:
            self.metrics.last_error = f"{type(e).__name__}: {e}"[:300]

    async def _wake(self, slot: _Slot) -> None:
        slot.wakeup.set()
        # One CLIENT UNBLOCK per blocked read, however many scopes open or close meanwhile.
        if slot.client_id is not None and slot.blocked and not slot.unblocking:
            slot.unblocking = True
            # from another client connected to the read's server: the slot's own pool must only
            # ever hold its reading connection, or the id it asked for may not be the one reading
            waker = slot.waker if self.settings.cluster else self.write
            await self._best_effort(waker.client_unblock(slot.client_id))

    def cursor(self, scope_type, scope_id):
        slot = self._open.get((scope_type, scope_id))
        reading = slot.streams.get(stream_key(scope_type, scope_id)) if slot else None
        return positions.parse_entry(reading.cursor) if reading else None

    # -- replay ---------------------------------------------------------------------------------
    async def replay(self, scope_type, scope_id, since):
        key, since_id = stream_key(scope_type, scope_id), positions.entry_str(since)
        # The stream's end, then its first page, in one round trip: Redis runs them in order, so
        # an event appended in between shows up among the entries instead of looking like a gap.
        pipe = self.write.pipeline(transaction=False)
        pipe.xinfo_stream(key)
        pipe.xrange(key, min=f"({since_id}", max="+", count=PAGE)
        pipe.xrange(key, min=since_id, max=since_id)  # its epoch, for a resume with nothing to replay
        pipe.get(epoch_key(key))
        info, entries, at_since, epoch = await asyncio.wait_for(pipe.execute(raise_on_error=False), 5.0)
        if isinstance(info, ResponseError):
            return None  # no stream: whatever followed `since` is gone with it
        if isinstance(entries, Exception):
            raise entries
        entries = list(entries)
        if len(entries) == PAGE:
            async for page in self._entries_after(key, entries[-1][0]):
                entries.extend(page)
        if entries:
            # The oldest retained entry after `since` must link back to it, else some were trimmed
            # or the stream is a new one (deleted, expired, lost in a restart).
            if entries[0][1].get("p") != since_id or crossed_epochs(entries):
                return None
            return self._replayed(scope_type, scope_id, entries)
        # Nothing after `since`: recovered only if this server wrote `since` itself (same epoch); a
        # promoted replica may lack entries acknowledged after it (REP-4).
        written_here = bool(at_since) and not isinstance(at_since, Exception) and at_since[0][1].get("e") == epoch
        return [] if info["last-generated-id"] == since_id and written_here else None

    async def ends(self, scopes):
        pipe = self.write.pipeline(transaction=False)
        for scope in scopes:
            pipe.xinfo_stream(stream_key(*scope))
        infos = await asyncio.wait_for(pipe.execute(raise_on_error=False), 2.0)
        # no stream (an error reply): nothing stored to skip
        return {scope: None if isinstance(info, Exception) else positions.parse_entry(info["last-generated-id"])
                for scope, info in zip(scopes, infos)}

    # -- reading --------------------------------------------------------------------------------
    async def _read_loop(self, slot: _Slot) -> None:
        backoff = Backoff()
        s = self.settings
        # (Re)started: whatever a failed run read but did not deliver is read again from each
        # scope's cursor, on a connection of its own.
        slot.client_id = None
        slot.needs_group.update(slot.streams)
        while not self._stopping:  # redis-py may swallow a cancellation in a blocking read
            for waiter in slot.reissued:  # no read in flight now; the next one lacks their keys
                if not waiter.done():
                    waiter.set_result(None)
            slot.reissued.clear()
            if not slot.streams:
                slot.wakeup.clear()
                await slot.wakeup.wait()
                continue
            try:
                if self.settings.cluster and (slot.client is None or slot.moved):
                    slot.moved = False
                    await self._point_at_owner(slot)
                if slot.client_id is None:
                    slot.client_id = await slot.client.client_id()
                if slot.needs_group:
                    await self._repair(slot)
                slot.wakeup.clear()
                keys = {k: ">" for k in slot.streams}
                slot.blocked, slot.unblocking = True, False
                try:
                    reply = await slot.client.xreadgroup(self.group, self.instance, keys, count=s.read_count,
                                                         block=s.block_ms)
                finally:
                    slot.blocked = False
            except ResponseError as e:
                if redirected(e):
                    slot.moved = True  # the tag's slot lives elsewhere now (or is being promoted)
                    self.reader_failed(id(slot), e)
                    await backoff.wait()
                    continue
                if "NOGROUP" not in str(e):
                    self.reader_failed(id(slot), e)
                    await backoff.wait()
                    continue
                m = _NOGROUP_KEY.search(str(e))
                slot.needs_group.update([m.group(1)] if m and m.group(1) in slot.streams else slot.streams)
                continue
            except Exception as e:  # noqa: BLE001 - the store went away, or redis-py broke under it
                if self._stopping:  # a cancelled read can surface as redis-py's own error
                    return
                if not isinstance(e, TRANSIENT):
                    log.warning("reader failed unexpectedly, reconnecting: %r", e)
                self.reader_failed(id(slot), e)
                await self._drop_connections(slot.client)
                slot.client_id = None  # a new connection has a new id
                slot.moved = self.settings.cluster  # its node may have failed over: ask the cluster
                slot.needs_group.update(slot.streams)  # and the group may be gone: repair from the cursor
                await backoff.wait()
                continue
            backoff.reset()
            self.reader_ok(id(slot))
            if reply:
                await self._consume(slot, reply)

    async def _repair(self, slot: _Slot) -> None:
        pipe = slot.client.pipeline(transaction=False)
        keys = [k for k in slot.needs_group if k in slot.streams]
        for key in keys:
            await self._repair_group(keys=[key], args=[self.group, slot.streams[key].cursor], client=pipe)
        results = await pipe.execute(raise_on_error=False)
        for key, res in zip(keys, results):
            if isinstance(res, Exception):
                raise res
            slot.needs_group.discard(key)
        slot.needs_group.intersection_update(slot.streams)

    async def _consume(self, slot: _Slot, reply) -> None:
        acks: list[tuple[str, list[str]]] = []
        for key, entries in reply:
            reading = slot.streams.get(key)
            if reading is None or not entries:
                continue  # closed while the read was in flight
            for entry_id, fields in entries:
                self._deliver(reading.scope_type, reading.scope_id, entry_id, fields)
                reading.cursor = entry_id
            acks.append((key, [e[0] for e in entries]))
        if not acks:
            return
        # On the slot's own connection (idle between reads): a failing publish that resets the
        # write pool can never break an acknowledgement, nor an acknowledgement a read.
        pipe = slot.client.pipeline(transaction=False)
        for key, ids in acks:
            pipe.xack(key, self.group, *ids)
        try:
            await asyncio.wait_for(pipe.execute(raise_on_error=False), 2.0)
            self.metrics.xack_total += sum(len(ids) for _, ids in acks)
        except Exception as e:  # noqa: BLE001 - unacknowledged entries were delivered; the read goes on
            self.metrics.error("xack_errors", e)
            slot.client_id = None  # its connection may have been replaced: ask for the id again

    # -- upkeep: node sets and the sweeper ------------------------------------------------------
    def _node_expiry(self) -> float:
        return time.time() + 3 * self.settings.heartbeat_s

    async def _on_heartbeat(self) -> None:
        scopes = list(self._open)
        pipe = self.write.pipeline(transaction=False)
        for scope in scopes:
            pipe.zadd(nodes_key(*scope), {self.instance: self._node_expiry()})
        await pipe.execute(raise_on_error=False)
        if time.monotonic() - self._last_sweep >= self.settings.sweep_s:
            self._last_sweep = time.monotonic()
            await self.sweep(scopes)

    async def sweep(self, scopes: list[tuple[str, str]] | None = None) -> int:
        """Remove stale node-set entries and the consumer groups of nodes whose heartbeat
        expired, for the scopes this node reads. Returns the number of groups removed."""
        scopes = list(self._open) if scopes is None else scopes
        removed = 0
        for scope in scopes:
            key = stream_key(*scope)
            await self.write.zremrangebyscore(nodes_key(*scope), "-inf", time.time())
            try:
                groups = await self.write.xinfo_groups(key)
            except ResponseError:
                continue  # stream gone; the reader repairs it
            for g in groups:
                name = g["name"]
                if not name.startswith("node:") or name == self.group:
                    continue
                if not await self.write.exists(self.heartbeat_key(name[5:])):
                    await self.write.xgroup_destroy(key, name)
                    removed += 1
        return removed

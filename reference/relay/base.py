"""What both Redis relays share: settings, the publish path (one Lua call per event),
reader connections, back-off, heartbeat and metrics."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AskError, ClusterDownError, MovedError, RedisError, ResponseError, TryAgainError
from ulid import ULID

from .. import events, positions
from ..broadcaster import Broadcaster, PublishFailed
from . import scripts

log = logging.getLogger("scopehub.relay")

# Errors after which a reader reconnects: the store went away or stopped answering.
TRANSIENT = (RedisError, OSError, asyncio.TimeoutError)


def redirected(e: BaseException) -> bool:
    """A Redis Cluster reply saying the key's slot is served elsewhere now, or is being promoted:
    MOVED, ASK, CLUSTERDOWN, TRYAGAIN. redis-py turns them into these classes and strips the word
    from the message ("MOVED 13851 host:port" reads "13851 host:port"), so the class decides."""
    return isinstance(e, (MovedError, AskError, ClusterDownError, TryAgainError)) or (
        isinstance(e, ResponseError) and str(e).startswith(("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")))


PAGE = 500  # entries per XRANGE of a replay
# AZ-5: revocations travel through one stream every node reads from its own cursor, so a node
# whose reader was cut off (a store outage, a failed task) still applies every revocation made
# meanwhile once it reads again; a pub/sub message would be lost to it.
REVOCATIONS = "ws:control:revocations"
REVOCATIONS_KEPT = 10_000  # approximate MAXLEN: a reader more than this far behind is long dead


@dataclass(frozen=True)
class RelaySettings:
    url: str = ""
    max_len: int = 10_000  # entries kept per stream (exact MAXLEN)
    max_age_s: float | None = 3600.0  # entries older than this are trimmed; idle keys expire
    max_bytes: int = 256 * 1024 * 1024  # memory relay: frames kept for resume, all scopes together
    block_ms: int = 2000  # XREAD BLOCK; readers are woken early when their scope set changes
    read_count: int = 256
    shards: int = 8
    reader_slots: int = 16  # streams strategy: blocking reader connections per node
    # streams strategy: keep reading a scope this long after its last local subscriber left, so a
    # client reconnecting within it costs no group teardown and re-creation (reconnect storms)
    linger_s: float = 5.0
    heartbeat_s: float = 10.0
    sweep_s: float = 30.0
    publish_timeout_s: float = 2.0
    # NODE-4: `url` names seed nodes of a Redis Cluster (a comma list): clients follow MOVED/ASK and
    # topology changes, and every key of one scope carries the same hash tag
    cluster: bool = False
    # A publish is acknowledged only once this many replicas hold its entry (Redis WAIT on the
    # connection that appended it), else 503: what a failover can lose is then what was never
    # acknowledged. 0: the primary's word is enough (the default, as Multica).
    durability: int = 0
    durability_timeout_ms: int = 1000


def new_client(url: str, *, read_timeout: float | None, max_connections: int = 64, cluster: bool = False):
    if cluster:
        return cluster_client(url, read_timeout=read_timeout, max_connections=max_connections)
    # No retries inside redis-py: publish must fail fast (NODE-3), readers retry themselves. A
    # blocking pool: in a reconnect storm, commands beyond `max_connections` wait for a free
    # connection (callers bound the wait) instead of failing at once with MaxConnectionsError.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=5.0, decode_responses=True, socket_connect_timeout=1.0,
        socket_timeout=read_timeout, retry=Retry(NoBackoff(), 0), health_check_interval=0)
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it


def cluster_client(urls: str, *, read_timeout: float | None, max_connections: int = 64):
    """A Redis Cluster client seeded from a comma list of node URLs. It keeps redis-py's own
    retries (a few, with back-off): they are what follows a failover or a moved slot, and every
    caller bounds its wait anyway. Partial coverage is allowed, so that the slots of a failed
    primary fail alone while a replica is promoted."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    seeds = []
    for url in urls.split(","):
        parts = urlsplit(url.strip())
        seeds.append(ClusterNode(parts.hostname or "127.0.0.1", parts.port or 6379))
    return RedisCluster(startup_nodes=seeds, decode_responses=True, socket_connect_timeout=1.0,
                        socket_timeout=read_timeout, max_connections=max_connections, require_full_coverage=False)


class Backoff:
    """Capped exponential back-off with jitter, reset on success: back within ~1 s of the
    store returning, well inside NODE-3's 10 s."""

    def __init__(self, first: float = 0.05, cap: float = 1.0):
        self.first, self.cap, self.delay = first, cap, first

    async def wait(self) -> None:
        await asyncio.sleep(self.delay * (0.5 + random.random() / 2))
        self.delay = min(self.cap, self.delay * 2)

    def reset(self) -> None:
        self.delay = self.first


class DurabilityShort(Exception):
    """Fewer replicas than required acknowledged an entry in time: the publish answers 503."""


class RelayMetrics:
    def __init__(self) -> None:
        self.connected = False  # the write path's last word; readers report their own below
        self.failing_readers: set = set()  # readers whose last read failed
        self.task_restarts = 0  # background tasks that failed and were restarted
        self.xadd_total = self.xadd_errors = 0
        self.xread_total = self.xread_errors = 0
        self.xack_total = self.xack_errors = 0
        self.durability_shortfalls = 0  # publishes answered 503 because too few replicas had them
        self.last_error = ""
        self.lag_ms = 0.0

    def error(self, counter: str, exc: BaseException) -> None:
        setattr(self, counter, getattr(self, counter) + 1)
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]

    def observe_entry(self, entry_id: str) -> None:
        self.lag_ms = max(0.0, time.time() * 1000 - positions.parse_entry(entry_id)[0])


def epoch_key(key: str) -> str:
    """The epoch key of a stream (scripts.APPEND): per hash tag, so it shares the stream's slot."""
    tag = key[key.index("{"):key.index("}") + 1]
    return f"ws:epoch:{tag}"


def crossed_epochs(entries) -> bool:
    """Some entry was written in another epoch than the one before it (a failover or a restart
    came between them): acknowledged entries may be missing there (REP-4)."""
    return any(fields.get("c") for _, fields in entries)


def now_entry_id() -> str:
    """A cursor for 'from now on' when the store cannot tell us its end (it is unreachable):
    events appended after the store returns carry later ids (this assumes node and Redis
    share a clock, as they do on one machine)."""
    return f"{int(time.time() * 1000)}-0"


class RedisRelay(Broadcaster):
    """Base for the Redis strategies. Subclasses say where an event goes (`_target`) and
    how it is read back."""

    capabilities = ("resume",)

    def __init__(self, node_id: str, settings: RelaySettings):
        super().__init__()
        self.node_id = node_id
        self.instance = f"{node_id}-{str(ULID())[-8:].lower()}"  # unique per process
        self.settings = settings
        self.metrics = RelayMetrics()
        if settings.cluster:
            self.capabilities = (*self.capabilities, "redis_cluster")
        self.write = new_client(settings.url, read_timeout=settings.publish_timeout_s, cluster=settings.cluster)
        self._append = self.write.register_script(scripts.APPEND)
        # its own connection: a blocking read must not hold one the publish path needs
        self.revocation_reader = new_client(settings.url, read_timeout=settings.block_ms / 1000 + 3.0,
                                            max_connections=2, cluster=settings.cluster)
        self._revocations_from = "0-0"  # the last revocation entry this node has applied
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self._primaries: dict[str, object] = {}  # cluster + durability: a plain client per primary

    @property
    def ttl_ms(self) -> int:
        return int(self.settings.max_age_s * 1000) if self.settings.max_age_s else 0

    def retention(self) -> dict:
        out: dict = {"max_len": self.settings.max_len, "max_age_s": self.settings.max_age_s}
        if self.settings.durability:
            out["replicas_acked"] = self.settings.durability  # each acknowledged entry is on this many replicas
        return out

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await asyncio.wait_for(self.write.ping(), 2.0)
            self.metrics.connected = True
        except TRANSIENT as e:  # start anyway: readers keep retrying until the store is back
            self.metrics.error("xread_errors", e)
            log.warning("redis unreachable at start: %s", e)
        self._spawn("heartbeat", self._heartbeat_loop)
        # Revocations made before this node started are not its business: the fixtures it is
        # given are its world (a restarted node gets them again).
        self._revocations_from = await self._end_of(REVOCATIONS)
        self._spawn("revocations", self._revocation_loop)

    def _spawn(self, name: str, run) -> asyncio.Task:
        """Run `run()` for the relay's lifetime. A task that fails is logged, counted in the
        health snapshot and started again: a reader that ended silently would leave every scope
        it reads dead on this node while health still said connected."""
        async def supervised() -> None:
            backoff = Backoff()
            while not self._stopping:
                try:
                    await run()
                    return
                except Exception as e:  # noqa: BLE001 - whatever it was, the task must come back
                    if self._stopping:
                        return
                    self.metrics.task_restarts += 1
                    self.metrics.last_error = f"{name}: {type(e).__name__}: {e}"[:300]
                    log.exception("relay task %s failed; restarting it", name)
                    await backoff.wait()

        task = asyncio.get_running_loop().create_task(supervised(), name=f"relay-{name}")
        self._tasks.append(task)
        return task

    def reader_failed(self, reader, exc: BaseException) -> None:
        self.metrics.error("xread_errors", exc)
        self.metrics.failing_readers.add(reader)

    def reader_ok(self, reader) -> None:
        self.metrics.connected = True  # a read answered: the store is back
        self.metrics.failing_readers.discard(reader)

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_clients()
        for client in self._primaries.values():
            await client.aclose()
        await self.revocation_reader.aclose()
        await self.write.aclose()

    async def _close_clients(self) -> None:
        """Close reader connections (subclasses)."""

    # -- publish --------------------------------------------------------------------------------
    def _target(self, scope_type: str, scope_id: str) -> tuple[str, str, str, list[str]]:
        """(stream key, last-id hash key, hash field, extra entry fields) for this scope."""
        raise NotImplementedError

    async def publish(self, scope_type, scope_id, frame, exclude_workspace=None):
        event_id, body = events.prepare(frame)
        key, last_key, field, extra = self._target(scope_type, scope_id)
        min_id = ""
        if self.settings.max_age_s:
            min_id = f"{int((time.time() - self.settings.max_age_s) * 1000)}-0"
        args = [self.settings.max_len, min_id, self.ttl_ms, field, *extra,
                "b", body, "t", events.type_of(frame), "x", exclude_workspace or ""]
        try:
            keys = [key, last_key, epoch_key(key)]
            if self.settings.durability:
                entry_id = await asyncio.wait_for(self._append_durably(keys, args),
                                                  self.settings.publish_timeout_s + self.settings.durability_timeout_ms / 1000)
            else:
                entry_id = await asyncio.wait_for(self._append(keys=keys, args=args), self.settings.publish_timeout_s)
        except DurabilityShort as e:  # the store answered: it is connected, its replicas are behind
            self.metrics.error("durability_shortfalls", e)
            raise PublishFailed(f"not durable: {e}") from None
        except Exception as e:  # noqa: BLE001 - whatever failed, the answer is 503 (NODE-3), never 500
            if not isinstance(e, TRANSIENT):
                log.warning("publish failed unexpectedly: %r", e)
            self.metrics.error("xadd_errors", e)
            self.metrics.connected = False
            await self._drop_connections()
            raise PublishFailed(f"relay store unavailable: {type(e).__name__}") from None
        self.metrics.xadd_total += 1
        self.metrics.connected = True
        return event_id, positions.encode(scope_type, scope_id, entry_id)

    async def _append_durably(self, keys: list[str], args: list) -> str:
        """Append, then WAIT on the same connection until `durability` replicas have the entry.
        WAIT counts only the writes of its own connection, so both go in one pipeline: on a
        cluster, through a plain client of the primary that owns the key's slot."""
        client = self.write
        if self.settings.cluster:
            node = self.write.get_node_from_key(keys[0])
            name = f"{node.host}:{node.port}"
            client = self._primaries.get(name)
            if client is None:
                client = self._primaries[name] = new_client(f"redis://{name}", read_timeout=self.settings.publish_timeout_s)
        pipe = client.pipeline(transaction=False)
        await self._append(keys=keys, args=args, client=pipe)
        pipe.wait(self.settings.durability, self.settings.durability_timeout_ms)
        try:
            entry_id, acked = await pipe.execute()
        except ResponseError as e:
            if self.settings.cluster and redirected(e):
                await self.write.nodes_manager.initialize()  # the slot moved: the next publish finds it
            raise
        if acked < self.settings.durability:
            # stored on the primary (and so MAY be delivered, NODE-3), but a failover could lose it
            raise DurabilityShort(f"{acked} of {self.settings.durability} replicas acknowledged the entry")
        return entry_id

    # -- revocation (AZ-5) ----------------------------------------------------------------------
    async def revoke(self, workspace_id: str, user_id: str) -> None:
        fields = {"w": workspace_id, "u": user_id, "n": self.instance}
        try:
            await asyncio.wait_for(self.write.xadd(REVOCATIONS, fields, maxlen=REVOCATIONS_KEPT, approximate=True),
                                   self.settings.publish_timeout_s)
        except Exception as e:  # noqa: BLE001 - whatever failed, the other nodes were not told: 503
            self.metrics.connected = False
            self.metrics.last_error = f"revoke: {type(e).__name__}: {e}"[:300]
            await self._drop_connections()
            raise PublishFailed(f"relay store unavailable: {type(e).__name__}") from None
        self.metrics.connected = True

    async def _follow(self, reader, client, key: str, cursor, on_entry, count: int) -> None:
        """Read one stream with blocking XREADs from `cursor()` on, handing each entry to
        `on_entry(entry_id, fields)`, which moves the cursor. A read that fails is counted,
        retried from the same cursor after a back-off, so no entry is skipped."""
        backoff = Backoff()
        while not self._stopping:  # redis-py may swallow a cancellation in a blocking read
            try:
                reply = await client.xread({key: cursor()}, count=count, block=self.settings.block_ms)
            except Exception as e:  # noqa: BLE001 - the store went away, or redis-py broke under it
                if self._stopping:  # a cancelled read can surface as redis-py's own error
                    return
                if not isinstance(e, TRANSIENT):
                    log.warning("reader of %s failed unexpectedly, reconnecting: %r", key, e)
                self.reader_failed(reader, e)
                await self._drop_connections(client)
                await backoff.wait()
                continue
            backoff.reset()
            self.reader_ok(reader)
            for _key, entries in reply or ():
                for entry_id, fields in entries:
                    on_entry(entry_id, fields)

    async def _revocation_loop(self) -> None:
        """Apply every other node's revocation, in order, from this node's cursor."""
        def apply(entry_id: str, fields: dict) -> None:
            workspace_id, user_id = fields.get("w"), fields.get("u")
            # its own revocations the node applied before it wrote them (POST /_control/revoke)
            if fields.get("n") != self.instance and workspace_id and user_id and self.on_revocation:
                self.on_revocation(workspace_id, user_id)
            self._revocations_from = entry_id

        await self._follow(REVOCATIONS, self.revocation_reader, REVOCATIONS, lambda: self._revocations_from, apply, 100)

    async def _end_of(self, key: str) -> str:
        """The stream's newest entry id: reading after it yields only what is appended from now on."""
        try:
            info = await asyncio.wait_for(self.write.xinfo_stream(key), 2.0)
            return info["last-generated-id"]
        except ResponseError:
            return "0-0"  # no stream yet: everything it will hold is new
        except TRANSIENT:
            return now_entry_id()

    async def _drop_connections(self, client=None) -> None:
        # After an outage the pool holds sockets to a server that is gone; each would fail one
        # more call. Drop the idle ones so the next call connects afresh; never one in use: a
        # command pending on it (another publish, a reader's XACK) would break inside redis-py.
        pool = getattr(client or self.write, "connection_pool", None)
        if pool is None:
            return  # a cluster client drops and refreshes its node connections itself
        try:
            await pool.disconnect(inuse_connections=False)
        except Exception as e:  # noqa: BLE001
            self.metrics.last_error = f"disconnect: {type(e).__name__}: {e}"[:300]

    @staticmethod
    def _frame(scope_type: str, scope_id: str, entry_id: str, fields: dict) -> str:
        return events.finish(fields.get("b") or "{}", scope_type, scope_id,
                             positions.encode(scope_type, scope_id, entry_id))

    def _deliver(self, scope_type: str, scope_id: str, entry_id: str, fields: dict) -> None:
        if not fields.get("b"):
            return
        assert self.sink is not None
        self.sink.deliver(scope_type, scope_id, self._frame(scope_type, scope_id, entry_id, fields),
                          fields.get("t", ""), fields.get("x") or None, positions.parse_entry(entry_id))
        self.metrics.xread_total += 1
        self.metrics.observe_entry(entry_id)

    # -- replay (REP) ---------------------------------------------------------------------------
    async def _entries_after(self, key: str, since_id: str):
        """Yield pages of the stream's entries after since_id, oldest first (bounded)."""
        start, budget = since_id, 2 * self.settings.max_len + 1000
        while budget > 0:
            page = await asyncio.wait_for(self.write.xrange(key, min=f"({start}", max="+", count=PAGE), 5.0)
            if not page:
                return
            yield page
            budget -= len(page)
            start = page[-1][0]
            if len(page) < PAGE:
                return

    def _replayed(self, scope_type: str, scope_id: str, entries: list) -> list:
        return [(positions.parse_entry(eid), self._frame(scope_type, scope_id, eid, f), f.get("x") or None)
                for eid, f in entries if f.get("b")]

    # -- heartbeat ------------------------------------------------------------------------------
    def heartbeat_key(self, instance: str | None = None) -> str:
        return f"ws:node:{instance or self.instance}:heartbeat"

    async def _heartbeat_loop(self) -> None:
        ttl = max(1, int(self.settings.heartbeat_s * 3))
        while not self._stopping:
            try:
                await self.write.set(self.heartbeat_key(), str(time.time()), ex=ttl)
                self.metrics.connected = True
                await self._on_heartbeat()
            except Exception as e:  # noqa: BLE001 - the next beat tries again
                self.metrics.connected = False
                self.metrics.last_error = f"heartbeat: {type(e).__name__}: {e}"[:300]
                await self._drop_connections()
            await asyncio.sleep(self.settings.heartbeat_s)

    async def _on_heartbeat(self) -> None:
        """Periodic upkeep (subclasses)."""

    def snapshot(self) -> dict:
        m = self.metrics
        return {
            "strategy": self.name, "node_id": self.node_id, "instance": self.instance,
            # connected only when the write path and every reader last succeeded
            "connected": m.connected and not m.failing_readers,
            "xadd_total": m.xadd_total, "xadd_errors": m.xadd_errors,
            "xread_total": m.xread_total, "xread_errors": m.xread_errors,
            "xack_total": m.xack_total, "xack_errors": m.xack_errors, "durability_shortfalls": m.durability_shortfalls,
            "last_error": m.last_error, "lag_ms": round(m.lag_ms, 1),
            "failing_readers": len(m.failing_readers), "task_restarts": m.task_restarts,
            "active_readers": self.active_readers(),
        }

    def active_readers(self) -> int:
        return 0

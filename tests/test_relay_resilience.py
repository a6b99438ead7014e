"""The Redis relays' readers never die silently (NODE-3, DEL-1), at the unit level, on a real
redis-server: a failure redis-py raises from a connection the write path reset, or any other
failure of a reader, is counted, shown in the health snapshot and survived, and every event is
still delivered. Found under repeated Redis freezes: a failing publish dropped the shared pool's
connections while a reader's XACK was pending on it, redis-py raised AttributeError, and the
read loop, which caught only transient errors, ended."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio.client import Pipeline

from reference.relay.base import RelaySettings
from reference.relay.sharded import ShardedRelay
from reference.relay.streams import StreamsRelay

RELAYS = {"streams": StreamsRelay, "sharded": ShardedRelay}
pytestmark = pytest.mark.req("NODE-3", "DEL-1")


class Sink:
    """The hub's side of the relay: records what is delivered, holds every scope."""

    def __init__(self) -> None:
        self.got: list[str] = []
        self.more = asyncio.Event()

    def deliver(self, scope_type, scope_id, data, etype, exclude_workspace, seq) -> int:
        self.got.append(json.loads(data)["payload"]["i"])
        self.more.set()
        return 1

    def has_local(self, scope_type, scope_id) -> bool:
        return True

    async def until(self, count: int, timeout: float = 10.0) -> list:
        async def wait():
            while len(self.got) < count:
                self.more.clear()
                await self.more.wait()
        await asyncio.wait_for(wait(), timeout)
        return self.got


async def started(kind: str, url: str):
    relay = RELAYS[kind]("n1", RelaySettings(url=url, block_ms=200, reader_slots=2, shards=2, linger_s=0))
    sink = Sink()
    relay.bind(sink)
    await relay.start()
    await relay.on_first_subscriber("task", "t1")
    return relay, sink


async def publish(relay, i: int) -> None:
    await relay.publish("task", "t1", {"type": "t", "payload": {"i": i}})


async def test_resetting_the_write_pool_never_breaks_a_command_in_flight(redis_server):
    """A failing publish resets the pool it used: a command pending on another of its
    connections (a publish, an acknowledgement, a replay) still completes."""
    relay = StreamsRelay("n1", RelaySettings(url=redis_server.url))
    try:
        pending = asyncio.create_task(relay.write.blpop(["nothing-here"], timeout=0.5))
        await until(lambda: relay.write.connection_pool._in_use_connections, "the BLPOP never went out")
        await relay._drop_connections()
        assert await asyncio.wait_for(pending, 5) is None
    finally:
        await relay.write.aclose()


async def test_an_acknowledgement_broken_inside_redis_py_costs_nothing(redis_server, monkeypatch):
    """redis-py's own AttributeError on the streams relay's XACK pipeline: counted, and the
    reader goes on (the sharded relay reads without a group: nothing to acknowledge)."""
    relay, sink = await started("streams", redis_server.url)
    broken = []
    real = Pipeline.execute

    async def execute(self, *a, **kw):
        if not broken and any(c[0][0] == "XACK" for c in self.command_stack):
            broken.append(1)
            raise AttributeError("'NoneType' object has no attribute 'writelines'")
        return await real(self, *a, **kw)
    monkeypatch.setattr(Pipeline, "execute", execute)
    try:
        for i in range(20):
            await publish(relay, i)
        assert await sink.until(20) == list(range(20))
        assert broken, "no acknowledgement was attempted"
        assert relay.snapshot()["xack_errors"] == 1
    finally:
        await relay.stop()


@pytest.mark.parametrize("kind", ["streams", "sharded"])
async def test_a_reader_that_fails_is_counted_restarted_and_reads_on_from_its_cursor(kind, redis_server, monkeypatch):
    """Any failure of a reader outside its store calls: the task is restarted, the snapshot says
    so, and the event it was handling is read again: nothing is lost."""
    relay, sink = await started(kind, redis_server.url)
    real = relay._deliver
    failed = []

    def deliver(*a, **kw):
        if not failed and a[2] != "0-0" and sink.got == [0, 1]:
            failed.append(1)
            raise RuntimeError("a bug in the hub")
        return real(*a, **kw)
    monkeypatch.setattr(relay, "_deliver", deliver)
    try:
        for i in range(10):
            await publish(relay, i)
        assert await sink.until(10) == list(range(10))
        snap = relay.snapshot()
        assert failed and snap["task_restarts"] == 1 and "a bug in the hub" in snap["last_error"], snap
        assert snap["connected"] is True, snap
    finally:
        await relay.stop()


async def until(cond, what: str, timeout: float = 5.0) -> None:
    """Poll a condition of the relay's state (there is no frame to await), bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("kind", ["streams", "sharded"])
async def test_health_says_disconnected_while_a_reader_fails(kind, redis_server, monkeypatch):
    relay, _ = await started(kind, redis_server.url)
    for i in range(8):  # scopes on every streams slot (crc32 spreads these eight over both)
        await relay.on_first_subscriber("task", f"t{i}")
    client = relay.slots[0].client if kind == "streams" else relay.readers[0]
    name = "xreadgroup" if kind == "streams" else "xread"
    real = getattr(client, name)

    async def failing(*a, **kw):
        raise ConnectionError("reader cut")
    try:
        monkeypatch.setattr(client, name, failing)
        await until(lambda: not relay.snapshot()["connected"], "a failing reader left health connected")
        assert relay.snapshot()["failing_readers"] == 1 and relay.snapshot()["xread_errors"] > 0
        monkeypatch.setattr(client, name, real)
        await until(lambda: relay.snapshot()["connected"], "health stayed disconnected after the reader recovered")
    finally:
        await relay.stop()

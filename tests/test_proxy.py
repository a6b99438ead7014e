"""scenarios.proxy.LinkProxy: a real TCP proxy between a client and the test's own redis-server,
used by the simulator to add latency to, cut or blackhole one node's link to Redis (NODE-3)."""

from __future__ import annotations

import asyncio
import os
import time

import psutil
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scenarios.proxy import LinkProxy
from scopehub.redis_provision import free_port

FAILS = (RedisConnectionError, RedisTimeoutError, ConnectionError, asyncio.TimeoutError)


@pytest.fixture
async def proxy(redis_server):
    p = LinkProxy("127.0.0.1", redis_server.port, name="node-0")
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def client():
    """client(url, timeout=2) -> redis.asyncio.Redis with socket timeouts and no retries (a
    failure shows at once instead of after backoffs); closed in teardown."""
    made: list[aioredis.Redis] = []

    def make(url: str, timeout: float = 2.0) -> aioredis.Redis:
        r = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                    retry=Retry(NoBackoff(), 0))
        made.append(r)
        return r

    yield make
    for r in made:
        await r.aclose()


async def _raw(proxy: LinkProxy):
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", proxy.port), 2)


async def _until(cond, timeout: float = 3.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def _sockets_on(port: int) -> list:
    """This process's TCP sockets with `port` at either end (TIME_WAIT ones are the kernel's)."""
    return [c for c in psutil.Process(os.getpid()).net_connections(kind="tcp")
            if (c.laddr and c.laddr.port == port) or (c.raddr and c.raddr.port == port)]


async def test_ping_set_get_through_the_proxy(proxy, client, redis_server):
    assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"
    assert proxy.url_for(3).endswith(f":{proxy.port}/3")
    assert proxy.port != redis_server.port
    r = client(proxy.url)
    assert await r.ping() is True
    assert await r.set("k", "v") is True
    assert await r.get("k") == b"v"
    s = proxy.stats.snapshot()
    assert s.accepted == 1 and s.active == 1 and s.refused == 0
    assert s.bytes_up > 0 and s.bytes_down > 0
    # the same data is visible directly: it really went to that Redis
    direct = client(redis_server.url)
    assert await direct.get("k") == b"v"


async def test_bulk_traffic_and_large_values(proxy, client):
    """Many pipelined commands and values far larger than the socket buffers (backpressure)."""
    r = client(proxy.url, timeout=10)
    n = 20_000
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"k{i}", i)
    assert all(await asyncio.wait_for(pipe.execute(), 20))
    values = await r.mget([f"k{i}" for i in range(n)])
    assert values == [str(i).encode() for i in range(n)]
    big = os.urandom(4 << 20)
    await r.set("big", big)
    assert await r.get("big") == big


@pytest.mark.req("NODE-3")
async def test_bounded_delay_queue_under_latency(redis_server, client):
    """A tiny max_buffer: reading pauses while the delay queue is full, and nothing is lost."""
    p = LinkProxy("127.0.0.1", redis_server.port, max_buffer=16 << 10)
    await p.start()
    try:
        r = client(p.url, timeout=10)
        await r.ping()
        p.set_latency(0.02)
        big = os.urandom(1 << 20)
        await asyncio.wait_for(r.set("big", big), 10)
        assert await asyncio.wait_for(r.get("big"), 10) == big
    finally:
        await p.stop()


@pytest.mark.req("NODE-3")
async def test_latency_is_added_each_way(proxy, client):
    r = client(proxy.url, timeout=5)
    await r.ping()  # connection up before the latency
    proxy.set_latency(0.2)
    assert proxy.latency == 0.2 and proxy.mode == "latency"
    t0 = time.monotonic()
    assert await asyncio.wait_for(r.ping(), 5) is True
    elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed < 3.0, elapsed
    proxy.set_latency(0)
    t0 = time.monotonic()
    await r.ping()
    assert time.monotonic() - t0 < 0.2


@pytest.mark.req("NODE-3")
async def test_latency_keeps_pipelined_order(proxy, client):
    r = client(proxy.url, timeout=5)
    await r.ping()
    proxy.set_latency(0.05)
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.rpush("order", i)
        pipe.incr("counter")
    pipe.lrange("order", 0, -1)
    out = await asyncio.wait_for(pipe.execute(), 5)
    assert out[0:1000:2] == list(range(1, 501))
    assert out[1:1000:2] == list(range(1, 501))
    assert out[-1] == [str(i).encode() for i in range(500)]


@pytest.mark.req("NODE-3")
async def test_latency_does_not_add_up_over_chunks(proxy):
    """Ten PINGs sent 20 ms apart as separate chunks: each arrives 2*latency after it was sent,
    not after the ones before it (which would take ten times the latency)."""
    reader, writer = await _raw(proxy)
    try:
        proxy.set_latency(0.2)
        t0 = time.monotonic()
        for _ in range(10):
            writer.write(b"PING\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)  # spacing the chunks, not synchronisation
        first = await asyncio.wait_for(reader.readexactly(7), 3)
        t_first = time.monotonic() - t0
        rest = await asyncio.wait_for(reader.readexactly(7 * 9), 3)
        t_all = time.monotonic() - t0
        assert first + rest == b"+PONG\r\n" * 10
        assert t_first >= 0.4, t_first
        assert t_all < 1.5, t_all  # accumulating delays would take over 2 s
    finally:
        writer.close()


@pytest.mark.req("NODE-3")
async def test_lowering_latency_does_not_reorder(proxy):
    reader, writer = await _raw(proxy)
    try:
        proxy.set_latency(0.3)
        writer.write(b"ECHO a\r\n")
        await writer.drain()
        await _until(lambda: proxy.pending_bytes == 8, what="'a' held by the proxy")
        assert proxy.stats.bytes_up == 0
        proxy.set_latency(0)
        writer.write(b"ECHO b\r\n")  # must not overtake "a", still waiting out its 0.3 s
        await writer.drain()
        data = await asyncio.wait_for(reader.readexactly(14), 3)
        assert data == b"$1\r\na\r\n$1\r\nb\r\n"
    finally:
        writer.close()


@pytest.mark.req("NODE-3")
async def test_heal_releases_delayed_chunks_at_once(proxy):
    reader, writer = await _raw(proxy)
    try:
        proxy.set_latency(30)
        writer.write(b"PING\r\n")
        await writer.drain()
        await _until(lambda: proxy.pending_bytes == 6, what="the PING held by the proxy")
        t0 = time.monotonic()
        proxy.heal()
        assert proxy.latency == 0 and proxy.mode == "ok"
        assert await asyncio.wait_for(reader.readexactly(7), 3) == b"+PONG\r\n"
        assert time.monotonic() - t0 < 1.0
    finally:
        writer.close()


@pytest.mark.req("NODE-3")
async def test_cut_fails_fast_refuses_new_and_heal_restores(proxy, client):
    r = client(proxy.url, timeout=2)
    await r.set("k", "before")
    await proxy.cut()
    assert proxy.mode == "cut" and proxy.stats.active == 0

    t0 = time.monotonic()
    with pytest.raises(FAILS):
        await asyncio.wait_for(r.get("k"), 5)
    assert time.monotonic() - t0 < 2.0

    fresh = client(proxy.url, timeout=2)
    t0 = time.monotonic()
    with pytest.raises(FAILS):
        await asyncio.wait_for(fresh.ping(), 5)
    assert time.monotonic() - t0 < 2.0
    assert proxy.stats.refused >= 1

    # a raw connection is reset (or closed) at once
    reader, writer = await _raw(proxy)
    try:
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 2)
    finally:
        writer.close()

    proxy.heal()
    assert proxy.mode == "ok"
    assert await asyncio.wait_for(r.get("k"), 3) == b"before"  # redis-py reconnects
    assert await asyncio.wait_for(fresh.ping(), 3) is True
    assert proxy.stats.active == 2


@pytest.mark.req("NODE-3")
async def test_cut_drops_chunks_in_flight(proxy, client):
    """A command waiting out a latency when the link is cut is never delivered."""
    r = client(proxy.url, timeout=2)
    await r.ping()
    proxy.set_latency(0.5)
    pending = asyncio.create_task(r.set("lost", "x"))
    await _until(lambda: proxy.pending_bytes > 0, what="the SET in the delay queue")
    await proxy.cut()
    with pytest.raises(FAILS):
        await asyncio.wait_for(pending, 3)
    proxy.heal()
    assert await asyncio.wait_for(r.exists("lost"), 3) == 0


@pytest.mark.req("NODE-3")
async def test_blackhole_hangs_until_heal(proxy, client):
    r = client(proxy.url, timeout=10)
    await r.ping()
    await proxy.blackhole()
    assert proxy.mode == "blackhole"
    pending = asyncio.create_task(r.incr("hits"))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(pending), 0.5)
    assert not pending.done()
    # a connection opened during the blackhole hangs as well (TCP connect itself succeeds)
    late = client(proxy.url, timeout=10)
    late_ping = asyncio.create_task(late.ping())
    done, _ = await asyncio.wait({late_ping}, timeout=0.3)
    assert not done
    assert proxy.stats.active == 2  # nothing was closed

    proxy.heal()
    assert await asyncio.wait_for(pending, 3) == 1  # delivered once, late
    assert await asyncio.wait_for(late_ping, 3) is True
    assert await r.get("hits") == b"1"


@pytest.mark.req("NODE-3")
async def test_blackhole_holds_delayed_chunks(proxy, client):
    r = client(proxy.url, timeout=10)
    await r.ping()
    proxy.set_latency(0.1)
    pending = asyncio.create_task(r.incr("n"))
    await _until(lambda: proxy.pending_bytes > 0, what="the INCR in the delay queue")
    await proxy.blackhole()
    done, _ = await asyncio.wait({pending}, timeout=0.5)  # well past 2 * 0.1 s
    assert not done
    proxy.heal()
    assert await asyncio.wait_for(pending, 3) == 1
    assert proxy.latency == 0


async def test_upstream_unreachable(client):
    p = LinkProxy("127.0.0.1", free_port(), connect_timeout=1)
    await p.start()
    try:
        r = client(p.url, timeout=2)
        with pytest.raises(FAILS):
            await asyncio.wait_for(r.ping(), 5)
        await _until(lambda: p.stats.upstream_failures == 1 and p.stats.active == 0,
                     what="upstream failure counted")
    finally:
        await p.stop()


async def test_stop_closes_everything_and_leaks_nothing(redis_server, client):
    before = {t for t in asyncio.all_tasks() if not t.done()}
    p = LinkProxy("127.0.0.1", redis_server.port)
    port = await p.start()
    rs = [client(p.url, timeout=2) for _ in range(5)]
    await asyncio.gather(*(r.ping() for r in rs))
    p.set_latency(0.3)
    slow = asyncio.create_task(rs[0].ping())
    await _until(lambda: p.pending_bytes > 0, what="a chunk waiting in a delay queue")
    assert p.stats.active == 5
    await p.stop()
    assert p.mode == "stopped" and p.stats.active == 0

    with pytest.raises(OSError):
        w = None
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        finally:
            if w is not None:
                w.close()
    with pytest.raises(FAILS):
        await asyncio.wait_for(slow, 3)
    with pytest.raises(FAILS):
        await asyncio.wait_for(rs[1].ping(), 3)
    for r in rs:
        await r.aclose()
    await _until(lambda: not _sockets_on(port) and not _sockets_on(redis_server.port),
                 what="no sockets left on the proxy or upstream port")
    leaked = {t for t in asyncio.all_tasks() if not t.done()} - before - {asyncio.current_task()}
    assert not leaked, leaked

    # a stopped proxy starts again on the same port
    assert await p.start() == port
    try:
        r = client(p.url, timeout=2)
        assert await asyncio.wait_for(r.ping(), 3) is True
    finally:
        await p.stop()


async def test_client_close_closes_the_upstream_connection(proxy, client, redis_server):
    r = client(proxy.url)
    await asyncio.gather(*(r.ping() for _ in range(3)))  # a few pooled connections
    assert proxy.stats.active == 3
    await r.aclose()
    await _until(lambda: proxy.stats.active == 0, what="links closed after the client's EOF")
    await _until(lambda: not _sockets_on(redis_server.port), what="upstream sockets closed")
    reader, writer = await _raw(proxy)  # half-close: the reply still comes back after our EOF
    try:
        writer.write(b"PING\r\n")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 3) == b"+PONG\r\n"
    finally:
        writer.close()
    await _until(lambda: proxy.stats.active == 0, what="half-closed link finished")

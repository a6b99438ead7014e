"""Floor measurements: what the machine does with no hub in the way.

- `start_floor_server`: the bare aiohttp send loop (bench.floor_server) as a process, driven
  by the same publisher and load generator as the nodes, so its curve is directly comparable.
- `redis_floor`: raw XADD and XREAD round trips from Python (redis-py asyncio, one connection
  each, one command at a time), and XADD -> XREAD BLOCK latency at a fixed rate: the least a
  relay through Redis can add to publish-to-deliver latency.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import aiohttp
import redis.asyncio as aioredis

from scopehub.processes import NodeProcess
from scopehub.redis_provision import free_port

from .publisher import PublishResult
from .stats import exact_percentiles


async def start_floor_server(log_path: str | None = None) -> NodeProcess:
    port = free_port()
    proc = NodeProcess([sys.executable, "-m", "bench.floor_server", "--port", str(port)], "floor",
                       log_path=log_path)
    await proc.start(30)
    return proc


def floor_driver(session: aiohttp.ClientSession, url: str):
    """A step's load for the floor: the server's own timed send loop (POST /run)."""

    async def drive(targets, rate: float, duration: float, k: int, pad: str) -> PublishResult:
        async with session.post(url.rstrip("/") + "/run",
                                json={"rate": rate, "seconds": duration, "k": k, "pad": pad},
                                timeout=aiohttp.ClientTimeout(total=3 * duration + 60)) as r:
            doc = await r.json()
        return PublishResult(rate, doc["published"], 0, doc["t_start"], doc["t_end"], {0: doc["published"]})

    return drive


async def redis_floor(url: str, *, n: int = 2000, rate: float = 1000.0, seconds: float = 3.0,
                      payload_bytes: int = 300) -> dict:
    """XADD and XREAD round trips (sequential) and XADD -> XREAD BLOCK latency at `rate`/s."""
    key = f"bench:floor:{os.getpid()}:{time.time_ns()}"
    body = "x" * payload_bytes
    w = aioredis.Redis.from_url(url, decode_responses=True)
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        await w.ping()
        await r.ping()
        # XADD round trips
        lat: list[float] = []
        t0 = time.perf_counter()
        for _ in range(n):
            a = time.perf_counter()
            await w.xadd(key, {"b": body}, maxlen=10_000, approximate=False)
            lat.append(time.perf_counter() - a)
        xadd = {**exact_percentiles(lat), "ops_per_s": n / (time.perf_counter() - t0)}
        # XREAD round trips (non-blocking, one entry)
        lat = []
        t0 = time.perf_counter()
        for _ in range(n):
            a = time.perf_counter()
            await r.xread({key: "0-0"}, count=1)
            lat.append(time.perf_counter() - a)
        xread = {**exact_percentiles(lat), "ops_per_s": n / (time.perf_counter() - t0)}
        # XADD -> XREAD BLOCK: what a relay adds at best
        pipe_key = key + ":pipe"
        last = (await w.xadd(pipe_key, {"t": repr(time.time()), "b": body}))
        got: list[float] = []
        stop = asyncio.Event()

        async def reader() -> None:
            cursor = last
            while not stop.is_set():
                reply = await r.xread({pipe_key: cursor}, count=256, block=500)
                now = time.time()
                for _k, entries in reply or ():
                    for entry_id, fields in entries:
                        got.append(now - float(fields["t"]))
                        cursor = entry_id

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        total = int(rate * seconds)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(total):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            await w.xadd(pipe_key, {"t": repr(time.time()), "b": body})
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, 2.0)
        pipe = {**exact_percentiles(got), "rate": rate, "sent": total}
        await w.delete(key, pipe_key)
        return {"xadd": xadd, "xread": xread, "xadd_to_xread_block": pipe, "payload_bytes": payload_bytes}
    finally:
        await w.aclose()
        await r.aclose()


async def redis_wait_floor(url: str, *, n: int = 2000, replicas: int = 1, payload_bytes: int = 300) -> dict:
    """What WAIT costs Redis itself: sequential XADD round trips alternating with XADD + WAIT
    `replicas` 1000 in one pipeline (what the relay sends with --durability), on one connection."""
    key = f"bench:waitfloor:{os.getpid()}:{time.time_ns()}"
    body = "x" * payload_bytes
    w = aioredis.Redis.from_url(url, decode_responses=True)
    plain: list[float] = []
    waited: list[float] = []
    short = 0
    try:
        await w.ping()
        for i in range(2 * n):  # alternating, so a busier moment of the machine falls on both
            a = time.perf_counter()
            if i % 2 == 0:
                await w.xadd(key, {"b": body}, maxlen=10_000, approximate=False)
                plain.append(time.perf_counter() - a)
                continue
            pipe = w.pipeline(transaction=False)
            pipe.xadd(key, {"b": body}, maxlen=10_000, approximate=False)
            pipe.wait(replicas, 1000)
            _entry, acked = await pipe.execute()
            waited.append(time.perf_counter() - a)
            short += acked < replicas
        await w.delete(key)
    finally:
        await w.aclose()
    return {"xadd": exact_percentiles(plain), "xadd_wait": exact_percentiles(waited), "replicas": replicas,
            "short": short}

"""One benchmark run: the floor, then each workload on the systems it needs, then ratios.

Without given nodes it starts everything itself: a redis-server child on a free port (never
anybody's Redis), reference nodes as real processes (scopehub.cluster), the bare send-loop
server, and the load generator's worker processes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable

import aiohttp

from conformance.client import Control
from scopehub.redis_provision import RedisServer

from . import workloads as wl
from .durability import durability
from .floor import floor_driver, redis_floor, start_floor_server
from .loadgen import WorkerPool
from .targets import System, given_system, start_system

WORKLOADS = ("floor", "hot_scope", "three_nodes", "many_scopes", "durability")

CAVEAT = ("This machine has {cores} core(s), shared by the nodes, Redis, the load generator's "
          "workers and the publisher: the figures are a lower bound for the server, and a node's "
          "share of a core is what it got, not what it could use alone.")


def _machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import aiohttp as _a
    import redis as _r

    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "aiohttp": _a.__version__, "redis_py": _r.__version__, "platform": platform.platform()}


async def run(sizes: wl.Sizes, *, nodes: list[str] | None = None, control_token: str | None = None,
              only: tuple[str, ...] = WORKLOADS, progress: Callable[[str], None] = lambda _m: None,
              quick: bool = False) -> dict:
    started = time.time()
    machine = _machine()
    machine["loadavg_at_start"] = list(os.getloadavg())
    result: dict = {
        "meta": {"started_at": started, "quick": quick, "sizes": dataclasses.asdict(sizes), "machine": machine,
                 "mode": "given nodes" if nodes else "own nodes", "given_nodes": nodes or [],
                 "caveat": CAVEAT.format(cores=machine["cores"])},
        "floor": {},
        "workloads": [],
        "warnings": [],
    }
    token = control_token or secrets.token_hex(12)
    pool = await WorkerPool(sizes.workers, sizes.client).start()
    redis: RedisServer | None = None
    connector = aiohttp.TCPConnector(limit=128)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            ctx = wl.Context(session, pool, sizes, progress)
            if "floor" in only:
                floor = await start_floor_server()
                try:
                    url = floor.base_url or ""
                    system = System("bare aiohttp", "floor", [url], [Control(session, url, "floor")], [floor.pid],
                                    driver=floor_driver(session, url))
                    result["floor"]["send_loop"] = await wl.floor_curve(ctx, system)
                finally:
                    await floor.terminate()
            needs_redis = nodes is None and (
                "floor" in only or any(r != "memory" for r in sizes.w1_relays) or
                "three_nodes" in only or "many_scopes" in only)
            if needs_redis:
                redis = RedisServer()
                await asyncio.to_thread(redis.start)
                result["meta"]["redis"] = redis.label
            if "floor" in only and redis is not None:
                progress("floor: raw Redis XADD / XREAD round trips")
                result["floor"]["redis"] = await redis_floor(redis.url, n=sizes.redis_floor_n,
                                                             seconds=sizes.redis_floor_s,
                                                             payload_bytes=sizes.payload_bytes + 100)
            if nodes is None:
                await _own_nodes(ctx, result, redis, token, only)
            else:
                await _given_nodes(ctx, result, nodes, token, only)
            if "durability" in only and nodes is None:
                found, result["durability"] = await durability(ctx, token)
                result["workloads"].extend(found)
            elif "durability" in only:
                ctx.warn("durability: skipped with --node (it needs a Redis primary with a replica of its own)")
            result["warnings"] = ctx.warnings
    finally:
        await pool.stop()
        if redis is not None:
            await asyncio.to_thread(redis.stop)
    result["meta"]["seconds"] = time.time() - started
    result["meta"]["machine"]["loadavg_at_end"] = list(os.getloadavg())
    add_ratios(result)
    return result


async def _own_nodes(ctx: wl.Context, result: dict, redis: RedisServer | None, token: str,
                     only: tuple[str, ...]) -> None:
    s = ctx.sizes

    async def system(relay: str, n: int) -> System:
        if relay != "memory":
            assert redis is not None
            await asyncio.to_thread(redis.restart)  # an empty Redis for each system
        return await start_system(ctx.session, relay, n, token,
                                  redis_url=redis.url if redis else None, redis_pid=redis.pid if redis else None)

    if "hot_scope" in only or ("many_scopes" in only and s.w3_on_memory):
        for relay in s.w1_relays:
            if "hot_scope" not in only and relay != "memory":
                continue
            sys_ = await system(relay, 1)
            try:
                if "hot_scope" in only:
                    result["workloads"].append(await wl.hot_scope(ctx, sys_))
                if relay == "memory" and "many_scopes" in only and s.w3_on_memory:
                    result["workloads"].append(await wl.many_scopes(ctx, sys_))
            finally:
                await sys_.stop()
    if "three_nodes" in only or "many_scopes" in only:
        for relay in s.w2_relays:
            sys_ = await system(relay, 3)
            try:
                if "three_nodes" in only:
                    result["workloads"].append(await wl.three_nodes(ctx, sys_))
                if "many_scopes" in only:
                    result["workloads"].append(await wl.many_scopes(ctx, sys_))
            finally:
                await sys_.stop()


async def _given_nodes(ctx: wl.Context, result: dict, urls: list[str], token: str, only: tuple[str, ...]) -> None:
    sys_ = await given_system(ctx.session, urls, token)
    if "hot_scope" in only:
        result["workloads"].append(await wl.hot_scope(ctx, sys_))
    if "three_nodes" in only and len(urls) >= 2:
        result["workloads"].append(await wl.three_nodes(ctx, sys_))
    if "many_scopes" in only:
        result["workloads"].append(await wl.many_scopes(ctx, sys_))


def add_ratios(result: dict) -> None:
    """Each workload as a ratio to the floor: deliveries/s against the bare send loop's, and
    (through Redis) median latency against XADD -> XREAD BLOCK."""
    send = result["floor"].get("send_loop") or {}
    floor_peak = send.get("peak_deliveries_per_s") or 0.0
    floor_sust = send.get("sustained_deliveries_per_s") or 0.0
    floor_cpu = send.get("deliveries_per_node_cpu_s") or 0.0
    redis_pipe = ((result["floor"].get("redis") or {}).get("xadd_to_xread_block") or {})
    for w in result["workloads"]:
        w["ratio_to_floor"] = (w["peak_deliveries_per_s"] / floor_peak) if floor_peak else None
        w["sustained_ratio_to_floor"] = (w["sustained_deliveries_per_s"] / floor_sust) if floor_sust else None
        # Per CPU-second of the server: robust to how much of the shared machine each one got.
        mine = w.get("deliveries_per_node_cpu_s")
        w["cpu_ratio_to_floor"] = (mine / floor_cpu) if mine and floor_cpu else None
        if w.get("relay") in ("streams", "sharded") and redis_pipe.get("p50_ms"):
            kept = [st for st in w["steps"] if st["p50_ms"] is not None]
            if kept:
                w["p50_vs_redis_floor"] = kept[0]["p50_ms"] / redis_pipe["p50_ms"]


def python_label() -> str:
    return f"{sys.executable} ({platform.python_version()})"

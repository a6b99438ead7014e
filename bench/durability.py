"""The durability workload (issue 17): what `--durability 1` costs a publish.

Two systems of `streams` nodes on the same store, a redis-server primary with one replica
attached (bench.replicated): the default (`--durability 0`) and `--durability 1` (after the
append script, `WAIT 1 1000` on the same connection; 503 when the replica did not acknowledge).
Both are up for the whole workload and the steps alternate between them at each rate (default,
then durable), so a change in how busy the shared machine is falls on both alike. Each step
reports the control API publish call's round trip (p50/p99), the publish-to-deliver latency and
the throughput, as every workload does; `comparison` pairs them rate by rate with the ratio.
Before the systems start, the same primary measures WAIT alone: sequential XADD round trips
alternating with XADD + WAIT 1 (bench.floor.redis_wait_floor)."""

from __future__ import annotations

import asyncio

from .floor import redis_wait_floor
from .loadgen import ConnSpec
from .replicated import ReplicatedRedis
from .targets import BenchWorld, System, start_system
from .workloads import Context, _connect, _health, run_step, summarize

NOTE = ("The replica is another redis-server on this machine (loopback): WAIT here costs a local round "
        "trip and the replica's share of the same cores; a replica across a network adds its round trip.")


def _ratio(a: float | None, b: float | None) -> float | None:
    return b / a if a and b is not None else None


def compare(default: dict, durable: dict) -> list[dict]:
    """Rate by rate: durable over default for the publish round trip and the delivery latency."""
    rows = []
    for a, b in zip(default["steps"], durable["steps"]):
        rows.append({
            "rate": a["offered_events_per_s"],
            "achieved": [a["achieved_events_per_s"], b["achieved_events_per_s"]],
            "publish_p50_ms": [a["publish_p50_ms"], b["publish_p50_ms"]],
            "publish_p99_ms": [a["publish_p99_ms"], b["publish_p99_ms"]],
            "delivery_p50_ms": [a["p50_ms"], b["p50_ms"]],
            "delivery_p99_ms": [a["p99_ms"], b["p99_ms"]],
            "publish_failed": [a["publish_failed"], b["publish_failed"]],
            "publish_p50_ratio": _ratio(a["publish_p50_ms"], b["publish_p50_ms"]),
            "publish_p99_ratio": _ratio(a["publish_p99_ms"], b["publish_p99_ms"]),
            "delivery_p50_ratio": _ratio(a["p50_ms"], b["p50_ms"]),
            "throughput_ratio": _ratio(a["achieved_events_per_s"], b["achieved_events_per_s"]),
        })
    return rows


async def durability(ctx: Context, token: str) -> tuple[list[dict], dict]:
    """Start the replicated store and both systems, measure, stop everything (also on failure)."""
    s = ctx.sizes
    store = ReplicatedRedis()
    systems: list[System] = []
    try:
        await asyncio.to_thread(store.start)
        ctx.progress(f"durability: {store.label}")
        floor = await redis_wait_floor(store.url, n=s.dur_floor_n, payload_bytes=s.payload_bytes + 100)
        ctx.progress(f"durability floor: XADD p50 {floor['xadd']['p50_ms']:.3f} ms, XADD + WAIT 1 p50 "
                     f"{floor['xadd_wait']['p50_ms']:.3f} ms")
        for k in (0, 1):
            label = f"streams x{s.dur_nodes}" + (f" durability={k}" if k else "")
            sys_ = await start_system(ctx.session, "streams", s.dur_nodes, token, redis_url=store.url,
                                      redis_pid=store.primary.pid, node_flags=("--durability", str(k)),
                                      label=label)
            sys_.extra_pids = {"redis-replica": store.replica.pid}
            systems.append(sys_)
        pids = dict(store.pids)  # every process this workload started, stopped below
        for sys_ in systems:
            pids.update({f"{sys_.label} node-{i + 1}": pid for i, pid in enumerate(sys_.pids)})
        workloads = await _measure(ctx, systems)
        comparison = {"systems": [w["system"] for w in workloads], "rows": compare(*workloads), "note": NOTE,
                      "store": store.label, "pids": pids, "redis_floor": floor}
    finally:
        try:
            for sys_ in systems:
                await sys_.stop()
        finally:
            await asyncio.to_thread(store.stop)
    return workloads, comparison


async def _measure(ctx: Context, systems: list[System]) -> list[dict]:
    s = ctx.sizes
    plans = []
    for sys_ in systems:
        world = BenchWorld(s.dur_scopes)
        cookie = await sys_.load_world(world)
        specs = [ConnSpec(sys_.urls[j % sys_.nodes], w, cookie) for w in world.ws for j in range(s.dur_subs)]
        conn = await _connect(ctx, specs, f"durability, {sys_.label}")
        plans.append((sys_, [("workspace", w) for w in world.ws], conn["connected"] // max(1, s.dur_scopes),
                      conn["connected"]))
    steps: list[list[dict]] = [[] for _ in systems]
    for rate in s.dur_rates:
        for i, (sys_, targets, per_scope, _n) in enumerate(plans):
            steps[i].append(await run_step(ctx, sys_, targets, [per_scope] * len(targets), rate,
                                           label=f"durability, {sys_.label}"))
    out = []
    for k, ((sys_, _t, per_scope, n), st) in enumerate(zip(plans, steps)):
        out.append({"workload": "durability", "system": sys_.label, "relay": sys_.relay, "nodes": sys_.nodes,
                    "durability": k, "connections": n,
                    "scopes": s.dur_scopes, "subscribers_per_scope": per_scope, "steps": st, **summarize(st),
                    "health": await _health(ctx.session, sys_)})
    await ctx.pool.disconnect()
    return out

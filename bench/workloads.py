"""The workloads and the step loop.

A step publishes at one rate for a fixed time and measures, from the load generator:
delivered frames per second while publishing (arrivals per 100 ms bin inside the window),
publish-to-deliver latency of the step's frames (histogram, after a drain), frames lost
(expected = acknowledged publishes x subscribers of their scope), and the CPU of every node,
of Redis, of each load generator worker and of this process (the publisher).

A rising-rate run doubles the rate step by step until delivery stops keeping up: delivered
below 90 % of what was offered, p99 above a second, or frames missing after the drain.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from . import stats
from .loadgen import BIN_S, ConnSpec, WorkerPool
from .publisher import publish_at_rate
from .targets import BenchWorld, CpuMeter, System, machine_busy_s

WORKER_BUSY = 0.85  # a worker above this share of one core may be the bottleneck
KEEP_UP = 0.90  # delivered / offered below this: not keeping up
P99_LIMIT_MS = 1000.0


@dataclass
class Sizes:
    """How big a run is. FULL is the default, QUICK the CI smoke (--quick); tests go smaller."""

    connections: int = 1000  # W1: subscribers of the hot scope
    rates: tuple[float, ...] = (50, 100, 200, 400, 800, 1600, 3200)  # W1 and floor: events/s
    step_s: float = 5.0
    drain_s: float = 10.0
    scaling_rate: float = 50.0  # W1: the fixed rate of the CPU-per-event comparison (N/2 vs N)
    w2_scopes: int = 4
    w2_subs: int = 100
    w2_rates: tuple[float, ...] = (500, 1000)
    w2_target_rate: float = 1000.0
    w3_scopes: int = 1000
    w3_subs: int = 2
    w3_connections: int = 500
    w3_rates: tuple[float, ...] = (250, 500, 1000, 2000)
    workers: int = 2
    client: str = "raw"  # load generator client: "raw" (bench.wsclient) or "aiohttp"
    payload_bytes: int = 200
    w1_relays: tuple[str, ...] = ("memory", "streams")
    scaling_relays: tuple[str, ...] = ("memory", "streams")  # W1 systems that also measure N/2 vs N
    w2_relays: tuple[str, ...] = ("streams", "sharded")
    w3_on_memory: bool = True
    redis_floor_n: int = 2000  # sequential XADD (and XREAD) round trips
    redis_floor_s: float = 3.0  # seconds of XADD -> XREAD BLOCK at 1,000/s
    # durability: streams nodes on a primary with one replica, --durability 0 and 1 step by step
    dur_nodes: int = 3
    dur_scopes: int = 4
    dur_subs: int = 25
    dur_rates: tuple[float, ...] = (100, 250, 500, 1000, 2000)
    dur_floor_n: int = 2000  # sequential XADD and XADD + WAIT round trips on the primary
    blast_frames: int = 20  # floor: frames per connection in the server-side blast


FULL = Sizes()
QUICK = Sizes(connections=200, rates=(100, 400, 1600), step_s=1.0, drain_s=2.0, scaling_rate=50.0,
              w2_scopes=2, w2_subs=50, w2_rates=(200,), w2_target_rate=200.0,
              w3_scopes=100, w3_subs=2, w3_connections=100, w3_rates=(200,),
              workers=2, w1_relays=("memory", "streams"), scaling_relays=("memory",), w3_on_memory=False,
              redis_floor_n=300, dur_scopes=2, dur_subs=25, dur_rates=(100, 400), dur_floor_n=300,
              redis_floor_s=1.0, blast_frames=5)


@dataclass
class Context:
    session: aiohttp.ClientSession
    pool: WorkerPool
    sizes: Sizes
    progress: Callable[[str], None] = lambda _msg: None
    warnings: list[str] = field(default_factory=list)
    _k: int = 0

    def next_k(self) -> int:
        self._k += 1
        return self._k

    @property
    def pad(self) -> str:
        return "x" * self.sizes.payload_bytes

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)


# --------------------------------------------------------------------------------------------
# one step


def _sum_bins(snaps: list[dict], t0: float, t1: float) -> tuple[int, float]:
    """Arrivals in the whole 100 ms bins inside [t0, t1], and the time those bins cover."""
    first, last = math.ceil(t0 / BIN_S), math.floor(t1 / BIN_S) - 1
    if last < first:
        return 0, 0.0
    n = 0
    for s in snaps:
        for b, c in s["bins"].items():
            if first <= int(b) <= last:
                n += c
    return n, (last - first + 1) * BIN_S


def _received(snaps: list[dict], k: int) -> int:
    return sum(s["count"].get(k, 0) for s in snaps)


async def run_step(ctx: Context, system: System, targets: list[tuple[str, str]], subs: list[int],
                   rate: float, *, label: str, duration: float | None = None) -> dict:
    """Publish `rate` events/s to `targets` (round-robin; subs[i] subscribers each) and measure."""
    duration = duration or ctx.sizes.step_s
    k = ctx.next_k()
    meter = CpuMeter(system.cpu_pids())
    before = await ctx.pool.snapshot()
    cpu0, me0, m0 = meter.read(), time.process_time(), machine_busy_s()
    wall0 = time.time()
    if system.driver is not None:
        res = await system.driver(targets, rate, duration, k, ctx.pad)
    else:
        res = await publish_at_rate(system.controls, targets, rate, duration, k, pad=ctx.pad,
                                    start_n=k * 1_000_000)
    wall1 = time.time()
    cpu1, me1, m1 = meter.read(), time.process_time(), machine_busy_s()
    after = await ctx.pool.snapshot()
    expected = sum(n * subs[i] for i, n in res.per_target.items())
    # Drain: wait for the step's frames until all are in or none arrived for a second.
    deadline, last_n, last_change = time.time() + ctx.sizes.drain_s, -1, time.time()
    snaps = after
    while True:
        got = _received(snaps, k)
        if got >= expected or time.time() >= deadline or time.time() - last_change > 1.0:
            break
        if got != last_n:
            last_n, last_change = got, time.time()
        await asyncio.sleep(0.2)
        snaps = await ctx.pool.snapshot()
    wall = wall1 - wall0
    hist = stats.merge(s["hist"].get(k, {}) for s in snaps)
    lat = stats.summary(hist)
    # Delivered per second while publishing, skipping the first 10 % (ramp-up).
    delivered, covered = _sum_bins(after, res.t_start + 0.1 * (res.t_end - res.t_start), res.t_end)
    delivered_rate = delivered / covered if covered > 0 else 0.0
    offered_deliveries = expected / max(1e-9, res.t_end - res.t_start + 1.0 / rate)
    received = _received(snaps, k)
    node_cpu = {name: (None if cpu0[name] is None or cpu1[name] is None else (cpu1[name] - cpu0[name]) / wall)
                for name in cpu0}
    worker_cpu = []
    for b, a in zip(before, after):
        span = a["wall"] - b["wall"]
        worker_cpu.append((a["cpu_s"] - b["cpu_s"]) / span if span > 0 else 0.0)
    kept_up = (received >= expected and delivered_rate >= KEEP_UP * offered_deliveries
               and res.achieved_rate >= KEEP_UP * rate and (lat["p99_ms"] or 0) <= P99_LIMIT_MS)
    ours = (sum(v for v in node_cpu.values() if v is not None) + sum(worker_cpu) + (me1 - me0) / wall)
    machine = (m1 - m0) / wall
    step = {
        "k": k,
        "offered_events_per_s": rate,
        "achieved_events_per_s": res.achieved_rate,
        "published": res.published,
        "publish_failed": res.failed,
        "offered_deliveries_per_s": offered_deliveries,
        "delivered_per_s": delivered_rate,
        "expected": expected,
        "received": received,
        "lost": max(0, expected - received),
        # benchmark events the load generator could not attribute to a step: not deliveries, and
        # shown, so that an unreadable frame is never mistaken for a lost one
        "unattributed": sum(s.get("unattributed", 0) for s in snaps) - sum(s.get("unattributed", 0) for s in before),
        **{key: lat[key] for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms")},
        "node_cpu": node_cpu,  # share of one core, per process
        "nodes_cpu_total": sum(v for n, v in node_cpu.items() if n.startswith("node") and v is not None),
        "loadgen_cpu": worker_cpu,
        "publisher_cpu": (me1 - me0) / wall,
        "machine_cpu": machine,  # busy cores of the whole machine, kernel included
        "outside_cpu": max(0.0, machine - ours),  # not accounted to the bench's processes
        "kept_up": kept_up,
        "seconds": wall,
    }
    # What one core would deliver at this node's cost per frame: delivered per CPU-second of the
    # nodes. On a shared machine a node gets what the others leave it; this figure does not care.
    step["deliveries_per_node_cpu_s"] = (delivered_rate / step["nodes_cpu_total"]
                                         if step["nodes_cpu_total"] > 0 else None)
    # The control API publish call's round trip (acknowledged publishes only), and refusals by status.
    rtt = stats.exact_percentiles(res.rtt_s)
    step["publish_p50_ms"], step["publish_p99_ms"] = rtt["p50_ms"], rtt["p99_ms"]
    step["publish_refused"] = {str(status): n for status, n in sorted(res.refused.items())}
    if res.error:
        step["publish_error"] = res.error
    if step["unattributed"]:
        sample = next((x for s in snaps for x in s.get("unattributed_samples", ())), "")
        ctx.warn(f"{label} @ {rate:g} ev/s: {step['unattributed']} benchmark frames could not be attributed to a "
                 f"step (neither the fast layout nor JSON with sent_at and k), e.g. {sample[:120]!r}: they are "
                 f"counted neither as delivered nor as lost ({step['lost']} missing includes them)")
    busy = [i for i, c in enumerate(worker_cpu) if c > WORKER_BUSY]
    if busy:
        step["loadgen_busy"] = True
        ctx.warn(f"{label}: load generator worker(s) {busy} above {WORKER_BUSY:.0%} of a core at "
                 f"{rate:g} events/s: from there the load generator may be the bottleneck")
    if res.achieved_rate < KEEP_UP * rate:
        ctx.warn(f"{label}: the publisher reached {res.achieved_rate:.0f} of {rate:g} events/s")
    ctx.progress(f"{label} @ {rate:g} ev/s: {delivered_rate:,.0f} deliveries/s, "
                 f"p50 {_ms(lat['p50_ms'])} p99 {_ms(lat['p99_ms'])}, "
                 f"nodes {step['nodes_cpu_total']:.0%} CPU, lost {step['lost']}")
    return step


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


async def rising(ctx: Context, system: System, targets, subs, rates, *, label: str) -> list[dict]:
    steps = []
    for rate in rates:
        step = await run_step(ctx, system, targets, subs, rate, label=label)
        steps.append(step)
        if not step["kept_up"]:
            break
    return steps


def summarize(steps: list[dict]) -> dict:
    kept = [s for s in steps if s["kept_up"]]
    per_cpu = [s["deliveries_per_node_cpu_s"] for s in steps if s.get("deliveries_per_node_cpu_s")]
    return {
        "deliveries_per_node_cpu_s": max(per_cpu, default=None),
        "sustained_deliveries_per_s": max((s["delivered_per_s"] for s in kept), default=0.0),
        "peak_deliveries_per_s": max((s["delivered_per_s"] for s in steps), default=0.0),
        "max_kept_up_events_per_s": max((s["offered_events_per_s"] for s in kept), default=0.0),
    }


async def _health(session: aiohttp.ClientSession, system: System) -> list[dict]:
    out = []
    for url in system.urls:
        try:
            async with session.get(url + "/health/realtime", timeout=aiohttp.ClientTimeout(total=5)) as r:
                doc = await r.json() if r.status == 200 else {}
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            doc = {}
        h = {k: doc.get(k) for k in ("active_connections", "messages_sent_total", "slow_evictions_total",
                                     "messages_dropped_total")}
        h["durability_shortfalls"] = (doc.get("redis") or {}).get("durability_shortfalls")
        out.append(h)
    return out


async def _connect(ctx: Context, specs: list[ConnSpec], label: str) -> dict:
    res = await ctx.pool.connect(specs)
    ctx.progress(f"{label}: {res['connected']}/{res['wanted']} connections in {res['seconds']:.1f} s")
    if res["connected"] < res["wanted"]:
        ctx.warn(f"{label}: only {res['connected']} of {res['wanted']} connections opened "
                 f"({'; '.join(res['errors'][:2])})")
    return res


def _cpu_per_event(step: dict) -> float | None:
    ev = step["achieved_events_per_s"]
    return step["nodes_cpu_total"] / ev if ev > 0 and step["nodes_cpu_total"] else None


# --------------------------------------------------------------------------------------------
# W1: one node, one hot scope


async def hot_scope(ctx: Context, system: System) -> dict:
    """Every connection in one workspace; half of them also subscribe one task (for scaling)."""
    s = ctx.sizes
    label = f"hot scope, {system.label}"
    world = BenchWorld(1, tasks_per_ws=1)
    cookie = await system.load_world(world)
    ws, task = world.ws[0], world.tasks[world.ws[0]][0]
    half = s.connections // 2
    specs = [ConnSpec(system.urls[j % system.nodes], ws, cookie, [("task", task)] if j < half else [])
             for j in range(s.connections)]
    conn = await _connect(ctx, specs, label)
    n = conn["connected"]
    steps = await rising(ctx, system, [("workspace", ws)], [n], s.rates, label=label)
    scaling = None
    if system.relay in s.scaling_relays or system.cluster is None:  # given nodes: always
        # Twice the subscribers: CPU per event at a fixed rate to N/2 (the task) and N (the workspace).
        small = await run_step(ctx, system, [("task", task)], [half], s.scaling_rate, label=label + f", {half} subs")
        big = await run_step(ctx, system, [("workspace", ws)], [n], s.scaling_rate, label=label + f", {n} subs")
        c_small, c_big = _cpu_per_event(small), _cpu_per_event(big)
        scaling = {
            "rate": s.scaling_rate,
            "subscribers": [half, n],
            "cpu_ms_per_event": [None if c is None else c * 1000 for c in (c_small, c_big)],
            "ratio": (c_big / c_small) if c_small and c_big else None,
            "steps": [small, big],
        }
    health = await _health(ctx.session, system)
    await ctx.pool.disconnect()
    return {"workload": "hot_scope", "system": system.label, "relay": system.relay, "nodes": system.nodes,
            "connections": n, "subscribers_per_scope": n, "scopes": 1, "steps": steps, **summarize(steps),
            "scaling": scaling, "health": health}


# --------------------------------------------------------------------------------------------
# floor: the bare send loop, same publisher, same load generator


async def floor_curve(ctx: Context, system: System) -> dict:
    s = ctx.sizes
    label = "floor, bare aiohttp send loop"
    specs = [ConnSpec(system.urls[0], "floor") for _ in range(s.connections)]
    conn = await _connect(ctx, specs, label)
    n = conn["connected"]
    steps = await rising(ctx, system, [("workspace", "floor")], [n], s.rates, label=label)
    blast = None
    try:
        async with ctx.session.post(system.urls[0] + "/blast", json={"n": s.blast_frames, "pad": ctx.pad},
                                    timeout=aiohttp.ClientTimeout(total=120)) as r:
            blast = await r.json()
        ctx.progress(f"floor blast: {blast['frames_per_s']:,.0f} frames/s handed to transports "
                     f"({blast['frames']} frames, {blast['cpu_s']:.2f} s CPU)")
        await asyncio.sleep(min(3.0, s.drain_s))  # let the receivers read the blast
    except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError) as e:
        ctx.warn(f"floor blast failed: {type(e).__name__}: {e}")
    await ctx.pool.disconnect()
    return {"workload": "floor_send_loop", "system": "bare aiohttp", "connections": n, "subscribers_per_scope": n,
            "steps": steps, **summarize(steps), "blast": blast}


# --------------------------------------------------------------------------------------------
# W2: three nodes through Redis, scopes with 100 subscribers each


async def three_nodes(ctx: Context, system: System) -> dict:
    s = ctx.sizes
    label = f"three nodes, {system.label}"
    world = BenchWorld(s.w2_scopes)
    cookie = await system.load_world(world)
    specs = [ConnSpec(system.urls[j % system.nodes], w, cookie) for w in world.ws for j in range(s.w2_subs)]
    conn = await _connect(ctx, specs, label)
    per_scope = conn["connected"] // max(1, s.w2_scopes)
    targets = [("workspace", w) for w in world.ws]
    steps = []
    for rate in s.w2_rates:
        steps.append(await run_step(ctx, system, targets, [per_scope] * len(targets), rate, label=label))
    at_target = next((st for st in steps if st["offered_events_per_s"] == s.w2_target_rate), steps[-1])
    health = await _health(ctx.session, system)
    await ctx.pool.disconnect()
    return {"workload": "three_nodes", "system": system.label, "relay": system.relay, "nodes": system.nodes,
            "connections": conn["connected"], "scopes": s.w2_scopes, "subscribers_per_scope": per_scope,
            "steps": steps, **summarize(steps), "target_rate": s.w2_target_rate,
            "p99_ms_at_target": at_target["p99_ms"], "p50_ms_at_target": at_target["p50_ms"], "health": health}


# --------------------------------------------------------------------------------------------
# W3: many scopes, few subscribers each


async def many_scopes(ctx: Context, system: System) -> dict:
    s = ctx.sizes
    label = f"many scopes, {system.label}"
    world = BenchWorld(1, tasks_per_ws=s.w3_scopes)
    cookie = await system.load_world(world)
    ws, tasks = world.ws[0], world.tasks[world.ws[0]]
    conns = max(1, s.w3_connections)
    subs_of: list[list[tuple[str, str]]] = [[] for _ in range(conns)]
    for t, task in enumerate(tasks):
        for i in range(s.w3_subs):
            subs_of[(t * s.w3_subs + i) % conns].append(("task", task))
    specs = [ConnSpec(system.urls[c % system.nodes], ws, cookie, subs_of[c]) for c in range(conns)]
    conn = await _connect(ctx, specs, label)
    targets = [("task", t) for t in tasks]
    steps = await rising(ctx, system, targets, [s.w3_subs] * len(targets), s.w3_rates, label=label)
    health = await _health(ctx.session, system)
    await ctx.pool.disconnect()
    return {"workload": "many_scopes", "system": system.label, "relay": system.relay, "nodes": system.nodes,
            "connections": conn["connected"], "scopes": s.w3_scopes, "subscribers_per_scope": s.w3_subs,
            "steps": steps, **summarize(steps), "health": health}

"""What real implementations get wrong only under sustained load, with many scopes, in long
bursts, across restarts and with publishes pipelined through different nodes (DEL-1, DEL-2,
DEL-3, DEL-6, DEL-7). Each case is built for one class of defect seen in the field:

* duplicates under redelivery: an implementation that deduplicates with a window of the last N
  event ids lets a second copy through once more than N events passed in between
  (`del2_sustained_load_every_event_once`: thousands of events per connection, several
  publishers, local and remote);
* read-pool starvation: one blocking read per open scope on a bounded pool leaves the scopes
  beyond the pool unread (`del1_many_scopes_on_one_node`: more scopes on one node than a Redis
  pool is likely to have);
* a silent slow consumer: a connection whose buffer filled is neither sent anything more nor
  closed (`del6_long_burst_to_a_stopped_reader`: a burst longer than any send buffer);
* stale replay after a restart: a node that starts on a stream that already holds entries hands
  the old ones to new subscribers (`del7_no_stale_events_after_a_restart`, strict profile, where
  the suite started the nodes itself);
* a local fast path: a node that delivers its own publishes at once and the others' through the
  store inverts back-to-back publishes made through two nodes
  (`del3_publishes_alternating_between_nodes`)."""

from __future__ import annotations

import asyncio

from . import case
from .common import (DELIVERY, across, among, collect, eids, expect_absent, hold, judge_run, marker, other_node,
                     publish_n)
from .delivery import DEL1, DEL2, DEL3, DEL6, NODE1, _slow_consumer

DEL7 = ("without `since`, a connection receives no event of S whose publish was acknowledged before it asked for "
        "S")
LOAD = {"DEL-1": DEL1, "DEL-2": DEL2, "DEL-3": DEL3}


# -- duplicates under redelivery: sustained load -------------------------------------------------------

async def _publisher(ctx, k: int, count: int, scopes: list[tuple[str, str]], nodes: list[int]) -> list[dict]:
    """Publisher k: `count` publishes, each started once the one before was acknowledged, rotating
    over the scopes and the nodes."""
    out = []
    for i in range(count):
        scope, sid = scopes[(i + k) % len(scopes)]
        p = await ctx.publish(scope, sid, {"type": f"conformance:load-{k}", "payload": {"i": i}},
                              node=nodes[(i + k) % len(nodes)])
        out.append({**p, "scope": (scope, sid)})
    return out


async def _sustained(ctx, cross: bool, per_connection: int = 2400, publishers: int = 6) -> None:
    w = ctx.world
    n = len(ctx.target.urls)
    subs = []
    for i in range(n):
        for who, user in (("alice", w.alice), ("alice again", w.alice), ("bob", w.bob)):
            c = await ctx.connect(user, w.ws_a, node=i)
            await hold(ctx, c, "task", w.task_a, f"{who} on node {i + 1}")
            subs.append((f"{who} on node {i + 1}", c))
    scopes = [("workspace", w.ws_a), ("task", w.task_a)]
    nodes = list(range(n)) if cross else [0]
    runs = await asyncio.gather(*(_publisher(ctx, k, per_connection // publishers, scopes, nodes)
                                  for k in range(publishers)))
    every = [p["event_id"] for run in runs for p in run]
    with across(ctx, cross):
        for name, c in subs:
            await collect(ctx, c, every, 2 * DELIVERY)
            for k, run in enumerate(runs):  # publisher order holds per publisher and scope (DEL-3)
                for scope in scopes:
                    sent = [p["event_id"] for p in run if p["scope"] == scope]
                    judge_run(ctx, among(c, sent), sent, f"{name} ({scope[0]} events of publisher {k + 1})")


CATCH_DEDUP = "deduplication by a window of recent event ids: copies delivered twice slip past it under load"


@case("DEL-2", "DEL-1", "DEL-3", title="sustained load: thousands of events per connection from six publishers, "
      "every one once, in each publisher's order", cites=LOAD, catches=CATCH_DEDUP)
async def del2_sustained_load_every_event_once(ctx):
    await _sustained(ctx, False)


@case("DEL-2", "DEL-1", "DEL-3", "NODE-1", title="sustained load through every node: thousands of events per "
      "connection on every node, every one once, in each publisher's order", min_nodes=2,
      cites={**LOAD, "NODE-1": NODE1}, catches=CATCH_DEDUP)
async def del2_sustained_load_every_event_once_cross_node(ctx):
    await _sustained(ctx, True)


# -- read-pool starvation: many scopes on one node ---------------------------------------------------

SCOPES_PER_NODE = 160  # more than a Redis connection pool is likely to hold (Multica's: 20)


async def _many_scopes(ctx, pub: int) -> None:
    w = ctx.world
    tasks = w.more_tasks
    holders = [await ctx.connect(u, w.ws_a) for u in (w.alice, w.alice, w.bob, w.bob)]
    held: dict[str, object] = {}
    for i, t in enumerate(tasks):
        c = holders[i % len(holders)]
        await hold(ctx, c, "task", t, f"connection {i % len(holders) + 1}")
        held[t] = c
    with across(ctx, pub != 0):
        for round_, node in (("first", pub), ("second", 0)):
            if ctx.failures:
                break  # the scopes that were not read stay unread: a second round only waits longer
            sent: dict[object, list[str]] = {c: [] for c in holders}
            for t, c in held.items():
                p = await ctx.publish("task", t, {"type": "conformance:many", "payload": {"round": round_}}, node=node)
                sent[c].append(p["event_id"])
            await asyncio.gather(*(collect(ctx, c, sent[c], DELIVERY) for c in holders))
            for i, c in enumerate(holders):
                missing = [e for e in sent[c] if e not in set(among(c, sent[c]))]
                ctx.check("DEL-1", not missing, f"{round_} round: connection {i + 1} holds {len(sent[c])} of the "
                          f"{len(tasks)} task scopes on node 1 and missed the events of {len(missing)} of them",
                          f"{len(sent[c])} events", f"{len(sent[c]) - len(missing)} events")


CATCH_POOL = "one blocking read per open scope on a bounded pool: scopes beyond the pool are read late or never"


@case("DEL-1", title=f"one node holds {SCOPES_PER_NODE} scopes: an event published to each reaches its subscriber",
      tasks=SCOPES_PER_NODE, cites={"DEL-1": DEL1}, catches=CATCH_POOL)
async def del1_many_scopes_on_one_node(ctx):
    await _many_scopes(ctx, 0)


@case("DEL-1", "NODE-1", title=f"one node holds {SCOPES_PER_NODE} scopes: events published through another node "
      "reach every subscriber", tasks=SCOPES_PER_NODE, min_nodes=2, cites={"DEL-1": DEL1, "NODE-1": NODE1},
      catches=CATCH_POOL)
async def del1_many_scopes_on_one_node_cross_node(ctx):
    await _many_scopes(ctx, 1)


# -- a silent slow consumer: a burst longer than any buffer ------------------------------------------

LONG = {"DEL-6": DEL6, "DEL-1": DEL1, "DEL-2": DEL2, "DEL-3": DEL3}


@case("DEL-6", "DEL-1", "DEL-2", "DEL-3", title="a connection stops reading through a 64 MB burst: everything once "
      "it reads again, or closed within 10 s; never a gap, never a silent stall", cites=LONG,
      catches="a slow consumer that is neither sent anything more nor closed once its buffer filled")
async def del6_long_burst_to_a_stopped_reader(ctx):
    await _slow_consumer(ctx, other_node(ctx), burst_mb=64)


# -- stale replay after a restart ------------------------------------------------------------------------

@case("DEL-7", title="a node restarted on streams that already hold entries hands none of them to new subscribers",
      restarts=True, exclusive=True, cites={"DEL-7": DEL7},
      catches="a restarted node resuming its reads from an old position: stale entries reach new subscribers")
async def del7_no_stale_events_after_a_restart(ctx):
    w = ctx.world
    n = len(ctx.target.urls)
    first = await ctx.connect(w.alice, w.ws_a)  # node 1 reads task_a, and stops mid-stream
    await hold(ctx, first, "task", w.task_a, "alice")
    old = eids(await publish_n(ctx, "task", w.task_a, 5, tag="conformance:before-restart"))
    await collect(ctx, first, old, DELIVERY)
    stale: list[str] = list(old)

    async def while_down() -> None:  # entries appended while node 1 is down (through another node)
        if n > 1:
            stale.extend(eids(await publish_n(ctx, "task", w.task_a, 5, node=1, tag="conformance:while-down")))
    await ctx.target.restart_node(0, while_down)
    late = await ctx.connect(w.alice, w.ws_a)
    await hold(ctx, late, "task", w.task_a, "alice, after the restart")
    await marker(ctx, "task", w.task_a, late)
    expect_absent(ctx, late, {e: "a task event published before the subscribe" for e in stale},
                  "after the node restarted, a subscribe without since delivered events stored before it", req="DEL-7")


# -- a local fast path: publishes pipelined through two nodes -------------------------------------------

@case("DEL-3", "DEL-1", "DEL-2", "NODE-1", title="three publishers, each alternating between two nodes and starting a "
      "publish the moment the one before was acknowledged: every connection gets each one's events in its order",
      min_nodes=2, cites={**LOAD, "NODE-1": NODE1},
      catches="a local fast path: own publishes delivered at once, other nodes' later, inverting back-to-back ones")
async def del3_publishes_alternating_between_nodes(ctx):
    w = ctx.world
    subs = []
    for i in range(2):
        for k in range(4):  # enough connections that delivering keeps each node busy
            c = await ctx.connect(w.alice, w.ws_a, node=i)
            for scope, sid in (("task", w.task_a), ("chat", w.chat_alice)):
                await hold(ctx, c, scope, sid, f"alice #{k + 1} on node {i + 1}")
            subs.append((f"alice #{k + 1} on node {i + 1}", c))
    scopes = [("workspace", w.ws_a), ("task", w.task_a), ("chat", w.chat_alice)]
    runs = await asyncio.gather(*(publish_n(ctx, scope, sid, 300, nodes=[k % 2, (k + 1) % 2],
                                            tag=f"conformance:alternating-{k}")
                                  for k, (scope, sid) in enumerate(scopes)))
    with across(ctx):
        for name, c in subs:
            await collect(ctx, c, [e for run in runs for e in eids(run)], DELIVERY)
            for (scope, _), run in zip(scopes, runs):
                judge_run(ctx, among(c, eids(run)), eids(run), f"{name} ({scope} events)")

"""NODE-4: the relay works against a Redis Cluster (capability `redis_cluster`).

The suite cannot see where a target keeps a scope, so it uses many: the world's further tasks,
enough that a relay spreading scopes over the cluster's slots puts them on every primary. Each
must deliver across nodes and resume on a third node, as on one Redis; a relay that reads keys of
several slots in one command, or keeps a scope's keys in different slots, fails here (CROSSSLOT)."""

from __future__ import annotations

from . import Failed, case
from .common import DELIVERY, among, collect, eids, hold, other_node, resume_node

SCOPES = 24  # over 16 hash slots at least (a relay's tag groups), 3 or more primaries
NODE4 = "The relay works against a Redis Cluster."


@case("NODE-4", title=f"{SCOPES} task scopes, spread over the cluster: events published through another node reach "
                      "their subscriber, and each scope resumes on a third node", capability="redis_cluster",
      min_nodes=2, tasks=SCOPES, cites=NODE4,
      catches="keys of several hash slots in one command (CROSSSLOT), or one scope's keys in different slots")
async def node4_many_scopes_deliver_and_resume(ctx):
    w = ctx.world
    tasks = w.more_tasks[:SCOPES]
    pub, back = other_node(ctx), resume_node(ctx)
    holder = await ctx.connect(w.alice, w.ws_a)
    for t in tasks:
        await hold(ctx, holder, "task", t, "alice")
    first = {t: await ctx.publish("task", t, {"type": "conformance:cluster"}, node=pub) for t in tasks}
    await collect(ctx, holder, eids(list(first.values())), DELIVERY)
    missed = [t for t, p in first.items() if not among(holder, [p["event_id"]])]
    ctx.expect(not missed, f"events published through node {pub + 1} to {len(missed)} of {len(tasks)} task scopes "
               "never reached their subscriber on node 1", f"{len(tasks)} events", f"{len(tasks) - len(missed)} events")
    if "resume" not in ctx.target.capabilities:
        return
    await holder.close()
    later = {t: await ctx.publish("task", t, {"type": "conformance:cluster-missed"}, node=pub) for t in tasks}
    back_client = await ctx.connect(w.alice, w.ws_a, node=back)
    unrecovered = []
    for t in tasks:
        got = await ctx.answer(back_client, "subscribe", "task", t, req="NODE-4", since=first[t]["pos"])
        if not (isinstance(got, dict) and (got.get("payload") or {}).get("recovered") is True):
            unrecovered.append((t, got))
    ctx.expect(not unrecovered, f"{len(unrecovered)} of {len(tasks)} resumes inside the retention on node {back + 1} "
               "were not recovered", "recovered: true", unrecovered[:3])
    await collect(ctx, back_client, eids(list(later.values())), DELIVERY)
    lost = [t for t, p in later.items() if not among(back_client, [p["event_id"]])]
    if lost:
        raise Failed(f"the resumes of {len(lost)} of {len(tasks)} scopes did not replay the missed event",
                     f"{len(tasks)} events", f"{len(tasks) - len(lost)} events")

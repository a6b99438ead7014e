"""EV and DEL: who receives an event, what its frame looks like, completeness, no duplicates,
publisher order, unsubscribe, slow consumers; plus the strict-profile DEL-4 and DEL-7.

The small helpers at the top are shared with the subscription, authorization and resume
cases. Cases judge only events they published themselves (by event_id): `global` events of
cases running alongside may arrive on any connection and are ignored.

To show that an event did NOT reach a connection, a case publishes a marker to a scope the
connection holds and waits for it. Where it can, it also keeps a *witness*: another
connection on the same node that legitimately holds the scope and has received the events
before the marker is published, so a node that was going to hand them to the wrong
connection too has already done so."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

from . import Failed, NotChecked, case
from ..client import ConnectionClosed

SERVER_FIELDS = ("scope", "scope_id", "pos")


# -- helpers shared by the case modules ------------------------------------------------------------

def ack(kind: str, scope: str, sid: str, **extra) -> dict:
    """The exact subscribe_ack / unsubscribe_ack frame."""
    return {"type": f"{kind}_ack", "payload": {"scope": scope, "id": sid, **extra}}


def sub_error(scope: str, sid: str, error: str) -> dict:
    """The exact subscribe_error frame."""
    return {"type": "subscribe_error", "payload": {"scope": scope, "id": sid, "error": error}}


def received_ids(client, start: int = 0) -> list:
    """event_ids of the event frames received (in arrival order)."""
    return [f["event_id"] for f in client.frames[start:] if isinstance(f, dict) and "event_id" in f]


def among(client, ids, start: int = 0) -> list:
    """The event_ids out of `ids` that the client received, in arrival order, repeats kept."""
    wanted = set(ids)
    return [e for e in received_ids(client, start) if isinstance(e, str) and e in wanted]


def eids(published: list[dict]) -> list[str]:
    return [p["event_id"] for p in published]


def other_node(ctx, i: int = 1) -> int:
    """Node i, or node 0 on a single-node target."""
    return i % len(ctx.target.urls)


def resume_node(ctx) -> int:
    """A node that is neither the subscriber's (0) nor, when there are three, the publisher's (1)."""
    n = len(ctx.target.urls)
    return 2 if n >= 3 else (1 if n == 2 else 0)


def resume_claimed(ctx) -> bool:
    return "resume" in ctx.target.capabilities


def delivered(ctx, frame: dict, published: dict, scope: str, sid: str) -> dict:
    """The frame a subscriber must receive for `frame` (EV-2); with `resume` claimed, with the
    server-set fields of REP-1."""
    expected = {k: v for k, v in frame.items() if k not in SERVER_FIELDS}
    expected["event_id"] = published["event_id"]
    if resume_claimed(ctx):
        expected.update(scope=scope, scope_id=sid, pos=published["pos"])
    return expected


def as_seen(ctx, got: Any) -> Any:
    """The received frame as `delivered` describes it: without `resume`, REP-1 fields are optional."""
    if resume_claimed(ctx) or not isinstance(got, dict):
        return got
    return {k: v for k, v in got.items() if k not in SERVER_FIELDS}


async def subscribe(ctx, client, scope: str, sid: str, who: str = "the connection") -> dict:
    got = await ctx.answer(client, "subscribe", scope, sid)
    ctx.equal(got, ack("subscribe", scope, sid), f"{who} must be allowed to subscribe to {scope}:{sid}")
    return got


async def unsubscribe(ctx, client, scope: str, sid: str) -> dict:
    got = await ctx.answer(client, "unsubscribe", scope, sid)
    ctx.equal(got, ack("unsubscribe", scope, sid), f"unsubscribe from {scope}:{sid} must be acknowledged")
    return got


async def publish_n(ctx, scope: str, sid: str, n: int, *, node: int = 0, tag: str = "conformance:event",
                    nodes: list[int] | None = None) -> list[dict]:
    """n sequential publishes (each acknowledged before the next starts), optionally rotating nodes."""
    out = []
    for i in range(n):
        where = nodes[i % len(nodes)] if nodes else node
        out.append(await ctx.publish(scope, sid, {"type": tag, "payload": {"seq": i}}, node=where))
    return out


async def marker(ctx, scope: str, sid: str, *clients, node: int = 0) -> dict:
    """Publish a marker to a scope every client holds and wait until each has it."""
    p = await ctx.publish(scope, sid, {"type": "conformance:marker", "payload": {}}, node=node)
    for c in clients:
        await ctx.event(c, p)
    return p


async def wait_all(ctx, client, ids: list[str], who: str, *, timeout: float = 5.0, start: int = 0) -> None:
    """Wait for the last of `ids`; on timeout, fail saying how many of them arrived (DEL-1)."""
    if not ids:
        return
    last = ids[-1]
    try:
        await client.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == last, timeout, start=start)
    except asyncio.TimeoutError:
        got = set(among(client, ids, start))
        raise Failed(f"{who} did not receive the last of {len(ids)} events within {timeout:g} s "
                     f"({len(got)} of them arrived)", f"{len(ids)} events", f"{len(got)} events") from None
    except ConnectionClosed as e:
        got = set(among(client, ids, start))
        raise Failed(f"{who} was closed (code {e.code}) after {len(got)} of {len(ids)} events",
                     f"{len(ids)} events", f"closed after {len(got)}") from None


async def until(event: asyncio.Event, task: asyncio.Task, timeout: float, what: str) -> None:
    """Wait for `event`, set by the background `task`; re-raise the task's failure if it ends first."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if event.is_set():
        return
    if task.done():
        task.result()
    raise Failed(f"{what} did not happen within {timeout:g} s", what, "timeout")


async def wait_each(ctx, client, ids: list[str], who: str, *, timeout: float = 5.0) -> None:
    """Wait until every one of `ids` arrived (events of several scopes, whose relative order is free)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for eid in ids:
        try:
            await client.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == eid,
                                  max(0.0, deadline - loop.time()))
        except (asyncio.TimeoutError, ConnectionClosed):
            got = set(among(client, ids))
            raise Failed(f"{who} did not receive {len(ids) - len(got)} of {len(ids)} events within {timeout:g} s",
                         f"{len(ids)} events", f"{len(got)} events") from None


def check_sequence(ctx, got: list[str], sent: list[str], who: str) -> None:
    """got must be exactly sent: none missing (DEL-1), none twice (DEL-2), in publisher order (DEL-3)."""
    index = {e: i for i, e in enumerate(sent)}
    have = set(got)
    missing = [i for i, e in enumerate(sent) if e not in have]
    ctx.expect(not missing, f"{who} missed {len(missing)} of {len(sent)} acknowledged events",
               f"all {len(sent)} events", {"missing (publish index)": missing[:10], "received": len(have)})
    dups = sorted({index[e] for e in got if got.count(e) > 1}) if len(got) != len(have) else []
    ctx.expect(not dups, f"{who} received {len(got) - len(have)} events more than once",
               "each event once", {"repeated (publish index)": dups[:10]})
    if got != sent:
        at = next(i for i, (a, b) in enumerate(zip(got, sent)) if a != b)
        raise Failed(f"{who} received the events out of publisher order (first difference at position {at})",
                     list(range(max(0, at - 2), at + 3)), [index[e] for e in got[max(0, at - 2):at + 3]])


def expect_absent(ctx, client, forbidden: dict[str, str], reason: str, start: int = 0) -> None:
    """None of the event_ids in `forbidden` (id -> what it was) reached the client."""
    leaked = [forbidden[e] for e in received_ids(client, start) if e in forbidden]
    ctx.expect(not leaked, reason, "none of these events", leaked[:5])


# -- EV-1: one scope per publish ---------------------------------------------------------------------

async def _ev1_workspace(ctx, pub: int) -> None:
    w = ctx.world
    alice, alice2, bob = (await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.alice, w.ws_a),
                          await ctx.connect(w.bob, w.ws_a))
    carol = await ctx.connect(w.carol, w.ws_b)
    frame = {"type": "conformance:workspace", "payload": {"n": 1}}
    p = await ctx.publish("workspace", w.ws_a, frame, node=pub)
    for name, c in (("alice", alice), ("alice's second connection", alice2), ("bob", bob)):
        got = await ctx.event(c, p)
        ctx.equal(as_seen(ctx, got), delivered(ctx, frame, p, "workspace", w.ws_a),
                  f"{name} in workspace A must receive A's workspace event as published")
    await marker(ctx, "workspace", w.ws_b, carol, node=pub)
    expect_absent(ctx, carol, {p["event_id"]: "workspace A event"},
                  "a connection of workspace B received an event of workspace A")


@case("EV-1", "DEL-1", title="a workspace event reaches every connection of that workspace and no other")
async def ev1_workspace_event(ctx):
    await _ev1_workspace(ctx, 0)


@case("EV-1", "DEL-1", "NODE-1", title="across nodes: a workspace event reaches that workspace only", min_nodes=2)
async def ev1_workspace_event_cross_node(ctx):
    await _ev1_workspace(ctx, 1)


async def _ev1_user(ctx, pub: int) -> None:
    w = ctx.world
    alice, alice2 = await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.alice, w.ws_a)
    bob, carol = await ctx.connect(w.bob, w.ws_a), await ctx.connect(w.carol, w.ws_b)
    frame = {"type": "conformance:inbox", "payload": {"for": "alice"}}
    p = await ctx.publish("user", w.alice, frame, node=pub)
    for name, c in (("alice", alice), ("alice's second connection", alice2)):
        got = await ctx.event(c, p)
        ctx.equal(as_seen(ctx, got), delivered(ctx, frame, p, "user", w.alice),
                  f"{name} must receive her user event as published")
    await marker(ctx, "workspace", w.ws_a, bob, node=pub)
    await marker(ctx, "workspace", w.ws_b, carol, node=pub)
    for name, c in (("bob", bob), ("carol", carol)):
        expect_absent(ctx, c, {p["event_id"]: "alice's user event"}, f"{name} received a user event of alice")


@case("EV-1", "DEL-1", title="a user event reaches every connection of that user and nobody else")
async def ev1_user_event(ctx):
    await _ev1_user(ctx, 0)


@case("EV-1", "DEL-1", "NODE-1", title="across nodes: a user event reaches that user only", min_nodes=2)
async def ev1_user_event_cross_node(ctx):
    await _ev1_user(ctx, 1)


async def _ev1_task_chat(ctx, pub: int) -> None:
    w = ctx.world
    alice, alice2 = await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.alice, w.ws_a)
    for scope, sid in (("task", w.task_a), ("chat", w.chat_alice)):
        await subscribe(ctx, alice, scope, sid, "alice")
    sent = {}
    for scope, sid in (("task", w.task_a), ("chat", w.chat_alice)):
        frame = {"type": f"conformance:{scope}", "payload": {"text": "hi"}}
        p = await ctx.publish(scope, sid, frame, node=pub)
        got = await ctx.event(alice, p)  # alice is the witness: same node, holds the scope
        ctx.equal(as_seen(ctx, got), delivered(ctx, frame, p, scope, sid),
                  f"the subscriber of {scope}:{sid} must receive its event as published")
        sent[p["event_id"]] = f"{scope} event"
    await marker(ctx, "workspace", w.ws_a, alice2, node=pub)
    expect_absent(ctx, alice2, sent, "a connection that never subscribed received a task or chat event "
                                     "(same user, same workspace)")


@case("EV-1", "DEL-1", title="task and chat events reach their subscribers only")
async def ev1_task_chat_subscribers_only(ctx):
    await _ev1_task_chat(ctx, 0)


@case("EV-1", "DEL-1", "NODE-1", title="across nodes: task and chat events reach their subscribers only", min_nodes=2)
async def ev1_task_chat_subscribers_only_cross_node(ctx):
    await _ev1_task_chat(ctx, 1)


async def _ev1_exclude(ctx, pub: int) -> None:
    w = ctx.world
    alice, alice2 = await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.alice, w.ws_a)
    frame = {"type": "conformance:inbox", "payload": {"excluded": "A"}}
    skipped = await ctx.publish("user", w.alice, frame, node=pub, exclude_workspace=w.ws_a)
    reached = []
    for other in (w.ws_b, str(uuid.uuid4())):
        f2 = {"type": "conformance:inbox", "payload": {"excluded": other}}
        p = await ctx.publish("user", w.alice, f2, node=pub, exclude_workspace=other)
        reached.append((f2, p))
    for name, c in (("alice", alice), ("alice's second connection", alice2)):
        for f2, p in reached:
            got = await ctx.event(c, p)
            ctx.equal(as_seen(ctx, got), delivered(ctx, f2, p, "user", w.alice),
                      f"{name} (workspace A) must receive a user event that excludes another workspace")
        await marker(ctx, "user", w.alice, c, node=pub)
        expect_absent(ctx, c, {skipped["event_id"]: "user event with exclude_workspace = A"},
                      f"{name} is connected to workspace A and received a user event with exclude_workspace A")


@case("EV-1", title="exclude_workspace skips the user's connections in that workspace only",
      capability="exclude_workspace")
async def ev1_exclude_workspace(ctx):
    await _ev1_exclude(ctx, 0)


@case("EV-1", "NODE-1", title="across nodes: exclude_workspace travels with the event",
      capability="exclude_workspace", min_nodes=2)
async def ev1_exclude_workspace_cross_node(ctx):
    await _ev1_exclude(ctx, 1)


async def _ev1_global(ctx, pub: int) -> None:
    w = ctx.world
    n = len(ctx.target.urls)
    clients = []
    for i in range(n):
        clients.append((f"alice on node {i + 1}", await ctx.connect(w.alice, w.ws_a, node=i)))
        clients.append((f"carol on node {i + 1}", await ctx.connect(w.carol, w.ws_b, node=(i + 1) % n)))
    bare = await ctx.connect(w.bob, w.ws_a, node=n - 1)  # holds no scope at all
    await unsubscribe(ctx, bare, "workspace", w.ws_a)
    await unsubscribe(ctx, bare, "user", w.bob)
    clients.append(("bob, after leaving his workspace and user scopes", bare))
    frame = {"type": "conformance:system", "payload": {"msg": "maintenance"}}
    p = await ctx.publish("global", "all", frame, node=pub)
    for name, c in clients:
        got = await ctx.event(c, p)
        ctx.equal(as_seen(ctx, got), delivered(ctx, frame, p, "global", "all"),
                  f"{name} must receive the global event as published")


@case("EV-1", "DEL-1", title="a global event reaches every connection", capability="global")
async def ev1_global_event(ctx):
    await _ev1_global(ctx, 0)


@case("EV-1", "DEL-1", "NODE-1", title="a global event reaches every connection on every node",
      capability="global", min_nodes=2)
async def ev1_global_event_every_node(ctx):
    await _ev1_global(ctx, 1)


# -- EV-2: the delivered frame ---------------------------------------------------------------------

@case("EV-2", title="a published event_id is kept, echoed by publish and delivered")
async def ev2_given_event_id_is_kept(ctx):
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    for eid in (f"conf-{uuid.uuid4().hex}", f"x{uuid.uuid4().hex[:6]}", f"ünïcødé ✓ {uuid.uuid4().hex}"):
        frame = {"type": "conformance:given-id", "event_id": eid, "payload": {}}
        p = await ctx.publish("workspace", w.ws_a, frame)
        ctx.equal(p.get("event_id"), eid, "publish must return the event_id it was given")
        got = await ctx.event(alice, p)
        ctx.equal(as_seen(ctx, got), delivered(ctx, frame, p, "workspace", w.ws_a),
                  "the delivered frame must carry the published event_id")


@case("EV-2", title="without an event_id the server assigns a unique non-empty string")
async def ev2_assigned_event_id(ctx):
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    frame = {"type": "conformance:no-id", "payload": {"k": "v"}}
    published = [await ctx.publish("workspace", w.ws_a, frame) for _ in range(20)]
    ids = [p.get("event_id") for p in published]
    bad = [i for i in ids if not isinstance(i, str) or not i]
    ctx.expect(not bad, "publish must answer an assigned event_id that is a non-empty string",
               "non-empty strings", bad[:3])
    ctx.expect(len(set(ids)) == len(ids), "assigned event_ids must be unique", "20 distinct ids", ids)
    for p in published:
        got = await ctx.event(alice, p)
        ctx.equal(as_seen(ctx, got), delivered(ctx, frame, p, "workspace", w.ws_a),
                  "the delivered frame must be the published object plus the assigned event_id")


WEIRD = {
    "type": "conformance:weird",
    "payload": {"nested": {"list": [1, 2.5, -3, None, True, False, "s", [], {}], "empty": "", "deep": {"a": {"b": {
        "c": [{"d": "e"}]}}}},
        "big": 2 ** 53 - 1, "small": -1.25e-7, "text": "quote\" backslash\\ newline\n tab\t slash /"},
    "unicode": "日本語 ✓ \u2028 \u00e9 emoji \U0001F600",
    "null": None,
    "number": 0,
    "array": [{"a": 1}, {"b": [2]}],
    "Scope": "capitalised keys are not server-set",
    "": "empty key",
}


async def alice_on_every_scope(ctx):
    """Alice connected and holding one scope of every type (and global when claimed):
    (client, [(scope, id), ...])."""
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    await subscribe(ctx, alice, "task", w.task_a, "alice")
    await subscribe(ctx, alice, "chat", w.chat_alice, "alice")
    targets = [("workspace", w.ws_a), ("user", w.alice), ("task", w.task_a), ("chat", w.chat_alice)]
    if "global" in ctx.target.capabilities:
        targets.append(("global", "all"))
    return alice, targets


async def _ev2_passthrough(ctx, pub: int) -> None:
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    await subscribe(ctx, alice, "task", w.task_a, "alice")
    for scope, sid in (("workspace", w.ws_a), ("task", w.task_a)):
        p = await ctx.publish(scope, sid, WEIRD, node=pub)
        got = await ctx.event(alice, p)
        ctx.equal(as_seen(ctx, got), delivered(ctx, WEIRD, p, scope, sid),
                  "every published field (nested objects, unicode, null, odd keys) must pass through unchanged")


@case("EV-2", title="published fields pass through unchanged: nested objects, unicode, null, odd keys")
async def ev2_fields_pass_through(ctx):
    await _ev2_passthrough(ctx, 0)


@case("EV-2", "NODE-1", title="across nodes: published fields pass through unchanged", min_nodes=2)
async def ev2_fields_pass_through_cross_node(ctx):
    await _ev2_passthrough(ctx, 1)


@case("EV-2", "REP-1", title="the server-set scope, scope_id and pos overwrite published values", capability="resume")
async def ev2_server_fields_overwrite(ctx):
    alice, targets = await alice_on_every_scope(ctx)
    for scope, sid in targets:
        frame = {"type": "conformance:forged", "scope": "chat", "scope_id": "forged", "pos": "999-0",
                 "payload": {"scope": "kept"}}
        p = await ctx.publish(scope, sid, frame, node=other_node(ctx))
        got = await ctx.event(alice, p)
        ctx.equal(got, {"type": "conformance:forged", "payload": {"scope": "kept"}, "event_id": p["event_id"],
                        "scope": scope, "scope_id": sid, "pos": p["pos"]},
                  f"the server must set scope, scope_id and pos of a {scope} event over the published ones")


# -- DEL-1: completeness -----------------------------------------------------------------------------

async def _del1_race(ctx, pub: int, rounds: int = 50) -> None:
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)

    async def cycle(scope: str, sid: str, r: int) -> None:
        await subscribe(ctx, c, scope, sid, "alice")
        p = await ctx.publish(scope, sid, {"type": "conformance:race", "payload": {"round": r}}, node=pub)
        try:
            await c.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == p["event_id"], 5.0)
        except asyncio.TimeoutError:
            raise Failed(f"round {r + 1}: an event of {scope}:{sid} published through node {pub + 1} the moment "
                         f"the subscribe_ack arrived did not arrive within 5 s", p["event_id"], "nothing") from None
        await unsubscribe(ctx, c, scope, sid)

    for r in range(rounds):
        outcomes = await asyncio.gather(cycle("task", w.task_a, r), cycle("chat", w.chat_alice, r),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome


@case("DEL-1", title="subscribe, publish the moment the ack arrives, unsubscribe: 50 rounds, nothing lost")
async def del1_publish_right_after_subscribe_ack(ctx):
    await _del1_race(ctx, 0)


@case("DEL-1", "NODE-1", title="the subscribe race: publish through another node the moment the ack arrives",
      min_nodes=2)
async def del1_publish_right_after_subscribe_ack_cross_node(ctx):
    await _del1_race(ctx, 1)


async def _del1_auto_scopes(ctx, pub: int, rounds: int = 20) -> None:
    w = ctx.world
    for r in range(rounds):
        c = await ctx.connect(w.alice, w.ws_a)
        ws = await ctx.publish("workspace", w.ws_a, {"type": "conformance:first", "payload": {"round": r}}, node=pub)
        us = await ctx.publish("user", w.alice, {"type": "conformance:first", "payload": {"round": r}}, node=pub)
        for p, what in ((ws, "workspace"), (us, "user")):
            try:
                await c.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == p["event_id"], 5.0)
            except asyncio.TimeoutError:
                raise Failed(f"round {r + 1}: a {what} event published through node {pub + 1} right after auth_ack "
                             f"did not arrive within 5 s", p["event_id"], "nothing") from None
        await c.close()


@case("DEL-1", title="events of the auto-subscribed scopes published right after auth_ack arrive")
async def del1_auto_scopes_right_after_auth_ack(ctx):
    await _del1_auto_scopes(ctx, 0)


@case("DEL-1", "NODE-1", title="across nodes: auto-subscribed scopes deliver from auth_ack on", min_nodes=2)
async def del1_auto_scopes_right_after_auth_ack_cross_node(ctx):
    await _del1_auto_scopes(ctx, 1)


async def _burst(ctx, pub_nodes: list[int], n: int = 300) -> None:
    w = ctx.world
    nodes = len(ctx.target.urls)
    subs = [(f"alice on node {i + 1}", await ctx.connect(w.alice, w.ws_a, node=i)) for i in range(nodes)]
    if nodes == 1:
        subs.append(("bob", await ctx.connect(w.bob, w.ws_a)))
    for name, c in subs:
        await subscribe(ctx, c, "task", w.task_a, name)
    sent = eids(await publish_n(ctx, "task", w.task_a, n, nodes=pub_nodes, tag="conformance:burst"))
    for name, c in subs:
        await wait_all(ctx, c, sent, name, timeout=10.0)
    await marker(ctx, "task", w.task_a, *(c for _, c in subs), node=pub_nodes[-1])
    for name, c in subs:
        check_sequence(ctx, among(c, sent), sent, name)


@case("DEL-1", "DEL-2", "DEL-3", title="300 sequential publishes: every event once, in publish order")
async def del1_burst_complete_once_in_order(ctx):
    await _burst(ctx, [0])


@case("DEL-1", "DEL-2", "DEL-3", "NODE-1",
      title="300 publishes through another node: every connection on every node gets each once, in order",
      min_nodes=2)
async def del1_burst_complete_once_in_order_cross_node(ctx):
    await _burst(ctx, [1])


# -- DEL-2: no duplicates ----------------------------------------------------------------------------

async def _del2_resubscribe(ctx, pub: int) -> None:
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    await subscribe(ctx, alice, "task", w.task_a, "alice")
    pub_task = asyncio.create_task(publish_n(ctx, "task", w.task_a, 200, node=pub))
    try:
        for _ in range(20):
            await subscribe(ctx, alice, "task", w.task_a, "alice")
            await subscribe(ctx, alice, "workspace", w.ws_a, "alice")
        sent = eids(await asyncio.wait_for(asyncio.shield(pub_task), 60))
    finally:
        if not pub_task.done():
            pub_task.cancel()
            await asyncio.gather(pub_task, return_exceptions=True)
    await wait_all(ctx, alice, sent, "alice", timeout=10.0)
    await marker(ctx, "task", w.task_a, alice, node=pub)
    check_sequence(ctx, among(alice, sent), sent, "alice, subscribing again and again to a scope she holds,")


@case("DEL-2", "SUB-5", title="subscribing again to a held scope while events flow creates no duplicates")
async def del2_resubscribe_while_events_flow(ctx):
    await _del2_resubscribe(ctx, 0)


@case("DEL-2", "SUB-5", "NODE-1", title="across nodes: re-subscribing while events flow creates no duplicates",
      min_nodes=2)
async def del2_resubscribe_while_events_flow_cross_node(ctx):
    await _del2_resubscribe(ctx, 1)


# -- DEL-3: publisher order --------------------------------------------------------------------------

async def _del3_interleaved(ctx, pub_nodes: list[int], rounds: int = 40) -> None:
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    await subscribe(ctx, alice, "task", w.task_a, "alice")
    await subscribe(ctx, alice, "chat", w.chat_alice, "alice")
    targets = [("workspace", w.ws_a), ("user", w.alice), ("task", w.task_a), ("chat", w.chat_alice)]
    sent: dict[tuple, list] = {t: [] for t in targets}
    k = 0
    for i in range(rounds):
        for t in targets:
            p = await ctx.publish(*t, {"type": "conformance:interleaved", "payload": {"i": i}},
                                  node=pub_nodes[k % len(pub_nodes)])
            sent[t].append(p["event_id"])
            k += 1
    for t in targets:
        await wait_all(ctx, alice, sent[t], f"alice ({t[0]} scope)", timeout=10.0)
    for t in targets:
        check_sequence(ctx, among(alice, sent[t]), sent[t], f"alice, on the {t[0]} scope,")


@case("DEL-3", title="publisher order holds per scope while four scopes interleave")
async def del3_order_per_scope_interleaved(ctx):
    await _del3_interleaved(ctx, [0])


@case("DEL-3", "NODE-1", title="publisher order holds when consecutive publishes go through different nodes",
      min_nodes=2)
async def del3_order_across_publishing_nodes(ctx):
    await _del3_interleaved(ctx, list(range(1, len(ctx.target.urls))) + [0])


# -- DEL-5: nothing after unsubscribe_ack ------------------------------------------------------------

async def _del5_after_ack(ctx, pub: int) -> None:
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.bob, w.ws_a)  # same node, keeps task_a
    await subscribe(ctx, alice, "task", w.task_a, "alice")
    await subscribe(ctx, witness, "task", w.task_a, "bob")
    first = await ctx.publish("task", w.task_a, {"type": "conformance:before"}, node=pub)
    await ctx.event(alice, first)
    await unsubscribe(ctx, alice, "task", w.task_a)
    after = eids(await publish_n(ctx, "task", w.task_a, 20, node=pub, tag="conformance:after"))
    await wait_all(ctx, witness, after, "bob (still subscribed)")
    await marker(ctx, "user", w.alice, alice, node=pub)
    expect_absent(ctx, alice, {e: f"task event #{i} published after unsubscribe_ack" for i, e in enumerate(after)},
                  "an event published after unsubscribe_ack arrived")


@case("DEL-5", "SUB-4", title="after unsubscribe_ack no later event of the scope arrives")
async def del5_nothing_after_unsubscribe_ack(ctx):
    await _del5_after_ack(ctx, 0)


@case("DEL-5", "SUB-4", "NODE-1", title="across nodes: after unsubscribe_ack no later event arrives", min_nodes=2)
async def del5_nothing_after_unsubscribe_ack_cross_node(ctx):
    await _del5_after_ack(ctx, 1)


async def _del5_while_publishing(ctx, pub: int) -> None:
    loop = asyncio.get_running_loop()
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.bob, w.ws_a)
    await subscribe(ctx, alice, "task", w.task_a, "alice")
    await subscribe(ctx, witness, "task", w.task_a, "bob")
    log: list[tuple[float, str]] = []  # (started, event_id)
    acked_at: list[float] = []
    enough_before, enough_after, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def publisher():
        i = 0
        while not stop.is_set() and i < 3000:
            started = loop.time()
            p = await ctx.publish("task", w.task_a, {"type": "conformance:stream", "payload": {"i": i}}, node=pub)
            log.append((started, p["event_id"]))
            i += 1
            if i >= 30:
                enough_before.set()
            if acked_at and sum(1 for s, _ in log if s > acked_at[0]) >= 30:
                enough_after.set()

    task = asyncio.create_task(publisher())
    try:
        await until(enough_before, task, 30, "30 publishes")
        await unsubscribe(ctx, alice, "task", w.task_a)
        acked_at.append(loop.time())  # no earlier than the ack's arrival
        await until(enough_after, task, 30, "30 publishes after the unsubscribe_ack")
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await wait_all(ctx, witness, [e for _, e in log], "bob (still subscribed)", timeout=10.0)
    await marker(ctx, "workspace", w.ws_a, alice, node=pub)
    late = {e: f"event #{i}, published after unsubscribe_ack" for i, (s, e) in enumerate(log) if s > acked_at[0]}
    expect_absent(ctx, alice, late, "an event whose publish started after unsubscribe_ack arrived")


@case("DEL-5", title="unsubscribe in the middle of a stream of publishes: nothing published after the ack arrives")
async def del5_unsubscribe_while_publishing(ctx):
    await _del5_while_publishing(ctx, 0)


@case("DEL-5", "NODE-1", title="across nodes: unsubscribe mid-stream, nothing published after the ack arrives",
      min_nodes=2)
async def del5_unsubscribe_while_publishing_cross_node(ctx):
    await _del5_while_publishing(ctx, 1)


# -- DEL-6: slow consumers ---------------------------------------------------------------------------

def _transport(client):
    """The client socket's asyncio transport, from aiohttp's internals."""
    for getter in (lambda: client.ws._conn.transport, lambda: client.ws._response.connection.transport):
        try:
            t = getter()
        except AttributeError:
            continue
        if t is not None and hasattr(t, "pause_reading"):
            return t
    raise NotChecked("cannot reach the client socket to stop reading (aiohttp internals changed)")


async def _everything_or_closed(ctx, client, sent: list[str], scope: str, sid: str, pub: int, who: str,
                                timeout: float = 15.0) -> float | None:
    """DEL-6: wait until the client has all of `sent` or is closed; what it got must be a gap-free
    prefix. Returns when the close was seen (None: everything arrived). If it stays open without
    everything, a live marker tells a gap (the stream went on) from a stall: both fail."""
    loop = asyncio.get_running_loop()
    last = sent[-1]
    closed_at = None
    try:
        await client.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == last, timeout)
    except ConnectionClosed:
        closed_at = loop.time()
    except asyncio.TimeoutError:
        pass
    got = among(client, sent)
    if got != sent[:len(got)]:
        at = next(i for i, (a, b) in enumerate(zip(got, sent)) if a != b)
        raise Failed(f"{who} received a gap (or a repeat) at event #{at}: what it gets must be a gap-free prefix "
                     "of what was published", f"events 0..{len(got) - 1} in order",
                     {"first wrong position": at, "received": len(got), "published": len(sent)})
    if closed_at is not None or got == sent:
        return closed_at
    mk = await ctx.publish(scope, sid, {"type": "conformance:marker"}, node=pub)
    try:
        await client.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == mk["event_id"], 5.0)
    except ConnectionClosed:
        closed_at = loop.time()
    except asyncio.TimeoutError:
        raise Failed(f"{who} was neither sent everything nor closed: it stays open and receives nothing",
                     "all events, or a close", f"{len(got)} of {len(sent)} events, still open") from None
    got = among(client, sent)
    ctx.expect(got == sent[:len(got)], f"{who} received a gap (or a repeat): what it gets must be a gap-free "
               "prefix of what was published", "a gap-free prefix", f"{len(got)} events, not a prefix")
    ctx.expect(closed_at is not None or got == sent,
               f"{who} stayed open and went on receiving after a gap", f"all {len(sent)} events before the marker",
               f"{len(got)} events, then the marker")
    return closed_at


async def _slow_consumer(ctx, pub: int) -> None:
    loop = asyncio.get_running_loop()
    w = ctx.world
    queue = ctx.target.send_queue
    if queue > 4096:
        raise NotChecked(f"send_queue {queue} is too large to overflow with 64 KB events in one case")
    size = 64 * 1024
    count = queue + max(200, (16 * 1024 * 1024) // size)  # the queue plus more than the kernel buffers
    slow = await ctx.connect(w.alice, w.ws_a)
    reader = await ctx.connect(w.bob, w.ws_a)
    await subscribe(ctx, slow, "task", w.task_a, "alice")
    await subscribe(ctx, reader, "task", w.task_a, "bob")
    transport = _transport(slow)
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:  # keep the client's kernel buffer small, so the server's queue is what fills up
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        except OSError:
            pass
    blob = "x" * size
    sent: list[str] = []
    transport.pause_reading()
    try:
        for i in range(count):
            p = await ctx.publish("task", w.task_a, {"type": "conformance:big", "payload": {"seq": i, "blob": blob}},
                                  node=pub)
            sent.append(p["event_id"])
        done_at = loop.time()
    finally:
        if not transport.is_closing():
            transport.resume_reading()
    # Reading again: either everything arrives, or the server has closed (or closes) the connection.
    closed_at = await _everything_or_closed(ctx, slow, sent, "task", w.task_a, pub,
                                            "the connection that stopped reading")
    if closed_at is not None:
        ctx.expect(closed_at - done_at <= 12.0,
                   "the server took longer than 10 s after the overflow to close the slow connection",
                   "closed within 10 s", f"closed {closed_at - done_at:.1f} s after the last publish")
    # The connection that kept reading got everything, in order.
    await wait_all(ctx, reader, sent, "bob (reading normally, beside the slow connection)", timeout=10.0)
    check_sequence(ctx, among(reader, sent), sent, "bob (reading normally, beside the slow connection)")


@case("DEL-6", "DEL-1", title="a connection that stops reading: everything once it reads again, or closed within "
      "10 s, never a gap; readers beside it get everything")
async def del6_slow_consumer(ctx):
    await _slow_consumer(ctx, 0)


@case("DEL-6", "DEL-1", "NODE-1", title="across nodes: a slow consumer gets everything or is closed, never a gap",
      min_nodes=2)
async def del6_slow_consumer_cross_node(ctx):
    await _slow_consumer(ctx, 1)


@case("DEL-6", "REP-3", title="a replay longer than the send queue arrives whole, or the connection is closed; "
      "never a gap", capability="resume")
async def del6_replay_longer_than_send_queue(ctx):
    w = ctx.world
    gap = ctx.target.send_queue + 100
    max_len = ctx.target.retention.get("max_len")
    if isinstance(max_len, int) and not isinstance(max_len, bool) and gap > max_len:
        raise NotChecked(f"a replay of send_queue + 100 = {gap} events exceeds the retention max_len {max_len}")
    if gap > 5000:
        raise NotChecked(f"send_queue {ctx.target.send_queue} is too large for a replay in one case")
    a = await ctx.connect(w.alice, w.ws_a)
    await subscribe(ctx, a, "task", w.task_a, "alice")
    seen = await ctx.publish("task", w.task_a, {"type": "conformance:seen"}, node=other_node(ctx))
    since = (await ctx.event(a, seen)).get("pos")
    await a.close()
    missed = eids(await publish_n(ctx, "task", w.task_a, gap, node=other_node(ctx), tag="conformance:missed"))
    b = await ctx.connect(w.alice, w.ws_a, node=resume_node(ctx))
    start = len(b.frames)
    await b.send({"type": "subscribe", "payload": {"scope": "task", "id": w.task_a, "since": since}})
    try:
        answer = await b.wait_for(lambda f: isinstance(f, dict) and f.get("type") in ("subscribe_ack",
                                                                                     "subscribe_error")
                                  and (f.get("payload") or {}).get("id") == w.task_a, 10.0, start=start)
    except ConnectionClosed:
        return  # closed before it could take its replay: allowed
    except asyncio.TimeoutError:
        raise Failed("no answer to a resume within 10 s", "subscribe_ack", b.frames[start:][-5:]) from None
    ctx.equal(answer, ack("subscribe", "task", w.task_a, recovered=True),
              f"a resume over {gap} events inside the retention must recover")
    await _everything_or_closed(ctx, b, missed, "task", w.task_a, other_node(ctx), "the resumed connection",
                                timeout=10.0)


# -- DEL-4 (strict): the same scope order on every connection ---------------------------------------

@case("DEL-4", title="concurrent publishers through every node: every connection sees the same order")
async def del4_same_order_everywhere(ctx):
    w = ctx.world
    nodes = len(ctx.target.urls)
    subs = [(f"alice on node {i + 1}", await ctx.connect(w.alice, w.ws_a, node=i)) for i in range(nodes)]
    subs.append(("bob on node 1", await ctx.connect(w.bob, w.ws_a)))
    for name, c in subs:
        await subscribe(ctx, c, "task", w.task_a, name)
    publishers = max(3, nodes)
    results = await asyncio.gather(*(publish_n(ctx, "task", w.task_a, 50, node=k % nodes, tag=f"conformance:p{k}")
                                     for k in range(publishers)), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    sent = [p["event_id"] for r in results for p in r]
    for name, c in subs:
        for r in results:
            await wait_all(ctx, c, eids(r), name, timeout=10.0)
    orders = [(name, among(c, sent)) for name, c in subs]
    base_name, base = orders[0]
    for name, order in orders[1:]:
        if order != base:
            at = next((i for i, (a, b) in enumerate(zip(order, base)) if a != b), min(len(order), len(base)))
            raise Failed(f"{name} received the events of one scope in another order than {base_name} "
                         f"(first difference at position {at})", base[at:at + 3], order[at:at + 3])


# -- DEL-7 (strict): no stale events without since ---------------------------------------------------

@case("DEL-7", title="without since, no event published before the subscribe (or the connect) arrives")
async def del7_no_stale_events(ctx):
    w = ctx.world
    pub = other_node(ctx)
    # A scope nobody reads: published before the subscribe.
    stale = {e: "chat event published before the subscribe"
             for e in eids(await publish_n(ctx, "chat", w.chat_alice, 3, node=pub, tag="conformance:stale"))}
    fresh = await ctx.connect(w.alice, w.ws_a)
    await subscribe(ctx, fresh, "chat", w.chat_alice, "alice")
    await marker(ctx, "chat", w.chat_alice, fresh, node=pub)
    expect_absent(ctx, fresh, stale, "a subscribe without since delivered an event published before it")
    # A scope the node already reads for another connection (the witness has the stale events).
    witness = await ctx.connect(w.alice, w.ws_a)
    await subscribe(ctx, witness, "task", w.task_a, "alice's witness connection")
    older = eids(await publish_n(ctx, "task", w.task_a, 3, node=pub, tag="conformance:stale"))
    await wait_all(ctx, witness, older, "the witness connection")
    late = await ctx.connect(w.alice, w.ws_a)
    await subscribe(ctx, late, "task", w.task_a, "alice")
    await marker(ctx, "task", w.task_a, late, node=pub)
    expect_absent(ctx, late, {e: "task event published before the subscribe" for e in older},
                  "a subscribe without since delivered an event the node had already delivered before it")
    # The auto-subscribed scopes: nothing published before the connect.
    before = {}
    for scope, sid in (("workspace", w.ws_a), ("user", w.alice)):
        ps = eids(await publish_n(ctx, scope, sid, 3, node=pub, tag="conformance:stale"))
        await wait_all(ctx, witness, ps, "the witness connection")
        before.update({e: f"{scope} event published before the connect" for e in ps})
    newcomer = await ctx.connect(w.alice, w.ws_a)
    await marker(ctx, "workspace", w.ws_a, newcomer, node=pub)
    await marker(ctx, "user", w.alice, newcomer, node=pub)
    expect_absent(ctx, newcomer, before, "a new connection received an event published before it connected")

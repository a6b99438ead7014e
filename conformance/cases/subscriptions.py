"""SUB: subscriptions."""

from __future__ import annotations

import uuid

from . import Failed, case
from ..client import ControlError
from .delivery import (ack, among, eids, expect_absent, marker, publish_n, received_ids, sub_error, subscribe,
                       unsubscribe)


@case("SUB-1", title="workspace and user scopes: only the connection's own ids")
async def sub1_own_scopes_only(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, own, other in (("workspace", w.ws_a, w.ws_b), ("user", w.alice, w.bob)):
        ack = await ctx.answer(c, "subscribe", scope, own)
        ctx.equal(ack, {"type": "subscribe_ack", "payload": {"scope": scope, "id": own}},
                  f"subscribing to the connection's own {scope} must be acknowledged")
        err = await ctx.answer(c, "subscribe", scope, other)
        ctx.equal(err, {"type": "subscribe_error", "payload": {"scope": scope, "id": other, "error": "forbidden"}},
                  f"subscribing to another {scope} must be forbidden")


# -- SUB-2: task and chat go through the authorizer -----------------------------------------------

@case("SUB-2", title="an allowed task or chat subscribe is answered with the exact subscribe_ack")
async def sub2_allowed_task_and_chat_acked(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid in (("task", w.task_a), ("task", w.chat_task_alice), ("chat", w.chat_alice)):
        got = await ctx.answer(c, "subscribe", scope, sid)
        ctx.equal(got, ack("subscribe", scope, sid), f"alice may subscribe to {scope}:{sid}: exact subscribe_ack")


@case("SUB-2", title="a denied task or chat subscribe is answered subscribe_error forbidden")
async def sub2_denied_task_and_chat_forbidden(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid in (("task", w.task_b), ("task", w.orphan_task), ("chat", w.chat_bob)):
        got = await ctx.answer(c, "subscribe", scope, sid)
        ctx.equal(got, sub_error(scope, sid, "forbidden"), f"alice may not subscribe to {scope}:{sid}")


async def set_faults(ctx, mode: str) -> None:
    """PUT /_control/faults on every node (CTL-5)."""
    for i, control in enumerate(ctx.target.controls):
        try:
            await control.faults(mode)
        except ControlError as e:
            raise Failed(f"PUT /_control/faults {{\"authorizer\": \"{mode}\"}} failed on node {i + 1}",
                         "200", f"{e.status} {e.body}") from None


async def restore_faults(ctx) -> None:
    """Back to "ok" on every node, even if one of them refuses."""
    errors = []
    for i, control in enumerate(ctx.target.controls):
        try:
            await control.faults("ok")
        except Exception as e:  # noqa: BLE001 - keep restoring the other nodes
            errors.append(f"node {i + 1}: {e}")
    if errors:
        raise Failed("could not restore the authorizer to ok", "200 on every node", errors)


@case("SUB-2", title="while the authorizer fails, task and chat subscribes answer lookup_failed", exclusive=True)
async def sub2_lookup_failed(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    looked_up = [("task", w.task_a), ("task", w.chat_task_alice), ("task", w.task_b),
                 ("chat", w.chat_alice), ("chat", w.chat_bob)]
    try:
        await set_faults(ctx, "error")
        for scope, sid in looked_up:
            got = await ctx.answer(c, "subscribe", scope, sid)
            ctx.equal(got, sub_error(scope, sid, "lookup_failed"),
                      f"a failing lookup for {scope}:{sid} must be answered lookup_failed, not a decision")
        for scope, sid in (("workspace", w.ws_a), ("user", w.alice)):
            got = await ctx.answer(c, "subscribe", scope, sid)
            ctx.equal(got, ack("subscribe", scope, sid), f"{scope} subscribes need no lookup and must still be acked")
    finally:
        await restore_faults(ctx)
    for scope, sid, want in (("task", w.task_a, None), ("chat", w.chat_alice, None), ("task", w.task_b, "forbidden")):
        got = await ctx.answer(c, "subscribe", scope, sid)
        ctx.equal(got, ack("subscribe", scope, sid) if want is None else sub_error(scope, sid, want),
                  f"once lookups work again, {scope}:{sid} must be decided normally")


# -- SUB-3: any other scope -------------------------------------------------------------------------

@case("SUB-3", title="global, daemon_runtime and unknown scope types are answered unknown_scope")
async def sub3_unknown_scope(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid in (("global", "all"), ("daemon_runtime", str(uuid.uuid4())), ("issue", w.issue_a),
                       ("Task", w.task_a), ("WORKSPACE", w.ws_a), ("workspaces", w.ws_a), ("nonsense", "x")):
        got = await ctx.answer(c, "subscribe", scope, sid)
        ctx.equal(got, sub_error(scope, sid, "unknown_scope"), f"subscribing to scope type {scope!r} must be "
                                                              "answered unknown_scope")
    got = await ctx.answer(c, "subscribe", "workspace", w.ws_a)
    ctx.equal(got, ack("subscribe", "workspace", w.ws_a), "the connection must keep working after unknown_scope")


@case("SUB-3", title="asking for global is refused and global events still arrive once", capability="global")
async def sub3_global_subscribe_changes_nothing(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for _ in range(2):
        got = await ctx.answer(c, "subscribe", "global", "all")
        ctx.equal(got, sub_error("global", "all", "unknown_scope"), "subscribing to global must be unknown_scope")
    p = await ctx.publish("global", "all", {"type": "conformance:global"})
    await ctx.event(c, p)
    await marker(ctx, "workspace", w.ws_a, c)
    ctx.equal(received_ids(c).count(p["event_id"]), 1, "a global event must arrive exactly once")


# -- SUB-4: unsubscribe -----------------------------------------------------------------------------

@case("SUB-4", title="unsubscribe is acknowledged whether or not the scope is held")
async def sub4_unsubscribe_always_acked(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid in (("task", w.task_a), ("task", w.task_b), ("chat", w.chat_bob), ("workspace", w.ws_b),
                       ("user", w.bob), ("nonsense", "x"), ("global", "all"), ("task", "not-a-uuid")):
        got = await ctx.answer(c, "unsubscribe", scope, sid)
        ctx.equal(got, ack("unsubscribe", scope, sid), f"unsubscribe from {scope}:{sid} (not held) must be acked")
    await subscribe(ctx, c, "task", w.task_a, "alice")
    for _ in range(2):
        got = await ctx.answer(c, "unsubscribe", "task", w.task_a)
        ctx.equal(got, ack("unsubscribe", "task", w.task_a), "unsubscribe from a held scope must be acked, every time")


@case("SUB-4", "DEL-5", title="unsubscribe leaves the auto-subscribed workspace scope; subscribe restores it")
async def sub4_leave_auto_workspace(ctx):
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.bob, w.ws_a)
    await unsubscribe(ctx, alice, "workspace", w.ws_a)
    gone = await ctx.publish("workspace", w.ws_a, {"type": "conformance:gone"})
    await ctx.event(witness, gone)
    await marker(ctx, "user", w.alice, alice)
    expect_absent(ctx, alice, {gone["event_id"]: "workspace event after leaving it"},
                  "a workspace event arrived after unsubscribing from the auto-subscribed workspace scope")
    await subscribe(ctx, alice, "workspace", w.ws_a, "alice")
    back = await ctx.publish("workspace", w.ws_a, {"type": "conformance:back"})
    await ctx.event(alice, back)


@case("SUB-4", "DEL-5", title="unsubscribe leaves the auto-subscribed user scope; subscribe restores it")
async def sub4_leave_auto_user(ctx):
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.alice, w.ws_a)
    await unsubscribe(ctx, alice, "user", w.alice)
    gone = await ctx.publish("user", w.alice, {"type": "conformance:gone"})
    await ctx.event(witness, gone)
    await marker(ctx, "workspace", w.ws_a, alice)
    expect_absent(ctx, alice, {gone["event_id"]: "user event after leaving it"},
                  "a user event arrived after unsubscribing from the auto-subscribed user scope")
    await subscribe(ctx, alice, "user", w.alice, "alice")
    back = await ctx.publish("user", w.alice, {"type": "conformance:back"})
    await ctx.event(alice, back)


@case("SUB-4", title="global cannot be left: unsubscribing is acked and global events still arrive",
      capability="global")
async def sub4_global_cannot_be_left(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    await unsubscribe(ctx, c, "global", "all")
    await ctx.event(c, await ctx.publish("global", "all", {"type": "conformance:global"}))
    await unsubscribe(ctx, c, "workspace", w.ws_a)
    await unsubscribe(ctx, c, "user", w.alice)
    await unsubscribe(ctx, c, "global", "all")
    await ctx.event(c, await ctx.publish("global", "all", {"type": "conformance:global"}))


@case("SUB-4", title="unsubscribing from one scope keeps the others")
async def sub4_unsubscribe_keeps_other_scopes(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    await subscribe(ctx, c, "task", w.task_a, "alice")
    await subscribe(ctx, c, "chat", w.chat_alice, "alice")
    await unsubscribe(ctx, c, "task", w.task_a)
    for scope, sid in (("chat", w.chat_alice), ("workspace", w.ws_a), ("user", w.alice)):
        await ctx.event(c, await ctx.publish(scope, sid, {"type": "conformance:kept"}))


# -- SUB-5: twice delivers once; close drops everything ---------------------------------------------

@case("SUB-5", "DEL-2", title="subscribing twice to a scope delivers each of its events once")
async def sub5_subscribe_twice_delivers_once(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid in (("task", w.task_a), ("chat", w.chat_alice), ("workspace", w.ws_a), ("user", w.alice)):
        await subscribe(ctx, c, scope, sid, "alice")
        await subscribe(ctx, c, scope, sid, "alice")
        sent = eids(await publish_n(ctx, scope, sid, 3))
        await marker(ctx, scope, sid, c)  # a duplicate would come before the marker of the same scope
        counts = [among(c, sent).count(e) for e in sent]
        ctx.equal(counts, [1, 1, 1], f"after subscribing twice to {scope}, each event must arrive exactly once")


@case("SUB-5", "DEL-5", title="one unsubscribe after two subscribes leaves the scope")
async def sub5_one_unsubscribe_after_two_subscribes(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.bob, w.ws_a)
    await subscribe(ctx, witness, "task", w.task_a, "bob")
    await subscribe(ctx, c, "task", w.task_a, "alice")
    await subscribe(ctx, c, "task", w.task_a, "alice")
    await unsubscribe(ctx, c, "task", w.task_a)
    gone = await ctx.publish("task", w.task_a, {"type": "conformance:gone"})
    await ctx.event(witness, gone)
    await marker(ctx, "workspace", w.ws_a, c)
    expect_absent(ctx, c, {gone["event_id"]: "task event after the unsubscribe"},
                  "a single unsubscribe must leave a scope subscribed twice (subscriptions are not counted)")


@case("SUB-5", title="closing a connection drops its subscriptions: a new connection of the user inherits none")
async def sub5_close_drops_subscriptions(ctx):
    w = ctx.world
    old = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.alice, w.ws_a)
    await subscribe(ctx, witness, "task", w.task_a, "alice's witness connection")
    await subscribe(ctx, witness, "chat", w.chat_alice, "alice's witness connection")
    await subscribe(ctx, old, "task", w.task_a, "alice")
    await subscribe(ctx, old, "chat", w.chat_alice, "alice")
    await old.close()
    again = await ctx.connect(w.alice, w.ws_a)
    task_ev = await ctx.publish("task", w.task_a, {"type": "conformance:task"})
    await ctx.event(witness, task_ev)  # the scope still works for the connection that holds it
    chat_ev = await ctx.publish("chat", w.chat_alice, {"type": "conformance:chat"})
    await ctx.event(witness, chat_ev)
    await marker(ctx, "workspace", w.ws_a, again)
    expect_absent(ctx, again, {task_ev["event_id"]: "task event", chat_ev["event_id"]: "chat event"},
                  "a new connection received events of scopes only a closed connection of the user had subscribed to")

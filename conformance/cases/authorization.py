"""AZ: who may subscribe to which task and chat, and that nothing else ever arrives.

TestWorld: alice and bob are members of A, carol of B. task_a / task_b are issue tasks in A / B,
chat_task_alice is a task of alice's chat in A, chat_bob is bob's chat in A, orphan_task has
neither an issue nor a chat."""

from __future__ import annotations

import uuid

from . import case
from .delivery import ack, among, eids, expect_absent, marker, publish_n, sub_error, subscribe, wait_all, wait_each
from .subscriptions import restore_faults, set_faults


async def _decide(ctx, client, who: str, scope: str, sid: str, allowed: bool, why: str) -> None:
    got = await ctx.answer(client, "subscribe", scope, sid)
    if allowed:
        ctx.equal(got, ack("subscribe", scope, sid), f"{who} must be allowed {scope}:{sid} ({why})")
    else:
        ctx.equal(got, sub_error(scope, sid, "forbidden"), f"{who} must be forbidden {scope}:{sid} ({why})")


# -- AZ-1: task scopes -----------------------------------------------------------------------------

@case("AZ-1", title="an issue task is allowed to every member connected to the issue's workspace")
async def az1_issue_task_own_workspace(ctx):
    w = ctx.world
    for who, user, ws, task in (("alice", w.alice, w.ws_a, w.task_a), ("bob", w.bob, w.ws_a, w.task_a),
                                ("carol", w.carol, w.ws_b, w.task_b)):
        c = await ctx.connect(user, ws)
        await _decide(ctx, c, who, "task", task, True, "an issue task of the connection's workspace")


@case("AZ-1", title="an issue task of another workspace is forbidden")
async def az1_issue_task_other_workspace(ctx):
    w = ctx.world
    for who, user, ws, task in (("alice", w.alice, w.ws_a, w.task_b), ("carol", w.carol, w.ws_b, w.task_a)):
        c = await ctx.connect(user, ws)
        await _decide(ctx, c, who, "task", task, False, "an issue task of another workspace")


@case("AZ-1", title="a chat task is allowed to the chat's creator only")
async def az1_chat_task_creator_only(ctx):
    w = ctx.world
    t = w.chat_task_alice
    alice, bob, carol = (await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.bob, w.ws_a),
                         await ctx.connect(w.carol, w.ws_b))
    await _decide(ctx, alice, "alice", "task", t, True, "a task of her own chat")
    await _decide(ctx, bob, "bob", "task", t, False, "a task of alice's chat, same workspace")
    await _decide(ctx, carol, "carol", "task", t, False, "a task of a chat in another workspace")


@case("AZ-1", title="a task with neither issue nor chat, an unknown task, or an issue or chat id is forbidden")
async def az1_orphan_and_unknown_tasks(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for sid, why in ((w.orphan_task, "a task with neither issue nor chat"), (str(uuid.uuid4()), "an unknown task"),
                     (w.issue_a, "an issue id is not a task id"), (w.chat_alice, "a chat id is not a task id")):
        await _decide(ctx, c, "alice", "task", sid, False, why)


# -- AZ-2: chat scopes -----------------------------------------------------------------------------

@case("AZ-2", title="a chat is allowed to its creator connected to its workspace")
async def az2_chat_creator_allowed(ctx):
    w = ctx.world
    alice, bob = await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.bob, w.ws_a)
    await _decide(ctx, alice, "alice", "chat", w.chat_alice, True, "her own chat")
    await _decide(ctx, bob, "bob", "chat", w.chat_bob, True, "his own chat")


@case("AZ-2", title="another user's chat is forbidden, in the same workspace and from another one")
async def az2_chat_of_another_user_forbidden(ctx):
    w = ctx.world
    alice, bob = await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.bob, w.ws_a)
    carol = await ctx.connect(w.carol, w.ws_b)
    await _decide(ctx, alice, "alice", "chat", w.chat_bob, False, "bob's chat in her workspace")
    await _decide(ctx, bob, "bob", "chat", w.chat_alice, False, "alice's chat in his workspace")
    await _decide(ctx, carol, "carol", "chat", w.chat_alice, False, "a chat of another workspace")


@case("AZ-2", title="an unknown chat, or a task, workspace or user id as a chat id, is forbidden")
async def az2_unknown_chat_forbidden(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for sid, why in ((str(uuid.uuid4()), "an unknown chat"), (w.chat_task_alice, "a task id is not a chat id"),
                     (w.task_a, "a task id is not a chat id"), (w.ws_a, "a workspace id is not a chat id"),
                     (w.alice, "a user id is not a chat id")):
        await _decide(ctx, c, "alice", "chat", sid, False, why)


# -- AZ-3: ids that are not UUIDs ------------------------------------------------------------------

def _not_uuids(w) -> list[str]:
    return ["not-a-uuid", "123", "all", "00000000-0000-0000-0000-00000000000g", "x" * 200,
            w.task_a + "x", w.chat_alice[:-1], w.task_a.replace("-", "_")]


@case("AZ-3", title="a task or chat id that is not a UUID is forbidden")
async def az3_non_uuid_forbidden(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope in ("task", "chat"):
        for sid in _not_uuids(w):
            await _decide(ctx, c, "alice", scope, sid, False, "not a UUID")


@case("AZ-3", "SUB-2", title="a non-UUID id is forbidden without a lookup: still forbidden while lookups fail",
      exclusive=True)
async def az3_non_uuid_forbidden_without_lookup(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    try:
        await set_faults(ctx, "error")
        for scope, real in (("task", w.task_a), ("chat", w.chat_alice)):
            for sid in _not_uuids(w):
                got = await ctx.answer(c, "subscribe", scope, sid)
                ctx.equal(got, sub_error(scope, sid, "forbidden"),
                          f"a non-UUID {scope} id must be forbidden without a lookup, even while lookups fail")
            got = await ctx.answer(c, "subscribe", scope, real)
            ctx.equal(got, sub_error(scope, real, "lookup_failed"),
                      f"while lookups fail, a real {scope} id must be answered lookup_failed")
    finally:
        await restore_faults(ctx)


# -- AZ-4: no leak -----------------------------------------------------------------------------------

async def _az4_mixed(ctx, pub: int) -> None:
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    await subscribe(ctx, alice, "task", w.task_a, "alice")
    for scope, sid in (("chat", w.chat_bob), ("task", w.task_b), ("workspace", w.ws_b), ("user", w.bob)):
        got = await ctx.answer(alice, "subscribe", scope, sid)
        ctx.equal(got, sub_error(scope, sid, "forbidden"), f"alice may not subscribe to {scope}:{sid}")
    # Witnesses on the same node hold the scopes alice must not see.
    bob, carol = await ctx.connect(w.bob, w.ws_a), await ctx.connect(w.carol, w.ws_b)
    alice2 = await ctx.connect(w.alice, w.ws_a)  # allowed these two, alice's first connection never asked
    await subscribe(ctx, bob, "chat", w.chat_bob, "bob")
    await subscribe(ctx, carol, "task", w.task_b, "carol")
    await subscribe(ctx, alice2, "task", w.chat_task_alice, "alice's second connection")
    await subscribe(ctx, alice2, "chat", w.chat_alice, "alice's second connection")
    held = {("workspace", w.ws_a), ("user", w.alice), ("task", w.task_a)}
    targets = [("workspace", w.ws_a), ("workspace", w.ws_b), ("user", w.alice), ("user", w.bob),
               ("user", w.carol), ("task", w.task_a), ("task", w.task_b), ("task", w.chat_task_alice),
               ("chat", w.chat_alice), ("chat", w.chat_bob)]
    witness_of = {("workspace", w.ws_b): carol, ("user", w.bob): bob, ("user", w.carol): carol,
                  ("task", w.task_b): carol, ("chat", w.chat_bob): bob, ("task", w.chat_task_alice): alice2,
                  ("chat", w.chat_alice): alice2}
    expected, leaks, seen_by = [], {}, {bob: [], carol: [], alice2: []}
    for i in range(3):
        for scope, sid in targets:
            p = await ctx.publish(scope, sid, {"type": "conformance:mixed", "payload": {"i": i}}, node=pub)
            if (scope, sid) in held:
                expected.append(p["event_id"])
            else:
                leaks[p["event_id"]] = f"{scope}:{sid} #{i}"
                if (scope, sid) in witness_of:
                    seen_by[witness_of[(scope, sid)]].append(p["event_id"])
    for c, ids in seen_by.items():
        await wait_each(ctx, c, ids, "a witness holding the scope")
    await wait_each(ctx, alice, expected, "alice")
    await marker(ctx, "workspace", w.ws_a, alice, node=pub)
    expect_absent(ctx, alice, leaks, "alice received an event of a scope she does not hold")
    got = among(alice, expected)
    missing = [e for e in expected if e not in got]
    ctx.expect(not missing and len(got) == len(expected),
               "alice must receive every event of the scopes she holds, each once",
               f"{len(expected)} events", f"{len(got)} received, {len(missing)} missing")


@case("AZ-4", title="a mixed stream over ten scopes: only the events of held scopes arrive")
async def az4_only_held_scopes_arrive(ctx):
    await _az4_mixed(ctx, 0)


@case("AZ-4", "NODE-1", title="across nodes: only the events of held scopes arrive", min_nodes=2)
async def az4_only_held_scopes_arrive_cross_node(ctx):
    await _az4_mixed(ctx, 1)


async def _az4_workspaces(ctx, pub: int) -> None:
    w = ctx.world
    alice, carol = await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.carol, w.ws_b)
    bob = await ctx.connect(w.bob, w.ws_a)
    a_ev = await ctx.publish("workspace", w.ws_a, {"type": "conformance:a"}, node=pub)
    b_ev = await ctx.publish("workspace", w.ws_b, {"type": "conformance:b"}, node=pub)
    alice_ev = await ctx.publish("user", w.alice, {"type": "conformance:for-alice"}, node=pub)
    await ctx.event(alice, a_ev)
    await ctx.event(alice, alice_ev)
    await ctx.event(carol, b_ev)
    await marker(ctx, "workspace", w.ws_a, alice, bob, node=pub)
    await marker(ctx, "workspace", w.ws_b, carol, node=pub)
    expect_absent(ctx, alice, {b_ev["event_id"]: "workspace B event"}, "a connection of A received B's event")
    expect_absent(ctx, carol, {a_ev["event_id"]: "workspace A event", alice_ev["event_id"]: "alice's user event"},
                  "a connection of B received an event of workspace A or of alice")
    expect_absent(ctx, bob, {alice_ev["event_id"]: "alice's user event", b_ev["event_id"]: "workspace B event"},
                  "bob received alice's user event or B's workspace event")


@case("AZ-4", title="never another workspace's events, never another user's user events")
async def az4_no_other_workspace_or_user(ctx):
    await _az4_workspaces(ctx, 0)


@case("AZ-4", "NODE-1", title="across nodes: never another workspace's or another user's events", min_nodes=2)
async def az4_no_other_workspace_or_user_cross_node(ctx):
    await _az4_workspaces(ctx, 1)


@case("AZ-4", "SUB-2", title="a subscribe answered lookup_failed grants nothing", exclusive=True)
async def az4_lookup_failed_grants_nothing(ctx):
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.bob, w.ws_a)
    try:
        await set_faults(ctx, "error")
        for scope, sid in (("task", w.task_a), ("chat", w.chat_alice)):
            got = await ctx.answer(alice, "subscribe", scope, sid)
            ctx.equal(got, sub_error(scope, sid, "lookup_failed"), f"{scope}:{sid} while lookups fail: lookup_failed")
    finally:
        await restore_faults(ctx)
    await subscribe(ctx, witness, "task", w.task_a, "bob")
    sent = await publish_n(ctx, "task", w.task_a, 2, node=len(ctx.target.urls) - 1)
    chat = await ctx.publish("chat", w.chat_alice, {"type": "conformance:chat"}, node=len(ctx.target.urls) - 1)
    await wait_all(ctx, witness, eids(sent), "bob (holding task_a)")
    await marker(ctx, "workspace", w.ws_a, alice, node=len(ctx.target.urls) - 1)
    leaks = {e: "task event" for e in eids(sent)}
    leaks[chat["event_id"]] = "chat event"
    expect_absent(ctx, alice, leaks, "a scope answered lookup_failed delivered events")

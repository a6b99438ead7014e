"""SUB: subscriptions.

Who decides a subscribe and who fixes its answer are different sentences: SUB-1 decides (and
words) the workspace and user scopes, AZ-1 / AZ-2 / AZ-3 decide task and chat, and SUB-2 words
their answers. So a refusal of what must be allowed, or an ack of what must be denied, breaks
the deciding requirement; an answer of the right kind in the wrong form (an ack naming another
scope, an error text other than `forbidden`) breaks the wording one (`judge_decision`).

The helpers `decide`, `judge_decision`, `expect_lookup_failed`, `set_faults` and
`restore_faults` are shared with authorization.py and control.py (candidates for common.py)."""

from __future__ import annotations

import uuid

from . import Failed, SetupError, case
from ..client import ControlError
from .common import (ack, among, eids, expect_absent, hold, leave, marker, matches, publish_n, received_ids,
                     sub_error, wait_all)

# the requirement a wrong decision breaks, and the one that words the answer, per scope type
DECIDES = {"workspace": "SUB-1", "user": "SUB-1", "task": "AZ-1", "chat": "AZ-2"}
WORDS = {"workspace": "SUB-1", "user": "SUB-1", "task": "SUB-2", "chat": "SUB-2"}

NODE1 = "the publisher, the subscriber and a resuming client may each be on a different node"
DEL1 = ("a connection that holds a subscription to S (it has received the ack) gets every event of S whose "
        "publish was acknowledged and started after that ack, within 5 s")
DEL2 = "an `event_id` reaches a subscription of a connection at most once"
DEL5 = "After `unsubscribe_ack` for S, no event of S whose publish started after that ack arrives."
SUB1 = ("`workspace` and `user` may be subscribed only with the connection's own workspace id and user id; that "
        "is answered `subscribe_ack`, as often as asked. Any other id is answered `subscribe_error` with "
        "`forbidden`.")
SUB2 = 'Allowed: `subscribe_ack` with `{"scope":S,"id":I}`. Denied: `forbidden`.'
SUB2_LOOKUP = "An authorizer failure other than not-found: `lookup_failed`."
CTL5 = "while `error`, task and chat lookups fail, so those subscribes are answered `lookup_failed`"


# -- judging a subscribe answer ------------------------------------------------------------------------

def judge_decision(ctx, got, scope: str, sid: str, allowed: bool, why: str, *, req: str | None = None,
                   words: str | None = None) -> bool:
    """A soft check of a subscribe answer: the ack when `allowed`, else `subscribe_error` with
    `forbidden` (extra fields allowed). The wrong kind of answer breaks `req` (who decides: SUB-1,
    AZ-1 or AZ-2 by scope type); the right kind in the wrong form breaks `words` (SUB-1 or SUB-2)."""
    req = req or DECIDES[scope]
    words = words or WORDS[scope]
    want = ack("subscribe", scope, sid) if allowed else sub_error(scope, sid, "forbidden")
    if matches(got, want):
        return True
    kind = got.get("type") if isinstance(got, dict) else None
    if kind == ("subscribe_ack" if allowed else "subscribe_error"):
        payload = got.get("payload")
        said = "an ack with another payload" if allowed else (
            payload.get("error") if isinstance(payload, dict) else payload)
        return ctx.check(words, False, f"{why}: subscribe {scope}:{sid} must be answered "
                                       f"{'subscribe_ack' if allowed else 'forbidden'}, not {said!r}", want, got)
    verdict = "allowed" if allowed else "forbidden"
    return ctx.check(req, False, f"{why}: subscribe {scope}:{sid} must be {verdict}", want, got)


async def decide(ctx, client, scope: str, sid: str, allowed: bool, why: str, *, req: str | None = None,
                 words: str | None = None) -> bool:
    """Subscribe and judge the answer (`judge_decision`); no answer at all breaks `words`."""
    words = words or WORDS[scope]
    got = await ctx.answer(client, "subscribe", scope, sid, req=words)
    return judge_decision(ctx, got, scope, sid, allowed, why, req=req, words=words)


async def answer_of(ctx, client, scope: str, sid: str, step: str, *, req: str) -> dict:
    """Set-up: subscribe and return the answer, whatever it is; no answer at all breaks `req`."""
    try:
        return await ctx.answer(client, "subscribe", scope, sid, req=req)
    except Failed as e:
        raise SetupError(step, e.reason, req=req, expected="an answer to subscribe") from None


async def expect_lookup_failed(ctx, client, scope: str, sid: str, why: str) -> bool:
    """While the authorizer fault is on (CTL-5): `lookup_failed` (SUB-2). An ack shows the lookup
    did not fail, which is CTL-5's; any other answer words the failure wrong, which is SUB-2's."""
    got = await ctx.answer(client, "subscribe", scope, sid, req="SUB-2")
    want = sub_error(scope, sid, "lookup_failed")
    if matches(got, want):
        return True
    if isinstance(got, dict) and got.get("type") == "subscribe_ack":
        return ctx.check("CTL-5", False, f'{why}: acknowledged while faults {{"authorizer": "error"}} is in force: '
                                         "the lookup did not fail", want, got)
    return ctx.check("SUB-2", False, f"{why}: a failing lookup must be answered lookup_failed", want, got)


async def set_faults(ctx, mode: str) -> None:
    """Set-up: PUT /_control/faults on every node; anything but 200 breaks CTL-5."""
    for i, control in enumerate(ctx.target.controls):
        try:
            await control.faults(mode)
        except ControlError as e:
            raise SetupError(f'set PUT /_control/faults {{"authorizer": "{mode}"}} on node {i + 1}',
                             f"{e.status} {e.body}", req="CTL-5", expected="200") from None


async def restore_faults(ctx) -> None:
    """Back to "ok" on every node, even if one of them refuses (recorded as CTL-5's, never raised:
    it runs in `finally`, where raising would hide the case's own outcome)."""
    for i, control in enumerate(ctx.target.controls):
        try:
            await control.faults("ok")
        except Exception as e:  # noqa: BLE001 - keep restoring the other nodes
            ctx.check("CTL-5", False, f'PUT /_control/faults {{"authorizer": "ok"}} failed on node {i + 1}', "200",
                      str(e))


# -- SUB-1: workspace and user scopes ----------------------------------------------------------------

@case("SUB-1", title="workspace and user scopes: the connection's own ids are acked as often as asked, any other "
                     "id is forbidden", cites={"SUB-1": SUB1})
async def sub1_own_scopes_only(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, own, others in (("workspace", w.ws_a, (w.ws_b, str(uuid.uuid4()))),
                               ("user", w.alice, (w.bob, w.carol, str(uuid.uuid4())))):
        for _ in range(2):  # already held since auth (HS-6), and asked twice: acked each time
            await decide(ctx, c, scope, own, True, f"the connection's own {scope}")
        for other in others:
            await decide(ctx, c, scope, other, False, f"another {scope}")


# -- SUB-2: task and chat go through the authorizer -----------------------------------------------

@case("SUB-2", "AZ-1", "AZ-2", title="task and chat answers: subscribe_ack {scope, id} when allowed, forbidden "
                                     "when denied",
      cites={"SUB-2": SUB2,
             "AZ-1": "`task:T` is allowed for an issue task when the issue's workspace is the connection's workspace",
             "AZ-2": "`chat:C` is allowed when C's workspace is the connection's workspace and C's creator is the "
                     "connection's user; otherwise it is forbidden."})
async def sub2_allowed_and_denied_answers(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid, allowed in (("task", w.task_a, True), ("task", w.chat_task_alice, True),
                                ("chat", w.chat_alice, True), ("task", w.task_b, False),
                                ("task", w.orphan_task, False), ("chat", w.chat_bob, False)):
        await decide(ctx, c, scope, sid, allowed, "alice in workspace A")


@case("SUB-2", "CTL-5", "SUB-1", title="while the authorizer fails, task and chat subscribes answer lookup_failed; "
                                       "workspace and user subscribes are still acked", exclusive=True,
      cites={"SUB-2": SUB2_LOOKUP, "CTL-5": CTL5, "SUB-1": SUB1})
async def sub2_lookup_failed(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    await set_faults(ctx, "error")
    try:
        # every task and chat lookup fails, so even a task or chat that does not exist is no plain denial
        for scope, sid in (("task", w.task_a), ("task", w.chat_task_alice), ("task", w.task_b),
                           ("task", w.orphan_task), ("task", str(uuid.uuid4())), ("chat", w.chat_alice),
                           ("chat", w.chat_bob), ("chat", str(uuid.uuid4()))):
            await expect_lookup_failed(ctx, c, scope, sid, f"subscribe {scope}:{sid} while lookups fail")
        for scope, sid in (("workspace", w.ws_a), ("user", w.alice)):  # SUB-1 decides these without a lookup
            await decide(ctx, c, scope, sid, True, "the connection's own scope while task and chat lookups fail")
    finally:
        await restore_faults(ctx)


# -- SUB-3: any other scope -------------------------------------------------------------------------

@case("SUB-3", title="global, daemon_runtime and unknown scope types are answered unknown_scope",
      cites="Any other scope type (`global`, `daemon_runtime`, anything unknown) is answered `unknown_scope`.")
async def sub3_unknown_scope(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    # Scope types are the contract's exact strings: "Task" or "workspaces" is another, unknown type.
    for scope, sid in (("global", "all"), ("daemon_runtime", str(uuid.uuid4())), ("issue", w.issue_a),
                       ("Task", w.task_a), ("WORKSPACE", w.ws_a), ("workspaces", w.ws_a), ("nonsense", "x")):
        want = sub_error(scope, sid, "unknown_scope")
        got = await ctx.answer(c, "subscribe", scope, sid)
        ctx.check("SUB-3", matches(got, want), f"subscribe to scope type {scope!r} must be answered unknown_scope",
                  want, got)


@case("SUB-3", "EV-1", "DEL-2", title="asking for global is answered unknown_scope, and global events still arrive "
                                      "once", capability="global",
      cites={"SUB-3": "Any other scope type (`global`, `daemon_runtime`, anything unknown) is answered "
                      "`unknown_scope`.",
             "EV-1": "`global:all` (every connection on every node)", "DEL-2": DEL2})
async def sub3_global_subscribe_changes_nothing(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for _ in range(2):
        want = sub_error("global", "all", "unknown_scope")
        got = await ctx.answer(c, "subscribe", "global", "all")
        ctx.check("SUB-3", matches(got, want), "subscribe to global must be answered unknown_scope", want, got)
    p = await ctx.publish("global", "all", {"type": "conformance:global"})
    await ctx.event(c, p, req="EV-1")
    last = await ctx.publish("global", "all", {"type": "conformance:marker"})
    await ctx.event(c, last, req="EV-1")  # a second copy of p would come before this one of the same scope
    n = received_ids(c).count(p["event_id"])
    ctx.check("DEL-2", n == 1, "a global event must arrive once, however often global was asked for", 1, n)


# -- SUB-4: unsubscribe -----------------------------------------------------------------------------

@case("SUB-4", title="unsubscribe is answered unsubscribe_ack {scope, id}, whether or not the scope is held",
      cites='`unsubscribe` is always answered `unsubscribe_ack` with `{"scope":S,"id":I}`, whether or not the '
            'connection held the scope.')
async def sub4_unsubscribe_always_acked(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid in (("task", w.task_a), ("task", w.task_b), ("chat", w.chat_bob), ("workspace", w.ws_b),
                       ("user", w.bob), ("nonsense", "x"), ("global", "all"), ("task", "not-a-uuid")):
        want = ack("unsubscribe", scope, sid)
        got = await ctx.answer(c, "unsubscribe", scope, sid)
        ctx.check("SUB-4", matches(got, want), f"unsubscribe from {scope}:{sid} (not held) must be acknowledged",
                  want, got)
    await hold(ctx, c, "task", w.task_a, "alice")
    for _ in range(2):
        want = ack("unsubscribe", "task", w.task_a)
        got = await ctx.answer(c, "unsubscribe", "task", w.task_a)
        ctx.check("SUB-4", matches(got, want), "unsubscribe from a held scope must be acknowledged, every time",
                  want, got)


async def _leave_auto_scope(ctx, scope: str) -> None:
    """Leave an auto-subscribed scope: a later event of it must not arrive (SUB-4 says it is
    left, DEL-5 that nothing after the ack arrives: one observation, both judged); subscribing
    again brings its events back (DEL-1)."""
    w = ctx.world
    sid, other = (w.ws_a, ("user", w.alice)) if scope == "workspace" else (w.alice, ("workspace", w.ws_a))
    alice = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.alice, w.ws_a)  # holds both auto scopes, on the same node
    await leave(ctx, alice, scope, sid)
    gone = await ctx.publish(scope, sid, {"type": "conformance:gone"})
    await ctx.event(witness, gone)
    await marker(ctx, *other, alice)
    leaked = gone["event_id"] in received_ids(alice)
    for req in ("SUB-4", "DEL-5"):
        ctx.check(req, not leaked, f"a {scope} event arrived after unsubscribing from the auto-subscribed {scope} "
                                   "scope", "no such event", gone)
    await hold(ctx, alice, scope, sid, "alice")
    await ctx.event(alice, await ctx.publish(scope, sid, {"type": "conformance:back"}))


LEAVES_AUTO = "It also leaves the auto-subscribed workspace and user scopes."


@case("SUB-4", "DEL-5", "DEL-1", title="unsubscribe leaves the auto-subscribed workspace scope; subscribe restores it",
      cites={"SUB-4": LEAVES_AUTO, "DEL-5": DEL5, "DEL-1": DEL1})
async def sub4_leave_auto_workspace(ctx):
    await _leave_auto_scope(ctx, "workspace")


@case("SUB-4", "DEL-5", "DEL-1", title="unsubscribe leaves the auto-subscribed user scope; subscribe restores it",
      cites={"SUB-4": LEAVES_AUTO, "DEL-5": DEL5, "DEL-1": DEL1})
async def sub4_leave_auto_user(ctx):
    await _leave_auto_scope(ctx, "user")


@case("SUB-4", "EV-1", title="global cannot be left: unsubscribing is acked and global events still arrive",
      capability="global",
      cites={"SUB-4": "`global` cannot be left: unsubscribing from it is acknowledged and changes nothing.",
             "EV-1": "`global:all` (every connection on every node)"})
async def sub4_global_cannot_be_left(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    await ctx.event(c, await ctx.publish("global", "all", {"type": "conformance:global"}), req="EV-1")
    await leave(ctx, c, "global", "all")
    await ctx.event(c, await ctx.publish("global", "all", {"type": "conformance:global"}), req="SUB-4")
    await leave(ctx, c, "workspace", w.ws_a)
    await leave(ctx, c, "user", w.alice)
    await leave(ctx, c, "global", "all")
    await ctx.event(c, await ctx.publish("global", "all", {"type": "conformance:global"}), req="SUB-4")


@case("DEL-1", title="unsubscribing from one scope keeps the others: their events still arrive",
      cites={"DEL-1": DEL1})
async def sub4_unsubscribe_keeps_other_scopes(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    await hold(ctx, c, "task", w.task_a, "alice")
    await hold(ctx, c, "chat", w.chat_alice, "alice")
    await leave(ctx, c, "task", w.task_a)
    for scope, sid in (("chat", w.chat_alice), ("workspace", w.ws_a), ("user", w.alice)):
        await ctx.event(c, await ctx.publish(scope, sid, {"type": "conformance:kept"}))


# -- SUB-5: twice delivers once; close drops everything ---------------------------------------------

@case("SUB-5", "DEL-2", "DEL-1", title="subscribing twice to a scope delivers each of its events once",
      cites={"SUB-5": "Subscribing to the same scope twice still delivers each event once.", "DEL-2": DEL2,
             "DEL-1": DEL1})
async def sub5_subscribe_twice_delivers_once(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid in (("task", w.task_a), ("chat", w.chat_alice), ("workspace", w.ws_a), ("user", w.alice)):
        await hold(ctx, c, scope, sid, "alice")
        await hold(ctx, c, scope, sid, "alice")
        sent = eids(await publish_n(ctx, scope, sid, 3))
        await wait_all(ctx, c, sent, "alice")
        await marker(ctx, scope, sid, c)  # a second copy would come before the marker of the same scope
        got = among(c, sent)
        repeated = [i for i, e in enumerate(sent) if got.count(e) > 1]
        for req in ("SUB-5", "DEL-2"):
            ctx.check(req, not repeated, f"after subscribing twice to {scope}, events arrived more than once",
                      "each event once", {"repeated (publish index)": repeated})


@case("DEL-5", "DEL-1", title="one unsubscribe after two subscribes leaves the scope",
      cites={"DEL-5": DEL5, "DEL-1": DEL1})
async def sub5_one_unsubscribe_after_two_subscribes(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.bob, w.ws_a)
    await hold(ctx, witness, "task", w.task_a, "bob")
    await hold(ctx, c, "task", w.task_a, "alice")
    await hold(ctx, c, "task", w.task_a, "alice")
    await leave(ctx, c, "task", w.task_a)
    gone = await ctx.publish("task", w.task_a, {"type": "conformance:gone"})
    await ctx.event(witness, gone)
    await marker(ctx, "workspace", w.ws_a, c)
    expect_absent(ctx, c, {gone["event_id"]: "task event published after the unsubscribe_ack"},
                  "a task event arrived after one unsubscribe from a scope subscribed twice", req="DEL-5")


@case("SUB-5", "AZ-4", "DEL-1", title="closing a connection drops its subscriptions: a new connection of the user "
                                      "inherits none",
      cites={"SUB-5": "Closing a connection drops all of its subscriptions.",
             "AZ-4": "a connection never receives an event of a scope it does not hold a granted subscription to at "
                     "that moment",
             "DEL-1": DEL1})
async def sub5_close_drops_subscriptions(ctx):
    w = ctx.world
    old = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.alice, w.ws_a)
    await hold(ctx, witness, "task", w.task_a, "alice's witness connection")
    await hold(ctx, witness, "chat", w.chat_alice, "alice's witness connection")
    await hold(ctx, old, "task", w.task_a, "alice")
    await hold(ctx, old, "chat", w.chat_alice, "alice")
    await old.close()
    again = await ctx.connect(w.alice, w.ws_a)
    task_ev = await ctx.publish("task", w.task_a, {"type": "conformance:task"})
    chat_ev = await ctx.publish("chat", w.chat_alice, {"type": "conformance:chat"})
    await ctx.event(witness, task_ev)  # the scopes still work for the connection that holds them
    await ctx.event(witness, chat_ev)
    await marker(ctx, "workspace", w.ws_a, again)
    inherited = [e for e in (task_ev["event_id"], chat_ev["event_id"]) if e in received_ids(again)]
    # One observation, two sentences: the closed connection's subscriptions were not dropped
    # (SUB-5), and the new connection got events of scopes it never asked for (AZ-4).
    ctx.check("SUB-5", not inherited, "a new connection received events of scopes only a closed connection of the "
                                      "user had subscribed to", "none of them", inherited)
    ctx.check("AZ-4", not inherited, "a connection received task and chat events it never subscribed to",
              "none of them", inherited)

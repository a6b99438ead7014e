"""AZ: who may subscribe to which task and chat, and that nothing else ever arrives.

TestWorld: alice and bob are members of A, carol of B, erin and frank of both (frank only for
revocation, AZ-5). task_a / task_b are issue
tasks in A / B, chat_task_alice is a task of alice's chat in A, chat_bob is bob's chat in A,
chat_erin erin's chat in A (with chat_task_erin), orphan_task has neither an issue nor a chat.

A wrong decision is the deciding requirement's (AZ-1 for task, AZ-2 for chat, AZ-3 for ids that
are not UUIDs); an answer of the right kind in the wrong form is SUB-2's (`judge_decision`). In
the no-leak cases an event of a scope the connection does not hold is AZ-4's, a missing event of
a scope it holds DEL-1's, a repeat DEL-2's. A scope AZ-1 / AZ-2 deny stays a scope the connection
does not hold, even when the target wrongly acknowledged it: its events are leaks. In the
revocation cases a revoked connection left open, closed late or with another code, a connection
closed that was not revoked, and a revoked user let in again are all AZ-5's."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp

from . import Failed, SetupError, case
from ..client import ControlError
from .common import (NOT_MEMBER, PING, PONG, among, auth_answer, eids, expect_absent, hold, marker, matches, publish_n,
                     sub_error, wait_all, wait_each)
from .subscriptions import DEL1, DEL2, NODE1, SUB2, answer_of, decide, restore_faults, set_faults

AZ1 = ("`task:T` is allowed for an issue task when the issue's workspace is the connection's workspace, and for a "
       "chat task when the chat's workspace is the connection's workspace and the chat's creator is the "
       "connection's user. A task that is neither, or that is unknown, is forbidden.")
AZ2 = ("`chat:C` is allowed when C's workspace is the connection's workspace and C's creator is the connection's "
       "user; otherwise it is forbidden.")
AZ3 = "A task or chat id that is not a UUID is forbidden without any lookup."
AZ3_SPELLINGS = ("Another spelling of a UUID (upper case, braces, `urn:uuid:`, no hyphens) is either forbidden, or "
                 "names the same scope as the canonical spelling: its subscriber receives the events published to "
                 "the canonical id.")
AZ4 = ("a connection never receives an event of a scope it does not hold a granted subscription to at that moment. "
       "In particular it never sees another workspace's events, another user's user-scope events, a denied task or "
       "chat")
SUB1 = "Any other id is answered `subscribe_error` with `forbidden`."


# -- AZ-1: task scopes -----------------------------------------------------------------------------

@case("AZ-1", "SUB-2", title="an issue task is allowed to every member connected to the issue's workspace",
      cites={"AZ-1": AZ1, "SUB-2": SUB2})
async def az1_issue_task_own_workspace(ctx):
    w = ctx.world
    for who, user, ws, task in (("alice", w.alice, w.ws_a, w.task_a), ("bob", w.bob, w.ws_a, w.task_a),
                                ("carol", w.carol, w.ws_b, w.task_b)):
        c = await ctx.connect(user, ws)
        await decide(ctx, c, "task", task, True, f"{who}: an issue task of the connection's workspace")


@case("AZ-1", "SUB-2", title="an issue task of another workspace is forbidden", cites={"AZ-1": AZ1, "SUB-2": SUB2},
      catches="issue tasks allowed whatever the issue's workspace")
async def az1_issue_task_other_workspace(ctx):
    w = ctx.world
    for who, user, ws, task in (("alice", w.alice, w.ws_a, w.task_b), ("carol", w.carol, w.ws_b, w.task_a)):
        c = await ctx.connect(user, ws)
        await decide(ctx, c, "task", task, False, f"{who}: an issue task of another workspace")


@case("AZ-1", "SUB-2", title="a chat task is allowed to the chat's creator only", cites={"AZ-1": AZ1, "SUB-2": SUB2})
async def az1_chat_task_creator_only(ctx):
    w = ctx.world
    t = w.chat_task_alice
    alice, bob = await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.bob, w.ws_a)
    carol = await ctx.connect(w.carol, w.ws_b)
    await decide(ctx, alice, "task", t, True, "alice: a task of her own chat")
    await decide(ctx, bob, "task", t, False, "bob: a task of alice's chat, same workspace")
    await decide(ctx, carol, "task", t, False, "carol: a task of a chat in another workspace")


@case("AZ-1", "SUB-2", title="a task with neither issue nor chat, or an unknown task id, is forbidden",
      cites={"AZ-1": AZ1, "SUB-2": SUB2})
async def az1_orphan_and_unknown_tasks(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for sid, why in ((w.orphan_task, "a task with neither issue nor chat"), (str(uuid.uuid4()), "an unknown task"),
                     (w.issue_a, "an issue id (no task has it)"), (w.chat_alice, "a chat id (no task has it)")):
        await decide(ctx, c, "task", sid, False, f"alice: {why}")


@case("AZ-1", "SUB-2", title="a task is judged by the workspace the connection is in, not by the user's memberships",
      cites={"AZ-1": AZ1, "SUB-2": SUB2},
      catches="decisions taken on the user's memberships instead of the connection's workspace")
async def az1_task_judged_by_the_connections_workspace(ctx):
    """erin belongs to A and B: connected to B she may not see A's issue task, nor a task of her
    own chat in A; connected to A she may."""
    w = ctx.world
    in_a, in_b = await ctx.connect(w.erin, w.ws_a), await ctx.connect(w.erin, w.ws_b)
    await decide(ctx, in_b, "task", w.task_a, False, "erin connected to B: an issue task of A")
    await decide(ctx, in_b, "task", w.chat_task_erin, False, "erin connected to B: a task of her own chat in A")
    await decide(ctx, in_b, "task", w.task_b, True, "erin connected to B: an issue task of B")
    await decide(ctx, in_a, "task", w.task_a, True, "erin connected to A: an issue task of A")
    await decide(ctx, in_a, "task", w.chat_task_erin, True, "erin connected to A: a task of her own chat in A")


# -- AZ-2: chat scopes -----------------------------------------------------------------------------

@case("AZ-2", "SUB-2", title="a chat is allowed to its creator connected to its workspace",
      cites={"AZ-2": AZ2, "SUB-2": SUB2})
async def az2_chat_creator_allowed(ctx):
    w = ctx.world
    alice, bob = await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.bob, w.ws_a)
    await decide(ctx, alice, "chat", w.chat_alice, True, "alice: her own chat")
    await decide(ctx, bob, "chat", w.chat_bob, True, "bob: his own chat")


@case("AZ-2", "SUB-2", title="another user's chat is forbidden, in the same workspace and from another one",
      cites={"AZ-2": AZ2, "SUB-2": SUB2},
      catches='a chat allowed to any member of its workspace: the creator check missing')
async def az2_chat_of_another_user_forbidden(ctx):
    w = ctx.world
    alice, bob = await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.bob, w.ws_a)
    carol = await ctx.connect(w.carol, w.ws_b)
    await decide(ctx, alice, "chat", w.chat_bob, False, "alice: bob's chat in her workspace")
    await decide(ctx, bob, "chat", w.chat_alice, False, "bob: alice's chat in his workspace")
    await decide(ctx, carol, "chat", w.chat_alice, False, "carol: a chat of another workspace")


@case("AZ-2", "SUB-2", title="an unknown chat id, or a task, workspace or user id given as a chat id, is forbidden",
      cites={"AZ-2": AZ2, "SUB-2": SUB2})
async def az2_unknown_chat_forbidden(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for sid, why in ((str(uuid.uuid4()), "an unknown chat"), (w.chat_task_alice, "a task id (no chat has it)"),
                     (w.task_a, "a task id (no chat has it)"), (w.ws_a, "a workspace id (no chat has it)"),
                     (w.alice, "a user id (no chat has it)")):
        await decide(ctx, c, "chat", sid, False, f"alice: {why}")


@case("AZ-2", "SUB-2", title="a chat is forbidden to its creator connected to another workspace",
      cites={"AZ-2": AZ2, "SUB-2": SUB2})
async def az2_chat_judged_by_the_connections_workspace(ctx):
    w = ctx.world
    in_a, in_b = await ctx.connect(w.erin, w.ws_a), await ctx.connect(w.erin, w.ws_b)
    await decide(ctx, in_b, "chat", w.chat_erin, False, "erin connected to B: her own chat in A")
    await decide(ctx, in_a, "chat", w.chat_erin, True, "erin connected to A: her own chat in A")


# -- AZ-3: ids that are not UUIDs ------------------------------------------------------------------

def _not_uuids(w) -> list[str]:
    """Ids no UUID parser accepts (wrong length, a non-hex digit, underscores)."""
    return ["not-a-uuid", "123", "all", "00000000-0000-0000-0000-00000000000g", "x" * 200,
            w.task_a + "x", w.chat_alice[:-1], w.task_a.replace("-", "_")]


@case("AZ-3", title="a task or chat id that is not a UUID is forbidden", cites={"AZ-3": AZ3},
      catches='ids that are not UUIDs resolved anyway (seen in Multica behind a shim)')
async def az3_non_uuid_forbidden(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope in ("task", "chat"):
        for sid in _not_uuids(w):
            await decide(ctx, c, scope, sid, False, "an id that is not a UUID", req="AZ-3", words="AZ-3")


def spellings(u: str) -> list[tuple[str, str]]:
    """Other spellings of the UUID u that common parsers (Postgres, Go's uuid and pgtype, Python's
    uuid) read as u."""
    found = [("upper case", u.upper()), ("no hyphens", u.replace("-", "")), ("braces", "{%s}" % u),
             ("urn:uuid:", "urn:uuid:" + u), ("mixed case", u[:8].upper() + u[8:])]
    return [(what, s) for what, s in found if s != u]  # upper-casing digits changes nothing


@case("AZ-3", title="another spelling of a task's UUID is forbidden, or is the same scope: the events published to "
                    "the canonical id reach its subscriber", cites={"AZ-3": AZ3_SPELLINGS},
      catches="each spelling acknowledged as a scope of its own that no event ever reaches (issue 16: 10,000 "
              "spellings, 10,000 streams)")
async def az3_other_spellings_are_forbidden_or_the_same_scope(ctx):
    w = ctx.world
    for what, sid in spellings(w.task_a):
        c = await ctx.connect(w.alice, w.ws_a)  # a connection of its own: no other subscription can deliver
        got = await answer_of(ctx, c, "task", sid, f"subscribe to task:{sid}", req="AZ-3")
        kind = got.get("type") if isinstance(got, dict) else None
        error = (got.get("payload") or {}).get("error") if isinstance(got, dict) else None
        if kind == "subscribe_error" and error == "forbidden":
            continue
        ctx.expect(kind == "subscribe_ack", f"the task id spelled with {what} ({sid}) must be forbidden or "
                   "acknowledged as the same task", "subscribe_error forbidden | subscribe_ack", got)
        p = await ctx.publish("task", w.task_a, {"n": what})
        try:
            await ctx.event(c, p, req="AZ-3")
        except Failed as e:
            raise Failed(f"task:{sid} ({what}) was acknowledged, but the event published to task:{w.task_a} did "
                         f"not reach it: a scope of its own ({e.reason})", f"event {p['event_id']}",
                         e.received, "AZ-3") from None
        await c.close()


@case("AZ-3", title="a non-UUID id is forbidden without a lookup: still forbidden while lookups fail",
      exclusive=True, cites={"AZ-3": AZ3},
      catches='ids that are not UUIDs sent to the store, failing with it')
async def az3_non_uuid_forbidden_without_lookup(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    await set_faults(ctx, "error")
    try:
        for scope, real in (("task", w.task_a), ("chat", w.chat_alice)):
            # Set-up: a real id shows the lookups do fail; otherwise "forbidden" below proves nothing.
            want = sub_error(scope, real, "lookup_failed")
            got = await answer_of(ctx, c, scope, real, f"subscribe {scope}:{real} while lookups fail", req="SUB-2")
            if not matches(got, want):
                acked = isinstance(got, dict) and got.get("type") == "subscribe_ack"
                raise SetupError(f"make {scope} lookups fail (PUT /_control/faults, then subscribe {scope}:{real})",
                                 got, req="CTL-5" if acked else "SUB-2", expected=want)
            for sid in _not_uuids(w):  # lookup_failed here would show a lookup was made
                await decide(ctx, c, scope, sid, False, "an id that is not a UUID, while lookups fail", req="AZ-3",
                             words="AZ-3")
    finally:
        await restore_faults(ctx)


# -- AZ-4: no leak -----------------------------------------------------------------------------------

async def _az4_mixed(ctx, pub: int) -> None:
    """Four connections on node 0, each holding some scopes and refused others; a stream over eleven
    scopes published through node `pub`. Each connection gets every event of its scopes (DEL-1),
    each once (DEL-2), and none of any other scope (AZ-4): each is the others' witness."""
    w = ctx.world
    alice, alice2 = await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.alice, w.ws_a)
    bob, carol = await ctx.connect(w.bob, w.ws_a), await ctx.connect(w.carol, w.ws_b)
    names = {alice: "alice", alice2: "alice's second connection", bob: "bob", carol: "carol"}
    granted = {alice: [("task", w.task_a)], alice2: [("task", w.chat_task_alice), ("chat", w.chat_alice)],
               bob: [("chat", w.chat_bob)], carol: [("task", w.task_b)]}
    denied = {alice: [("chat", w.chat_bob), ("task", w.task_b), ("task", w.orphan_task), ("workspace", w.ws_b),
                      ("user", w.bob)],
              bob: [("task", w.chat_task_alice), ("chat", w.chat_alice)],
              carol: [("task", w.task_a), ("chat", w.chat_alice), ("workspace", w.ws_a)]}
    for c, scopes in granted.items():
        for scope, sid in scopes:
            await hold(ctx, c, scope, sid, names[c])
    for c, scopes in denied.items():
        for scope, sid in scopes:
            await decide(ctx, c, scope, sid, False, f"{names[c]} asks for a scope that is not theirs")
    auto = {alice: [("workspace", w.ws_a), ("user", w.alice)], alice2: [("workspace", w.ws_a), ("user", w.alice)],
            bob: [("workspace", w.ws_a), ("user", w.bob)], carol: [("workspace", w.ws_b), ("user", w.carol)]}
    held = {c: set(auto[c]) | set(granted[c]) for c in names}
    targets = [("workspace", w.ws_a), ("workspace", w.ws_b), ("user", w.alice), ("user", w.bob),
               ("user", w.carol), ("task", w.task_a), ("task", w.task_b), ("task", w.chat_task_alice),
               ("task", w.orphan_task), ("chat", w.chat_alice), ("chat", w.chat_bob)]
    published: dict[tuple[str, str], list[str]] = {t: [] for t in targets}
    for i in range(3):
        for scope, sid in targets:
            p = await ctx.publish(scope, sid, {"type": "conformance:mixed", "payload": {"i": i}}, node=pub)
            published[scope, sid].append(p["event_id"])
    for c in names:
        await wait_each(ctx, c, [e for t in targets if t in held[c] for e in published[t]], names[c])
    await marker(ctx, "workspace", w.ws_a, alice, alice2, bob, node=pub)
    await marker(ctx, "workspace", w.ws_b, carol, node=pub)
    for c, who in names.items():
        leaks = {e: f"{scope}:{sid} #{i}" for (scope, sid), ids in published.items() if (scope, sid) not in held[c]
                 for i, e in enumerate(ids)}
        leaked = [leaks[e] for e in among(c, leaks)]
        ctx.check("AZ-4", not leaked, f"{who} received events of scopes it does not hold", "none of them",
                  leaked[:5])
        got = among(c, [e for t in held[c] if t in published for e in published[t]])
        ctx.check("DEL-2", len(got) == len(set(got)), f"{who} received events of its scopes more than once",
                  "each event once", f"{len(got)} frames of {len(set(got))} events")


MIXED = {"AZ-4": AZ4, "DEL-1": DEL1, "DEL-2": DEL2, "SUB-1": SUB1, "AZ-1": AZ1, "AZ-2": AZ2, "SUB-2": SUB2}


@case("AZ-4", "DEL-1", "DEL-2", "SUB-1", "AZ-1", "AZ-2", "SUB-2",
      title="a mixed stream over eleven scopes: each connection gets exactly the events of the scopes it holds",
      cites=MIXED)
async def az4_only_held_scopes_arrive(ctx):
    await _az4_mixed(ctx, 0)


@case("AZ-4", "DEL-1", "DEL-2", "SUB-1", "AZ-1", "AZ-2", "SUB-2", "NODE-1",
      title="across nodes: each connection gets exactly the events of the scopes it holds", min_nodes=2,
      cites={**MIXED, "NODE-1": NODE1})
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
    for who, client, forbidden in (
            ("alice (workspace A)", alice, {b_ev["event_id"]: "workspace B event"}),
            ("carol (workspace B)", carol, {a_ev["event_id"]: "workspace A event",
                                            alice_ev["event_id"]: "alice's user event"}),
            ("bob (workspace A)", bob, {alice_ev["event_id"]: "alice's user event",
                                        b_ev["event_id"]: "workspace B event"})):
        leaked = [forbidden[e] for e in forbidden if e in set(among(client, forbidden))]
        ctx.check("AZ-4", not leaked, f"{who} received another workspace's or another user's event",
                  "none of these events", leaked)


async def _az4_two_workspaces(ctx, pub: int) -> None:
    """erin connected to A and to B: each connection sees its own workspace's events and the
    chat of A only where it holds it; the connection to B never sees A's."""
    w = ctx.world
    in_a, in_b = await ctx.connect(w.erin, w.ws_a), await ctx.connect(w.erin, w.ws_b)
    await hold(ctx, in_a, "chat", w.chat_erin, "erin connected to A")
    got = await ctx.answer(in_b, "subscribe", "chat", w.chat_erin, req="AZ-2")
    ctx.check("AZ-2", matches(got, sub_error("chat", w.chat_erin, "forbidden")),
              "erin connected to B may not subscribe to her chat in A", sub_error("chat", w.chat_erin, "forbidden"), got)
    chat_ev = await ctx.publish("chat", w.chat_erin, {"type": "conformance:chat"}, node=pub)
    a_ev = await ctx.publish("workspace", w.ws_a, {"type": "conformance:a"}, node=pub)
    await ctx.event(in_a, chat_ev)
    await ctx.event(in_a, a_ev)
    await marker(ctx, "workspace", w.ws_b, in_b, node=pub)
    expect_absent(ctx, in_b, {chat_ev["event_id"]: "her chat in A", a_ev["event_id"]: "workspace A event"},
                  "erin's connection to B received events of workspace A", req="AZ-4")


@case("AZ-4", "AZ-2", "DEL-1", title="a user in two workspaces: the connection to B never sees A's events",
      cites={"AZ-4": AZ4, "AZ-2": AZ2, "DEL-1": DEL1})
async def az4_user_in_two_workspaces(ctx):
    await _az4_two_workspaces(ctx, 0)


@case("AZ-4", "AZ-2", "DEL-1", "NODE-1", title="across nodes: a user in two workspaces sees each one's events only",
      min_nodes=2, cites={"AZ-4": AZ4, "AZ-2": AZ2, "DEL-1": DEL1, "NODE-1": NODE1})
async def az4_user_in_two_workspaces_cross_node(ctx):
    await _az4_two_workspaces(ctx, 1)


@case("AZ-4", "DEL-1", title="never another workspace's events, never another user's user events",
      cites={"AZ-4": AZ4, "DEL-1": DEL1})
async def az4_no_other_workspace_or_user(ctx):
    await _az4_workspaces(ctx, 0)


@case("AZ-4", "DEL-1", "NODE-1", title="across nodes: never another workspace's or another user's events",
      min_nodes=2, cites={"AZ-4": AZ4, "DEL-1": DEL1, "NODE-1": NODE1})
async def az4_no_other_workspace_or_user_cross_node(ctx):
    await _az4_workspaces(ctx, 1)


@case("AZ-4", "SUB-2", "DEL-1", title="a subscribe answered lookup_failed grants nothing", exclusive=True,
      cites={"AZ-4": AZ4, "SUB-2": "An authorizer failure other than not-found: `lookup_failed`.", "DEL-1": DEL1})
async def az4_lookup_failed_grants_nothing(ctx):
    w = ctx.world
    pub = len(ctx.target.urls) - 1
    alice = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.bob, w.ws_a)
    witness2 = await ctx.connect(w.alice, w.ws_a)
    await set_faults(ctx, "error")
    try:
        for scope, sid in (("task", w.task_a), ("chat", w.chat_alice)):
            want = sub_error(scope, sid, "lookup_failed")
            got = await ctx.answer(alice, "subscribe", scope, sid, req="SUB-2")
            if isinstance(got, dict) and got.get("type") == "subscribe_ack":  # the fault is not in force
                raise SetupError(f"make {scope} lookups fail (PUT /_control/faults)", got, req="CTL-5", expected=want)
            ctx.check("SUB-2", matches(got, want), f"{scope}:{sid} while lookups fail must be answered lookup_failed",
                      want, got)  # any refusal still lets the case judge what it grants
    finally:
        await restore_faults(ctx)
    await hold(ctx, witness, "task", w.task_a, "bob")
    await hold(ctx, witness2, "chat", w.chat_alice, "alice's second connection")
    sent = await publish_n(ctx, "task", w.task_a, 2, node=pub)
    chat = await ctx.publish("chat", w.chat_alice, {"type": "conformance:chat"}, node=pub)
    await wait_all(ctx, witness, eids(sent), "bob (holding task_a)")
    await ctx.event(witness2, chat)
    await marker(ctx, "workspace", w.ws_a, alice, node=pub)
    leaks = {e: "task event" for e in eids(sent)}
    leaks[chat["event_id"]] = "chat event"
    expect_absent(ctx, alice, leaks, "a scope answered lookup_failed delivered events", req="AZ-4")


# -- AZ-5: revocation ---------------------------------------------------------------------------------

AZ5 = ("`POST /_control/revoke` (or the target's own revocation path) closes that user's connections to that "
       "workspace on every node within 2 s, with close code 1008. Later connections of that user to that workspace "
       "are refused as non-members.")
AZ5_FIXTURES = "A target MUST NOT close connections merely because fixtures were replaced."
CTL6 = '`POST /_control/revoke` `{"workspace": W, "user": U}`'
REVOKE_WITHIN = 2.0  # AZ-5's bound
# The close is measured from when the revoke call was answered, as the client sees it: the answer
# and the close frame each cross the loopback and the suite's event loop once more, so a close a
# little after the bound is still within it at the target. 0.5 s covers that on a loaded machine.
MARGIN = 0.5


async def _revoke(ctx, workspace: str, user: str, node: int = 0) -> None:
    """POST /_control/revoke on `node`; anything but a 2xx is a set-up error (CTL-6's, unless the
    store is unreachable: 503, as for a publish)."""
    step = f"revoke {user} in workspace {workspace} (POST /_control/revoke on node {node + 1})"
    try:
        status, body = await ctx.target.controls[node].call("POST", "/_control/revoke",
                                                             {"workspace": workspace, "user": user}, expect=None)
    except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as e:
        raise SetupError(step, f"{type(e).__name__}: {e}") from None
    if not 200 <= status < 300:
        raise SetupError(step, f"{status} {body}", req=None if status == 503 else "CTL-6", expected="200")


async def _pong(ctx, client, who: str, why: str) -> None:
    """The connection is open and answers: a ping is answered pong (IN-2)."""
    start = len(client.frames)
    try:
        await client.send(PING)
    except (ConnectionError, RuntimeError) as e:
        raise Failed(f"{who}: {why}, but it was closed (code {client.close_code})", "open", type(e).__name__) from None
    await ctx.frame(client, lambda f: matches(f, PONG), f"pong to {who}'s ping ({why})", start=start)


async def _refused(ctx, token: str, workspace: str, who: str, *, node: int, cookie: bool) -> None:
    """A new connection the revocation refuses as a non-member: HS-3's error frame or HS-2's 403."""
    want = {"error": NOT_MEMBER}
    if cookie:
        status, body = await ctx.upgrade(node=node, params={"workspace_id": workspace}, cookie=token)
        ctx.check("AZ-5", status == 403 and matches(body, want),
                  f"node {node + 1}: {who} connecting again by cookie must be refused as a non-member",
                  f"403 {want}", f"{status} {body}")
        return
    client = await ctx.raw(node=node, params={"workspace_id": workspace})
    got = await auth_answer(ctx, client, token, f"the answer to {who}'s auth on node {node + 1}", req="HS-3")
    ctx.check("AZ-5", matches(got, want), f"node {node + 1}: {who} connecting again must be refused as a non-member",
              want, got)


@case("AZ-5", "CTL-6", title="a revocation closes the user's connections to the workspace on every node within 2 s "
      "with 1008, leaves every other connection open, and refuses the user's later connections there",
      capability="revocation", cites={"AZ-5": AZ5, "CTL-6": CTL6},
      catches="a revocation applied only on the node that received it; a close code other than 1008; a revocation "
              "that closes but does not refuse")
async def az5_revoke_closes_everywhere_and_refuses(ctx):
    """frank holds workspace A on the first node and on the last (token, and cookie when claimed)
    and workspace B; alice holds A on both. frank is revoked from A through the first node."""
    w = ctx.world
    last = len(ctx.target.urls) - 1
    cookie = "cookie_auth" in ctx.target.capabilities
    revoked = {"frank in A on node 1": await ctx.connect(w.frank, w.ws_a),
               f"frank in A on node {last + 1}": await ctx.connect(w.frank, w.ws_a, node=last)}
    if cookie:
        revoked[f"frank in A on node {last + 1} (cookie)"] = await ctx.connect(w.frank, w.ws_a, node=last, cookie=True)
    kept = {f"frank in B on node {last + 1}": await ctx.connect(w.frank, w.ws_b, node=last),
            "alice in A on node 1": await ctx.connect(w.alice, w.ws_a),
            f"alice in A on node {last + 1}": await ctx.connect(w.alice, w.ws_a, node=last)}
    loop = asyncio.get_running_loop()
    await _revoke(ctx, w.ws_a, w.frank)
    answered = loop.time()
    deadline = answered + REVOKE_WITHIN + MARGIN
    for who, c in revoked.items():
        code = await ctx.closed(c, f"{who} closed with 1008 within {REVOKE_WITHIN:g} s of the revocation",
                                timeout=round(max(0.0, deadline - loop.time()), 2))
        took = (c.closed_at or loop.time()) - answered
        ctx.check("AZ-5", code == 1008, f"{who} must be closed with code 1008", 1008, code)
        ctx.check("AZ-5", took <= REVOKE_WITHIN + MARGIN, f"{who} must be closed within {REVOKE_WITHIN:g} s",
                  f"<= {REVOKE_WITHIN:g} s (+{MARGIN:g} s measurement margin)", f"{took:.2f} s")
    for who, c in kept.items():
        await _pong(ctx, c, who, "the revocation is not of this connection")
    token = await ctx.token(w.frank)
    for node in range(len(ctx.target.urls)):
        await _refused(ctx, token, w.ws_a, "frank", node=node, cookie=False)
        if cookie:
            await _refused(ctx, token, w.ws_a, "frank", node=node, cookie=True)


@case("AZ-5", title="replacing the fixtures on every node closes no connection", capability="revocation",
      exclusive=True, cites={"AZ-5": AZ5_FIXTURES},
      catches="connections dropped when the world is reloaded (a revocation sweep run on every fixtures load)")
async def az5_replacing_fixtures_closes_nothing(ctx):
    """Every node is given the world again (the same one: every case's world lives in it, so this
    case runs alone); the connections opened before stay open and keep answering."""
    w = ctx.world
    if ctx.target.fixtures is None:
        raise SetupError("replace the fixtures: the suite loaded none")
    clients = {}
    for node in range(len(ctx.target.urls)):
        clients[f"alice in A on node {node + 1}"] = await ctx.connect(w.alice, w.ws_a, node=node)
        clients[f"carol in B on node {node + 1}"] = await ctx.connect(w.carol, w.ws_b, node=node)
    if "cookie_auth" in ctx.target.capabilities:
        clients["bob in A on node 1 (cookie)"] = await ctx.connect(w.bob, w.ws_a, cookie=True)
    for node, control in enumerate(ctx.target.controls):
        try:
            await control.fixtures(ctx.target.fixtures)
        except ControlError as e:
            raise SetupError(f"replace the fixtures on node {node + 1} (PUT /_control/fixtures)", f"{e.status} {e.body}",
                             req="CTL-2", expected="200") from None
    # A target that closes in the background may take a moment: give it AZ-5's own bound to do so.
    waits = [asyncio.ensure_future(c.wait_closed(REVOKE_WITHIN + MARGIN)) for c in clients.values()]
    await asyncio.wait(waits, timeout=REVOKE_WITHIN + MARGIN, return_when=asyncio.FIRST_COMPLETED)
    for t in waits:
        t.cancel()
    await asyncio.gather(*waits, return_exceptions=True)
    for who, c in clients.items():
        ctx.expect(not c.closed, f"{who} was closed (code {c.close_code}) after the fixtures were replaced", "open",
                   f"closed with {c.close_code}")
        await _pong(ctx, c, who, "the fixtures were replaced")

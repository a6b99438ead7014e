"""EV and DEL: who receives an event, what its frame looks like, completeness, no duplicates,
publisher order, unsubscribe, slow consumers; plus the strict-profile DEL-4 and DEL-7.

Who judges what (one witness, one requirement):
* an event that does not reach a connection holding its scope: DEL-1 (a `global` event: EV-1,
  "every connection on every node"); a repeat: DEL-2; an inversion: DEL-3 (`judge_run`);
* the delivered frame: EV-2 (exact: event frames carry no extra fields);
* an event at a connection that does not hold its scope: AZ-4; after its unsubscribe_ack:
  DEL-5; at a connection excluded by `exclude_workspace`: EV-1;
* in a cross-node case, a failed DEL, AZ or REP check whose witness crossed nodes is NODE-1's
  too (`across`).

Cases judge only events they published themselves (by event_id): `global` events of cases
running alongside, or of the target itself, may arrive on any connection and are ignored.

To show that an event did NOT reach a connection, a case publishes a marker to a scope the
connection holds, of the same type where it can (DEL-3 orders one scope only), and waits for
it; where it can it also keeps a *witness*, another connection on the same node that holds the
scope and has received the events before the marker is published.

The helpers they share with the other modules (`across`, `collect`, `judge_run`,
`everything_or_closed`, `publish_raw`) are in common.py."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import uuid

from . import Failed, NotChecked, SetupError, case
from ..client import ConnectionClosed
from ..frames import is_event
from .common import (DELIVERY, across, alice_on_every_scope, among, as_seen, collect, delivered, eids, everything_or_closed, expect_absent,
                     hold, judge_run, leave, marker, matches, other_node, publish_n, publish_raw, resume_node,
                     Stream, wait_all)

# -- the sentences the cases cite ----------------------------------------------------------------------

NODE1 = "the publisher, the subscriber and a resuming client may each be on a different node"
DEL1 = ("a connection that holds a subscription to S (it has received the ack) gets every event of S whose "
        "publish was acknowledged and started after that ack, within 5 s")
DEL2 = "an `event_id` reaches a subscription of a connection at most once"
DEL3 = ("if publish(e1) was acknowledged before publish(e2) started and both go to S, every connection that "
        "receives both receives e1 first")
DEL5 = "After `unsubscribe_ack` for S, no event of S whose publish started after that ack arrives."
DEL6 = ("a connection whose send queue (`send_queue` in `info`) is full is either still sent everything (DEL-1) or "
        "closed by the server within 10 s of the overflow. A gap on a connection that stays open is a violation.")
DEL6_REPLAY = ("Replayed frames (REP-3) follow the same rule: the server MAY close a connection that cannot take its "
               "replay, never leave a gap.")
EV2 = "A delivered frame is the published object plus `event_id`."
AZ4 = ("a connection never receives an event of a scope it does not hold a granted subscription to at that "
       "moment")
REP3 = ("the connection receives every event of S after `since`, the missed ones and those published later, each "
        "exactly once and in scope order")
REP6 = "a resume inside it MUST recover while the relay store keeps the stream"



async def _arrives_as_published(ctx, client, frame: dict, p: dict, scope: str, sid: str, who: str, *,
                                req: str = "DEL-1") -> None:
    """The event reaches `client` (a miss fails `req`) and its frame is the published object plus
    event_id (EV-2)."""
    got = await ctx.event(client, p, req=req)
    ctx.check("EV-2", as_seen(ctx, got) == delivered(ctx, frame, p, scope, sid),
              f"{who} must receive the {scope} event as published plus event_id",
              delivered(ctx, frame, p, scope, sid), got)


# -- fanout: every holder gets it (DEL-1), nobody else (AZ-4) ---------------------------------------

async def _fanout_workspace(ctx, pub: int) -> None:
    w = ctx.world
    alice, alice2, bob = (await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.alice, w.ws_a),
                          await ctx.connect(w.bob, w.ws_a))
    carol = await ctx.connect(w.carol, w.ws_b)
    frame = {"type": "conformance:workspace", "payload": {"n": 1}}
    with across(ctx, pub != 0):
        p = await ctx.publish("workspace", w.ws_a, frame, node=pub)
        for name, c in (("alice", alice), ("alice's second connection", alice2), ("bob", bob)):
            await _arrives_as_published(ctx, c, frame, p, "workspace", w.ws_a, name)
        await marker(ctx, "workspace", w.ws_b, carol, node=pub)
        expect_absent(ctx, carol, {p["event_id"]: "workspace A event"},
                      "a connection of workspace B received an event of workspace A", req="AZ-4")


FANOUT_WS = {"DEL-1": DEL1, "EV-2": EV2, "AZ-4": "In particular it never sees another workspace's events"}


@case("DEL-1", "EV-2", "AZ-4", title="a workspace event reaches every connection of that workspace and no other",
      cites=FANOUT_WS)
async def del1_workspace_event_fanout(ctx):
    await _fanout_workspace(ctx, 0)


@case("DEL-1", "EV-2", "AZ-4", "NODE-1", title="across nodes: a workspace event reaches that workspace only",
      cites={**FANOUT_WS, "NODE-1": NODE1}, min_nodes=2)
async def del1_workspace_event_fanout_cross_node(ctx):
    await _fanout_workspace(ctx, 1)


async def _fanout_user(ctx, pub: int) -> None:
    w = ctx.world
    alice, alice2 = await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.alice, w.ws_a)
    bob, carol = await ctx.connect(w.bob, w.ws_a), await ctx.connect(w.carol, w.ws_b)
    frame = {"type": "conformance:inbox", "payload": {"for": "alice"}}
    with across(ctx, pub != 0):
        p = await ctx.publish("user", w.alice, frame, node=pub)
        for name, c in (("alice", alice), ("alice's second connection", alice2)):
            await _arrives_as_published(ctx, c, frame, p, "user", w.alice, name)
        await marker(ctx, "user", w.bob, bob, node=pub)  # a marker of the same scope type
        await marker(ctx, "user", w.carol, carol, node=pub)
        for name, c in (("bob", bob), ("carol", carol)):
            expect_absent(ctx, c, {p["event_id"]: "alice's user event"}, f"{name} received a user event of alice",
                          req="AZ-4")


FANOUT_USER = {"DEL-1": DEL1, "EV-2": EV2, "AZ-4": "another user's user-scope events"}


@case("DEL-1", "EV-2", "AZ-4", title="a user event reaches every connection of that user and nobody else",
      cites=FANOUT_USER)
async def del1_user_event_fanout(ctx):
    await _fanout_user(ctx, 0)


@case("DEL-1", "EV-2", "AZ-4", "NODE-1", title="across nodes: a user event reaches that user only",
      cites={**FANOUT_USER, "NODE-1": NODE1}, min_nodes=2)
async def del1_user_event_fanout_cross_node(ctx):
    await _fanout_user(ctx, 1)


async def _fanout_task_chat(ctx, pub: int) -> None:
    w = ctx.world
    alice, alice2 = await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.alice, w.ws_a)
    for scope, sid in (("task", w.task_a), ("chat", w.chat_alice)):
        await hold(ctx, alice, scope, sid, "alice")
    # alice's second connection holds another task, for a marker of the same scope type
    await hold(ctx, alice2, "task", w.chat_task_alice, "alice's second connection")
    sent = {}
    with across(ctx, pub != 0):
        for scope, sid in (("task", w.task_a), ("chat", w.chat_alice)):
            frame = {"type": f"conformance:{scope}", "payload": {"text": "hi"}}
            p = await ctx.publish(scope, sid, frame, node=pub)
            # alice is the witness: same node, holds the scope
            await _arrives_as_published(ctx, alice, frame, p, scope, sid, "the subscriber")
            sent[p["event_id"]] = f"{scope} event"
        await marker(ctx, "task", w.chat_task_alice, alice2, node=pub)
        expect_absent(ctx, alice2, sent, "a connection that never subscribed received a task or chat event "
                                         "(same user, same workspace)", req="AZ-4")


FANOUT_TC = {"DEL-1": DEL1, "EV-2": EV2, "AZ-4": AZ4}


@case("DEL-1", "EV-2", "AZ-4", title="task and chat events reach their subscribers only", cites=FANOUT_TC)
async def del1_task_chat_events_reach_subscribers_only(ctx):
    await _fanout_task_chat(ctx, 0)


@case("DEL-1", "EV-2", "AZ-4", "NODE-1", title="across nodes: task and chat events reach their subscribers only",
      cites={**FANOUT_TC, "NODE-1": NODE1}, min_nodes=2)
async def del1_task_chat_events_reach_subscribers_only_cross_node(ctx):
    await _fanout_task_chat(ctx, 1)


# -- EV-1: exclude_workspace, global -------------------------------------------------------------------

async def _ev1_exclude(ctx, pub: int) -> None:
    w = ctx.world
    alice, alice2 = await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.alice, w.ws_a)
    carol = await ctx.connect(w.carol, w.ws_b)
    skipped: dict = {alice: {}, alice2: {}, carol: {}}
    reached: list[tuple] = []  # (who, client, frame, published)
    with across(ctx, pub != 0):
        for user, excluded, clients, why in (
                (w.alice, w.ws_a, (alice, alice2), "exclude_workspace = A, alice's own"),
                (w.alice, w.ws_b, (), "exclude_workspace = B"),
                (w.alice, str(uuid.uuid4()), (), "exclude_workspace = a workspace nobody is in"),
                (w.carol, w.ws_b, (carol,), "exclude_workspace = B, carol's own"),
                (w.carol, w.ws_a, (), "exclude_workspace = A")):
            frame = {"type": "conformance:inbox", "payload": {"why": why}}
            p = await ctx.publish("user", user, frame, node=pub, exclude_workspace=excluded)
            for c in clients:
                skipped[c][p["event_id"]] = f"user event with {why}"
            if not clients:
                for name, c in ((("alice", alice), ("alice's second connection", alice2)) if user == w.alice
                                else (("carol", carol),)):
                    reached.append((f"{name} ({why})", c, frame, p, user))
        # exclude_workspace null is no exclusion (CTL-4: "other than absent or `null`")
        frame = {"type": "conformance:inbox", "payload": {"why": "exclude_workspace null"}}
        status, p = await publish_raw(ctx, {"scope": "user", "id": w.alice, "frame": frame,
                                            "exclude_workspace": None}, node=pub)
        if status != 200 or not isinstance(p, dict) or not isinstance(p.get("event_id"), str):
            raise SetupError("publish a user event with exclude_workspace null", f"{status} {p!r}"[:300],
                             req="CTL-4", expected='200 {"event_id": str, "pos": str|null}')
        reached += [("alice (exclude_workspace null)", alice, frame, p, w.alice),
                    ("alice's second connection (exclude_workspace null)", alice2, frame, p, w.alice)]
        for who, c, frame, p, user in reached:
            await _arrives_as_published(ctx, c, frame, p, "user", user, who)
        # a marker of the same scope: published after the skipped events, it comes after them (DEL-3)
        for user, clients in ((w.alice, (alice, alice2)), (w.carol, (carol,))):
            await marker(ctx, "user", user, *clients, node=pub)
        for name, c in (("alice", alice), ("alice's second connection", alice2), ("carol", carol)):
            expect_absent(ctx, c, skipped[c], f"{name} received a user event that excludes her own workspace",
                          req="EV-1")


EXCLUDE = {"EV-1": "A user publish may carry `exclude_workspace` X: that user's connections whose workspace is X "
                   "are skipped.",
           "DEL-1": DEL1, "EV-2": EV2}


async def _user_in_two_workspaces(ctx, pub: int) -> None:
    """erin, a member of A and B, connected to each: a user event reaches both connections
    (DEL-1); with exclude_workspace it skips the one in that workspace only (EV-1)."""
    w = ctx.world
    in_a, in_b = await ctx.connect(w.erin, w.ws_a), await ctx.connect(w.erin, w.ws_b)
    with across(ctx, pub != 0):
        frame = {"type": "conformance:inbox", "payload": {"for": "erin"}}
        p = await ctx.publish("user", w.erin, frame, node=pub)
        for who, c in (("erin connected to A", in_a), ("erin connected to B", in_b)):
            await _arrives_as_published(ctx, c, frame, p, "user", w.erin, who)
        if "exclude_workspace" not in ctx.target.capabilities:
            return
        for excluded, skipped, reached, name in ((w.ws_a, in_a, in_b, "A"), (w.ws_b, in_b, in_a, "B")):
            frame = {"type": "conformance:inbox", "payload": {"excluded": name}}
            q = await ctx.publish("user", w.erin, frame, node=pub, exclude_workspace=excluded)
            await _arrives_as_published(ctx, reached, frame, q, "user", w.erin,
                                        f"erin's connection outside {name} (exclude_workspace = {name})")
            await marker(ctx, "user", w.erin, skipped, node=pub)
            expect_absent(ctx, skipped, {q["event_id"]: f"user event with exclude_workspace = {name}"},
                          f"erin's connection to {name} received a user event that excludes {name}", req="EV-1")


TWO_WORKSPACES = {"DEL-1": DEL1, "EV-2": EV2, "EV-1": EXCLUDE["EV-1"]}


@case("DEL-1", "EV-2", "EV-1", title="a user event reaches the user's connections in every workspace; "
      "exclude_workspace skips only the one in it", cites=TWO_WORKSPACES)
async def del1_user_event_reaches_every_workspace(ctx):
    await _user_in_two_workspaces(ctx, 0)


@case("DEL-1", "EV-2", "EV-1", "NODE-1", title="across nodes: a user event reaches the user in every workspace",
      min_nodes=2, cites={**TWO_WORKSPACES, "NODE-1": NODE1})
async def del1_user_event_reaches_every_workspace_cross_node(ctx):
    await _user_in_two_workspaces(ctx, 1)


@case("EV-1", "DEL-1", "EV-2", title="exclude_workspace skips the user's connections in that workspace only",
      capability="exclude_workspace", cites=EXCLUDE,
      catches='exclude_workspace ignored')
async def ev1_exclude_workspace(ctx):
    await _ev1_exclude(ctx, 0)


@case("EV-1", "DEL-1", "EV-2", "NODE-1", title="across nodes: exclude_workspace travels with the event",
      capability="exclude_workspace", cites={**EXCLUDE, "NODE-1": NODE1}, min_nodes=2)
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
    await leave(ctx, bare, "workspace", w.ws_a)
    await leave(ctx, bare, "user", w.bob)
    clients.append(("bob, after leaving his workspace and user scopes", bare))
    frame = {"type": "conformance:system", "payload": {"msg": "maintenance"}}
    p = await ctx.publish("global", "all", frame, node=pub)
    for name, c in clients:
        # who a global event reaches is EV-1's sentence; DEL-1's 5 s bound for the wait
        await _arrives_as_published(ctx, c, frame, p, "global", "all", name, req="EV-1")


GLOBAL = {"EV-1": "`global:all` (every connection on every node)", "EV-2": EV2}


@case("EV-1", "EV-2", title="a global event reaches every connection", capability="global", cites=GLOBAL)
async def ev1_global_event(ctx):
    await _ev1_global(ctx, 0)


@case("EV-1", "EV-2", title="a global event published through another node reaches every connection on every node",
      capability="global", cites=GLOBAL, min_nodes=2,
      catches="global events that never cross nodes (seen in Multica's legacy relay)")
async def ev1_global_event_every_node(ctx):
    await _ev1_global(ctx, 1)


# -- EV-2: the delivered frame ---------------------------------------------------------------------

@case("EV-2", "DEL-1", title="a published event_id is kept, echoed by publish and delivered",
      cites={"EV-2": "if it has one, it must be a non-empty string, and it is kept and returned by the publish call",
             "DEL-1": DEL1},
      catches="a published event_id replaced by one of the server's")
async def ev2_given_event_id_is_kept(ctx):
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    for eid in (f"conf-{uuid.uuid4().hex}", f"x{uuid.uuid4().hex[:6]}", "01" + secrets.token_hex(12).upper(),
                f"ünïcødé ✓ {uuid.uuid4().hex}"):
        frame = {"type": "conformance:given-id", "event_id": eid, "payload": {}}
        p = await ctx.publish("workspace", w.ws_a, frame)
        ctx.equal(p.get("event_id"), eid, "publish must return the event_id it was given", req="EV-2")
        await _arrives_as_published(ctx, alice, frame, p, "workspace", w.ws_a, "alice")


@case("EV-2", "DEL-1", title="without an event_id the server assigns a unique string",
      cites={"EV-2": "If the published object has no `event_id`, the server adds a unique string", "DEL-1": DEL1})
async def ev2_assigned_event_id(ctx):
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    frame = {"type": "conformance:no-id", "payload": {"k": "v"}}
    # ctx.publish already requires a non-empty string event_id in the answer (CTL-4)
    published = [await ctx.publish("workspace", w.ws_a, frame) for _ in range(20)]
    ids = eids(published)
    ctx.expect(len(set(ids)) == len(ids), "assigned event_ids must be unique", "20 distinct ids", ids, req="EV-2")
    for p in published:
        await _arrives_as_published(ctx, alice, frame, p, "workspace", w.ws_a, "alice")


@case("EV-2", "CTL-4", "DEL-1", title="a published event_id that is not a non-empty string is refused and never "
      "delivered",
      cites={"EV-2": "if it has one, it must be a non-empty string",
             "CTL-4": "a frame `event_id` that is not a non-empty string", "DEL-1": DEL1})
async def ev2_invalid_event_id_is_never_delivered(ctx):
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    nonce = secrets.token_hex(8)
    for bad in ("", 0, 7, None, True, False, [], {}, ["id"]):
        status, doc = await publish_raw(ctx, {"scope": "workspace", "id": w.ws_a, "frame": {
            "type": "conformance:bad-id", "event_id": bad, "payload": {"nonce": nonce}}})
        ctx.check("CTL-4", status == 400, f"a publish whose event_id is {json.dumps(bad)} must be answered 400",
                  400, f"{status} {doc!r}"[:200])
    await marker(ctx, "workspace", w.ws_a, alice)
    got = [f for f in alice.frames if is_event(f) and isinstance(f.get("payload"), dict)
           and f["payload"].get("nonce") == nonce]
    ctx.expect(not got, "an event whose event_id is not a non-empty string was delivered", "nothing", got[:3])


WEIRD = {
    "type": "conformance:weird",
    "payload": {"nested": {"list": [1, 2.5, -3, None, True, False, "s", [], {}], "empty": "", "deep": {"a": {"b": {
        "c": [{"d": "e"}]}}}},
        "big": 2 ** 53 - 1, "small": -1.25e-7, "text": "quote\" backslash\\ newline\n tab\t slash /"},
    "unicode": "日本語 ✓ \u2028 \u00e9 emoji \U0001F600",
    "null": None,
    "number": 0,
    "array": [{"a": 1}, {"b": [2]}],
    "event_ids": ["not-this-one"],
    "Scope": "capitalised keys are not server-set",
    "": "empty key",
}


async def _ev2_passthrough(ctx, pub: int) -> None:
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    await hold(ctx, alice, "task", w.task_a, "alice")
    with across(ctx, pub != 0):
        for scope, sid in (("workspace", w.ws_a), ("task", w.task_a)):
            p = await ctx.publish(scope, sid, WEIRD, node=pub)
            got = await ctx.event(alice, p)
            ctx.equal(as_seen(ctx, got), delivered(ctx, WEIRD, p, scope, sid),
                      "every published field (nested objects, unicode, null, odd keys) must pass through unchanged",
                      req="EV-2")


PASSTHROUGH = {"EV-2": "Every other field passes through unchanged.", "DEL-1": DEL1}


@case("EV-2", "DEL-1", title="published fields pass through unchanged: nested objects, unicode, null, odd keys",
      cites=PASSTHROUGH)
async def ev2_fields_pass_through(ctx):
    await _ev2_passthrough(ctx, 0)


@case("EV-2", "DEL-1", "NODE-1", title="across nodes: published fields pass through unchanged", min_nodes=2,
      cites={**PASSTHROUGH, "NODE-1": NODE1})
async def ev2_fields_pass_through_cross_node(ctx):
    await _ev2_passthrough(ctx, 1)


@case("EV-2", "DEL-1", title="the server-set scope, scope_id and pos overwrite published values", capability="resume",
      cites={"EV-2": "The server-set fields of REP-1 (`scope`, `scope_id`, `pos`) overwrite any published values.",
             "DEL-1": DEL1})
async def ev2_server_fields_overwrite(ctx):
    ctx.require("pos")  # the expected frame carries the pos the publish answered (REP-1, probed)
    alice, targets = await alice_on_every_scope(ctx)
    for scope, sid in targets:
        frame = {"type": "conformance:forged", "scope": "chat", "scope_id": "forged", "pos": "999-0",
                 "payload": {"scope": "kept"}}
        p = await ctx.publish(scope, sid, frame, node=other_node(ctx))
        got = await ctx.event(alice, p)
        ctx.equal(got, {"type": "conformance:forged", "payload": {"scope": "kept"}, "event_id": p["event_id"],
                        "scope": scope, "scope_id": sid, "pos": p["pos"]},
                  f"the server must set scope, scope_id and pos of a {scope} event over the published ones",
                  req="EV-2")


# -- DEL-1: completeness -----------------------------------------------------------------------------

async def _owed(ctx, client, p: dict, what: str) -> None:
    """DEL-1: the event arrives within 5 s. A close first ends the obligation ("unless the
    connection closes first"): the case cannot go on."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    if not await collect(ctx, client, [p["event_id"]], DELIVERY):
        if client.closed:
            raise SetupError("keep the connection open", f"closed (code {client.close_code}) "
                             f"{loop.time() - started:.1f} s into the wait for {what}")
        raise Failed(f"{what} did not arrive within {DELIVERY:g} s", p["event_id"], "nothing", "DEL-1")


async def _del1_race(ctx, pub: int, rounds: int = 40, budget: float = 30.0) -> None:
    """`rounds` rounds, or as many as fit in `budget` s on a slow target (at least 5)."""
    loop = asyncio.get_running_loop()
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    began = loop.time()

    async def cycle(scope: str, sid: str, r: int) -> None:
        await hold(ctx, c, scope, sid, "alice")
        p = await ctx.publish(scope, sid, {"type": "conformance:race", "payload": {"round": r}}, node=pub)
        await _owed(ctx, c, p, f"round {r + 1}: an event of {scope}:{sid} published through node {pub + 1} the "
                               f"moment the subscribe_ack arrived")
        await leave(ctx, c, scope, sid)

    with across(ctx, pub != 0):
        for r in range(rounds):
            if r >= 5 and loop.time() - began > budget:
                break
            outcomes = await asyncio.gather(cycle("task", w.task_a, r), cycle("chat", w.chat_alice, r),
                                            cycle("task", w.chat_task_alice, r), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome


RACE = {"DEL-1": "gets every event of S whose publish was acknowledged and started after that ack, within 5 s"}


@case("DEL-1", title="subscribe, publish the moment the ack arrives, unsubscribe: 40 rounds (30 s at most), nothing lost",
      cites=RACE)
async def del1_publish_right_after_subscribe_ack(ctx):
    await _del1_race(ctx, 0)


@case("DEL-1", "NODE-1", title="the subscribe race: publish through another node the moment the ack arrives",
      cites={**RACE, "NODE-1": NODE1}, min_nodes=2,
      catches="an ack sent before the node reads the scope (Multica's asynchronous consumer group)")
async def del1_publish_right_after_subscribe_ack_cross_node(ctx):
    await _del1_race(ctx, 1)


async def _del1_auto_scopes(ctx, pub: int, rounds: int = 20) -> None:
    w = ctx.world
    with across(ctx, pub != 0):
        for r in range(rounds):
            c = await ctx.connect(w.alice, w.ws_a)
            ws = await ctx.publish("workspace", w.ws_a, {"type": "conformance:first", "payload": {"round": r}},
                                   node=pub)
            us = await ctx.publish("user", w.alice, {"type": "conformance:first", "payload": {"round": r}}, node=pub)
            for p, what in ((ws, "workspace"), (us, "user")):
                await _owed(ctx, c, p, f"round {r + 1}: a {what} event published through node {pub + 1} right "
                                       f"after auth_ack")
            await c.close()


AUTO = {"DEL-1": DEL1}  # HS-6: "DEL-1 covers both scopes from `auth_ack` (or the completed upgrade) on"


@case("DEL-1", title="events of the auto-subscribed scopes published right after auth_ack arrive", cites=AUTO,
      catches='auth_ack sent before the connection is registered in the hub')
async def del1_auto_scopes_right_after_auth_ack(ctx):
    await _del1_auto_scopes(ctx, 0)


@case("DEL-1", "NODE-1", title="across nodes: auto-subscribed scopes deliver from auth_ack on", min_nodes=2,
      cites={**AUTO, "NODE-1": NODE1})
async def del1_auto_scopes_right_after_auth_ack_cross_node(ctx):
    await _del1_auto_scopes(ctx, 1)


async def _burst(ctx, pub: int, n: int = 300) -> None:
    """Subscribers on node 1, and with `pub` on another node, on every node."""
    w = ctx.world
    nodes = range(len(ctx.target.urls)) if pub != 0 else [0]
    subs = [(f"alice on node {i + 1}", i, await ctx.connect(w.alice, w.ws_a, node=i)) for i in nodes]
    subs.append(("bob on node 1", 0, await ctx.connect(w.bob, w.ws_a)))
    for name, _, c in subs:
        await hold(ctx, c, "task", w.task_a, name)
    sent = eids(await publish_n(ctx, "task", w.task_a, n, node=pub, tag="conformance:burst"))
    for _, _, c in subs:
        await collect(ctx, c, sent, DELIVERY)  # judged below, once a repeat had the time to show
    # a marker of the same scope comes after every copy of the events before it (DEL-3)
    await marker(ctx, "task", w.task_a, *(c for _, _, c in subs), node=pub)
    for name, i, c in subs:
        with across(ctx, i != pub):
            judge_run(ctx, among(c, sent), sent, name)


BURST = {"DEL-1": DEL1, "DEL-2": DEL2, "DEL-3": DEL3}


@case("DEL-1", "DEL-2", "DEL-3", title="300 sequential publishes: every event once, in publish order", cites=BURST,
      catches="frames swapped or dropped by a connection's writer")
async def del1_burst_complete_once_in_order(ctx):
    await _burst(ctx, 0)


@case("DEL-1", "DEL-2", "DEL-3", "NODE-1",
      title="300 publishes through another node: every connection on every node gets each once, in order",
      cites={**BURST, "NODE-1": NODE1}, min_nodes=2)
async def del1_burst_complete_once_in_order_cross_node(ctx):
    await _burst(ctx, 1)


# -- DEL-2: no duplicates ----------------------------------------------------------------------------

async def _del2_resubscribe(ctx, pub: int) -> None:
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    await hold(ctx, alice, "task", w.task_a, "alice")
    pub_task = asyncio.create_task(publish_n(ctx, "task", w.task_a, 200, node=pub))
    try:
        for _ in range(20):
            await hold(ctx, alice, "task", w.task_a, "alice")
            await hold(ctx, alice, "workspace", w.ws_a, "alice")
        sent = eids(await asyncio.wait_for(asyncio.shield(pub_task), 60))
    finally:
        if not pub_task.done():
            pub_task.cancel()
            await asyncio.gather(pub_task, return_exceptions=True)
    await collect(ctx, alice, sent, DELIVERY)
    with across(ctx, pub != 0):
        await marker(ctx, "task", w.task_a, alice, node=pub)
        got = among(alice, sent)
        who = "alice, subscribing again and again to a scope she holds,"
        judge_run(ctx, got, sent, who)
        # the same observation, by the sentence on subscribing twice
        ctx.check("SUB-5", len(got) == len(set(got)), f"{who} received {len(got) - len(set(got))} events more "
                  "than once", "each event once", f"{len(got)} frames of {len(set(got))} events")


RESUB = {"DEL-2": DEL2, "SUB-5": "Subscribing to the same scope twice still delivers each event once.",
         "DEL-1": DEL1, "DEL-3": DEL3}


@case("DEL-2", "SUB-5", "DEL-1", "DEL-3", title="subscribing again to a held scope while events flow creates no "
      "duplicates", cites=RESUB,
      catches='a frame queued twice by a retry path')
async def del2_resubscribe_while_events_flow(ctx):
    await _del2_resubscribe(ctx, 0)


@case("DEL-2", "SUB-5", "DEL-1", "DEL-3", "NODE-1",
      title="across nodes: re-subscribing while events flow creates no duplicates",
      cites={**RESUB, "NODE-1": NODE1}, min_nodes=2)
async def del2_resubscribe_while_events_flow_cross_node(ctx):
    await _del2_resubscribe(ctx, 1)


# -- DEL-3: publisher order --------------------------------------------------------------------------

async def _del3_interleaved(ctx, pub_nodes: list[int], rounds: int = 40) -> None:
    alice, targets = await alice_on_every_scope(ctx)
    sent: dict[tuple, list] = {t: [] for t in targets}
    k = 0
    for i in range(rounds):
        for t in targets:
            p = await ctx.publish(*t, {"type": "conformance:interleaved", "payload": {"i": i}},
                                  node=pub_nodes[k % len(pub_nodes)])
            sent[t].append(p["event_id"])
            k += 1
    await collect(ctx, alice, [e for ids in sent.values() for e in ids], DELIVERY)
    with across(ctx, pub_nodes != [0]):
        for t in targets:  # one marker per scope: it follows every copy of that scope's events (DEL-3)
            await marker(ctx, *t, alice, node=pub_nodes[0])
        for t in targets:
            judge_run(ctx, among(alice, sent[t]), sent[t], f"alice, on the {t[0]} scope,")


INTERLEAVED = {"DEL-3": DEL3, "DEL-1": DEL1, "DEL-2": DEL2}


@case("DEL-3", "DEL-1", "DEL-2", title="publisher order holds per scope while every scope type interleaves",
      cites=INTERLEAVED)
async def del3_order_per_scope_interleaved(ctx):
    await _del3_interleaved(ctx, [0])


@case("DEL-3", "DEL-1", "DEL-2", "NODE-1",
      title="publisher order holds when consecutive publishes go through different nodes",
      cites={**INTERLEAVED, "NODE-1": NODE1}, min_nodes=2)
async def del3_order_across_publishing_nodes(ctx):
    await _del3_interleaved(ctx, list(range(1, len(ctx.target.urls))) + [0])


# -- DEL-5: nothing after unsubscribe_ack ------------------------------------------------------------

async def _del5_after_ack(ctx, pub: int) -> None:
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.bob, w.ws_a)  # same node, keeps task_a
    await hold(ctx, alice, "task", w.task_a, "alice")
    await hold(ctx, alice, "task", w.chat_task_alice, "alice")  # kept: a marker of the same scope type
    await hold(ctx, witness, "task", w.task_a, "bob")
    with across(ctx, pub != 0):
        first = await ctx.publish("task", w.task_a, {"type": "conformance:before"}, node=pub)
        await ctx.event(alice, first)
        await leave(ctx, alice, "task", w.task_a)
        after = eids(await publish_n(ctx, "task", w.task_a, 20, node=pub, tag="conformance:after"))
        await wait_all(ctx, witness, after, "bob (still subscribed)")
        await marker(ctx, "task", w.chat_task_alice, alice, node=pub)
        expect_absent(ctx, alice, {e: f"task event #{i} published after unsubscribe_ack" for i, e in enumerate(after)},
                      "an event published after unsubscribe_ack arrived", req="DEL-5")


UNSUB = {"DEL-5": DEL5, "DEL-1": DEL1}


@case("DEL-5", "DEL-1", title="after unsubscribe_ack no later event of the scope arrives", cites=UNSUB,
      catches='an unsubscribe that is acknowledged and changes nothing')
async def del5_nothing_after_unsubscribe_ack(ctx):
    await _del5_after_ack(ctx, 0)


@case("DEL-5", "DEL-1", "NODE-1", title="across nodes: after unsubscribe_ack no later event arrives", min_nodes=2,
      cites={**UNSUB, "NODE-1": NODE1})
async def del5_nothing_after_unsubscribe_ack_cross_node(ctx):
    await _del5_after_ack(ctx, 1)


async def _del5_while_publishing(ctx, pub: int) -> None:
    loop = asyncio.get_running_loop()
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.bob, w.ws_a)
    await hold(ctx, alice, "task", w.task_a, "alice")
    await hold(ctx, alice, "task", w.chat_task_alice, "alice")  # kept: a marker of the same scope type
    await hold(ctx, witness, "task", w.task_a, "bob")
    async with Stream(ctx, "task", w.task_a, node=pub) as stream:
        await stream.reach(30, "30 publishes")
        await leave(ctx, alice, "task", w.task_a)
        acked_at = loop.time()  # no earlier than the ack's arrival
        await stream.reach(30, "30 publishes after the unsubscribe_ack", after=acked_at)
    log = [(started, p["event_id"]) for started, p in stream.log]
    ids = [e for _, e in log]
    with across(ctx, pub != 0):
        await wait_all(ctx, witness, ids, "bob (still subscribed)")
        await marker(ctx, "task", w.chat_task_alice, alice, node=pub)
        late = {e: f"event #{i}, published after unsubscribe_ack" for i, (s, e) in enumerate(log) if s > acked_at}
        expect_absent(ctx, alice, late, "an event whose publish started after unsubscribe_ack arrived", req="DEL-5")
        # what did arrive before the cut came once and in order (which ones are owed is not judged:
        # the unsubscribe may overtake events acknowledged just before it)
        judge_run(ctx, among(alice, ids), ids, "alice, up to her unsubscribe,", loss=None)


MIDSTREAM = {"DEL-5": DEL5, "DEL-1": DEL1, "DEL-2": DEL2, "DEL-3": DEL3}


@case("DEL-5", "DEL-1", "DEL-2", "DEL-3",
      title="unsubscribe in the middle of a stream of publishes: nothing published after the ack arrives",
      cites=MIDSTREAM)
async def del5_unsubscribe_while_publishing(ctx):
    await _del5_while_publishing(ctx, 0)


@case("DEL-5", "DEL-1", "DEL-2", "DEL-3", "NODE-1",
      title="across nodes: unsubscribe mid-stream, nothing published after the ack arrives",
      cites={**MIDSTREAM, "NODE-1": NODE1}, min_nodes=2)
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


async def _slow_consumer(ctx, pub: int, burst_mb: int = 16) -> None:
    """One connection stops reading while `burst_mb` MB beyond its send queue are published (64 KB
    events: more than the kernel's buffers on both sides), then reads again."""
    loop = asyncio.get_running_loop()
    w = ctx.world
    queue = ctx.target.send_queue
    if queue > 4096:
        raise NotChecked(f"send_queue {queue} is too large to overflow with 64 KB events in one case")
    size = 64 * 1024
    count = queue + max(200, (burst_mb * 1024 * 1024) // size)  # the queue plus more than the kernel buffers
    slow = await ctx.connect(w.alice, w.ws_a)
    reader = await ctx.connect(w.bob, w.ws_a)
    await hold(ctx, slow, "task", w.task_a, "alice")
    await hold(ctx, reader, "task", w.task_a, "bob")
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
    with across(ctx, pub != 0):
        # The connection that kept reading got everything, once, in order. If it did not, the
        # node never delivered those events (DEL-1), and the slow one's gap says nothing of DEL-6.
        who = "bob (reading normally, beside the slow connection)"
        await collect(ctx, reader, sent, DELIVERY)
        kept_up = among(reader, sent)
        if set(kept_up) >= set(sent):
            # Reading again: either everything arrives, or the server has closed (or closes) the connection.
            closed_at = await everything_or_closed(ctx, slow, sent, "task", w.task_a, pub,
                                                   "the connection that stopped reading")
            if closed_at is not None:
                # seen once the client has read what was buffered before the close: 2 s for that
                ctx.expect(closed_at - done_at <= 12.0,
                           "the server took longer than 10 s after the overflow to close the slow connection",
                           "closed within 10 s", f"closed {closed_at - done_at:.1f} s after the last publish")
        else:
            ctx.skip("DEL-6", "the slow connection: the node did not deliver these events to the connection "
                              "beside it that kept reading either (DEL-1)")
        judge_run(ctx, kept_up, sent, who)


SLOW = {"DEL-6": DEL6, "DEL-1": DEL1, "DEL-2": DEL2, "DEL-3": DEL3}


@case("DEL-6", "DEL-1", "DEL-2", "DEL-3", title="a connection that stops reading: everything once it reads again, "
      "or closed within 10 s, never a gap; readers beside it get everything", cites=SLOW,
      catches='a full send queue that drops frames and keeps the connection open: a silent gap')
async def del6_slow_consumer(ctx):
    await _slow_consumer(ctx, 0)


@case("DEL-6", "DEL-1", "DEL-2", "DEL-3", "NODE-1",
      title="across nodes: a slow consumer gets everything or is closed, never a gap",
      cites={**SLOW, "NODE-1": NODE1}, min_nodes=2)
async def del6_slow_consumer_cross_node(ctx):
    await _slow_consumer(ctx, 1)


@case("DEL-6", "REP-6", "REP-3", "DEL-1",
      title="a replay longer than the send queue arrives whole, or the connection is closed; never a gap",
      capability="resume", cites={"DEL-6": DEL6_REPLAY, "REP-6": REP6, "REP-3": REP3, "DEL-1": DEL1})
async def del6_replay_longer_than_send_queue(ctx):
    w = ctx.world
    ctx.require("pos")
    gap = ctx.target.send_queue + 100
    max_len = ctx.target.retention.get("max_len")
    if isinstance(max_len, int) and not isinstance(max_len, bool) and gap > max_len:
        raise NotChecked(f"a replay of send_queue + 100 = {gap} events exceeds the retention max_len {max_len}")
    max_age = ctx.target.retention.get("max_age_s")
    if isinstance(max_age, int | float) and not isinstance(max_age, bool) and max_age < 30:
        raise NotChecked(f"retention max_age_s {max_age} is too short for this case")
    if gap > 5000:
        raise NotChecked(f"send_queue {ctx.target.send_queue} is too large for a replay in one case")
    pub = other_node(ctx)
    a = await ctx.connect(w.alice, w.ws_a)
    await hold(ctx, a, "task", w.task_a, "alice")
    seen = await ctx.publish("task", w.task_a, {"type": "conformance:seen"}, node=pub)
    since = (await ctx.event(a, seen)).get("pos")
    if not isinstance(since, str):
        raise SetupError("take the pos of a received frame", since, req="REP-1", expected="a string pos")
    await a.close()
    missed = eids(await publish_n(ctx, "task", w.task_a, gap, node=pub, tag="conformance:missed"))
    b = await ctx.connect(w.alice, w.ws_a, node=resume_node(ctx))
    start = len(b.frames)
    await b.send({"type": "subscribe", "payload": {"scope": "task", "id": w.task_a, "since": since}})
    try:
        answer = await b.wait_for(lambda f: isinstance(f, dict) and f.get("type") in ("subscribe_ack",
                                                                                     "subscribe_error")
                                  and (f.get("payload") or {}).get("id") == w.task_a, 10.0, start=start)
    except asyncio.TimeoutError:
        raise Failed("no answer to a resume within 10 s", "subscribe_ack", b.frames[start:][-5:], "REP-6") from None
    except ConnectionClosed:
        return  # closed before the answer: it could not take its replay (DEL-6 allows the close)
    ctx.expect(matches(answer, {"type": "subscribe_ack", "payload": {"scope": "task", "id": w.task_a,
                                                                     "recovered": True}}),
               f"a resume over {gap} events inside the retention must recover",
               {"type": "subscribe_ack", "payload": {"scope": "task", "id": w.task_a, "recovered": True}}, answer,
               req="REP-6")
    # a missed event left out while later ones arrive is REP-3's loss; a replay that stalls on an
    # open connection is DEL-6's "either still sent everything ... or closed"
    await everything_or_closed(ctx, b, missed, "task", w.task_a, pub, "the resumed connection", timeout=10.0,
                               start=start, gap="REP-3", repeat="REP-3", order="REP-3")


# -- DEL-4 (strict): the same scope order on every connection ---------------------------------------

@case("DEL-4", "DEL-1", "DEL-2", "DEL-3",
      title="concurrent publishers through every node: every connection sees the same order",
      cites={"DEL-4": "any two connections that receive e1 and e2 of S receive them in the same order",
             "DEL-1": DEL1, "DEL-2": DEL2, "DEL-3": DEL3})
async def del4_same_order_everywhere(ctx):
    w = ctx.world
    nodes = len(ctx.target.urls)
    subs = [(f"alice on node {i + 1}", await ctx.connect(w.alice, w.ws_a, node=i)) for i in range(nodes)]
    subs.append(("bob on node 1", await ctx.connect(w.bob, w.ws_a)))
    for name, c in subs:
        await hold(ctx, c, "task", w.task_a, name)
    publishers = max(3, nodes)
    results = await asyncio.gather(*(publish_n(ctx, "task", w.task_a, 50, node=k % nodes, tag=f"conformance:p{k}")
                                     for k in range(publishers)), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    sent = [p["event_id"] for r in results for p in r]
    for _, c in subs:
        await collect(ctx, c, sent, DELIVERY)
    await marker(ctx, "task", w.task_a, *(c for _, c in subs))
    for name, c in subs:  # each publisher's own events: complete, once, in its order
        for k, r in enumerate(results):
            judge_run(ctx, among(c, eids(r)), eids(r), f"{name}, of publisher {k + 1},")
    # the scope order: compared over the events both connections received, first arrivals
    orders = [(name, list(dict.fromkeys(among(c, sent)))) for name, c in subs]
    base_name, base = orders[0]
    for name, order in orders[1:]:
        common = set(base) & set(order)
        a, b = [e for e in base if e in common], [e for e in order if e in common]
        if a != b:
            at = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
            ctx.check("DEL-4", False, f"{name} received the events of one scope in another order than {base_name} "
                      f"(first difference at position {at})", a[at:at + 3], b[at:at + 3])
            return


# -- DEL-7 (strict): no stale events without since ---------------------------------------------------

@case("DEL-7", "DEL-1", title="without since, no event published before the subscribe (or the connect) arrives",
      cites={"DEL-7": "without `since`, a connection receives no event of S whose publish was acknowledged before "
                      "it asked for S (for the auto-subscribed scopes: before it connected)",
             "DEL-1": DEL1})
async def del7_no_stale_events(ctx):
    w = ctx.world
    pub = other_node(ctx)
    # A scope nobody reads: published before the subscribe.
    stale = {e: "chat event published before the subscribe"
             for e in eids(await publish_n(ctx, "chat", w.chat_alice, 3, node=pub, tag="conformance:stale"))}
    fresh = await ctx.connect(w.alice, w.ws_a)
    await hold(ctx, fresh, "chat", w.chat_alice, "alice")
    await marker(ctx, "chat", w.chat_alice, fresh, node=pub)
    expect_absent(ctx, fresh, stale, "a subscribe without since delivered an event published before it")
    # A scope the node already reads for another connection (the witness has the stale events).
    witness = await ctx.connect(w.alice, w.ws_a)
    await hold(ctx, witness, "task", w.task_a, "alice's witness connection")
    older = eids(await publish_n(ctx, "task", w.task_a, 3, node=pub, tag="conformance:stale"))
    await wait_all(ctx, witness, older, "the witness connection")
    late = await ctx.connect(w.alice, w.ws_a)
    await hold(ctx, late, "task", w.task_a, "alice")
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

"""REP: resume (capability `resume`). Positions are opaque: a case only hands back, unchanged,
a `pos` it received in a frame or a publish answer (and calls `ctx.require("pos")` first: a
target whose frames carry no pos fails REP-1 once, at the probe).

Who judges what (one witness, one requirement):
* the answer to a subscribe with since is a subscribe_ack carrying `recovered` (REP-2), and it
  comes before the replayed frames (REP-2);
* `recovered: true` where the retention keeps everything missed: REP-6 ("MUST recover");
* what a recovered resume delivers: every event after since, once, in scope order: REP-3 (a
  replay longer than send_queue may end in a close instead: DEL-6);
* `recovered: false` where it is owed, and anything replayed after it: REP-4; live events
  after it: DEL-1;
* a since that is not a string, or not a position: REP-5 (an unknown string may also be
  answered `recovered: false`, REP-5's own sentence);
* a resume of a scope the connection may not hold: its answer REP-7, a leak REP-7 and AZ-4."""

from __future__ import annotations


from . import NotChecked, SetupError, case
from .common import (ack, across, alice_on_every_scope, among, collect, eids, everything_or_closed, expect_absent, hold, judge_run, marker,
                     matches, other_node, publish_n, resume_node, sub_error, Stream, wait_all)
from .delivery import DEL1, NODE1, REP3, REP6

CAP = "resume"

REP2 = ('The `subscribe_ack` then carries `"recovered": true` or `false` and comes before every replayed frame of '
        'that subscribe.')
REP4 = "`recovered: false` is all-or-nothing: no replayed frames, and live delivery from the ack on (DEL-1)."
REPLAY = 10.0  # how long a replay of up to a few hundred events may take (the contract sets no bound)


def _retention_int(ctx, key: str):
    value = ctx.target.retention.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _check_retention(ctx, missed: int) -> None:
    """NotChecked unless `missed` events published now are inside the declared retention."""
    max_age = _retention_int(ctx, "max_age_s")
    if max_age is not None and max_age < 30:
        raise NotChecked(f"retention max_age_s {max_age} is too short for this case")
    max_len = _retention_int(ctx, "max_len")
    if max_len is not None and max_len < missed + 1:
        raise NotChecked(f"retention max_len {max_len} cannot keep the {missed} events this case misses")


async def _seen_then_gone(ctx, scope: str, sid: str, node: int, pub: int) -> str:
    """alice holds the scope on `node`, receives one event, keeps its pos and disconnects."""
    ctx.require("pos")
    w = ctx.world
    a = await ctx.connect(w.alice, w.ws_a, node=node)
    if scope in ("task", "chat"):
        await hold(ctx, a, scope, sid, "alice")
    seen = await ctx.publish(scope, sid, {"type": "conformance:seen"}, node=pub)
    frame = await ctx.event(a, seen)
    pos = frame.get("pos")
    if not isinstance(pos, str) or not pos:
        raise SetupError("take the pos of a received frame", frame, req="REP-1", expected="a non-empty string pos")
    await a.close()
    return pos


def _recovered(ctx, answer, scope: str, sid: str, why: str) -> bool:
    """REP-2: the answer to a subscribe with since is a subscribe_ack carrying recovered true or
    false (extra fields allowed). Returns it."""
    recovered = answer["payload"].get("recovered") if matches(answer, ack("subscribe", scope, sid)) else None
    ctx.expect(isinstance(recovered, bool), f"{why}: a subscribe with since must be acked with recovered true or "
               "false", ack("subscribe", scope, sid, recovered="true|false"), answer, req="REP-2")
    return recovered


async def _resume(ctx, client, scope: str, sid: str, since, why: str) -> bool:
    """Subscribe with since and return `recovered` (REP-2)."""
    answer = await ctx.answer(client, "subscribe", scope, sid, req="REP-2", since=since)
    return _recovered(ctx, answer, scope, sid, why)


async def _must_recover(ctx, client, scope: str, sid: str, since, why: str) -> None:
    recovered = await _resume(ctx, client, scope, sid, since, why)
    ctx.expect(recovered, f"{why}: inside the declared retention a resume must recover",
               ack("subscribe", scope, sid, recovered=True), ack("subscribe", scope, sid, recovered=recovered),
               req="REP-6")


async def _replay(ctx, client, ids: list[str], who: str, *, start: int, scope: str, sid: str, pub: int) -> bool:
    """What a recovered resume owes: `ids` (the missed events, then live ones), each once, in
    scope order (REP-3). A replay longer than send_queue may end in a close (DEL-6). True when
    everything arrived."""
    if len(ids) > ctx.target.send_queue:
        closed = await everything_or_closed(ctx, client, ids, scope, sid, pub, who, timeout=REPLAY, start=start,
                                            gap="REP-3", repeat="REP-3", order="REP-3")
        return closed is None
    complete = await collect(ctx, client, ids, REPLAY, start=start)
    if not complete and client.closed:
        raise SetupError(f"keep {who} open during a replay of {len(ids)} events (send_queue "
                         f"{ctx.target.send_queue})", f"closed (code {client.close_code})")
    judge_run(ctx, among(client, ids, start), ids, who, loss="REP-3", repeat="REP-3", order="REP-3")
    return complete


def _ack_index(client, answer, start: int) -> int:
    return next(i for i in range(start, len(client.frames)) if client.frames[i] is answer)


def _pos_of(client, eid: str) -> str | None:
    return next((f.get("pos") for f in reversed(client.frames) if isinstance(f, dict) and f.get("event_id") == eid),
                None)


# -- REP-1: every frame carries scope, scope_id and pos ---------------------------------------------

async def _rep1(ctx, pub: int) -> None:
    ctx.require("pos")
    c, targets = await alice_on_every_scope(ctx)
    with across(ctx, pub != 0):
        for scope, sid in targets:
            positions = []
            for _ in range(3):
                p = await ctx.publish(scope, sid, {"type": "conformance:pos"}, node=pub)
                ctx.expect(isinstance(p.get("pos"), str) and p["pos"] != "",
                           f"publish to {scope} must answer pos as a non-empty string when resume is claimed",
                           "a string pos", p, req="REP-1")
                got = await ctx.event(c, p)
                ctx.equal({k: got.get(k) for k in ("scope", "scope_id", "pos")},
                          {"scope": scope, "scope_id": sid, "pos": p["pos"]},
                          f"a {scope} frame must carry scope, scope_id and the pos the publish answered", req="REP-1")
                positions.append(p["pos"])
            ctx.expect(len(set(positions)) == 3, f"three events of {scope}:{sid} must have three distinct positions",
                       "3 distinct", positions, req="REP-1")


REP1 = {"REP-1": "Every event frame carries `scope`, `scope_id` and `pos`: a string giving the event's position "
                 "within its scope. The publish answer returns the same `pos`",
        "DEL-1": DEL1}


@case("REP-1", "DEL-1", title="event frames carry scope, scope_id and the pos the publish answered", capability=CAP,
      cites=REP1)
async def rep1_frames_carry_position(ctx):
    await _rep1(ctx, 0)


@case("REP-1", "DEL-1", "NODE-1", title="across nodes: frames carry the pos the publishing node answered",
      capability=CAP, cites={**REP1, "NODE-1": NODE1}, min_nodes=2)
async def rep1_frames_carry_position_cross_node(ctx):
    await _rep1(ctx, 1)


# -- REP-2: recovered is answered exactly when since is given ----------------------------------------

@case("REP-2", title="without since (absent or null) the subscribe_ack has no recovered field", capability=CAP,
      cites="With `since` absent or `null` there is no resume and the ack has no `recovered` field.")
async def rep2_no_since_no_recovered(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid, extra in (("task", w.task_a, {}), ("chat", w.chat_alice, {"since": None}),
                              ("workspace", w.ws_a, {"since": None}), ("user", w.alice, {})):
        how = "with since null" if extra else "without since"
        got = await ctx.answer(c, "subscribe", scope, sid, **extra)
        if not matches(got, ack("subscribe", scope, sid)):
            if not extra:  # a plain subscribe the world allows: set-up, not REP-2's
                raise SetupError(f"subscribe alice to {scope}:{sid}", got, expected=ack("subscribe", scope, sid))
            ctx.check("REP-2", False, f"a subscribe to {scope} with since null is a plain subscribe and must be acked",
                      ack("subscribe", scope, sid), got)
            continue
        ctx.check("REP-2", "recovered" not in got["payload"],
                  f"a subscribe to {scope} {how} must be acked without recovered", ack("subscribe", scope, sid), got)


@case("REP-2", "DEL-1", title="with since the ack carries recovered true or false and precedes every replayed frame",
      capability=CAP, cites={"REP-2": REP2, "DEL-1": DEL1})
async def rep2_since_answers_recovered_first(ctx):
    w = ctx.world
    pub = other_node(ctx)
    since = await _seen_then_gone(ctx, "task", w.task_a, 0, pub)
    missed = eids(await publish_n(ctx, "task", w.task_a, 5, node=pub, tag="conformance:missed"))
    c = await ctx.connect(w.alice, w.ws_a, node=resume_node(ctx))
    start = len(c.frames)
    answer = await ctx.answer(c, "subscribe", "task", w.task_a, req="REP-2", since=since)
    _recovered(ctx, answer, "task", w.task_a, "a resume of task_a")
    at = _ack_index(c, answer, start)
    early = [f for f in c.frames[start:at] if isinstance(f, dict) and f.get("event_id") in set(missed)]
    ctx.expect(not early, "a replayed frame arrived before its subscribe_ack", "the ack first", early[:3],
               req="REP-2")
    await _resume(ctx, c, "task", w.task_a, since, "a resume of task_a, already held")


@case("REP-2", "REP-6", "DEL-1", title="since on the held workspace and user scopes, from the newest pos: "
      "recovered true", capability=CAP,
      cites={"REP-2": "also for a scope the connection already holds (the auto-subscribed workspace and user scopes "
                      "included)",
             "REP-6": REP6, "DEL-1": DEL1})
async def rep2_since_on_auto_scopes(ctx):
    ctx.require("pos")
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid in (("workspace", w.ws_a), ("user", w.alice)):
        p = await ctx.publish(scope, sid, {"type": "conformance:seen"})
        since = (await ctx.event(c, p)).get("pos")
        await _must_recover(ctx, c, scope, sid, since, f"resuming the held {scope} scope from the newest pos")


# -- REP-3: missed events, once, in order, then live --------------------------------------------------

async def _rep3_missed_then_live(ctx, sub: int, pub: int, again: int, n: int = 25) -> None:
    w = ctx.world
    _check_retention(ctx, n + 1)
    since = await _seen_then_gone(ctx, "chat", w.chat_alice, sub, pub)
    missed = eids(await publish_n(ctx, "chat", w.chat_alice, n, node=pub, tag="conformance:missed"))
    b = await ctx.connect(w.alice, w.ws_a, node=again)
    start = len(b.frames)
    with across(ctx, pub != again or sub != again):
        await _must_recover(ctx, b, "chat", w.chat_alice, since, f"a resume after {n} missed events")
        live = await ctx.publish("chat", w.chat_alice, {"type": "conformance:live"}, node=pub)
        owed = missed + [live["event_id"]]
        if not await _replay(ctx, b, owed, "the resumed connection", start=start, scope="chat", sid=w.chat_alice,
                             pub=pub):
            return
        newest = _pos_of(b, live["event_id"])
        start2 = len(b.frames)
        await _must_recover(ctx, b, "chat", w.chat_alice, newest, "resuming again from the newest pos received")
        mk = await marker(ctx, "chat", w.chat_alice, b, node=pub)
        again_got = among(b, owed, start2)
        ctx.expect(not again_got, "resuming again from the newest pos must replay nothing a second time",
                   [mk["event_id"]], again_got[:5], req="REP-3")


RESUMED = {"REP-3": REP3, "REP-6": REP6, "REP-2": REP2, "DEL-1": DEL1}


@case("REP-3", "REP-6", "REP-2", "DEL-1",
      title="resume: exactly the missed events in order, then live; again from the newest pos: nothing twice",
      capability=CAP, cites=RESUMED,
      catches='a replay that leaves out the first missed event')
async def rep3_missed_then_live(ctx):
    await _rep3_missed_then_live(ctx, 0, 0, 0)


@case("REP-3", "REP-6", "REP-2", "DEL-1", "NODE-1",
      title="resume on a third node: the events published through a second, once, in order, then live",
      capability=CAP, cites={**RESUMED, "NODE-1": NODE1}, min_nodes=2)
async def rep3_missed_then_live_cross_node(ctx):
    await _rep3_missed_then_live(ctx, 0, 1, resume_node(ctx))


async def _rep3_held_auto_scope(ctx, pub: int, node: int) -> None:
    w = ctx.world
    ctx.require("pos")
    _check_retention(ctx, 8)
    first = await ctx.publish("workspace", w.ws_a, {"type": "conformance:old"}, node=pub)
    gap = eids(await publish_n(ctx, "workspace", w.ws_a, 3, node=pub, tag="conformance:gap"))
    bob = await ctx.connect(w.bob, w.ws_a, node=node)
    with across(ctx, pub != node):
        live = eids(await publish_n(ctx, "workspace", w.ws_a, 2, node=pub, tag="conformance:live"))
        await wait_all(ctx, bob, live, "bob")
        start = len(bob.frames)
        await _must_recover(ctx, bob, "workspace", w.ws_a, first["pos"], "resuming the held workspace scope")
        after = await ctx.publish("workspace", w.ws_a, {"type": "conformance:after"}, node=pub)
        owed = gap + [after["event_id"]]
        complete = await _replay(ctx, bob, owed, "bob, resuming a scope he holds,", start=start, scope="workspace",
                                 sid=w.ws_a, pub=pub)
        # what this connection already had must not come again: REP-3's skip, and DEL-2's at most once
        again = among(bob, live, start)
        for req in ("REP-3", "DEL-2"):
            ctx.check(req, not again, "the replay on a held scope repeated events already delivered on the connection",
                      "none of them", again)
        if not complete:
            return
        start2 = len(bob.frames)
        await _must_recover(ctx, bob, "workspace", w.ws_a, after["pos"], "resuming again from the newest pos")
        mk = await marker(ctx, "workspace", w.ws_a, bob, node=pub)
        twice = among(bob, gap + live + [after["event_id"]], start2)
        ctx.expect(not twice, "resuming again from the newest pos must replay nothing a second time",
                   [mk["event_id"]], twice[:5], req="REP-3")


HELD = {"REP-3": "On a scope already held, the replay skips events already delivered on this connection",
        "DEL-2": "an `event_id` reaches a subscription of a connection at most once", "REP-6": REP6, "REP-2": REP2,
        "DEL-1": DEL1}


@case("REP-3", "DEL-2", "REP-6", "REP-2", "DEL-1",
      title="resume on the auto-subscribed workspace scope leaves out what was already delivered", capability=CAP,
      cites=HELD)
async def rep3_held_auto_scope(ctx):
    await _rep3_held_auto_scope(ctx, 0, 0)


@case("REP-3", "DEL-2", "REP-6", "REP-2", "DEL-1", "NODE-1",
      title="across nodes: resume on a held workspace scope leaves out what was delivered",
      capability=CAP, cites={**HELD, "NODE-1": NODE1}, min_nodes=2)
async def rep3_held_auto_scope_cross_node(ctx):
    await _rep3_held_auto_scope(ctx, 1, resume_node(ctx))


async def _rep3_during_burst(ctx, sub: int, pub: int, again: int) -> None:
    """A resume while events keep coming: missed and live merge into one gap-free, ordered run."""
    w = ctx.world
    ctx.require("pos")
    _check_retention(ctx, 100)
    a = await ctx.connect(w.alice, w.ws_a, node=sub)
    await hold(ctx, a, "task", w.task_a, "alice")
    with across(ctx, pub != again or sub != again):
        async with Stream(ctx, "task", w.task_a, node=pub, tag="conformance:tick") as stream:
            await stream.reach(20, "20 publishes")
            await wait_all(ctx, a, eids(stream.published[:20]), "alice")
            await a.close()
            sent = set(eids(stream.published))
            last = [f for f in a.frames if isinstance(f, dict) and f.get("event_id") in sent][-1]
            await stream.reach(len(stream.log) + 20, "20 publishes while alice is away")
            b = await ctx.connect(w.alice, w.ws_a, node=again)
            start = len(b.frames)
            await _must_recover(ctx, b, "task", w.task_a, last.get("pos"), "a resume during a stream of publishes")
            await stream.reach(len(stream.log) + 30, "30 publishes after the resume")
        published = stream.published
        ids = eids(published)
        owed = ids[ids.index(last["event_id"]) + 1:]
        await _replay(ctx, b, owed, "the resumed connection", start=start, scope="task", sid=w.task_a, pub=pub)


@case("REP-3", "REP-6", "REP-2", "DEL-1",
      title="a resume during a stream of publishes: missed and live merge, once, in order", capability=CAP,
      cites=RESUMED)
async def rep3_resume_during_stream(ctx):
    await _rep3_during_burst(ctx, 0, 0, 0)


@case("REP-3", "REP-6", "REP-2", "DEL-1", "NODE-1",
      title="across nodes: a resume during a stream of publishes merges missed and live, once, in order",
      capability=CAP, cites={**RESUMED, "NODE-1": NODE1}, min_nodes=2)
async def rep3_resume_during_stream_cross_node(ctx):
    await _rep3_during_burst(ctx, 0, 1, resume_node(ctx))


# -- REP-4: recovered false, all or nothing -----------------------------------------------------------

async def _rep4_other_scope(ctx, pub: int, node: int) -> None:
    w = ctx.world
    ctx.require("pos")
    foreign = await ctx.publish("chat", w.chat_alice, {"type": "conformance:foreign"}, node=pub)
    later = eids(await publish_n(ctx, "task", w.task_a, 5, node=pub, tag="conformance:later"))
    c = await ctx.connect(w.alice, w.ws_a, node=node)
    start = len(c.frames)
    with across(ctx, pub != node):
        recovered = await _resume(ctx, c, "task", w.task_a, foreign["pos"], "a since taken from another scope")
        ctx.expect(recovered is False, "a since taken from another scope must be answered recovered false",
                   ack("subscribe", "task", w.task_a, recovered=False),
                   ack("subscribe", "task", w.task_a, recovered=recovered), req="REP-4")
        await marker(ctx, "task", w.task_a, c, node=pub)  # live from the ack on (DEL-1)
        expect_absent(ctx, c, {e: f"task event #{i}, published before the resume" for i, e in enumerate(later)},
                      "after recovered false nothing may be replayed", start, req="REP-4")


OTHER_SCOPE = {"REP-4": "`since` comes from another epoch, another scope, or is unknown", "REP-2": REP2,
               "DEL-1": DEL1}


@case("REP-4", "REP-2", "DEL-1", title="a pos of another scope: recovered false, nothing replayed, live from the ack",
      capability=CAP, cites=OTHER_SCOPE)
async def rep4_pos_of_another_scope(ctx):
    await _rep4_other_scope(ctx, 0, 0)


@case("REP-4", "REP-2", "DEL-1", "NODE-1",
      title="across nodes: a pos of another scope is recovered false, nothing replayed",
      capability=CAP, cites={**OTHER_SCOPE, "NODE-1": NODE1}, min_nodes=2)
async def rep4_pos_of_another_scope_cross_node(ctx):
    await _rep4_other_scope(ctx, 1, resume_node(ctx))


@case("REP-4", "REP-2", "REP-3", "DEL-1",
      title="a gap larger than the retention max_len: recovered false and nothing replayed, or true and everything",
      capability=CAP,
      cites={"REP-4": "It MUST NOT claim `true` over a gap.", "REP-2": REP2, "REP-3": REP3, "DEL-1": DEL1},
      catches='recovered true over a trimmed gap')
async def rep4_gap_beyond_max_len(ctx):
    w = ctx.world
    max_len = _retention_int(ctx, "max_len")
    if not isinstance(max_len, int) or max_len > 2000 or max_len < 1:
        raise NotChecked(f"retention max_len is {ctx.target.retention.get('max_len')!r}: only an int up to 2000 "
                         "can be exceeded in a case")
    pub = other_node(ctx)
    since = await _seen_then_gone(ctx, "task", w.task_a, 0, pub)
    gap = max_len + min(max_len, 100) + 1
    lost = eids(await publish_n(ctx, "task", w.task_a, gap, node=pub, tag="conformance:trimmed"))
    c = await ctx.connect(w.alice, w.ws_a, node=resume_node(ctx))
    start = len(c.frames)
    recovered = await _resume(ctx, c, "task", w.task_a, since, f"a resume over {gap} missed events")
    if recovered:
        # Declaring max_len does not oblige a target to forget more: true is right if it kept
        # everything, and then every missed event must come (never true over a gap).
        closed = await everything_or_closed(ctx, c, lost, "task", w.task_a, pub, "the connection resumed over a gap",
                                            timeout=REPLAY, start=start, gap="REP-4", stall="REP-4", repeat="REP-3",
                                            order="REP-3")
        if closed is not None:
            raise NotChecked("the connection was closed during its replay (DEL-6 allows it): whether true was "
                             "claimed over a gap cannot be told")
        return
    await marker(ctx, "task", w.task_a, c, node=pub)
    expect_absent(ctx, c, {e: f"missed event #{i}" for i, e in enumerate(lost)},
                  "after recovered false nothing may be replayed", start, req="REP-4")


# -- REP-5: an unparseable since ---------------------------------------------------------------------

NOT_STRINGS = (42, 0, True, False, 1.5, {"pos": "x"}, ["1-0"], [])


@case("REP-5", "AZ-4", "DEL-1", title="a since that is not a string is answered subscribe_error invalid payload, "
      "and subscribes nothing", capability=CAP,
      cites={"REP-5": "A `since` that is not a string, or that cannot be parsed, is answered `subscribe_error` with "
                      "`invalid payload`.",
             "AZ-4": "a connection never receives an event of a scope it does not hold a granted subscription to at "
                     "that moment",
             "DEL-1": DEL1})
async def rep5_non_string_since(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.bob, w.ws_a)
    await hold(ctx, witness, "task", w.task_a, "bob")
    await hold(ctx, c, "task", w.chat_task_alice, "alice")  # for a marker of the same scope type
    for since in NOT_STRINGS:
        got = await ctx.answer(c, "subscribe", "task", w.task_a, since=since)
        ctx.check("REP-5", matches(got, sub_error("task", w.task_a, "invalid payload")),
                  f"since {since!r} is not a string: invalid payload", sub_error("task", w.task_a, "invalid payload"),
                  got)
    p = await ctx.publish("task", w.task_a, {"type": "conformance:after-invalid"})
    await ctx.event(witness, p)
    await marker(ctx, "task", w.chat_task_alice, c)
    expect_absent(ctx, c, {p["event_id"]: "task event"}, "a subscribe refused as invalid payload still subscribed",
                  req="AZ-4")


@case("REP-5", "REP-4", "DEL-1", title="a string since that is no position: invalid payload, or recovered false "
      "with nothing replayed", capability=CAP,
      cites={"REP-5": "a string that is no position the target ever gave out may be answered `invalid payload` (it "
                      "cannot be parsed) or `recovered: false` (it parses but is unknown, REP-4)",
             "REP-4": REP4, "DEL-1": DEL1})
async def rep5_unknown_string_since(ctx):
    w = ctx.world
    before = eids(await publish_n(ctx, "task", w.task_a, 3, tag="conformance:before"))
    await _never_given_out(ctx, ("", "not a position \u0000 \u2717", "{}", "\U0001F600" * 3, "x" * 1000), before)


ARABIC_INDIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@case("REP-5", "REP-4", "DEL-1", title="a real position in other digits (Arabic-Indic, full-width) or with a newline "
      "inside: invalid payload, or recovered false with nothing replayed", capability=CAP,
      cites={"REP-5": "a string that is no position the target ever gave out may be answered `invalid payload` (it "
                      "cannot be parsed) or `recovered: false` (it parses but is unknown, REP-4)",
             "REP-4": REP4, "DEL-1": DEL1},
      catches="a position parser reading any Unicode digit, or stopping at a newline, and resuming from the "
              "position it guessed")
async def rep5_real_position_respelled(ctx):
    w = ctx.world
    published = await publish_n(ctx, "task", w.task_a, 3, tag="conformance:before")
    pos = published[0].get("pos")
    if not isinstance(pos, str) or not pos:
        raise SetupError("publish with a pos to respell", published[0], req="REP-1", expected='{"pos": str}')
    cut = pos.rfind(".") if "." in pos else len(pos) // 2
    head, tail = pos[:cut], pos[cut:]  # a position may carry a check of its own after a dot: respell around it
    variants = {pos.translate(ARABIC_INDIC), pos.translate(FULL_WIDTH), head.translate(ARABIC_INDIC) + tail,
                head.translate(FULL_WIDTH) + tail, pos + "\n", head + "\n" + tail}
    variants.discard(pos)  # a position without ASCII digits has no digit variants
    # the first event's position: a resume that took any of these for it would replay the other two
    await _never_given_out(ctx, sorted(variants), eids(published[1:]))


async def _never_given_out(ctx, sinces, before: list[str]) -> None:
    """Each since, which the target never gave out, is answered invalid payload or recovered false;
    after recovered false none of the events `before` (published before it) arrives."""
    w = ctx.world
    acked = []
    for since in sinces:
        c = await ctx.connect(w.alice, w.ws_a)
        got = await ctx.answer(c, "subscribe", "task", w.task_a, since=since)
        if matches(got, ack("subscribe", "task", w.task_a, recovered=False)):
            acked.append(c)
            continue
        ctx.check("REP-5", matches(got, sub_error("task", w.task_a, "invalid payload")),
                  f"since {since[:20]!r} is no position: invalid payload, or recovered false",
                  [sub_error("task", w.task_a, "invalid payload"), ack("subscribe", "task", w.task_a, recovered=False)],
                  got)
    if acked:
        await marker(ctx, "task", w.task_a, *acked)  # live from the ack on (DEL-1)
        for c in acked:
            expect_absent(ctx, c, {e: f"task event #{i}, published before the resume" for i, e in enumerate(before)},
                          "after recovered false nothing may be replayed", req="REP-4")


@case("REP-5", title="since is checked before the scope and the authorization", capability=CAP,
      cites="Payload checks come before scope and authorization checks.")
async def rep5_checked_before_scope(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid, since in (("daemon_runtime", "x", 17), ("nonsense", "x", 2.5), ("global", "all", [1]),
                              ("task", w.task_b, {"x": 1}), ("chat", w.chat_bob, 3),
                              ("workspace", w.ws_b, True), ("task", "not-a-uuid", 0)):
        got = await ctx.answer(c, "subscribe", scope, sid, since=since)
        ctx.check("REP-5", matches(got, sub_error(scope, sid, "invalid payload")),
                  f"since {since!r} for {scope}:{sid} must be invalid payload before any scope or access check",
                  sub_error(scope, sid, "invalid payload"), got)


# -- REP-6: inside the retention a resume recovers --------------------------------------------------

async def _rep6(ctx, sub: int, pub: int, again: int) -> None:
    w = ctx.world
    max_len = _retention_int(ctx, "max_len")
    if max_len is not None and max_len < 3:
        raise NotChecked(f"retention max_len {max_len} leaves no gap to recover")
    gap = min(int(max_len) // 2, 200) if max_len is not None else 200
    _check_retention(ctx, gap)
    since = await _seen_then_gone(ctx, "task", w.task_a, sub, pub)
    missed = eids(await publish_n(ctx, "task", w.task_a, gap, node=pub, tag="conformance:missed"))
    c = await ctx.connect(w.alice, w.ws_a, node=again)
    start = len(c.frames)
    with across(ctx, pub != again or sub != again):
        await _must_recover(ctx, c, "task", w.task_a, since, f"a resume over {gap} missed events, max_len {max_len}")
        await _replay(ctx, c, missed, "the resumed connection", start=start, scope="task", sid=w.task_a, pub=pub)


INSIDE = {"REP-6": REP6, "REP-3": REP3, "REP-2": REP2, "DEL-1": DEL1}


@case("REP-6", "REP-3", "REP-2", "DEL-1", title="a resume over a gap inside the declared retention recovers",
      capability=CAP, cites=INSIDE)
async def rep6_gap_inside_retention(ctx):
    await _rep6(ctx, 0, 0, 0)


@case("REP-6", "REP-3", "REP-2", "DEL-1", "NODE-1",
      title="across nodes: a resume inside the retention recovers on a third node",
      capability=CAP, cites={**INSIDE, "NODE-1": NODE1}, min_nodes=2)
async def rep6_gap_inside_retention_cross_node(ctx):
    await _rep6(ctx, 0, 1, resume_node(ctx))


# -- REP-7: resume is authorized like any subscribe ---------------------------------------------------

async def _rep7(ctx, pub: int) -> None:
    ctx.require("pos")
    w = ctx.world
    bob, carol = await ctx.connect(w.bob, w.ws_a), await ctx.connect(w.carol, w.ws_b)
    await hold(ctx, bob, "chat", w.chat_bob, "bob")
    await hold(ctx, carol, "task", w.task_b, "carol")
    secrets, since = {}, {}
    for scope, sid, witness in (("chat", w.chat_bob, bob), ("task", w.task_b, carol), ("workspace", w.ws_b, carol)):
        ps = await publish_n(ctx, scope, sid, 3, node=pub, tag="conformance:secret")
        await wait_all(ctx, witness, eids(ps), "a witness holding the scope")
        since[(scope, sid)] = ps[0]["pos"]
        secrets.update({p["event_id"]: f"{scope}:{sid} event" for p in ps})
    alice = await ctx.connect(w.alice, w.ws_a)
    for (scope, sid), pos in since.items():
        got = await ctx.answer(alice, "subscribe", scope, sid, since=pos)
        ctx.check("REP-7", matches(got, sub_error(scope, sid, "forbidden")),
                  f"a resume of {scope}:{sid} alice may not hold must be forbidden", sub_error(scope, sid, "forbidden"),
                  got)
    own = await ctx.publish("workspace", w.ws_a, {"type": "conformance:own"}, node=pub)
    got = await ctx.answer(alice, "subscribe", "global", "all", since=own["pos"])
    ctx.check("SUB-3", matches(got, sub_error("global", "all", "unknown_scope")),
              "global cannot be subscribed to, with since or without: unknown_scope",
              sub_error("global", "all", "unknown_scope"), got)
    with across(ctx, pub != 0):
        await marker(ctx, "user", w.alice, alice, node=pub)
        leaked = [secrets[e] for e in among(alice, list(secrets))]
        # one observation, two sentences: REP-7's "nothing leaks", AZ-4's "never ... through replay"
        for req in ("REP-7", "AZ-4"):
            ctx.check(req, not leaked, "alice received events of scopes she may not hold, through a resume",
                      "none of these events", leaked[:5])


REP7 = {"REP-7": "A resume is authorized like any subscribe: if it is denied, nothing is replayed and nothing leaks.",
        "AZ-4": "never any of these through replay (REP-7)",
        "SUB-3": "Any other scope type (`global`, `daemon_runtime`, anything unknown) is answered `unknown_scope`.",
        "DEL-1": DEL1}


@case("REP-7", "AZ-4", "SUB-3", "DEL-1", title="a resume of a forbidden scope is forbidden and replays nothing",
      capability=CAP, cites=REP7,
      catches='a resume that skips the authorizer')
async def rep7_forbidden_resume_replays_nothing(ctx):
    await _rep7(ctx, 0)


@case("REP-7", "AZ-4", "SUB-3", "DEL-1", "NODE-1", title="across nodes: a forbidden resume replays nothing",
      capability=CAP, cites={**REP7, "NODE-1": NODE1}, min_nodes=2)
async def rep7_forbidden_resume_replays_nothing_cross_node(ctx):
    await _rep7(ctx, 1)

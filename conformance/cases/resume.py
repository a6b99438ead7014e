"""REP: resume (capability `resume`). Positions are opaque: a case only hands back, unchanged,
a `pos` it received in a frame or a publish answer."""

from __future__ import annotations

import asyncio

from . import Failed, NotChecked, case
from .delivery import (ack, alice_on_every_scope, among, eids, expect_absent, marker, other_node, publish_n, resume_node, sub_error,
                       subscribe, until, wait_all)

CAP = "resume"


def _retention_int(ctx, key: str):
    value = ctx.target.retention.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _check_short_max_age(ctx) -> None:
    max_age = _retention_int(ctx, "max_age_s")
    if max_age is not None and max_age < 30:
        raise NotChecked(f"retention max_age_s {max_age} is too short for this case")


async def _seen_then_gone(ctx, scope: str, sid: str, node: int, pub: int) -> str:
    """alice holds the scope on `node`, receives one event, keeps its pos and disconnects."""
    w = ctx.world
    a = await ctx.connect(w.alice, w.ws_a, node=node)
    if scope in ("task", "chat"):
        await subscribe(ctx, a, scope, sid, "alice")
    seen = await ctx.publish(scope, sid, {"type": "conformance:seen"}, node=pub)
    frame = await ctx.event(a, seen)
    pos = frame.get("pos")
    ctx.expect(isinstance(pos, str) and pos != "", "an event frame must carry its pos as a non-empty string",
               "a string pos", frame)
    await a.close()
    return pos


def _ack_index(client, answer, start: int) -> int:
    return next(i for i in range(start, len(client.frames)) if client.frames[i] is answer)


# -- REP-1: every frame carries scope, scope_id and pos ---------------------------------------------

async def _rep1(ctx, pub: int) -> None:
    c, targets = await alice_on_every_scope(ctx)
    for scope, sid in targets:
        positions = []
        for _ in range(3):
            p = await ctx.publish(scope, sid, {"type": "conformance:pos"}, node=pub)
            ctx.expect(isinstance(p.get("pos"), str) and p["pos"] != "",
                       f"publish to {scope} must answer pos as a non-empty string when resume is claimed",
                       "a string pos", p)
            got = await ctx.event(c, p)
            ctx.equal({k: got.get(k) for k in ("scope", "scope_id", "pos")},
                      {"scope": scope, "scope_id": sid, "pos": p["pos"]},
                      f"a {scope} frame must carry scope, scope_id and the pos the publish answered")
            positions.append(p["pos"])
        ctx.expect(len(set(positions)) == 3, f"three events of {scope}:{sid} must have three distinct positions",
                   "3 distinct", positions)


@case("REP-1", title="event frames carry scope, scope_id and the pos the publish answered", capability=CAP)
async def rep1_frames_carry_position(ctx):
    await _rep1(ctx, 0)


@case("REP-1", "NODE-1", title="across nodes: frames carry the pos the publishing node answered", capability=CAP,
      min_nodes=2)
async def rep1_frames_carry_position_cross_node(ctx):
    await _rep1(ctx, 1)


# -- REP-2: recovered is answered exactly when since is given ----------------------------------------

@case("REP-2", title="without since (absent or null) the subscribe_ack has no recovered field", capability=CAP)
async def rep2_no_since_no_recovered(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid, extra in (("task", w.task_a, {}), ("chat", w.chat_alice, {"since": None}),
                              ("workspace", w.ws_a, {"since": None}), ("user", w.alice, {})):
        got = await ctx.answer(c, "subscribe", scope, sid, **extra)
        ctx.equal(got, ack("subscribe", scope, sid),
                  f"a subscribe to {scope} {'with since null' if extra else 'without since'} must be acked "
                  f"without recovered")


@case("REP-2", title="with since the ack carries recovered true or false and precedes every replayed frame",
      capability=CAP)
async def rep2_since_answers_recovered_first(ctx):
    w = ctx.world
    _check_short_max_age(ctx)
    pub = other_node(ctx)
    since = await _seen_then_gone(ctx, "task", w.task_a, 0, pub)
    missed = eids(await publish_n(ctx, "task", w.task_a, 5, node=pub, tag="conformance:missed"))
    c = await ctx.connect(w.alice, w.ws_a, node=resume_node(ctx))
    start = len(c.frames)
    answer = await ctx.answer(c, "subscribe", "task", w.task_a, since=since)
    payload = answer.get("payload") if isinstance(answer, dict) else None
    ctx.expect(answer.get("type") == "subscribe_ack" and isinstance(payload, dict)
               and set(payload) == {"scope", "id", "recovered"} and isinstance(payload.get("recovered"), bool)
               and (payload["scope"], payload["id"]) == ("task", w.task_a),
               "a subscribe with since must be acked with recovered: true or false",
               ack("subscribe", "task", w.task_a, recovered="true|false"), answer)
    at = _ack_index(c, answer, start)
    early = [f for f in c.frames[start:at] if isinstance(f, dict) and f.get("event_id") in set(missed)]
    ctx.expect(not early, "a replayed frame arrived before its subscribe_ack", "the ack first", early[:3])
    again = await ctx.answer(c, "subscribe", "task", w.task_a, since=since)  # a scope already held
    payload = again.get("payload") if isinstance(again, dict) else None
    ctx.expect(again.get("type") == "subscribe_ack" and isinstance(payload, dict)
               and isinstance(payload.get("recovered"), bool),
               "a subscribe with since to a scope already held must be acked with recovered",
               ack("subscribe", "task", w.task_a, recovered="true|false"), again)


@case("REP-2", "REP-6", title="since on the held workspace and user scopes, from the newest pos: recovered true",
      capability=CAP)
async def rep2_since_on_auto_scopes(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid in (("workspace", w.ws_a), ("user", w.alice)):
        p = await ctx.publish(scope, sid, {"type": "conformance:seen"})
        since = (await ctx.event(c, p)).get("pos")
        got = await ctx.answer(c, "subscribe", scope, sid, since=since)
        ctx.equal(got, ack("subscribe", scope, sid, recovered=True),
                  f"resuming the held {scope} scope from the newest pos must be acked with recovered true")


# -- REP-3: missed events, once, in order, then live --------------------------------------------------

async def _rep3_missed_then_live(ctx, sub: int, pub: int, again: int, n: int = 25) -> None:
    w = ctx.world
    _check_short_max_age(ctx)
    since = await _seen_then_gone(ctx, "chat", w.chat_alice, sub, pub)
    missed = eids(await publish_n(ctx, "chat", w.chat_alice, n, node=pub, tag="conformance:missed"))
    b = await ctx.connect(w.alice, w.ws_a, node=again)
    start = len(b.frames)
    answer = await ctx.answer(b, "subscribe", "chat", w.chat_alice, since=since)
    ctx.equal(answer, ack("subscribe", "chat", w.chat_alice, recovered=True),
              f"a resume after {n} missed events must recover")
    live = await ctx.publish("chat", w.chat_alice, {"type": "conformance:live"}, node=pub)
    await wait_all(ctx, b, missed + [live["event_id"]], "the resumed connection", timeout=10.0, start=start)
    got = among(b, missed + [live["event_id"]], start)
    ctx.equal(got, missed + [live["event_id"]],
              "the resumed connection must get exactly the missed events in order, then the live one")
    newest = next(f["pos"] for f in reversed(b.frames) if isinstance(f, dict)
                  and f.get("event_id") == live["event_id"])
    start2 = len(b.frames)
    again_ack = await ctx.answer(b, "subscribe", "chat", w.chat_alice, since=newest)
    ctx.equal(again_ack, ack("subscribe", "chat", w.chat_alice, recovered=True),
              "resuming again from the newest pos received must recover")
    mk = await marker(ctx, "chat", w.chat_alice, b, node=pub)
    ctx.equal(among(b, missed + [live["event_id"], mk["event_id"]], start2), [mk["event_id"]],
              "resuming again from the newest pos must replay nothing a second time")


@case("REP-3", title="resume: exactly the missed events in order, then live; again from the newest pos: nothing twice",
      capability=CAP)
async def rep3_missed_then_live(ctx):
    await _rep3_missed_then_live(ctx, 0, 0, 0)


@case("REP-3", "NODE-1", title="resume on a third node: the events published through a second, once, in order, "
      "then live", capability=CAP, min_nodes=2)
async def rep3_missed_then_live_cross_node(ctx):
    await _rep3_missed_then_live(ctx, 0, 1, resume_node(ctx))


async def _rep3_held_auto_scope(ctx, pub: int, node: int) -> None:
    w = ctx.world
    _check_short_max_age(ctx)
    first = await ctx.publish("workspace", w.ws_a, {"type": "conformance:old"}, node=pub)
    gap = eids(await publish_n(ctx, "workspace", w.ws_a, 3, node=pub, tag="conformance:gap"))
    bob = await ctx.connect(w.bob, w.ws_a, node=node)
    live = eids(await publish_n(ctx, "workspace", w.ws_a, 2, node=pub, tag="conformance:live"))
    await wait_all(ctx, bob, live, "bob")
    start = len(bob.frames)
    answer = await ctx.answer(bob, "subscribe", "workspace", w.ws_a, since=first["pos"])
    ctx.equal(answer, ack("subscribe", "workspace", w.ws_a, recovered=True),
              "resuming the held workspace scope inside the retention must recover")
    after = await ctx.publish("workspace", w.ws_a, {"type": "conformance:after"}, node=pub)
    await ctx.frame(bob, lambda f: isinstance(f, dict) and f.get("event_id") == after["event_id"],
                    f"event {after['event_id']}", start=start)
    ctx.equal(among(bob, gap + live + [after["event_id"]], start), gap + [after["event_id"]],
              "the replay on a held scope must bring what was missed and leave out what was already delivered")
    start2 = len(bob.frames)
    again = await ctx.answer(bob, "subscribe", "workspace", w.ws_a, since=after["pos"])
    ctx.equal(again, ack("subscribe", "workspace", w.ws_a, recovered=True),
              "resuming again from the newest pos must recover")
    mk = await marker(ctx, "workspace", w.ws_a, bob, node=pub)
    ctx.equal(among(bob, gap + live + [after["event_id"], mk["event_id"]], start2), [mk["event_id"]],
              "resuming again from the newest pos must replay nothing a second time")


@case("REP-3", title="resume on the auto-subscribed workspace scope leaves out what was already delivered",
      capability=CAP)
async def rep3_held_auto_scope(ctx):
    await _rep3_held_auto_scope(ctx, 0, 0)


@case("REP-3", "NODE-1", title="across nodes: resume on a held workspace scope leaves out what was delivered",
      capability=CAP, min_nodes=2)
async def rep3_held_auto_scope_cross_node(ctx):
    await _rep3_held_auto_scope(ctx, 1, resume_node(ctx))


async def _rep3_during_burst(ctx, sub: int, pub: int, again: int) -> None:
    """A resume while events keep coming: missed and live merge into one gap-free, ordered run."""
    w = ctx.world
    _check_short_max_age(ctx)
    a = await ctx.connect(w.alice, w.ws_a, node=sub)
    await subscribe(ctx, a, "task", w.task_a, "alice")
    published: list[dict] = []
    stop, enough = asyncio.Event(), asyncio.Event()
    goal = [20]

    async def publisher():
        i = 0
        while not stop.is_set() and i < 3000:
            published.append(await ctx.publish("task", w.task_a, {"type": "conformance:tick", "payload": {"i": i}},
                                               node=pub))
            i += 1
            if len(published) >= goal[0]:
                enough.set()

    task = asyncio.create_task(publisher())
    try:
        await until(enough, task, 30, "20 publishes")
        await wait_all(ctx, a, eids(published[:20]), "alice")
        await a.close()
        last = [f for f in a.frames if isinstance(f, dict) and f.get("event_id") in set(eids(published))][-1]
        enough.clear()
        goal[0] = len(published) + 20
        await until(enough, task, 30, "20 publishes while alice is away")
        b = await ctx.connect(w.alice, w.ws_a, node=again)
        start = len(b.frames)
        answer = await ctx.answer(b, "subscribe", "task", w.task_a, since=last["pos"])
        ctx.equal(answer, ack("subscribe", "task", w.task_a, recovered=True),
                  "a resume during a stream of publishes, inside the retention, must recover")
        enough.clear()
        goal[0] = len(published) + 30
        await until(enough, task, 30, "30 publishes after the resume")
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    ids = eids(published)
    k = ids.index(last["event_id"])
    expected = ids[k + 1:]
    await wait_all(ctx, b, expected, "the resumed connection", timeout=10.0, start=start)
    got = among(b, ids, start)
    if got != expected:
        index = {e: i for i, e in enumerate(ids)}
        at = next((i for i, (x, y) in enumerate(zip(got, expected)) if x != y), min(len(got), len(expected)))
        raise Failed("replayed and live events did not merge into every event after since, once, in scope order",
                     [index[e] for e in expected[max(0, at - 2):at + 3]],
                     [index[e] for e in got[max(0, at - 2):at + 3]])


@case("REP-3", title="a resume during a stream of publishes: missed and live merge, once, in order", capability=CAP)
async def rep3_resume_during_stream(ctx):
    await _rep3_during_burst(ctx, 0, 0, 0)


@case("REP-3", "NODE-1", title="across nodes: a resume during a stream of publishes merges missed and live, "
      "once, in order", capability=CAP, min_nodes=2)
async def rep3_resume_during_stream_cross_node(ctx):
    await _rep3_during_burst(ctx, 0, 1, resume_node(ctx))


# -- REP-4: recovered false, all or nothing -----------------------------------------------------------

async def _rep4_other_scope(ctx, pub: int, node: int) -> None:
    w = ctx.world
    foreign = await ctx.publish("chat", w.chat_alice, {"type": "conformance:foreign"}, node=pub)
    later = eids(await publish_n(ctx, "task", w.task_a, 5, node=pub, tag="conformance:later"))
    c = await ctx.connect(w.alice, w.ws_a, node=node)
    start = len(c.frames)
    answer = await ctx.answer(c, "subscribe", "task", w.task_a, since=foreign["pos"])
    ctx.equal(answer, ack("subscribe", "task", w.task_a, recovered=False),
              "a since taken from another scope must be answered recovered false")
    mk = await marker(ctx, "task", w.task_a, c, node=pub)
    ctx.equal(among(c, later + [mk["event_id"]], start), [mk["event_id"]],
              "after recovered false nothing may be replayed, and live events must arrive")


@case("REP-4", title="a pos of another scope: recovered false, nothing replayed, live from the ack", capability=CAP)
async def rep4_pos_of_another_scope(ctx):
    await _rep4_other_scope(ctx, 0, 0)


@case("REP-4", "NODE-1", title="across nodes: a pos of another scope is recovered false, nothing replayed",
      capability=CAP, min_nodes=2)
async def rep4_pos_of_another_scope_cross_node(ctx):
    await _rep4_other_scope(ctx, 1, resume_node(ctx))


@case("REP-4", title="a gap larger than the retention max_len: recovered false, nothing replayed", capability=CAP)
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
    answer = await ctx.answer(c, "subscribe", "task", w.task_a, since=since)
    ctx.equal(answer, ack("subscribe", "task", w.task_a, recovered=False),
              f"a resume over {gap} missed events with max_len {max_len} must not claim recovered")
    mk = await marker(ctx, "task", w.task_a, c, node=pub)
    got = among(c, lost + [mk["event_id"]], start)
    ctx.expect(got == [mk["event_id"]], "after recovered false nothing may be replayed, and live events must arrive",
               "only the marker", f"{len(got) - (mk['event_id'] in got)} replayed events"
               + ("" if mk["event_id"] in got else ", no marker"))


# -- REP-5: an unparseable since ---------------------------------------------------------------------

@case("REP-5", title="a since that is not a string is answered subscribe_error invalid payload", capability=CAP)
async def rep5_non_string_since(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    witness = await ctx.connect(w.bob, w.ws_a)
    await subscribe(ctx, witness, "task", w.task_a, "bob")
    for since in (42, 0, True, False, 1.5, {"pos": "x"}, ["1-0"], []):
        got = await ctx.answer(c, "subscribe", "task", w.task_a, since=since)
        ctx.equal(got, sub_error("task", w.task_a, "invalid payload"),
                  f"since {since!r} is not a string: invalid payload")
    p = await ctx.publish("task", w.task_a, {"type": "conformance:after-invalid"})
    await ctx.event(witness, p)
    await marker(ctx, "workspace", w.ws_a, c)
    expect_absent(ctx, c, {p["event_id"]: "task event"}, "a subscribe refused as invalid payload still subscribed")


@case("REP-5", title="a string since that is no position at all is answered invalid payload", capability=CAP)
async def rep5_garbage_since(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for since in ("", "not a position \u0000 \u2717", "{}", "\U0001F600" * 3):
        got = await ctx.answer(c, "subscribe", "task", w.task_a, since=since)
        ctx.equal(got, sub_error("task", w.task_a, "invalid payload"),
                  f"since {since!r} cannot be parsed as a position: invalid payload")


@case("REP-5", title="since is checked before the scope and the authorization", capability=CAP)
async def rep5_checked_before_scope(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, sid, since in (("daemon_runtime", "x", 17), ("nonsense", "x", ""), ("global", "all", [1]),
                              ("task", w.task_b, {"x": 1}), ("chat", w.chat_bob, 3),
                              ("workspace", w.ws_b, True), ("task", "not-a-uuid", 0)):
        got = await ctx.answer(c, "subscribe", scope, sid, since=since)
        ctx.equal(got, sub_error(scope, sid, "invalid payload"),
                  f"an invalid since for {scope}:{sid} must be invalid payload before any scope or access check")


# -- REP-6: inside the retention a resume recovers --------------------------------------------------

async def _rep6(ctx, sub: int, pub: int, again: int) -> None:
    w = ctx.world
    _check_short_max_age(ctx)
    max_len = _retention_int(ctx, "max_len")
    if max_len is not None and max_len < 2:
        raise NotChecked(f"retention max_len {max_len} leaves no gap to recover")
    gap = min(int(max_len) // 2, 200) if max_len is not None else 200
    since = await _seen_then_gone(ctx, "task", w.task_a, sub, pub)
    missed = eids(await publish_n(ctx, "task", w.task_a, gap, node=pub, tag="conformance:missed"))
    c = await ctx.connect(w.alice, w.ws_a, node=again)
    start = len(c.frames)
    answer = await ctx.answer(c, "subscribe", "task", w.task_a, since=since)
    ctx.equal(answer, ack("subscribe", "task", w.task_a, recovered=True),
              f"a resume over {gap} missed events, inside max_len {max_len}, must recover")
    await wait_all(ctx, c, missed, "the resumed connection", timeout=10.0, start=start)
    ctx.equal(among(c, missed, start), missed, "a recovered resume must replay every missed event once, in order")


@case("REP-6", title="a resume over a gap inside the declared retention recovers", capability=CAP)
async def rep6_gap_inside_retention(ctx):
    await _rep6(ctx, 0, 0, 0)


@case("REP-6", "NODE-1", title="across nodes: a resume inside the retention recovers on a third node",
      capability=CAP, min_nodes=2)
async def rep6_gap_inside_retention_cross_node(ctx):
    await _rep6(ctx, 0, 1, resume_node(ctx))


# -- REP-7: resume is authorized like any subscribe ---------------------------------------------------

async def _rep7(ctx, pub: int) -> None:
    w = ctx.world
    bob, carol = await ctx.connect(w.bob, w.ws_a), await ctx.connect(w.carol, w.ws_b)
    await subscribe(ctx, bob, "chat", w.chat_bob, "bob")
    await subscribe(ctx, carol, "task", w.task_b, "carol")
    secrets, since = {}, {}
    for scope, sid, witness in (("chat", w.chat_bob, bob), ("task", w.task_b, carol), ("workspace", w.ws_b, carol)):
        ps = await publish_n(ctx, scope, sid, 3, node=pub, tag="conformance:secret")
        await wait_all(ctx, witness, eids(ps), "a witness holding the scope")
        since[(scope, sid)] = ps[0]["pos"]
        secrets.update({p["event_id"]: f"{scope}:{sid} event" for p in ps})
    alice = await ctx.connect(w.alice, w.ws_a)
    for (scope, sid), pos in since.items():
        got = await ctx.answer(alice, "subscribe", scope, sid, since=pos)
        ctx.equal(got, sub_error(scope, sid, "forbidden"), f"a resume of {scope}:{sid} alice may not hold: forbidden")
    own = await ctx.publish("workspace", w.ws_a, {"type": "conformance:own"}, node=pub)
    got = await ctx.answer(alice, "subscribe", "global", "all", since=own["pos"])
    ctx.equal(got, sub_error("global", "all", "unknown_scope"), "global cannot be resumed: unknown_scope")
    await marker(ctx, "user", w.alice, alice, node=pub)
    expect_absent(ctx, alice, secrets, "a refused resume replayed events of the refused scope")


@case("REP-7", "AZ-4", title="a resume of a forbidden scope is forbidden and replays nothing", capability=CAP)
async def rep7_forbidden_resume_replays_nothing(ctx):
    await _rep7(ctx, 0)


@case("REP-7", "AZ-4", "NODE-1", title="across nodes: a forbidden resume replays nothing", capability=CAP,
      min_nodes=2)
async def rep7_forbidden_resume_replays_nothing_cross_node(ctx):
    await _rep7(ctx, 1)

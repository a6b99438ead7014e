"""REP on the reference: what only the reference chooses where the contract leaves room, and
its internals (the relays' retention, replay pages, the store's end, a reader behind the store).
The contract's resume behaviour is checked by the suite (conformance/cases/resume.py) and, over
random interleavings on both relays, by tests/test_resume_property.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import redis.asyncio as aioredis

from conformance.client import WsClient
from reference.broadcaster import MemoryBroadcaster
from reference.relay.sharded import shard_key, shard_of
from reference.relay.streams import stream_key

RELAYS = ["streams", "sharded"]


def _ids(client: WsClient, scope: str, start: int = 0) -> list[str]:
    return [f["event_id"] for f in client.events(start) if f.get("scope") == scope]


def _is(eid):
    return lambda f: isinstance(f, dict) and f.get("event_id") == eid


async def _client(session, url, control, user, workspace) -> WsClient:
    return await WsClient.connect(session, url, workspace_id=workspace, token=await control.token(user))


async def _seen(session, h, world) -> dict:
    """alice holds task A on node 1 and receives one event, then leaves: the event's publish answer."""
    c = await _client(session, h.urls[0], h.controls[0], world.alice, world.ws_a)
    await c.subscribe("task", world.task_a)
    seen = await h.controls[0].publish("task", world.task_a, {"type": "seen"})
    await c.wait_for(_is(seen["event_id"]))
    await c.close()
    return seen


def _key(relay: str, world) -> str:
    """The stream that holds task A's events."""
    return stream_key("task", world.task_a) if relay == "streams" else shard_key(shard_of("task", world.task_a, 8))


async def _publish_n(control, scope, sid, n, tag="missed") -> list[dict]:
    return [await control.publish(scope, sid, {"type": tag, "n": i}) for i in range(n)]


# -- one node (memory broadcaster) -------------------------------------------------------------

@pytest.mark.req("REP-5")
@pytest.mark.parametrize("since", ["", "not-a-position", "1-0", "1-0.zz", "0", "1-0.0123456789ag"])
async def test_strings_that_are_not_reference_positions_are_invalid_payload(node, connect, world, since):
    """REP-5 lets a string that is no position be `invalid payload` or `recovered: false`; the
    reference parses `<entry id>.<scope tag>` and answers anything else invalid payload."""
    alice = await connect(world.alice, world.ws_a)
    assert await alice.subscribe("task", world.task_a, since=since) == {
        "type": "subscribe_error", "payload": {"scope": "task", "id": world.task_a, "error": "invalid payload"}}


class _LaggingReader(MemoryBroadcaster):
    """A relay whose reader runs behind its store: publish stores the entry (and answers) at
    once, the hub is handed it only on flush(), as a node's reader does seconds later in overload."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple] = []
        self.handed: dict[tuple[str, str], tuple[int, int]] = {}

    async def publish(self, scope_type, scope_id, frame, exclude_workspace=None):
        hub, self.sink = self.sink, SimpleNamespace(deliver=lambda *a: self.pending.append(a))
        try:
            return await super().publish(scope_type, scope_id, frame, exclude_workspace)
        finally:
            self.sink = hub

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for args in pending:
            self.sink.deliver(*args)
            self.handed[(args[0], args[1])] = args[-1]

    def cursor(self, scope_type, scope_id):
        return self.handed.get((scope_type, scope_id))

    async def ends(self, scopes):
        return {scope: self._last.get(scope) for scope in scopes}


@pytest.mark.req("REP-4", "DEL-1")
async def test_not_recovered_replays_nothing_even_from_a_lagging_reader(start_node, session, world):
    relay = _LaggingReader()
    node = await start_node(broadcaster=relay)
    holder = await _client(session, node.base, node.control, world.alice, world.ws_a)
    await holder.subscribe("task", world.task_a)  # the node reads the scope from here on
    before = await _publish_n(node.control, "task", world.task_a, 3, "before")  # stored, not yet read
    other = await node.control.publish("chat", world.chat_alice, {"type": "x"})
    late = await _client(session, node.base, node.control, world.alice, world.ws_a)
    ack = await late.subscribe("task", world.task_a, since=other["pos"])
    assert ack["payload"]["recovered"] is False
    relay.flush()  # the reader catches up: these predate the answer, so only `holder` gets them
    after = await node.control.publish("task", world.task_a, {"type": "after"})
    relay.flush()
    await holder.wait_for(_is(after["event_id"]))
    await late.wait_for(_is(after["event_id"]))
    assert _ids(holder, "task") == [b["event_id"] for b in before] + [after["event_id"]]
    assert _ids(late, "task") == [after["event_id"]]


@pytest.mark.req("REP-4", "REP-3", "DEL-1", "DEL-2")
@pytest.mark.parametrize("recovers", [False, True])
async def test_resume_of_a_held_scope_behind_a_lagging_reader(start_node, session, world, recovers):
    """The workspace scope is held from connect. Events stored before the connection joined and
    handed over late are not live for it: a resume answered false skips them, one answered
    true replays them; events stored after the join are owed either way (DEL-1), once."""
    relay = _LaggingReader()
    node = await start_node(broadcaster=relay)
    holder = await _client(session, node.base, node.control, world.bob, world.ws_a)
    seen = await node.control.publish("workspace", world.ws_a, {"type": "seen"})
    relay.flush()
    before = await _publish_n(node.control, "workspace", world.ws_a, 2, "before")  # stored, not yet read
    late = await _client(session, node.base, node.control, world.alice, world.ws_a)
    during = await node.control.publish("workspace", world.ws_a, {"type": "during"})  # after late joined
    since = seen["pos"] if recovers else (await node.control.publish("chat", world.chat_alice, {}))["pos"]
    ack = await late.subscribe("workspace", world.ws_a, since=since)
    assert ack["payload"]["recovered"] is recovers
    relay.flush()
    after = await node.control.publish("workspace", world.ws_a, {"type": "after"})
    relay.flush()
    await holder.wait_for(_is(after["event_id"]))
    await late.wait_for(_is(after["event_id"]))
    owed = [during["event_id"], after["event_id"]]
    assert _ids(late, "workspace") == ([b["event_id"] for b in before] if recovers else []) + owed
    assert _ids(holder, "workspace")[-4:] == [b["event_id"] for b in before] + owed


@pytest.mark.req("REP-4", "REP-6")
@pytest.mark.parametrize("missed, recovered", [(4, True), (5, True), (6, False)])
async def test_memory_retention_boundary(start_node, session, world, missed, recovered):
    """The memory relay keeps exactly max_len events: one more missed than that is false (the
    contract only fixes that a resume inside the declared retention recovers)."""
    node = await start_node(broadcaster=MemoryBroadcaster(max_len=5))
    c = await _client(session, node.base, node.control, world.alice, world.ws_a)
    await c.subscribe("task", world.task_a)
    seen = await node.control.publish("task", world.task_a, {"type": "seen"})
    await c.wait_for(_is(seen["event_id"]))
    await c.close()
    gap = await _publish_n(node.control, "task", world.task_a, missed)
    c2 = await _client(session, node.base, node.control, world.alice, world.ws_a)
    ack = await c2.subscribe("task", world.task_a, since=seen["pos"])
    assert ack["payload"]["recovered"] is recovered
    marker = await node.control.publish("task", world.task_a, {"type": "marker"})
    await c2.wait_for(_is(marker["event_id"]))
    expected = [g["event_id"] for g in gap] if recovered else []
    assert _ids(c2, "task") == expected + [marker["event_id"]]
    await c2.close()


@pytest.mark.req("DEL-6", "REP-3")
async def test_replay_longer_than_the_send_queue_arrives_whole(start_node, session, world):
    """DEL-6 allows closing a connection that cannot take its replay; the reference paces the
    replay through the send queue and delivers it whole."""
    node = await start_node(send_queue=16)
    c = await _client(session, node.base, node.control, world.alice, world.ws_a)
    await c.subscribe("task", world.task_a)
    seen = await node.control.publish("task", world.task_a, {"type": "seen"})
    await c.wait_for(_is(seen["event_id"]))
    await c.close()
    gap = await _publish_n(node.control, "task", world.task_a, 200)
    c2 = await _client(session, node.base, node.control, world.alice, world.ws_a)
    assert (await c2.subscribe("task", world.task_a, since=seen["pos"]))["payload"]["recovered"] is True
    await c2.wait_for(_is(gap[-1]["event_id"]), timeout=10)
    assert _ids(c2, "task") == [g["event_id"] for g in gap]
    await c2.close()


# -- three nodes, both relays --------------------------------------------------------------------

@pytest.mark.req("REP-4", "REP-6")
@pytest.mark.parametrize("relay", RELAYS)
async def test_retention_boundary_matches_what_redis_retains(relay, start_cluster, session, world):
    """Each relay answers recovered exactly as its stream retains (exact MAXLEN)."""
    k = 20
    h = await start_cluster(relay, node_flags=("--max-len", str(k)))
    r = aioredis.Redis.from_url(h.redis.url, decode_responses=True)
    try:
        for missed in (k - 1, k, k + 1, k + 5):
            c = await _client(session, h.urls[0], h.controls[0], world.alice, world.ws_a)
            await c.subscribe("task", world.task_a)
            seen = await h.controls[1].publish("task", world.task_a, {"type": "seen"})
            await c.wait_for(_is(seen["event_id"]))
            await c.close()
            gap = await _publish_n(h.controls[2], "task", world.task_a, missed)
            key = _key(relay, world)
            retained = {eid for eid, _ in await r.xrange(key)}
            all_retained = all(g["pos"].split(".")[0] in retained for g in gap)
            c2 = await _client(session, h.urls[1], h.controls[1], world.alice, world.ws_a)
            ack = await c2.subscribe("task", world.task_a, since=seen["pos"])
            assert ack["payload"]["recovered"] is all_retained, (missed, all_retained)
            assert all_retained is (missed <= k)  # exact MAXLEN: the last k events are kept
            marker = await h.controls[0].publish("task", world.task_a, {"type": "marker"})
            await c2.wait_for(_is(marker["event_id"]))
            expected = [g["event_id"] for g in gap] if all_retained else []
            assert _ids(c2, "task") == expected + [marker["event_id"]]
            await c2.close()
    finally:
        await r.aclose()


@pytest.mark.req("REP-4")
@pytest.mark.parametrize("relay", RELAYS)
async def test_deleted_stream_or_redis_restart_never_recovers(relay, start_cluster, session, world):
    """Store faults the suite cannot cause: a deleted stream, a Redis restart without persistence."""
    h = await start_cluster(relay)
    r = aioredis.Redis.from_url(h.redis.url, decode_responses=True)
    try:
        seen = await _seen(session, h, world)
        await h.controls[1].publish("task", world.task_a, {"type": "lost"})
        key = _key(relay, world)
        assert await r.delete(key) == 1
        c2 = await _client(session, h.urls[1], h.controls[1], world.alice, world.ws_a)
        assert (await c2.subscribe("task", world.task_a, since=seen["pos"]))["payload"]["recovered"] is False
        await c2.close()
    finally:
        await r.aclose()

    # Redis restarted without persistence: everything after `since` is gone.
    c = await _client(session, h.urls[2], h.controls[2], world.alice, world.ws_a)
    await c.subscribe("task", world.task_a)
    seen = await h.controls[2].publish("task", world.task_a, {"type": "seen"})
    await c.wait_for(_is(seen["event_id"]))
    await c.close()
    await h.controls[2].publish("task", world.task_a, {"type": "lost"})
    h.redis.restart()
    c3 = await _client(session, h.urls[0], h.controls[0], world.alice, world.ws_a)
    ack = await c3.subscribe("task", world.task_a, since=seen["pos"])
    assert ack["payload"]["recovered"] is False


@pytest.mark.req("REP-3", "NODE-1")
@pytest.mark.parametrize("relay", RELAYS)
async def test_resume_while_publishing_merges_replay_and_live(relay, start_cluster, session, world):
    """Each relay under a resume storm on an auto-held scope: replay and live events merge into
    one ordered, duplicate-free sequence, repeated (the suite runs one relay)."""
    h = await start_cluster(relay)
    published: list[dict] = []
    stop = asyncio.Event()

    async def publisher():
        k = 0
        while not stop.is_set():
            published.append(await h.controls[k % 3].publish("user", world.bob, {"type": "tick", "k": k}))
            k += 1

    pub = asyncio.create_task(publisher())
    try:
        for round_ in range(12):
            first = await _client(session, h.urls[round_ % 3], h.controls[round_ % 3], world.bob, world.ws_a)
            frame = await first.wait_for(lambda f: isinstance(f, dict) and f.get("scope") == "user", timeout=5)
            await first.close()
            await asyncio.sleep(0.01 * (round_ % 4))  # let some events be missed
            second = await _client(session, h.urls[(round_ + 1) % 3], h.controls[0], world.bob, world.ws_a)
            start = len(second.frames)
            ack = await second.subscribe("user", world.bob, since=frame["pos"])
            assert ack["payload"]["recovered"] is True
            mark = len(published) + 2  # an event published after the resume was processed
            for _ in range(500):
                if len(published) > mark:
                    break
                await asyncio.sleep(0.01)
            await second.wait_for(_is(published[mark]["event_id"]), timeout=5)
            # user:bob is auto-subscribed, so live frames flowed before the resume was processed:
            # together with the replay they must be exactly the events after `frame`, each once,
            # and the frames after the ack must be in scope order (REP-3).
            ack_at = next(i for i in range(start, len(second.frames)) if second.frames[i] is ack)
            ids = [p["event_id"] for p in published]
            order = {eid: i for i, eid in enumerate(ids)}
            f0 = order[frame["event_id"]]
            # Events whose publish has not answered yet are not in `published`: leave them out.
            everything = [e for e in _ids(second, "user") if e in order]
            after_ack = [e for e in _ids(second, "user", ack_at) if e in order]
            assert all(order[e] > f0 for e in everything), f"round {round_}: an event before `since`"
            assert len(everything) == len(set(everything)), f"round {round_}: duplicate"
            assert sorted(everything, key=order.get) == ids[f0 + 1:f0 + 1 + len(everything)], f"round {round_}: gap"
            assert after_ack == sorted(after_ack, key=order.get), f"round {round_}: out of order"
            await second.close()
    finally:
        stop.set()
        await pub


@pytest.mark.req("REP-4")
@pytest.mark.parametrize("relay", RELAYS)
async def test_relay_end_is_the_scopes_newest_stored_entry(relay, redis_server, start_node, world):
    """What the hub skips up to after `recovered: false` (the lagging-reader test above)."""
    from reference import positions
    from reference.relay import RelaySettings, make_broadcaster

    broadcaster = make_broadcaster(relay, "node-1", RelaySettings(url=redis_server.url))
    node = await start_node(broadcaster=broadcaster)
    assert await broadcaster.end("task", world.task_a) is None
    published = await _publish_n(node.control, "task", world.task_a, 2)
    await node.control.publish("task", world.task_b, {"type": "elsewhere"})  # same shard or not
    assert await broadcaster.end("task", world.task_a) == positions.decode(published[-1]["pos"], "task", world.task_a)


@pytest.mark.req("REP-3")
@pytest.mark.parametrize("relay", RELAYS)
async def test_replay_of_more_than_one_page_from_redis(relay, redis_server, start_node, session, world):
    from reference import positions
    from reference.relay import RelaySettings, make_broadcaster
    from reference.relay.base import PAGE

    node = await start_node(broadcaster=make_broadcaster(relay, "node-1", RelaySettings(url=redis_server.url)))
    seen = await node.control.publish("task", world.task_a, {"type": "seen"})
    missed = await asyncio.gather(*(node.control.publish("task", world.task_a, {"n": i}) for i in range(PAGE + 20)))
    # concurrent publishes: the store's order is the scope's order
    missed.sort(key=lambda m: positions.decode(m["pos"], "task", world.task_a))
    c = await _client(session, node.base, node.control, world.alice, world.ws_a)
    assert (await c.subscribe("task", world.task_a, since=seen["pos"]))["payload"]["recovered"] is True
    await c.wait_for(_is(missed[-1]["event_id"]), timeout=10)
    assert _ids(c, "task") == [m["event_id"] for m in missed]
    await c.close()


@pytest.mark.req("REP-4")
@pytest.mark.parametrize("relay", RELAYS)
async def test_a_failover_that_lost_acknowledged_entries_never_recovers(relay, start_cluster, session, world):
    """What a promoted replica looks like, on one redis-server: the stream as it was before the
    last acknowledged entry (DUMP/RESTORE), and no epoch key (it is never replicated). A resume
    from the last entry the replica has must not claim recovery: an acknowledged entry followed it."""
    from reference.relay.base import epoch_key

    h = await start_cluster(relay, nodes=1)
    key = _key(relay, world)
    kept = [key] if relay == "streams" else [key, key + ":last"]
    r = aioredis.Redis.from_url(h.redis.url)
    try:
        seen = await _seen(session, h, world)
        replicated = {k: await r.dump(k) for k in kept}
        await h.controls[0].publish("task", world.task_a, {"type": "acknowledged, then lost"})
        for k, data in replicated.items():  # the failover: the replica never got the last entry
            await r.restore(k, 0, data, replace=True)
        await r.delete(epoch_key(key))

        async def recovered(since: str) -> bool:
            c2 = await _client(session, h.urls[0], h.controls[0], world.alice, world.ws_a)
            try:
                return (await c2.subscribe("task", world.task_a, since=since))["payload"]["recovered"]
            finally:
                await c2.close()

        assert await recovered(seen["pos"]) is False  # nothing after it here, but it was not written here
        after = await h.controls[0].publish("task", world.task_a, {"type": "after the failover"})
        assert await recovered(seen["pos"]) is False  # the chain links, across another epoch
        assert await recovered(after["pos"]) is True  # from the new epoch on, resumes recover again
    finally:
        await r.aclose()

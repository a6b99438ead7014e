"""EV-1, EV-2, DEL-1/2/3/5/6 on one node: who gets an event, what the frame looks like,
completeness, no duplicates, publisher order, unsubscribe, slow consumers."""

import asyncio
import json
import re
import uuid

import aiohttp
import pytest

from conformance.client import WsClient
from reference.broadcaster import MemoryBroadcaster
from wire_helpers import (WAIT, ack, delivered, event_ids, health, http, marker, poll, publish_and_receive,
                          with_id, world_with_alice_in_both)

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


@pytest.fixture
async def alice_in_both(node, world):
    """Fixtures where alice is a member of both A and B (for exclude_workspace)."""
    await node.control.fixtures(world_with_alice_in_both(world))
    return world


# -- EV-1: one scope per publish -----------------------------------------------------------------

@pytest.mark.req("EV-1", "DEL-1")
async def test_workspace_event_reaches_every_connection_of_the_workspace_only(node, connect, world):
    alice, alice2, bob = (await connect(world.alice, world.ws_a), await connect(world.alice, world.ws_a),
                          await connect(world.bob, world.ws_a))
    carol = await connect(world.carol, world.ws_b)
    frame = {"type": "issue:updated", "payload": {"title": "t"}}
    p = await node.control.publish("workspace", world.ws_a, frame)
    for c in (alice, alice2, bob):
        assert await c.wait_for(with_id(p["event_id"]), WAIT) == delivered(frame, p, "workspace", world.ws_a)
    await marker(node, "workspace", world.ws_b, carol)
    assert p["event_id"] not in event_ids(carol)


@pytest.mark.req("EV-1", "DEL-1")
async def test_user_event_reaches_every_connection_of_that_user_only(node, connect, alice_in_both):
    world = alice_in_both
    alice_a, alice_a2, alice_b = (await connect(world.alice, world.ws_a), await connect(world.alice, world.ws_a),
                                  await connect(world.alice, world.ws_b))
    bob = await connect(world.bob, world.ws_a)
    frame = {"type": "inbox:new", "payload": {"n": 1}}
    p = await node.control.publish("user", world.alice, frame)
    for c in (alice_a, alice_a2, alice_b):
        assert await c.wait_for(with_id(p["event_id"]), WAIT) == delivered(frame, p, "user", world.alice)
    await marker(node, "workspace", world.ws_a, bob)
    assert p["event_id"] not in event_ids(bob)


@pytest.mark.req("EV-1", "DEL-1")
@pytest.mark.parametrize("scope,attr", [("task", "task_a"), ("chat", "chat_alice")])
async def test_task_or_chat_event_reaches_subscribers_only(node, connect, world, scope, attr):
    sid = getattr(world, attr)
    alice, alice2 = await connect(world.alice, world.ws_a), await connect(world.alice, world.ws_a)
    await alice.subscribe(scope, sid)
    frame = {"type": f"{scope}:message", "payload": {"text": "hi"}}
    p = await node.control.publish(scope, sid, frame)
    assert await alice.wait_for(with_id(p["event_id"]), WAIT) == delivered(frame, p, scope, sid)
    await marker(node, "workspace", world.ws_a, alice2)
    assert p["event_id"] not in event_ids(alice2)  # same user, same workspace, not subscribed


@pytest.mark.req("EV-1", "DEL-1")
async def test_global_all_reaches_every_connection(node, connect, alice_in_both):
    world = alice_in_both
    clients = [await connect(world.alice, world.ws_a), await connect(world.bob, world.ws_a),
               await connect(world.carol, world.ws_b), await connect(world.alice, world.ws_b)]
    lonely = clients[-1]
    await lonely.unsubscribe("workspace", world.ws_b)
    await lonely.unsubscribe("user", world.alice)
    frame = {"type": "system:notice", "payload": {"msg": "maintenance"}}
    p = await node.control.publish("global", "all", frame)
    for c in clients:
        assert await c.wait_for(with_id(p["event_id"]), WAIT) == delivered(frame, p, "global", "all")


@pytest.mark.req("EV-1", "DEL-1")
async def test_exclude_workspace_skips_the_users_connections_in_that_workspace(node, connect, alice_in_both):
    world = alice_in_both
    alice_a, alice_b = await connect(world.alice, world.ws_a), await connect(world.alice, world.ws_b)
    bob = await connect(world.bob, world.ws_a)
    for excluded, skipped, reached in ((world.ws_a, alice_a, alice_b), (world.ws_b, alice_b, alice_a)):
        frame = {"type": "inbox:new", "payload": {"excluded": excluded}}
        p = await node.control.publish("user", world.alice, frame, exclude_workspace=excluded)
        assert await reached.wait_for(with_id(p["event_id"]), WAIT) == delivered(frame, p, "user", world.alice)
        await marker(node, "user", world.alice, skipped)
        assert p["event_id"] not in event_ids(skipped)
    await marker(node, "workspace", world.ws_a, bob)
    assert not [f for f in bob.events() if f["scope"] == "user"]


@pytest.mark.req("EV-1", "CTL-4")
async def test_exclude_workspace_of_no_connection_or_null_reaches_all(node, session, connect, alice_in_both):
    world = alice_in_both
    alice_a, alice_b = await connect(world.alice, world.ws_a), await connect(world.alice, world.ws_b)
    p = await node.control.publish("user", world.alice, {"type": "x"}, exclude_workspace=str(uuid.uuid4()))
    status, p2, _ = await http(session, "POST", node.base + "/_control/publish", headers=node.control.headers,
                               body={"scope": "user", "id": world.alice, "frame": {"type": "y"}, "exclude_workspace": None})
    assert status == 200
    for c in (alice_a, alice_b):
        await c.wait_for(with_id(p["event_id"]), WAIT)
        await c.wait_for(with_id(p2["event_id"]), WAIT)


# -- EV-2: the delivered frame -------------------------------------------------------------------

@pytest.mark.req("EV-2", "CTL-4")
async def test_given_event_id_is_kept_and_echoed(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    for eid in ("evt-" + uuid.uuid4().hex, "x", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "ünïcødé " + uuid.uuid4().hex):
        frame = {"type": "t", "event_id": eid, "payload": {}}
        p = await node.control.publish("workspace", world.ws_a, frame)
        assert p["event_id"] == eid
        got = await alice.wait_for(with_id(eid), WAIT)
        assert got == delivered(frame, p, "workspace", world.ws_a)


@pytest.mark.req("EV-2", "CTL-4")
async def test_missing_event_id_is_assigned_unique_ulid(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    frame = {"type": "t", "payload": {"k": "v"}}
    ids = []
    for _ in range(100):
        p = await node.control.publish("workspace", world.ws_a, frame)
        assert isinstance(p["event_id"], str) and ULID.match(p["event_id"]), p
        ids.append(p["event_id"])
    assert len(set(ids)) == len(ids)
    await alice.wait_for(with_id(ids[-1]), WAIT)
    got = alice.events()
    assert [f["event_id"] for f in got] == ids
    assert all({k: v for k, v in f.items() if k not in ("event_id", "pos")} ==
               {**frame, "scope": "workspace", "scope_id": world.ws_a} for f in got)


@pytest.mark.req("EV-2")
@pytest.mark.parametrize("scope,attr", [("workspace", "ws_a"), ("user", "alice"), ("task", "task_a"),
                                        ("chat", "chat_alice"), ("global", None)])
async def test_server_set_fields_overwrite_published_ones(node, connect, world, scope, attr):
    sid = getattr(world, attr) if attr else "all"
    alice = await connect(world.alice, world.ws_a)
    if scope in ("task", "chat"):
        await alice.subscribe(scope, sid)
    frame = {"type": "t", "scope": "chat", "scope_id": "forged", "pos": "999-0", "payload": {"scope": "kept"}}
    p = await node.control.publish(scope, sid, frame)
    got = await alice.wait_for(with_id(p["event_id"]), WAIT)
    assert got == {"type": "t", "payload": {"scope": "kept"}, "event_id": p["event_id"],
                   "scope": scope, "scope_id": sid, "pos": p["pos"]}


@pytest.mark.req("EV-2")
async def test_other_fields_pass_through_unchanged(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    frame = {
        "type": "weird:event",
        "payload": {"nested": {"list": [1, 2.5, -3, None, True, False, "s", [], {}], "empty": ""},
                    "big": 2 ** 62, "neg_float": -1.25e-7, "text": "quote\" backslash\\ newline\n tab\t"},
        "unicode": "日本語 ✓ \u2028 emoji \U0001F600",
        "null": None,
        "number": 0,
        "array": [{"a": 1}, {"b": [2]}],
        "event_ids": ["not-this-one"],
        "Scope": "capitalised keys are not server-set",
        "": "empty key",
    }
    p = await node.control.publish("workspace", world.ws_a, frame)
    got = await alice.wait_for(with_id(p["event_id"]), WAIT)
    assert got == delivered(frame, p, "workspace", world.ws_a)


@pytest.mark.req("EV-2", "CTL-4")
@pytest.mark.parametrize("bad", ["", 0, 7, None, True, [], {}, ["id"]])
async def test_invalid_event_id_is_rejected_and_nothing_is_delivered(node, session, connect, world, bad):
    alice = await connect(world.alice, world.ws_a)
    status, doc, _ = await http(session, "POST", node.base + "/_control/publish", headers=node.control.headers,
                                body={"scope": "workspace", "id": world.ws_a, "frame": {"type": "bad", "event_id": bad}})
    assert status == 400 and isinstance(doc, dict) and isinstance(doc.get("error"), str)
    await marker(node, "workspace", world.ws_a, alice)
    assert [f["type"] for f in alice.events()] == ["test:marker"]


# -- DEL-1 / DEL-2 / DEL-3: completeness, no duplicates, publisher order -------------------------

@pytest.mark.req("DEL-1", "DEL-2", "DEL-3")
async def test_500_events_arrive_complete_once_and_in_publisher_order(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    bob = await connect(world.bob, world.ws_a)
    await alice.subscribe("task", world.task_a)
    await bob.subscribe("task", world.task_a)
    await alice.subscribe("task", world.task_a)  # twice: still once per event
    ids = []
    for i in range(500):
        p = await node.control.publish("task", world.task_a, {"type": "task:message", "payload": {"seq": i}})
        ids.append(p["event_id"])
    for c in (alice, bob):
        await c.wait_for(with_id(ids[-1]), WAIT)
        got = [f for f in c.events() if f["scope"] == "task"]
        assert [f["event_id"] for f in got] == ids
        assert [f["payload"]["seq"] for f in got] == list(range(500))
    await marker(node, "workspace", world.ws_a, alice, bob)  # nothing extra trails behind
    assert [f["event_id"] for f in alice.events() if f["scope"] == "task"] == ids


@pytest.mark.req("DEL-1", "DEL-3")
async def test_publisher_order_holds_per_scope_while_scopes_interleave(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    await alice.subscribe("task", world.task_a)
    await alice.subscribe("chat", world.chat_alice)
    targets = [("workspace", world.ws_a), ("user", world.alice), ("task", world.task_a), ("chat", world.chat_alice),
               ("global", "all")]
    sent: dict[tuple, list] = {t: [] for t in targets}
    for i in range(60):
        for t in targets:
            sent[t].append((await node.control.publish(*t, {"type": "t", "payload": {"i": i}}))["event_id"])
    last = await marker(node, "workspace", world.ws_a, alice)
    sent[("workspace", world.ws_a)].append(last["event_id"])
    for t in targets:
        assert [f["event_id"] for f in alice.events() if (f["scope"], f["scope_id"]) == t] == sent[t]


@pytest.mark.req("DEL-1", "SUB-2")
async def test_events_published_right_after_the_ack_arrive(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    for scope, sid in (("task", world.task_a), ("chat", world.chat_alice), ("task", world.chat_task_alice)):
        assert await alice.subscribe(scope, sid) == ack("subscribe", scope, sid)
        await publish_and_receive(node, alice, scope, sid)


@pytest.mark.req("DEL-2", "SUB-5")
async def test_subscribe_again_while_events_flow_creates_no_duplicates(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    await alice.subscribe("task", world.task_a)

    async def publisher():
        out = []
        for i in range(200):
            out.append((await node.control.publish("task", world.task_a, {"type": "t", "payload": {"i": i}}))["event_id"])
        return out

    pub = asyncio.create_task(publisher())
    for _ in range(20):
        assert await alice.subscribe("task", world.task_a) == ack("subscribe", "task", world.task_a)
        assert await alice.subscribe("workspace", world.ws_a) == ack("subscribe", "workspace", world.ws_a)
    ids = await asyncio.wait_for(pub, 30)
    await marker(node, "workspace", world.ws_a, alice)
    assert [f["event_id"] for f in alice.events() if f["scope"] == "task"] == ids


# -- DEL-5: nothing after unsubscribe_ack --------------------------------------------------------

@pytest.mark.req("DEL-5", "SUB-4")
async def test_no_event_after_unsubscribe_ack(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    await alice.subscribe("chat", world.chat_alice)
    await publish_and_receive(node, alice, "chat", world.chat_alice)
    assert await alice.unsubscribe("chat", world.chat_alice) == ack("unsubscribe", "chat", world.chat_alice)
    after = [(await node.control.publish("chat", world.chat_alice, {"type": "t", "payload": {"i": i}}))["event_id"]
             for i in range(20)]
    await marker(node, "user", world.alice, alice)
    assert not set(after) & set(event_ids(alice))


@pytest.mark.req("DEL-5", "DEL-1", "DEL-3")
async def test_unsubscribe_while_publishing_cuts_cleanly(node, connect, world):
    """Events whose publish was acknowledged before the unsubscribe was sent all arrive, in order;
    none whose publish started after the unsubscribe_ack arrived does."""
    loop = asyncio.get_running_loop()
    alice = await connect(world.alice, world.ws_a)
    await alice.subscribe("task", world.task_a)
    log: list[tuple[float, float, str]] = []  # (started, acknowledged, event_id)
    stop = asyncio.Event()

    async def publisher():
        i = 0
        while not stop.is_set() and i < 2000:
            started = loop.time()
            p = await node.control.publish("task", world.task_a, {"type": "t", "payload": {"i": i}})
            log.append((started, loop.time(), p["event_id"]))
            i += 1

    pub = asyncio.create_task(publisher())
    await poll(lambda: len(log) >= 50)
    sent_at = loop.time()
    await alice.unsubscribe("task", world.task_a)
    acked_at = loop.time()  # no earlier than the ack's arrival
    await poll(lambda: sum(1 for s, _, _ in log if s > acked_at) >= 50)
    stop.set()
    await asyncio.wait_for(pub, WAIT)
    await marker(node, "workspace", world.ws_a, alice)
    got = [f["event_id"] for f in alice.events() if f["scope"] == "task"]
    before = [e for _, done, e in log if done < sent_at]
    after = {e for s, _, e in log if s > acked_at}
    assert got[:len(before)] == before
    assert not after & set(got)
    assert got == [e for _, _, e in log][:len(got)]


# -- DEL-6: slow consumers -----------------------------------------------------------------------

@pytest.mark.req("DEL-6", "DEL-1", "DEL-3", "HL-1", "HL-3")
async def test_slow_consumer_is_evicted_with_a_gap_free_prefix_while_readers_get_everything(start_node, session, world):
    loop = asyncio.get_running_loop()
    node = await start_node(send_queue=8)
    token = await node.control.token(world.alice)
    reader = await WsClient.connect(session, node.base, workspace_id=world.ws_a, token=token)
    # The slow consumer: a plain aiohttp socket whose messages nobody receives after the ack.
    slow = await session.ws_connect(node.base + "/ws", params={"workspace_id": world.ws_a}, max_msg_size=0,
                                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
    try:
        await _slow_consumer_case(loop, node, session, world, token, reader, slow)
    finally:
        await reader.close()
        await slow.close()


async def _slow_consumer_case(loop, node, session, world, token, reader, slow):
    assert await reader.subscribe("task", world.task_a) == ack("subscribe", "task", world.task_a)
    await slow.send_json({"type": "auth", "payload": {"token": token}})
    assert await slow.receive_json(timeout=WAIT) == {"type": "auth_ack"}
    await slow.send_json({"type": "subscribe", "payload": {"scope": "task", "id": world.task_a}})
    assert await slow.receive_json(timeout=WAIT) == ack("subscribe", "task", world.task_a)
    before = await health(session, node)
    assert before["active_connections"] == 2

    blob = "x" * 256 * 1024
    published: list[str] = []
    started = loop.time()
    evicted = None
    while loop.time() - started < 10 and len(published) < 400:
        p = await node.control.publish("task", world.task_a, {"type": "test:big",
                                                               "payload": {"seq": len(published), "blob": blob}})
        published.append(p["event_id"])
        h = await health(session, node)
        if h["slow_evictions_total"] > before["slow_evictions_total"]:
            evicted = h
            break
    assert evicted is not None, f"slow consumer still open {loop.time() - started:.1f} s after {len(published)} events"
    assert evicted["slow_evictions_total"] == before["slow_evictions_total"] + 1
    assert evicted["messages_dropped_total"] > before["messages_dropped_total"]

    # What the slow consumer got before the server closed it: a gap-free prefix, then the close.
    seqs = []
    while True:
        msg = await slow.receive(timeout=WAIT)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(msg.data)
        assert frame["type"] == "test:big"
        seqs.append(frame["payload"]["seq"])
    assert seqs == list(range(len(seqs)))
    assert len(seqs) < len(published)
    assert slow.closed

    # The reading client got everything, in order, and stays open.
    await reader.wait_for(with_id(published[-1]), WAIT)
    assert [f["payload"]["seq"] for f in reader.events()] == list(range(len(published)))
    assert event_ids(reader) == published
    await publish_and_receive(node, reader, "task", world.task_a)
    assert not reader.closed

    async def one_left():
        return (await health(session, node))["active_connections"] == 1

    await poll(one_left)


# -- global events and connections still authenticating ------------------------------------------

class _SlowOpen(MemoryBroadcaster):
    """A memory relay whose first-subscriber callback takes a while, like a store round trip."""

    def __init__(self, node_id: str = "node-1") -> None:
        super().__init__(node_id)
        self.opening = asyncio.Event()
        self.release = asyncio.Event()

    async def on_first_subscriber(self, scope_type, scope_id):
        self.opening.set()
        await asyncio.wait_for(self.release.wait(), WAIT)


@pytest.mark.req("EV-1", "HS-3", "HS-6")
async def test_global_event_during_authentication_does_not_precede_auth_ack(start_node, session, world):
    relay = _SlowOpen()
    node = await start_node(broadcaster=relay)
    token = await node.control.token(world.alice)
    c = await WsClient.connect(session, node.base, workspace_id=world.ws_a, auth=False)
    try:
        await c.send({"type": "auth", "payload": {"token": token}})
        await asyncio.wait_for(relay.opening.wait(), WAIT)  # the node is opening alice's auto scopes
        early = await node.control.publish("global", "all", {"type": "system:early"})
        relay.release.set()
        await c.wait_for(lambda f: f == {"type": "auth_ack"}, WAIT)
        later = await node.control.publish("global", "all", {"type": "system:later"})
        await c.wait_for(with_id(later["event_id"]), WAIT)
        assert c.frames[0] == {"type": "auth_ack"}  # the connection is not live before its ack
        assert event_ids(c).count(early["event_id"]) <= 1
    finally:
        await c.close()

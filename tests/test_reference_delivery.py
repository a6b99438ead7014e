"""EV and DEL on the reference: what only the reference chooses where the contract leaves room,
and what the suite (conformance/cases/delivery.py, which checks every EV and DEL behaviour the
contract requires) cannot set up. Each test says which it is."""

import asyncio
import json
import re

import aiohttp
import pytest

from conformance.client import WsClient
from reference.broadcaster import MemoryBroadcaster
from wire_helpers import WAIT, ack, event_ids, health, marker, poll, publish_and_receive, with_id

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


@pytest.mark.req("EV-2")
async def test_assigned_event_ids_are_ulids(node, connect, world):
    """EV-2 asks for a unique string; the reference assigns a ULID, as Multica does."""
    alice = await connect(world.alice, world.ws_a)
    ids = [(await node.control.publish("workspace", world.ws_a, {"type": "t"}))["event_id"] for _ in range(100)]
    assert all(ULID.match(i) for i in ids) and len(set(ids)) == len(ids)
    await alice.wait_for(with_id(ids[-1]), WAIT)


@pytest.mark.req("EV-2")
async def test_integers_beyond_2_53_pass_through_exactly(node, connect, world):
    """The suite stays within 2**53 (a JSON number a JavaScript or float64 decoder keeps); the
    reference passes any integer through exactly."""
    alice = await connect(world.alice, world.ws_a)
    frame = {"type": "t", "payload": {"big": 2 ** 62, "neg": -(2 ** 63)}}
    await publish_and_receive(node, alice, "workspace", world.ws_a, frame)



@pytest.mark.req("DEL-5", "DEL-1", "DEL-3")
async def test_unsubscribe_while_publishing_delivers_everything_acknowledged_before_it(node, connect, world):
    """The contract lets an unsubscribe overtake events acknowledged just before it was sent (a
    holding period ends at the unsubscribe); the reference still delivers every one of them, in
    order, and none whose publish started after the unsubscribe_ack."""
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
    acked_at = loop.time()
    await poll(lambda: sum(1 for s, _, _ in log if s > acked_at) >= 50)
    stop.set()
    await asyncio.wait_for(pub, WAIT)
    await marker(node, "workspace", world.ws_a, alice)
    got = [f["event_id"] for f in alice.events() if f["scope"] == "task"]
    before = [e for _, done, e in log if done < sent_at]
    assert got[:len(before)] == before
    assert not {e for s, _, e in log if s > acked_at} & set(got)
    assert got == [e for _, _, e in log][:len(got)]


@pytest.mark.req("DEL-6", "DEL-1", "DEL-3", "HL-1", "HL-3")
async def test_slow_consumer_is_evicted_with_a_gap_free_prefix_while_readers_get_everything(start_node, session, world):
    """DEL-6 allows buffering everything or closing; the reference closes (evicts) at the
    overflow, counts it in slow_evictions_total and messages_dropped_total, and what the slow
    consumer got before the close is a gap-free prefix."""
    loop = asyncio.get_running_loop()
    node = await start_node(send_queue=8)
    token = await node.control.token(world.alice)
    reader = await WsClient.connect(session, node.base, workspace_id=world.ws_a, token=token)
    # The slow consumer: a plain aiohttp socket whose messages nobody receives after the ack.
    slow = await session.ws_connect(node.base + "/ws", params={"workspace_id": world.ws_a}, max_msg_size=0,
                                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
    try:
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
        assert evicted is not None, f"still open {loop.time() - started:.1f} s after {len(published)} events"
        assert evicted["slow_evictions_total"] == before["slow_evictions_total"] + 1
        assert evicted["messages_dropped_total"] > before["messages_dropped_total"]

        seqs = []
        while True:
            msg = await slow.receive(timeout=WAIT)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            seqs.append(json.loads(msg.data)["payload"]["seq"])
        assert seqs == list(range(len(seqs))) and len(seqs) < len(published)
        # the eviction says so: a close frame after what the socket already held (try again later)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1013 and msg.extra == "slow consumer", msg
        assert slow.closed

        await reader.wait_for(with_id(published[-1]), WAIT)
        assert event_ids(reader) == published
        await publish_and_receive(node, reader, "task", world.task_a)

        async def one_left():
            return (await health(session, node))["active_connections"] == 1

        await poll(one_left)
    finally:
        await reader.close()
        await slow.close()


class _SlowOpen(MemoryBroadcaster):
    """A memory relay whose first-subscriber callback takes a while, like a store round trip."""

    def __init__(self, node_id: str = "node-1") -> None:
        super().__init__(node_id)
        self.opening = asyncio.Event()
        self.release = asyncio.Event()

    async def on_first_subscriber(self, scope_type, scope_id):
        self.opening.set()
        await asyncio.wait_for(self.release.wait(), WAIT)


@pytest.mark.req("HS-6", "DEL-2")
async def test_global_event_during_authentication_does_not_precede_auth_ack(start_node, session, world):
    """HS-6 lets global events arrive before auth_ack; the reference makes a connection live only
    with its ack, and a global event published while it opens its scopes arrives at most once."""
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
        assert c.frames[0] == {"type": "auth_ack"}
        assert event_ids(c).count(early["event_id"]) <= 1
    finally:
        await c.close()


@pytest.mark.req("DEL-6", "DEL-1")
async def test_a_burst_in_one_loop_turn_reaches_a_reader_that_keeps_up(start_node, connect, world):
    """A relay read batch (or a backlog after a store stall) hands the hub many events in one
    event-loop turn: a reader whose socket takes them is not a slow consumer, however many there
    are (the send queue is what the peer does not drain, not what one turn queued)."""
    node = await start_node(send_queue=8)
    alice = await connect(world.alice, world.ws_a, on=node)
    assert await alice.subscribe("task", world.task_a) == ack("subscribe", "task", world.task_a)
    published = []
    for i in range(300):  # the memory relay delivers inside publish: no await here suspends
        event_id, _ = await node.state.broadcaster.publish("task", world.task_a, {"type": "test:burst",
                                                                                  "payload": {"i": i}})
        published.append(event_id)
    await alice.wait_for(with_id(published[-1]), WAIT)
    assert event_ids(alice) == published
    assert node.state.metrics.slow_evictions == 0

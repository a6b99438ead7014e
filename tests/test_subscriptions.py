"""SUB-1..5: subscribe / unsubscribe answers and what they change, over real sockets."""

import uuid

import pytest

from wire_helpers import WAIT, ack, event_ids, marker, poll, publish_and_receive, sub_error, with_id


# -- SUB-1: workspace and user scopes ------------------------------------------------------------

@pytest.mark.req("SUB-1")
async def test_subscribe_own_workspace_and_user_is_acked_every_time(connect, world):
    alice = await connect(world.alice, world.ws_a)
    for _ in range(2):  # idempotent: already auto-subscribed, and asked twice
        assert await alice.subscribe("workspace", world.ws_a) == ack("subscribe", "workspace", world.ws_a)
        assert await alice.subscribe("user", world.alice) == ack("subscribe", "user", world.alice)


@pytest.mark.req("SUB-1")
@pytest.mark.parametrize("scope,which", [
    ("workspace", "ws_b"),            # another existing workspace
    ("workspace", "random"),          # a workspace nobody knows
    ("workspace", "upper_own"),       # own workspace id, spelled differently
    ("user", "bob"),                  # a member of the same workspace
    ("user", "carol"),                # a user of another workspace
    ("user", "random"),
])
async def test_subscribe_other_workspace_or_user_is_forbidden(connect, world, scope, which):
    alice = await connect(world.alice, world.ws_a)
    other = {"random": str(uuid.uuid4()), "upper_own": world.ws_a.upper()}.get(which) or getattr(world, which)
    assert await alice.subscribe(scope, other) == sub_error(scope, other, "forbidden")
    # The connection stays usable.
    assert await alice.subscribe("workspace", world.ws_a) == ack("subscribe", "workspace", world.ws_a)


@pytest.mark.req("SUB-1", "AZ-4")
async def test_forbidden_workspace_subscribe_delivers_nothing_of_that_workspace(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    carol = await connect(world.carol, world.ws_b)
    assert await alice.subscribe("workspace", world.ws_b) == sub_error("workspace", world.ws_b, "forbidden")
    assert await alice.subscribe("user", world.carol) == sub_error("user", world.carol, "forbidden")
    ws_b_event = await publish_and_receive(node, carol, "workspace", world.ws_b)
    carol_event = await publish_and_receive(node, carol, "user", world.carol)
    await marker(node, "workspace", world.ws_a, alice)
    assert ws_b_event["event_id"] not in event_ids(alice)
    assert carol_event["event_id"] not in event_ids(alice)


# -- SUB-2: task and chat go through the authorizer ---------------------------------------------

@pytest.mark.req("SUB-2")
@pytest.mark.parametrize("scope,attr", [("task", "task_a"), ("task", "chat_task_alice"), ("chat", "chat_alice")])
async def test_subscribe_authorized_task_or_chat_answers_exact_ack(connect, world, scope, attr):
    alice = await connect(world.alice, world.ws_a)
    sid = getattr(world, attr)
    assert await alice.subscribe(scope, sid) == {"type": "subscribe_ack", "payload": {"scope": scope, "id": sid}}


@pytest.mark.req("SUB-2")
@pytest.mark.parametrize("scope,attr", [("task", "task_b"), ("task", "orphan_task"), ("chat", "chat_bob")])
async def test_subscribe_denied_task_or_chat_answers_forbidden(connect, world, scope, attr):
    alice = await connect(world.alice, world.ws_a)
    sid = getattr(world, attr)
    assert await alice.subscribe(scope, sid) == {
        "type": "subscribe_error", "payload": {"scope": scope, "id": sid, "error": "forbidden"}}


@pytest.mark.req("SUB-2", "CTL-5")
@pytest.mark.parametrize("scope,attr", [("task", "task_a"), ("chat", "chat_alice")])
async def test_subscribe_during_authorizer_failure_answers_lookup_failed(node, connect, world, scope, attr):
    alice = await connect(world.alice, world.ws_a)
    sid = getattr(world, attr)
    await node.control.faults("error")
    assert await alice.subscribe(scope, sid) == sub_error(scope, sid, "lookup_failed")
    await node.control.faults("ok")
    assert await alice.subscribe(scope, sid) == ack("subscribe", scope, sid)


# -- SUB-3: any other scope ----------------------------------------------------------------------

@pytest.mark.req("SUB-3")
@pytest.mark.parametrize("scope,sid", [
    ("global", "all"),
    ("daemon_runtime", str(uuid.uuid4())),
    ("issue", str(uuid.uuid4())),
    ("Task", str(uuid.uuid4())),       # scope names are case-sensitive
    ("WORKSPACE", "x"),
    ("workspaces", "x"),
    ("nonsense", "all"),
])
async def test_subscribe_unknown_scope_answers_unknown_scope(connect, world, scope, sid):
    alice = await connect(world.alice, world.ws_a)
    assert await alice.subscribe(scope, sid) == sub_error(scope, sid, "unknown_scope")


@pytest.mark.req("SUB-3")
async def test_unknown_scope_subscribe_receives_no_events_of_it(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    assert await alice.subscribe("global", "all") == sub_error("global", "all", "unknown_scope")
    # Even a later global event is delivered exactly once (it goes to everyone anyway).
    published = await node.control.publish("global", "all", {"type": "test:global"})
    await alice.wait_for(with_id(published["event_id"]), WAIT)
    await marker(node, "workspace", world.ws_a, alice)
    assert event_ids(alice).count(published["event_id"]) == 1


# -- SUB-4: unsubscribe --------------------------------------------------------------------------

@pytest.mark.req("SUB-4")
@pytest.mark.parametrize("scope,which", [
    ("task", "task_a"),          # allowed but never subscribed
    ("task", "task_b"),          # never allowed
    ("chat", "chat_bob"),
    ("workspace", "ws_b"),
    ("user", "bob"),
    ("nonsense", "x"),
    ("global", "all"),
])
async def test_unsubscribe_not_held_scope_is_acked(connect, world, scope, which):
    alice = await connect(world.alice, world.ws_a)
    sid = getattr(world, which, which)
    assert await alice.unsubscribe(scope, sid) == {"type": "unsubscribe_ack", "payload": {"scope": scope, "id": sid}}


@pytest.mark.req("SUB-4", "DEL-5")
async def test_unsubscribe_held_task_is_acked_and_stops_its_events(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    assert await alice.subscribe("task", world.task_a) == ack("subscribe", "task", world.task_a)
    await publish_and_receive(node, alice, "task", world.task_a)
    assert await alice.unsubscribe("task", world.task_a) == ack("unsubscribe", "task", world.task_a)
    assert await alice.unsubscribe("task", world.task_a) == ack("unsubscribe", "task", world.task_a)
    after = await node.control.publish("task", world.task_a, {"type": "test:after"})
    await marker(node, "workspace", world.ws_a, alice)
    assert after["event_id"] not in event_ids(alice)


@pytest.mark.req("SUB-4", "SUB-1", "DEL-5")
async def test_unsubscribe_auto_workspace_scope_works_and_resubscribe_restores_it(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    assert await alice.unsubscribe("workspace", world.ws_a) == ack("unsubscribe", "workspace", world.ws_a)
    gone = await node.control.publish("workspace", world.ws_a, {"type": "test:gone"})
    await marker(node, "user", world.alice, alice)
    assert gone["event_id"] not in event_ids(alice)
    assert await alice.subscribe("workspace", world.ws_a) == ack("subscribe", "workspace", world.ws_a)
    await publish_and_receive(node, alice, "workspace", world.ws_a)


@pytest.mark.req("SUB-4", "SUB-1", "DEL-5")
async def test_unsubscribe_auto_user_scope_works_and_resubscribe_restores_it(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    assert await alice.unsubscribe("user", world.alice) == ack("unsubscribe", "user", world.alice)
    gone = await node.control.publish("user", world.alice, {"type": "test:gone"})
    await marker(node, "workspace", world.ws_a, alice)
    assert gone["event_id"] not in event_ids(alice)
    assert await alice.subscribe("user", world.alice) == ack("subscribe", "user", world.alice)
    await publish_and_receive(node, alice, "user", world.alice)


@pytest.mark.req("SUB-4", "EV-1")
async def test_unsubscribe_global_is_acked_and_changes_nothing(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    assert await alice.unsubscribe("global", "all") == ack("unsubscribe", "global", "all")
    await publish_and_receive(node, alice, "global", "all")
    # Even with every other scope left, global still arrives.
    await alice.unsubscribe("workspace", world.ws_a)
    await alice.unsubscribe("user", world.alice)
    await publish_and_receive(node, alice, "global", "all")


@pytest.mark.req("SUB-4")
async def test_unsubscribe_of_one_scope_keeps_the_others(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    await alice.subscribe("task", world.task_a)
    await alice.subscribe("chat", world.chat_alice)
    await alice.unsubscribe("task", world.task_a)
    await publish_and_receive(node, alice, "chat", world.chat_alice)
    await publish_and_receive(node, alice, "workspace", world.ws_a)
    await publish_and_receive(node, alice, "user", world.alice)


# -- SUB-5: twice delivers once; close drops everything ----------------------------------------

@pytest.mark.req("SUB-5", "DEL-2")
@pytest.mark.parametrize("scope,attr", [("task", "task_a"), ("chat", "chat_alice"),
                                        ("workspace", "ws_a"), ("user", "alice")])
async def test_subscribing_twice_delivers_each_event_once(node, connect, world, scope, attr):
    alice = await connect(world.alice, world.ws_a)
    sid = getattr(world, attr)
    assert await alice.subscribe(scope, sid) == ack("subscribe", scope, sid)
    assert await alice.subscribe(scope, sid) == ack("subscribe", scope, sid)
    ids = [(await publish_and_receive(node, alice, scope, sid))["event_id"] for _ in range(3)]
    # Marker on a scope other than the one under test, so a late duplicate would precede it.
    other = ("user", world.alice) if scope != "user" else ("workspace", world.ws_a)
    await marker(node, *other, alice)
    got = event_ids(alice)
    assert [got.count(i) for i in ids] == [1, 1, 1]


@pytest.mark.req("SUB-5", "DEL-2")
async def test_one_unsubscribe_after_two_subscribes_leaves_the_scope(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    await alice.subscribe("task", world.task_a)
    await alice.subscribe("task", world.task_a)
    assert await alice.unsubscribe("task", world.task_a) == ack("unsubscribe", "task", world.task_a)
    gone = await node.control.publish("task", world.task_a, {"type": "test:gone"})
    await marker(node, "workspace", world.ws_a, alice)
    assert gone["event_id"] not in event_ids(alice)


@pytest.mark.req("SUB-5")
async def test_closing_a_connection_drops_its_subscriptions(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    watcher = await connect(world.bob, world.ws_a)
    await alice.subscribe("task", world.task_a)
    await alice.subscribe("chat", world.chat_alice)
    await watcher.subscribe("task", world.task_a)
    await alice.close()
    hub = node.state.hub

    async def dropped():
        return not any(s for s, conns in hub.scopes.items() if any(c.user_id == world.alice for c in conns))

    await poll(dropped)
    assert ("chat", world.chat_alice) not in hub.scopes
    assert ("user", world.alice) not in hub.scopes
    # The scope still works for the connection that holds it.
    await publish_and_receive(node, watcher, "task", world.task_a)
    # A new connection of the same user does not inherit the old one's subscriptions.
    again = await connect(world.alice, world.ws_a)
    task_event = await node.control.publish("task", world.task_a, {"type": "test:task"})
    chat_event = await node.control.publish("chat", world.chat_alice, {"type": "test:chat"})
    await marker(node, "workspace", world.ws_a, again)
    assert task_event["event_id"] not in event_ids(again)
    assert chat_event["event_id"] not in event_ids(again)

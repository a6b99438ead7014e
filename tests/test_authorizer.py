"""AZ-1..4: who may subscribe to which task and chat, and that nothing else ever arrives.

TestWorld: alice and bob are members of A, carol of B. task_a / task_b are issue tasks in A / B,
chat_task_alice is a task of alice's chat in A, chat_bob is bob's chat in A, orphan_task has
neither an issue nor a chat. Some tests load a world where alice is a member of B as well."""

import uuid

import pytest

from wire_helpers import ack, event_ids, marker, publish_and_receive, sub_error, world_with_alice_in_both


@pytest.fixture
async def alice_in_both(node, world):
    """Fixtures where alice is a member of both A and B."""
    await node.control.fixtures(world_with_alice_in_both(world))
    return world


# -- AZ-1: task scopes ---------------------------------------------------------------------------

@pytest.mark.req("AZ-1", "SUB-2")
@pytest.mark.parametrize("user,ws,task", [
    ("alice", "ws_a", "task_a"),
    ("bob", "ws_a", "task_a"),      # any member of the issue's workspace
    ("carol", "ws_b", "task_b"),
])
async def test_issue_task_in_own_workspace_is_allowed(connect, world, user, ws, task):
    c = await connect(getattr(world, user), getattr(world, ws))
    tid = getattr(world, task)
    assert await c.subscribe("task", tid) == ack("subscribe", "task", tid)


@pytest.mark.req("AZ-1", "SUB-2")
@pytest.mark.parametrize("user,ws,task", [
    ("alice", "ws_a", "task_b"),
    ("carol", "ws_b", "task_a"),
])
async def test_issue_task_of_another_workspace_is_forbidden(connect, world, user, ws, task):
    c = await connect(getattr(world, user), getattr(world, ws))
    tid = getattr(world, task)
    assert await c.subscribe("task", tid) == sub_error("task", tid, "forbidden")


@pytest.mark.req("AZ-1")
async def test_issue_task_is_judged_by_the_connections_workspace_not_the_users_memberships(node, connect, alice_in_both):
    world = alice_in_both
    in_b = await connect(world.alice, world.ws_b)
    assert await in_b.subscribe("task", world.task_a) == sub_error("task", world.task_a, "forbidden")
    assert await in_b.subscribe("task", world.task_b) == ack("subscribe", "task", world.task_b)


@pytest.mark.req("AZ-1")
async def test_chat_task_is_allowed_for_the_chat_creator_only(connect, world):
    alice = await connect(world.alice, world.ws_a)
    bob = await connect(world.bob, world.ws_a)
    carol = await connect(world.carol, world.ws_b)
    t = world.chat_task_alice
    assert await alice.subscribe("task", t) == ack("subscribe", "task", t)
    assert await bob.subscribe("task", t) == sub_error("task", t, "forbidden")
    assert await carol.subscribe("task", t) == sub_error("task", t, "forbidden")


@pytest.mark.req("AZ-1")
async def test_chat_task_is_forbidden_to_its_creator_connected_to_another_workspace(connect, alice_in_both):
    world = alice_in_both
    in_b = await connect(world.alice, world.ws_b)
    t = world.chat_task_alice
    assert await in_b.subscribe("task", t) == sub_error("task", t, "forbidden")


@pytest.mark.req("AZ-1")
async def test_orphan_and_unknown_tasks_are_forbidden(connect, world):
    alice = await connect(world.alice, world.ws_a)
    for tid in (world.orphan_task, str(uuid.uuid4()), world.issue_a, world.chat_alice):
        # an issue id or a chat id is not a task id
        assert await alice.subscribe("task", tid) == sub_error("task", tid, "forbidden")


@pytest.mark.req("AZ-1")
async def test_task_whose_issue_or_chat_is_missing_is_forbidden(node, connect, world):
    fx = world.fixtures()
    dangling_issue_task, dangling_chat_task = str(uuid.uuid4()), str(uuid.uuid4())
    fx["tasks"][dangling_issue_task] = {"issue": str(uuid.uuid4())}
    fx["tasks"][dangling_chat_task] = {"chat": str(uuid.uuid4())}
    await node.control.fixtures(fx)
    alice = await connect(world.alice, world.ws_a)
    for tid in (dangling_issue_task, dangling_chat_task):
        assert await alice.subscribe("task", tid) == sub_error("task", tid, "forbidden")


@pytest.mark.req("AZ-1", "AZ-2")
async def test_task_and_chat_ids_compare_as_uuids(connect, world):
    """Like the database lookup in Multica: the id is parsed, so case does not matter."""
    alice = await connect(world.alice, world.ws_a)
    for scope, sid in (("task", world.task_a.upper()), ("chat", world.chat_alice.upper())):
        assert await alice.subscribe(scope, sid) == ack("subscribe", scope, sid)


# -- AZ-2: chat scopes ---------------------------------------------------------------------------

@pytest.mark.req("AZ-2", "SUB-2")
async def test_chat_is_allowed_for_its_creator_in_its_workspace(connect, world):
    alice = await connect(world.alice, world.ws_a)
    bob = await connect(world.bob, world.ws_a)
    assert await alice.subscribe("chat", world.chat_alice) == ack("subscribe", "chat", world.chat_alice)
    assert await bob.subscribe("chat", world.chat_bob) == ack("subscribe", "chat", world.chat_bob)


@pytest.mark.req("AZ-2", "SUB-2")
async def test_chat_of_another_user_in_the_same_workspace_is_forbidden(connect, world):
    alice = await connect(world.alice, world.ws_a)
    bob = await connect(world.bob, world.ws_a)
    assert await alice.subscribe("chat", world.chat_bob) == sub_error("chat", world.chat_bob, "forbidden")
    assert await bob.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "forbidden")


@pytest.mark.req("AZ-2")
async def test_chat_is_forbidden_to_its_creator_connected_to_another_workspace(connect, alice_in_both):
    world = alice_in_both
    in_b = await connect(world.alice, world.ws_b)
    assert await in_b.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "forbidden")


@pytest.mark.req("AZ-2")
async def test_chat_of_another_workspace_is_forbidden(connect, world):
    carol = await connect(world.carol, world.ws_b)
    assert await carol.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "forbidden")


@pytest.mark.req("AZ-2")
async def test_unknown_chat_and_non_chat_ids_are_forbidden(connect, world):
    alice = await connect(world.alice, world.ws_a)
    for cid in (str(uuid.uuid4()), world.chat_task_alice, world.task_a, world.ws_a, world.alice):
        assert await alice.subscribe("chat", cid) == sub_error("chat", cid, "forbidden")


# -- AZ-3: ids that are not UUIDs ----------------------------------------------------------------

NOT_UUIDS = ["not-a-uuid", "123", "all", "00000000-0000-0000-0000-00000000000g", " ", "x" * 200]


@pytest.mark.req("AZ-3", "SUB-2")
@pytest.mark.parametrize("scope", ["task", "chat"])
@pytest.mark.parametrize("sid", NOT_UUIDS)
async def test_non_uuid_id_is_forbidden(connect, world, scope, sid):
    alice = await connect(world.alice, world.ws_a)
    assert await alice.subscribe(scope, sid) == sub_error(scope, sid, "forbidden")


@pytest.mark.req("AZ-3", "CTL-5")
@pytest.mark.parametrize("scope", ["task", "chat"])
async def test_non_uuid_id_is_forbidden_without_lookup_even_while_lookups_fail(node, connect, world, scope):
    alice = await connect(world.alice, world.ws_a)
    await node.control.faults("error")
    for sid in NOT_UUIDS + [world.task_a + "x", world.chat_alice[:-1]]:
        assert await alice.subscribe(scope, sid) == sub_error(scope, sid, "forbidden")
    # while a UUID in the same state does reach the (failing) lookup
    real = world.task_a if scope == "task" else world.chat_alice
    assert await alice.subscribe(scope, real) == sub_error(scope, real, "lookup_failed")


@pytest.mark.req("AZ-3", "CTL-5")
async def test_connection_to_non_uuid_workspace_gets_forbidden_without_lookup(node, connect, world):
    fx = world.fixtures()
    fx["workspaces"]["plain-workspace"] = {"slug": "plain-" + uuid.uuid4().hex[:8], "members": [world.alice]}
    await node.control.fixtures(fx)
    alice = await connect(world.alice, "plain-workspace")
    await node.control.faults("error")
    assert await alice.subscribe("task", world.task_a) == sub_error("task", world.task_a, "forbidden")
    assert await alice.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "forbidden")


# -- lookup_failed vs forbidden (CTL-5) ----------------------------------------------------------

@pytest.mark.req("SUB-2", "CTL-5", "AZ-1", "AZ-2")
async def test_lookup_failed_while_fault_is_on_and_normal_decisions_after(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    cases = [("task", world.task_a, "ok"), ("task", world.chat_task_alice, "ok"), ("task", world.task_b, "forbidden"),
             ("task", world.orphan_task, "forbidden"), ("task", str(uuid.uuid4()), "forbidden"),
             ("chat", world.chat_alice, "ok"), ("chat", world.chat_bob, "forbidden"),
             ("chat", str(uuid.uuid4()), "forbidden")]
    await node.control.faults("error")
    for scope, sid, _ in cases:
        # Every lookup fails, so even a resource that does not exist is not a plain denial.
        assert await alice.subscribe(scope, sid) == sub_error(scope, sid, "lookup_failed")
    # Workspace and user scopes are not looked up.
    assert await alice.subscribe("workspace", world.ws_a) == ack("subscribe", "workspace", world.ws_a)
    assert await alice.subscribe("user", world.alice) == ack("subscribe", "user", world.alice)
    await node.control.faults("ok")
    for scope, sid, want in cases:
        expected = ack("subscribe", scope, sid) if want == "ok" else sub_error(scope, sid, want)
        assert await alice.subscribe(scope, sid) == expected


@pytest.mark.req("AZ-4", "CTL-5")
async def test_lookup_failed_subscription_receives_nothing(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    await node.control.faults("error")
    assert await alice.subscribe("task", world.task_a) == sub_error("task", world.task_a, "lookup_failed")
    await node.control.faults("ok")
    leaked = await node.control.publish("task", world.task_a, {"type": "test:leak"})
    await marker(node, "workspace", world.ws_a, alice)
    assert leaked["event_id"] not in event_ids(alice)


# -- AZ-4: no leak -------------------------------------------------------------------------------

@pytest.mark.req("AZ-4", "EV-1")
async def test_no_events_of_another_workspace(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    carol = await connect(world.carol, world.ws_b)
    ev_a = await publish_and_receive(node, alice, "workspace", world.ws_a)
    ev_b = await publish_and_receive(node, carol, "workspace", world.ws_b)
    await marker(node, "workspace", world.ws_a, alice)
    await marker(node, "workspace", world.ws_b, carol)
    assert ev_b["event_id"] not in event_ids(alice)
    assert ev_a["event_id"] not in event_ids(carol)


@pytest.mark.req("AZ-4", "EV-1")
async def test_no_user_scope_events_of_another_user(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    bob = await connect(world.bob, world.ws_a)
    carol = await connect(world.carol, world.ws_b)
    for_alice = await publish_and_receive(node, alice, "user", world.alice)
    await marker(node, "workspace", world.ws_a, bob)
    await marker(node, "workspace", world.ws_b, carol)
    assert for_alice["event_id"] not in event_ids(bob)
    assert for_alice["event_id"] not in event_ids(carol)


@pytest.mark.req("AZ-4")
async def test_denied_task_events_never_arrive(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    bob = await connect(world.bob, world.ws_a)
    carol = await connect(world.carol, world.ws_b)
    assert await alice.subscribe("task", world.chat_task_alice) == ack("subscribe", "task", world.chat_task_alice)
    assert await bob.subscribe("task", world.chat_task_alice) == sub_error("task", world.chat_task_alice, "forbidden")
    assert await carol.subscribe("task", world.task_a) == sub_error("task", world.task_a, "forbidden")
    assert await alice.subscribe("task", world.orphan_task) == sub_error("task", world.orphan_task, "forbidden")
    chat_task_ev = await publish_and_receive(node, alice, "task", world.chat_task_alice)
    task_a_ev = await node.control.publish("task", world.task_a, {"type": "test:task"})
    orphan_ev = await node.control.publish("task", world.orphan_task, {"type": "test:orphan"})
    await marker(node, "workspace", world.ws_a, alice, bob)
    await marker(node, "workspace", world.ws_b, carol)
    assert chat_task_ev["event_id"] not in event_ids(bob)
    assert task_a_ev["event_id"] not in event_ids(carol)
    assert task_a_ev["event_id"] not in event_ids(alice)  # allowed, but never asked for
    assert orphan_ev["event_id"] not in event_ids(alice)


@pytest.mark.req("AZ-4")
async def test_denied_chat_events_never_arrive(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    bob = await connect(world.bob, world.ws_a)
    carol = await connect(world.carol, world.ws_b)
    assert await alice.subscribe("chat", world.chat_alice) == ack("subscribe", "chat", world.chat_alice)
    assert await bob.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "forbidden")
    assert await carol.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "forbidden")
    ev = await publish_and_receive(node, alice, "chat", world.chat_alice)
    await marker(node, "workspace", world.ws_a, bob)
    await marker(node, "workspace", world.ws_b, carol)
    assert ev["event_id"] not in event_ids(bob)
    assert ev["event_id"] not in event_ids(carol)


@pytest.mark.req("AZ-4")
async def test_creator_in_another_workspace_gets_no_chat_or_workspace_events_of_the_first(node, connect, alice_in_both):
    world = alice_in_both
    in_a = await connect(world.alice, world.ws_a)
    in_b = await connect(world.alice, world.ws_b)
    await in_a.subscribe("chat", world.chat_alice)
    assert await in_b.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "forbidden")
    chat_ev = await publish_and_receive(node, in_a, "chat", world.chat_alice)
    ws_ev = await publish_and_receive(node, in_a, "workspace", world.ws_a)
    await marker(node, "workspace", world.ws_b, in_b)
    assert chat_ev["event_id"] not in event_ids(in_b)
    assert ws_ev["event_id"] not in event_ids(in_b)


@pytest.mark.req("AZ-4")
async def test_only_event_frames_of_held_scopes_arrive(node, connect, world):
    """A mixed stream: every event alice receives is of a scope she holds, and she gets all of those."""
    alice = await connect(world.alice, world.ws_a)
    await alice.subscribe("task", world.task_a)
    await alice.subscribe("chat", world.chat_bob)  # forbidden
    held = {("workspace", world.ws_a), ("user", world.alice), ("task", world.task_a)}
    targets = [("workspace", world.ws_a), ("workspace", world.ws_b), ("user", world.alice), ("user", world.bob),
               ("user", world.carol), ("task", world.task_a), ("task", world.task_b), ("task", world.chat_task_alice),
               ("chat", world.chat_alice), ("chat", world.chat_bob)]
    expected = []
    for i in range(3):
        for scope, sid in targets:
            p = await node.control.publish(scope, sid, {"type": "test:mixed", "payload": {"i": i}})
            if (scope, sid) in held:
                expected.append(p["event_id"])
    last = await marker(node, "workspace", world.ws_a, alice)
    got = alice.events()
    assert all((f["scope"], f["scope_id"]) in held for f in got)
    assert [f["event_id"] for f in got] == expected + [last["event_id"]]

"""SUB: what only the reference chooses, and its internals. The contract's SUB behaviours are
the suite's cases (conformance/cases/subscriptions.py), run against the reference by
tests/test_cases.py."""

import pytest

from wire_helpers import ack, poll, sub_error


@pytest.mark.req("SUB-1", "SUB-2", "SUB-3", "SUB-4")
async def test_reference_answers_carry_no_extra_fields(node, connect, world):
    """The contract lets answers carry extra fields; the reference's are exactly the named ones."""
    alice = await connect(world.alice, world.ws_a)
    assert await alice.subscribe("workspace", world.ws_a) == ack("subscribe", "workspace", world.ws_a)
    assert await alice.subscribe("workspace", world.ws_b) == sub_error("workspace", world.ws_b, "forbidden")
    assert await alice.subscribe("task", world.task_a) == ack("subscribe", "task", world.task_a)
    assert await alice.subscribe("chat", world.chat_bob) == sub_error("chat", world.chat_bob, "forbidden")
    assert await alice.subscribe("global", "all") == sub_error("global", "all", "unknown_scope")
    assert await alice.unsubscribe("task", world.task_a) == ack("unsubscribe", "task", world.task_a)
    await node.control.faults("error")
    try:
        assert await alice.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "lookup_failed")
    finally:
        await node.control.faults("ok")


@pytest.mark.req("SUB-1")
async def test_reference_compares_the_own_workspace_id_as_a_string(connect, world):
    """Like Multica (`id != c.workspaceID`): the own workspace id spelled in upper case is another id."""
    alice = await connect(world.alice, world.ws_a)
    other = world.ws_a.upper()
    assert await alice.subscribe("workspace", other) == sub_error("workspace", other, "forbidden")


@pytest.mark.req("SUB-5")
async def test_reference_close_removes_the_connection_from_every_scope_room(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    watcher = await connect(world.bob, world.ws_a)
    await alice.subscribe("task", world.task_a)
    await alice.subscribe("chat", world.chat_alice)
    await watcher.subscribe("task", world.task_a)
    await alice.close()
    hub = node.state.hub

    async def dropped():
        return not any(conns for conns in hub.scopes.values() if any(c.user_id == world.alice for c in conns))

    await poll(dropped)
    assert ("chat", world.chat_alice) not in hub.scopes  # rooms nobody holds are gone
    assert ("user", world.alice) not in hub.scopes
    assert ("task", world.task_a) in hub.scopes  # the watcher still holds it

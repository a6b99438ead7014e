"""End-to-end smoke: token auth, subscribe, publish, receive (HS-3, HS-6, SUB-2, EV-2)."""

import pytest


@pytest.mark.req("HS-3", "HS-6", "SUB-2", "EV-2")
async def test_task_event_reaches_subscriber(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    ack = await alice.subscribe("task", world.task_a)
    assert ack == {"type": "subscribe_ack", "payload": {"scope": "task", "id": world.task_a}}
    published = await node.control.publish("task", world.task_a, {"type": "task:message", "payload": {"n": 1}})
    frame = await alice.wait_for(lambda f: f.get("event_id") == published["event_id"])
    assert frame["type"] == "task:message" and frame["payload"] == {"n": 1}
    assert frame["scope"] == "task" and frame["scope_id"] == world.task_a and frame["pos"] == published["pos"]

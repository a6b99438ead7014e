"""AZ: what the suite's cases (conformance/cases/authorization.py) cannot reach, checked on the
reference.

* Worlds the suite does not load: tasks whose issue or chat is missing (a target may refuse
  such fixtures), a workspace whose id is not a UUID; the suite never replaces the fixtures the
  cases run in.
* What only the reference (like Multica) chooses: ids are parsed as UUIDs (upper case matches),
  a blank id is not a UUID, and a connection to a non-UUID workspace gets task and chat scopes
  forbidden without a lookup."""

import uuid

import pytest

from wire_helpers import ack, sub_error







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


def spellings(u: str) -> list[str]:
    """Other spellings of one UUID that uuid.UUID, Postgres or Go's pgtype all read as it."""
    return [u.upper(), u.replace("-", ""), "{%s}" % u, "urn:uuid:" + u, u[:9].upper() + u[9:],
            u.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
            u.translate(str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"))]


@pytest.mark.req("AZ-3")
async def test_reference_forbids_every_spelling_but_the_canonical_one(node, connect, world):
    """docs/protocol.md, AZ-3: only the canonical spelling is a UUID. The others are forbidden
    before any lookup (lookups failing or not), so none becomes a scope of its own."""
    alice = await connect(world.alice, world.ws_a)
    await node.control.faults("error")
    try:
        for scope, sid in (("task", world.task_a), ("chat", world.chat_alice)):
            for other in (s for s in spellings(sid) if s != sid):  # upper-casing digits changes nothing
                assert await alice.subscribe(scope, other) == sub_error(scope, other, "forbidden"), other
    finally:
        await node.control.faults("ok")
    assert await alice.subscribe("task", world.task_a) == ack("subscribe", "task", world.task_a)
    assert {s for s in node.state.hub.scopes if s[0] in ("task", "chat")} == {("task", world.task_a)}


@pytest.mark.req("AZ-3")
@pytest.mark.parametrize("scope", ["task", "chat"])
async def test_reference_blank_id_is_not_a_uuid(node, connect, world, scope):
    """A blank id is not empty (IN-1), so it is judged as an id that is not a UUID, lookups failing or not."""
    alice = await connect(world.alice, world.ws_a)
    assert await alice.subscribe(scope, " ") == sub_error(scope, " ", "forbidden")
    await node.control.faults("error")
    try:
        assert await alice.subscribe(scope, " ") == sub_error(scope, " ", "forbidden")
    finally:
        await node.control.faults("ok")


@pytest.mark.req("AZ-3", "CTL-5")
async def test_reference_non_uuid_workspace_forbids_task_and_chat_without_lookup(node, connect, world):
    fx = world.fixtures()
    fx["workspaces"]["plain-workspace"] = {"slug": "plain-" + uuid.uuid4().hex[:8], "members": [world.alice]}
    await node.control.fixtures(fx)
    alice = await connect(world.alice, "plain-workspace")
    await node.control.faults("error")
    try:
        assert await alice.subscribe("task", world.task_a) == sub_error("task", world.task_a, "forbidden")
        assert await alice.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "forbidden")
    finally:
        await node.control.faults("ok")

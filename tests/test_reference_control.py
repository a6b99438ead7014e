"""CTL: the reference's control API where the suite's cases (conformance/cases/control.py) do
not reach: its configuration, the section's opening rules (404 without a control token, 401
without the right bearer: sentences without a requirement ID), replacing the fixtures (the suite
never replaces the world its cases run in), the reference's answer bodies and refusals no
requirement names, faults per node, and a relay that cannot store."""

import uuid

import jwt
import pytest

from conformance.client import AuthRefused, WsClient
from reference.broadcaster import MemoryBroadcaster, PublishFailed
from reference.config import parse_cidrs
from wire_helpers import WAIT, ack, http, marker, publish_and_receive, sub_error, with_id

PATHS = [("GET", "/_control/info"), ("PUT", "/_control/fixtures"), ("POST", "/_control/token"),
         ("POST", "/_control/publish"), ("PUT", "/_control/faults"), ("POST", "/_control/revoke")]


async def _publish_raw(session, node, body=None, data=None):
    return await http(session, "POST", node.base + "/_control/publish", body=body, data=data,
                      headers={**node.control.headers, "Content-Type": "application/json"})


# -- CTL-1: info from the node's configuration -------------------------------------------------------

@pytest.mark.req("CTL-1")
async def test_info_reports_the_nodes_configuration(start_node):
    node = await start_node(node_id="n-7", send_queue=8, auth_timeout_s=3.0, ping_s=2.0, pong_s=4.5,
                            allowed_origins=("https://app.example",), trusted_proxies=parse_cidrs("10.0.0.0/8"))
    info = await node.control.info()
    assert info["node_id"] == "n-7"
    assert info["send_queue"] == 8
    assert info["timeouts"] == {"auth_s": 3.0, "ping_s": 2.0, "pong_s": 4.5, "header_s": 10.0}
    assert info["origins"] == {"allowed": ["https://app.example"], "trusted_proxies": ["10.0.0.0/8"]}
    default = await (await start_node()).control.info()
    assert default["send_queue"] == 256
    assert default["timeouts"] == {"auth_s": 10.0, "ping_s": 54.0, "pong_s": 60.0, "header_s": 10.0}
    assert {"health", "global", "exclude_workspace"} <= set(default["capabilities"])


# -- the section's opening rules: 404 without a control token, 401 without the right bearer -------------

@pytest.mark.req("CTL-1", "CTL-2", "CTL-3", "CTL-4", "CTL-5", "CTL-6")
@pytest.mark.parametrize("method,path", PATHS)
async def test_every_control_path_is_404_without_a_control_token(start_node, session, method, path):
    node = await start_node(control_token=None)
    for auth in (None, "Bearer none", "Bearer anything"):
        headers = {"Authorization": auth} if auth else {}
        status, _, _ = await http(session, method, node.base + path, body={}, headers=headers)
        assert status == 404, auth
    assert (await http(session, "GET", node.base + "/health/realtime"))[0] == 200  # the node itself works


@pytest.mark.req("CTL-1", "CTL-2", "CTL-3", "CTL-4", "CTL-5", "CTL-6")
@pytest.mark.parametrize("method,path", PATHS)
async def test_every_control_path_is_401_without_the_right_bearer(node, session, method, path):
    token = node.config.control_token
    for auth in (None, "Bearer wrong", f"Bearer {token}x", f"Bearer {token[:-1]}", f"Basic {token}", token,
                 "Bearer ", f"Token {token}"):
        headers = {"Authorization": auth} if auth is not None else {}
        status, _, _ = await http(session, method, node.base + path, body={}, headers=headers)
        assert status == 401, auth


@pytest.mark.req("CTL-4")
async def test_unauthorized_publish_delivers_nothing(node, session, connect, world):
    alice = await connect(world.alice, world.ws_a)
    status, _, _ = await http(session, "POST", node.base + "/_control/publish", headers={"Authorization": "Bearer no"},
                              body={"scope": "workspace", "id": world.ws_a, "frame": {"type": "sneaky"}})
    assert status == 401
    await marker(node, "workspace", world.ws_a, alice)
    assert [f["type"] for f in alice.events()] == ["test:marker"]


# -- CTL-2: replacing the fixtures --------------------------------------------------------------------

@pytest.mark.req("CTL-2")
async def test_fixtures_replace_the_world_for_new_connections_and_subscribes(node, session, world):
    ws_c, dan, issue_c, task_c, chat_c = (str(uuid.uuid4()) for _ in range(5))
    await node.control.fixtures({
        "workspaces": {ws_c: {"slug": "c-" + ws_c[:8], "members": [dan, world.alice]}},
        "issues": {issue_c: {"workspace": ws_c}},
        "tasks": {task_c: {"issue": issue_c}},
        "chats": {chat_c: {"workspace": ws_c, "creator": dan}},
    })
    with pytest.raises(AuthRefused, match="not a member of this workspace"):  # the old world is gone
        await WsClient.connect(session, node.base, workspace_id=world.ws_a, token=await node.control.token(world.bob))
    d = await WsClient.connect(session, node.base, workspace_id=ws_c, token=await node.control.token(dan))
    a = await WsClient.connect(session, node.base, workspace_slug="c-" + ws_c[:8],
                               token=await node.control.token(world.alice))
    try:
        assert await d.subscribe("task", task_c) == ack("subscribe", "task", task_c)
        assert await d.subscribe("chat", chat_c) == ack("subscribe", "chat", chat_c)
        assert await a.subscribe("chat", chat_c) == sub_error("chat", chat_c, "forbidden")
        assert await d.subscribe("task", world.task_a) == sub_error("task", world.task_a, "forbidden")
        await publish_and_receive(node, d, "task", task_c)
    finally:
        await d.close()
        await a.close()


@pytest.mark.req("CTL-2", "AZ-5")
async def test_fixtures_replacement_keeps_open_connections_open_and_delivering(node, connect, world):
    alice = await connect(world.alice, world.ws_a)
    carol = await connect(world.carol, world.ws_b)
    await alice.subscribe("task", world.task_a)
    await node.control.fixtures({"workspaces": {}})  # nobody is a member of anything
    for c in (alice, carol):
        start = len(c.frames)
        await c.send({"type": "ping"})
        assert await c.wait_for(lambda f: f == {"type": "pong"}, WAIT, start=start) == {"type": "pong"}
        assert not c.closed
    await publish_and_receive(node, alice, "workspace", world.ws_a)
    await publish_and_receive(node, alice, "task", world.task_a)
    await publish_and_receive(node, carol, "user", world.carol)
    # new subscribes are judged by the new (empty) world
    assert await alice.subscribe("task", world.task_a) == sub_error("task", world.task_a, "forbidden")
    assert await alice.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "forbidden")


@pytest.mark.req("CTL-2")
@pytest.mark.parametrize("body", [b"{not json", b"[]", b'"text"',
                                  b'{"workspaces": []}', b'{"workspaces": {"w": {"members": "alice"}}}',
                                  b'{"chats": {"c": {"workspace": "w"}}}', b'{"issues": {"i": {}}}'])
async def test_fixtures_that_are_not_a_world_are_400_and_change_nothing(node, session, connect, world, body):
    status, doc, _ = await http(session, "PUT", node.base + "/_control/fixtures", data=body,
                                headers={**node.control.headers, "Content-Type": "application/json"})
    assert status == 400 and isinstance(doc, dict) and "error" in doc
    alice = await connect(world.alice, world.ws_a)  # the old world still holds
    assert await alice.subscribe("chat", world.chat_alice) == ack("subscribe", "chat", world.chat_alice)


# -- CTL-3: the reference's tokens --------------------------------------------------------------------

@pytest.mark.req("CTL-3", "HS-4")
async def test_reference_tokens_are_jwts_with_the_asked_claims(node, session, world):
    status, doc, _ = await http(session, "POST", node.base + "/_control/token", headers=node.control.headers,
                                body={"user": world.bob, "email": "bob@example.com", "ttl_s": 120})
    assert status == 200 and list(doc) == ["token"]
    claims = jwt.decode(doc["token"], options={"verify_signature": False})
    assert claims["sub"] == world.bob and claims["email"] == "bob@example.com"
    for user, has_sub in ((None, False), ("", True)):
        claims = jwt.decode(await node.control.token(user), options={"verify_signature": False})
        assert ("sub" in claims) is has_sub and claims.get("sub", "") == ""


@pytest.mark.req("CTL-3")
@pytest.mark.parametrize("body", [b"{oops", b"[]"])
async def test_reference_token_request_that_is_not_an_object_is_400(node, session, body):
    status, doc, _ = await http(session, "POST", node.base + "/_control/token", data=body,
                                headers={**node.control.headers, "Content-Type": "application/json"})
    assert status == 400 and isinstance(doc, dict) and "error" in doc


# -- CTL-4: the reference's publish answers -------------------------------------------------------------

@pytest.mark.req("CTL-4")
async def test_reference_publish_answer_is_exactly_event_id_and_pos_in_json(node, session, connect, world):
    alice = await connect(world.alice, world.ws_a)
    status, doc, headers = await _publish_raw(session, node, body={"scope": "workspace", "id": world.ws_a,
                                                                   "frame": {"type": "t"}})
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert set(doc) == {"event_id", "pos"} and isinstance(doc["pos"], str)
    assert (await alice.wait_for(with_id(doc["event_id"]), WAIT))["pos"] == doc["pos"]


@pytest.mark.req("CTL-4")
@pytest.mark.parametrize("body", [
    {"scope": "global", "frame": {}},  # the contract allows a broadcast too; the reference refuses
    {"scope": "workspace", "id": "W", "frame": {"event_id": ""}},
    {"scope": "user", "id": "U", "frame": {}, "exclude_workspace": ""},
    b'{"scope": "workspace", ',
], ids=["global-without-id", "empty-event-id", "empty-exclude", "malformed"])
async def test_reference_refused_publish_has_an_error_body_and_delivers_nothing(node, session, connect, world, body):
    alice = await connect(world.alice, world.ws_a)
    if isinstance(body, dict):
        body = {k: {"W": world.ws_a, "U": world.alice}.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
        status, doc, _ = await _publish_raw(session, node, body=body)
    else:
        status, doc, _ = await _publish_raw(session, node, data=body)
    assert status == 400 and isinstance(doc, dict) and isinstance(doc.get("error"), str)
    await marker(node, "workspace", world.ws_a, alice)
    assert [f["type"] for f in alice.events()] == ["test:marker"]


class _StoreDown(MemoryBroadcaster):
    """A relay whose store refuses every write."""

    async def publish(self, scope_type, scope_id, frame, exclude_workspace=None):
        raise PublishFailed("relay store unreachable")


@pytest.mark.req("CTL-4", "NODE-3")
async def test_publish_the_relay_cannot_store_is_503_with_an_error(start_node, session, world):
    node = await start_node(broadcaster=_StoreDown())
    status, doc, _ = await _publish_raw(session, node, body={"scope": "workspace", "id": world.ws_a,
                                                             "frame": {"type": "t"}})
    assert status == 503
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"]
    status, _, _ = await _publish_raw(session, node, body={"scope": "global", "id": "x", "frame": {}})
    assert status == 400  # validation still answers first


# -- CTL-5: the reference's faults ----------------------------------------------------------------------

@pytest.mark.req("CTL-5")
async def test_reference_faults_are_per_node(start_node, session, world):
    n1, n2 = await start_node(node_id="n1"), await start_node(node_id="n2")
    c1 = await WsClient.connect(session, n1.base, workspace_id=world.ws_a, token=await n1.control.token(world.alice))
    c2 = await WsClient.connect(session, n2.base, workspace_id=world.ws_a, token=await n2.control.token(world.alice))
    try:
        await n1.control.faults("error")
        assert await c1.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "lookup_failed")
        assert await c2.subscribe("chat", world.chat_alice) == ack("subscribe", "chat", world.chat_alice)
    finally:
        await c1.close()
        await c2.close()


@pytest.mark.req("CTL-5")
async def test_reference_faults_malformed_body_is_400(node, session):
    for body in (b"{nope", b'{"authorizer": "bogus"}'):
        status, _, _ = await http(session, "PUT", node.base + "/_control/faults", data=body,
                                  headers={**node.control.headers, "Content-Type": "application/json"})
        assert status == 400, body

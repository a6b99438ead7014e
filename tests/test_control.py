"""CTL-1..5: the test-only control API."""

import uuid

import jwt
import pytest

from conformance.client import AuthRefused, WsClient
from reference.broadcaster import MemoryBroadcaster, PublishFailed
from reference.config import parse_cidrs
from wire_helpers import WAIT, ack, http, marker, publish_and_receive, sub_error, with_id

CAPABILITIES = {"cookie_auth", "pat", "origin", "health", "global", "exclude_workspace", "resume", "revocation",
                "strict_order", "redis_cluster"}

PATHS = [("GET", "/_control/info"), ("PUT", "/_control/fixtures"), ("POST", "/_control/token"),
         ("POST", "/_control/publish"), ("PUT", "/_control/faults"), ("POST", "/_control/revoke")]
ROUTED = PATHS[:5]


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


async def _publish_raw(session, node, body=None, data=None):
    return await http(session, "POST", node.base + "/_control/publish", body=body, data=data,
                      headers={**node.control.headers, "Content-Type": "application/json"})


# -- CTL-1: info ----------------------------------------------------------------------------------

@pytest.mark.req("CTL-1")
async def test_info_has_every_field_with_its_type(node):
    info = await node.control.info()
    for k in ("implementation", "version", "node_id"):
        assert isinstance(info[k], str) and info[k], k
    assert info["node_id"] == node.config.node_id
    caps = info["capabilities"]
    assert isinstance(caps, list) and all(isinstance(c, str) for c in caps) and set(caps) <= CAPABILITIES
    assert len(set(caps)) == len(caps)
    r = info["retention"]
    assert set(r) >= {"max_len", "max_age_s"}
    assert r["max_len"] is None or (type(r["max_len"]) is int)
    assert r["max_age_s"] is None or _number(r["max_age_s"])
    t = info["timeouts"]
    assert set(t) >= {"auth_s", "ping_s", "pong_s"} and all(_number(t[k]) and t[k] > 0 for k in ("auth_s", "ping_s", "pong_s"))
    assert type(info["send_queue"]) is int and info["send_queue"] > 0
    o = info["origins"]
    assert isinstance(o["allowed"], list) and isinstance(o["trusted_proxies"], list)


@pytest.mark.req("CTL-1")
async def test_info_reports_the_nodes_configuration(start_node):
    node = await start_node(node_id="n-7", send_queue=8, auth_timeout_s=3.0, ping_s=2.0, pong_s=4.5,
                            allowed_origins=("https://app.example",), trusted_proxies=parse_cidrs("10.0.0.0/8"))
    info = await node.control.info()
    assert info["node_id"] == "n-7"
    assert info["send_queue"] == 8
    assert info["timeouts"] == {"auth_s": 3.0, "ping_s": 2.0, "pong_s": 4.5}
    assert info["origins"] == {"allowed": ["https://app.example"], "trusted_proxies": ["10.0.0.0/8"]}
    default = await (await start_node()).control.info()
    assert default["send_queue"] == 256
    assert default["timeouts"] == {"auth_s": 10.0, "ping_s": 54.0, "pong_s": 60.0}
    assert {"health", "global", "exclude_workspace"} <= set(default["capabilities"])


# -- 404 without a control token, 401 without the right bearer --------------------------------------

@pytest.mark.req("CTL-1", "CTL-2", "CTL-3", "CTL-4", "CTL-5", "CTL-6")
@pytest.mark.parametrize("method,path", PATHS)
@pytest.mark.parametrize("auth", [None, "Bearer none", "Bearer anything"])
async def test_every_control_path_is_404_without_a_control_token(start_node, session, method, path, auth):
    node = await start_node(control_token=None)
    headers = {"Authorization": auth} if auth else {}
    status, _, _ = await http(session, method, node.base + path, body={}, headers=headers)
    assert status == 404
    # the node itself works
    assert (await http(session, "GET", node.base + "/health/realtime"))[0] == 200


@pytest.mark.req("CTL-1", "CTL-2", "CTL-3", "CTL-4", "CTL-5")
@pytest.mark.parametrize("method,path", ROUTED)
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


# -- CTL-2: fixtures ------------------------------------------------------------------------------

@pytest.mark.req("CTL-2")
async def test_fixtures_replace_the_world_for_new_connections_and_subscribes(node, session, world):
    ws_c, dan, issue_c, task_c, chat_c = (str(uuid.uuid4()) for _ in range(5))
    await node.control.fixtures({
        "workspaces": {ws_c: {"slug": "c-" + ws_c[:8], "members": [dan, world.alice]}},
        "issues": {issue_c: {"workspace": ws_c}},
        "tasks": {task_c: {"issue": issue_c}},
        "chats": {chat_c: {"workspace": ws_c, "creator": dan}},
    })
    # the old world is gone
    with pytest.raises(AuthRefused, match="not a member of this workspace"):
        await WsClient.connect(session, node.base, workspace_id=world.ws_a, token=await node.control.token(world.bob))
    # the new one is in force
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


# -- CTL-3: tokens --------------------------------------------------------------------------------

@pytest.mark.req("CTL-3")
async def test_token_authenticates_as_its_user(node, session, world):
    status, doc, _ = await http(session, "POST", node.base + "/_control/token", headers=node.control.headers,
                                body={"user": world.bob, "email": "bob@example.com", "ttl_s": 120})
    assert status == 200 and list(doc) == ["token"] and isinstance(doc["token"], str)
    claims = jwt.decode(doc["token"], options={"verify_signature": False})
    assert claims["sub"] == world.bob and claims["email"] == "bob@example.com"
    c = await WsClient.connect(session, node.base, workspace_id=world.ws_a, token=doc["token"])
    try:
        assert await c.subscribe("user", world.bob) == ack("subscribe", "user", world.bob)
        assert await c.subscribe("user", world.alice) == sub_error("user", world.alice, "forbidden")
    finally:
        await c.close()


@pytest.mark.req("CTL-3", "HS-4")
@pytest.mark.parametrize("body,error", [
    ({"ttl_s": 0}, "invalid token"),
    ({"ttl_s": -30}, "invalid token"),
    ({"ttl_s": -0.5}, "invalid token"),
    ({"user": None}, "invalid claims"),
    ({"user": ""}, "invalid claims"),
])
async def test_token_special_cases_are_refused_as_the_contract_says(node, session, world, body, error):
    tok = await node.control.token(**{"user": world.alice, **body})
    with pytest.raises(AuthRefused) as e:
        await WsClient.connect(session, node.base, workspace_id=world.ws_a, token=tok)
    assert str(e.value) == error
    claims = jwt.decode(tok, options={"verify_signature": False, "verify_exp": False})
    if body.get("user", world.alice) is None:
        assert "sub" not in claims
    elif body.get("user") == "":
        assert claims["sub"] == ""


@pytest.mark.req("CTL-3")
@pytest.mark.parametrize("body", [b"{}", b'{"email": "x@example.com"}', b'{"ttl_s": 60}', b"{oops", b"[]"])
async def test_token_without_user_or_malformed_is_400(node, session, body):
    status, doc, _ = await http(session, "POST", node.base + "/_control/token", data=body,
                                headers={**node.control.headers, "Content-Type": "application/json"})
    assert status == 400 and isinstance(doc, dict) and "error" in doc


@pytest.mark.req("CTL-3", "NODE-1")
async def test_token_from_one_node_works_on_another(start_node, session, world):
    n1, n2 = await start_node(node_id="n1"), await start_node(node_id="n2")
    tok = await n1.control.token(world.carol)
    c = await WsClient.connect(session, n2.base, workspace_id=world.ws_b, token=tok)
    try:
        assert await c.subscribe("user", world.carol) == ack("subscribe", "user", world.carol)
    finally:
        await c.close()


# -- CTL-4: publish -------------------------------------------------------------------------------

@pytest.mark.req("CTL-4", "EV-1")
@pytest.mark.parametrize("scope,attr", [("workspace", "ws_a"), ("user", "alice"), ("task", "task_a"),
                                        ("chat", "chat_alice"), ("global", None)])
async def test_publish_returns_event_id_and_pos(node, session, connect, world, scope, attr):
    sid = getattr(world, attr) if attr else "all"
    alice = await connect(world.alice, world.ws_a)
    if scope in ("task", "chat"):
        await alice.subscribe(scope, sid)
    status, doc, headers = await _publish_raw(session, node, body={"scope": scope, "id": sid, "frame": {"type": "t"}})
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert set(doc) == {"event_id", "pos"}
    assert isinstance(doc["event_id"], str) and doc["event_id"]
    assert doc["pos"] is None or isinstance(doc["pos"], str)
    got = await alice.wait_for(with_id(doc["event_id"]), WAIT)
    assert got["pos"] == doc["pos"]
    # a publish to a scope nobody holds is acknowledged too
    status, doc2, _ = await _publish_raw(session, node, body={"scope": scope, "id": str(uuid.uuid4()) if attr else "all",
                                                              "frame": {"type": "t"}})
    assert status == 200 and doc2["event_id"] != doc["event_id"]


BAD_PUBLISH = [
    ("malformed JSON", b'{"scope": "workspace", '),
    ("not an object", b'["workspace", "W", {}]'),
    ("empty body", b""),
    ("no scope", {"id": "W", "frame": {}}),
    ("unknown scope", {"scope": "daemon_runtime", "id": "W", "frame": {}}),
    ("unknown scope case", {"scope": "Workspace", "id": "W", "frame": {}}),
    ("scope not a string", {"scope": ["workspace"], "id": "W", "frame": {}}),
    ("global not all", {"scope": "global", "id": "ALL", "frame": {}}),
    ("global other", {"scope": "global", "id": "W", "frame": {}}),
    ("global no id", {"scope": "global", "frame": {}}),
    ("frame missing", {"scope": "workspace", "id": "W"}),
    ("frame not object", {"scope": "workspace", "id": "W", "frame": "text"}),
    ("event_id empty", {"scope": "workspace", "id": "W", "frame": {"event_id": ""}}),
    ("event_id number", {"scope": "workspace", "id": "W", "frame": {"event_id": 42}}),
    ("event_id null", {"scope": "workspace", "id": "W", "frame": {"event_id": None}}),
    ("event_id object", {"scope": "workspace", "id": "W", "frame": {"event_id": {"id": "x"}}}),
    ("exclude on workspace", {"scope": "workspace", "id": "W", "frame": {}, "exclude_workspace": "W"}),
    ("exclude on task", {"scope": "task", "id": "T", "frame": {}, "exclude_workspace": "W"}),
    ("exclude on chat", {"scope": "chat", "id": "C", "frame": {}, "exclude_workspace": "W"}),
    ("exclude on global", {"scope": "global", "id": "all", "frame": {}, "exclude_workspace": "W"}),
    ("exclude empty", {"scope": "user", "id": "U", "frame": {}, "exclude_workspace": ""}),
    ("exclude number", {"scope": "user", "id": "U", "frame": {}, "exclude_workspace": 7}),
    ("exclude list", {"scope": "user", "id": "U", "frame": {}, "exclude_workspace": ["W"]}),
    ("exclude false", {"scope": "user", "id": "U", "frame": {}, "exclude_workspace": False}),
]


@pytest.mark.req("CTL-4", "EV-1", "EV-2")
@pytest.mark.parametrize("case,body", BAD_PUBLISH, ids=[c for c, _ in BAD_PUBLISH])
async def test_invalid_publish_is_400_and_delivers_nothing(node, session, connect, world, case, body):
    ids = {"W": world.ws_a, "U": world.alice, "T": world.task_a, "C": world.chat_alice}
    alice = await connect(world.alice, world.ws_a)
    await alice.subscribe("task", world.task_a)
    await alice.subscribe("chat", world.chat_alice)
    if isinstance(body, dict):
        body = {k: (ids.get(v, v) if isinstance(v, str) else v) for k, v in body.items()}
        status, doc, _ = await _publish_raw(session, node, body=body)
    else:
        status, doc, _ = await _publish_raw(session, node, data=body)
    assert status == 400, (case, doc)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str)
    await marker(node, "workspace", world.ws_a, alice)
    assert [f["type"] for f in alice.events()] == ["test:marker"]


@pytest.mark.req("CTL-4", "EV-1")
@pytest.mark.parametrize("scope,attr", [("workspace", "ws_a"), ("task", "task_a"), ("chat", "chat_alice"),
                                        ("global", None)])
async def test_publish_with_null_exclude_workspace_is_accepted_on_any_scope(node, session, connect, world, scope, attr):
    sid = getattr(world, attr) if attr else "all"
    alice = await connect(world.alice, world.ws_a)
    if scope in ("task", "chat"):
        await alice.subscribe(scope, sid)
    status, doc, _ = await _publish_raw(session, node, body={"scope": scope, "id": sid, "frame": {"type": "t"},
                                                             "exclude_workspace": None})
    assert status == 200
    await alice.wait_for(with_id(doc["event_id"]), WAIT)


# -- CTL-5: faults --------------------------------------------------------------------------------

@pytest.mark.req("CTL-5", "SUB-2")
async def test_faults_switch_task_and_chat_lookups_and_nothing_else(node, session, connect, world):
    alice = await connect(world.alice, world.ws_a)
    status, _, _ = await http(session, "PUT", node.base + "/_control/faults", headers=node.control.headers,
                              body={"authorizer": "error"})
    assert status == 200
    assert await alice.subscribe("task", world.task_a) == sub_error("task", world.task_a, "lookup_failed")
    assert await alice.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "lookup_failed")
    assert await alice.subscribe("workspace", world.ws_a) == ack("subscribe", "workspace", world.ws_a)
    assert await alice.subscribe("workspace", world.ws_b) == sub_error("workspace", world.ws_b, "forbidden")
    assert await alice.subscribe("global", "all") == sub_error("global", "all", "unknown_scope")
    # a new connection still authenticates and gets its auto scopes
    bob = await connect(world.bob, world.ws_a)
    await publish_and_receive(node, bob, "workspace", world.ws_a)
    # switching back restores normal decisions
    status, _, _ = await http(session, "PUT", node.base + "/_control/faults", headers=node.control.headers,
                              body={"authorizer": "ok"})
    assert status == 200
    assert await alice.subscribe("task", world.task_a) == ack("subscribe", "task", world.task_a)
    assert await bob.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "forbidden")


@pytest.mark.req("CTL-5")
async def test_faults_are_per_node_and_subscriptions_held_keep_delivering(start_node, session, world):
    n1, n2 = await start_node(node_id="n1"), await start_node(node_id="n2")
    c1 = await WsClient.connect(session, n1.base, workspace_id=world.ws_a, token=await n1.control.token(world.alice))
    c2 = await WsClient.connect(session, n2.base, workspace_id=world.ws_a, token=await n2.control.token(world.alice))
    try:
        assert await c1.subscribe("task", world.task_a) == ack("subscribe", "task", world.task_a)
        await n1.control.faults("error")
        # held subscriptions are not re-checked
        await publish_and_receive(n1, c1, "task", world.task_a)
        assert await c1.subscribe("chat", world.chat_alice) == sub_error("chat", world.chat_alice, "lookup_failed")
        assert await c2.subscribe("chat", world.chat_alice) == ack("subscribe", "chat", world.chat_alice)
    finally:
        await c1.close()
        await c2.close()


@pytest.mark.req("CTL-5")
async def test_faults_malformed_body_is_400(node, session):
    status, _, _ = await http(session, "PUT", node.base + "/_control/faults", data=b"{nope",
                              headers={**node.control.headers, "Content-Type": "application/json"})
    assert status == 400


class _StoreDown(MemoryBroadcaster):
    """A relay whose store refuses every write."""

    async def publish(self, scope_type, scope_id, frame, exclude_workspace=None):
        raise PublishFailed("relay store unreachable")


@pytest.mark.req("CTL-4", "NODE-3")
async def test_publish_the_relay_cannot_store_is_503_with_an_error(start_node, session, world):
    node = await start_node(broadcaster=_StoreDown())
    status, doc, _ = await _publish_raw(session, node, body={"scope": "workspace", "id": world.ws_a, "frame": {"type": "t"}})
    assert status == 503
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"]
    # validation still answers 400 first
    status, _, _ = await _publish_raw(session, node, body={"scope": "global", "id": "x", "frame": {}})
    assert status == 400

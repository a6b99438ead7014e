"""HL-1..3: GET /health/realtime, its access rules and its connection count."""

import socket

import pytest
from aiohttp import web

from conformance.client import WsClient
from wire_helpers import WAIT, ack, health, http, poll, publish_and_receive

FORWARDING = [
    ("X-Forwarded-For", "203.0.113.7"),
    ("X-Forwarded-Host", "example.com"),
    ("X-Forwarded-Proto", "https"),
    ("X-Real-Ip", "203.0.113.7"),
    ("Forwarded", "for=203.0.113.7;proto=https"),
]


def _non_loopback_ipv4() -> str | None:
    """An address of this machine that is not loopback, or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.254", 9))  # no packet is sent: this only picks a source address
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


# -- HL-1: the snapshot ------------------------------------------------------------------------

COUNTERS = ("active_connections", "connects_total", "disconnects_total", "messages_sent_total",
            "messages_dropped_total", "slow_evictions_total")
PER_KEY = ("subscribes_total", "subscribe_denied_total", "sends_by_type")


@pytest.mark.req("HL-1")
async def test_snapshot_has_every_field_with_its_type(node, session):
    status, snap, headers = await http(session, "GET", node.base + "/health/realtime")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    for k in COUNTERS:
        assert type(snap[k]) is int and snap[k] >= 0, k
    for k in PER_KEY:
        assert isinstance(snap[k], dict), k
        assert all(isinstance(n, str) and type(v) is int for n, v in snap[k].items()), k
    relay = snap["relay"]
    assert isinstance(relay, dict)
    assert relay["node_id"] == node.config.node_id
    assert relay["connected"] is True
    for k in ("xadd_total", "xadd_errors", "xread_total", "xread_errors"):
        assert type(relay[k]) is int and relay[k] >= 0, k
    assert "last_error" in relay and (relay["last_error"] is None or isinstance(relay["last_error"], str))
    lag = [k for k in relay if "lag" in k]
    assert lag and all(isinstance(relay[k], int | float) for k in lag), relay


@pytest.mark.req("HL-1")
async def test_snapshot_counters_follow_what_happens(node, session, connect, world):
    start = await health(session, node)
    alice = await connect(world.alice, world.ws_a)
    bob = await connect(world.bob, world.ws_a)
    assert await alice.subscribe("task", world.task_a) == ack("subscribe", "task", world.task_a)
    await bob.subscribe("task", world.task_a)
    await alice.subscribe("chat", world.chat_bob)      # forbidden
    await alice.subscribe("nonsense", "x")             # unknown_scope
    await publish_and_receive(node, alice, "task", world.task_a, {"type": "task:message", "payload": {}})
    await bob.wait_for(lambda f: isinstance(f, dict) and f.get("type") == "task:message", WAIT)
    await publish_and_receive(node, alice, "workspace", world.ws_a, {"type": "issue:updated"})
    await bob.close()

    async def settled():
        snap = await health(session, node)
        return snap if snap["disconnects_total"] == start["disconnects_total"] + 1 else None

    snap = await poll(settled)

    def delta(key, sub=None):
        a, b = (snap[key], start[key]) if sub is None else (snap[key].get(sub, 0), start[key].get(sub, 0))
        return a - b

    assert delta("connects_total") == 2
    assert delta("disconnects_total") == 1
    assert snap["active_connections"] == 1
    assert delta("subscribes_total", "task") == 2
    assert delta("subscribe_denied_total", "chat") == 1
    assert delta("subscribe_denied_total", "nonsense") == 1
    assert delta("sends_by_type", "task:message") == 2
    assert delta("sends_by_type", "issue:updated") == 2
    # auth_ack x2, subscribe answers x4, events: 2 task + 2 workspace
    assert delta("messages_sent_total") >= 10
    assert delta("slow_evictions_total") == 0 and delta("messages_dropped_total") == 0


# -- HL-2: who may read it -----------------------------------------------------------------------

@pytest.mark.req("HL-2")
async def test_direct_loopback_without_forwarding_headers_gets_200(node, session):
    status, snap, _ = await http(session, "GET", node.base + "/health/realtime")
    assert status == 200 and isinstance(snap, dict) and "active_connections" in snap


@pytest.mark.req("HL-2")
@pytest.mark.parametrize("header,value", FORWARDING, ids=[h for h, _ in FORWARDING])
async def test_loopback_with_a_forwarding_header_gets_404(node, session, header, value):
    status, _, _ = await http(session, "GET", node.base + "/health/realtime", headers={header: value})
    assert status == 404


@pytest.mark.req("HL-2")
@pytest.mark.parametrize("header", [h for h, _ in FORWARDING])
async def test_forwarding_header_that_is_empty_does_not_count(node, session, header):
    """Multica trims the value and only a non-empty one marks the request as proxied."""
    status, _, _ = await http(session, "GET", node.base + "/health/realtime", headers={header: ""})
    assert status == 200


@pytest.mark.req("HL-2")
async def test_non_loopback_peer_gets_404(node, session):
    ip = _non_loopback_ipv4()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    site = web.TCPSite(node.runner, ip, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    status, _, _ = await http(session, "GET", f"http://{ip}:{port}/health/realtime")
    assert status == 404
    # the same node still answers loopback
    assert (await http(session, "GET", node.base + "/health/realtime"))[0] == 200


@pytest.mark.req("HL-2")
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Bearer m2", "Bearer ", "Bearer", "Basic bQ==", "m",
                                  "Token m", "Bearer  mm"])
async def test_metrics_token_missing_or_wrong_gets_401_with_challenge(start_node, session, auth):
    node = await start_node(metrics_token="m")
    headers = {"Authorization": auth} if auth is not None else {}
    status, _, resp_headers = await http(session, "GET", node.base + "/health/realtime", headers=headers)
    assert status == 401
    assert resp_headers.get("WWW-Authenticate") == 'Bearer realm="metrics"'


@pytest.mark.req("HL-2")
@pytest.mark.parametrize("auth", ["Bearer m", "bearer m", "BEARER m", "Bearer m  "])
async def test_metrics_token_good_bearer_gets_200(start_node, session, auth):
    node = await start_node(metrics_token="m")
    status, snap, _ = await http(session, "GET", node.base + "/health/realtime", headers={"Authorization": auth})
    assert status == 200 and "active_connections" in snap


@pytest.mark.req("HL-2")
async def test_metrics_token_admits_proxied_and_non_loopback_callers(start_node, session):
    node = await start_node(metrics_token="m")
    good = {"Authorization": "Bearer m"}
    for header, value in FORWARDING:
        status, _, _ = await http(session, "GET", node.base + "/health/realtime", headers={**good, header: value})
        assert status == 200, header
    status, _, _ = await http(session, "GET", node.base + "/health/realtime", headers={"X-Forwarded-For": "1.2.3.4"})
    assert status == 401
    ip = _non_loopback_ipv4()
    if ip is not None:
        site = web.TCPSite(node.runner, ip, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        assert (await http(session, "GET", f"http://{ip}:{port}/health/realtime", headers=good))[0] == 200
        assert (await http(session, "GET", f"http://{ip}:{port}/health/realtime"))[0] == 401


@pytest.mark.req("HL-2")
async def test_blank_metrics_token_means_no_token(start_node, session):
    """Multica trims the configured token: a blank one leaves the loopback-only rule in force."""
    node = await start_node(metrics_token="   ")
    assert (await http(session, "GET", node.base + "/health/realtime"))[0] == 200
    assert (await http(session, "GET", node.base + "/health/realtime", headers={"X-Real-Ip": "1.2.3.4"}))[0] == 404


# -- HL-3: the active connection count -----------------------------------------------------------

async def _active(session, node) -> int:
    return (await health(session, node))["active_connections"]


async def _wait_active(session, node, n: int) -> None:
    async def ok():
        return await _active(session, node) == n
    await poll(ok)


@pytest.mark.req("HL-3")
async def test_active_connections_equals_open_connections_after_connects_and_closes(node, session, connect, world):
    assert await _active(session, node) == 0
    clients = [await connect(u, w) for u, w in ((world.alice, world.ws_a), (world.bob, world.ws_a),
                                                (world.carol, world.ws_b), (world.alice, world.ws_a),
                                                (world.carol, world.ws_b))]
    await _wait_active(session, node, 5)
    await clients[0].close()
    await clients[2].close()
    await _wait_active(session, node, 3)
    clients.append(await connect(world.bob, world.ws_a))
    await _wait_active(session, node, 4)
    for c in clients:
        await c.close()
    await _wait_active(session, node, 0)


@pytest.mark.req("HL-3")
async def test_active_connections_ignores_refused_and_unauthenticated_sockets(node, session, connect, world):
    alice = await connect(world.alice, world.ws_a)
    await _wait_active(session, node, 1)
    # refused: not a member, bad token
    for user, ws, token in ((world.carol, world.ws_a, None), (world.alice, world.ws_a, "garbage")):
        tok = token or await node.control.token(user)
        c = await WsClient.connect(session, node.base, workspace_id=ws, auth=False)
        try:
            await c.send({"type": "auth", "payload": {"token": tok}})
            await c.wait_closed(WAIT)
        finally:
            await c.close()
    # upgraded but not yet authenticated
    pending = await WsClient.connect(session, node.base, workspace_id=world.ws_a, auth=False)
    try:
        snap = await health(session, node)
        assert snap["active_connections"] == 1
        assert snap["connects_total"] == 1
    finally:
        await pending.close()
    await publish_and_receive(node, alice, "workspace", world.ws_a)
    assert await _active(session, node) == 1


@pytest.mark.req("HL-3")
async def test_active_connections_drops_when_the_peer_vanishes(node, session, connect, world):
    alice = await connect(world.alice, world.ws_a)
    bob = await connect(world.bob, world.ws_a)
    await _wait_active(session, node, 2)
    # no close frame: the TCP connection just goes away
    bob.ws._response.connection.transport.abort()
    await _wait_active(session, node, 1)
    await publish_and_receive(node, alice, "workspace", world.ws_a)

"""HL: the reference's /health/realtime where the suite's cases (conformance/cases/health.py) do
not reach: its exact counts (the suite runs cases side by side and only gets lower bounds), its
relay state, the metrics token (a secret the suite does not know), peers that are not loopback
(the suite cannot choose its address), empty forwarding headers, and sockets not yet
authenticated (the contract does not say whether they count)."""

import socket

import pytest
from aiohttp import web
from multidict import CIMultiDict

from conformance.client import WsClient
from wire_helpers import WAIT, ack, health, http, poll, publish_and_receive

FORWARDING = ["X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "Forwarded"]


def _non_loopback_ipv4() -> str | None:
    """An address of this machine that is not loopback, or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.254", 9))  # no packet is sent: this only picks a source address
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


async def _non_loopback_site(node) -> str | None:
    ip = _non_loopback_ipv4()
    if ip is None:
        return None
    site = web.TCPSite(node.runner, ip, 0)
    await site.start()
    return f"http://{ip}:{site._server.sockets[0].getsockname()[1]}"


# -- HL-1 -----------------------------------------------------------------------------------------------

@pytest.mark.req("HL-1")
async def test_reference_snapshot_is_json_and_a_node_without_a_store_says_so(node, session):
    """A single node on the memory relay has no relay store: as Multica's single-node mode, the
    relay state names no node and is not connected (HL-1); the snapshot still names the node."""
    status, snap, headers = await http(session, "GET", node.base + "/health/realtime")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert snap["node_id"] == node.config.node_id
    assert (snap["redis"]["node_id"], snap["redis"]["connected"], snap["redis"]["last_error"]) == ("", False, "")


@pytest.mark.req("HL-1")
async def test_reference_counts_exactly(node, session, connect, world):
    """Alone on its node, every count is exact. The reference counts events_sent_by_type per
    delivery (Multica: once per publish)."""
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
    await bob.wait_for(lambda f: isinstance(f, dict) and f.get("type") == "issue:updated", WAIT)
    await bob.close()

    async def settled():
        snap = await health(session, node)
        return snap if snap["disconnects_total"] == start["disconnects_total"] + 1 else None

    snap = await poll(settled)

    def delta(key, sub=None):
        a, b = (snap[key], start[key]) if sub is None else (snap[key].get(sub, 0), start[key].get(sub, 0))
        return a - b

    assert delta("connects_total") == 2
    assert snap["active_connections"] == 1
    assert delta("subscribes_total", "task") == 2
    assert delta("subscribe_denied_total", "chat") == 1
    assert delta("subscribe_denied_total", "other") == 1  # made-up types share one key: memory stays bounded
    assert delta("events_sent_by_type", "task:message") == 2
    assert delta("events_sent_by_type", "issue:updated") == 2
    assert delta("messages_sent_total") == 4  # the four event frames; answers are not messages (HL-1)
    assert delta("slow_evictions_total") == 0 and delta("messages_dropped_total") == 0


# -- HL-2 -----------------------------------------------------------------------------------------------

@pytest.mark.req("HL-2")
@pytest.mark.parametrize("header", FORWARDING)
@pytest.mark.parametrize("values", [[""], [" "], ["", "10.0.0.1"]], ids=["empty", "blank", "empty_first_of_two"])
async def test_reference_takes_a_present_forwarding_header_as_sent(node, session, header, values):
    """docs/protocol.md, HL-2: present is sent, even empty (Multica trims and reads only the first
    value, so an empty first line hides a proxy's second one)."""
    status, _, _ = await http(session, "GET", node.base + "/health/realtime",
                              headers=CIMultiDict((header, v) for v in values))
    assert status == 404


@pytest.mark.req("HL-2")
async def test_non_loopback_peer_gets_404(node, session):
    base = await _non_loopback_site(node)
    if base is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    assert (await http(session, "GET", base + "/health/realtime"))[0] == 404
    assert (await http(session, "GET", node.base + "/health/realtime"))[0] == 200  # loopback still answered


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
    for header in FORWARDING:
        status, _, _ = await http(session, "GET", node.base + "/health/realtime", headers={**good, header: "x"})
        assert status == 200, header
    status, _, _ = await http(session, "GET", node.base + "/health/realtime", headers={"X-Forwarded-For": "1.2.3.4"})
    assert status == 401
    base = await _non_loopback_site(node)
    if base is not None:
        assert (await http(session, "GET", base + "/health/realtime", headers=good))[0] == 200
        assert (await http(session, "GET", base + "/health/realtime"))[0] == 401


@pytest.mark.req("HL-2")
async def test_reference_blank_metrics_token_means_no_token(start_node, session):
    """Like Multica, the configured token is trimmed: a blank one leaves the loopback-only rule in force."""
    node = await start_node(metrics_token="   ")
    assert (await http(session, "GET", node.base + "/health/realtime"))[0] == 200
    assert (await http(session, "GET", node.base + "/health/realtime", headers={"X-Real-Ip": "1.2.3.4"}))[0] == 404


# -- HL-3 -----------------------------------------------------------------------------------------------

@pytest.mark.req("HL-3")
async def test_reference_counts_a_connection_once_it_is_authenticated(node, session, connect, world):
    alice = await connect(world.alice, world.ws_a)
    await poll(lambda: _active_is(session, node, 1))
    pending = await WsClient.connect(session, node.base, workspace_id=world.ws_a, auth=False)  # upgraded, no auth yet
    try:
        snap = await health(session, node)
        assert snap["active_connections"] == 1 and snap["connects_total"] == 1
    finally:
        await pending.close()
    await publish_and_receive(node, alice, "workspace", world.ws_a)


async def _active_is(session, node, n: int) -> bool:
    return (await health(session, node))["active_connections"] == n

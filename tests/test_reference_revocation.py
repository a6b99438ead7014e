"""AZ-5 / CTL-6: the reference's revocation, over real sockets. One node (memory relay), nodes
in this process sharing a real redis-server (both Redis relays: propagation, a reader that
fails), and node processes (the cluster as `scopehub serve` runs it)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from conformance.client import AuthRefused, WsClient
from reference.broadcaster import MemoryBroadcaster, PublishFailed
from reference.relay.base import RelaySettings
from reference.relay.sharded import ShardedRelay
from reference.relay.streams import StreamsRelay
from wire_helpers import WAIT, http, poll, publish_and_receive

AZ5 = pytest.mark.req("AZ-5", "CTL-6")
RELAYS = {"streams": StreamsRelay, "sharded": ShardedRelay}
NOT_MEMBER = "not a member of this workspace"


async def revoke(session, node, workspace, user, *, base: str | None = None, token: str | None = None):
    """POST /_control/revoke: (status, body)."""
    headers = {"Authorization": f"Bearer {token}"} if token else node.control.headers
    status, doc, _ = await http(session, "POST", (base or node.base) + "/_control/revoke",
                                body={"workspace": workspace, "user": user}, headers=headers)
    return status, doc


async def pong(client: WsClient) -> None:
    """The connection is open and answers (IN-2)."""
    start = len(client.frames)
    await client.send({"type": "ping"})
    await client.wait_for(lambda f: f == {"type": "pong"}, WAIT, start=start)


async def closed_with_1008(client: WsClient, within: float = 2.0) -> None:
    assert await client.wait_closed(within) == 1008
    assert client.ws.close_code == 1008


async def refused(session, base: str, token: str, workspace: str) -> None:
    """A new connection of a revoked user: HS-3's error frame (token) and HS-2's 403 (cookie)."""
    with pytest.raises(AuthRefused, match=NOT_MEMBER):
        await WsClient.connect(session, base, workspace_id=workspace, token=token)
    async with session.get(base + "/ws", params={"workspace_id": workspace},
                           headers={"Cookie": f"multica_auth={token}", "Connection": "Upgrade", "Upgrade": "websocket",
                                    "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as r:
        assert (r.status, await r.json()) == (403, {"error": NOT_MEMBER})


# -- one node ----------------------------------------------------------------------------------------

@AZ5
async def test_revoke_closes_the_users_connections_to_that_workspace_only(node, session, connect, world):
    token = await node.control.token(world.erin)
    in_a = await connect(world.erin, world.ws_a, token=token)
    in_a_cookie = await WsClient.connect(session, node.base, workspace_id=world.ws_a, cookie=token)
    in_b = await connect(world.erin, world.ws_b, token=token)
    alice = await connect(world.alice, world.ws_a)
    assert await revoke(session, node, world.ws_a, world.erin) == (200, {"ok": True})
    for c in (in_a, in_a_cookie):
        await closed_with_1008(c)
    for c in (in_b, alice):  # the user in another workspace, another user in this one
        await pong(c)
    await publish_and_receive(node, alice, "workspace", world.ws_a)
    await publish_and_receive(node, in_b, "user", world.erin)
    await refused(session, node.base, token, world.ws_a)
    await pong(await connect(world.erin, world.ws_b, token=token))  # still a member of B
    await in_a_cookie.close()


@AZ5
async def test_the_close_frame_says_why_and_nothing_follows_it(node, session, raw_ws, world):
    ws = await raw_ws(node, {"workspace_id": world.ws_a})
    await ws.send_json({"type": "auth", "payload": {"token": await node.control.token(world.bob)}})
    assert (await ws.receive_json(timeout=WAIT)) == {"type": "auth_ack"}
    await revoke(session, node, world.ws_a, world.bob)
    await node.control.publish("workspace", world.ws_a, {"type": "too-late"})  # after the revocation
    msg = await ws.receive(timeout=WAIT)
    assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 1008, "membership revoked")
    health = (await http(session, "GET", node.base + "/health/realtime"))[1]
    assert health["active_connections"] == 0


@AZ5
async def test_revoking_a_user_with_no_connection_refuses_later_ones(node, session, world):
    assert await revoke(session, node, world.ws_a, world.alice) == (200, {"ok": True})
    await refused(session, node.base, await node.control.token(world.alice), world.ws_a)


@pytest.mark.req("AZ-5", "CTL-2")
async def test_replacing_the_fixtures_clears_revocations_and_closes_nothing(node, session, connect, world):
    alice = await connect(world.alice, world.ws_a)
    await revoke(session, node, world.ws_a, world.bob)
    await node.control.fixtures(world.fixtures())  # the fixtures are the new world: bob is a member again
    await pong(alice)
    await pong(await connect(world.bob, world.ws_a))


@pytest.mark.req("CTL-6")
@pytest.mark.parametrize("body", [b"{nope", b"[]", b"{}", b'{"workspace": "W"}', b'{"user": "U"}',
                                  b'{"workspace": "", "user": "U"}', b'{"workspace": "W", "user": 7}',
                                  b'{"workspace": null, "user": "U"}'])
async def test_a_revoke_body_that_is_not_two_names_is_400_and_closes_nothing(node, session, connect, world, body):
    alice = await connect(world.alice, world.ws_a)
    data = body.replace(b'"W"', f'"{world.ws_a}"'.encode()).replace(b'"U"', f'"{world.alice}"'.encode())
    status, doc, _ = await http(session, "POST", node.base + "/_control/revoke", data=data,
                                headers={**node.control.headers, "Content-Type": "application/json"})
    assert status == 400 and isinstance(doc, dict) and isinstance(doc.get("error"), str)
    await pong(alice)


class _StoreDown(MemoryBroadcaster):
    """A relay that cannot tell the other nodes."""

    async def revoke(self, workspace_id, user_id):
        raise PublishFailed("relay store unreachable")


@AZ5
async def test_a_revocation_the_store_cannot_take_is_503_and_still_revoked_here(start_node, session, world):
    node = await start_node(broadcaster=_StoreDown())
    c = await WsClient.connect(session, node.base, workspace_id=world.ws_a, token=await node.control.token(world.bob))
    status, doc = await revoke(session, node, world.ws_a, world.bob)
    assert status == 503 and isinstance(doc.get("error"), str) and doc["error"]
    await closed_with_1008(c)
    await refused(session, node.base, await node.control.token(world.bob), world.ws_a)


@pytest.mark.req("CTL-1", "AZ-5")
async def test_every_relay_claims_revocation(node):
    assert "revocation" in (await node.control.info())["capabilities"]


# -- nodes in this process on a real redis-server ----------------------------------------------------

@pytest.fixture
def relay_nodes(start_node, redis_server):
    async def start(kind: str, n: int = 2):
        settings = RelaySettings(url=redis_server.url, block_ms=500, reader_slots=2, shards=2, linger_s=0)
        return [await start_node(broadcaster=RELAYS[kind](f"n{i}", settings), node_id=f"n{i}") for i in range(n)]
    return start


@AZ5
@pytest.mark.req("NODE-1")
@pytest.mark.parametrize("kind", list(RELAYS))
async def test_a_revocation_reaches_every_node_within_2_s(relay_nodes, session, world, kind):
    nodes = await relay_nodes(kind, 3)
    for n in nodes:
        assert "revocation" in (await n.control.info())["capabilities"]
    token = await nodes[0].control.token(world.erin)
    gone = [await WsClient.connect(session, n.base, workspace_id=world.ws_a, token=token) for n in nodes]
    kept = [await WsClient.connect(session, n.base, workspace_id=world.ws_b, token=token) for n in nodes]
    loop = asyncio.get_running_loop()
    assert await revoke(session, nodes[1], world.ws_a, world.erin) == (200, {"ok": True})
    answered = loop.time()
    for c in gone:
        await closed_with_1008(c)
        assert c.closed_at - answered < 2.0
    for c in kept:
        await pong(c)
    for n in nodes:
        await refused(session, n.base, token, world.ws_a)


@AZ5
@pytest.mark.parametrize("kind", list(RELAYS))
async def test_a_failing_revocation_reader_is_restarted_and_applies_what_it_missed(relay_nodes, session, world, kind):
    """The reader's callback fails once: the task is counted, restarted, and reads the revocation
    again from its cursor, so the revocation still takes effect on that node."""
    n0, n1 = await relay_nodes(kind)
    relay = n1.state.broadcaster
    real, failures = relay.on_revocation, []

    def flaky(workspace_id, user_id):
        if not failures:
            failures.append((workspace_id, user_id))
            raise RuntimeError("injected")
        return real(workspace_id, user_id)
    relay.on_revocation = flaky
    c = await WsClient.connect(session, n1.base, workspace_id=world.ws_a, token=await n1.control.token(world.bob))
    assert await revoke(session, n0, world.ws_a, world.bob) == (200, {"ok": True})
    await closed_with_1008(c, within=WAIT)
    assert failures == [(world.ws_a, world.bob)]
    assert relay.snapshot()["task_restarts"] == 1
    assert "revocations" in relay.snapshot()["last_error"]


@AZ5
@pytest.mark.parametrize("kind", list(RELAYS))
async def test_a_revocation_made_while_a_reader_is_cut_off_is_applied_when_it_reads_again(
        relay_nodes, session, world, kind):
    n0, n1 = await relay_nodes(kind)
    relay = n1.state.broadcaster
    real = relay.revocation_reader.xread
    cut = asyncio.Event()

    async def failing(*a, **kw):  # the store does not answer this reader
        if not cut.is_set():
            raise ConnectionError("injected")
        return await real(*a, **kw)
    relay.revocation_reader.xread = failing
    c = await WsClient.connect(session, n1.base, workspace_id=world.ws_a, token=await n1.control.token(world.bob))
    await poll(lambda: relay.snapshot()["failing_readers"] and not relay.snapshot()["connected"])
    assert await revoke(session, n0, world.ws_a, world.bob) == (200, {"ok": True})
    await pong(c)  # not told yet
    cut.set()
    await closed_with_1008(c, within=WAIT)
    await poll(lambda: relay.snapshot()["connected"])


# -- node processes ----------------------------------------------------------------------------------

@AZ5
@pytest.mark.heavy
@pytest.mark.parametrize("relay", list(RELAYS))
async def test_a_cluster_of_node_processes_revokes_everywhere(start_cluster, session, world, relay):
    h = await start_cluster(relay, nodes=2)
    token = await h.controls[0].token(world.erin)
    gone = [await WsClient.connect(session, url, workspace_id=world.ws_a, token=token) for url in h.urls]
    kept = await WsClient.connect(session, h.urls[1], workspace_id=world.ws_b, token=token)
    status, doc, _ = await http(session, "POST", h.urls[0] + "/_control/revoke", headers=h.controls[0].headers,
                                body={"workspace": world.ws_a, "user": world.erin})
    assert (status, doc) == (200, {"ok": True})
    for c in gone:
        await closed_with_1008(c)
    await pong(kept)
    for url in h.urls:
        await refused(session, url, token, world.ws_a)
    for c in (*gone, kept):
        await c.close()

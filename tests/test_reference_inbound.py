"""IN-1..IN-5: what only the reference server chooses, where docs/protocol.md leaves room, and
its keepalive flags. What the contract itself requires is checked by the conformance cases
(conformance/cases/inbound.py), against the reference and against any other target.

Here: the scope and id echoed for values that are not strings (the contract names only missing
and empty ones), binary frames read like text (the contract only speaks of frames), no auth error
frame before the 1009 close of an oversized first message (as Multica), and the keepalive with
the --ping-interval / --pong-timeout flags set short, so that IN-5 is checked in a second."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from conformance.client import WsClient
from conformance.rawws import OP_TEXT, RawWebSocket, auth_of, encode_frame, ping_of

WAIT = 5.0
LIMIT = 65536
AUTH_ACK = {"type": "auth_ack"}
PING = {"type": "ping"}
PONG = {"type": "pong"}


@pytest.fixture
async def authed(session, node, world):
    """authed() -> alice's token-authenticated WsClient on `node`; closed in teardown."""
    opened: list[WsClient] = []

    async def open_() -> WsClient:
        client = await WsClient.connect(session, node.base, workspace_id=world.ws_a,
                                        token=await node.control.token(world.alice))
        opened.append(client)
        return client

    yield open_
    for c in opened:
        await c.close()


async def pong_after(client: WsClient) -> list:
    """Send a ping; the frames received from now up to its pong (the reference answers in order)."""
    start = len(client.frames)
    await client.send(PING)
    await client.wait_for(lambda f: f == PONG, WAIT, start=start)
    return client.frames[start:]


# -- IN-1: what is echoed for values that are not strings --------------------------------------------------

@pytest.mark.req("IN-1")
@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
@pytest.mark.parametrize("raw,scope,sid", [
    ('{"scope":5,"id":"some-id"}', "", "some-id"),
    ('{"scope":"task","id":7}', "task", ""),
    ('{"scope":null,"id":null}', "", ""),
    ('{"scope":["task"],"id":{"id":"x"}}', "", ""),
    ('{"scope":"chat","id":true}', "chat", ""),
    ("42", "", ""),
], ids=["scope_number", "id_number", "both_null", "array_and_object", "id_bool", "not_an_object"])
async def test_values_that_are_not_strings_are_echoed_empty(authed, kind, raw, scope, sid):
    """As Go's json.Unmarshal into strings: the field that is not a string is "", the other is kept."""
    client = await authed()
    await client.send('{"type":"%s","payload":%s}' % (kind, raw))
    assert await pong_after(client) == [
        {"type": f"{kind}_error", "payload": {"scope": scope, "id": sid, "error": "invalid payload"}}, PONG]


# -- binary frames are read like text ----------------------------------------------------------------------

@pytest.mark.req("IN-1", "IN-2")
async def test_binary_frames_are_read_like_text(authed):
    client = await authed()
    await client.ws.send_bytes(b'{"type":"subscribe","payload":{"scope":"task"}}')
    await client.ws.send_bytes(b'{"type":"ping"}')
    await client.wait_for(lambda f: f == PONG, WAIT)
    assert await pong_after(client) == [PONG]
    assert client.frames == [AUTH_ACK, {"type": "subscribe_error",
                                        "payload": {"scope": "task", "id": "", "error": "invalid payload"}}, PONG, PONG]


@pytest.mark.req("IN-2")
async def test_answers_are_exact_text_frames(session, node, world):
    ws = await session.ws_connect(node.base + "/ws", params={"workspace_id": world.ws_a})
    try:
        await ws.send_str(json.dumps({"type": "auth", "payload": {"token": await node.control.token(world.alice)}}))
        ack = await ws.receive(timeout=WAIT)
        await ws.send_str('{"type":"ping"}')
        pong = await ws.receive(timeout=WAIT)
    finally:
        await ws.close()
    assert (ack.type, ack.data) == (aiohttp.WSMsgType.TEXT, '{"type":"auth_ack"}')
    assert (pong.type, pong.data) == (aiohttp.WSMsgType.TEXT, '{"type":"pong"}')


# -- IN-4: the first message of a connection ----------------------------------------------------------------

@pytest.mark.req("IN-4", "HS-3")
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
async def test_oversized_first_message_closes_1009_without_an_error_frame(session, node, world, binary):
    """Multica's read fails before any auth answer; the contract would allow an error frame first."""
    ws = await session.ws_connect(node.base + "/ws", params={"workspace_id": world.ws_a}, max_msg_size=0)
    client = WsClient(ws)
    try:
        data = auth_of(await node.control.token(world.alice), LIMIT + 1)
        await (ws.send_bytes(data) if binary else ws.send_str(data.decode()))
        assert await client.wait_closed(WAIT) == 1009
        assert client.frames == []
    finally:
        await client.close()


@pytest.mark.req("IN-4", "HS-3")
async def test_binary_auth_of_exactly_65536_bytes_is_accepted(session, node, world):
    sock = await RawWebSocket.connect(node.base, {"workspace_id": world.ws_a})
    try:
        sock.send_frame(0x2, auth_of(await node.control.token(world.alice), LIMIT))
        await sock.flush()
        opcode, data = await asyncio.wait_for(sock.recv_frame(), WAIT)
        assert (opcode, json.loads(data)) == (OP_TEXT, AUTH_ACK)
    finally:
        await sock.close()


@pytest.mark.req("IN-4")
async def test_binary_message_of_65536_bytes_is_a_ping(authed):
    client = await authed()
    await client.ws.send_bytes(ping_of(LIMIT))
    await client.wait_for(lambda f: f == PONG, WAIT)
    assert client.frames == [AUTH_ACK, PONG]


# -- IN-5: the keepalive, with short flags ------------------------------------------------------------------

KEEPALIVE = {"ping_s": 0.2, "pong_s": 0.6}
CLOSED_TYPES = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR)


@pytest.fixture
async def quiet_ws(session, start_node, world):
    """quiet_ws() -> (node, alice's authenticated aiohttp WebSocket that answers no transport ping)."""
    opened = []

    async def open_():
        node = await start_node(**KEEPALIVE)
        ws = await session.ws_connect(node.base + "/ws", params={"workspace_id": world.ws_a}, autoping=False)
        opened.append(ws)
        await ws.send_str(json.dumps({"type": "auth", "payload": {"token": await node.control.token(world.alice)}}))
        msg = await ws.receive(timeout=WAIT)
        assert msg.type is aiohttp.WSMsgType.TEXT and json.loads(msg.data) == AUTH_ACK
        return node, ws

    yield open_
    for ws in opened:
        await ws.close()


@pytest.mark.req("IN-5", "IN-2")
@pytest.mark.parametrize("busy", [False, True], ids=["silent", "json_pings"])
async def test_client_that_never_answers_transport_pings_is_closed(quiet_ws, busy):
    """Closed after pings it did not answer, not before the pong timeout; JSON pings are no answer."""
    _, ws = await quiet_ws()
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def until_closed() -> int:
        pings = 0
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.PING:
                pings += 1  # and do not answer
                if busy:
                    await ws.send_str('{"type":"ping"}')
            elif msg.type in CLOSED_TYPES:
                return pings
            else:
                assert busy and json.loads(msg.data) == PONG, f"unexpected {msg!r}"

    assert await asyncio.wait_for(until_closed(), WAIT) >= 1
    assert loop.time() - started >= KEEPALIVE["pong_s"] / 2


@pytest.mark.req("IN-5")
async def test_client_that_answers_transport_pings_stays_open(quiet_ws):
    _, ws = await quiet_ws()

    async def answer(n: int) -> None:
        for _ in range(n):  # 6 pings at 0.2 s: well past the 0.6 s pong timeout
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.PING, f"unexpected {msg!r}"
            await ws.pong(msg.data)

    await asyncio.wait_for(answer(6), WAIT)
    assert not ws.closed


@pytest.mark.req("IN-2")
async def test_pipelined_requests_beyond_the_send_queue_are_all_answered(start_node, world):
    """A client that writes more requests at once than the send queue holds gets every answer,
    in order: answers queued in one turn to a socket that takes them are no backlog (DEL-6)."""
    node = await start_node(send_queue=8)
    token = await node.control.token(world.alice)
    ws = await RawWebSocket.connect(node.base, {"workspace_id": world.ws_a})
    try:
        ws.send_frame(OP_TEXT, json.dumps({"type": "auth", "payload": {"token": token}}).encode())
        await ws.flush()
        assert await asyncio.wait_for(ws.recv_frame(), 5) == (OP_TEXT, b'{"type":"auth_ack"}')
        ws.writer.write(b"".join(encode_frame(OP_TEXT, b'{"type":"ping"}') for _ in range(300)))  # one write
        await ws.flush()
        answers = [await asyncio.wait_for(ws.recv_frame(), 5) for _ in range(300)]
        assert {a for a in answers} == {(OP_TEXT, b'{"type":"pong"}')}
        assert node.state.metrics.slow_evictions == 0
    finally:
        await ws.close()

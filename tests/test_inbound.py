"""IN-1..IN-5: inbound frames and limits, over real sockets against reference nodes on
ephemeral ports.

"Nothing else was answered" is checked by ordering, not by sleeping: the node reads a
connection's frames one after another and writes every answer through one queue, so once the
pong to a later ping has arrived, any answer to an earlier frame would have arrived before it.

Fragmented messages are sent by a minimal raw WebSocket client (aiohttp's client always sets
FIN), which speaks RFC 6455 framing over a plain TCP connection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from conformance import rawws
from conformance.client import WsClient
from conformance.rawws import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, auth_of, ping_of

WAIT = 5.0  # every wait in this file is bounded by this (or less)
LIMIT = 65536  # IN-4: the largest inbound message allowed, in bytes

AUTH_ACK = {"type": "auth_ack"}
PONG = {"type": "pong"}
PING = {"type": "ping"}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def auth_frame(token: str) -> str:
    return json.dumps({"type": "auth", "payload": {"token": token}})


def is_frame(f: Any) -> bool:
    return isinstance(f, dict) and ("type" in f or "error" in f)


@pytest.fixture
async def open_ws(session):
    """open_ws(node, params, *, cookie) -> WsClient, upgraded, not authenticated; closed in teardown."""
    opened: list[WsClient] = []

    async def open_(node, params: dict, *, cookie: str | None = None) -> WsClient:
        headers = {"Cookie": f"multica_auth={cookie}"} if cookie is not None else {}
        ws = await asyncio.wait_for(
            session.ws_connect(node.base + "/ws", params=params, headers=headers,
                               timeout=aiohttp.ClientWSTimeout(ws_close=2.0), max_msg_size=0),
            WAIT)
        client = WsClient(ws)
        opened.append(client)
        return client

    yield open_
    for c in opened:
        await c.close()


@pytest.fixture
async def authed(node, world, open_ws):
    """authed() -> WsClient of alice in workspace A, token-authenticated on `node`."""
    async def open_(user: str | None = None) -> WsClient:
        client = await open_ws(node, {"workspace_id": world.ws_a})
        await client.send(auth_frame(await node.control.token(user or world.alice)))
        assert await client.wait_for(is_frame, WAIT) == AUTH_ACK
        return client
    return open_


async def pong_after(client: WsClient) -> list[Any]:
    """Send a ping, wait for a pong, and return the frames that arrived since `start`."""
    start = len(client.frames)
    await client.send(PING)
    await client.wait_for(lambda f: f == PONG, WAIT, start=start)
    return client.frames[start:]


async def assert_serving(open_ws, node, world) -> None:
    """The node still serves a fresh token client: auth_ack, then pong."""
    client = await open_ws(node, {"workspace_id": world.ws_a})
    await client.send(auth_frame(await node.control.token(world.bob)))
    assert await client.wait_for(is_frame, WAIT) == AUTH_ACK
    assert await pong_after(client) == [PONG]
    await client.close()


class RawWebSocket(rawws.RawWebSocket):
    """The raw client with the reads these tests need."""

    async def recv_text(self) -> Any:
        while True:
            opcode, data = await asyncio.wait_for(self.recv_frame(), WAIT)
            if opcode in (OP_PING, OP_PONG):
                continue
            assert opcode == OP_TEXT, (opcode, data)
            return json.loads(data)

    async def recv_close_code(self) -> tuple[list[Any], int | None]:
        """Read until the close frame; return the text frames before it and its code."""
        texts: list[Any] = []
        while True:
            opcode, data = await asyncio.wait_for(self.recv_frame(), WAIT)
            if opcode == OP_TEXT:
                texts.append(json.loads(data))
            elif opcode == OP_CLOSE:
                return texts, self.close_code_of(data)


@pytest.fixture
async def raw_socket():
    """raw_socket(node, params) -> RawWebSocket; every socket is closed in teardown."""
    opened: list[RawWebSocket] = []

    async def open_(node, params: dict) -> RawWebSocket:
        sock = await RawWebSocket.connect(node.base, params)
        opened.append(sock)
        return sock

    yield open_
    for sock in opened:
        await sock.close()


# --------------------------------------------------------------------------------------------
# IN-1: subscribe / unsubscribe payload checks
# --------------------------------------------------------------------------------------------

# (raw payload JSON or None for "absent", scope echoed, id echoed)
BAD_PAYLOADS = {
    "absent": (None, "", ""),
    "null": ("null", "", ""),
    "string": ('"workspace"', "", ""),
    "number": ("42", "", ""),
    "array": ('["workspace","W"]', "", ""),
    "empty_object": ("{}", "", ""),
    "scope_missing": ('{"id":"some-id"}', "", "some-id"),
    "id_missing": ('{"scope":"task"}', "task", ""),
    "scope_empty": ('{"scope":"","id":"some-id"}', "", "some-id"),
    "id_empty": ('{"scope":"workspace","id":""}', "workspace", ""),
    "scope_number": ('{"scope":5,"id":"some-id"}', "", "some-id"),
    "id_number": ('{"scope":"task","id":7}', "task", ""),
    "both_null": ('{"scope":null,"id":null}', "", ""),
    "scope_array_id_object": ('{"scope":["task"],"id":{"id":"x"}}', "", ""),
    "id_bool": ('{"scope":"chat","id":true}', "chat", ""),
}


@pytest.mark.req("IN-1")
@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
@pytest.mark.parametrize("case", list(BAD_PAYLOADS))
async def test_bad_payload_answers_invalid_payload(node, world, open_ws, authed, kind, case):
    raw, scope, sid = BAD_PAYLOADS[case]
    client = await authed()
    text = '{"type":"%s"}' % kind if raw is None else '{"type":"%s","payload":%s}' % (kind, raw)
    await client.ws.send_str(text)
    answers = await pong_after(client)
    assert answers == [
        {"type": f"{kind}_error", "payload": {"scope": scope, "id": sid, "error": "invalid payload"}},
        PONG,
    ]
    # still usable for well-formed requests
    assert await client.subscribe("workspace", world.ws_a) == {
        "type": "subscribe_ack", "payload": {"scope": "workspace", "id": world.ws_a}}
    await assert_serving(open_ws, node, world)


@pytest.mark.req("IN-1")
async def test_bad_payload_in_binary_frame_answers_invalid_payload(authed):
    client = await authed()
    await client.ws.send_bytes(b'{"type":"subscribe","payload":{"scope":"task"}}')
    assert await pong_after(client) == [
        {"type": "subscribe_error", "payload": {"scope": "task", "id": "", "error": "invalid payload"}}, PONG]


# --------------------------------------------------------------------------------------------
# IN-2: ping / pong
# --------------------------------------------------------------------------------------------

@pytest.mark.req("IN-2")
@pytest.mark.parametrize("frame", [
    '{"type":"ping"}',
    '{"type":"ping","payload":{"n":1}}',
    '{"type":"ping","payload":"x","id":42}',
    ' \n{ "type" : "ping" }\t',
], ids=["bare", "with_payload", "extra_fields", "whitespace"])
async def test_ping_is_answered_with_exactly_pong(authed, frame):
    client = await authed()
    await client.ws.send_str(frame)
    await client.wait_for(lambda f: f == PONG, WAIT)
    assert client.frames == [AUTH_ACK, PONG]


@pytest.mark.req("IN-2")
async def test_pong_comes_as_a_text_frame(node, world, raw_ws):
    ws = await raw_ws(node, {"workspace_id": world.ws_a})
    await ws.send_str(auth_frame(await node.control.token(world.alice)))
    assert json.loads((await ws.receive(timeout=WAIT)).data) == AUTH_ACK
    await ws.send_str('{"type":"ping"}')
    msg = await ws.receive(timeout=WAIT)
    assert msg.type is aiohttp.WSMsgType.TEXT
    assert json.loads(msg.data) == PONG


@pytest.mark.req("IN-2")
async def test_binary_ping_is_answered(authed):
    client = await authed()
    await client.ws.send_bytes(b'{"type":"ping"}')
    await client.wait_for(lambda f: f == PONG, WAIT)
    assert client.frames == [AUTH_ACK, PONG]


@pytest.mark.req("IN-2")
async def test_every_ping_gets_one_pong(authed):
    client = await authed()
    for _ in range(50):
        await client.send(PING)
    await client.wait_for(lambda f: len(client.frames) >= 51, WAIT)
    assert client.frames == [AUTH_ACK] + [PONG] * 50


@pytest.mark.req("IN-2", "HS-2")
async def test_ping_on_cookie_connection(node, world, open_ws):
    client = await open_ws(node, {"workspace_id": world.ws_a}, cookie=world.pat_alice)
    assert await pong_after(client) == [PONG]


# --------------------------------------------------------------------------------------------
# IN-3: junk is ignored
# --------------------------------------------------------------------------------------------

JUNK_TEXT = {
    "truncated_json": '{"type":"ping"',
    "not_json": "ping",
    "empty": "",
    "null": "null",
    "array": '[{"type":"ping"}]',
    "number": "3.14",
    "string": '"ping"',
    "empty_object": "{}",
    "type_missing": '{"payload":{"scope":"workspace","id":"x"}}',
    "type_null": '{"type":null}',
    "type_number": '{"type":7}',
    "type_object": '{"type":{"name":"ping"}}',
    "type_wrong_case": '{"type":"PING"}',
    "unknown_type": '{"type":"hello","payload":{}}',
    "auth_after_auth": '{"type":"auth","payload":{"token":"x"}}',
    "pong_from_client": '{"type":"pong"}',
    "ack_from_client": '{"type":"subscribe_ack","payload":{"scope":"workspace","id":"x"}}',
    "deep_nesting": "[" * 5000 + "]" * 5000,
    "big_garbage": "x" * 60000,
}


@pytest.mark.req("IN-3")
@pytest.mark.parametrize("case", list(JUNK_TEXT))
async def test_junk_text_frame_is_ignored(node, world, open_ws, authed, case):
    client = await authed()
    await client.ws.send_str(JUNK_TEXT[case])
    assert await pong_after(client) == [PONG]
    assert not client.closed
    await assert_serving(open_ws, node, world)


@pytest.mark.req("IN-3")
@pytest.mark.parametrize("data", [b"", b"\x00\x01\x02", b"\xff\xfe\xfd", b'{"type":"nope"}', b'{"type":"ping"'],
                         ids=["empty", "bytes", "invalid_utf8", "unknown_type", "truncated_json"])
async def test_junk_binary_frame_is_ignored(node, world, open_ws, authed, data):
    client = await authed()
    await client.ws.send_bytes(data)
    assert await pong_after(client) == [PONG]
    await assert_serving(open_ws, node, world)


@pytest.mark.req("IN-3", "IN-1")
async def test_connection_stays_usable_after_a_burst_of_junk(node, world, authed):
    client = await authed()
    for junk in JUNK_TEXT.values():
        await client.ws.send_str(junk)
    assert await client.subscribe("task", world.task_a) == {
        "type": "subscribe_ack", "payload": {"scope": "task", "id": world.task_a}}
    published = await node.control.publish("task", world.task_a, {"type": "task:message", "payload": {"n": 1}})
    frame = await client.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == published["event_id"], WAIT)
    assert frame["payload"] == {"n": 1}
    assert client.frames[0] == AUTH_ACK
    assert client.frames[1]["type"] == "subscribe_ack"  # the junk before it was answered with nothing


# --------------------------------------------------------------------------------------------
# IN-4: inbound size limit
# --------------------------------------------------------------------------------------------

@pytest.mark.req("IN-4", "HS-3")
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
async def test_auth_frame_of_exactly_65536_bytes_is_accepted(node, world, open_ws, binary):
    client = await open_ws(node, {"workspace_id": world.ws_a})
    data = auth_of(await node.control.token(world.alice), LIMIT)
    await (client.ws.send_bytes(data) if binary else client.ws.send_str(data.decode()))
    assert await client.wait_for(is_frame, WAIT) == AUTH_ACK
    assert await pong_after(client) == [PONG]


@pytest.mark.req("IN-4", "HS-3")
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
async def test_65537_bytes_before_auth_closes_with_1009(node, world, open_ws, binary):
    client = await open_ws(node, {"workspace_id": world.ws_a})
    data = auth_of(await node.control.token(world.alice), LIMIT + 1)
    await (client.ws.send_bytes(data) if binary else client.ws.send_str(data.decode()))
    assert await client.wait_closed(WAIT) == 1009
    assert client.frames == []  # no auth error frame after the close (as Multica)
    await assert_serving(open_ws, node, world)


@pytest.mark.req("IN-4")
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
async def test_65536_bytes_after_auth_are_accepted(authed, binary):
    client = await authed()
    data = ping_of(LIMIT)
    await (client.ws.send_bytes(data) if binary else client.ws.send_str(data.decode()))
    await client.wait_for(lambda f: f == PONG, WAIT)
    assert client.frames == [AUTH_ACK, PONG]
    assert await pong_after(client) == [PONG]


@pytest.mark.req("IN-4")
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
async def test_65537_bytes_after_auth_close_with_1009(node, world, open_ws, authed, binary):
    client = await authed()
    data = ping_of(LIMIT + 1)
    await (client.ws.send_bytes(data) if binary else client.ws.send_str(data.decode()))
    assert await client.wait_closed(WAIT) == 1009
    assert client.frames == [AUTH_ACK]
    await assert_serving(open_ws, node, world)


@pytest.mark.req("IN-4")
async def test_limit_counts_utf8_bytes_not_characters(node, world, open_ws, authed):
    """65,537 bytes of mostly two-byte characters: under 65,536 characters, still too large."""
    ok = await authed()
    await ok.ws.send_str(ping_of(LIMIT, "é").decode())
    await ok.wait_for(lambda f: f == PONG, WAIT)
    big = await authed()
    data = ping_of(LIMIT + 1, "é")
    assert len(data.decode()) < LIMIT
    await big.ws.send_str(data.decode())
    assert await big.wait_closed(WAIT) == 1009
    await assert_serving(open_ws, node, world)


@pytest.mark.req("IN-4", "HS-2")
async def test_65537_bytes_on_cookie_connection_close_with_1009(node, world, open_ws):
    client = await open_ws(node, {"workspace_id": world.ws_a}, cookie=await node.control.token(world.alice))
    await client.ws.send_str(ping_of(LIMIT).decode())
    await client.wait_for(lambda f: f == PONG, WAIT)
    await client.ws.send_str(ping_of(LIMIT + 1).decode())
    assert await client.wait_closed(WAIT) == 1009
    assert client.frames == [PONG]
    await assert_serving(open_ws, node, world)


FRAGMENTS_AT_LIMIT = [4096] * 16  # 65,536 bytes in 16 fragments
FRAGMENTS_OVER_LIMIT = [4096] * 16 + [1]  # 65,537 bytes: every fragment is small


@pytest.mark.req("IN-4", "HS-3")
async def test_fragmented_auth_of_exactly_65536_bytes_is_accepted(node, world, raw_socket):
    sock = await raw_socket(node, {"workspace_id": world.ws_a})
    sock.send_fragmented(OP_TEXT, auth_of(await node.control.token(world.alice), LIMIT), FRAGMENTS_AT_LIMIT)
    await sock.flush()
    assert await sock.recv_text() == AUTH_ACK
    sock.send_frame(OP_TEXT, b'{"type":"ping"}')
    await sock.flush()
    assert await sock.recv_text() == PONG


@pytest.mark.req("IN-4", "HS-3")
async def test_fragmented_message_over_limit_before_auth_closes_with_1009(node, world, open_ws, raw_socket):
    sock = await raw_socket(node, {"workspace_id": world.ws_a})
    sock.send_fragmented(OP_TEXT, auth_of(await node.control.token(world.alice), LIMIT + 1), FRAGMENTS_OVER_LIMIT)
    await sock.flush()
    assert await sock.recv_close_code() == ([], 1009)
    await assert_serving(open_ws, node, world)


@pytest.mark.req("IN-4")
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
async def test_fragmented_message_after_auth(node, world, open_ws, raw_socket, opcode):
    """16 fragments adding up to 65,536 bytes pass; 17 adding up to 65,537 close with 1009,
    with a transport ping interleaved between fragments as RFC 6455 allows."""
    sock = await raw_socket(node, {"workspace_id": world.ws_a})
    sock.send_frame(OP_TEXT, auth_frame(await node.control.token(world.alice)).encode())
    await sock.flush()
    assert await sock.recv_text() == AUTH_ACK

    sock.send_fragmented(opcode, ping_of(LIMIT), FRAGMENTS_AT_LIMIT)
    await sock.flush()
    assert await sock.recv_text() == PONG

    data = ping_of(LIMIT + 1)
    sock.send_frame(opcode, data[:4096], fin=False)
    sock.send_frame(OP_PING, b"between fragments")
    sock.send_fragmented(OP_CONT, data[4096:], [4096] * 15 + [1])
    await sock.flush()
    texts, code = await sock.recv_close_code()
    assert (texts, code) == ([], 1009)
    await assert_serving(open_ws, node, world)


# --------------------------------------------------------------------------------------------
# IN-5: transport keepalive
# --------------------------------------------------------------------------------------------

KEEPALIVE = {"ping_s": 0.2, "pong_s": 0.6}
CLOSED_TYPES = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR)


async def _authed_raw(node, world, raw_ws) -> aiohttp.ClientWebSocketResponse:
    ws = await raw_ws(node, {"workspace_id": world.ws_a}, autoping=False)
    await ws.send_str(auth_frame(await node.control.token(world.alice)))
    msg = await ws.receive(timeout=WAIT)
    assert msg.type is aiohttp.WSMsgType.TEXT and json.loads(msg.data) == AUTH_ACK
    return ws


@pytest.mark.req("IN-5")
async def test_client_that_never_answers_pings_is_closed(start_node, world, open_ws, raw_ws):
    node = await start_node(**KEEPALIVE)
    ws = await _authed_raw(node, world, raw_ws)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def until_closed() -> int:
        pings = 0
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.PING:
                pings += 1  # and do not answer
            elif msg.type in CLOSED_TYPES:
                return pings
            else:
                raise AssertionError(f"unexpected {msg!r}")

    pings = await asyncio.wait_for(until_closed(), WAIT)
    elapsed = loop.time() - started
    assert pings >= 1
    assert elapsed >= KEEPALIVE["pong_s"] / 2, f"closed after {elapsed:.3f} s, before the pong timeout"
    await assert_serving(open_ws, node, world)


@pytest.mark.req("IN-5", "IN-2")
async def test_data_frames_do_not_stand_in_for_pongs(start_node, world, raw_ws):
    """A client busy with JSON pings that never answers transport pings is still closed."""
    node = await start_node(**KEEPALIVE)
    ws = await _authed_raw(node, world, raw_ws)

    async def until_closed() -> tuple[int, int]:
        pings = pongs = 0
        await ws.send_str('{"type":"ping"}')
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.PING:
                pings += 1
                await ws.send_str('{"type":"ping"}')  # activity, but no transport pong
            elif msg.type is aiohttp.WSMsgType.TEXT:
                assert json.loads(msg.data) == PONG
                pongs += 1
            elif msg.type in CLOSED_TYPES:
                return pings, pongs
            else:
                raise AssertionError(f"unexpected {msg!r}")

    pings, pongs = await asyncio.wait_for(until_closed(), WAIT)
    assert pings >= 1 and pongs >= 1


@pytest.mark.req("IN-5")
async def test_client_that_answers_pings_stays_open(start_node, world, raw_ws):
    node = await start_node(**KEEPALIVE)
    ws = await _authed_raw(node, world, raw_ws)
    wanted = 6  # 6 pings at 0.2 s: well past the 0.6 s pong timeout

    async def answer_pings() -> None:
        seen = 0
        while seen < wanted:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.PING, f"unexpected {msg!r}"
            seen += 1
            await ws.pong(msg.data)

    await asyncio.wait_for(answer_pings(), WAIT)
    assert not ws.closed
    await ws.send_str('{"type":"ping"}')
    while True:  # keep answering pings until the JSON pong arrives
        msg = await ws.receive(timeout=WAIT)
        if msg.type is aiohttp.WSMsgType.PING:
            await ws.pong(msg.data)
            continue
        assert msg.type is aiohttp.WSMsgType.TEXT and json.loads(msg.data) == PONG
        break

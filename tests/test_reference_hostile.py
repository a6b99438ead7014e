"""Hostile input against the reference server: the rows of issue 16, each as it was observed
(the input) and as the reference answers it now. What the contract requires of every target is
checked by the conformance cases; here, the reference's own choices where docs/protocol.md
leaves room, and its limits (docs/protocol.md, "Limits").

Everything goes over real sockets; inputs a well-behaved client library refuses to send (bytes
that are not UTF-8 in a header, unmasked frames) go over a raw TCP connection."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from urllib.parse import urlsplit

import jwt
import pytest

from conformance.client import WsClient
from conformance.rawws import OP_CLOSE, OP_TEXT, RawWebSocket, encode_frame
from reference import positions
from reference.broadcaster import MemoryBroadcaster
from reference.config import DEV_JWT_SECRET
from reference.ratelog import RateLimitedLog
from wire_helpers import WAIT, ack, health, http, poll, sub_error

PING = {"type": "ping"}
PONG = {"type": "pong"}


async def answers_until_pong(client: WsClient, *frames) -> list:
    """Send `frames` (str: text, bytes: binary, else JSON), then a ping: every frame received up to
    its pong (the reference answers in order)."""
    start = len(client.frames)
    for f in frames:
        if isinstance(f, bytes):
            await client.ws.send_bytes(f)
        else:
            await client.send(f)
    await client.send(PING)
    await client.wait_for(lambda f: f == PONG, WAIT, start=start)
    got = client.frames[start:]
    return got[:got.index(PONG)]


async def raw_http(node, request: bytes) -> bytes:
    """Write a request as these bytes, return the whole answer (the server closes)."""
    u = urlsplit(node.base)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- row 1: a lone surrogate in a subscribe -------------------------------------------------------

@pytest.mark.req("IN-1")
@pytest.mark.parametrize("payload", [
    {"scope": "task", "id": "\ud800", "since": "1-1.aaaaaaaaaaaa"},
    {"scope": "task", "id": "\ud800"},
    {"scope": "\udfff", "id": "x"},
    {"scope": "workspace", "id": "a\ud800b"},
], ids=["task_with_since", "task", "scope", "workspace"])
async def test_lone_surrogates_are_invalid_payload_and_the_connection_keeps_working(connect, world, payload):
    alice = await connect(world.alice, world.ws_a)
    got = await answers_until_pong(alice, {"type": "subscribe", "payload": payload})
    want = {"type": "subscribe_error",
            "payload": {"scope": payload["scope"], "id": payload["id"], "error": "invalid payload"}}
    assert got == [want]
    assert await alice.subscribe("task", world.task_a) == ack("subscribe", "task", world.task_a)


# -- row 2: tokens and bearers that are not text ---------------------------------------------------

@pytest.mark.req("HS-3", "HS-4")
async def test_a_token_with_a_lone_surrogate_is_an_invalid_token(session, node, world):
    client = await WsClient.connect(session, node.base, workspace_id=world.ws_a)
    try:
        await client.send({"type": "auth", "payload": {"token": "eyJ\ud800.x.y"}})
        assert await client.wait_for(lambda f: True, WAIT) == {"error": "invalid token"}
        assert await client.wait_closed(WAIT) == 1008
    finally:
        await client.close()


@pytest.mark.req("HS-2", "HS-4")
async def test_a_cookie_that_is_not_utf8_is_an_invalid_token(node, world):
    answer = await raw_http(node, b"GET /ws?workspace_id=" + world.ws_a.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                            b"Cookie: multica_auth=ab\xffcd\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 401 and answer.endswith(b'{"error": "invalid token"}')


@pytest.mark.req("HL-2", "CTL-1")
@pytest.mark.parametrize("path", ["/health/realtime", "/_control/info"])
async def test_a_bearer_that_is_not_ascii_is_refused_not_a_500(start_node, path):
    node = await start_node(metrics_token="metrics-secret")
    answer = await raw_http(node, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
                            + "Authorization: Bearer sécret\udcff\r\n\r\n".encode("utf-8", "surrogateescape"))
    assert status_of(answer) == 401


# -- row 3: slow headers and the connection cap ----------------------------------------------------

async def slow_socket(node, started: bytes = b"GET /health/realtime HTTP/1.1\r\nHost: x\r\n"):
    u = urlsplit(node.base)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    writer.write(started)  # and never the blank line that ends the headers
    await writer.drain()
    return reader, writer


async def test_headers_not_complete_within_the_header_timeout_close_the_socket(start_node, session, world):
    node = await start_node(header_timeout_s=0.5)
    alice = await WsClient.connect(session, node.base, workspace_id=world.ws_a, token=await node.control.token(world.alice))
    try:
        reader, writer = await slow_socket(node)
        t0 = time.monotonic()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed, nothing answered
        assert 0.4 < time.monotonic() - t0 < 3.0
        writer.close()
        # a WebSocket that finished its headers long ago is not touched
        assert await answers_until_pong(alice) == []
        assert (await health(session, node))["header_timeouts_total"] == 1
    finally:
        await alice.close()


async def test_at_the_connection_cap_slow_sockets_make_room_then_newcomers_get_503(start_node, session, world, caplog):
    node = await start_node(max_connections=6, header_timeout_s=30.0)
    guard = node.state.guard
    slow = [await slow_socket(node) for _ in range(6 - len(guard.open))]  # the session may hold one
    await poll(lambda: len(guard.open) == 6)
    # every place is held, the newest by sockets that never finish their headers: health still
    # answers, on a socket of its own
    answer = await raw_http(node, b"GET /health/realtime HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 200 and json.loads(answer.split(b"\r\n\r\n", 1)[1])["header_timeouts_total"] == 1
    assert await asyncio.wait_for(slow[0][0].read(), WAIT) == b""  # the oldest made room
    for _, w in slow:
        w.close()
    await poll(lambda: len(guard.open) <= 1)
    clients = []
    try:
        token = await node.control.token(world.alice)
        while len(guard.open) < 6:
            clients.append(await WsClient.connect(session, node.base, workspace_id=world.ws_a, token=token))
        with caplog.at_level(logging.WARNING, logger="scopehub.guard"):
            answers = [await raw_http(node, b"GET /health/realtime HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(5)]
        assert all(status_of(a) == 503 for a in answers)
        assert node.state.metrics.connections_refused == 5
        assert len([r for r in caplog.records if "connection cap" in r.getMessage()]) == 1  # rate-limited
    finally:
        for c in clients:
            await c.close()


# -- row 4: made-up scope names do not grow the node ----------------------------------------------

@pytest.mark.req("HL-1", "SUB-3")
async def test_made_up_scope_types_are_counted_as_other(connect, session, node, world):
    alice = await connect(world.alice, world.ws_a)
    names = [f"kind-{i}-" + "x" * 1000 for i in range(50)]
    got = await answers_until_pong(alice, *({"type": "subscribe", "payload": {"scope": n, "id": "x"}} for n in names))
    assert got == [sub_error(n, "x", "unknown_scope") for n in names]
    doc = await health(session, node)
    assert doc["subscribe_denied_total"] == {"other": 50}
    assert len(json.dumps(doc)) < 4096


# -- row 7: control API numbers --------------------------------------------------------------------

@pytest.mark.req("CTL-3")
@pytest.mark.parametrize("ttl", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"9" * 400, b"1e12"])
async def test_a_ttl_that_is_not_a_finite_sane_number_is_a_400(session, node, world, ttl):
    status, doc, _ = await http(session, "POST", node.base + "/_control/token",
                                data=b'{"user":"%s","ttl_s":%s}' % (world.alice.encode(), ttl),
                                headers={"Authorization": f"Bearer {node.config.control_token}"})
    assert status == 400 and "error" in doc


@pytest.mark.req("CTL-4")
@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"1e999", b"1" * 5000])
async def test_a_frame_holding_a_number_json_cannot_carry_is_a_400(session, node, world, value):
    status, doc, _ = await http(session, "POST", node.base + "/_control/publish",
                                data=b'{"scope":"task","id":"%s","frame":{"type":"x","n":%s}}' % (
                                    world.task_a.encode(), value),
                                headers={"Authorization": f"Bearer {node.config.control_token}"})
    assert status == 400 and "error" in doc


# -- rows 8 and 9: what is JSON ---------------------------------------------------------------------

@pytest.mark.req("IN-2", "IN-3")
async def test_valid_json_beyond_python_limits_is_answered(connect, world):
    """A 5,000-digit integer and 500 levels of nesting are still JSON: the ping is answered."""
    alice = await connect(world.alice, world.ws_a)
    start = len(alice.frames)
    await alice.send('{"type":"ping","n":%s}' % ("7" * 5000))
    await alice.send('{"type":"ping","deep":%s1%s}' % ("[" * 500, "]" * 500))
    await alice.send(PING)
    await alice.wait_for(lambda f: f == PONG, WAIT, start=start)
    assert await answers_until_pong(alice) == []  # nothing else came
    assert alice.frames[start:].count(PONG) == 4


@pytest.mark.req("IN-3")
async def test_nesting_deeper_than_the_parser_goes_is_ignored(connect, world):
    alice = await connect(world.alice, world.ws_a)
    assert await answers_until_pong(alice, '{"type":"ping","deep":%s1%s}' % ("[" * 5000, "]" * 5000)) == []


@pytest.mark.req("IN-3")
@pytest.mark.parametrize("data", [
    '{"type":"ping"}'.encode("utf-16"), '{"type":"ping"}'.encode("utf-16-le"), '{"type":"ping"}'.encode("utf-32"),
    b"\xef\xbb\xbf" + b'{"type":"ping"}', b'{"type":"ping","x":"\xed\xa0\x80"}', b'{"type":"ping","x":NaN}',
    '{"type":"ping","x":Infinity}', '{"type":"ping","x":-Infinity}', '\ufeff{"type":"ping"}',
], ids=["utf16_bom", "utf16le", "utf32", "utf8_bom", "encoded_surrogate", "nan_binary", "infinity",
        "minus_infinity", "bom_text"])
async def test_frames_that_are_not_utf8_json_are_ignored(connect, world, data):
    alice = await connect(world.alice, world.ws_a)
    assert await answers_until_pong(alice, data) == []


# -- row 10: positions in other digits --------------------------------------------------------------

@pytest.mark.req("REP-5")
async def test_a_since_in_other_digits_or_with_a_newline_is_invalid_payload(connect, world):
    alice = await connect(world.alice, world.ws_a)
    tag = positions.scope_tag("task", world.task_a)
    for since in ("\u0661\u0662-3." + tag, "12-\u0663." + tag, "12-3\n." + tag, "12-3." + tag + "\n",
                  "１２-3." + tag):
        got = await answers_until_pong(alice, {"type": "subscribe",
                                               "payload": {"scope": "task", "id": world.task_a, "since": since}})
        assert got == [sub_error("task", world.task_a, "invalid payload")], since


# -- row 11: RFC 6455 framing -----------------------------------------------------------------------

async def raw_authed(node, world) -> RawWebSocket:
    sock = await RawWebSocket.connect(node.base, {"workspace_id": world.ws_a})
    token = await node.control.token(world.alice)
    sock.send_frame(OP_TEXT, json.dumps({"type": "auth", "payload": {"token": token}}).encode())
    await sock.flush()
    assert json.loads((await asyncio.wait_for(sock.recv_frame(), WAIT))[1]) == {"type": "auth_ack"}
    return sock


@pytest.mark.req("IN-3")
@pytest.mark.parametrize("frame", [
    bytes([0x81, 15]) + b'{"type":"ping"}',  # unmasked
    encode_frame(OP_CLOSE, struct.pack("!H", 5000)),
    encode_frame(OP_CLOSE, struct.pack("!H", 1006)),
    encode_frame(OP_CLOSE, struct.pack("!H", 999)),
], ids=["unmasked", "close_5000", "close_1006", "close_999"])
async def test_frames_rfc6455_forbids_fail_the_connection_with_1002(node, world, frame):
    sock = await raw_authed(node, world)
    try:
        sock.writer.write(frame)
        await sock.flush()
        while True:
            opcode, data = await asyncio.wait_for(sock.recv_frame(), WAIT)
            if opcode == OP_CLOSE:
                break
        assert RawWebSocket.close_code_of(data) == 1002
    finally:
        await sock.close()


@pytest.mark.req("IN-3")
async def test_a_close_code_for_applications_is_answered_normally(node, world):
    sock = await raw_authed(node, world)
    try:
        sock.send_frame(OP_CLOSE, struct.pack("!H", 4000) + b"bye")
        await sock.flush()
        while True:
            opcode, data = await asyncio.wait_for(sock.recv_frame(), WAIT)
            if opcode == OP_CLOSE:
                break
        assert RawWebSocket.close_code_of(data) != 1002
    finally:
        await sock.close()


# -- row 12: subscriptions per connection -----------------------------------------------------------

@pytest.mark.req("SUB-2")
async def test_a_connection_holds_at_most_max_subscriptions_task_and_chat_scopes(start_node, session, world):
    node = await start_node(max_subscriptions=2)
    info = await node.control.info()
    assert info["max_subscriptions"] == 2
    alice = await WsClient.connect(session, node.base, workspace_id=world.ws_a, token=await node.control.token(world.alice))
    try:
        assert await alice.subscribe("task", world.task_a) == ack("subscribe", "task", world.task_a)
        assert await alice.subscribe("chat", world.chat_alice) == ack("subscribe", "chat", world.chat_alice)
        assert await alice.subscribe("task", world.task_a) == ack("subscribe", "task", world.task_a)  # held already
        too_many = sub_error("task", world.chat_task_alice, "too many subscriptions")
        assert await alice.subscribe("task", world.chat_task_alice) == too_many
        assert await alice.subscribe("workspace", world.ws_a) == ack("subscribe", "workspace", world.ws_a)
        await alice.send({"type": "unsubscribe", "payload": {"scope": "chat", "id": world.chat_alice}})
        assert await alice.subscribe("task", world.chat_task_alice) == ack("subscribe", "task", world.chat_task_alice)
    finally:
        await alice.close()


# -- row 13: the memory relay's byte cap -------------------------------------------------------------

@pytest.mark.req("REP-4", "REP-6")
async def test_the_memory_relay_keeps_at_most_max_bytes(start_node, connect, world):
    node = await start_node(broadcaster=MemoryBroadcaster(max_bytes=20_000))
    assert (await node.control.info())["retention"]["max_bytes"] == 20_000
    answers = [await node.control.publish("task", world.task_a, {"type": "x", "pad": "p" * 1000}) for _ in range(60)]
    assert node.state.broadcaster.snapshot()["retained_bytes"] <= 20_000
    alice = await connect(world.alice, world.ws_a, on=node)
    assert (await alice.subscribe("task", world.task_a, since=answers[0]["pos"]))["payload"]["recovered"] is False
    bob = await connect(world.bob, world.ws_a, on=node)
    got = await bob.subscribe("task", world.task_a, since=answers[-5]["pos"])
    assert got["payload"]["recovered"] is True
    await bob.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == answers[-1]["event_id"], WAIT)


# -- row 14: failed authentications -------------------------------------------------------------------

@pytest.mark.req("HL-1")
async def test_failed_authentications_are_counted(session, node, world):
    before = (await health(session, node))["auth_failures_total"]
    for token in ("mul_guess", "not-a-jwt"):
        client = await WsClient.connect(session, node.base, workspace_id=world.ws_a)
        await client.send({"type": "auth", "payload": {"token": token}})
        assert await client.wait_closed(WAIT) == 1008
    status, _, _ = await http(session, "GET", node.base + f"/ws?workspace_id={world.ws_a}",
                              headers={"Cookie": "multica_auth=mul_guess"})
    assert status == 401
    assert (await health(session, node))["auth_failures_total"] == before + 3


def test_the_rate_limited_log_writes_one_line_per_interval(caplog):
    log = RateLimitedLog(logging.getLogger("scopehub.test"), "authentication failed", interval_s=60)
    with caplog.at_level(logging.WARNING, logger="scopehub.test"):
        for i in range(1000):
            log.note(f"guess {i}")
        log._next = 0  # the interval is over
        log.note("guess 1000")
    assert [r.getMessage() for r in caplog.records] == [
        "authentication failed: guess 0", "authentication failed: guess 1000 (and 999 more in the last 60 s)"]


# -- row 15: claims and cookies as Multica reads them ---------------------------------------------------

@pytest.mark.req("HS-4")
@pytest.mark.parametrize("exp", ["9999999999", "1", True, None], ids=["future_string", "past_string", "bool", "null"])
async def test_an_exp_that_is_not_a_number_is_an_invalid_token(session, node, world, exp):
    token = jwt.encode({"sub": world.alice, "exp": exp}, DEV_JWT_SECRET, algorithm="HS256")
    client = await WsClient.connect(session, node.base, workspace_id=world.ws_a)
    try:
        await client.send({"type": "auth", "payload": {"token": token}})
        assert await client.wait_for(lambda f: True, WAIT) == {"error": "invalid token"}
    finally:
        await client.close()


@pytest.mark.req("HS-2")
async def test_the_first_of_two_auth_cookies_counts(session, node, world):
    good = await node.control.token(world.alice)
    url = node.base + f"/ws?workspace_id={world.ws_a}"
    status, doc, _ = await http(session, "GET", url, headers={"Cookie": f"multica_auth=bad; multica_auth={good}"})
    assert (status, doc) == (401, {"error": "invalid token"})
    ws = await session.ws_connect(url, headers={"Cookie": f"multica_auth={good}; multica_auth=bad"})
    try:
        await ws.send_str(json.dumps(PING))
        assert json.loads((await ws.receive(timeout=WAIT)).data) == PONG  # live without auth (HS-2)
    finally:
        await ws.close()


@pytest.mark.heavy
@pytest.mark.req("AZ-3")
async def test_spellings_of_one_task_make_no_redis_keys(start_cluster, session, world):
    """Row 5: 2,000 spellings of one task once made 2,000 streams (199 MB of Redis). Forbidden
    before any lookup, they make none."""
    import redis.asyncio as aioredis

    from test_reference_authorization import spellings

    cluster = await start_cluster("streams", nodes=1)
    store = aioredis.from_url(cluster.redis.url)
    try:
        alice = await WsClient.connect(session, cluster.urls[0], workspace_id=world.ws_a,
                                       token=await cluster.controls[0].token(world.alice))
        try:
            assert await alice.subscribe("task", world.task_a) == ack("subscribe", "task", world.task_a)
            keys = await store.dbsize()
            sent = [s for s in spellings(world.task_a) if s != world.task_a]
            sent += ["{%s}%s" % (world.task_a, "x" * i) for i in range(200)]  # not even UUIDs: no keys either
            got = await answers_until_pong(alice, *({"type": "subscribe", "payload": {"scope": "task", "id": s}}
                                                    for s in sent))
            assert got == [sub_error("task", s, "forbidden") for s in sent]
            assert await store.dbsize() == keys
        finally:
            await alice.close()
    finally:
        await store.aclose()

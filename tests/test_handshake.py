"""HS-1..HS-7: the WebSocket handshake, cookie and first-message auth, tokens, origins,
auto-subscription and the order of handshake checks, over real sockets against reference
nodes on ephemeral ports.

Refusals before the upgrade are read as plain HTTP answers to an upgrade request, so their
status and JSON body can be checked exactly. Refusals after the upgrade (token auth) are one
text frame `{"error": ...}` and then the close. After every bad-input case the node must still
serve a fresh client."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jwt
import pytest

from conformance.client import WsClient
from reference.config import parse_cidrs

WAIT = 5.0  # every wait in this file is bounded by this (or less)

AUTH_ACK = {"type": "auth_ack"}
PONG = {"type": "pong"}
PING = {"type": "ping"}

INVALID_TOKEN = "invalid token"
INVALID_CLAIMS = "invalid claims"
DISABLED = "account disabled"
NOT_MEMBER = "not a member of this workspace"
EXPECTED_AUTH = "expected auth message as first frame"
AUTH_TIMEOUT = "auth timeout or read error"
WORKSPACE_REQUIRED = {"error": "workspace_id or workspace_slug required"}
WORKSPACE_NOT_FOUND = {"error": "workspace not found"}
ORIGIN_REFUSED = {"error": "origin not allowed"}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def auth_frame(token: Any) -> str:
    return json.dumps({"type": "auth", "payload": {"token": token}})


def upgrade_headers() -> dict:
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }


async def handshake(session: aiohttp.ClientSession, node, params: dict, *, cookie: str | None = None,
                    origin: str | None = None, headers: dict | None = None) -> tuple[int, Any]:
    """Send a WebSocket upgrade request that the node is expected to refuse; return the HTTP
    status and the parsed JSON body of the refusal."""
    hdrs = upgrade_headers()
    hdrs.update(headers or {})
    if cookie is not None:
        hdrs["Cookie"] = f"multica_auth={cookie}"
    if origin is not None:
        hdrs["Origin"] = origin
    async with session.get(node.base + "/ws", params=params, headers=hdrs,
                           timeout=aiohttp.ClientTimeout(total=WAIT)) as r:
        assert r.status != 101, "the node upgraded a request it must refuse"
        text = await r.text()
        assert r.content_type == "application/json", (r.status, r.content_type, text)
        return r.status, json.loads(text)


@pytest.fixture
async def open_ws(session):
    """open_ws(node, params=None, *, cookie, origin, headers, autoping) -> WsClient, upgraded but
    not authenticated. Every client is closed in teardown."""
    opened: list[WsClient] = []

    async def open_(node, params: dict | None = None, *, cookie: str | None = None, origin: str | None = None,
                    headers: dict | None = None) -> WsClient:
        hdrs = dict(headers or {})
        if cookie is not None:
            hdrs["Cookie"] = f"multica_auth={cookie}"
        if origin is not None:
            hdrs["Origin"] = origin
        ws = await asyncio.wait_for(
            session.ws_connect(node.base + "/ws", params=params or {}, headers=hdrs,
                               timeout=aiohttp.ClientWSTimeout(ws_close=2.0), max_msg_size=0),
            WAIT)
        client = WsClient(ws)
        opened.append(client)
        return client

    yield open_
    for c in opened:
        await c.close()


def is_frame(f: Any) -> bool:
    return isinstance(f, dict) and ("type" in f or "error" in f)


async def first_frame(client: WsClient) -> Any:
    return await client.wait_for(is_frame, WAIT)


async def authenticate(client: WsClient, token: str) -> Any:
    """Send the auth frame and return the node's answer."""
    await client.send(auth_frame(token))
    return await first_frame(client)


async def expect_refusal(client: WsClient, text: str) -> None:
    """HS-3: exactly one text frame {"error": text}, then the close (the reference server's code is
    1008, docs/protocol.md; the contract names none)."""
    code = await client.wait_closed(WAIT)
    assert client.frames == [{"error": text}]
    assert code == 1008


async def ping_pong(client: WsClient) -> None:
    start = len(client.frames)
    await client.send(PING)
    assert await client.wait_for(is_frame, WAIT, start=start) == PONG


async def assert_serving(open_ws, node, world) -> None:
    """The node still serves a fresh token client: auth_ack, then pong."""
    client = await open_ws(node, {"workspace_id": world.ws_a})
    assert await authenticate(client, await node.control.token(world.bob)) == AUTH_ACK
    await ping_pong(client)
    await client.close()


def sign(claims: dict, secret: str, alg: str = "HS256") -> str:
    with warnings.catch_warnings():  # PyJWT warns about a short key for HS384/HS512
        warnings.simplefilter("ignore")
        return jwt.encode(claims, secret, algorithm=alg)


def b64url(doc: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def unsigned(claims: dict, alg: str = "none") -> str:
    """A JWT with an unsigned algorithm header and an empty signature."""
    return f"{b64url({'alg': alg, 'typ': 'JWT'})}.{b64url(claims)}."


def later(s: int = 3600) -> int:
    return int(time.time()) + s


async def publish(node, scope: str, scope_id: str) -> tuple[dict, dict]:
    frame = {"type": "test:event", "payload": {"nonce": uuid.uuid4().hex}}
    return frame, await node.control.publish(scope, scope_id, frame)


async def expect_event(client: WsClient, frame: dict, published: dict) -> None:
    got = await client.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == published["event_id"], WAIT)
    assert got["type"] == frame["type"] and got["payload"] == frame["payload"]


# --------------------------------------------------------------------------------------------
# The bad tokens of HS-2 / HS-3 / HS-4, each with the cookie-mode status and the error text.
# A maker gets (node, world) and returns the token; `workspace` is "a" or "b".
# --------------------------------------------------------------------------------------------

TokenMaker = Callable[[Any, Any], Awaitable[str]]


async def _tampered(node, world) -> str:
    """alice's signature on bob's claims."""
    h, _, s = (await node.control.token(world.alice)).split(".")
    _, p, _ = (await node.control.token(world.bob)).split(".")
    return f"{h}.{p}.{s}"


async def _truncated(node, world) -> str:
    return (await node.control.token(world.alice)).rsplit(".", 1)[0]


def _static(value: str) -> TokenMaker:
    async def make(node, world) -> str:
        return value
    return make


def _signed(claims: Callable[[Any], dict], alg: str = "HS256", secret: str | None = None) -> TokenMaker:
    async def make(node, world) -> str:
        return sign(claims(world), secret or node.config.jwt_secret, alg)
    return make


BAD_TOKENS: dict[str, tuple[TokenMaker, str, int, str]] = {
    # id: (maker, workspace, cookie-mode status, error text)
    "garbage": (_static("not-a-jwt"), "a", 401, INVALID_TOKEN),
    "whitespace": (_static("   "), "a", 401, INVALID_TOKEN),
    "truncated_jwt": (_truncated, "a", 401, INVALID_TOKEN),
    "tampered_payload": (_tampered, "a", 401, INVALID_TOKEN),
    "bad_signature": (_signed(lambda w: {"sub": w.alice, "exp": later()}, secret="another-secret-" + "x" * 32),
                      "a", 401, INVALID_TOKEN),
    "alg_none": (lambda n, w: _static(unsigned({"sub": w.alice, "exp": later()}))(n, w), "a", 401, INVALID_TOKEN),
    "alg_None": (lambda n, w: _static(unsigned({"sub": w.alice, "exp": later()}, "None"))(n, w), "a", 401,
                 INVALID_TOKEN),
    "alg_HS384": (_signed(lambda w: {"sub": w.alice, "exp": later()}, "HS384"), "a", 401, INVALID_TOKEN),
    "alg_HS512": (_signed(lambda w: {"sub": w.alice, "exp": later()}, "HS512"), "a", 401, INVALID_TOKEN),
    "expired_ttl_0": (lambda n, w: n.control.token(w.alice, ttl_s=0), "a", 401, INVALID_TOKEN),
    "exp_equals_now": (_signed(lambda w: {"sub": w.alice, "exp": int(time.time())}), "a", 401, INVALID_TOKEN),
    "nbf_in_future": (_signed(lambda w: {"sub": w.alice, "nbf": later(), "exp": later(7200)}), "a", 401,
                      INVALID_TOKEN),
    "unknown_pat": (_static("mul_" + secrets.token_hex(16)), "a", 401, INVALID_TOKEN),
    "bare_pat_prefix": (_static("mul_"), "a", 401, INVALID_TOKEN),
    "user_null": (lambda n, w: n.control.token(None), "a", 401, INVALID_CLAIMS),
    "user_empty": (lambda n, w: n.control.token(""), "a", 401, INVALID_CLAIMS),
    "sub_blank": (_signed(lambda w: {"sub": "   ", "exp": later()}), "a", 401, INVALID_CLAIMS),
    "sub_number": (_signed(lambda w: {"sub": 42, "exp": later()}), "a", 401, INVALID_CLAIMS),
    "sub_bool": (_signed(lambda w: {"sub": True, "exp": later()}), "a", 401, INVALID_CLAIMS),
    "sub_list": (_signed(lambda w: {"sub": [w.alice], "exp": later()}), "a", 401, INVALID_CLAIMS),
    "sub_object": (_signed(lambda w: {"sub": {"id": w.alice}, "exp": later()}), "a", 401, INVALID_CLAIMS),
    "sub_null": (_signed(lambda w: {"sub": None, "exp": later()}), "a", 401, INVALID_CLAIMS),
    "disabled_jwt": (lambda n, w: n.control.token(w.dave), "a", 403, DISABLED),
    "disabled_pat": (lambda n, w: _static(w.pat_dave)(n, w), "a", 403, DISABLED),
    # disabled wins over membership: dave is not a member of B either
    "disabled_non_member": (lambda n, w: n.control.token(w.dave), "b", 403, DISABLED),
    "non_member": (lambda n, w: n.control.token(w.carol), "a", 403, NOT_MEMBER),
    "non_member_pat": (lambda n, w: _static(w.pat_alice)(n, w), "b", 403, NOT_MEMBER),
    "outsider": (lambda n, w: n.control.token(w.outsider), "a", 403, NOT_MEMBER),
}


def ws_of(world, which: str) -> str:
    return world.ws_a if which == "a" else world.ws_b


# --------------------------------------------------------------------------------------------
# HS-1: workspace selection
# --------------------------------------------------------------------------------------------

@pytest.mark.req("HS-1")
@pytest.mark.parametrize("params", [
    {},
    {"workspace_id": ""},
    {"workspace_slug": ""},
    {"workspace_id": "", "workspace_slug": ""},
    {"client_platform": "web", "client_version": "1.2.3", "client_os": "linux"},
    {"workspace": "x", "slug": "y"},
], ids=["none", "empty_id", "empty_slug", "both_empty", "only_client_params", "wrong_names"])
async def test_missing_workspace_answers_400_before_upgrade(session, node, world, open_ws, params):
    assert await handshake(session, node, params) == (400, WORKSPACE_REQUIRED)
    await assert_serving(open_ws, node, world)


@pytest.mark.req("HS-1")
async def test_missing_workspace_refuses_the_websocket_client(session, node):
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await asyncio.wait_for(session.ws_connect(node.base + "/ws"), WAIT)
    assert e.value.status == 400


@pytest.mark.req("HS-1")
@pytest.mark.parametrize("slug", ["no-such-workspace", "WS-A-UPPER", "%00", "a" * 300])
async def test_unknown_slug_answers_404(session, node, world, open_ws, slug):
    assert await handshake(session, node, {"workspace_slug": slug}) == (404, WORKSPACE_NOT_FOUND)
    await assert_serving(open_ws, node, world)


@pytest.mark.req("HS-1")
async def test_unknown_slug_of_another_case_answers_404(session, node, world):
    assert await handshake(session, node, {"workspace_slug": world.slug_a.upper()}) == (404, WORKSPACE_NOT_FOUND)


@pytest.mark.req("HS-1", "HS-3", "HS-6")
async def test_slug_selects_its_workspace(node, world, open_ws):
    client = await open_ws(node, {"workspace_slug": world.slug_a})
    assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK
    frame, published = await publish(node, "workspace", world.ws_a)
    await expect_event(client, frame, published)


@pytest.mark.req("HS-1", "HS-3")
async def test_slug_of_a_workspace_the_user_is_not_in_is_refused(node, world, open_ws):
    client = await open_ws(node, {"workspace_slug": world.slug_b})
    await client.send(auth_frame(await node.control.token(world.alice)))
    await expect_refusal(client, NOT_MEMBER)


@pytest.mark.req("HS-1", "HS-6")
@pytest.mark.parametrize("slug", ["no-such-workspace", "slug_b"])
async def test_workspace_id_wins_over_slug(node, world, open_ws, slug):
    """Multica reads workspace_slug only when workspace_id is absent."""
    slug = world.slug_b if slug == "slug_b" else slug
    client = await open_ws(node, {"workspace_id": world.ws_a, "workspace_slug": slug})
    assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK
    frame, published = await publish(node, "workspace", world.ws_a)
    await expect_event(client, frame, published)


@pytest.mark.req("HS-1", "HS-3")
async def test_client_metadata_params_are_accepted(node, world, open_ws):
    client = await open_ws(node, {"workspace_id": world.ws_a, "client_platform": "desktop",
                                  "client_version": "0.9.1-beta+42", "client_os": "macOS 14.4 (arm64)"})
    assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK
    await ping_pong(client)


@pytest.mark.req("HS-1", "HS-3")
async def test_unknown_workspace_id_is_not_a_member(node, world, open_ws):
    client = await open_ws(node, {"workspace_id": str(uuid.uuid4())})
    await client.send(auth_frame(await node.control.token(world.alice)))
    await expect_refusal(client, NOT_MEMBER)
    await assert_serving(open_ws, node, world)


@pytest.mark.req("HS-1", "HS-2")
async def test_unknown_workspace_id_with_cookie_answers_403(session, node, world):
    status, body = await handshake(session, node, {"workspace_id": str(uuid.uuid4())},
                                   cookie=await node.control.token(world.alice))
    assert (status, body) == (403, {"error": NOT_MEMBER})


# --------------------------------------------------------------------------------------------
# HS-2: cookie auth
# --------------------------------------------------------------------------------------------

@pytest.mark.req("HS-2", "IN-2")
@pytest.mark.parametrize("kind", ["jwt", "pat"])
async def test_cookie_connection_is_live_without_auth_ack(node, world, open_ws, kind):
    cookie = await node.control.token(world.alice) if kind == "jwt" else world.pat_alice
    client = await open_ws(node, {"workspace_id": world.ws_a}, cookie=cookie)
    await client.send(PING)
    assert await first_frame(client) == PONG
    assert client.frames == [PONG]  # no auth_ack before it


# A cookie value of blanks is an empty cookie once parsed (Go and aiohttp alike): token mode.
COOKIE_CASES = [case for case in BAD_TOKENS if case != "whitespace"]


@pytest.mark.req("HS-2", "HS-4")
@pytest.mark.parametrize("case", COOKIE_CASES)
async def test_cookie_with_bad_token_is_refused_before_upgrade(session, node, world, open_ws, case):
    maker, which, status, text = BAD_TOKENS[case]
    token = await maker(node, world)
    assert await handshake(session, node, {"workspace_id": ws_of(world, which)}, cookie=token) == (status, {"error": text})
    await assert_serving(open_ws, node, world)


@pytest.mark.req("HS-2")
async def test_cookie_refusal_reaches_the_websocket_client_as_http_status(session, node, world):
    hdrs = {"Cookie": f"multica_auth={await node.control.token(world.carol)}"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await asyncio.wait_for(session.ws_connect(node.base + "/ws", params={"workspace_id": world.ws_a},
                                                  headers=hdrs), WAIT)
    assert e.value.status == 403


@pytest.mark.req("HS-2", "HS-3")
async def test_empty_cookie_falls_back_to_token_auth(node, world, open_ws):
    """Multica ignores an empty multica_auth cookie: the connection is in token mode."""
    client = await open_ws(node, {"workspace_id": world.ws_a}, headers={"Cookie": "multica_auth="})
    assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK


@pytest.mark.req("HS-2", "HS-3")
async def test_other_cookies_do_not_authenticate(node, world, open_ws):
    token = await node.control.token(world.alice)
    client = await open_ws(node, {"workspace_id": world.ws_a}, headers={"Cookie": f"session={token}"})
    await client.send(PING)
    await expect_refusal(client, EXPECTED_AUTH)


@pytest.mark.req("HS-2", "IN-3")
async def test_auth_frame_on_cookie_connection_is_ignored(node, world, open_ws):
    client = await open_ws(node, {"workspace_id": world.ws_a}, cookie=await node.control.token(world.alice))
    await client.send(auth_frame(await node.control.token(world.bob)))
    await client.send(PING)
    assert await first_frame(client) == PONG
    assert client.frames == [PONG]


# --------------------------------------------------------------------------------------------
# HS-3: first-message token auth
# --------------------------------------------------------------------------------------------

@pytest.mark.req("HS-3", "HS-4")
@pytest.mark.parametrize("kind", ["jwt", "jwt_with_email", "pat"])
async def test_token_auth_answers_auth_ack(node, world, open_ws, kind):
    if kind == "pat":
        token = world.pat_alice
    else:
        token = await node.control.token(world.alice, **({"email": "alice@example.com"} if kind == "jwt_with_email" else {}))
    client = await open_ws(node, {"workspace_id": world.ws_a})
    assert await authenticate(client, token) == AUTH_ACK
    await ping_pong(client)
    assert client.frames == [AUTH_ACK, PONG]


@pytest.mark.req("HS-3", "HS-4")
@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_token_gets_one_error_frame_then_close(node, world, open_ws, case):
    maker, which, _status, text = BAD_TOKENS[case]
    token = await maker(node, world)
    client = await open_ws(node, {"workspace_id": ws_of(world, which)})
    await client.send(auth_frame(token))
    await expect_refusal(client, text)
    await assert_serving(open_ws, node, world)


# TOKEN is replaced by a valid token of alice's: only the frame's shape is wrong.
NOT_AUTH_FRAMES = {
    "malformed_json": '{"type":"auth","payload":{"token":"TOKEN"}',
    "not_json": "hello",
    "empty_text": "",
    "json_null": "null",
    "json_array": '[{"type":"auth","payload":{"token":"TOKEN"}}]',
    "deep_nesting": "[" * 5000 + "]" * 5000,
    "json_number": "42",
    "json_string": '"TOKEN"',
    "ping_first": '{"type":"ping"}',
    "subscribe_first": '{"type":"subscribe","payload":{"scope":"workspace","id":"x"}}',
    "type_wrong_case": '{"type":"AUTH","payload":{"token":"TOKEN"}}',
    "type_number": '{"type":1,"payload":{"token":"TOKEN"}}',
    "type_missing": '{"payload":{"token":"TOKEN"}}',
    "token_at_top_level": '{"type":"auth","token":"TOKEN"}',
    "payload_missing": '{"type":"auth"}',
    "payload_null": '{"type":"auth","payload":null}',
    "payload_string": '{"type":"auth","payload":"TOKEN"}',
    "payload_array": '{"type":"auth","payload":["TOKEN"]}',
    "token_missing": '{"type":"auth","payload":{}}',
    "token_empty": '{"type":"auth","payload":{"token":""}}',
    "token_null": '{"type":"auth","payload":{"token":null}}',
    "token_number": '{"type":"auth","payload":{"token":12345}}',
    "token_bool": '{"type":"auth","payload":{"token":true}}',
    "token_array": '{"type":"auth","payload":{"token":["TOKEN"]}}',
    "token_object": '{"type":"auth","payload":{"token":{"value":"TOKEN"}}}',
}


@pytest.mark.req("HS-3")
@pytest.mark.parametrize("case", list(NOT_AUTH_FRAMES))
async def test_first_frame_that_is_not_auth_is_refused(node, world, open_ws, case):
    token = await node.control.token(world.alice)
    client = await open_ws(node, {"workspace_id": world.ws_a})
    await client.ws.send_str(NOT_AUTH_FRAMES[case].replace("TOKEN", token))
    await expect_refusal(client, EXPECTED_AUTH)
    await assert_serving(open_ws, node, world)


@pytest.mark.req("HS-3")
@pytest.mark.parametrize("data", [b"", b"\x00\x01\x02\xff", b"\xff\xfe{not utf-8", b'{"type":"ping"}'],
                         ids=["empty", "bytes", "invalid_utf8", "json_ping"])
async def test_binary_first_frame_that_is_not_auth_is_refused(node, world, open_ws, data):
    client = await open_ws(node, {"workspace_id": world.ws_a})
    await client.ws.send_bytes(data)
    await expect_refusal(client, EXPECTED_AUTH)
    await assert_serving(open_ws, node, world)


@pytest.mark.req("HS-3")
async def test_binary_auth_frame_is_accepted(node, world, open_ws):
    """A binary frame is a data frame; Multica (gorilla ReadMessage) parses it like text."""
    client = await open_ws(node, {"workspace_id": world.ws_a})
    await client.ws.send_bytes(auth_frame(await node.control.token(world.alice)).encode())
    assert await first_frame(client) == AUTH_ACK


@pytest.mark.req("HS-3", "IN-2")
async def test_frames_pipelined_after_auth_are_processed_in_order(node, world, open_ws):
    client = await open_ws(node, {"workspace_id": world.ws_a})
    await client.send(auth_frame(await node.control.token(world.alice)))
    await client.send(PING)
    await client.send(PING)
    await client.wait_for(lambda f: len(client.frames) >= 3, WAIT)
    assert client.frames == [AUTH_ACK, PONG, PONG]


@pytest.mark.req("HS-3", "IN-3")
async def test_second_auth_frame_is_ignored(node, world, open_ws):
    client = await open_ws(node, {"workspace_id": world.ws_a})
    assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK
    await client.send(auth_frame(await node.control.token(world.carol)))  # not a member: still ignored
    await ping_pong(client)
    assert client.frames == [AUTH_ACK, PONG]


@pytest.mark.req("HS-3")
async def test_silent_client_gets_auth_timeout(start_node, world, open_ws):
    node = await start_node(auth_timeout_s=0.5)
    client = await open_ws(node, {"workspace_id": world.ws_a})
    await expect_refusal(client, AUTH_TIMEOUT)
    await assert_serving(open_ws, node, world)


@pytest.mark.req("HS-3")
async def test_transport_pings_do_not_count_as_auth_nor_extend_the_timeout(start_node, world, raw_ws):
    """A client that only sends transport pings is answered pong each time and still gets the
    auth timeout: pings are neither the first data frame nor activity that resets the timer."""
    node = await start_node(auth_timeout_s=0.5)
    ws = await raw_ws(node, {"workspace_id": world.ws_a}, autoping=False)

    async def ping_until_refused() -> tuple[int, aiohttp.WSMessage]:
        pongs = 0
        await ws.ping(b"0")
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.PONG:
                pongs += 1
                await ws.ping(str(pongs).encode())
                continue
            return pongs, msg

    pongs, msg = await asyncio.wait_for(ping_until_refused(), WAIT)
    assert pongs >= 1
    assert msg.type is aiohttp.WSMsgType.TEXT and json.loads(msg.data) == {"error": AUTH_TIMEOUT}
    closing = await asyncio.wait_for(ws.receive(), WAIT)
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1008)


@pytest.mark.req("HS-3")
async def test_transport_ping_before_auth_is_answered_and_auth_still_works(node, world, raw_ws):
    ws = await raw_ws(node, {"workspace_id": world.ws_a}, autoping=False)
    await ws.ping(b"before-auth")
    pong = await ws.receive(timeout=WAIT)
    assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"before-auth")
    await ws.send_str(auth_frame(await node.control.token(world.alice)))
    ack = await ws.receive(timeout=WAIT)
    assert ack.type is aiohttp.WSMsgType.TEXT and json.loads(ack.data) == AUTH_ACK


# --------------------------------------------------------------------------------------------
# HS-4: tokens (cases not covered by the BAD_TOKENS table)
# --------------------------------------------------------------------------------------------

@pytest.mark.req("HS-4")
@pytest.mark.parametrize("claims", [
    {"exp_in": 60},
    {},                                   # no exp at all: Multica's golang-jwt accepts it
    {"exp_in": 3600, "iat_in": 600},      # iat in the future: golang-jwt v5 does not check iat
    {"exp_in": 3600, "nbf_in": -10},
    {"exp_in": 3600, "email": "a@example.com", "aud": "someone", "iss": "elsewhere"},
], ids=["exp_in_60s", "no_exp", "iat_in_future", "nbf_in_past", "extra_claims"])
async def test_hs256_jwt_signed_with_the_secret_is_accepted(node, world, open_ws, claims):
    now = int(time.time())
    doc: dict = {"sub": world.alice}
    for k, v in claims.items():
        if k.endswith("_in"):
            doc[k[:-3]] = now + v
        else:
            doc[k] = v
    client = await open_ws(node, {"workspace_id": world.ws_a})
    assert await authenticate(client, sign(doc, node.config.jwt_secret)) == AUTH_ACK


@pytest.mark.req("HS-4")
async def test_user_is_taken_from_sub(node, world, open_ws):
    """A JWT for bob authenticates bob: he receives his own user events."""
    client = await open_ws(node, {"workspace_id": world.ws_a})
    token = sign({"sub": world.bob, "exp": later()}, node.config.jwt_secret)
    assert await authenticate(client, token) == AUTH_ACK
    frame, published = await publish(node, "user", world.bob)
    await expect_event(client, frame, published)


# --------------------------------------------------------------------------------------------
# HS-5: origins
# --------------------------------------------------------------------------------------------

def host_of(node) -> str:
    return node.base.split("://", 1)[1]


@pytest.mark.req("HS-5", "HS-3")
@pytest.mark.parametrize("origin", ["absent", "empty", "http_same_host", "https_same_host"])
async def test_origin_absent_or_equal_to_host_is_allowed(node, world, open_ws, origin):
    headers = {}
    if origin == "empty":
        headers["Origin"] = ""
    elif origin == "http_same_host":
        headers["Origin"] = f"http://{host_of(node)}"
    elif origin == "https_same_host":
        headers["Origin"] = f"https://{host_of(node)}"  # only the host is compared, as in Multica
    client = await open_ws(node, {"workspace_id": world.ws_a}, headers=headers)
    assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK


@pytest.mark.req("HS-5")
async def test_origin_host_comparison_ignores_case(node, world, open_ws):
    client = await open_ws(node, {"workspace_id": world.ws_a}, origin="https://realtime.example.com",
                           headers={"Host": "Realtime.EXAMPLE.com"})
    assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK


@pytest.mark.req("HS-5")
@pytest.mark.parametrize("origin", [
    "http://127.0.0.1:1", "https://evil.example.com", "null", "http://[::1", "HOST_WITHOUT_SCHEME",
    "http://localhost:3000",
], ids=["other_port", "other_host", "null", "malformed", "no_scheme", "multica_dev_default"])
async def test_foreign_origin_is_refused_403(session, node, world, open_ws, origin):
    origin = host_of(node) if origin == "HOST_WITHOUT_SCHEME" else origin
    status, body = await handshake(session, node, {"workspace_id": world.ws_a}, origin=origin)
    assert (status, body) == (403, ORIGIN_REFUSED)
    await assert_serving(open_ws, node, world)


@pytest.mark.req("HS-5", "HS-3")
async def test_foreign_origin_is_refused_before_a_token_client_can_auth(session, node, world):
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await asyncio.wait_for(session.ws_connect(node.base + "/ws", params={"workspace_id": world.ws_a},
                                                  origin="https://evil.example.com"), WAIT)
    assert e.value.status == 403


TRUSTED_LOOPBACK = parse_cidrs("127.0.0.1/32")


@pytest.mark.req("HS-5")
@pytest.mark.parametrize("origin,forwarded", [
    ("https://app.example.com", "app.example.com"),
    ("https://app.example.com", "APP.Example.com"),
    ("https://app.example.com", "app.example.com, proxy.internal:8080"),
    ("https://app.example.com", " app.example.com ,other"),
    ("https://app.example.com:8443", "app.example.com:8443"),
], ids=["exact", "case", "first_of_list", "spaces", "with_port"])
async def test_forwarded_host_from_trusted_proxy_is_honoured(start_node, world, open_ws, origin, forwarded):
    node = await start_node(trusted_proxies=TRUSTED_LOOPBACK)
    client = await open_ws(node, {"workspace_id": world.ws_a}, origin=origin,
                           headers={"X-Forwarded-Host": forwarded})
    assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK


@pytest.mark.req("HS-5")
@pytest.mark.parametrize("forwarded", ["proxy.internal, app.example.com", "other.example.com", "", " , app.example.com"],
                         ids=["not_first", "other_host", "empty", "empty_first"])
async def test_forwarded_host_from_trusted_proxy_must_match_in_first_entry(session, start_node, world, open_ws,
                                                                          forwarded):
    node = await start_node(trusted_proxies=TRUSTED_LOOPBACK)
    status, body = await handshake(session, node, {"workspace_id": world.ws_a}, origin="https://app.example.com",
                                   headers={"X-Forwarded-Host": forwarded})
    assert (status, body) == (403, ORIGIN_REFUSED)
    await assert_serving(open_ws, node, world)


@pytest.mark.req("HS-5")
@pytest.mark.parametrize("proxies", ["none", "10.0.0.0/8", "::1/128"])
async def test_forged_forwarded_host_from_untrusted_peer_is_refused(session, start_node, world, open_ws, proxies):
    node = await start_node(**({} if proxies == "none" else {"trusted_proxies": parse_cidrs(proxies)}))
    status, body = await handshake(session, node, {"workspace_id": world.ws_a}, origin="https://evil.example.com",
                                   headers={"X-Forwarded-Host": "evil.example.com"})
    assert (status, body) == (403, ORIGIN_REFUSED)
    await assert_serving(open_ws, node, world)


ALLOWED = ("https://app.example.com", "http://localhost:3000")


@pytest.mark.req("HS-5", "HS-3")
@pytest.mark.parametrize("origin", ALLOWED)
async def test_allow_listed_origin_is_allowed(start_node, world, open_ws, origin):
    node = await start_node(allowed_origins=ALLOWED)
    client = await open_ws(node, {"workspace_id": world.ws_a}, origin=origin)
    assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK


@pytest.mark.req("HS-5", "HS-2")
async def test_allow_listed_origin_with_cookie_is_live(start_node, world, open_ws):
    node = await start_node(allowed_origins=ALLOWED)
    client = await open_ws(node, {"workspace_id": world.ws_a}, origin=ALLOWED[0],
                           cookie=await node.control.token(world.alice))
    await ping_pong(client)


@pytest.mark.req("HS-5")
@pytest.mark.parametrize("origin", [
    "https://app.example.com/", "http://app.example.com", "https://app.example.com:443",
    "https://APP.example.com", "https://evil.app.example.com", "http://localhost:3001", "https://app.example.com.evil.io",
], ids=["trailing_slash", "other_scheme", "explicit_port", "other_case", "subdomain", "other_port", "suffix"])
async def test_allow_list_is_an_exact_match(session, start_node, world, open_ws, origin):
    node = await start_node(allowed_origins=ALLOWED)
    status, body = await handshake(session, node, {"workspace_id": world.ws_a}, origin=origin)
    assert (status, body) == (403, ORIGIN_REFUSED)
    await assert_serving(open_ws, node, world)


# --------------------------------------------------------------------------------------------
# HS-6: auto-subscription
# --------------------------------------------------------------------------------------------

@pytest.mark.req("HS-6", "HS-3")
@pytest.mark.parametrize("kind", ["jwt", "pat"])
async def test_token_connection_gets_workspace_and_user_events_right_after_auth_ack(node, world, open_ws, kind):
    client = await open_ws(node, {"workspace_id": world.ws_a})
    token = await node.control.token(world.alice) if kind == "jwt" else world.pat_alice
    assert await authenticate(client, token) == AUTH_ACK
    ws_frame, ws_pub = await publish(node, "workspace", world.ws_a)
    user_frame, user_pub = await publish(node, "user", world.alice)
    await expect_event(client, ws_frame, ws_pub)
    await expect_event(client, user_frame, user_pub)
    assert client.frames[0] == AUTH_ACK
    assert not any(isinstance(f, dict) and f.get("type") == "subscribe_ack" for f in client.frames)


@pytest.mark.req("HS-6", "HS-2")
async def test_cookie_connection_gets_workspace_and_user_events_right_after_upgrade(node, world, open_ws):
    client = await open_ws(node, {"workspace_id": world.ws_a}, cookie=await node.control.token(world.alice))
    ws_frame, ws_pub = await publish(node, "workspace", world.ws_a)
    user_frame, user_pub = await publish(node, "user", world.alice)
    await expect_event(client, ws_frame, ws_pub)
    await expect_event(client, user_frame, user_pub)
    assert [f["type"] for f in client.frames] == ["test:event", "test:event"]


# --------------------------------------------------------------------------------------------
# HS-7: order of the handshake checks
# --------------------------------------------------------------------------------------------

BAD_ORIGIN = "https://evil.example.com"


@pytest.mark.req("HS-7", "HS-1", "HS-2", "HS-5")
@pytest.mark.parametrize("workspace,cookie,origin,expected", [
    ("missing", "garbage", BAD_ORIGIN, (400, WORKSPACE_REQUIRED)),
    ("missing", "alice", BAD_ORIGIN, (400, WORKSPACE_REQUIRED)),
    ("missing", "dave", None, (400, WORKSPACE_REQUIRED)),
    ("unknown_slug", "garbage", BAD_ORIGIN, (404, WORKSPACE_NOT_FOUND)),
    ("unknown_slug", "dave", None, (404, WORKSPACE_NOT_FOUND)),
    ("a", "garbage", BAD_ORIGIN, (401, {"error": INVALID_TOKEN})),
    ("a", "expired", BAD_ORIGIN, (401, {"error": INVALID_TOKEN})),
    ("a", "no_sub", BAD_ORIGIN, (401, {"error": INVALID_CLAIMS})),
    ("a", "dave", BAD_ORIGIN, (403, {"error": DISABLED})),
    ("a", "carol", BAD_ORIGIN, (403, {"error": NOT_MEMBER})),
    ("slug_a", "carol", BAD_ORIGIN, (403, {"error": NOT_MEMBER})),
    ("a", "alice", BAD_ORIGIN, (403, ORIGIN_REFUSED)),
    ("a", None, BAD_ORIGIN, (403, ORIGIN_REFUSED)),
])
async def test_first_failing_check_in_hs1_hs2_hs5_order_answers(session, node, world, open_ws, workspace, cookie,
                                                               origin, expected):
    params = {
        "missing": {},
        "unknown_slug": {"workspace_slug": "no-such-workspace"},
        "a": {"workspace_id": world.ws_a},
        "slug_a": {"workspace_slug": world.slug_a},
    }[workspace]
    token = {
        None: None,
        "garbage": "garbage",
        "expired": await node.control.token(world.alice, ttl_s=0),
        "no_sub": await node.control.token(None),
        "alice": await node.control.token(world.alice),
        "carol": await node.control.token(world.carol),
        "dave": await node.control.token(world.dave),
    }[cookie]
    assert await handshake(session, node, params, cookie=token, origin=origin) == expected
    await assert_serving(open_ws, node, world)

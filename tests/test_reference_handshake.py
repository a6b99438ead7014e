"""HS-1..HS-7: what only the reference server chooses, where docs/protocol.md leaves room, and
its configuration flags. What the contract itself requires is checked by the conformance cases
(conformance/cases/handshake.py), against the reference and against any other target.

Here: the exact bodies of HS-1 and HS-5 refusals (last section, 3 and 4), the close code 1008
after an auth failure (last section, 2), the exact error frames and bodies (the contract allows
extra fields), and choices the contract does not make: empty parameters and cookies count as
absent, workspace_id wins over workspace_slug, slugs are case-sensitive, which JWT claims beyond
`sub` and `exp` are checked, binary frames are read like text, a second auth frame is ignored,
which Origin strings match; plus the trusted-proxy and allow-list flags."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import warnings
from typing import Any

import aiohttp
import jwt
import pytest

from conformance.cases.common import (AUTH_ACK, AUTH_TIMEOUT, DISABLED, EXPECTED_AUTH, INVALID_CLAIMS,
                                     INVALID_TOKEN, NOT_MEMBER, PING, PONG)
from conformance.client import WsClient
from reference.config import parse_cidrs

WAIT = 5.0
WORKSPACE_REQUIRED = {"error": "workspace_id or workspace_slug required"}
WORKSPACE_NOT_FOUND = {"error": "workspace not found"}
ORIGIN_REFUSED = {"error": "origin not allowed"}
BAD_ORIGIN = "https://evil.example.com"


async def handshake(session: aiohttp.ClientSession, node, params: dict, *, cookie: str | None = None,
                    origin: str | None = None, headers: dict | None = None) -> tuple[int, Any]:
    """An upgrade request the node must refuse: (status, JSON body)."""
    hdrs = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), **(headers or {})}
    if cookie is not None:
        hdrs["Cookie"] = f"multica_auth={cookie}"
    if origin is not None:
        hdrs["Origin"] = origin
    async with session.get(node.base + "/ws", params=params, headers=hdrs,
                           timeout=aiohttp.ClientTimeout(total=WAIT)) as r:
        assert r.status != 101, "the node upgraded a request it must refuse"
        assert r.content_type == "application/json", (r.status, r.content_type)
        return r.status, json.loads(await r.text())


@pytest.fixture
async def open_ws(session):
    """open_ws(node, params, *, cookie, origin, headers) -> WsClient, upgraded, not authenticated."""
    opened: list[WsClient] = []

    async def open_(node, params: dict, *, cookie: str | None = None, origin: str | None = None,
                    headers: dict | None = None) -> WsClient:
        hdrs = dict(headers or {})
        if cookie is not None:
            hdrs["Cookie"] = f"multica_auth={cookie}"
        if origin is not None:
            hdrs["Origin"] = origin
        ws = await asyncio.wait_for(session.ws_connect(node.base + "/ws", params=params, headers=hdrs,
                                                       timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                                                       max_msg_size=0), WAIT)
        client = WsClient(ws)
        opened.append(client)
        return client

    yield open_
    for c in opened:
        await c.close()


async def authenticate(client: WsClient, token: Any) -> Any:
    await client.send({"type": "auth", "payload": {"token": token}})
    return await client.wait_for(lambda f: isinstance(f, dict), WAIT)


async def refused_1008(client: WsClient, text: str) -> None:
    """The reference's refusal: exactly the frame {"error": text}, then close code 1008."""
    assert await client.wait_closed(WAIT) == 1008
    assert client.frames == [{"error": text}]


def sign(claims: dict, secret: str, alg: str = "HS256") -> str:
    with warnings.catch_warnings():  # PyJWT warns about a short key for HS384/HS512
        warnings.simplefilter("ignore")
        return jwt.encode(claims, secret, algorithm=alg)


def later(s: int = 3600) -> int:
    return int(time.time()) + s


# -- HS-1: bodies, empty parameters, slug choices --------------------------------------------------------

@pytest.mark.req("HS-1")
@pytest.mark.parametrize("params", [{}, {"workspace_id": ""}, {"workspace_slug": ""},
                                    {"workspace_id": "", "workspace_slug": ""}, {"workspace": "x", "slug": "y"}],
                         ids=["none", "empty_id", "empty_slug", "both_empty", "wrong_names"])
async def test_missing_workspace_body(session, node, params):
    """An empty workspace_id or workspace_slug counts as absent; the body is Multica's."""
    assert await handshake(session, node, params) == (400, WORKSPACE_REQUIRED)


@pytest.mark.req("HS-1")
async def test_unknown_slug_body_and_slugs_are_case_sensitive(session, node, world):
    for slug in ("no-such-workspace", world.slug_a.upper()):
        assert await handshake(session, node, {"workspace_slug": slug}) == (404, WORKSPACE_NOT_FOUND)


@pytest.mark.req("HS-1")
@pytest.mark.parametrize("slug", ["no-such-workspace", "slug_b"])
async def test_workspace_id_wins_over_slug(node, world, open_ws, slug):
    """Multica reads workspace_slug only when workspace_id is absent."""
    slug = world.slug_b if slug == "slug_b" else slug
    client = await open_ws(node, {"workspace_id": world.ws_a, "workspace_slug": slug})
    assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK


# -- HS-2 / HS-3 / HS-4: exact refusals, the close code, token choices -------------------------------------

def _signed(claims) -> Any:
    return lambda node, w: sign(claims(w), node.config.jwt_secret)


# id: (token maker (node, world) -> token or awaitable, workspace "a"/"b", cookie status, error text)
REFUSALS = {
    "garbage": (lambda n, w: "not-a-jwt", "a", 401, INVALID_TOKEN),
    "alg_HS384": (lambda n, w: sign({"sub": w.alice, "exp": later()}, n.config.jwt_secret, "HS384"), "a", 401,
                  INVALID_TOKEN),
    "expired": (lambda n, w: n.control.token(w.alice, ttl_s=0), "a", 401, INVALID_TOKEN),
    "exp_equals_now": (_signed(lambda w: {"sub": w.alice, "exp": int(time.time())}), "a", 401, INVALID_TOKEN),
    # the contract lists no nbf check; the reference (like golang-jwt) honours it
    "nbf_in_future": (_signed(lambda w: {"sub": w.alice, "nbf": later(), "exp": later(7200)}), "a", 401,
                      INVALID_TOKEN),
    "user_null": (lambda n, w: n.control.token(None), "a", 401, INVALID_CLAIMS),
    # a blank sub is a non-empty string; the reference (like Multica) calls it invalid claims
    "sub_blank": (_signed(lambda w: {"sub": "   ", "exp": later()}), "a", 401, INVALID_CLAIMS),
    "sub_number": (_signed(lambda w: {"sub": 42, "exp": later()}), "a", 401, INVALID_CLAIMS),
    "disabled_pat": (lambda n, w: w.pat_dave, "a", 403, DISABLED),
    # the contract orders no user checks: the reference answers disabled before membership
    "disabled_non_member": (lambda n, w: n.control.token(w.dave), "b", 403, DISABLED),
    "non_member_pat": (lambda n, w: w.pat_alice, "b", 403, NOT_MEMBER),
}


async def _token(maker, node, world) -> str:
    token = maker(node, world)
    return await token if asyncio.iscoroutine(token) else token


@pytest.mark.req("HS-2", "HS-4")
@pytest.mark.parametrize("case", list(REFUSALS))
async def test_cookie_refusal_is_exactly_the_error_body(session, node, world, case):
    maker, which, status, text = REFUSALS[case]
    params = {"workspace_id": world.ws_a if which == "a" else world.ws_b}
    assert await handshake(session, node, params, cookie=await _token(maker, node, world)) == (status, {"error": text})


@pytest.mark.req("HS-3", "HS-4")
@pytest.mark.parametrize("case", list(REFUSALS))
async def test_token_refusal_is_one_exact_frame_then_1008(node, world, open_ws, case):
    maker, which, _, text = REFUSALS[case]
    client = await open_ws(node, {"workspace_id": world.ws_a if which == "a" else world.ws_b})
    await client.send({"type": "auth", "payload": {"token": await _token(maker, node, world)}})
    await refused_1008(client, text)


@pytest.mark.req("HS-3", "HS-4")
async def test_blank_token_is_invalid_token_then_1008(node, world, open_ws):
    client = await open_ws(node, {"workspace_id": world.ws_a})
    await client.send({"type": "auth", "payload": {"token": "   "}})
    await refused_1008(client, INVALID_TOKEN)


@pytest.mark.req("HS-3")
@pytest.mark.parametrize("frame", ['{"type":"ping"}', '{"type":"auth"}', '{"type":"auth","payload":{"token":""}}',
                                   '{"type":"auth","payload":{"token":12345}}', "[" * 5000 + "]" * 5000],
                         ids=["ping", "no_payload", "empty_token", "numeric_token", "deep_nesting"])
async def test_first_frame_without_a_token_is_expected_auth_then_1008(node, world, open_ws, frame):
    """An auth frame without a string token could be either text; the reference says expected auth."""
    client = await open_ws(node, {"workspace_id": world.ws_a})
    await client.send(frame)
    await refused_1008(client, EXPECTED_AUTH)


@pytest.mark.req("HS-3")
async def test_silent_client_gets_the_timeout_then_1008(start_node, world, open_ws):
    node = await start_node(auth_timeout_s=0.5)
    client = await open_ws(node, {"workspace_id": world.ws_a})
    await refused_1008(client, AUTH_TIMEOUT)


@pytest.mark.req("HS-3")
async def test_binary_auth_frame_is_accepted(node, world, open_ws):
    """A binary frame is a data frame; the reference (as gorilla's ReadMessage) reads it like text."""
    client = await open_ws(node, {"workspace_id": world.ws_a})
    await client.ws.send_bytes(json.dumps({"type": "auth", "payload": {"token": await node.control.token(world.alice)}})
                               .encode())
    assert await client.wait_for(lambda f: isinstance(f, dict), WAIT) == AUTH_ACK


@pytest.mark.req("HS-3", "IN-3")
async def test_second_auth_frame_is_ignored(node, world, open_ws):
    client = await open_ws(node, {"workspace_id": world.ws_a})
    assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK
    await client.send({"type": "auth", "payload": {"token": await node.control.token(world.carol)}})
    await client.send(PING)
    await client.wait_for(lambda f: f == PONG, WAIT)
    assert client.frames == [AUTH_ACK, PONG]


@pytest.mark.req("HS-2", "IN-3")
async def test_auth_frame_on_a_cookie_connection_is_ignored(node, world, open_ws):
    client = await open_ws(node, {"workspace_id": world.ws_a}, cookie=await node.control.token(world.alice))
    await client.send({"type": "auth", "payload": {"token": await node.control.token(world.bob)}})
    await client.send(PING)
    await client.wait_for(lambda f: f == PONG, WAIT)
    assert client.frames == [PONG]


@pytest.mark.req("HS-2", "HS-3")
async def test_empty_cookie_falls_back_to_token_auth(node, world, open_ws):
    """Multica ignores an empty multica_auth cookie: the connection is in token mode."""
    client = await open_ws(node, {"workspace_id": world.ws_a}, headers={"Cookie": "multica_auth="})
    assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK


@pytest.mark.req("HS-4")
@pytest.mark.parametrize("claims", [{}, {"iat_in": 600}, {"exp_in": 3600, "nbf_in": -10},
                                    {"exp_in": 3600, "aud": "someone", "iss": "elsewhere"}],
                         ids=["no_exp", "iat_in_future", "nbf_in_past", "aud_and_iss"])
async def test_claims_the_contract_does_not_name_are_not_checked(node, world, open_ws, claims):
    """As golang-jwt v5 with Multica's options: no exp is accepted, iat, aud and iss are not checked."""
    now = int(time.time())
    doc: dict = {"sub": world.alice}
    for k, v in claims.items():
        doc[k[:-3] if k.endswith("_in") else k] = now + v if k.endswith("_in") else v
    client = await open_ws(node, {"workspace_id": world.ws_a})
    assert await authenticate(client, sign(doc, node.config.jwt_secret)) == AUTH_ACK


# -- HS-5: the refusal body, and which Origin strings match ------------------------------------------------

def host_of(node) -> str:
    return node.base.split("://", 1)[1]


@pytest.mark.req("HS-5")
@pytest.mark.parametrize("origin", ["http://127.0.0.1:1", BAD_ORIGIN, "null", "http://[::1", "HOST_WITHOUT_SCHEME",
                                    "http://localhost:3000"],
                         ids=["other_port", "other_host", "null", "malformed", "no_scheme", "multica_dev_default"])
async def test_foreign_origin_body(session, node, world, origin):
    """Also: an Origin that does not parse, or without a scheme, never equals Host."""
    origin = host_of(node) if origin == "HOST_WITHOUT_SCHEME" else origin
    assert await handshake(session, node, {"workspace_id": world.ws_a}, origin=origin) == (403, ORIGIN_REFUSED)


@pytest.mark.req("HS-5")
async def test_empty_origin_counts_as_absent_and_hosts_compare_without_case(node, world, open_ws):
    for kw in ({"headers": {"Origin": ""}},
               {"origin": "https://realtime.example.com", "headers": {"Host": "Realtime.EXAMPLE.com"}}):
        client = await open_ws(node, {"workspace_id": world.ws_a}, **kw)
        assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK


TRUSTED_LOOPBACK = parse_cidrs("127.0.0.1/32")


@pytest.mark.req("HS-5")
@pytest.mark.parametrize("origin,forwarded", [
    ("https://app.example.com", "APP.Example.com"),
    ("https://app.example.com", " app.example.com ,other"),
    ("https://app.example.com:8443", "app.example.com:8443"),
], ids=["case", "spaces", "with_port"])
async def test_forwarded_host_matching(start_node, world, open_ws, origin, forwarded):
    node = await start_node(trusted_proxies=TRUSTED_LOOPBACK)
    client = await open_ws(node, {"workspace_id": world.ws_a}, origin=origin, headers={"X-Forwarded-Host": forwarded})
    assert await authenticate(client, await node.control.token(world.alice)) == AUTH_ACK


@pytest.mark.req("HS-5")
@pytest.mark.parametrize("trusted,forwarded", [(True, ""), (True, " , app.example.com"), (False, "app.example.com")],
                         ids=["empty", "empty_first", "untrusted_ipv6_only"])
async def test_forwarded_host_refusals(session, start_node, world, trusted, forwarded):
    node = await start_node(trusted_proxies=TRUSTED_LOOPBACK if trusted else parse_cidrs("::1/128"))
    assert await handshake(session, node, {"workspace_id": world.ws_a}, origin="https://app.example.com",
                           headers={"X-Forwarded-Host": forwarded}) == (403, ORIGIN_REFUSED)


ALLOWED = ("https://app.example.com", "http://localhost:3000")


@pytest.mark.req("HS-5")
@pytest.mark.parametrize("origin", ["https://app.example.com/", "https://app.example.com:443", "https://APP.example.com"],
                         ids=["trailing_slash", "explicit_port", "other_case"])
async def test_allow_list_is_compared_as_strings(session, start_node, world, origin):
    node = await start_node(allowed_origins=ALLOWED)
    assert await handshake(session, node, {"workspace_id": world.ws_a}, origin=origin) == (403, ORIGIN_REFUSED)


# -- HS-7: the reference's answers, bodies included --------------------------------------------------------

@pytest.mark.req("HS-7", "HS-1", "HS-2", "HS-5")
@pytest.mark.parametrize("workspace,cookie,origin,expected", [
    ("missing", "garbage", BAD_ORIGIN, (400, WORKSPACE_REQUIRED)),
    ("unknown_slug", "dave", BAD_ORIGIN, (404, WORKSPACE_NOT_FOUND)),
    ("a", "expired", BAD_ORIGIN, (401, {"error": INVALID_TOKEN})),
    ("a", "no_sub", BAD_ORIGIN, (401, {"error": INVALID_CLAIMS})),
    ("a", "dave", BAD_ORIGIN, (403, {"error": DISABLED})),
    ("slug_a", "carol", BAD_ORIGIN, (403, {"error": NOT_MEMBER})),
    ("a", "alice", BAD_ORIGIN, (403, ORIGIN_REFUSED)),
    ("a", None, BAD_ORIGIN, (403, ORIGIN_REFUSED)),
])
async def test_first_failing_check_answers_with_its_body(session, node, world, workspace, cookie, origin, expected):
    params = {"missing": {}, "unknown_slug": {"workspace_slug": "no-such-workspace"},
              "a": {"workspace_id": world.ws_a}, "slug_a": {"workspace_slug": world.slug_a}}[workspace]
    token = {None: None, "garbage": "garbage"}.get(cookie)
    if cookie not in (None, "garbage"):
        user = {"expired": world.alice, "no_sub": None, "alice": world.alice, "carol": world.carol,
                "dave": world.dave}[cookie]
        token = await node.control.token(user, **({"ttl_s": 0} if cookie == "expired" else {}))
    assert await handshake(session, node, params, cookie=token, origin=origin) == expected

"""HS: handshake and identity.

Refusals before the upgrade are read as plain HTTP answers to an upgrade request (status and
JSON body); refusals after the upgrade (token auth) as the one `{"error": ...}` frame and the
close that follows it. `global` events of other cases may reach any authenticated connection:
every exact comparison below leaves frames carrying an `event_id` out."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from . import Failed, NotChecked, case

AUTH_ACK = {"type": "auth_ack"}
PING = {"type": "ping"}
PONG = {"type": "pong"}

AUTH_TIMEOUT = "auth timeout or read error"
EXPECTED_AUTH = "expected auth message as first frame"
INVALID_TOKEN = "invalid token"
INVALID_CLAIMS = "invalid claims"
DISABLED = "account disabled"
NOT_MEMBER = "not a member of this workspace"

CLOSE_WAIT = 5.0  # how long a refused connection may stay open after its error frame

# The development secret the reference server signs with unless told otherwise. Only used when
# a token minted by the target's control API verifies with it (see `known_secret`).
DEV_JWT_SECRET = "scopehub-dev-secret-change-me-0123456789"


# -- tokens ----------------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64json(doc: Any) -> str:
    return _b64(json.dumps(doc, separators=(",", ":")).encode())


_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def sign(claims: dict, secret: str, alg: str = "HS256") -> str:
    """A JWT signed with HMAC (HS256 / HS384 / HS512)."""
    head = f"{_b64json({'alg': alg, 'typ': 'JWT'})}.{_b64json(claims)}"
    mac = hmac.new(secret.encode(), head.encode(), _HASHES[alg]).digest()
    return f"{head}.{_b64(mac)}"


def unsigned(claims: dict, alg: str = "none") -> str:
    """A JWT with an unsigned algorithm and an empty signature."""
    return f"{_b64json({'alg': alg, 'typ': 'JWT'})}.{_b64json(claims)}."


def tampered(token_a: str, token_b: str) -> str:
    """token_a's header and signature on token_b's claims: a bad signature."""
    h, _, s = token_a.split(".")
    return f"{h}.{token_b.split('.')[1]}.{s}"


def later(s: int = 3600) -> int:
    return int(time.time()) + s


async def known_secret(ctx) -> str | None:
    """The target's JWT secret when it is the reference's development default (checked by
    verifying a token the target minted), else None: without it HS384/HS512 tokens and
    non-string `sub` claims cannot be signed."""
    token = await ctx.token(ctx.world.alice)
    try:
        head, _, sig = token.rpartition(".")
        mac = hmac.new(DEV_JWT_SECRET.encode(), head.encode(), hashlib.sha256).digest()
        return DEV_JWT_SECRET if hmac.compare_digest(_b64(mac), sig) else None
    except (ValueError, TypeError):
        return None


def needs(ctx, capability: str) -> None:
    if capability not in ctx.target.capabilities:
        raise NotChecked(f"the target does not claim {capability}")


# -- frames ----------------------------------------------------------------------------------------

def is_answer(f: Any) -> bool:
    """Anything but an event frame (events of other cases' global publishes may arrive anywhere)."""
    return not (isinstance(f, dict) and "event_id" in f)


def answers(client, start: int = 0) -> list:
    return [f for f in client.frames[start:] if is_answer(f)]


def auth(token: Any) -> dict:
    return {"type": "auth", "payload": {"token": token}}


async def auth_answer(ctx, client, token: Any, what: str = "the answer to auth") -> Any:
    await client.send(auth(token))
    return await ctx.frame(client, is_answer, what)


async def refused(ctx, client, text: str, why: str) -> None:
    """HS-3: exactly one frame {"error": text}, then the server closes the connection."""
    got = await ctx.frame(client, is_answer, f"the error frame {{\"error\": \"{text}\"}}")
    ctx.equal(got, {"error": text}, f"{why}: the refusal must be the frame {{\"error\": \"{text}\"}}")
    await ctx.closed(client, "the server to close the connection after the error frame", timeout=CLOSE_WAIT)
    ctx.equal(answers(client), [{"error": text}], f"{why}: one error frame, then the close, and nothing else")


async def token_refusal(ctx, token: Any, text: str, why: str, workspace: str | None = None) -> None:
    client = await ctx.raw(params={"workspace_id": workspace or ctx.world.ws_a})
    await client.send(auth(token))
    await refused(ctx, client, text, why)


async def cookie_refusal(ctx, token: str, status: int, text: str, why: str, workspace: str | None = None,
                         **kw) -> None:
    got = await ctx.upgrade(params={"workspace_id": workspace or ctx.world.ws_a}, cookie=token, **kw)
    ctx.equal(got, (status, {"error": text}), f"{why}: the upgrade must be refused with {status} "
                                                  f"{{\"error\": \"{text}\"}}")


async def pong_only(ctx, client, why: str) -> None:
    """Send a ping; the next answer must be the pong."""
    start = len(client.frames)
    await client.send(PING)
    got = await ctx.frame(client, is_answer, "the pong", start=start)
    ctx.equal(got, PONG, why)


async def both_auto_scopes(ctx, client, user: str, workspace: str, node: int = 0) -> None:
    """HS-6: events of workspace:W and user:U arrive without any subscribe."""
    ws_event = await ctx.publish("workspace", workspace, {"payload": {"n": 1}}, node=node)
    user_event = await ctx.publish("user", user, {"payload": {"n": 2}}, node=node)
    await ctx.event(client, ws_event)
    await ctx.event(client, user_event)


# -- HS-1 --------------------------------------------------------------------------------------------

@case("HS-1", title="no workspace_id or workspace_slug: 400 before the upgrade")
async def hs1_missing_workspace(ctx):
    status, _ = await ctx.upgrade(params={})
    ctx.equal(status, 400, "an upgrade without workspace_id or workspace_slug must be refused with 400")


@case("HS-1", title="unknown workspace_slug: 404 before the upgrade")
async def hs1_unknown_slug(ctx):
    status, _ = await ctx.upgrade(params={"workspace_slug": ctx.world.slug_a + "-missing"})
    ctx.equal(status, 404, "an unknown workspace_slug must be refused with 404")


@case("HS-1", "HS-3", title="workspace_slug resolves; client metadata parameters are accepted")
async def hs1_slug_resolves(ctx):
    w = ctx.world
    client = await ctx.raw(params={"workspace_slug": w.slug_a, "client_platform": "web",
                                   "client_version": "1.2.3", "client_os": "linux"})
    await client.send({"type": "auth", "payload": {"token": await ctx.token(w.alice)}})
    ack = await ctx.frame(client, lambda f: isinstance(f, dict), "auth answer")
    ctx.equal(ack, {"type": "auth_ack"}, "auth on a connection opened by slug must be acknowledged")


# -- HS-2: cookie auth ---------------------------------------------------------------------------------

@case("HS-2", title="a valid cookie: live at once, no auth_ack (the first answer is the pong to a ping)",
      capability="cookie_auth")
async def hs2_cookie_is_live_without_auth_ack(ctx):
    w = ctx.world
    client = await ctx.connect(w.alice, w.ws_a, cookie=True)
    await pong_only(ctx, client, "a cookie connection is live at once: the first frame it gets is the pong, "
                                 "not an auth_ack")
    ctx.equal(answers(client), [PONG], "a cookie connection gets no auth_ack")


@case("HS-2", "HS-4", title="a PAT in the cookie: live at once, no auth_ack", capability="cookie_auth")
async def hs2_cookie_pat_is_live(ctx):
    needs(ctx, "pat")
    w = ctx.world
    client = await ctx.connect(w.alice, w.ws_a, cookie=True, token=w.pat_alice)
    await pong_only(ctx, client, "a cookie connection with a PAT is live at once")
    ctx.equal(answers(client), [PONG], "a cookie connection gets no auth_ack")


@case("HS-2", "HS-4",
      title='a bad cookie token (garbage, bad signature, expired, alg none): 401 {"error":"invalid token"}',
      capability="cookie_auth")
async def hs2_bad_cookie_is_401_invalid_token(ctx):
    w = ctx.world
    alice, bob = await ctx.token(w.alice), await ctx.token(w.bob)
    bad = {
        "a token that is not a JWT": "not-a-jwt",
        "a JWT with a bad signature": tampered(alice, bob),
        "an expired JWT (ttl_s 0)": await ctx.token(w.alice, ttl_s=0),
        "an unsigned JWT (alg none)": unsigned({"sub": w.alice, "exp": later()}),
    }
    if "pat" in ctx.target.capabilities:
        bad["an unknown PAT"] = "mul_" + secrets.token_hex(16)
    for why, token in bad.items():
        await cookie_refusal(ctx, token, 401, INVALID_TOKEN, f"a cookie holding {why}")


@case("HS-2", "HS-4", title='a cookie JWT whose sub is missing or empty: 401 {"error":"invalid claims"}',
      capability="cookie_auth")
async def hs2_cookie_without_sub_is_401_invalid_claims(ctx):
    for why, user in (("without sub", None), ("with an empty sub", "")):
        await cookie_refusal(ctx, await ctx.token(user), 401, INVALID_CLAIMS, f"a cookie holding a JWT {why}")


@case("HS-2", title='a cookie of a disabled user: 403 {"error":"account disabled"}', capability="cookie_auth")
async def hs2_disabled_cookie_is_403(ctx):
    w = ctx.world
    await cookie_refusal(ctx, await ctx.token(w.dave), 403, DISABLED, "a cookie JWT of a disabled member")
    if "pat" in ctx.target.capabilities:
        await cookie_refusal(ctx, w.pat_dave, 403, DISABLED, "a cookie PAT of a disabled member")


@case("HS-2", title='a cookie of a non-member: 403 {"error":"not a member of this workspace"}',
      capability="cookie_auth")
async def hs2_non_member_cookie_is_403(ctx):
    w = ctx.world
    await cookie_refusal(ctx, await ctx.token(w.carol), 403, NOT_MEMBER, "a cookie of a member of another workspace")
    await cookie_refusal(ctx, await ctx.token(w.outsider), 403, NOT_MEMBER, "a cookie of a user in no workspace")
    await cookie_refusal(ctx, await ctx.token(w.alice), 403, NOT_MEMBER, "a cookie for a workspace id that does "
                                                                          "not exist", workspace=str(uuid.uuid4()))


# -- HS-3: first-message token auth ------------------------------------------------------------------------

@case("HS-3", title='token auth is answered exactly {"type":"auth_ack"}, then the connection works')
async def hs3_auth_ack(ctx):
    w = ctx.world
    client = await ctx.raw(params={"workspace_id": w.ws_a})
    ctx.equal(await auth_answer(ctx, client, await ctx.token(w.alice)), AUTH_ACK,
              'a valid token must be answered {"type":"auth_ack"}')
    await pong_only(ctx, client, "after auth_ack a ping is answered pong")
    ctx.equal(answers(client), [AUTH_ACK, PONG], "auth is answered with one auth_ack and nothing else")


# TOKEN is replaced by a valid token of alice's: only the frame's shape is wrong.
NOT_AUTH = {
    "a subscribe": '{"type":"subscribe","payload":{"scope":"workspace","id":"WS"}}',
    "a JSON ping": '{"type":"ping"}',
    "text that is not JSON": "hello",
    "truncated JSON": '{"type":"auth","payload":{"token":"TOKEN"}',
    "a JSON array": '[{"type":"auth","payload":{"token":"TOKEN"}}]',
    'type "AUTH"': '{"type":"AUTH","payload":{"token":"TOKEN"}}',
    "the token outside the payload": '{"type":"auth","token":"TOKEN"}',
    "no payload": '{"type":"auth"}',
    "an empty token": '{"type":"auth","payload":{"token":""}}',
    "a numeric token": '{"type":"auth","payload":{"token":12345}}',
}


@case("HS-3",
      title='a first frame that is not an auth message: {"error":"expected auth message as first frame"}, close')
async def hs3_first_frame_not_auth(ctx):
    w = ctx.world
    token = await ctx.token(w.alice)
    for why, text in NOT_AUTH.items():
        client = await ctx.raw(params={"workspace_id": w.ws_a})
        await client.send(text.replace("TOKEN", token).replace("WS", w.ws_a))
        await refused(ctx, client, EXPECTED_AUTH, f"a first frame with {why}")


@case("HS-3", title='a token of a non-member: {"error":"not a member of this workspace"}, close')
async def hs3_non_member(ctx):
    w = ctx.world
    await token_refusal(ctx, await ctx.token(w.carol), NOT_MEMBER, "a member of another workspace")
    await token_refusal(ctx, await ctx.token(w.alice), NOT_MEMBER, "a workspace id that does not exist",
                        workspace=str(uuid.uuid4()))


@case("HS-3", title='a token of a disabled user: {"error":"account disabled"}, close')
async def hs3_disabled(ctx):
    await token_refusal(ctx, await ctx.token(ctx.world.dave), DISABLED, "a JWT of a disabled member")


def _auth_wait(ctx) -> float:
    auth_s = ctx.target.timeout("auth_s", 10)
    if auth_s > 15 and ctx.quick:
        raise NotChecked(f"the auth timeout is {auth_s:g} s: left out by --quick")
    if auth_s > 100:
        raise NotChecked(f"the auth timeout is {auth_s:g} s: longer than a case may wait")
    return auth_s


@case("HS-3",
      title='a client that sends nothing gets {"error":"auth timeout or read error"} after auth_s, then the close')
async def hs3_auth_timeout(ctx):
    auth_s = _auth_wait(ctx)
    loop = asyncio.get_running_loop()
    client = await ctx.raw(params={"workspace_id": ctx.world.ws_a})
    started = loop.time()
    got = await ctx.frame(client, is_answer, "the auth timeout error", timeout=auth_s + 5)
    elapsed = loop.time() - started
    ctx.equal(got, {"error": AUTH_TIMEOUT}, "a silent client must be refused with the auth timeout text")
    ctx.expect(elapsed >= auth_s * 0.8, f"the auth timeout came after {elapsed:.1f} s, before the "
                                        f"{auth_s:g} s the target reports", f">= {auth_s:g} s", f"{elapsed:.1f} s")
    await ctx.closed(client, "the close after the auth timeout error", timeout=CLOSE_WAIT)


class _Bare:
    """An aiohttp WebSocket read directly (transport pings and pongs visible), closed with the case."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws

    async def close(self) -> None:
        if not self.ws.closed:
            await self.ws.close()


async def bare_ws(ctx, params: dict, *, node: int = 0, autoping: bool = False,
                  headers: dict | None = None) -> aiohttp.ClientWebSocketResponse:
    ws = await ctx.session.ws_connect(ctx.target.urls[node] + "/ws", params=params, headers=headers or {},
                                      autoping=autoping, max_msg_size=0,
                                      timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
    ctx.clients.append(_Bare(ws))
    return ws


CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


async def receive(ctx, ws: aiohttp.ClientWebSocketResponse, what: str, timeout: float = 5.0) -> aiohttp.WSMessage:
    """The next message of a bare WebSocket, or Failed naming what was awaited."""
    try:
        return await asyncio.wait_for(ws.receive(), timeout)
    except asyncio.TimeoutError:
        raise Failed(f"no {what} within {timeout:g} s", what, "nothing") from None


@case("HS-3",
      title="transport pings before auth are answered and neither count as the auth frame nor extend the timeout")
async def hs3_transport_pings_do_not_count(ctx):
    auth_s = _auth_wait(ctx)
    loop = asyncio.get_running_loop()
    ws = await bare_ws(ctx, {"workspace_id": ctx.world.ws_a})
    started = loop.time()
    deadline = started + auth_s + 5
    pongs, pinged = 0, False
    while True:
        if not pinged:
            await ws.ping(str(pongs).encode())
            pinged = True
        remaining = deadline - loop.time()
        if remaining <= 0:
            ctx.expect(False, f"no auth timeout error within {auth_s + 5:g} s while the client sent only "
                              "transport pings: the pings must not extend the auth timeout",
                       {"error": AUTH_TIMEOUT}, f"{pongs} transport pongs, no text frame")
        try:
            msg = await ws.receive(timeout=min(remaining, 0.5))
        except asyncio.TimeoutError:
            pinged = False  # the pong is late or lost: ping again
            continue
        if msg.type is aiohttp.WSMsgType.PONG:
            pongs += 1  # the next ping goes out after a quiet 0.5 s
            continue
        if msg.type is aiohttp.WSMsgType.TEXT:
            try:
                frame = json.loads(msg.data)
            except ValueError:
                frame = msg.data
            elapsed = loop.time() - started
            ctx.equal(frame, {"error": AUTH_TIMEOUT}, "a client sending only transport pings must get the auth "
                                                      "timeout error: pings are not the first data frame")
            ctx.expect(elapsed >= auth_s * 0.8, f"the auth timeout came after {elapsed:.1f} s, before the "
                                                f"{auth_s:g} s the target reports", f">= {auth_s:g} s",
                       f"{elapsed:.1f} s")
            ctx.expect(pongs >= 1, "transport pings before auth must be answered with transport pongs",
                       ">= 1 pong", pongs)
            closing = await receive(ctx, ws, "close after the auth timeout error", CLOSE_WAIT)
            ctx.expect(closing.type in CLOSED, "the connection must be closed after the auth timeout error",
                       "close", closing.type.name)
            return
        if msg.type in CLOSED:
            ctx.expect(False, "the connection closed without the auth timeout error frame",
                       {"error": AUTH_TIMEOUT}, f"{msg.type.name} after {pongs} pongs")


@case("HS-3", title="a transport ping before auth is answered with a pong; auth afterwards still succeeds")
async def hs3_ping_then_auth(ctx):
    ws = await bare_ws(ctx, {"workspace_id": ctx.world.ws_a})
    await ws.ping(b"before-auth")
    msg = await receive(ctx, ws, "transport pong")
    ctx.equal((msg.type.name, msg.data), ("PONG", b"before-auth"),
              "a transport ping before auth must be answered with a transport pong carrying its data")
    await ws.send_str(json.dumps(auth(await ctx.token(ctx.world.alice))))
    msg = await receive(ctx, ws, "auth_ack")
    got = json.loads(msg.data) if msg.type is aiohttp.WSMsgType.TEXT else msg.type.name
    ctx.equal(got, AUTH_ACK, "auth after a transport ping must be acknowledged: the ping was not the first data frame")


# -- HS-4: tokens ------------------------------------------------------------------------------------------

@case("HS-3", "HS-4", title='an unsigned JWT (alg none / None) is "invalid token"')
async def hs4_alg_none(ctx):
    w = ctx.world
    for alg in ("none", "None", "NONE"):
        await token_refusal(ctx, unsigned({"sub": w.alice, "exp": later()}, alg), INVALID_TOKEN,
                            f"an unsigned JWT with alg {alg!r}")


@case("HS-3", "HS-4", title='a JWT signed with the secret but with HS384 or HS512 is "invalid token"')
async def hs4_other_hmac_algorithms(ctx):
    secret = await known_secret(ctx)
    if secret is None:
        raise NotChecked("signing HS384/HS512 needs the target's JWT secret, which the suite does not know")
    for alg in ("HS384", "HS512"):
        await token_refusal(ctx, sign({"sub": ctx.world.alice, "exp": later()}, secret, alg), INVALID_TOKEN,
                            f"a JWT signed with the right secret using {alg}")


@case("HS-3", "HS-4", title='a JWT with a bad signature is "invalid token"')
async def hs4_bad_signature(ctx):
    w = ctx.world
    alice, bob = await ctx.token(w.alice), await ctx.token(w.bob)
    head, _, sig = bob.rpartition(".")
    flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    bad = {
        "another token's signature on bob's claims": tampered(alice, bob),
        "a signature with flipped bits": f"{head}.{flipped}",
        "the signature cut off": head,
        "a signature made with another key": sign({"sub": w.bob, "exp": later()},
                                                  "not-the-secret-" + secrets.token_hex(16)),
    }
    for why, token in bad.items():
        await token_refusal(ctx, token, INVALID_TOKEN, f"a JWT with {why}")


@case("HS-3", "HS-4", title='an expired JWT (ttl_s 0 or below) is "invalid token", without leeway')
async def hs4_expired(ctx):
    w = ctx.world
    for ttl in (0, -30):
        await token_refusal(ctx, await ctx.token(w.alice, ttl_s=ttl), INVALID_TOKEN, f"a JWT minted with ttl_s {ttl}")
    secret = await known_secret(ctx)
    if secret is not None:  # exp == now is already expired (now >= exp, no leeway)
        await token_refusal(ctx, sign({"sub": w.alice, "exp": int(time.time())}, secret), INVALID_TOKEN,
                            "a JWT whose exp is now")


@case("HS-3", "HS-4", title='a correctly signed JWT whose sub is missing or empty is "invalid claims"')
async def hs4_missing_or_empty_sub(ctx):
    await token_refusal(ctx, await ctx.token(None), INVALID_CLAIMS, "a JWT without sub")
    await token_refusal(ctx, await ctx.token(""), INVALID_CLAIMS, "a JWT with an empty sub")


@case("HS-3", "HS-4", title='a correctly signed JWT whose sub is not a string is "invalid claims"')
async def hs4_non_string_sub(ctx):
    secret = await known_secret(ctx)
    if secret is None:
        raise NotChecked("a non-string sub needs the target's JWT secret to sign, which the suite does not know")
    w = ctx.world
    for sub in (42, True, [w.alice], {"id": w.alice}, None):
        await token_refusal(ctx, sign({"sub": sub, "exp": later()}, secret), INVALID_CLAIMS,
                            f"a JWT with sub {json.dumps(sub)}")


@case("HS-3", "HS-4", title="a JWT authenticates the user named by its sub (email optional)")
async def hs4_jwt_names_its_user(ctx):
    w = ctx.world
    client = await ctx.raw(params={"workspace_id": w.ws_a})
    ctx.equal(await auth_answer(ctx, client, await ctx.token(w.bob, email="bob@example.com")), AUTH_ACK,
              "a JWT with an email claim must be accepted")
    published = await ctx.publish("user", w.bob)
    await ctx.event(client, published)
    forbidden = await ctx.answer(client, "subscribe", "user", w.alice)
    ctx.equal(forbidden, {"type": "subscribe_error", "payload": {"scope": "user", "id": w.alice, "error": "forbidden"}},
              "a connection authenticated with bob's JWT is bob's: alice's user scope is forbidden")


@case("HS-3", "HS-4", title="a known PAT authenticates its user", capability="pat")
async def hs4_pat_names_its_user(ctx):
    w = ctx.world
    client = await ctx.raw(params={"workspace_id": w.ws_a})
    ctx.equal(await auth_answer(ctx, client, w.pat_alice), AUTH_ACK, "alice's PAT must be accepted")
    published = await ctx.publish("user", w.alice)
    await ctx.event(client, published)


@case("HS-3", "HS-4", title='an unknown PAT is "invalid token"', capability="pat")
async def hs4_unknown_pat(ctx):
    for why, token in (("an unknown PAT", "mul_" + secrets.token_hex(16)),
                       ("a known PAT with a character changed", ctx.world.pat_alice[:-1] +
                        ("0" if ctx.world.pat_alice[-1] != "0" else "1"))):
        await token_refusal(ctx, token, INVALID_TOKEN, why)


@case("HS-3", "HS-4", title='the PAT of a disabled user is "account disabled"', capability="pat")
async def hs4_disabled_pat(ctx):
    await token_refusal(ctx, ctx.world.pat_dave, DISABLED, "the PAT of a disabled member")


# -- HS-5: origins -------------------------------------------------------------------------------------------

def _host(ctx, node: int = 0) -> str:
    return urlsplit(ctx.target.urls[node]).netloc


def _foreign(ctx) -> str:
    allowed = set(ctx.target.info.get("origins", {}).get("allowed") or [])
    while True:
        origin = f"https://evil-{secrets.token_hex(4)}.example.com"
        if origin not in allowed:
            return origin


async def _allowed(ctx, origin: str | None, why: str, headers: dict | None = None) -> None:
    """The upgrade with this Origin succeeds and the connection authenticates."""
    hdrs = dict(headers or {})
    if origin is not None:
        hdrs["Origin"] = origin
    status, body = await ctx.upgrade(params={"workspace_id": ctx.world.ws_a}, headers=hdrs)
    ctx.equal(status, 101, f"{why}: the upgrade must be accepted")
    client = await ctx.raw(params={"workspace_id": ctx.world.ws_a}, headers=hdrs)
    ctx.equal(await auth_answer(ctx, client, await ctx.token(ctx.world.alice)), AUTH_ACK,
              f"{why}: the connection must authenticate")


async def _refused_origin(ctx, origin: str, why: str, headers: dict | None = None) -> None:
    status, body = await ctx.upgrade(params={"workspace_id": ctx.world.ws_a}, headers={"Origin": origin,
                                                                                       **(headers or {})})
    ctx.equal(status, 403, f"{why}: the upgrade must be refused with 403")


@case("HS-5", title="no Origin, or an Origin whose host equals Host, is allowed", capability="origin")
async def hs5_same_host_allowed(ctx):
    await _allowed(ctx, None, "a request without Origin")
    await _allowed(ctx, f"http://{_host(ctx)}", "an Origin whose host equals Host")


@case("HS-5", title="an Origin neither equal to Host nor in the allow-list is refused with 403", capability="origin")
async def hs5_foreign_origin_refused(ctx):
    host = urlsplit(ctx.target.urls[0]).hostname
    allowed = set(ctx.target.info.get("origins", {}).get("allowed") or [])
    await _refused_origin(ctx, _foreign(ctx), "a foreign Origin")
    for origin, why in ((f"http://{host}:1", "the same host on another port"), ("null", 'Origin "null"')):
        if origin not in allowed:
            await _refused_origin(ctx, origin, why)


@case("HS-5", title="an allow-listed Origin is allowed; look-alikes of it are refused", capability="origin")
async def hs5_allow_list_is_exact(ctx):
    allowed = [o for o in ctx.target.info.get("origins", {}).get("allowed") or [] if isinstance(o, str)]
    entry = next((o for o in allowed if urlsplit(o).scheme in ("http", "https") and urlsplit(o).hostname), None)
    if entry is None:
        raise NotChecked("the target's allow-list (info.origins.allowed) holds no http(s) origin")
    await _allowed(ctx, entry, f"the allow-listed Origin {entry}")
    parts = urlsplit(entry)
    other_scheme = "http" if parts.scheme == "https" else "https"
    for origin, why in ((f"{parts.scheme}://{parts.netloc}.evil-{secrets.token_hex(3)}.example", "the allow-listed "
                         "origin with a suffix"),
                        (f"{other_scheme}://{parts.netloc}", "the allow-listed host under another scheme"),
                        (f"{parts.scheme}://evil-{secrets.token_hex(3)}.{parts.netloc}", "a subdomain of the "
                         "allow-listed host")):
        if origin not in allowed:
            await _refused_origin(ctx, origin, why)


def _trusted(peer: str, proxies: list) -> bool | None:
    """Whether peer is inside the trusted proxy CIDRs; None when an entry cannot be parsed."""
    ip = ipaddress.ip_address(peer.split("%", 1)[0])
    for entry in proxies:
        try:
            net = ipaddress.ip_network(str(entry), strict=False)
        except ValueError:
            return None
        mapped = getattr(ip, "ipv4_mapped", None)
        if ip in net or (mapped is not None and mapped in net):
            return True
    return False


@case("HS-5", title="X-Forwarded-Host is honoured only when the peer is a trusted proxy (read from info)",
      capability="origin")
async def hs5_forwarded_host_only_from_trusted_proxies(ctx):
    proxies = ctx.target.info.get("origins", {}).get("trusted_proxies") or []
    probe = await ctx.raw(params={"workspace_id": ctx.world.ws_a})
    sock = probe.ws.get_extra_info("sockname")
    await probe.close()
    if not sock:
        raise NotChecked("the suite could not tell which address it connects from")
    peer = sock[0]
    trusted = _trusted(peer, proxies)
    if trusted is None:
        raise NotChecked(f"info.origins.trusted_proxies {proxies!r} holds an entry that is not a CIDR")
    name = f"app-{secrets.token_hex(4)}.example.com"
    origin = f"https://{name}"
    if origin in (ctx.target.info.get("origins", {}).get("allowed") or []):
        raise NotChecked("the generated origin is allow-listed")
    if trusted:
        await _allowed(ctx, origin, f"X-Forwarded-Host equal to the Origin host from a trusted proxy ({peer})",
                       headers={"X-Forwarded-Host": name})
        await _refused_origin(ctx, origin, "only the first X-Forwarded-Host entry counts",
                              headers={"X-Forwarded-Host": f"proxy-{secrets.token_hex(3)}.internal, {name}"})
    else:
        await _refused_origin(ctx, origin, f"a forged X-Forwarded-Host from a peer ({peer}) outside the trusted "
                                           f"proxies {proxies}", headers={"X-Forwarded-Host": name})


@case("HS-5", "HS-2", title="a valid cookie does not exempt a foreign Origin from the 403", capability="origin")
async def hs5_cookie_does_not_bypass_origin(ctx):
    needs(ctx, "cookie_auth")
    status, body = await ctx.upgrade(params={"workspace_id": ctx.world.ws_a}, cookie=await ctx.token(ctx.world.alice),
                                     headers={"Origin": _foreign(ctx)})
    ctx.equal(status, 403, "a foreign Origin must be refused with 403 even with a valid cookie")


# -- HS-6: auto-subscription -----------------------------------------------------------------------------------

@case("HS-6", title="token mode: workspace and user events arrive right after auth_ack, without subscribing")
async def hs6_token_mode(ctx):
    w = ctx.world
    client = await ctx.raw(params={"workspace_id": w.ws_a})
    ctx.equal(await auth_answer(ctx, client, await ctx.token(w.alice)), AUTH_ACK, "alice's token must be accepted")
    await both_auto_scopes(ctx, client, w.alice, w.ws_a)
    ctx.equal(answers(client), [AUTH_ACK], "the connection holds both scopes without any subscribe or ack")


@case("HS-6", "HS-2", title="cookie mode: workspace and user events arrive right after the upgrade",
      capability="cookie_auth")
async def hs6_cookie_mode(ctx):
    w = ctx.world
    client = await ctx.connect(w.alice, w.ws_a, cookie=True)
    await both_auto_scopes(ctx, client, w.alice, w.ws_a)
    ctx.equal(answers(client), [], "a cookie connection gets its events without auth_ack or any ack")


@case("HS-6", "NODE-1", title="workspace and user events published through another node arrive right after auth_ack",
      min_nodes=2)
async def hs6_token_mode_across_nodes(ctx):
    w = ctx.world
    client = await ctx.raw(params={"workspace_id": w.ws_a})
    ctx.equal(await auth_answer(ctx, client, await ctx.token(w.alice)), AUTH_ACK, "alice's token must be accepted")
    await both_auto_scopes(ctx, client, w.alice, w.ws_a, node=1)


# -- HS-7: order of the handshake checks ------------------------------------------------------------------------

@case("HS-7", "HS-1", title="no workspace, a bad cookie and a foreign Origin: 400 (HS-1 first)")
async def hs7_missing_workspace_first(ctx):
    for cookie in ("garbage", await ctx.token(ctx.world.dave)):
        status, _ = await ctx.upgrade(params={}, cookie=cookie, headers={"Origin": _foreign(ctx)})
        ctx.equal(status, 400, "without a workspace the answer is 400 whatever the cookie and the Origin")


@case("HS-7", "HS-1", title="an unknown slug, a bad cookie and a foreign Origin: 404 (HS-1 first)")
async def hs7_unknown_slug_first(ctx):
    slug = ctx.world.slug_a + "-missing"
    for cookie in ("garbage", await ctx.token(ctx.world.dave)):
        status, _ = await ctx.upgrade(params={"workspace_slug": slug}, cookie=cookie, headers={"Origin": _foreign(ctx)})
        ctx.equal(status, 404, "an unknown slug is answered 404 whatever the cookie and the Origin")


@case("HS-7", "HS-2", title="a bad cookie and a foreign Origin: the cookie's answer (HS-2 before HS-5)",
      capability="cookie_auth")
async def hs7_cookie_before_origin(ctx):
    w = ctx.world
    for token, status, text, why in (
            ("garbage", 401, INVALID_TOKEN, "a garbage cookie"),
            (await ctx.token(None), 401, INVALID_CLAIMS, "a cookie without sub"),
            (await ctx.token(w.dave), 403, DISABLED, "a disabled user's cookie"),
            (await ctx.token(w.carol), 403, NOT_MEMBER, "a non-member's cookie")):
        await cookie_refusal(ctx, token, status, text, f"{why} with a foreign Origin",
                             headers={"Origin": _foreign(ctx)})
    status, body = await ctx.upgrade(params={"workspace_slug": w.slug_a}, cookie=await ctx.token(w.carol),
                                     headers={"Origin": _foreign(ctx)})
    ctx.equal((status, body), (403, {"error": NOT_MEMBER}), "a non-member's cookie with a known slug and a foreign "
                                                            "Origin: the membership answer comes first")

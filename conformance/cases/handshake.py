"""HS: handshake and identity.

How a refusal is read:
* before the upgrade (HS-1, HS-2, HS-5, HS-7): the plain HTTP answer to an upgrade request. Only
  HS-2 (and HS-4 for `invalid claims` over a cookie) fixes the body, a JSON object that may carry
  extra fields; HS-1 and HS-5 fix the status alone.
* after the upgrade (token auth): one `{"error": text}` answer (extra fields allowed), then the
  connection ends, with any close code or none (HS-3 names no code: 1008 is the reference's choice).

Events may reach any connection at any time, before `auth_ack` too (HS-6): only answers
(conformance/frames.py) are judged, events are skipped.

Who is blamed when a token is mishandled: HS-4 decides which tokens are valid and which of
`invalid token` / `invalid claims` a bad one gets, so a bad token accepted, or refused with another
of the contract's answers, fails HS-4. How a refusal looks is HS-3's (one error frame with one of its
exact texts, then the close) and, over a cookie, HS-2's (status and body before the upgrade).

Tokens the control API cannot mint (HS384/HS512, a non-string `sub`, `exp` exactly now) are signed
with the target's JWT secret when it is the reference's development default; otherwise those cases
say `not checked` and the requirement's verdict lists them as skipped."""

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

from . import Failed, NotChecked, SetupError, case
from ..client import ConnectionClosed
from ..frames import is_answer
from .common import (AUTH_ACK, AUTH_TIMEOUT, DISABLED, EXPECTED_AUTH, INVALID_CLAIMS, INVALID_TOKEN, NOT_MEMBER, PING,
                     PONG, ack, answers, auth, auth_answer, hold, matches)

ANSWER_WAIT = 5.0  # the suite's patience for one answer (the contract sets no bound)
CLOSE_WAIT = 5.0  # how long a refused connection may stay open after its error frame

# HS-3's exact error texts, and the answers HS-2 / HS-4 give them over a cookie
HS3_TEXTS = (AUTH_TIMEOUT, EXPECTED_AUTH, INVALID_TOKEN, INVALID_CLAIMS, DISABLED, NOT_MEMBER)
COOKIE_STATUS = {INVALID_TOKEN: 401, INVALID_CLAIMS: 401, DISABLED: 403, NOT_MEMBER: 403}

# The development secret the reference server signs with unless told otherwise. Only used when
# a token minted by the target's control API verifies with it (see `known_secret`).
DEV_JWT_SECRET = "scopehub-dev-secret-change-me-0123456789"

# -- the words each requirement's checks enforce (docs/protocol.md) ------------------------------------

HS1_NEITHER = "With neither, the server answers HTTP 400 before the upgrade"
HS1_SLUG = "with a slug it does not know, HTTP 404"
HS1_NAMES = "The client names the workspace with `?workspace_id=W` or `?workspace_slug=S`."
HS1_PARAMS = "The optional `client_platform`, `client_version` and `client_os` parameters are accepted."
HS2_BAD = ('a `multica_auth` cookie holding a token is checked before the upgrade. A bad token gets 401 '
           '`{"error":"invalid token"}`')
HS2_DISABLED = 'a disabled user 403 `{"error":"account disabled"}`'
HS2_NOT_MEMBER = 'a user who is not a member of W 403 `{"error":"not a member of this workspace"}`'
HS2_LIVE = "On success the connection is live at once; no `auth_ack` is sent."
HS2_FIRST = "With several `multica_auth` cookies, the first one counts (as Go's `Request.Cookie` reads them)."
HS3_FAILURE = ('Any failure is answered with one text frame `{"error":"..."}`, after which the connection '
               'is closed')
HS3_FIRST = "the client's first data frame MUST be `{\"type\":\"auth\",\"payload\":{\"token\":T}}`"
HS3_TIMEOUT = "sent within the auth timeout (10 s)"
HS3_PINGS = "Transport ping/pong frames do not count as data frames."
HS3_ACK = 'Success is answered `{"type":"auth_ack"}`.'
HS4_INVALID = ("A bad signature, any other algorithm (`none` included), an expired JWT (`now >= exp`, no "
               "leeway) or an unknown PAT is `invalid token`.")
HS4_CLAIMS = "A correctly signed JWT whose `sub` is missing, empty or not a string is `invalid claims`"
HS4_COOKIE_CLAIMS = 'over cookie auth that is a 401 with `{"error":"invalid claims"}`'
HS4_TOKEN = ("A token is either an HS256 JWT with a non-empty string `sub` (the user id; `email` is "
             "optional), or a personal access token (PAT) starting `mul_`.")
HS5_SAME = "a request without `Origin` is allowed; so is one whose origin host equals `Host`."
HS5_FORWARDED = ("The first entry of `X-Forwarded-Host` is compared too, but only when the peer address is "
                 "inside the trusted proxy CIDRs.")
HS5_OTHER = "Any other origin must be in the allow-list, or the upgrade is refused with 403."
HS6_HOLDS = ("Once authenticated, the connection already holds `workspace:W` and `user:U` when `auth_ack` "
             "is sent")
HS6_COOKIE = ("(cookie mode: before the upgrade completes), so DEL-1 covers both scopes from `auth_ack` (or "
              "the completed upgrade) on, without any `subscribe`")
HS7_ORDER = "When several checks fail, the first in the order HS-1, HS-2, HS-5 decides the answer"


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
    verifying a token the target minted), else None."""
    token = await ctx.token(ctx.world.alice)
    try:
        head, _, sig = token.rpartition(".")
        mac = hmac.new(DEV_JWT_SECRET.encode(), head.encode(), hashlib.sha256).digest()
        return DEV_JWT_SECRET if hmac.compare_digest(_b64(mac), sig) else None
    except (ValueError, TypeError):
        return None


async def secret_or_skip(ctx, what: str) -> str:
    secret = await known_secret(ctx)
    if secret is None:
        raise NotChecked(f"{what} needs the target's JWT secret to sign, which the suite does not know")
    return secret


def needs(ctx, capability: str) -> None:
    if capability not in ctx.target.capabilities:
        raise NotChecked(f"the target does not claim {capability}")


# -- connections -----------------------------------------------------------------------------------

async def _open(ctx, params: dict | None = None, *, node: int = 0, headers: dict | None = None,
                cookie: str | None = None, what: str = "open a WebSocket"):
    """Set-up: an upgraded, unauthenticated connection (a refused upgrade ends the case in error)."""
    try:
        return await ctx.raw(node=node, params=params if params is not None else {"workspace_id": ctx.world.ws_a},
                             headers=headers, cookie=cookie)
    except aiohttp.WSServerHandshakeError as e:
        raise SetupError(what, f"HTTP {e.status}") from None
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
        raise SetupError(what, f"{type(e).__name__}: {e}") from None


def _error_text(frame: Any) -> Any:
    return frame.get("error") if isinstance(frame, dict) else None


def _want(texts: tuple[str, ...]) -> dict:
    return {"error": texts[0] if len(texts) == 1 else " or ".join(repr(t) for t in texts)}


async def first_answer(ctx, client, why: str, *, start: int = 0, timeout: float = ANSWER_WAIT,
                       expected: Any = None) -> Any:
    """The first answer since `start` (events skipped); none, or the end of the connection
    without one, fails HS-3: every auth failure is answered with an error frame."""
    try:
        return await client.wait_for(is_answer, timeout, start=start)
    except asyncio.TimeoutError:
        raise Failed(f"{why}: no answer within {timeout:g} s", expected, client.frames[start:][-5:], "HS-3") from None
    except ConnectionClosed as e:
        raise Failed(f"{why}: the connection ended (code {e.code}) without an error frame", expected,
                     client.frames[start:][-5:], "HS-3") from None


async def judge_refusal(ctx, client, got: Any, texts: tuple[str, ...], why: str, *, decides: str,
                        blame: dict | None = None, start: int = 0) -> None:
    """A token auth that must fail, given its first answer `got`: one `{"error": text}` answer
    (one of `texts`; extra fields allowed), then the connection ends with any close code or none.
    `decides` is the requirement that says this input is refused with these texts: it fails when
    the auth is accepted or refused with another of HS-3's texts (`blame` names another
    requirement for some of them), and the case goes on, so that HS-3 is still judged on the
    next inputs. The rest is HS-3's, and a failure of it stops the case."""
    want = _want(texts)
    err = _error_text(got)
    if not isinstance(err, str):
        # auth_ack, or another answer: the connection was taken as authenticated
        _fails(ctx, decides, f"{why}: accepted where it must be refused", want, got)
        return
    if err not in texts:
        ctx.expect(err in HS3_TEXTS, f"{why}: the error text must be exactly one of HS-3's", want, got, req="HS-3")
        _fails(ctx, (blame or {}).get(err, decides), f"{why}: refused as {err!r}", want, got)
    try:
        await client.wait_closed(CLOSE_WAIT)
    except asyncio.TimeoutError:
        raise Failed(f"{why}: the connection is still open {CLOSE_WAIT:g} s after the error frame",
                     "the connection closed (any close code, or dropped)", "open", "HS-3") from None
    got_all = answers(client, start)
    ctx.expect(len(got_all) == 1, f"{why}: one error frame, then the close, and nothing else answered", [want],
               got_all, req="HS-3")


def _fails(ctx, req: str, reason: str, expected: Any, received: Any) -> None:
    """A failure of `req`: HS-3's stops the case (its later checks would fail alike); another
    requirement's is recorded and the case goes on, so HS-3 is judged on the next inputs."""
    if req == "HS-3":
        raise Failed(reason, expected, received, req)
    ctx.check(req, False, reason, expected, received)


async def refused(ctx, client, texts: str | tuple[str, ...], why: str, *, decides: str = "HS-3",
                  blame: dict | None = None, start: int = 0) -> None:
    texts = (texts,) if isinstance(texts, str) else tuple(texts)
    got = await first_answer(ctx, client, why, start=start, expected=_want(texts))
    await judge_refusal(ctx, client, got, texts, why, decides=decides, blame=blame, start=start)


async def token_refusal(ctx, token: Any, texts: str | tuple[str, ...], why: str, *, decides: str = "HS-3",
                        blame: dict | None = None, params: dict | None = None) -> None:
    """Open a connection, authenticate with `token`, and judge the refusal."""
    client = await _open(ctx, params)
    await client.send(auth(token))
    await refused(ctx, client, texts, why, decides=decides, blame=blame)


# A valid token refused for who its user is (disabled, not a member): calling the token itself
# bad is HS-4's failure.
VALID_TOKEN = {INVALID_TOKEN: "HS-4", INVALID_CLAIMS: "HS-4"}


async def cookie_refusal(ctx, token: str, text: str, why: str, *, decides: str = "HS-2", blame: dict | None = None,
                         params: dict | None = None, headers: dict | None = None) -> None:
    """An upgrade with `token` in the cookie must be refused before the upgrade with the answer
    HS-2 (HS-4 for invalid claims) gives `text`; `decides` fails when it is accepted, or refused
    with the answer of another failure (`blame` names another requirement for some)."""
    params = params if params is not None else {"workspace_id": ctx.world.ws_a}
    status_req = "HS-4" if text == INVALID_CLAIMS else "HS-2"
    want = (COOKIE_STATUS[text], {"error": text})
    status, body = await ctx.upgrade(params=params, cookie=token, headers=headers)
    if status == 101:
        await _upgraded_anyway(ctx, params, token, headers, why, decides, want)
        return
    if status == want[0] and matches(body, want[1]):
        return
    err = _error_text(body)
    if err in COOKIE_STATUS and err != text:
        ctx.check((blame or {}).get(err, decides), False, f"{why}: refused as {err!r}", want, (status, body))
    else:
        ctx.check(status_req, False, f"{why}: the upgrade must be refused with {want[0]} {{\"error\": \"{text}\"}}",
                  want, (status, body))


async def _upgraded_anyway(ctx, params, token, headers, why, decides, want) -> None:
    """A bad cookie was upgraded: accepted (the connection answers a ping) fails `decides`; refused
    after the upgrade fails HS-2 (the cookie is checked before the upgrade)."""
    client = await _open(ctx, params, cookie=token, headers=headers, what=f"reopen the upgrade ({why})")
    await client.send(PING)
    try:
        got = await client.wait_for(is_answer, ANSWER_WAIT)
    except (asyncio.TimeoutError, ConnectionClosed):
        got = None
    if isinstance(got, dict) and "error" not in got:
        ctx.check(decides, False, f"{why}: the upgrade was accepted and the connection is live", want,
                  (101, got))
    else:
        ctx.check("HS-2", False, f"{why}: the cookie must be refused before the upgrade, not after it", want,
                  (101, got if got is not None else "no answer to a ping"))


async def _status(ctx, params: dict, *, cookie: str | None = None, headers: dict | None = None) -> tuple[int, Any]:
    return await ctx.upgrade(params=params, cookie=cookie, headers=headers)


# -- HS-1 --------------------------------------------------------------------------------------------

@case("HS-1", title="no workspace_id or workspace_slug: 400 before the upgrade", cites=HS1_NEITHER)
async def hs1_missing_workspace(ctx):
    for why, params in (("no parameter", {}),
                        ("only the client metadata parameters", {"client_platform": "web", "client_version": "1.2.3",
                                                                 "client_os": "linux"}),
                        ("parameters of other names", {"workspace": ctx.world.ws_a, "slug": ctx.world.slug_a})):
        status, body = await _status(ctx, params)
        ctx.expect(status == 400, f"an upgrade with {why} names no workspace and must be refused with 400", 400,
                   (status, body))


@case("HS-1", title="unknown workspace_slug: 404 before the upgrade", cites=HS1_SLUG)
async def hs1_unknown_slug(ctx):
    for slug in (ctx.world.slug_a + "-missing", "s" * 300):
        status, body = await _status(ctx, {"workspace_slug": slug})
        ctx.expect(status == 404, f"the unknown workspace_slug {slug[:40]!r} must be refused with 404", 404,
                   (status, body))


@case("HS-1", "HS-3", "HS-4", title="workspace_slug names its workspace: a member authenticates, a non-member is "
                                  "refused", cites={"HS-1": HS1_NAMES, "HS-3": HS3_FAILURE, "HS-4": HS4_TOKEN})
async def hs1_slug_resolves(ctx):
    w = ctx.world
    client = await _open(ctx, {"workspace_slug": w.slug_a}, what="upgrade with the known workspace_slug")
    got = await auth_answer(ctx, client, await ctx.token(w.alice), req="HS-3")
    ctx.expect(matches(got, AUTH_ACK), "alice, a member of the workspace the slug names, must be acknowledged",
               AUTH_ACK, got)
    await token_refusal(ctx, await ctx.token(w.alice), NOT_MEMBER, "alice by the slug of a workspace she is not in",
                        decides="HS-1", blame=VALID_TOKEN, params={"workspace_slug": w.slug_b})


@case("HS-1", title="the optional client_platform, client_version and client_os parameters are accepted",
      cites=HS1_PARAMS)
async def hs1_client_parameters_accepted(ctx):
    w = ctx.world
    meta = {"client_platform": "desktop", "client_version": "0.9.1-beta+42", "client_os": "macOS 14.4 (arm64)"}
    for params in ({"workspace_id": w.ws_a, **meta}, {"workspace_slug": w.slug_a, **meta}):
        status, body = await _status(ctx, params)
        ctx.expect(status == 101, "the upgrade with the client metadata parameters must be accepted", 101,
                   (status, body))
        client = await _open(ctx, params)
        got = await auth_answer(ctx, client, await ctx.token(w.alice))
        ctx.expect(matches(got, AUTH_ACK), "auth on a connection opened with the client metadata parameters must be "
                                           "acknowledged", AUTH_ACK, got)


# -- HS-2: cookie auth ---------------------------------------------------------------------------------

async def _live_without_auth_ack(ctx, token: str, why: str) -> None:
    """A valid cookie: upgraded, live at once (a ping is answered), and no auth_ack."""
    w = ctx.world
    try:
        client = await ctx.raw(params={"workspace_id": w.ws_a}, cookie=token)
    except aiohttp.WSServerHandshakeError as e:
        raise Failed(f"{why}: the upgrade was refused", 101, f"HTTP {e.status}", "HS-2") from None
    start = len(client.frames)
    await client.send(PING)
    await ctx.frame(client, lambda f: matches(f, PONG), f"the pong to a ping ({why}: live at once)", start=start,
                    req="HS-2")
    ctx.expect(not any(matches(f, AUTH_ACK) for f in answers(client)), f"{why}: no auth_ack is sent",
               "no auth_ack", answers(client), req="HS-2")


@case("HS-2", title="a valid cookie JWT: live at once, no auth_ack", capability="cookie_auth", cites=HS2_LIVE)
async def hs2_cookie_is_live_without_auth_ack(ctx):
    await _live_without_auth_ack(ctx, await ctx.token(ctx.world.alice), "a cookie holding alice's JWT")


@case("HS-2", title="of two multica_auth cookies the first counts: a good one then garbage is live; garbage then a "
                    "good one is 401", capability="cookie_auth", cites=HS2_FIRST,
      catches="the last cookie winning (a cookie jar keeping the last value) where Go's Request.Cookie takes the first")
async def hs2_first_of_two_cookies_counts(ctx):
    w = ctx.world
    good, junk = await ctx.token(w.alice), "not-a-token"
    try:
        client = await ctx.raw(params={"workspace_id": w.ws_a}, headers={"Cookie": f"multica_auth={good}; "
                                                                                     f"multica_auth={junk}"})
    except aiohttp.WSServerHandshakeError as e:
        raise Failed("a good multica_auth cookie followed by a bad one: the upgrade was refused", 101,
                     f"HTTP {e.status}", "HS-2") from None
    start = len(client.frames)
    await client.send(PING)
    await ctx.frame(client, lambda f: matches(f, PONG), "the pong to a ping (the first cookie is good: live at once)",
                    start=start, req="HS-2")
    await cookie_refusal(ctx, None, INVALID_TOKEN, "a bad multica_auth cookie followed by a good one",
                         headers={"Cookie": f"multica_auth={junk}; multica_auth={good}"})


@case("HS-2", title="a PAT in the cookie: live at once, no auth_ack", capability="cookie_auth", cites=HS2_LIVE)
async def hs2_cookie_pat_is_live(ctx):
    needs(ctx, "pat")
    await _live_without_auth_ack(ctx, ctx.world.pat_alice, "a cookie holding alice's PAT")


@case("HS-2", "HS-4", capability="cookie_auth",
      title='a bad cookie token (garbage, bad signature, expired, alg none, unknown PAT): 401 {"error":"invalid token"}',
      cites={"HS-2": HS2_BAD, "HS-4": HS4_INVALID})
async def hs2_bad_cookie_is_401_invalid_token(ctx):
    w = ctx.world
    alice, bob = await ctx.token(w.alice), await ctx.token(w.bob)
    bad = {
        "a token that is not a JWT": "not-a-jwt",
        "a JWT with a bad signature": tampered(alice, bob),
        "an expired JWT (ttl_s 0)": await ctx.token(w.alice, ttl_s=0),
        "an unsigned JWT (alg none)": unsigned({"sub": w.alice, "exp": later()}),
        "an unknown PAT": "mul_" + secrets.token_hex(16),
    }
    for why, token in bad.items():
        await cookie_refusal(ctx, token, INVALID_TOKEN, f"a cookie holding {why}", decides="HS-4")


@case("HS-4", title='a cookie JWT whose sub is missing or empty: 401 {"error":"invalid claims"}',
      capability="cookie_auth", cites=f"{HS4_CLAIMS}; {HS4_COOKIE_CLAIMS}")
async def hs2_cookie_without_sub_is_401_invalid_claims(ctx):
    for why, user in (("without sub", None), ("with an empty sub", "")):
        await cookie_refusal(ctx, await ctx.token(user), INVALID_CLAIMS, f"a cookie holding a JWT {why}",
                             decides="HS-4")


@case("HS-2", "HS-4", title='a cookie JWT of a disabled user: 403 {"error":"account disabled"}',
      capability="cookie_auth", cites={"HS-2": HS2_DISABLED, "HS-4": HS4_TOKEN})
async def hs2_disabled_cookie_is_403(ctx):
    await cookie_refusal(ctx, await ctx.token(ctx.world.dave), DISABLED, "a cookie JWT of a disabled member",
                         blame=VALID_TOKEN)


@case("HS-2", "HS-4", title='a cookie PAT of a disabled user: 403 {"error":"account disabled"}',
      capability="cookie_auth", cites={"HS-2": HS2_DISABLED, "HS-4": HS4_TOKEN})
async def hs2_disabled_cookie_pat_is_403(ctx):
    needs(ctx, "pat")
    await cookie_refusal(ctx, ctx.world.pat_dave, DISABLED, "a cookie PAT of a disabled member", blame=VALID_TOKEN)


@case("HS-2", "HS-4", title='a cookie of a non-member: 403 {"error":"not a member of this workspace"}',
      capability="cookie_auth", cites={"HS-2": HS2_NOT_MEMBER, "HS-4": HS4_TOKEN})
async def hs2_non_member_cookie_is_403(ctx):
    w = ctx.world
    for token, why, params in ((await ctx.token(w.carol), "a cookie of a member of another workspace", None),
                               (await ctx.token(w.outsider), "a cookie of a user in no workspace", None),
                               (await ctx.token(w.alice), "a cookie for a workspace id that does not exist",
                                {"workspace_id": str(uuid.uuid4())})):
        await cookie_refusal(ctx, token, NOT_MEMBER, why, blame=VALID_TOKEN, params=params)


# -- HS-3: first-message token auth ------------------------------------------------------------------------

@case("HS-3", title='token auth is answered {"type":"auth_ack"}, then the connection works', cites=HS3_ACK)
async def hs3_auth_ack(ctx):
    client = await _open(ctx)
    got = await auth_answer(ctx, client, await ctx.token(ctx.world.alice))
    ctx.expect(matches(got, AUTH_ACK), 'a valid token must be answered {"type":"auth_ack"}', AUTH_ACK, got)
    start = len(client.frames)
    await client.send(PING)
    await ctx.frame(client, lambda f: matches(f, PONG), "the pong to a ping after auth_ack", start=start)
    ctx.expect(sum(matches(f, AUTH_ACK) for f in answers(client)) == 1, "auth is answered with one auth_ack",
               [AUTH_ACK, PONG], answers(client))


# A first data frame that is not an auth message. TOKEN is replaced by a valid token of alice's,
# WS by her workspace: only the frame's shape is wrong.
NOT_AUTH = {
    "a subscribe": '{"type":"subscribe","payload":{"scope":"workspace","id":"WS"}}',
    "a JSON ping": '{"type":"ping"}',
    "text that is not JSON": "hello",
    "an empty text frame": "",
    "truncated JSON": '{"type":"auth","payload":{"token":"TOKEN"}',
    "a JSON array": '[{"type":"auth","payload":{"token":"TOKEN"}}]',
    "JSON null": "null",
    "a JSON number": "42",
    "a JSON string": '"TOKEN"',
    "deeply nested arrays": "[" * 5000 + "]" * 5000,
    'type "AUTH"': '{"type":"AUTH","payload":{"token":"TOKEN"}}',
    "a numeric type": '{"type":1,"payload":{"token":"TOKEN"}}',
    "no type": '{"payload":{"token":"TOKEN"}}',
}
NOT_AUTH_BINARY = {
    "an empty binary frame": b"",
    "a binary frame of bytes": b"\x00\x01\x02\xff",
    "a binary frame that is not UTF-8": b"\xff\xfe{not utf-8",
    "a binary JSON ping": b'{"type":"ping"}',
}
# type "auth" without a token T in its payload: whether that is "not an auth message" or an
# invalid token the contract leaves open, so either text passes.
NO_TOKEN = {
    "the token outside the payload": '{"type":"auth","token":"TOKEN"}',
    "no payload": '{"type":"auth"}',
    "a null payload": '{"type":"auth","payload":null}',
    "a string payload": '{"type":"auth","payload":"TOKEN"}',
    "an array payload": '{"type":"auth","payload":["TOKEN"]}',
    "no token in the payload": '{"type":"auth","payload":{}}',
    "an empty token": '{"type":"auth","payload":{"token":""}}',
    "a null token": '{"type":"auth","payload":{"token":null}}',
    "a numeric token": '{"type":"auth","payload":{"token":12345}}',
    "a boolean token": '{"type":"auth","payload":{"token":true}}',
    "an array token": '{"type":"auth","payload":{"token":["TOKEN"]}}',
    "an object token": '{"type":"auth","payload":{"token":{"value":"TOKEN"}}}',
}


@case("HS-3", title='a first frame that is not an auth message: {"error":"expected auth message as first frame"}, '
                    "then the close", cites=HS3_FIRST)
async def hs3_first_frame_not_auth(ctx):
    w = ctx.world
    token = await ctx.token(w.alice)
    for texts, frames in ((EXPECTED_AUTH, NOT_AUTH), ((EXPECTED_AUTH, INVALID_TOKEN), NO_TOKEN)):
        for why, text in frames.items():
            client = await _open(ctx)
            await client.send(text.replace("TOKEN", token).replace("WS", w.ws_a))
            await refused(ctx, client, texts, f"a first frame with {why}")
    for why, data in NOT_AUTH_BINARY.items():
        client = await _open(ctx)
        await client.ws.send_bytes(data)
        await refused(ctx, client, EXPECTED_AUTH, f"a first frame that is {why}")


@case("HS-3", title="a cookie other than multica_auth does not authenticate: the connection is in token mode",
      cites={"HS-3": "Token auth (no cookie): the client's first data frame MUST be"})
async def hs3_other_cookie_is_token_mode(ctx):
    client = await _open(ctx, headers={"Cookie": f"session={await ctx.token(ctx.world.alice)}"})
    await client.send(PING)
    await refused(ctx, client, EXPECTED_AUTH, "a ping first, with alice's token in a cookie not named multica_auth")


@case("HS-3", "HS-4", title='a token of a non-member: {"error":"not a member of this workspace"}, then the close',
      cites={"HS-3": HS3_FAILURE, "HS-4": HS4_TOKEN})
async def hs3_non_member(ctx):
    w = ctx.world
    await token_refusal(ctx, await ctx.token(w.carol), NOT_MEMBER, "a member of another workspace", blame=VALID_TOKEN)
    await token_refusal(ctx, await ctx.token(w.outsider), NOT_MEMBER, "a user in no workspace", blame=VALID_TOKEN)
    await token_refusal(ctx, await ctx.token(w.alice), NOT_MEMBER, "a workspace id that does not exist",
                        blame=VALID_TOKEN, params={"workspace_id": str(uuid.uuid4())})


@case("HS-3", "HS-4", title='a token of a disabled user: {"error":"account disabled"}, then the close',
      cites={"HS-3": HS3_FAILURE, "HS-4": HS4_TOKEN})
async def hs3_disabled(ctx):
    await token_refusal(ctx, await ctx.token(ctx.world.dave), DISABLED, "a JWT of a disabled member",
                        blame=VALID_TOKEN)


def _auth_wait(ctx) -> float:
    auth_s = ctx.target.timeout("auth_s", 10)
    if auth_s > 15 and ctx.quick:
        raise NotChecked(f"the auth timeout is {auth_s:g} s: left out by --quick")
    if auth_s > 100:
        raise NotChecked(f"the auth timeout is {auth_s:g} s: longer than a case may wait")
    return auth_s


async def _timed_out(ctx, client, why: str, auth_s: float, started: float) -> None:
    """The auth timeout's refusal: not before the target's auth_s (a client may take that long),
    within auth_s + 5 s, then judged like every refusal."""
    loop = asyncio.get_running_loop()
    want = {"error": AUTH_TIMEOUT}
    got = await first_answer(ctx, client, why, timeout=auth_s + 5, expected=want)
    elapsed = loop.time() - started
    ctx.check("HS-3", elapsed >= auth_s * 0.8, f"{why}: the auth timeout error came after {elapsed:.1f} s, before "
                                               f"the {auth_s:g} s the target reports", f">= {auth_s:g} s",
              f"{elapsed:.1f} s")
    await judge_refusal(ctx, client, got, (AUTH_TIMEOUT,), why, decides="HS-3")


@case("HS-3", title='a client that sends nothing gets {"error":"auth timeout or read error"} after auth_s, then the '
                    "close", cites=HS3_TIMEOUT)
async def hs3_auth_timeout(ctx):
    auth_s = _auth_wait(ctx)
    client = await _open(ctx)
    started = asyncio.get_running_loop().time()
    await _timed_out(ctx, client, "a client that sends nothing", auth_s, started)


@case("HS-3", title="transport pings before auth neither count as the auth frame nor extend the auth timeout",
      cites=f"{HS3_TIMEOUT}. {HS3_PINGS}")
async def hs3_transport_pings_do_not_count(ctx):
    auth_s = _auth_wait(ctx)
    client = await _open(ctx)
    started = asyncio.get_running_loop().time()

    async def keep_pinging() -> None:  # pacing, not synchronization: one transport ping every 0.5 s
        while not client.closed:
            try:
                await client.ws.ping(b"not-auth")
            except (ConnectionError, RuntimeError):
                return
            await asyncio.sleep(0.5)

    pinger = asyncio.create_task(keep_pinging())
    try:
        await _timed_out(ctx, client, "a client that sends only transport pings", auth_s, started)
    finally:
        pinger.cancel()
        await asyncio.gather(pinger, return_exceptions=True)


@case("HS-3", title="a transport ping before auth is not the first data frame: auth afterwards succeeds",
      cites={"HS-3": HS3_PINGS})
async def hs3_ping_then_auth(ctx):
    client = await _open(ctx)
    await client.ws.ping(b"before-auth")
    got = await auth_answer(ctx, client, await ctx.token(ctx.world.alice))
    ctx.expect(matches(got, AUTH_ACK), "auth after a transport ping must be acknowledged: the ping was not the first "
                                       "data frame", AUTH_ACK, got)


# -- HS-4: tokens ------------------------------------------------------------------------------------------

@case("HS-4", "HS-3", title='an unsigned JWT (alg none / None / NONE) is "invalid token"',
      cites={"HS-4": HS4_INVALID, "HS-3": HS3_FAILURE})
async def hs4_alg_none(ctx):
    w = ctx.world
    for alg in ("none", "None", "NONE"):
        await token_refusal(ctx, unsigned({"sub": w.alice, "exp": later()}, alg), INVALID_TOKEN,
                            f"an unsigned JWT with alg {alg!r}", decides="HS-4")


@case("HS-4", "HS-3", title='a JWT signed with the secret but with HS384 or HS512 is "invalid token"',
      cites={"HS-4": HS4_INVALID, "HS-3": HS3_FAILURE},
      catches='any HMAC algorithm accepted (seen in Multica)')
async def hs4_other_hmac_algorithms(ctx):
    secret = await secret_or_skip(ctx, "signing HS384/HS512")
    for alg in ("HS384", "HS512"):
        await token_refusal(ctx, sign({"sub": ctx.world.alice, "exp": later()}, secret, alg), INVALID_TOKEN,
                            f"a JWT signed with the right secret using {alg}", decides="HS-4")


@case("HS-4", "HS-3", title='a JWT with a bad signature is "invalid token"',
      cites={"HS-4": HS4_INVALID, "HS-3": HS3_FAILURE})
async def hs4_bad_signature(ctx):
    w = ctx.world
    alice, bob = await ctx.token(w.alice), await ctx.token(w.bob)
    head, _, sig = bob.rpartition(".")
    flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    bad = {
        "another token's signature on bob's claims": tampered(alice, bob),
        "a signature with flipped bits": f"{head}.{flipped}",
        "the signature cut off": head,
        "an empty signature": f"{head}.",
        "a signature made with another key": sign({"sub": w.bob, "exp": later()},
                                                  "not-the-secret-" + secrets.token_hex(16)),
    }
    for why, token in bad.items():
        await token_refusal(ctx, token, INVALID_TOKEN, f"a JWT with {why}", decides="HS-4")


@case("HS-4", "HS-3", title='an expired JWT (ttl_s 0 or below) is "invalid token"',
      cites={"HS-4": HS4_INVALID, "HS-3": HS3_FAILURE},
      catches='expired JWTs accepted')
async def hs4_expired(ctx):
    for ttl in (0, -1, -30):
        await token_refusal(ctx, await ctx.token(ctx.world.alice, ttl_s=ttl), INVALID_TOKEN,
                            f"a JWT minted with ttl_s {ttl}", decides="HS-4")


@case("HS-4", "HS-3", title='a JWT whose exp is exactly now is "invalid token" (now >= exp, no leeway)',
      cites={"HS-4": HS4_INVALID, "HS-3": HS3_FAILURE})
async def hs4_expired_at_exp_now(ctx):
    secret = await secret_or_skip(ctx, "a JWT whose exp is now")
    await token_refusal(ctx, sign({"sub": ctx.world.alice, "exp": int(time.time())}, secret), INVALID_TOKEN,
                        "a JWT whose exp is now", decides="HS-4")


@case("HS-4", "HS-3", title='a JWT whose exp is a numeric string in the past is "invalid token"',
      cites={"HS-4": HS4_INVALID, "HS-3": HS3_FAILURE},
      catches="dates that are not JSON numbers skipped by the expiry check")
async def hs4_exp_as_a_string_in_the_past(ctx):
    secret = await secret_or_skip(ctx, "a JWT whose exp is a string")
    # a date or not a date (RFC 7519 dates are numbers): either reading refuses it
    for exp in ("1000", str(int(time.time()) - 60)):
        await token_refusal(ctx, sign({"sub": ctx.world.alice, "exp": exp}, secret), INVALID_TOKEN,
                            f'a JWT whose exp is "{exp}"', decides="HS-4")


@case("HS-4", "HS-3", title='a correctly signed JWT whose sub is missing or empty is "invalid claims"',
      cites={"HS-4": HS4_CLAIMS, "HS-3": HS3_FAILURE})
async def hs4_missing_or_empty_sub(ctx):
    await token_refusal(ctx, await ctx.token(None), INVALID_CLAIMS, "a JWT without sub", decides="HS-4")
    await token_refusal(ctx, await ctx.token(""), INVALID_CLAIMS, "a JWT with an empty sub", decides="HS-4")


@case("HS-4", "HS-3", title='a correctly signed JWT whose sub is not a string is "invalid claims"',
      cites={"HS-4": HS4_CLAIMS, "HS-3": HS3_FAILURE})
async def hs4_non_string_sub(ctx):
    secret = await secret_or_skip(ctx, "a non-string sub")
    w = ctx.world
    for sub in (42, True, [w.alice], {"id": w.alice}, None):
        await token_refusal(ctx, sign({"sub": sub, "exp": later()}, secret), INVALID_CLAIMS,
                            f"a JWT with sub {json.dumps(sub)}", decides="HS-4")


async def _is_user(ctx, client, user: str, why: str) -> None:
    """The connection is `user`'s: subscribing to user:`user` is acknowledged (SUB-1: only the
    connection's own user id). When it is not, a connection the suite knows is alice's tells
    whether SUB-1 works at all (then the token named someone else: HS-4) or not (set-up)."""
    got = await ctx.answer(client, "subscribe", "user", user, req="HS-4")
    if matches(got, ack("subscribe", "user", user)):
        return
    control = await ctx.connect(ctx.world.alice, ctx.world.ws_a)
    own = await ctx.answer(control, "subscribe", "user", ctx.world.alice, req="HS-4")
    if not matches(own, ack("subscribe", "user", ctx.world.alice)):
        raise SetupError("subscribe a connection to its own user scope (to tell whose connection it is)", own,
                         req="SUB-1", expected=ack("subscribe", "user", ctx.world.alice))
    ctx.expect(False, f"{why}: the connection must be {user}'s (its own user scope is refused)",
               ack("subscribe", "user", user), got, req="HS-4")


@case("HS-4", title="a JWT authenticates the user named by its sub (an email claim is optional)",
      cites=HS4_TOKEN)
async def hs4_jwt_names_its_user(ctx):
    w = ctx.world
    client = await _open(ctx)
    got = await auth_answer(ctx, client, await ctx.token(w.bob, email="bob@example.com"), req="HS-4")
    ctx.expect(matches(got, AUTH_ACK), "bob's JWT with an email claim must be accepted", AUTH_ACK, got)
    await _is_user(ctx, client, w.bob, "bob's JWT")


@case("HS-4", "HS-3", title="a known PAT authenticates its user (and only in that user's workspaces)",
      capability="pat", cites={"HS-4": HS4_TOKEN, "HS-3": HS3_FAILURE})
async def hs4_pat_names_its_user(ctx):
    w = ctx.world
    client = await _open(ctx)
    got = await auth_answer(ctx, client, w.pat_alice, req="HS-4")
    ctx.expect(matches(got, AUTH_ACK), "alice's PAT must be accepted", AUTH_ACK, got)
    await _is_user(ctx, client, w.alice, "alice's PAT")
    await token_refusal(ctx, w.pat_alice, NOT_MEMBER, "alice's PAT in a workspace she is not in",
                        blame=VALID_TOKEN, params={"workspace_id": w.ws_b})


@case("HS-4", "HS-3", title='tokens that are no token in odd encodings (a lone surrogate, non-ASCII, NUL, 60 KB) '
                            'are "invalid token", answered like any other', cites={"HS-4": HS4_INVALID, "HS-3": HS3_FAILURE},
      catches="a token that cannot be encoded (a lone surrogate) killing the handler: the connection ends with no "
              "error frame")
async def hs4_tokens_in_odd_encodings(ctx):
    real = await ctx.token(ctx.world.alice)
    for why, token in (("a JWT-like token holding a lone surrogate", "eyJ\ud800." + real.split(".", 1)[1]),
                       ("a PAT holding a lone surrogate", "mul_\udfff" + secrets.token_hex(8)),
                       ("a token of non-ASCII letters", "\u00fcn\u00efcode.t\u00f6ken.\u00e9"),
                       ("a token holding NUL", "abc\u0000def"),
                       ("a token of 60,000 characters", "x" * 60_000)):
        await token_refusal(ctx, token, INVALID_TOKEN, why, decides="HS-4")


@case("HS-4", "HS-3", title='an unknown PAT is "invalid token"', capability="pat",
      cites={"HS-4": HS4_INVALID, "HS-3": HS3_FAILURE})
async def hs4_unknown_pat(ctx):
    pat = ctx.world.pat_alice
    for why, token in (("an unknown PAT", "mul_" + secrets.token_hex(16)),
                       ("a known PAT with a character changed", pat[:-1] + ("0" if pat[-1] != "0" else "1")),
                       ("the bare PAT prefix", "mul_")):
        await token_refusal(ctx, token, INVALID_TOKEN, why, decides="HS-4")


@case("HS-3", "HS-4", title='the PAT of a disabled user is "account disabled"', capability="pat",
      cites={"HS-3": HS3_FAILURE, "HS-4": HS4_TOKEN})
async def hs4_disabled_pat(ctx):
    await token_refusal(ctx, ctx.world.pat_dave, DISABLED, "the PAT of a disabled member", blame=VALID_TOKEN)


# -- HS-5: origins -------------------------------------------------------------------------------------------

def _host(ctx, node: int = 0) -> str:
    return urlsplit(ctx.target.urls[node]).netloc


def _allow_list(ctx) -> list:
    return list((ctx.target.info.get("origins") or {}).get("allowed") or [])


def _foreign(ctx) -> str:
    allowed = set(_allow_list(ctx))
    while True:
        origin = f"https://evil-{secrets.token_hex(4)}.example.com"
        if origin not in allowed:
            return origin


async def _origin_allowed(ctx, origin: str | None, why: str, headers: dict | None = None) -> None:
    hdrs = dict(headers or {})
    if origin is not None:
        hdrs["Origin"] = origin
    status, body = await _status(ctx, {"workspace_id": ctx.world.ws_a}, headers=hdrs)
    ctx.expect(status == 101, f"{why}: the upgrade must be accepted", 101, (status, body), req="HS-5")


async def _origin_refused(ctx, origin: str, why: str, headers: dict | None = None) -> None:
    """HS-5 fixes the status only (the reference's body is its own choice)."""
    status, body = await _status(ctx, {"workspace_id": ctx.world.ws_a}, headers={"Origin": origin, **(headers or {})})
    ctx.expect(status == 403, f"{why}: the upgrade must be refused with 403", 403, (status, body), req="HS-5")


@case("HS-5", title="no Origin, or an Origin whose host equals Host (any scheme), is allowed", capability="origin",
      cites=HS5_SAME)
async def hs5_same_host_allowed(ctx):
    await _origin_allowed(ctx, None, "a request without Origin")
    for scheme in ("http", "https"):
        await _origin_allowed(ctx, f"{scheme}://{_host(ctx)}", f"an Origin ({scheme}) whose host equals Host")


@case("HS-5", title="an Origin neither equal to Host nor in the allow-list is refused with 403", capability="origin",
      cites=HS5_OTHER)
async def hs5_foreign_origin_refused(ctx):
    host = urlsplit(ctx.target.urls[0]).hostname
    allowed = set(_allow_list(ctx))
    await _origin_refused(ctx, _foreign(ctx), "a foreign Origin")
    for origin, why in ((f"http://{host}:1", "the same host on another port"), ("null", 'Origin "null"')):
        if origin not in allowed:
            await _origin_refused(ctx, origin, why)


@case("HS-5", title="an allow-listed Origin is allowed; look-alikes of it are refused", capability="origin",
      cites=HS5_OTHER)
async def hs5_allow_list_is_exact(ctx):
    allowed = [o for o in _allow_list(ctx) if isinstance(o, str)]
    entry = next((o for o in allowed if urlsplit(o).scheme in ("http", "https") and urlsplit(o).hostname), None)
    if entry is None:
        raise NotChecked("the target's allow-list (info.origins.allowed) holds no http(s) origin")
    await _origin_allowed(ctx, entry, f"the allow-listed Origin {entry}")
    parts = urlsplit(entry)
    other_scheme = "http" if parts.scheme == "https" else "https"
    for origin, why in ((f"{parts.scheme}://{parts.netloc}.evil-{secrets.token_hex(3)}.example",
                         "the allow-listed origin with a suffix"),
                        (f"{other_scheme}://{parts.netloc}", "the allow-listed host under another scheme"),
                        (f"{parts.scheme}://{_bracketed(parts.hostname)}:{(parts.port or 0) + 1}",
                         "the allow-listed host on another port"),
                        (f"{parts.scheme}://evil-{secrets.token_hex(3)}.{parts.netloc}",
                         "a subdomain of the allow-listed host")):
        if origin not in allowed:
            await _origin_refused(ctx, origin, why)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


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


async def _peer(ctx) -> tuple[str, bool, list]:
    """The address the suite connects from, whether the target's trusted proxies (info) hold it."""
    proxies = (ctx.target.info.get("origins") or {}).get("trusted_proxies") or []
    probe = await _open(ctx, what="open a connection to learn the suite's address")
    sock = probe.ws.get_extra_info("sockname")
    await probe.close()
    if not sock:
        raise NotChecked("the suite could not tell which address it connects from")
    trusted = _trusted(sock[0], proxies)
    if trusted is None:
        raise NotChecked(f"info.origins.trusted_proxies {proxies!r} holds an entry that is not a CIDR")
    return sock[0], trusted, proxies


def _forwarded_origin(ctx) -> tuple[str, str]:
    name = f"app-{secrets.token_hex(4)}.example.com"
    if f"https://{name}" in _allow_list(ctx):
        raise NotChecked("the generated origin is allow-listed")
    return name, f"https://{name}"


@case("HS-5", title="from a trusted proxy, the first X-Forwarded-Host entry is compared with the Origin host",
      capability="origin", cites=HS5_FORWARDED)
async def hs5_forwarded_host_from_trusted_proxy(ctx):
    peer, trusted, proxies = await _peer(ctx)
    if not trusted:
        raise NotChecked(f"the suite connects from {peer}, outside the target's trusted proxies {proxies}")
    name, origin = _forwarded_origin(ctx)
    proxy = f"proxy-{secrets.token_hex(3)}.internal"
    await _origin_allowed(ctx, origin, f"X-Forwarded-Host equal to the Origin host from a trusted proxy ({peer})",
                          headers={"X-Forwarded-Host": name})
    await _origin_allowed(ctx, origin, "X-Forwarded-Host whose first entry is the Origin host",
                          headers={"X-Forwarded-Host": f"{name}, {proxy}"})
    await _origin_refused(ctx, origin, "X-Forwarded-Host naming the Origin host only in its second entry",
                          headers={"X-Forwarded-Host": f"{proxy}, {name}"})
    await _origin_refused(ctx, origin, "X-Forwarded-Host naming another host", headers={"X-Forwarded-Host": proxy})


@case("HS-5", title="X-Forwarded-Host from a peer outside the trusted proxies is not compared",
      capability="origin", cites=HS5_FORWARDED)
async def hs5_forwarded_host_from_untrusted_peer(ctx):
    peer, trusted, proxies = await _peer(ctx)
    if trusted:
        raise NotChecked(f"the suite connects from {peer}, inside the target's trusted proxies {proxies}")
    name, origin = _forwarded_origin(ctx)
    await _origin_refused(ctx, origin, f"a forged X-Forwarded-Host from a peer ({peer}) outside the trusted proxies "
                                       f"{proxies}", headers={"X-Forwarded-Host": name})


@case("HS-5", title="a valid cookie does not exempt a foreign Origin from the 403", capability="origin",
      cites=HS5_OTHER)
async def hs5_cookie_does_not_bypass_origin(ctx):
    needs(ctx, "cookie_auth")
    cookie = await ctx.token(ctx.world.alice)
    params = {"workspace_id": ctx.world.ws_a}
    alone = await _status(ctx, params, cookie=cookie)
    if alone[0] != 101:
        raise NotChecked(f"depends on HS-2: alice's cookie without an Origin is refused too ({alone[0]})")
    status, body = await _status(ctx, params, cookie=cookie, headers={"Origin": _foreign(ctx)})
    ctx.expect(status == 403, "a foreign Origin must be refused with 403 even with a valid cookie", 403,
               (status, body))


# -- HS-6: auto-subscription -----------------------------------------------------------------------------------

async def _holds_auto_scopes(ctx, client, *, node: int = 0, pub_node: int = 0) -> None:
    """Events of workspace:W and user:U published right after auth reach `client` (alice in
    workspace A) without any subscribe. A witness on the same node that subscribed to the scope
    explicitly gets each event first: if it misses it too, that is a loss (DEL-1), not HS-6."""
    w = ctx.world
    bob = await ctx.connect(w.bob, w.ws_a, node=node)
    await hold(ctx, bob, "workspace", w.ws_a, "bob (a witness)")
    alice2 = await ctx.connect(w.alice, w.ws_a, node=node)
    await hold(ctx, alice2, "user", w.alice, "a second connection of alice (a witness)")
    for scope, sid, witness in (("workspace", w.ws_a, bob), ("user", w.alice, alice2)):
        published = await ctx.publish(scope, sid, {"type": "conformance:auto", "payload": {"scope": scope}},
                                      node=pub_node)
        try:
            await ctx.event(witness, published)
        except Failed as e:
            raise SetupError(f"deliver the {scope} event to a witness that subscribed to {scope}:{sid}", e.reason,
                             req="DEL-1", expected=published["event_id"]) from None
        await ctx.event(client, published, req="HS-6")


@case("HS-6", title="token mode: workspace and user events arrive right after auth_ack, without subscribing",
      cites=HS6_HOLDS)
async def hs6_token_mode(ctx):
    client = await _open(ctx)
    got = await auth_answer(ctx, client, await ctx.token(ctx.world.alice))
    if not matches(got, AUTH_ACK):
        raise SetupError("authenticate alice", got, req="HS-3", expected=AUTH_ACK)
    await _holds_auto_scopes(ctx, client)


@case("HS-6", title="cookie mode: workspace and user events arrive right after the upgrade, without subscribing",
      capability="cookie_auth", cites=HS6_COOKIE)
async def hs6_cookie_mode(ctx):
    client = await ctx.connect(ctx.world.alice, ctx.world.ws_a, cookie=True)
    await _holds_auto_scopes(ctx, client)


@case("HS-6", title="workspace and user events published through another node arrive right after auth_ack",
      min_nodes=2, cites=HS6_HOLDS)
async def hs6_token_mode_across_nodes(ctx):
    client = await _open(ctx)
    got = await auth_answer(ctx, client, await ctx.token(ctx.world.alice))
    if not matches(got, AUTH_ACK):
        raise SetupError("authenticate alice", got, req="HS-3", expected=AUTH_ACK)
    await _holds_auto_scopes(ctx, client, pub_node=1)


# -- HS-7: order of the handshake checks ------------------------------------------------------------------------
# Each check compares the answer with every failing input against the answer to the first failing
# check's input alone: whatever that answer is (its own requirement judges it), the later checks
# must not change it.

async def _first_check_decides(ctx, params: dict, first_cookie: str | None, why: str, *, depends: str,
                               cookie: str | None = None) -> str | None:
    """The answer to `params` (+ `first_cookie`) alone, and to the same with a bad `cookie` (if
    given) and a foreign Origin: the same status, and for an HS-2 answer the same error text (HS-1
    fixes the status only). Returns why it could not be compared (the input alone is accepted)."""
    alone = await _status(ctx, params, cookie=first_cookie)
    if alone[0] == 101:
        return f"{why} alone is not refused (depends on {depends})"
    got = await _status(ctx, params, cookie=cookie if cookie is not None else first_cookie,
                        headers={"Origin": _foreign(ctx)})
    same = got[0] == alone[0] and (depends == "HS-1" or _error_text(got[1]) == _error_text(alone[1]))
    extra = "a bad cookie and a foreign Origin" if cookie is not None else "a foreign Origin"
    ctx.expect(same, f"{why} with {extra}: the answer must be the one {depends} gives {why} alone", alone, got,
               req="HS-7")
    return None


def _skipped(reasons: list) -> None:
    """After the other inputs were compared: the ones that could not be, if any (not checked)."""
    missed = [r for r in reasons if r]
    if missed:
        raise NotChecked("not compared: " + "; ".join(missed))


@case("HS-7", title="no workspace, a bad cookie and a foreign Origin: the HS-1 answer (400)", cites=HS7_ORDER)
async def hs7_missing_workspace_first(ctx):
    _skipped([await _first_check_decides(ctx, {}, None, "no workspace", depends="HS-1", cookie=cookie)
              for cookie in ("garbage", await ctx.token(ctx.world.dave), await ctx.token(ctx.world.carol))])


@case("HS-7", title="an unknown slug, a bad cookie and a foreign Origin: the HS-1 answer (404)",
      cites={"HS-7": "an unknown slug with a bad cookie and a foreign origin gets 404"})
async def hs7_unknown_slug_first(ctx):
    params = {"workspace_slug": ctx.world.slug_a + "-missing"}
    status, body = await _status(ctx, params, cookie="garbage", headers={"Origin": _foreign(ctx)})
    ctx.expect(status == 404, "an unknown slug with a bad cookie and a foreign origin gets 404", 404, (status, body))
    _skipped([await _first_check_decides(ctx, params, None, "an unknown slug", depends="HS-1", cookie=cookie)
              for cookie in ("garbage", await ctx.token(ctx.world.dave), await ctx.token(ctx.world.carol))])


@case("HS-7", title="a bad cookie and a foreign Origin: the cookie's answer (HS-2 before HS-5)",
      capability="cookie_auth", cites=HS7_ORDER)
async def hs7_cookie_before_origin(ctx):
    w = ctx.world
    skipped = []
    for cookie, why in (("garbage", "a garbage cookie"), (await ctx.token(w.alice, ttl_s=0), "an expired cookie"),
                        (await ctx.token(None), "a cookie without sub"),
                        (await ctx.token(w.dave), "a disabled user's cookie"),
                        (await ctx.token(w.carol), "a non-member's cookie")):
        skipped.append(await _first_check_decides(ctx, {"workspace_id": w.ws_a}, cookie, why, depends="HS-2"))
    skipped.append(await _first_check_decides(ctx, {"workspace_slug": w.slug_a}, await ctx.token(w.carol),
                                              "a non-member's cookie with a known slug", depends="HS-2"))
    _skipped(skipped)


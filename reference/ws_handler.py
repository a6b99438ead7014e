"""GET /ws: the handshake checks in contract order (HS-7: HS-1, HS-2, HS-5), first-message
auth (HS-3), then the read loop for subscribe / unsubscribe / ping (IN, SUB, AZ)."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import WSMsgType, web

from . import inbound, positions, tokens
from .authorizer import ALLOWED
from .connection import Connection
from .hub import REVOKED
from .origin import origin_allowed
from .ratelog import RateLimitedLog
from .state import STATE, NodeState
from .strict_ws import StrictWebSocketResponse

log = logging.getLogger("scopehub.ws")
# Failed authentications are counted in health; the log gets one line per interval at most, so
# that a flood of guesses cannot fill the disk (throttling them is the deployment's job).
auth_log = RateLimitedLog(log, "authentication failed")

COOKIE = "multica_auth"
AUTH_ACK = '{"type":"auth_ack"}'
PONG = '{"type":"pong"}'


def _http_error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


def _frame(type_: str, **payload) -> str:
    return json.dumps({"type": type_, "payload": payload}, separators=(",", ":"))


def auth_cookie(request: web.Request) -> str | None:
    """The first `multica_auth` cookie, as Go's Request.Cookie reads it (HS-2; aiohttp's own
    cookie jar would keep the last one)."""
    for header in request.headers.getall("Cookie", ()):
        for part in header.split(";"):
            name, eq, value = part.strip().partition("=")
            if eq and name == COOKIE:
                value = value.strip()
                if len(value) > 1 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                return value or None
    return None


def _auth_failed(st: NodeState, peer: str | None, text: str) -> None:
    st.metrics.auth_failures += 1
    auth_log.note(f"{text} from {peer}")


def _resolve_workspace(request: web.Request, st: NodeState) -> str | web.Response:
    q = request.query
    wid = q.get("workspace_id", "")
    if not wid and (slug := q.get("workspace_slug", "")):
        wid = st.world.slugs.get(slug, "")
        if not wid:
            return _http_error(404, "workspace not found")
    if not wid:
        return _http_error(400, "workspace_id or workspace_slug required")
    return wid


async def handle_ws(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    cfg = st.config
    wid = _resolve_workspace(request, st)  # HS-1
    if isinstance(wid, web.Response):
        return wid

    user_id = None
    if cookie := auth_cookie(request):  # HS-2: checked before the upgrade
        try:
            user_id = tokens.authenticate(cookie, st.world, cfg.jwt_secret)
        except tokens.AuthError as e:
            _auth_failed(st, request.remote, e.text)
            return _http_error(403 if e.text == tokens.ACCOUNT_DISABLED else 401, e.text)
        if not st.world.is_member(user_id, wid):
            _auth_failed(st, request.remote, tokens.NOT_A_MEMBER)
            return _http_error(403, tokens.NOT_A_MEMBER)

    peer = request.remote
    if not origin_allowed(request.headers.get("Origin"), request.host,  # HS-5
                          request.headers.get("X-Forwarded-Host"), peer, cfg):
        log.warning("rejected origin %r from %s", request.headers.get("Origin"), peer)
        return _http_error(403, "origin not allowed")

    # compress=False: frames are encoded once and written as they are to every subscriber.
    # max_msg_size is exclusive in aiohttp: 65,536 bytes pass, 65,537 close with 1009 (IN-4).
    ws = StrictWebSocketResponse(autoping=False, compress=False, max_msg_size=cfg.max_inbound + 1, timeout=5.0)
    if not ws.can_prepare(request).ok:
        return _http_error(400, "websocket upgrade required")
    transport = request.transport

    if user_id is not None:
        # Cookie mode: live at once, subscribed before the upgrade completes (HS-6).
        conn = Connection(ws, transport, user_id, wid, cfg.send_queue, st.metrics, st.hub.detach)
        try:
            if not await st.hub.attach(conn, None):
                return _http_error(503, "connection closed during setup")
            await ws.prepare(request)
        except BaseException:
            st.hub.detach(conn)
            raise
    else:
        await ws.prepare(request)
        st.unauthenticated.add(ws)  # a stopping node closes these at once (NODE-5)
        try:
            user_id = await _first_message_auth(ws, st, wid, peer)
        finally:
            st.unauthenticated.discard(ws)
        if user_id is None:
            return ws
        conn = Connection(ws, transport, user_id, wid, cfg.send_queue, st.metrics, st.hub.detach)

    try:
        # not conn.closed: a cookie connection revoked during the upgrade was already closed (AZ-5)
        if conn.user_id and not conn.closed and (conn in st.hub.connections or await st.hub.attach(conn, AUTH_ACK)):
            conn.start(cfg.ping_s, cfg.pong_s)
            if not st.world.is_member(conn.user_id, wid):
                # AZ-5: revoked after the membership check, while the connection was joining its
                # scopes (the hub's revoke did not see it yet): closed like the others.
                st.hub.detach(conn)
                conn.goodbye(1008, REVOKED)
            await _read_loop(ws, conn, st)
    finally:
        st.hub.detach(conn)
        await conn.close()
    return ws


async def _auth_fail(ws: web.WebSocketResponse, text: str, st: NodeState, peer: str | None) -> None:
    _auth_failed(st, peer, text)
    try:
        await ws.send_str(json.dumps({"error": text}, separators=(",", ":")))
        await ws.close(code=1008)
    except (ConnectionError, RuntimeError):
        pass


async def _first_message_auth(ws: web.WebSocketResponse, st: NodeState, wid: str, peer: str | None) -> str | None:
    """HS-3: the first data frame must be auth within the timeout; pings do not count."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + st.config.auth_timeout_s
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            await _auth_fail(ws, "auth timeout or read error", st, peer)
            return None
        try:
            msg = await ws.receive(timeout=remaining)
        except asyncio.TimeoutError:
            await _auth_fail(ws, "auth timeout or read error", st, peer)
            return None
        if msg.type is WSMsgType.PING:
            await ws.pong(msg.data)
            continue
        if msg.type is WSMsgType.PONG:
            continue
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            break
        _count_too_large(msg, st)
        return None  # closed, closing or a protocol error: aiohttp already answered it

    token = _auth_token(msg.data)
    if token is None:
        await _auth_fail(ws, "expected auth message as first frame", st, peer)
        return None
    try:
        uid = tokens.authenticate(token, st.world, st.config.jwt_secret)
    except tokens.AuthError as e:
        await _auth_fail(ws, e.text, st, peer)
        return None
    if not st.world.is_member(uid, wid):
        await _auth_fail(ws, tokens.NOT_A_MEMBER, st, peer)
        return None
    return uid


def _auth_token(data: str | bytes) -> str | None:
    try:
        doc = inbound.parse(data)
    except inbound.NotJson:
        return None
    if not isinstance(doc, dict) or doc.get("type") != "auth":
        return None
    payload = doc.get("payload")
    token = payload.get("token") if isinstance(payload, dict) else None
    return token if isinstance(token, str) and token else None


def _count_too_large(msg, st: NodeState) -> None:
    if msg.type is WSMsgType.ERROR and getattr(msg.data, "code", None) == 1009:
        st.metrics.inbound_too_large += 1


async def _read_loop(ws: web.WebSocketResponse, conn: Connection, st: NodeState) -> None:
    while not conn.closed:
        msg = await ws.receive()
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            await _handle_frame(msg.data, conn, st)
        elif msg.type is WSMsgType.PING:
            conn.saw_pong()  # a live peer; gorilla only counts pongs, but a ping proves the same
            await ws.pong(msg.data)
        elif msg.type is WSMsgType.PONG:
            conn.saw_pong()
        else:
            _count_too_large(msg, st)
            return


async def _handle_frame(data: str | bytes, conn: Connection, st: NodeState) -> None:
    try:
        doc = inbound.parse(data)
    except inbound.NotJson:
        return  # IN-3: ignored
    if not isinstance(doc, dict):
        return
    kind = doc.get("type")
    if kind == "ping":
        conn.enqueue(PONG)  # IN-2
    elif kind in ("subscribe", "unsubscribe"):
        payload = doc.get("payload")
        scope = payload.get("scope") if isinstance(payload, dict) else None
        sid = payload.get("id") if isinstance(payload, dict) else None
        scope = scope if isinstance(scope, str) else ""
        sid = sid if isinstance(sid, str) else ""
        # IN-1; a lone surrogate is no text: invalid payload, before anything hashes or stores it
        if not isinstance(payload, dict) or not scope or not sid or not inbound.is_text(scope + sid):
            conn.enqueue(_frame(f"{kind}_error", scope=scope, id=sid, error="invalid payload"))
        elif kind == "subscribe":
            since = payload.get("since")
            if since is None:
                await _subscribe(conn, st, scope, sid, RESUME_NONE)
                return
            try:  # REP-5: payload checks come before scope and authorization checks
                entry = positions.decode(since, scope, sid)
            except positions.BadPosition:
                conn.enqueue(_frame("subscribe_error", scope=scope, id=sid, error="invalid payload"))
                return
            await _subscribe(conn, st, scope, sid, entry)
        else:
            if scope != "global":  # SUB-4: global cannot be left
                st.hub.leave(conn, (scope, sid))
            conn.enqueue(_frame("unsubscribe_ack", scope=scope, id=sid))
    # IN-3: unknown types are ignored


TOO_MANY = "too many subscriptions"
RESUME_NONE = object()  # a plain subscribe, without `since`


async def _subscribe(conn: Connection, st: NodeState, scope: str, sid: str, since) -> None:
    """`since` is RESUME_NONE, an entry of this scope, or None (a position of another scope)."""
    if scope in ("workspace", "user"):  # SUB-1
        own = conn.workspace_id if scope == "workspace" else conn.user_id
        decision = ALLOWED if sid == own else "forbidden"
    elif scope in ("task", "chat"):  # SUB-2, AZ-1..3
        decision = st.authorizer.decide(conn.user_id, conn.workspace_id, scope, sid)
    else:  # SUB-3
        decision = "unknown_scope"
    if decision == ALLOWED and scope in ("task", "chat") and (scope, sid) not in conn.subscriptions:
        cap = st.config.max_subscriptions  # LIM-2: workspace and user are the connection's own
        if cap and sum(1 for s in conn.subscriptions if s[0] in ("task", "chat")) >= cap:
            decision = TOO_MANY
    if decision != ALLOWED:
        st.metrics.subscribe_denied.bump(scope)
        conn.enqueue(_frame("subscribe_error", scope=scope, id=sid, error=decision))
        return
    st.metrics.subscribes.bump(scope)
    if since is RESUME_NONE:
        await st.hub.join(conn, ((scope, sid),), _frame("subscribe_ack", scope=scope, id=sid))
    else:  # REP-7: only after authorization
        await st.hub.resume(conn, (scope, sid), since)

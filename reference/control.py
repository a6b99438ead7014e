"""The test-only control API (CTL-1..6), mounted only when a control token is set."""

from __future__ import annotations

import logging

from aiohttp import web

from . import IMPLEMENTATION, VERSION, inbound, tokens
from .broadcaster import PublishFailed
from .events import GLOBAL_ID, PUBLISH_SCOPES, EventError
from .health import bearer_matches
from .state import STATE, NodeState
from .world import FixtureError, parse_world

log = logging.getLogger("scopehub.control")


MAX_TTL_S = 10 * 365 * 86400  # far enough for any test; a JWT's exp must stay a sane number


def _bad(text: str) -> web.Response:
    return web.json_response({"error": text}, status=400)


async def _body(request: web.Request) -> dict:
    try:
        doc = inbound.parse(await request.read(), stored=True)  # NaN is not JSON: 400, never stored
    except inbound.NotJson:
        raise web.HTTPBadRequest(text='{"error":"body must be JSON"}', content_type="application/json") from None
    if not isinstance(doc, dict):
        raise web.HTTPBadRequest(text='{"error":"body must be a JSON object"}', content_type="application/json")
    return doc


@web.middleware
async def control_auth(request: web.Request, handler):
    if request.path.startswith("/_control/"):
        st = request.app[STATE]
        if not st.config.control_token:
            raise web.HTTPNotFound()
        if not bearer_matches(request, st.config.control_token):
            return web.json_response({"error": "unauthorized"}, status=401)
    return await handler(request)


def info(st: NodeState) -> dict:
    cfg = st.config
    return {
        "implementation": IMPLEMENTATION,
        "version": VERSION,
        "node_id": cfg.node_id,
        "relay": st.broadcaster.name,
        "capabilities": sorted(set(cfg.capabilities) | set(st.broadcaster.capabilities)),
        "retention": st.broadcaster.retention(),
        "timeouts": {"auth_s": cfg.auth_timeout_s, "ping_s": cfg.ping_s, "pong_s": cfg.pong_s,
                     "header_s": cfg.header_timeout_s},
        "send_queue": cfg.send_queue,
        "max_inbound": cfg.max_inbound,
        "max_subscriptions": cfg.max_subscriptions or None,
        "max_connections": cfg.max_connections,
        "origins": {
            "allowed": list(cfg.allowed_origins),
            "trusted_proxies": [str(n) for n in cfg.trusted_proxies],
        },
    }


async def get_info(request: web.Request) -> web.Response:
    return web.json_response(info(request.app[STATE]))


async def put_fixtures(request: web.Request) -> web.Response:
    try:
        world = parse_world(await _body(request))
    except FixtureError as e:
        return _bad(str(e))
    request.app[STATE].replace_world(world)
    return web.json_response({"ok": True})


async def post_token(request: web.Request) -> web.Response:
    doc = await _body(request)
    if "user" not in doc:
        return _bad("user is required")
    user, email, ttl = doc["user"], doc.get("email"), doc.get("ttl_s", 3600)
    if user is not None and not isinstance(user, str):
        return _bad("user must be a string or null")
    if email is not None and not isinstance(email, str):
        return _bad("email must be a string")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not abs(ttl) <= MAX_TTL_S:  # NaN too
        return _bad(f"ttl_s must be a number of seconds, at most {MAX_TTL_S:,} either way")
    st = request.app[STATE]
    return web.json_response({"token": tokens.mint(st.config.jwt_secret, user, email, float(ttl))})


async def post_publish(request: web.Request) -> web.Response:
    doc = await _body(request)
    scope, sid, frame = doc.get("scope"), doc.get("id"), doc.get("frame")
    exclude = doc.get("exclude_workspace")
    if scope not in PUBLISH_SCOPES:
        return _bad("scope must be one of " + ", ".join(PUBLISH_SCOPES))
    if not isinstance(sid, str) or not sid or not inbound.is_text(sid):
        return _bad("id must be a non-empty string")
    if scope == "global" and sid != GLOBAL_ID:
        return _bad("global takes the id 'all'")
    if not isinstance(frame, dict):
        return _bad("frame must be an object")
    if exclude is not None and (scope != "user" or not isinstance(exclude, str) or not exclude
                                or not inbound.is_text(exclude)):
        return _bad("exclude_workspace must be a non-empty string, on the user scope only")
    try:
        event_id, pos = await request.app[STATE].hub.publish(scope, sid, frame, exclude)
    except EventError as e:
        return _bad(str(e))
    except PublishFailed as e:
        return web.json_response({"error": str(e) or "relay unavailable"}, status=503)
    return web.json_response({"event_id": event_id, "pos": pos})


async def put_faults(request: web.Request) -> web.Response:
    doc = await _body(request)
    mode = doc.get("authorizer", "ok")
    if mode not in ("ok", "error"):
        return _bad("authorizer must be 'ok' or 'error'")
    request.app[STATE].authorizer.failing = mode == "error"
    return web.json_response({"authorizer": mode})


async def post_revoke(request: web.Request) -> web.Response:
    """CTL-6 / AZ-5. This node revokes first, whatever the store says: a revocation the other
    nodes cannot be told of still takes effect here, and the 503 tells the caller to retry."""
    doc = await _body(request)
    workspace, user = doc.get("workspace"), doc.get("user")
    if not isinstance(workspace, str) or not workspace or not isinstance(user, str) or not user:
        return _bad("workspace and user must be non-empty strings")
    st = request.app[STATE]
    closed = st.revoke(workspace, user)
    try:
        await st.broadcaster.revoke(workspace, user)
    except PublishFailed as e:
        log.warning("revocation of %s in %s not handed to the other nodes: %s", user, workspace, e)
        return web.json_response({"error": str(e) or "relay unavailable"}, status=503)
    log.info("revoked %s in %s: %d connection(s) closed on this node", user, workspace, closed)
    return web.json_response({"ok": True})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/_control/info", get_info),
        web.put("/_control/fixtures", put_fixtures),
        web.post("/_control/token", post_token),
        web.post("/_control/publish", post_publish),
        web.put("/_control/faults", put_faults),
        web.post("/_control/revoke", post_revoke),
    ]

"""GET /health/realtime (HL-1, HL-2)."""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web

from .state import STATE

# HL-1 names these relay fields for every node; a relay without a store (memory) reports zeros,
# as Multica's Metrics.Snapshot does without Redis. A relay's own snapshot overrides them.
RELAY_DEFAULTS = {"connected": False, "xadd_total": 0, "xadd_errors": 0, "xread_total": 0, "xread_errors": 0,
                  "last_error": "", "last_xadd_lag_micros": 0}

FORWARDING_HEADERS = ("X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "Forwarded")


def bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if len(auth) <= 7 or auth[:7].lower() != "bearer ":
        return None
    return auth[7:].strip() or None


def bearer_matches(request: web.Request, want: str) -> bool:
    got = bearer(request)
    # aiohttp hands non-UTF-8 header bytes over as surrogate escapes: compare the bytes as sent
    return got is not None and hmac.compare_digest(got.encode("utf-8", "surrogateescape"), want.encode())


def _direct_loopback(request: web.Request) -> bool:
    # HL-2: a forwarding header that is present counts, even empty: a proxy sent it
    # (docs/protocol.md, HL-2)
    if any(h in request.headers for h in FORWARDING_HEADERS):
        return False
    try:
        ip = ipaddress.ip_address((request.remote or "").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


async def handle_health(request: web.Request) -> web.Response:
    st = request.app[STATE]
    token = (st.config.metrics_token or "").strip()
    if token:
        if not bearer_matches(request, token):
            return web.Response(status=401, text="unauthorized",
                                headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    elif not _direct_loopback(request):
        raise web.HTTPNotFound()
    snap = st.metrics.snapshot()
    snap["active_connections"] = len(st.hub.connections)  # HL-3: the live count, not a tally
    snap["node_id"] = st.config.node_id
    snap["redis"] = {**RELAY_DEFAULTS, "node_id": st.config.node_id, **st.broadcaster.snapshot()}
    return web.json_response(snap, headers={"Cache-Control": "no-store"})

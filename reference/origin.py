"""Origin checks for the upgrade (HS-5), as Multica's realtime.checkOrigin does them."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .config import ServerConfig


def _origin_host(origin: str) -> str | None:
    try:
        return urlsplit(origin).netloc or None
    except ValueError:
        return None


def is_trusted_proxy(peer: str | None, cfg: ServerConfig) -> bool:
    if not peer or not cfg.trusted_proxies:
        return False
    try:
        ip = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    return any(ip in net for net in cfg.trusted_proxies)


def origin_allowed(origin: str | None, host: str | None, forwarded_host: str | None,
                   peer: str | None, cfg: ServerConfig) -> bool:
    if not origin:
        return True
    ohost = _origin_host(origin)
    if ohost is not None and host and ohost.lower() == host.lower():
        return True
    if forwarded_host and is_trusted_proxy(peer, cfg):
        first = forwarded_host.split(",", 1)[0].strip()
        if first and ohost is not None and ohost.lower() == first.lower():
            return True
    return origin in cfg.allowed_origins

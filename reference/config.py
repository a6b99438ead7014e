"""Server settings: one immutable object built by the CLI (or a test) and read everywhere else."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .guard import default_max_connections

# Long enough for PyJWT's HS256 key-length check; never use it outside development.
DEV_JWT_SECRET = "scopehub-dev-secret-change-me-0123456789"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ServerConfig:
    node_id: str = "node-1"
    control_token: str | None = None
    jwt_secret: str = DEV_JWT_SECRET
    allowed_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[IpNetwork, ...] = ()
    metrics_token: str | None = None
    auth_timeout_s: float = 10.0
    ping_s: float = 54.0
    pong_s: float = 60.0
    send_queue: int = 256
    drain_s: float = 3.0  # NODE-5: how long a stopping node waits for its clients' close handshakes
    max_inbound: int = 65536
    # LIM: what one client may cost the node (docs/protocol.md, "Limits")
    header_timeout_s: float = 10.0
    max_connections: int = field(default_factory=lambda: default_max_connections())
    max_subscriptions: int = 1000  # task and chat scopes per connection; 0: no cap
    # Which capabilities /_control/info claims on top of what the broadcaster adds.
    capabilities: tuple[str, ...] = field(
        default=("cookie_auth", "pat", "origin", "health", "global", "exclude_workspace", "revocation")
    )


def parse_cidrs(text: str) -> tuple[IpNetwork, ...]:
    """Parse a comma-separated CIDR list; a bare address means a single host. Raises ValueError."""
    nets = []
    for part in text.split(","):
        part = part.strip()
        if part:
            nets.append(ipaddress.ip_network(part, strict=False))
    return tuple(nets)


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())

"""Everything one node holds, shared by the HTTP handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from .authorizer import Authorizer
from .broadcaster import Broadcaster
from .config import ServerConfig
from .guard import ConnectionGuard
from .hub import Hub
from .metrics import Metrics
from .world import World


@dataclass
class NodeState:
    config: ServerConfig
    broadcaster: Broadcaster
    world: World = field(default_factory=World)
    metrics: Metrics = field(default_factory=Metrics)
    hub: Hub = field(init=False)
    unauthenticated: set = field(default_factory=set)  # sockets still waiting for their auth frame
    authorizer: Authorizer = field(init=False)
    guard: ConnectionGuard = field(init=False)

    def __post_init__(self) -> None:
        self.guard = ConnectionGuard(self.config.max_connections, self.config.header_timeout_s, self.metrics)
        self.hub = Hub(self.broadcaster, self.metrics)
        self.authorizer = Authorizer(self.world)
        self.broadcaster.on_revocation = self.revoke  # revocations other nodes received (AZ-5)

    def replace_world(self, world: World) -> None:
        """CTL-2. The new world holds no revocation, and open connections stay open (AZ-5)."""
        self.world = world
        self.authorizer.replace(world)

    def revoke(self, workspace_id: str, user_id: str) -> int:
        """AZ-5 on this node: later connections of the user to the workspace are refused as
        non-members, and the open ones are closed with 1008. Returns how many were closed."""
        self.world.revoked.add((workspace_id, user_id))
        return self.hub.revoke(workspace_id, user_id)


STATE = web.AppKey("scopehub_state", NodeState)

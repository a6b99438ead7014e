"""Builds the aiohttp application of one node."""

from __future__ import annotations

from aiohttp import web

from . import control
from .broadcaster import Broadcaster, MemoryBroadcaster
from .config import ServerConfig
from .health import handle_health
from .state import STATE, NodeState
from .world import World
from .ws_handler import handle_ws


def build_app(config: ServerConfig, broadcaster: Broadcaster | None = None, world: World | None = None) -> web.Application:
    state = NodeState(config=config, broadcaster=broadcaster or MemoryBroadcaster(config.node_id))
    if world is not None:
        state.replace_world(world)
    app = web.Application(middlewares=[control.control_auth], client_max_size=1024 * 1024)
    app[STATE] = state
    app.router.add_get("/ws", handle_ws)
    app.router.add_get("/health/realtime", handle_health)
    app.router.add_routes(control.routes())

    async def lifecycle(app: web.Application):
        await state.broadcaster.start()
        yield
        await state.broadcaster.stop()

    async def close_connections(app: web.Application) -> None:
        # Before aiohttp waits for open handlers: a WebSocket handler only ends when its socket does.
        for conn in tuple(state.hub.connections):
            conn.abort()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_connections)
    return app

"""Builds the aiohttp application of one node."""

from __future__ import annotations

import asyncio

from aiohttp import web

from . import control
from .broadcaster import Broadcaster, MemoryBroadcaster
from .config import ServerConfig
from .health import handle_health
from .state import STATE, NodeState
from .world import World
from .ws_handler import handle_ws


def install_guard(runner: web.AppRunner) -> None:
    """After runner.setup(): the header timeout and connection cap watch the runner's sockets."""
    runner.app[STATE].guard.install(runner.server)


def build_app(config: ServerConfig, broadcaster: Broadcaster | None = None, world: World | None = None) -> web.Application:
    state = NodeState(config=config, broadcaster=broadcaster or MemoryBroadcaster(config.node_id))
    if world is not None:
        state.replace_world(world)
    app = web.Application(middlewares=[state.guard.middleware, control.control_auth], client_max_size=1024 * 1024)
    app[STATE] = state
    app.router.add_get("/ws", handle_ws)
    app.router.add_get("/health/realtime", handle_health)
    app.router.add_routes(control.routes())

    async def lifecycle(app: web.Application):
        await state.broadcaster.start()
        yield
        await state.broadcaster.stop()

    async def close_connections(app: web.Application) -> None:
        """NODE-5: the node no longer listens; every client gets a close frame (1001, going away)
        so that it reconnects elsewhere and resumes. aiohttp then waits for the handlers (its
        shutdown_timeout, `drain_s` in `scopehub serve`), and a client that has not answered the
        close within `drain_s` is cut. Sockets still waiting to authenticate have nothing to
        resume: closed at once."""
        for conn in tuple(state.hub.connections):
            conn.goodbye(1001, "going away", grace=config.drain_s)
        await asyncio.gather(*(asyncio.wait_for(ws.close(code=1001, message=b"going away"), 1.0)
                               for ws in tuple(state.unauthenticated)), return_exceptions=True)

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_connections)
    return app

"""A node stopped with SIGTERM drains (NODE-5): its clients get a close frame saying it is going
away, it exits within the bound, and what it acknowledged reaches the other nodes. Only where
the suite started the nodes itself (it sends the signal)."""

from __future__ import annotations

import asyncio

from . import case
from .common import DELIVERY, among, collect, eids, hold, publish_n
from ..rawws import RawWebSocket

NODE5 = ("on SIGTERM a node stops accepting connections and, within 2 s, sends every open WebSocket "
         "connection a close frame with code 1001 (going away)")
GOING_AWAY = 1001
CLOSE_S = 2.0  # the contract's bound for the close frames
EXIT_S = 10.0  # and for the process


@case("NODE-5", title="SIGTERM: every client of the node gets a 1001 close frame within 2 s, the node exits "
      "within 10 s, and the events it acknowledged reach the other nodes", restarts=True, exclusive=True,
      cites={"NODE-5": NODE5},
      catches="a node that drops its clients without a close frame (they see 1006 and cannot tell a crash from "
              "a restart), or waits out idle sockets before exiting")
async def node5_sigterm_drains_the_node(ctx):
    w = ctx.world
    n = len(ctx.target.urls)
    clients = [await ctx.connect(w.alice, w.ws_a), await ctx.connect(w.bob, w.ws_a, cookie=True)
               if "cookie_auth" in ctx.target.capabilities else await ctx.connect(w.bob, w.ws_a)]
    await hold(ctx, clients[0], "task", w.task_a, "alice")
    witness = None
    if n > 1:
        witness = await ctx.connect(w.alice, w.ws_a, node=1)
        await hold(ctx, witness, "task", w.task_a, "alice on node 2")
    idle = await RawWebSocket.connect(ctx.target.urls[0], {"workspace_id": w.ws_a})  # never authenticates
    try:
        sent = eids(await publish_n(ctx, "task", w.task_a, 20, tag="conformance:before-sigterm"))
        stopping = asyncio.create_task(ctx.target.stop_node(0, kill_after=EXIT_S + 2))
        try:
            codes = await asyncio.gather(*(_close_code(c, CLOSE_S + 0.5) for c in clients))
            took, killed = await stopping
        finally:
            if not stopping.done():
                await asyncio.gather(stopping, return_exceptions=True)
            await ctx.target.start_node(0)
    finally:
        await idle.close()
    for who, code in zip(("alice (token auth)", "bob"), codes):
        ctx.check("NODE-5", code == GOING_AWAY,
                  f"{who} was not sent a 1001 close frame within {CLOSE_S:g} s of SIGTERM: "
                  + ("still open" if code is None else f"closed with {code}" + (" (no close frame)" if code == 1006 else "")),
                  expected=GOING_AWAY, received=code)
    ctx.check("NODE-5", not killed and took <= EXIT_S,
              f"the node had not exited {took:.1f} s after SIGTERM" + (" and was killed" if killed else ""),
              expected=f"exit within {EXIT_S:g} s", received=f"{took:.1f} s")
    if witness is not None:
        await collect(ctx, witness, sent, DELIVERY)
        missing = set(sent) - set(among(witness, sent))
        ctx.check("NODE-5", not missing, f"{len(missing)} of {len(sent)} events the stopped node acknowledged "
                  "never reached a connection on another node")


async def _close_code(client, timeout: float) -> int | None:
    """The close code the client saw within `timeout` (aiohttp says 1006 for a cut without a
    close frame), None while still open."""
    try:
        return await client.wait_closed(timeout)
    except asyncio.TimeoutError:
        return None

"""SUB: subscriptions."""

from __future__ import annotations

from . import case


@case("SUB-1", title="workspace and user scopes: only the connection's own ids")
async def sub1_own_scopes_only(ctx):
    w = ctx.world
    c = await ctx.connect(w.alice, w.ws_a)
    for scope, own, other in (("workspace", w.ws_a, w.ws_b), ("user", w.alice, w.bob)):
        ack = await ctx.answer(c, "subscribe", scope, own)
        ctx.equal(ack, {"type": "subscribe_ack", "payload": {"scope": scope, "id": own}},
                  f"subscribing to the connection's own {scope} must be acknowledged")
        err = await ctx.answer(c, "subscribe", scope, other)
        ctx.equal(err, {"type": "subscribe_error", "payload": {"scope": scope, "id": other, "error": "forbidden"}},
                  f"subscribing to another {scope} must be forbidden")

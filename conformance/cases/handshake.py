"""HS: handshake and identity."""

from __future__ import annotations

from . import case


@case("HS-1", title="no workspace_id or workspace_slug: 400 before the upgrade")
async def hs1_missing_workspace(ctx):
    status, _ = await ctx.upgrade(params={})
    ctx.equal(status, 400, "an upgrade without workspace_id or workspace_slug must be refused with 400")


@case("HS-1", title="unknown workspace_slug: 404 before the upgrade")
async def hs1_unknown_slug(ctx):
    status, _ = await ctx.upgrade(params={"workspace_slug": ctx.world.slug_a + "-missing"})
    ctx.equal(status, 404, "an unknown workspace_slug must be refused with 404")


@case("HS-1", "HS-3", title="workspace_slug resolves; client metadata parameters are accepted")
async def hs1_slug_resolves(ctx):
    w = ctx.world
    client = await ctx.raw(params={"workspace_slug": w.slug_a, "client_platform": "web",
                                   "client_version": "1.2.3", "client_os": "linux"})
    await client.send({"type": "auth", "payload": {"token": await ctx.token(w.alice)}})
    ack = await ctx.frame(client, lambda f: isinstance(f, dict), "auth answer")
    ctx.equal(ack, {"type": "auth_ack"}, "auth on a connection opened by slug must be acknowledged")

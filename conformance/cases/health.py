"""HL: GET /health/realtime, its access rules and its connection count.

The suite reaches the nodes from loopback. Without a metrics token that peer gets 200 as long
as it sends no forwarding header. A target that answers 401 with the metrics challenge has a
token the suite does not know: what needs the snapshot is then not checked.

The contract names the snapshot's contents, not its keys; the cases read Multica's key names
(`active_connections`, `connects_total`, ...), accepting the reference's and Multica's names
where they differ."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from . import Failed, NotChecked, case
from .handshake import AUTH_ACK, auth_answer, is_answer

PATH = "/health/realtime"
CHALLENGE = 'Bearer realm="metrics"'
FORWARDING = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Host", "example.com"),
              ("X-Forwarded-Proto", "https"), ("X-Real-Ip", "203.0.113.7"),
              ("Forwarded", "for=203.0.113.7;proto=https")]
SETTLE = 5.0  # how long a count may take to reach its value at rest

COUNTERS = {  # what HL-1 lists -> the key names accepted for it
    "active connections": ("active_connections",),
    "connects": ("connects_total",),
    "disconnects": ("disconnects_total",),
    "messages sent": ("messages_sent_total",),
    "messages dropped": ("messages_dropped_total",),
    "slow-client evictions": ("slow_evictions_total",),
}
PER_KEY = {
    "subscribes per scope type": ("subscribes_total",),
    "denials per scope type": ("subscribe_denied_total",),
    "sends per event type": ("sends_by_type", "events_sent_by_type"),
}


def _header(headers: dict, name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


async def snapshot(ctx, node: int = 0) -> dict:
    """The node's snapshot; NotChecked when the node wants a metrics token the suite lacks."""
    status, body, headers = await ctx.http("GET", PATH, node=node)
    if status == 401 and _header(headers, "WWW-Authenticate") == CHALLENGE:
        raise NotChecked("the target has a metrics token the suite does not know (401 with the metrics challenge)")
    ctx.expect(status == 200 and isinstance(body, dict),
               f"GET {PATH} from loopback without forwarding headers must answer 200 with a JSON object",
               "200 {...}", f"{status} {body!r}"[:300])
    return body


def _field(snap: dict, names: tuple[str, ...], what: str) -> Any:
    for n in names:
        if n in snap:
            return snap[n]
    raise Failed(f"the snapshot has no {what} ({' or '.join(names)})", names, sorted(snap))


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def active(snap: dict) -> int:
    value = _field(snap, COUNTERS["active connections"], "active connections")
    if not _count(value):
        raise Failed("active_connections must be a non-negative integer", "int >= 0", value)
    return value


# -- HL-1 -----------------------------------------------------------------------------------------------

@case("HL-1", title="the snapshot holds every counter HL-1 lists, with its type, on every node", capability="health")
async def hl1_snapshot_fields(ctx):
    for node in range(len(ctx.target.urls)):
        snap = await snapshot(ctx, node)
        where = f"node {node + 1}"
        for what, names in COUNTERS.items():
            value = _field(snap, names, what)
            ctx.expect(_count(value), f"{where}: {what} must be a non-negative integer", "int >= 0", value)
        for what, names in PER_KEY.items():
            value = _field(snap, names, what)
            ctx.expect(isinstance(value, dict) and all(isinstance(k, str) and _count(v) for k, v in value.items()),
                       f"{where}: {what} must be an object of non-negative integers", "{name: int}", value)
        relay = _field(snap, ("relay",), "relay state")
        ctx.expect(isinstance(relay, dict), f"{where}: the relay state must be an object", "{...}", relay)
        ctx.expect(isinstance(relay.get("node_id"), str) and relay["node_id"] != "",
                   f"{where}: the relay state must name its node (relay.node_id)", "a non-empty string",
                   relay.get("node_id", "absent"))
        ctx.expect(isinstance(relay.get("connected"), bool), f"{where}: relay.connected must be a boolean",
                   "true|false", relay.get("connected"))
        for key in ("xadd_total", "xadd_errors", "xread_total", "xread_errors"):
            ctx.expect(_count(relay.get(key)), f"{where}: relay.{key} must be a non-negative integer", "int >= 0",
                       relay.get(key))
        ctx.expect("last_error" in relay and (relay["last_error"] is None or isinstance(relay["last_error"], str)),
                   f"{where}: relay.last_error must be a string or null", "str|null", relay.get("last_error", "absent"))
        lag = {k: v for k, v in relay.items() if "lag" in k}
        ctx.expect(bool(lag) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in lag.values()),
                   f"{where}: the relay state must report its lag as a number", "a *lag* number", sorted(relay))


@case("HL-1", title="the snapshot's counters follow what the case does (sends per type, denials per scope, connects)",
      capability="health")
async def hl1_counters_follow(ctx):
    w = ctx.world
    before = await snapshot(ctx)
    etype = f"conformance:hl1-{secrets.token_hex(4)}"  # event type and scope type of this case only
    stype = f"hl1x{secrets.token_hex(4)}"
    client = await ctx.raw(params={"workspace_id": w.ws_a})
    ctx.equal(await auth_answer(ctx, client, await ctx.token(w.alice)), AUTH_ACK, "alice's token must be accepted")
    ack = await ctx.answer(client, "subscribe", "task", w.task_a)
    ctx.equal(ack["type"], "subscribe_ack", "alice may subscribe to the task of her workspace's issue")
    denied = await ctx.answer(client, "subscribe", stype, "x")
    ctx.equal(denied["type"], "subscribe_error", "an unknown scope type is denied")
    for _ in range(3):
        await ctx.event(client, await ctx.publish("workspace", w.ws_a, {"type": etype}))
    after = await snapshot(ctx)

    def delta(names, key=None):
        a, b = _field(after, names, str(names)), _field(before, names, str(names))
        return (a.get(key, 0) - b.get(key, 0)) if key is not None else a - b

    ctx.equal(_field(after, PER_KEY["sends per event type"], "sends per event type").get(etype), 3,
              f"three events of type {etype} were sent to one connection of this node")
    ctx.equal(_field(after, PER_KEY["denials per scope type"], "denials per scope type").get(stype), 1,
              f"one subscribe to scope type {stype} was denied on this node")
    ctx.expect(delta(PER_KEY["subscribes per scope type"], "task") >= 1, "a granted task subscribe must be counted",
               ">= 1 more", delta(PER_KEY["subscribes per scope type"], "task"))
    ctx.expect(delta(COUNTERS["connects"]) >= 1, "an authenticated connection must be counted as a connect",
               ">= 1 more", delta(COUNTERS["connects"]))
    ctx.expect(delta(COUNTERS["messages sent"]) >= 6, "auth_ack, two answers and three events were sent",
               ">= 6 more", delta(COUNTERS["messages sent"]))


# -- HL-2 -----------------------------------------------------------------------------------------------

@case("HL-2", title="loopback without forwarding headers gets 200; any forwarding header turns it into 404",
      capability="health")
async def hl2_loopback_and_forwarding_headers(ctx):
    status, body, headers = await ctx.http("GET", PATH)
    if status == 401:
        ctx.equal(_header(headers, "WWW-Authenticate"), CHALLENGE,
                  "a 401 from /health/realtime must carry WWW-Authenticate: Bearer realm=\"metrics\"")
        for name, value in FORWARDING:
            status, _, headers = await ctx.http("GET", PATH, headers={name: value})
            ctx.equal((status, _header(headers, "WWW-Authenticate")), (401, CHALLENGE),
                      f"with a metrics token, a request without the bearer (here with {name}) gets 401 "
                      "and the challenge")
        wrong = await ctx.http("GET", PATH, headers={"Authorization": f"Bearer wrong-{secrets.token_hex(8)}"})
        ctx.equal(wrong[0], 401, "a wrong metrics bearer gets 401")
        raise NotChecked("the target has a metrics token the suite does not know: the 401s were checked, "
                         "the loopback rule and a good bearer were not")
    ctx.expect(status == 200 and isinstance(body, dict), "without a metrics token, a direct loopback peer without "
                                                         "forwarding headers must get 200 and the snapshot",
               "200 {...}", f"{status} {body!r}"[:300])
    for name, value in FORWARDING:
        status, _, _ = await ctx.http("GET", PATH, headers={name: value})
        ctx.equal(status, 404, f"a loopback request with {name} may come through a proxy: it must get 404")
    status, _, _ = await ctx.http("GET", PATH, headers=dict(FORWARDING))
    ctx.equal(status, 404, "a loopback request with every forwarding header must get 404")


# -- HL-3 -----------------------------------------------------------------------------------------------

async def settled(ctx, want: int, what: str, node: int = 0) -> None:
    """Wait (bounded) until the node's active count is `want`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE
    while True:
        got = active(await snapshot(ctx, node))
        if got == want:
            return
        if loop.time() >= deadline:
            raise Failed(f"{what}: active_connections is {got}, not {want}, {SETTLE:g} s after", want, got)
        await asyncio.sleep(0.05)


async def baseline(ctx, node: int = 0) -> int:
    """The count at rest before the case opens anything: the same value read over 0.3 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE
    last, same_since = None, loop.time()
    while True:
        got = active(await snapshot(ctx, node))
        now = loop.time()
        if got != last:
            last, same_since = got, now
        elif now - same_since >= 0.3:
            return got
        if now >= deadline:
            raise NotChecked(f"the active connection count of node {node + 1} never came to rest")
        await asyncio.sleep(0.05)


@case("HL-3", title="at rest, active_connections equals the connections open on the node (opens, closes, refusals, "
                    "vanished peers)", capability="health", exclusive=True)
async def hl3_active_count(ctx):
    w = ctx.world
    base = await baseline(ctx)
    clients = [await ctx.connect(u, ws) for u, ws in ((w.alice, w.ws_a), (w.bob, w.ws_a), (w.carol, w.ws_b))]
    if "cookie_auth" in ctx.target.capabilities:
        clients.append(await ctx.connect(w.alice, w.ws_a, cookie=True))
    n = len(clients)
    await settled(ctx, base + n, f"after opening {n} connections")
    await clients[0].close()
    await clients[2].close()
    await settled(ctx, base + n - 2, "after closing 2 of them")
    for token in ("garbage", await ctx.token(w.carol)):  # refused after the upgrade
        refused = await ctx.raw(params={"workspace_id": w.ws_a})
        await refused.send({"type": "auth", "payload": {"token": token}})
        await ctx.frame(refused, is_answer, "the refusal")
        await ctx.closed(refused, "the close after the refusal", timeout=5)
    if "cookie_auth" in ctx.target.capabilities:  # refused before the upgrade
        await ctx.upgrade(params={"workspace_id": w.ws_a}, cookie=await ctx.token(w.carol))
    await settled(ctx, base + n - 2, "after refused connections")
    vanishing = clients[1]
    vanishing.ws._response.connection.transport.abort()  # no close frame: the peer just goes away
    await settled(ctx, base + n - 3, "after a peer vanished without a close frame")
    for c in clients:
        await c.close()
    await settled(ctx, base, "after closing every connection")

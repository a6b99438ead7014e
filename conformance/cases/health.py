"""HL: GET /health/realtime, its access rules and its connection count.

Without a metrics token only a direct loopback peer gets the snapshot (HL-2). The suite is one
when it reaches the node at a loopback address; otherwise a 404 is the right answer and what
needs the snapshot is not checked. A target that answers 401 with the metrics challenge has a
token the suite does not know: what needs the snapshot is not checked either.

The snapshot's keys are Multica's (HL-1's sentence names them); extra keys are allowed. Cases run
side by side, so a counter's change over a case is a lower bound, except where the case owns
what is counted (an event type only it publishes)."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
from typing import Any
from urllib.parse import urlsplit

from multidict import CIMultiDict

from . import Failed, NotChecked, SetupError, case
from ..frames import is_auth_answer
from .common import auth, hold, other_node
from .subscriptions import answer_of

PATH = "/health/realtime"
CHALLENGE = 'Bearer realm="metrics"'
FORWARDING = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Host", "example.com"),
              ("X-Forwarded-Proto", "https"), ("X-Real-Ip", "203.0.113.7"),
              ("Forwarded", "for=203.0.113.7;proto=https")]
SETTLE = 5.0  # how long a count may take to reach its value at rest

HL2_LOOPBACK = ("Without a metrics token, only a direct loopback peer that sends none of the forwarding headers "
                "`X-Forwarded-For`, `X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Real-Ip`, `Forwarded` gets 200; "
                "everyone else gets 404.")
HL2_BLANK = ("A forwarding header is sent when one of its lines has a value that is not blank; a header present "
             "only with blank values MAY be taken either way.")

COUNTERS = ("active_connections", "connects_total", "disconnects_total", "messages_sent_total",
            "messages_dropped_total", "slow_evictions_total")
PER_KEY = ("subscribes_total", "subscribe_denied_total", "events_sent_by_type")
RELAY_COUNTS = ("xadd_total", "xadd_errors", "xread_total", "xread_errors")

HL1 = ("The keys are Multica's: `active_connections`, `connects_total`, `disconnects_total`, "
       "`messages_sent_total` (event frames handed to this node's connections; answers such as `auth_ack` and "
       "`pong` are not messages), `messages_dropped_total`, `slow_evictions_total` (each a non-negative integer), "
       "`subscribes_total` and `subscribe_denied_total` (objects from scope type to count), `events_sent_by_type` "
       "(an object from event type to how many events of that type this node sent out: Multica counts each publish "
       "once on the node it went through), and `redis`, the relay's state: `node_id` (a string, empty when the node "
       "has no relay), `connected` (a boolean), `xadd_total`, `xadd_errors`, `xread_total`, `xread_errors` "
       "(non-negative integers), `last_error` (a string, empty or `null` when there is none) and "
       "`last_xadd_lag_micros` (a number).")


def _header(headers: dict, name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def _loopback(ctx, node: int) -> bool:
    """The suite reaches this node at a loopback address, so it is a direct loopback peer."""
    host = urlsplit(ctx.target.urls[node]).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def snapshot(ctx, node: int = 0) -> dict:
    """Set-up: the node's snapshot. NotChecked when the suite may not read it (a metrics token it
    lacks, or it is not a loopback peer); any other refusal breaks HL-2."""
    status, body, headers = await ctx.http("GET", PATH, node=node)
    if status == 200 and isinstance(body, dict):
        return body
    if status == 401 and _header(headers, "WWW-Authenticate") == CHALLENGE:
        raise NotChecked("the target has a metrics token the suite does not know (401 with the metrics challenge)")
    if status == 404 and not _loopback(ctx, node):
        raise NotChecked(f"the suite reaches node {node + 1} at a non-loopback address, where 404 is the answer")
    raise SetupError(f"read GET {PATH} on node {node + 1} as a direct loopback peer", f"{status} {body!r}"[:300],
                     req="HL-2", expected="200 and the JSON snapshot")


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def active(snap: dict) -> int:
    value = snap.get("active_connections")
    if not _count(value):
        raise Failed("active_connections must be a non-negative integer", "int >= 0", value, "HL-1")
    return value


# -- HL-1 -----------------------------------------------------------------------------------------------

@case("HL-1", title="the snapshot holds every key HL-1 names, with its type, on every node", capability="health",
      cites={"HL-1": HL1})
async def hl1_snapshot_fields(ctx):
    for node in range(len(ctx.target.urls)):
        snap = await snapshot(ctx, node)
        where = f"node {node + 1}"
        for key in COUNTERS:
            ctx.check("HL-1", _count(snap.get(key)), f"{where}: {key} must be a non-negative integer", "int >= 0",
                      snap.get(key, "absent"))
        for key in PER_KEY:
            value = snap.get(key)
            ctx.check("HL-1", isinstance(value, dict) and all(isinstance(k, str) and _count(v)
                                                              for k, v in value.items()),
                      f"{where}: {key} must be an object of non-negative integers", "{name: int >= 0}",
                      snap.get(key, "absent"))
        relay = snap.get("redis")
        ctx.expect(isinstance(relay, dict), f"{where}: redis (the relay's state) must be an object", "{...}",
                   snap.get("redis", "absent"))
        ctx.check("HL-1", isinstance(relay.get("node_id"), str), f"{where}: redis.node_id must be a string",
                  "a string", relay.get("node_id", "absent"))
        ctx.check("HL-1", isinstance(relay.get("connected"), bool), f"{where}: redis.connected must be a boolean",
                  "true|false", relay.get("connected", "absent"))
        for key in RELAY_COUNTS:
            ctx.check("HL-1", _count(relay.get(key)), f"{where}: redis.{key} must be a non-negative integer",
                      "int >= 0", relay.get(key, "absent"))
        last_error = relay.get("last_error", "absent")
        ctx.check("HL-1", last_error is None or (isinstance(last_error, str) and "last_error" in relay),
                  f"{where}: redis.last_error must be a string or null", "str|null", last_error)
        lag = relay.get("last_xadd_lag_micros")
        ctx.check("HL-1", isinstance(lag, int | float) and not isinstance(lag, bool),
                  f"{where}: redis.last_xadd_lag_micros must be a number", "a number", relay.get("last_xadd_lag_micros",
                                                                                                 "absent"))


def _delta(after: dict, before: dict, key: str, sub: str | None = None) -> int | None:
    """How much a counter grew (None: not a count in one of the snapshots)."""
    a, b = after.get(key), before.get(key)
    if sub is not None:
        a = a.get(sub, 0) if isinstance(a, dict) else None
        b = b.get(sub, 0) if isinstance(b, dict) else None
    return a - b if _count(a) and _count(b) else None


@case("HL-1", title="the snapshot's counters follow what the case does (connects, disconnects, subscribes, denials, "
                    "event frames, events of a type)", capability="health", cites={"HL-1": HL1})
async def hl1_counters_follow(ctx):
    w = ctx.world
    before = await snapshot(ctx)
    etype = f"conformance:hl1-{secrets.token_hex(4)}"  # an event type only this case publishes
    client = await ctx.connect(w.alice, w.ws_a)
    await hold(ctx, client, "task", w.task_a, "alice")
    denied = await answer_of(ctx, client, "chat", w.chat_bob, "have a chat subscribe denied", req="SUB-2")
    if not (isinstance(denied, dict) and denied.get("type") == "subscribe_error"):
        raise SetupError("have a chat subscribe denied (alice asks for bob's chat)", denied, req="AZ-2",
                         expected="subscribe_error")
    for _ in range(3):
        p = await ctx.publish("workspace", w.ws_a, {"type": etype})
        try:
            await ctx.event(client, p)
        except Failed as e:
            raise SetupError("receive the case's own workspace event", e.reason, req="DEL-1") from None
    gone = await ctx.connect(w.bob, w.ws_a)
    await gone.close()
    after = await snapshot(ctx)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE
    while (_delta(after, before, "disconnects_total") or 0) < 1 and loop.time() < deadline:
        await asyncio.sleep(0.1)  # the node may count a close a moment after it happened
        after = await snapshot(ctx)

    sent = (after.get("events_sent_by_type") or {}).get(etype) if isinstance(after.get("events_sent_by_type"),
                                                                            dict) else None
    # once per publish on the node it went through (Multica), or once per delivery: 3 either way here,
    # as the three publishes went through this node to its one connection holding the workspace
    ctx.check("HL-1", sent == 3, f"events_sent_by_type[{etype!r}]: three events of that type went through this node "
                                 "to one connection", 3, sent)
    for key, sub, least, what in (("connects_total", None, 2, "two connections were authenticated"),
                                  ("disconnects_total", None, 1, "one connection was closed"),
                                  ("subscribes_total", "task", 1, "a task subscribe was granted"),
                                  ("subscribe_denied_total", "chat", 1, "a chat subscribe was denied"),
                                  ("messages_sent_total", None, 3, "three event frames were sent")):
        d = _delta(after, before, key, sub)
        name = f"{key}[{sub!r}]" if sub else key
        ctx.check("HL-1", d is not None and d >= least, f"{name} must grow by at least {least}: {what}",
                  f">= {least} more", d)


# -- HL-2 -----------------------------------------------------------------------------------------------

@case("HL-2", title="loopback without forwarding headers gets 200; any forwarding header turns it into 404; with a "
                    "metrics token, 401 and the challenge", capability="health",
      cites={"HL-2": HL2_LOOPBACK})
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
    loopback = _loopback(ctx, 0)
    if loopback:
        ctx.expect(status == 200 and isinstance(body, dict), "without a metrics token, a direct loopback peer "
                   "without forwarding headers must get 200 and the snapshot", "200 {...}", f"{status} {body!r}"[:300])
    else:
        ctx.equal(status, 404, "without a metrics token, a peer that is not loopback must get 404")
    for name, value in FORWARDING:
        status, _, _ = await ctx.http("GET", PATH, headers={name: value})
        ctx.equal(status, 404, f"a request with {name} may come through a proxy: it must get 404")
    status, _, _ = await ctx.http("GET", PATH, headers=dict(FORWARDING))
    ctx.equal(status, 404, "a request with every forwarding header must get 404")
    if not loopback:
        raise NotChecked("the suite reaches the node at a non-loopback address: the 404s were checked, the "
                         "loopback 200 was not")


@case("HL-2", title="a forwarding header with a blank first line and a real second one gets 404; blank only, "
                    "200 or 404", capability="health", cites={"HL-2": HL2_BLANK})
async def hl2_blank_forwarding_headers(ctx):
    status, _, _ = await ctx.http("GET", PATH)
    if status != 200 or not _loopback(ctx, 0):
        raise NotChecked(f"the suite is not a direct loopback peer that gets 200 here ({status}): the blank headers "
                         "make no difference to check")
    for name, value in FORWARDING:
        for lines, allowed in (([""], (200, 404)), ([" "], (200, 404)), (["", value], (404,)), ([" ", value], (404,))):
            status, _, _ = await ctx.http("GET", PATH, headers=CIMultiDict((name, v) for v in lines))
            shown = " and ".join(f"{name}: {v!r}" for v in lines)
            ctx.check("HL-2", status in allowed, f"a request with {shown} must get "
                      f"{' or '.join(map(str, allowed))}", " or ".join(map(str, allowed)), status)


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
            raise Failed(f"node {node + 1}, {what}: active_connections is {got}, not {want}, {SETTLE:g} s after",
                         want, got, "HL-3")
        await asyncio.sleep(0.05)


async def baseline(ctx, node: int = 0) -> int:
    """The count at rest before the case opens anything: the same value read over 0.5 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2 * SETTLE
    last, same_since = None, loop.time()
    while True:
        got = active(await snapshot(ctx, node))
        now = loop.time()
        if got != last:
            last, same_since = got, now
        elif now - same_since >= 0.5:
            return got
        if now >= deadline:
            raise NotChecked(f"the active connection count of node {node + 1} never came to rest")
        await asyncio.sleep(0.05)


async def _refused(ctx, token: str, workspace: str) -> None:
    """Set-up: a connection refused after the upgrade. Once its refusal arrived the suite closes it
    itself: when the server closes it, and with what, is HS-3's business, not this case's."""
    client = await ctx.raw(params={"workspace_id": workspace})
    start = len(client.frames)
    await client.send(auth(token))
    try:
        await ctx.frame(client, is_auth_answer, "the refusal", start=start)
    except Failed as e:
        raise SetupError("have a connection refused after the upgrade", e.reason, req="HS-3") from None
    await client.close()


@case("HL-3", title="at rest, active_connections equals the connections open on the node (opens, closes, refusals, "
                    "vanished peers, connections on other nodes)", capability="health", exclusive=True,
      cites={"HL-3": "At rest, the active connection count equals the number of connections open on the node."})
async def hl3_active_count(ctx):
    w = ctx.world
    base = await baseline(ctx)
    clients = [await ctx.connect(u, ws) for u, ws in ((w.alice, w.ws_a), (w.bob, w.ws_a), (w.carol, w.ws_b))]
    if "cookie_auth" in ctx.target.capabilities:
        clients.append(await ctx.connect(w.alice, w.ws_a, cookie=True))
    n = len(clients)
    await settled(ctx, base + n, f"after opening {n} connections")
    elsewhere = other_node(ctx)
    if elsewhere != 0:  # a connection on another node is counted there, not here
        base_other = await baseline(ctx, elsewhere)
        remote = await ctx.connect(w.carol, w.ws_b, node=elsewhere)
        await settled(ctx, base_other + 1, "after opening a connection on it", elsewhere)
        await settled(ctx, base + n, f"after a connection was opened on node {elsewhere + 1}")
        await remote.close()
        await settled(ctx, base_other, "after closing it again", elsewhere)
    await clients[0].close()
    await clients[2].close()
    await settled(ctx, base + n - 2, "after closing 2 of them")
    await _refused(ctx, "garbage", w.ws_a)
    await _refused(ctx, await ctx.token(w.carol), w.ws_a)  # not a member of A
    if "cookie_auth" in ctx.target.capabilities:  # refused before the upgrade
        await ctx.upgrade(params={"workspace_id": w.ws_a}, cookie=await ctx.token(w.carol))
    await settled(ctx, base + n - 2, "after refused connections")
    vanishing = clients[1]
    vanishing.ws._response.connection.transport.abort()  # no close frame: the peer just goes away
    await settled(ctx, base + n - 3, "after a peer vanished without a close frame")
    for c in clients:
        await c.close()
    await settled(ctx, base, "after closing every connection")

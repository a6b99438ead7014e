"""LIM: what one client may cost a node: a header timeout for sockets that never finish their
request (LIM-1), and a declared cap on the task and chat scopes of one connection (LIM-2).

LIM-1 writes the start of a request over plain TCP and never ends its headers; the socket must be
closed within the header timeout the target declares (10 s without one), with or without an
answer. LIM-2 is judged only where the target declares a cap the world's tasks can reach."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from . import Failed, NotChecked, SetupError, case
from .common import PING, PONG, ack, hold, matches, sub_error
from .inbound import answered_before_marker, until_answer

DEFAULT_HEADER_S = 10.0
MARGIN = 3.0  # the suite's allowance for timers and scheduling on top of the declared timeout
LONGEST = 60.0  # a declared timeout longer than this is more than a case may wait
TOO_MANY = "too many subscriptions"
CAP_TASKS = 40  # further issue tasks the LIM-2 case's world has: caps up to 41 can be reached

LIM1 = ("A connection that has not sent complete HTTP request headers within the header timeout is closed (with or "
        "without an answer such as 408). The header timeout is the one the target declares in `info` "
        "(`timeouts.header_s`); without one, 10 s.")
LIM2 = ("A subscribe to one more is answered `subscribe_error` with `too many subscriptions`; the connection keeps its "
        "subscriptions and keeps working, and an unsubscribe frees a place.")


def header_timeout(ctx) -> float:
    declared = (ctx.target.info.get("timeouts") or {}).get("header_s")
    if isinstance(declared, bool) or not isinstance(declared, int | float) or declared <= 0:
        return DEFAULT_HEADER_S
    if declared > LONGEST:
        raise NotChecked(f"the declared header timeout ({declared:g} s) is longer than a case may wait")
    return float(declared)


@case("LIM-1", title="a socket that never finishes its request headers is closed within the header timeout",
      cites=LIM1, catches="no header timeout: sockets that never finish a request are kept open forever, until the "
                          "node runs out of descriptors and refuses everyone (issue 16: 800 such sockets)")
async def lim1_slow_headers_are_closed(ctx):
    limit = header_timeout(ctx) + MARGIN
    u = urlsplit(ctx.target.urls[0])
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(u.hostname, u.port or 80), 5)
    except (OSError, asyncio.TimeoutError) as e:
        raise SetupError("open a TCP connection to node 1", f"{type(e).__name__}: {e}") from None
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        writer.write(f"GET /ws?workspace_id={ctx.world.ws_a} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
                     .encode())  # and never the blank line that ends the headers
        await writer.drain()
        while True:
            remaining = started + limit - loop.time()
            if remaining <= 0:
                raise Failed(f"a socket whose request headers never end is still open {limit:g} s later "
                             f"(the header timeout, {limit - MARGIN:g} s, plus {MARGIN:g} s)", "closed", "open")
            try:
                if not await asyncio.wait_for(reader.read(4096), remaining):
                    return  # closed (an answer such as 408 may have come first)
            except asyncio.TimeoutError:
                continue
            except ConnectionError:
                return  # reset: closed as well
    finally:
        writer.close()


def _cap(ctx) -> int:
    cap = ctx.target.info.get("max_subscriptions")
    if cap is None:
        raise NotChecked("the target declares no max_subscriptions: it has no cap")
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise SetupError("read max_subscriptions from info", cap, expected="a whole number >= 1")
    return cap


@case("LIM-2", title="a subscribe over the declared max_subscriptions: too many subscriptions; what is held stays, "
                     "the connection works, an unsubscribe frees a place", cites=LIM2, tasks=CAP_TASKS,
      catches="a subscription cap that closes the connection, or drops what it held, instead of answering")
async def lim2_subscription_cap(ctx):
    w = ctx.world
    cap = _cap(ctx)
    allowed = [("task", w.task_a), ("task", w.chat_task_alice), ("chat", w.chat_alice)]
    allowed += [("task", t) for t in w.more_tasks]
    if cap + 1 > len(allowed):
        raise NotChecked(f"the declared cap ({cap}) is more than the {len(allowed)} scopes the world lets alice hold")
    c = await ctx.connect(w.alice, w.ws_a)
    held, extra = allowed[:cap], allowed[cap]
    for scope, sid in held:
        await hold(ctx, c, scope, sid, "alice (under the cap)")
    got = await ctx.answer(c, "subscribe", *extra, req="LIM-2")
    ctx.expect(matches(got, sub_error(*extra, TOO_MANY)), f"a subscribe to a task beyond the cap ({cap}) must be "
               f"answered {TOO_MANY}", sub_error(*extra, TOO_MANY), got)
    again = await ctx.answer(c, "subscribe", *held[0], req="LIM-2")
    ctx.expect(matches(again, ack("subscribe", *held[0])), "a scope held already is not one more: acknowledged",
               ack("subscribe", *held[0]), again)
    start = len(c.frames)
    await c.send(PING)
    await until_answer(ctx, c, lambda f: matches(f, PONG), "the pong after the refused subscribe", start=start,
                       req="LIM-2")
    for scope, sid in (held[0], held[-1]):  # what it held still reaches it
        p = await ctx.publish(scope, sid, {"n": "held"})
        await ctx.event(c, p, req="LIM-2")
    await answered_before_marker(ctx, c, len(c.frames), req="LIM-2")
    left = await ctx.answer(c, "unsubscribe", *held[-1], req="SUB-4")
    if not matches(left, ack("unsubscribe", *held[-1])):
        raise SetupError(f"unsubscribe from {held[-1][0]}:{held[-1][1]}", left, req="SUB-4")
    freed = await ctx.answer(c, "subscribe", *extra, req="LIM-2")
    ctx.expect(matches(freed, ack("subscribe", *extra)), "after an unsubscribe, the subscribe refused before is "
               "acknowledged", ack("subscribe", *extra), freed)

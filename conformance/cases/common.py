"""What the case modules share.

* The contract's frames and texts, and matchers that accept what the contract allows around
  them: an answer may carry fields the contract does not name (the "Extra fields" term of
  docs/protocol.md); event frames may not (EV-2), so they are compared exactly.
* Set-up steps (`hold`, `leave`): a step a case needs but does not judge ends the case in
  `error` when it does not work, naming the requirement the answer itself breaks.
* Events are tracked by the event_id their publish answered, so every check looks only at the
  case's own events: `global` events of cases running alongside may arrive anywhere. A loss is
  a check of DEL-1, a repeat of DEL-2, an inversion of DEL-3: each judged on its own.

To show that an event did NOT reach a connection, a case publishes a marker to a scope the
connection holds and waits for it. Where it can, it also keeps a *witness*: another connection
on the same node that legitimately holds the scope and has received the events before the
marker is published, so a node that was going to hand them to the wrong connection too has
already done so."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from . import Failed, SetupError
from ..client import ConnectionClosed
from ..frames import is_answer, is_auth_answer

# -- frames and texts --------------------------------------------------------------------------------

AUTH_ACK = {"type": "auth_ack"}
PING = {"type": "ping"}
PONG = {"type": "pong"}

AUTH_TIMEOUT = "auth timeout or read error"
EXPECTED_AUTH = "expected auth message as first frame"
INVALID_TOKEN = "invalid token"
INVALID_CLAIMS = "invalid claims"
DISABLED = "account disabled"
NOT_MEMBER = "not a member of this workspace"

SERVER_FIELDS = ("scope", "scope_id", "pos")  # REP-1: set by the server


def auth(token: Any) -> dict:
    return {"type": "auth", "payload": {"token": token}}


def answers(client, start: int = 0) -> list:
    """The answers a connection received (events left out: they may come at any time)."""
    return [f for f in client.frames[start:] if is_answer(f)]


def matches(got: Any, want: Any) -> bool:
    """`got` is `want`, give or take fields the contract does not name: every key of a `want`
    object is in `got` with a matching value; `got` may have more."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and matches(got[k], v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(matches, got, want))
    return type(got) is type(want) and got == want  # true is not 1


def matches_each(got: list, want: list) -> bool:
    """Answer lists: the same length, each answer `matches` its counterpart."""
    return len(got) == len(want) and all(map(matches, got, want))


def ack(kind: str, scope: str, sid: str, **extra) -> dict:
    """The subscribe_ack / unsubscribe_ack frame, as `matches` compares it."""
    return {"type": f"{kind}_ack", "payload": {"scope": scope, "id": sid, **extra}}


def sub_error(scope: str, sid: str, error: str) -> dict:
    """The subscribe_error frame, as `matches` compares it."""
    return {"type": "subscribe_error", "payload": {"scope": scope, "id": sid, "error": error}}


def expect_frame(ctx, got: Any, want: Any, reason: str, *, req: str | None = None) -> None:
    ctx.expect(matches(got, want), reason, want, got, req=req)


async def auth_answer(ctx, client, token: Any, what: str = "the answer to auth", *, req: str | None = None) -> Any:
    """Send auth and return its answer (auth_ack or an error frame); events of the scopes the
    connection already holds may come first (HS-6) and are skipped."""
    start = len(client.frames)
    await client.send(auth(token))
    return await ctx.frame(client, is_auth_answer, what, start=start, req=req)


# -- set-up steps ------------------------------------------------------------------------------------

# who decides a subscribe the world allows: the requirement an answer other than the ack breaks
_GRANTS = {"workspace": "SUB-1", "user": "SUB-1", "task": "AZ-1", "chat": "AZ-2"}


async def hold(ctx, client, scope: str, sid: str, who: str = "the connection") -> dict:
    """Set-up: subscribe to a scope the world allows and get the ack."""
    step = f"subscribe {who} to {scope}:{sid}"
    try:
        got = await ctx.answer(client, "subscribe", scope, sid)
    except Failed as e:
        raise SetupError(step, e.reason) from None
    if not matches(got, ack("subscribe", scope, sid)):
        refused = isinstance(got, dict) and (got.get("payload") or {}).get("error") in ("forbidden", "unknown_scope")
        raise SetupError(step, got, req=_GRANTS.get(scope) if refused else None, expected=ack("subscribe", scope, sid))
    return got


async def leave(ctx, client, scope: str, sid: str) -> dict:
    """Set-up: unsubscribe and get the ack (SUB-4: always acknowledged)."""
    step = f"unsubscribe from {scope}:{sid}"
    try:
        got = await ctx.answer(client, "unsubscribe", scope, sid)
    except Failed as e:
        raise SetupError(step, e.reason) from None
    if not matches(got, ack("unsubscribe", scope, sid)):
        raise SetupError(step, got, req="SUB-4", expected=ack("unsubscribe", scope, sid))
    return got


async def alice_on_every_scope(ctx):
    """Alice connected and holding one scope of every type (and global when claimed):
    (client, [(scope, id), ...])."""
    w = ctx.world
    alice = await ctx.connect(w.alice, w.ws_a)
    await hold(ctx, alice, "task", w.task_a, "alice")
    await hold(ctx, alice, "chat", w.chat_alice, "alice")
    targets = [("workspace", w.ws_a), ("user", w.alice), ("task", w.task_a), ("chat", w.chat_alice)]
    if "global" in ctx.target.capabilities:
        targets.append(("global", "all"))
    return alice, targets


# -- nodes -----------------------------------------------------------------------------------------

def other_node(ctx, i: int = 1) -> int:
    """Node i, or node 0 on a single-node target."""
    return i % len(ctx.target.urls)


def resume_node(ctx) -> int:
    """A node that is neither the subscriber's (0) nor, when there are three, the publisher's (1)."""
    n = len(ctx.target.urls)
    return 2 if n >= 3 else (1 if n == 2 else 0)


def resume_claimed(ctx) -> bool:
    return "resume" in ctx.target.capabilities


# -- publishing and events ---------------------------------------------------------------------------

def eids(published: list[dict]) -> list[str]:
    return [p["event_id"] for p in published]


def received_ids(client, start: int = 0) -> list:
    """event_ids of the event frames received (in arrival order)."""
    return [f["event_id"] for f in client.frames[start:] if isinstance(f, dict) and "event_id" in f]


def among(client, ids, start: int = 0) -> list:
    """The event_ids out of `ids` that the client received, in arrival order, repeats kept."""
    wanted = set(ids)
    return [e for e in received_ids(client, start) if isinstance(e, str) and e in wanted]


async def publish_n(ctx, scope: str, sid: str, n: int, *, node: int = 0, tag: str = "conformance:event",
                    nodes: list[int] | None = None) -> list[dict]:
    """n sequential publishes (each acknowledged before the next starts), optionally rotating nodes."""
    out = []
    for i in range(n):
        where = nodes[i % len(nodes)] if nodes else node
        out.append(await ctx.publish(scope, sid, {"type": tag, "payload": {"seq": i}}, node=where))
    return out


async def marker(ctx, scope: str, sid: str, *clients, node: int = 0) -> dict:
    """Publish a marker to a scope every client holds and wait until each has it (DEL-1)."""
    p = await ctx.publish(scope, sid, {"type": "conformance:marker", "payload": {}}, node=node)
    for c in clients:
        await ctx.event(c, p)
    return p


async def wait_all(ctx, client, ids: list[str], who: str, *, timeout: float = 5.0, start: int = 0,
                   req: str = "DEL-1") -> None:
    """Wait for the last of `ids` (events of one scope, published in order); on timeout, fail
    `req` saying how many of them arrived."""
    ctx.require("event_id")
    if not ids:
        return
    last = ids[-1]
    try:
        await client.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == last, timeout, start=start)
    except asyncio.TimeoutError:
        got = set(among(client, ids, start))
        raise Failed(f"{who} did not receive the last of {len(ids)} events within {timeout:g} s "
                     f"({len(got)} of them arrived)", f"{len(ids)} events", f"{len(got)} events", req) from None
    except ConnectionClosed as e:
        got = set(among(client, ids, start))
        raise Failed(f"{who} was closed (code {e.code}) after {len(got)} of {len(ids)} events",
                     f"{len(ids)} events", f"closed after {len(got)}", req) from None


async def wait_each(ctx, client, ids: list[str], who: str, *, timeout: float = 5.0, req: str = "DEL-1") -> None:
    """Wait until every one of `ids` arrived (events of several scopes, whose relative order is free)."""
    ctx.require("event_id")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for eid in ids:
        try:
            await client.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == eid,
                                  max(0.0, deadline - loop.time()))
        except (asyncio.TimeoutError, ConnectionClosed):
            got = set(among(client, ids))
            raise Failed(f"{who} did not receive {len(ids) - len(got)} of {len(ids)} events within {timeout:g} s",
                         f"{len(ids)} events", f"{len(got)} events", req) from None


class Stream:
    """Set-up: publishes to one scope in the background, back to back (each publish starts once
    the one before was acknowledged), until the block ends. `log` holds (started, answer) per
    publish; `reach` waits (bounded) for enough of them."""

    def __init__(self, ctx, scope: str, sid: str, *, node: int = 0, tag: str = "conformance:stream",
                 limit: int = 3000):
        self.ctx, self.scope, self.sid, self.node, self.tag, self.limit = ctx, scope, sid, node, tag, limit
        self.log: list[tuple[float, dict]] = []
        self._more = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def published(self) -> list[dict]:
        return [p for _, p in self.log]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        for i in range(self.limit):
            if self._stop.is_set():
                return
            started = loop.time()
            p = await self.ctx.publish(self.scope, self.sid, {"type": self.tag, "payload": {"i": i}}, node=self.node)
            self.log.append((started, p))
            self._more.set()

    async def reach(self, count: int, what: str, *, after: float | None = None, timeout: float = 30) -> None:
        """Wait until `count` publishes (those started after `after`, if given) were acknowledged;
        a publisher that failed or stopped first ends the case in error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while sum(1 for t, _ in self.log if after is None or t > after) < count:
            if self._task.done():
                self._task.result()  # its SetupError, or it ran out of publishes
                raise SetupError(f"get {what}", f"the publisher stopped after {len(self.log)}")
            left = deadline - loop.time()
            if left <= 0:
                raise SetupError(f"get {what} within {timeout:g} s", "timeout")
            self._more.clear()
            waiter = asyncio.ensure_future(self._more.wait())
            await asyncio.wait({waiter, self._task}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    async def __aenter__(self) -> "Stream":
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 10)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - its failure was seen by reach()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def expect_absent(ctx, client, forbidden: dict[str, str], reason: str, start: int = 0, *,
                  req: str | None = None) -> None:
    """None of the event_ids in `forbidden` (id -> what it was) reached the client."""
    leaked = [forbidden[e] for e in received_ids(client, start) if e in forbidden]
    ctx.expect(not leaked, reason, "none of these events", leaked[:5], req=req)


def delivered(ctx, frame: dict, published: dict, scope: str, sid: str) -> dict:
    """The frame a subscriber must receive for `frame` (EV-2); with `resume` claimed, with the
    server-set fields of REP-1."""
    expected = {k: v for k, v in frame.items() if k not in SERVER_FIELDS}
    expected["event_id"] = published["event_id"]
    if resume_claimed(ctx):
        expected.update(scope=scope, scope_id=sid, pos=published["pos"])
    return expected


def as_seen(ctx, got: Any) -> Any:
    """The received frame as `delivered` describes it: without `resume`, REP-1 fields are optional."""
    if resume_claimed(ctx) or not isinstance(got, dict):
        return got
    return {k: v for k, v in got.items() if k not in SERVER_FIELDS}


# -- waiting for and judging runs of events ---------------------------------------------------------

DELIVERY = 5.0  # DEL-1's bound: an acknowledged event arrives within 5 s


@contextlib.contextmanager
def across(ctx, crossing: bool = True):
    """NODE-1 ("Every DEL, AZ and REP requirement holds across nodes"): a DEL, AZ or REP check
    that fails inside the block fails NODE-1 too when its witness crossed nodes (`crossing`).
    Set-up steps (a refused subscribe, a publish) are not mirrored: they happen on one node."""
    before = len(ctx.failures)

    def mirror(failed: list[Failed]) -> None:
        for f in failed:
            rid = f.req or ctx.primary or ""
            if rid.split("-")[0] in ("DEL", "AZ", "REP"):
                ctx.check("NODE-1", False, f"across nodes ({rid}): {f.reason}", f.expected, f.received)
                return
    try:
        yield
    except Failed as e:
        if crossing:
            mirror([*ctx.failures[before:], e])
        raise
    if crossing:
        mirror(list(ctx.failures[before:]))


async def collect(ctx, client, ids: list[str], timeout: float = DELIVERY, *, start: int = 0) -> bool:
    """Wait until each of `ids` has arrived (in any order), `timeout` s pass or the connection
    closes; judge nothing. True when all arrived."""
    ctx.require("event_id")
    remaining = set(ids) - {e for e in received_ids(client, start) if isinstance(e, str)}
    if not remaining:
        return True

    def arrived(frame) -> bool:
        if isinstance(frame, dict) and isinstance(frame.get("event_id"), str):
            remaining.discard(frame["event_id"])
        return not remaining
    try:
        await client.wait_for(arrived, timeout, start=start)
        return True
    except (asyncio.TimeoutError, ConnectionClosed):
        return False


def judge_run(ctx, got: list[str], sent: list[str], who: str, *, loss: str | None = "DEL-1",
              repeat: str = "DEL-2", order: str = "DEL-3") -> None:
    """What a connection received of `sent` (one scope, in the order it must arrive), judged three
    ways, each on its own: every one arrived (`loss`: DEL-1; None: not owed, e.g. after a
    close), none twice (`repeat`: DEL-2), the first arrivals in order (`order`: DEL-3)."""
    index = {e: i for i, e in enumerate(sent)}
    have = set(got)
    if loss:
        missing = [i for i, e in enumerate(sent) if e not in have]
        ctx.check(loss, not missing, f"{who} missed {len(missing)} of {len(sent)} events",
                  f"all {len(sent)} events", {"missing (index)": missing[:10], "received": len(have)})
    repeated = sorted({index[e] for e in got if got.count(e) > 1}) if len(got) != len(have) else []
    ctx.check(repeat, not repeated, f"{who} received {len(got) - len(have)} events more than once",
              "each event once", {"repeated (index)": repeated[:10]})
    firsts = [index[e] for e in dict.fromkeys(got)]
    k = next((k for k in range(1, len(firsts)) if firsts[k] < firsts[k - 1]), None)
    if k is not None:
        window = firsts[max(0, k - 2):k + 3]
        ctx.check(order, False, f"{who} received the events out of order (first inversion at arrival {k})",
                  sorted(window), window)


async def everything_or_closed(ctx, client, sent: list[str], scope: str, sid: str, pub: int, who: str, *,
                               timeout: float = 15.0, start: int = 0, gap: str = "DEL-6", stall: str = "DEL-6",
                               repeat: str = "DEL-2", order: str = "DEL-3") -> float | None:
    """DEL-6: a connection that may have overflowed its send queue is either sent all of `sent`
    or closed by the server. Returns when the close was seen (None: it stayed open and got
    everything). What arrived is judged for repeats and order either way. Open without
    everything, a live marker tells a gap (the stream went on: `gap`) from a stall (nothing
    more arrives, the connection stays open: `stall`)."""
    complete = await collect(ctx, client, sent, timeout, start=start)
    closed_at = client.closed_at if client.closed else None
    if not complete and closed_at is None:
        mk = await ctx.publish(scope, sid, {"type": "conformance:marker"}, node=pub)
        arrived = await collect(ctx, client, [mk["event_id"]], DELIVERY, start=start)
        closed_at = client.closed_at if client.closed else None
        if closed_at is None:
            have = set(among(client, sent, start))
            ctx.expect(arrived, f"{who} was neither sent everything nor closed: it stays open and receives nothing",
                       "all events, or a close", f"{len(have)} of {len(sent)} events, still open", req=stall)
            missing = [i for i, e in enumerate(sent) if e not in have]
            ctx.expect(not missing, f"{who} stayed open and went on receiving after a gap",
                       f"all {len(sent)} events before the marker",
                       {"missing (index)": missing[:10], "received": len(have)}, req=gap)
    judge_run(ctx, among(client, sent, start), sent, who, loss=None, repeat=repeat, order=order)
    return closed_at


async def publish_raw(ctx, body: dict, *, node: int = 0) -> tuple[int, object]:
    """POST /_control/publish with a body ctx.publish cannot send: (status, parsed answer)."""
    headers = {"Authorization": f"Bearer {ctx.target.token}", "Content-Type": "application/json"}
    status, doc, _ = await ctx.http("POST", "/_control/publish", node=node, headers=headers,
                                    body=json.dumps(body).encode())
    return status, doc

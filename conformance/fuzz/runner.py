"""A fuzz run: lanes of generated sessions against a target's nodes, side by side, bounded by a
frame count and a time, while the canary counts its deliveries.

Each lane draws its own sessions from the seed (gen.session_stream), so a seed replays the same
traffic lane by lane; only how the lanes interleave differs between runs. Lane i's k-th session
goes to node (i + k) mod N: every node gets authenticated and unauthenticated connections."""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from ..rawws import OP_PING, OP_TEXT, UpgradeRefused, encode_frame
from ..target import Target
from ..world import TestWorld
from . import gen, oracle
from .canary import Canary
from .gen import Session, Step, TokenRef
from .judge import (CRASH, LEAK, MISSING, OUTSIDE, STALL, STAYED_OPEN, UNREACHABLE, WRONG_CLOSE, Finding, Findings,
                    close_text, judge_close, sequence, show)
from .oracle import ConnView, Expect
from .render import Values, describe, payload, wire
from .wire import FuzzConn

GOOD_AUTH = Step("text", {"type": "auth", "payload": {"token": TokenRef("good")}})
ISOLATED_KINDS = {OUTSIDE, MISSING, CRASH, WRONG_CLOSE, STAYED_OPEN}
ISOLATE = 40  # findings of each kind whose batch is replayed step by step
ANSWER_WAIT = 10.0  # the fuzzer's patience for the answers of one batch (the contract sets no bound)
CLOSE_WAIT = 5.0  # for a close the contract owes


@dataclass
class Config:
    urls: list[str]
    token: str
    seed: int
    frames: int = 5000
    time_s: float | None = None
    lanes: int = 16
    canary_rate: float = 40.0  # publishes per second


@dataclass
class Snapshot:
    frames: int = 0
    connections: int = 0
    findings: int = 0
    canary_acked: int = 0
    canary_received: int = 0


@dataclass
class Result:
    findings: Findings
    frames: int
    connections: int
    elapsed: float
    canary_acked: int
    canary_received: int
    canary_refused: int
    exercised: Counter = field(default_factory=Counter)  # requirement ID -> frames that exercised it
    implementation: str = ""


@dataclass
class Identity:
    view: ConnView
    values: Values
    verdicts: dict[str, str]  # token -> "ok" or the HS-3 text owed on this identity's workspace

    def verdict(self, token: str) -> str:
        return self.verdicts.get(token, oracle.INVALID_TOKEN)


def _alg_none(token: str) -> str:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    return f"{header}.{token.split('.')[1]}."


def _bad_signature(token: str) -> str:
    head, body, sig = token.split(".")
    return f"{head}.{body}.{('A' if sig[0] != 'A' else 'B') + sig[1:]}"


async def _identities(target: Target, world: TestWorld) -> tuple[dict[str, Identity], str]:
    """Alice (workspace A) and carol (workspace B), the tokens of every kind gen.tokens names and
    what each must get on either workspace; and the canary's token (bob, workspace A)."""
    c = target.controls[0]
    mint = {u: await c.token(u) for u in (world.alice, world.carol, world.bob, world.dave, world.outsider)}
    shared = {"expired": await c.token(world.alice, ttl_s=0), "no-sub": await c.token(None),
              "empty-sub": await c.token(""), "disabled": mint[world.dave], "outsider": mint[world.outsider],
              "pat": world.pat_alice, "junk-pat": "mul_" + "0" * 32, "empty": ""}
    members = {world.ws_a: {world.alice, world.bob, world.dave, world.erin}, world.ws_b: {world.carol, world.erin}}
    out = {}
    for who, ws, user, other_ws, other_user, own_task, other_task, own_chat, chat_task, allowed in (
        ("alice", world.ws_a, world.alice, world.ws_b, world.carol, world.task_a, world.task_b, world.chat_alice,
         world.chat_task_alice, {"task": {world.task_a, world.chat_task_alice, world.more_tasks[0]},
                                 "chat": {world.chat_alice}}),
        ("carol", world.ws_b, world.carol, world.ws_a, world.alice, world.task_b, world.task_a, world.chat_erin,
         world.chat_task_erin, {"task": {world.task_b}, "chat": set()}),
    ):
        good = mint[user]
        tokens = {**shared, "good": good, "alg-none": _alg_none(good), "bad-sig": _bad_signature(good),
                  "truncated": good[:-5], "non-ascii": good + "\u00e9", "surrogate": good + "\ud800", "space": good + " "}
        verdicts = {good: "ok", shared["expired"]: oracle.INVALID_TOKEN, shared["no-sub"]: "invalid claims",
                    shared["empty-sub"]: "invalid claims", shared["disabled"]: "account disabled"}
        for t, uid in ((mint[world.outsider], world.outsider), (world.pat_alice, world.alice)):
            verdicts[t] = "ok" if uid in members[ws] else "not a member of this workspace"
        ids = {"ws": ws, "user": user, "other_ws": other_ws, "other_user": other_user, "own_task": own_task,
               "other_task": other_task, "own_chat": own_chat, "other_chat": world.chat_bob, "chat_task": chat_task,
               "orphan_task": world.orphan_task, "canary_task": world.more_tasks[0]}
        view = ConnView(ws, user, allowed, resume="resume" in target.capabilities)
        out[who] = Identity(view, Values(ids, tokens), verdicts)
    return out, mint[world.bob]


def violation(step: Step) -> Expect:
    """An RFC 6455 protocol error fails the connection with 1002 (IN-6 names the unmasked frame and
    the close codes an endpoint may not send; the others are RFC 6455's own, 7.4.1)."""
    return Expect("none", "close 1002 (protocol error, RFC 6455 7.4.1)", ("IN-6",), closes={1002: "IN-6"},
                  must_close=True)


class Run:
    def __init__(self, cfg: Config, target: Target, idents: dict[str, Identity], canary: Canary, pool: Executor):
        self.cfg, self.target, self.idents, self.canary, self.pool = cfg, target, idents, canary, pool
        self.findings = Findings()
        self.exercised: Counter[str] = Counter()
        self.frames = 0
        self.connections = 0
        self.marks = 0
        self.isolated: Counter[str] = Counter()
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + cfg.time_s if cfg.time_s else None

    # -- bounds ---------------------------------------------------------------------------------
    def left(self) -> int:
        if self.deadline is not None and asyncio.get_running_loop().time() >= self.deadline:
            return 0
        return self.cfg.frames - self.frames

    def take(self, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        """As many of `steps` as the frame budget allows, counted at once (no await between)."""
        steps = steps[: max(0, self.left())]
        self.frames += len(steps)
        return steps

    # -- lanes ------------------------------------------------------------------------------------
    async def lane(self, i: int) -> None:
        loop = asyncio.get_running_loop()

        def draw(c: int) -> asyncio.Future:
            return loop.run_in_executor(self.pool, gen.chunk, self.cfg.seed, i, c)
        c, k = 0, 0
        upcoming: asyncio.Future | None = draw(c)
        while self.left() > 0:
            sessions = await (upcoming or draw(c))
            c += 1
            # the next chunk is drawn while this one is sent, unless this lane's share is nearly done
            upcoming = draw(c) if self.left() > self.cfg.lanes * 8 * gen.CHUNK else None
            for session in sessions:
                if self.left() <= 0:
                    break
                await self.session(session, (i + k) % len(self.cfg.urls), f"lane {i + 1} session {k + 1}")
                k += 1
        if upcoming is not None:
            upcoming.cancel()

    async def session(self, s: Session, node: int, name: str) -> None:
        ident = self.idents[s.who]
        try:
            conn = await FuzzConn.open(self.cfg.urls[node], ident.view.workspace, node, name)
        except (UpgradeRefused, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            self.findings.add(Finding(UNREACHABLE, (), f"node {node + 1} refused a WebSocket: {type(e).__name__} {e}",
                                      node=node, conn=name))
            return
        self.connections += 1
        try:
            for _ in range(s.pre_pings):
                conn.write(encode_frame(OP_PING, b"before auth"))
            opening = s.opening
            if opening is not None and opening.kind in ("ping", "pong"):  # no data frame: HS-3 still waits for auth
                conn.write(wire(opening, opening.raw))
                opening = None
            opening = opening or GOOD_AUTH
            if not self.take((opening,)):
                return
            going = await self.first(conn, ident, opening)
            await self._report(conn, ident, None)
            if not going:
                return
            for batch in s.batches:
                batch = self.take(batch)
                if not batch:
                    return
                going = await self.batch(conn, ident, batch)
                await self._report(conn, ident, batch)
                if not going:
                    return
        finally:
            if s.ending == "close" and not conn.ended:
                await conn.close()
            else:
                await conn.abort()

    # -- the first data frame ----------------------------------------------------------------------
    async def first(self, conn: FuzzConn, ident: Identity, step: Step) -> bool:
        """Send the first data frame and judge its answer (HS-3). True: authenticated, go on."""
        conn.granted.update({("workspace", ident.view.workspace), ("user", ident.view.user)})  # HS-6
        data = payload(step, ident.values)
        if step.kind == "violation":
            e = violation(step)
        else:
            e = oracle.first_frame(step.kind, data, ident.verdict)
        self.exercised.update(e.reqs)
        sent = [f"(before auth) {describe(step, data)} -> owed {e.want}"]
        await conn.send(wire(step, data))
        await conn.until(lambda: conn.answers or conn.ended, ANSWER_WAIT)
        if e.must_close:
            if await conn.until(lambda: conn.ended, CLOSE_WAIT):
                self._close(conn, [e], sent)
            else:
                self._add(STAYED_OPEN, e.reqs, f"owed {e.want}; the connection stayed open", conn, sent)
            return False
        if not conn.answers:
            if conn.ended:
                self._close(conn, [e], sent)
            else:
                self._add(STALL, e.reqs, f"no answer to the first frame within {ANSWER_WAIT:g} s", conn, sent)
            return False
        answer = conn.answers[0]
        if not (isinstance(answer, dict) and e.ok(answer)):
            self._add(OUTSIDE, e.reqs, f"the first frame was owed {e.want}", conn, sent, [show(answer)])
            return False
        conn.seen = 1
        if answer.get("type") == "auth_ack":
            return True
        if await conn.until(lambda: conn.ended, CLOSE_WAIT):  # HS-3: an auth failure closes the connection
            self._close(conn, [e], sent, after_auth_error=True)
        else:
            self._add(STAYED_OPEN, ("HS-3",), "an auth failure's error frame came and the connection stayed open",
                      conn, sent, [show(answer)])
        return False

    # -- a batch after auth -----------------------------------------------------------------------
    async def batch(self, conn: FuzzConn, ident: Identity, steps: tuple[Step, ...]) -> bool:
        start, ev_start = conn.seen, len(conn.events)
        expects, sent, out = [], [], bytearray()
        for step in steps:
            data = payload(step, ident.values)
            if step.kind in ("text", "binary"):
                e = oracle.after_auth(step.kind, data, ident.view)
            elif step.kind == "violation":
                e = violation(step)
            else:
                e = Expect("none", "nothing (a control frame)", ("IN-5",))
            expects.append(e)
            sent.append(f"{describe(step, data)} -> owed {e.want}")
            out += wire(step, data)
        self.marks += 1
        mark = f"fuzz-mark-{self.marks}"
        marker = Expect("must", f"unsubscribe_ack of the marker task:{mark}", ("IN-2", "SUB-4"),
                        oracle._ack_of("unsubscribe", "task", mark, None))
        out += encode_frame(OP_TEXT, json.dumps({"type": "unsubscribe", "payload": {"scope": "task", "id": mark}}).encode())
        expects.append(marker)
        self.exercised.update(r for e in expects[:-1] for r in e.reqs)
        await conn.send(bytes(out))

        def at_marker() -> int | None:
            for i in range(start, len(conn.answers)):
                a = conn.answers[i]
                if isinstance(a, dict) and marker.ok(a):
                    return i
            return None
        answered = await conn.until(lambda: at_marker() is not None, ANSWER_WAIT)
        if answered:
            end = at_marker() + 1
            problem = sequence(expects, conn.answers[start:end], ended=False)
            conn.seen = end
        else:
            problem = sequence(expects[:-1], conn.answers[start:], ended=conn.ended)
        if problem is not None:
            kind, k, what, answer = problem
            reqs = expects[k].reqs if k is not None else tuple(dict.fromkeys(r for e in expects for r in e.reqs))
            self._add(kind, reqs, what, conn, sent, [show(a) for a in conn.answers[start:][:8]])
        self._events(conn, conn.answers[start:], ev_start, sent)
        owed_close = next((e for e in expects if e.must_close), None)
        if answered and owed_close is not None:
            self._add(STAYED_OPEN, owed_close.reqs, f"owed {owed_close.want}; the marker sent after it was answered",
                      conn, sent)
            return False
        if answered:
            return True
        if conn.ended:
            self._close(conn, expects[:-1], sent)
        else:
            self._add(STALL, ("IN-2",), f"the marker was not answered within {ANSWER_WAIT:g} s; the connection is open",
                      conn, sent, [show(a) for a in conn.answers[start:][:8]])
        return False

    def _events(self, conn: FuzzConn, answers: list, ev_start: int, sent: list[str]) -> None:
        """AZ-4: every event frame is of a scope the connection held (auto-subscribed, or acked)."""
        for a in answers:
            p = a.get("payload") if isinstance(a, dict) else None
            if isinstance(a, dict) and a.get("type") == "subscribe_ack" and isinstance(p, dict):
                if isinstance(p.get("scope"), str) and isinstance(p.get("id"), str):
                    conn.granted.add((p["scope"], p["id"]))
                    if (canonical := oracle._uuid(p["id"])) is not None:
                        conn.granted.add((p["scope"], canonical))
        for ev in conn.events[ev_start:]:
            scope = (ev.get("scope"), ev.get("scope_id"))
            if not all(isinstance(x, str) for x in scope):
                scope = self.canary.acked.get(ev.get("event_id"), (None, None))
            if scope[0] in (None, "global") or scope in conn.granted:
                continue
            self._add(LEAK, ("AZ-4",), f"an event of {scope[0]}:{scope[1]}, a scope this connection never held",
                      conn, sent, [show(ev)])

    # -- findings --------------------------------------------------------------------------------
    def _add(self, kind, reqs, what, conn: FuzzConn, sent, got=()) -> None:
        conn.found.append(Finding(kind, tuple(reqs), what, list(sent), list(got), conn.node, conn.name))

    async def _report(self, conn: FuzzConn, ident: Identity, steps: tuple[Step, ...] | None) -> None:
        """Count what the connection found. A batch's finding unlike any before it is isolated
        first (up to ISOLATE of each kind): each of its steps alone, on a fresh connection, tells
        which of them reproduce it."""
        found, conn.found = conn.found, []
        for f in found:
            if (steps and len(steps) > 1 and f.kind in ISOLATED_KINDS and self.isolated[f.kind] < ISOLATE
                    and self.findings.novel(f)):
                self.isolated[f.kind] += 1
                f.culprits = [f.sent[k] for k in await self.isolate(conn.node, ident, steps)]
            self.findings.add(f)

    async def isolate(self, node: int, ident: Identity, steps: tuple[Step, ...]) -> list[int]:
        """The indexes of the steps that, each alone after auth, give a finding (replays: not
        counted in --frames)."""
        culprits = []
        for k, step in enumerate(steps):
            try:
                conn = await FuzzConn.open(self.cfg.urls[node], ident.view.workspace, node, "isolation")
            except (UpgradeRefused, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                continue
            try:
                if await self.first(conn, ident, GOOD_AUTH):
                    conn.found.clear()
                    await self.batch(conn, ident, (step,))
                    if conn.found:
                        culprits.append(k)
            finally:
                await conn.abort()
        return culprits

    def _close(self, conn: FuzzConn, expects: list[Expect], sent: list[str], *, after_auth_error: bool = False) -> None:
        problem = judge_close(conn, expects, after_auth_error=after_auth_error)
        if problem is not None:
            kind, reqs, what = problem
            self._add(kind, reqs, what, conn, sent, [show(a) for a in conn.answers[-4:]] + [close_text(conn)])

    def snapshot(self) -> Snapshot:
        return Snapshot(self.frames, self.connections, self.findings.total, len(self.canary.acked), self.canary.received)


async def fuzz(cfg: Config, *, on_progress: Callable[[Snapshot], None] | None = None) -> Result:
    """One run against the target at cfg.urls (TargetError when it cannot be driven)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with aiohttp.ClientSession() as session:
        target = await Target.open(session, cfg.urls, cfg.token)
        world = TestWorld.sized(tasks=1)
        await target.load(world.fixtures())
        idents, canary_token = await _identities(target, world)
        canary = Canary(session, target.urls, target.controls[-1], workspace=world.ws_a, task=world.more_tasks[0],
                        token=canary_token, sub_node=0, pub_node=len(target.urls) - 1, rate=cfg.canary_rate)
        for ident in idents.values():
            ident.values.live = canary.live  # the same dict: positions stay current
        await canary.start()
        # Generation is CPU work: a process of its own keeps this loop answering frames meanwhile.
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        run = Run(cfg, target, idents, canary, pool)
        lanes = [asyncio.create_task(run.lane(i)) for i in range(cfg.lanes)]
        try:
            while not all(t.done() for t in lanes):
                await asyncio.wait(lanes, timeout=0.25)
                if on_progress:
                    on_progress(run.snapshot())
            for t in lanes:
                t.result()  # a bug of the fuzzer itself surfaces here, not as a finding
        finally:
            for t in lanes:
                t.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            pool.shutdown(wait=False, cancel_futures=True)
            for f in await canary.finish():
                run.findings.add(f)
        if on_progress:
            on_progress(run.snapshot())
        return Result(run.findings, run.frames, run.connections, loop.time() - began, len(canary.acked),
                      canary.received, canary.refused, run.exercised, target.implementation)

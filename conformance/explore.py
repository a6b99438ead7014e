"""Exploration: a hypothesis rule-based state machine that connects and closes clients on any
node, subscribes and unsubscribes (allowed and forbidden scopes), publishes to any scope
through any node, pauses readers, and disconnects-then-resumes, recording a history. After
each run the history checker judges it; a failing run is shrunk by hypothesis, within a time
budget, and reported as a step list with its seed and a command that replays it. The machine
records its own steps, so the report holds the shortest failing run found so far even when
shrinking was cut short or hypothesis calls the failure flaky.

Stateful rules cannot be coroutines: every rule drives its async work on one event loop that
lives as long as the exploration."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
import functools
import io
import time
from dataclasses import dataclass, field

import aiohttp
from hypothesis import HealthCheck, Phase, seed as hseed, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.reporting import with_reporter
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, initialize, multiple, precondition, rule,
                                run_state_machine_as_test)

from . import checker
from .client import Control, ControlError
from .history import HistoryWriter
from .recorder import RecordedConnection, publish
from .requirements import CHECKER_IDS, REQUIREMENTS
from .target import TargetError
from .verdict import Outcome, Verdict
from .world import TestWorld

SHRINK_BUDGET_S = 60.0
SETTLE_S = 0.2  # after the due events arrived: room for late extra frames (leaks, duplicates)
LIVENESS_S = 5.0


@dataclass
class Env:
    """What the machine runs against; set once per exploration."""
    urls: list[str]
    token: str
    loop: asyncio.AbstractEventLoop
    session: aiohttp.ClientSession
    capabilities: set[str]
    profile: str
    world: TestWorld = field(default_factory=TestWorld)
    histories: list[list[dict]] = field(default_factory=list)  # one per run, for the report
    last_report: checker.Report | None = None
    failing_report: checker.Report | None = None
    failing_steps: list[str] | None = None  # the shortest failing run so far, as steps
    # Stops and starts node i (SIGTERM), when the suite started the nodes itself; None otherwise.
    restart: Callable[[int], None] | None = None
    rules: Counter = field(default_factory=Counter)  # how often each rule ran, over every run
    stalled: str | None = None  # the first step the target did not let finish, if any

    def fixtures(self) -> dict:
        f = self.world.fixtures()
        f["workspaces"][self.world.ws_b]["members"].append(self.world.alice)  # exclude_workspace
        return f


# The scopes the rules pick from, by index, with the names the steps show them by.
SCOPES = [("workspace", "ws_a"), ("workspace", "ws_b"), ("user", "alice"), ("user", "bob"), ("user", "carol"),
          ("task", "task_a"), ("task", "task_b"), ("task", "chat_task_alice"), ("task", "orphan_task"),
          ("chat", "chat_alice"), ("chat", "chat_bob"), ("global", None)]


def _scopes(w: TestWorld) -> list[tuple[str, str]]:
    return [(scope, getattr(w, name) if name else "all") for scope, name in SCOPES]


def step(fn):
    """Record the rule call as a step of this run (connections by their id, scopes by name)."""
    @functools.wraps(fn)
    def recorded(self, **kw):
        shown = {k: (f"{SCOPES[v][0]}:{SCOPES[v][1] or 'all'}" if k == "scope" else v) for k, v in kw.items()}
        self.steps.append(f"{fn.__name__}({', '.join(f'{k}={v!r}' if k != 'scope' else f'{k}={v}' for k, v in sorted(shown.items()))})")
        self.env.rules[fn.__name__] += 1
        return fn(self, **kw)
    return recorded


class Exploration(RuleBasedStateMachine):
    env: Env  # set by run()
    conns = Bundle("conns")

    def __init__(self):
        super().__init__()
        self.steps: list[str] = []
        self.restarted = False
        self.w = HistoryWriter(None, process="explore")
        self.w.meta(capabilities=sorted(self.env.capabilities), profile=self.env.profile)
        self.all: list[RecordedConnection] = []
        self.due: list[tuple[str, list[RecordedConnection]]] = []
        self.run_no = len(self.env.histories)  # connection ids stay unique across runs

    def _cid(self) -> str:
        return f"r{self.run_no}c{len(self.all)}"

    def _run(self, coro, timeout: float = 20.0):
        try:
            return self.env.loop.run_until_complete(asyncio.wait_for(coro, timeout))
        except asyncio.TimeoutError:
            why = f"{self.steps[-1] if self.steps else 'the set-up'} did not finish within {timeout:g} s"
            self.env.stalled = self.env.stalled or why
            raise Stalled(why) from None

    # -- a populated start: every kind of connection, on different nodes ---------------------
    @initialize(target=conns)
    def populate(self):
        w, n = self.env.world, len(self.env.urls)
        people = [(w.alice, w.ws_a, [("task", w.task_a), ("chat", w.chat_alice)]),
                  (w.alice, w.ws_b, []), (w.bob, w.ws_a, [("task", w.task_a), ("chat", w.chat_alice)]),
                  (w.carol, w.ws_b, [("task", w.task_b)])]
        made = []
        for i, (user, workspace, scopes) in enumerate(people):
            url = self.env.urls[i % n]
            c = RecordedConnection(self.w, self.env.session, self._cid(), url, user, workspace, "token")
            self.all.append(c)
            token = self._run(Control(self.env.session, url, self.env.token).token(user))
            if self._run(c.connect(token)):
                for scope in scopes:
                    self._run(c.subscribe(*scope))
            made.append(c)
        return multiple(*made)

    # -- rules ------------------------------------------------------------------------------------
    @rule(target=conns, node=st.integers(0, 7), who=st.sampled_from(["alice", "alice-b", "bob", "carol"]),
          cookie=st.booleans())
    @step
    def connect(self, node, who, cookie):
        w = self.env.world
        user, workspace = {"alice": (w.alice, w.ws_a), "alice-b": (w.alice, w.ws_b),
                           "bob": (w.bob, w.ws_a), "carol": (w.carol, w.ws_b)}[who]
        url = self.env.urls[node % len(self.env.urls)]
        auth = "cookie" if cookie and "cookie_auth" in self.env.capabilities else "token"
        c = RecordedConnection(self.w, self.env.session, self._cid(), url, user, workspace, auth)
        self.all.append(c)
        token = self._run(Control(self.env.session, url, self.env.token).token(user))
        self._run(c.connect(token))
        return c

    @rule(conn=conns)
    @step
    def close(self, conn):
        self._run(conn.close())

    @rule(conn=conns, scope=st.integers(0, 11))
    @step
    def subscribe(self, conn, scope):
        if conn.open and not conn.paused:
            self._run(conn.subscribe(*_scopes(self.env.world)[scope]))

    @rule(conn=conns, scope=st.integers(0, 11))
    @step
    def unsubscribe(self, conn, scope):
        if conn.open and not conn.paused:
            self._run(conn.unsubscribe(*_scopes(self.env.world)[scope]))

    @rule(node=st.integers(0, 7), scope=st.integers(0, 11), exclude=st.booleans(),
          size=st.sampled_from([10, 200, 4000]), count=st.integers(1, 4))
    @step
    def publish(self, node, scope, exclude, size, count):
        w = self.env.world
        s, sid = _scopes(w)[scope]
        exclude_ws = (w.ws_b if scope == 2 else w.ws_a) if exclude and s == "user" else None
        url = self.env.urls[node % len(self.env.urls)]
        # Who should get it, by our own bookkeeping: teardown waits for them (or the liveness bound).
        due = [c for c in self.all if c.open and (s == "global" or (s, sid) in c.held)
               and not (exclude_ws and c.workspace == exclude_ws)]
        for _ in range(count):  # a burst: publisher order (DEL-3) needs several events per scope
            done = self._run(publish(self.w, self.env.session, url, self.env.token, s, sid,
                                     {"type": "explore", "payload": {"pad": "x" * size, "unicode": "é✓"}}, exclude_ws))
            if done is not None:
                self.due.append((done["event_id"], due))

    @rule(conn=conns)
    @step
    def pause(self, conn):
        if conn.open:
            conn.pause()

    @rule(conn=conns)
    @step
    def unpause(self, conn):
        conn.resume()

    @rule(conn=conns, scope=st.integers(0, 10), node=st.integers(0, 7), count=st.integers(1, 3))
    @step
    def unsubscribe_then_publish(self, conn, scope, node, count):
        """Leave a scope and publish to it at once: nothing published after the unsubscribe_ack
        may arrive (DEL-5), which a plain publish rarely tests."""
        if not (conn.open and not conn.paused):
            return
        w = self.env.world
        s, sid = _scopes(w)[scope]
        if self._run(conn.unsubscribe(s, sid)) is None:
            return
        url = self.env.urls[node % len(self.env.urls)]
        due = [c for c in self.all if c.open and (s, sid) in c.held]
        for _ in range(count):
            done = self._run(publish(self.w, self.env.session, url, self.env.token, s, sid,
                                     {"type": "explore", "payload": {"after": "unsubscribe"}}))
            if done is not None:
                self.due.append((done["event_id"], due))

    # A restart costs about a second: one at most per run, and only one time in four it is drawn.
    @precondition(lambda self: self.env.restart is not None and not self.restarted)
    @rule(node=st.integers(0, 7), draw=st.integers(0, 3))
    @step
    def restart_node(self, node, draw):
        """Stop a node (SIGTERM) and start it again: its clients are cut, the others must lose
        nothing (NODE-1), and new subscribers on it must not get entries stored before (DEL-7)."""
        if draw:
            return
        i = node % len(self.env.urls)
        url = self.env.urls[i]
        self.restarted = True
        self.w.fault("restart_node", "start", f"node-{i + 1}", [url])
        self.env.restart(i)
        self._run(Control(self.env.session, url, self.env.token).fixtures(self.env.fixtures()))
        self.w.fault("restart_node", "end", f"node-{i + 1}", [url])
        for c in self.all:  # the server closed them: let their readers see it (a paused one too)
            if c.node == url:
                c.resume()
                self._run(c.wait_closed(), 10)

    @precondition(lambda self: "resume" in self.env.capabilities)
    @rule(target=conns, conn=conns, node=st.integers(0, 7))
    @step
    def disconnect_then_resume(self, conn, node):
        """Close, reconnect as the same user (any node) and resume every scope it held."""
        if not conn.open or conn.paused:
            return conn
        held = dict(conn.held)
        self._run(conn.close())
        url = self.env.urls[node % len(self.env.urls)]
        again = RecordedConnection(self.w, self.env.session, self._cid(), url, conn.user, conn.workspace, conn.auth)
        self.all.append(again)
        token = self._run(Control(self.env.session, url, self.env.token).token(conn.user))
        if self._run(again.connect(token)):
            for (s, sid), pos in held.items():
                if pos is not None:
                    self._run(again.subscribe(s, sid, since=pos))
                elif (s, sid) not in again.held:
                    self._run(again.subscribe(s, sid))
        return again

    # -- the verdict ------------------------------------------------------------------------------
    def teardown(self):
        for c in self.all:
            c.resume()
        try:
            if not self.env.stalled:  # a stalled target delivers nothing more: judge what came
                self._run(self._settle(), 30)
            for c in self.all:
                self._run(c.close(), 2 if self.env.stalled else 20)
        except Stalled:  # the step's own Stalled says why; judge what was recorded
            pass
        records = self.w.records or []
        self.env.histories.append(records)
        report = checker.check(records, capabilities=self.env.capabilities, profile=self.env.profile)
        self.env.last_report = report
        if not report.ok:
            if self.env.failing_steps is None or len(self.steps) <= len(self.env.failing_steps):
                self.env.failing_report, self.env.failing_steps = report, list(self.steps)
            raise AssertionError("the history checker found violations:\n" + report.summary())

    async def _settle(self) -> None:
        """Keep connections open until every event is where it is due, or the liveness bound
        has passed: closing earlier would excuse a loss (DEL-1 "unless the connection closes")."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LIVENESS_S + 0.5
        while loop.time() < deadline:
            if all(eid in c.seen or not c.open for eid, conns in self.due for c in conns):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(SETTLE_S)  # frames a broken target sends late or twice


class Stalled(Exception):
    """A step the target did not let finish within its bound: the exploration cannot go on."""


@contextlib.contextmanager
def _shrink_budget(seconds: float):
    """Hypothesis stops shrinking after a fixed five minutes; bound it to `seconds` instead (the
    best failing example found by then is what it reports)."""
    try:
        from hypothesis.internal.conjecture import engine
    except ImportError:  # pragma: no cover - a hypothesis without the constant: no cap
        yield
        return
    saved = getattr(engine, "MAX_SHRINKING_SECONDS", None)
    if saved is None:
        yield
        return
    engine.MAX_SHRINKING_SECONDS = max(1, int(seconds))
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = saved


def not_checked(why: str) -> dict[str, Verdict]:
    """The checker's verdicts when the exploration could not run."""
    return {rid: Verdict(rid, REQUIREMENTS[rid].title, Outcome.NOT_CHECKED, why) for rid in CHECKER_IDS}


def run(urls: list[str], token: str, *, seed: int, examples: int, profile: str, capabilities: set[str],
        console=None, steps: int = 40, shrink: bool = True, shrink_budget_s: float = SHRINK_BUDGET_S,
        replay: str = "", restart: Callable[[int], None] | None = None) -> tuple[dict[str, Verdict], dict]:
    """Explore on an event loop of its own (call it from a thread when one is running); return
    (the checker's verdicts by requirement, a summary for the report)."""
    loop = asyncio.new_event_loop()
    session = loop.run_until_complete(_session())
    env = Env(urls, token, loop, session, set(capabilities), profile, restart=restart)
    started = time.monotonic()
    try:
        for u in urls:
            try:
                loop.run_until_complete(Control(session, u, token).fixtures(env.fixtures()))
            except (ControlError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                raise TargetError(f"{u} refused the exploration's fixtures: {type(e).__name__} {e}") from None
        machine = type("Exploration", (Exploration,), {"env": env})
        out = io.StringIO()
        cfg = settings(max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
                       phases=[Phase.generate, Phase.shrink] if shrink else [Phase.generate], print_blob=True,
                       suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
        if console is not None:
            console.print(f"exploring: {examples} runs of up to {steps} steps, seed {seed}"
                          + (f", shrinking for up to {shrink_budget_s:g} s" if shrink else ""))
        failure = stalled = None
        with with_reporter(lambda msg: out.write(f"{msg}\n")), _shrink_budget(shrink_budget_s):
            try:
                run_state_machine_as_test(hseed(seed)(machine), settings=cfg)
            except (AssertionError, Flaky) as e:  # Flaky: it failed, then passed on replay
                failure = f"{type(e).__name__}: " + (str(e).splitlines()[0] if str(e) else "")
            except (Stalled, aiohttp.ClientError, OSError) as e:
                stalled = f"{type(e).__name__}: {e}" if not isinstance(e, Stalled) else str(e)
    finally:
        loop.run_until_complete(session.close())
        loop.run_until_complete(asyncio.sleep(0))  # let the connector's transports close on this loop
        loop.close()
    # A failing run's own report explains it best; otherwise judge every run's history at once.
    report = env.failing_report or checker.check(
        (r for h in env.histories for r in h), capabilities=capabilities, profile=profile)
    verdicts = dict(report.verdicts)
    stalled = stalled or env.stalled
    summary = {"seed": seed, "runs": len(env.histories), "seconds": round(time.monotonic() - started, 1),
               "steps": env.failing_steps or [], "failure": stalled or failure, "replay": replay, "rules": dict(env.rules),
               "hypothesis": out.getvalue().strip(), "history_lines": sum(len(h) for h in env.histories)}
    if stalled:
        # What was recorded before the stall may still show a violation; a pass is not earned.
        for v in verdicts.values():
            if v.status != Outcome.FAIL:
                v.status, v.reason = Outcome.ERROR, f"the exploration could not go on: {stalled}"
    if env.failing_report is not None:
        for v in verdicts.values():
            if v.status == Outcome.FAIL:
                v.reason = f"{v.reason} (exploration, seed {seed}: {len(env.failing_steps or [])} steps in the report)"
    return verdicts, summary


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()

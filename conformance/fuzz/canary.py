"""The canary: a well-behaved subscriber on one node, holding a task and its workspace, and a
publisher on another node sending to both at a steady rate through /_control/publish while the
fuzzer runs. At the end every acknowledged event must have arrived exactly once (DEL-1, DEL-2):
hostile traffic on a node must cost its well-behaved clients nothing."""

from __future__ import annotations

import asyncio
from collections import Counter, deque

import aiohttp

from ..client import ConnectionClosed, Control, ControlError, WsClient
from .judge import CANARY_CLOSED, CANARY_LOSS, CANARY_REPEAT, Finding

SETTLE = 10.0  # DEL-1 owes an event within 5 s; a loaded machine gets twice that at the end


class Canary:
    def __init__(self, session: aiohttp.ClientSession, urls: list[str], control: Control, *, workspace: str,
                 task: str, token: str, sub_node: int, pub_node: int, rate: float):
        self.session, self.urls, self.control = session, urls, control
        self.scopes = [("task", task), ("workspace", workspace)]
        self.token, self.sub_node, self.pub_node, self.rate = token, sub_node, pub_node, rate
        self.client: WsClient | None = None
        self.acked: dict[str, tuple[str, str]] = {}  # event_id -> scope, for every 200
        self.refused = 0  # publishes not acknowledged (503 or no answer): not owed (NODE-3)
        self.live: dict[str, str] = {}  # the positions of its latest publishes (render.Values.live)
        self._recent: dict[str, deque] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self.client = await WsClient.connect(self.session, self.urls[self.sub_node], workspace_id=self.scopes[1][1],
                                             token=self.token)
        for scope, sid in self.scopes:
            answer = await self.client.subscribe(scope, sid)
            if answer.get("type") != "subscribe_ack":
                raise RuntimeError(f"the canary's subscribe to {scope}:{sid} was answered {answer}")
        self._task = asyncio.create_task(self._publish())

    async def _publish(self) -> None:
        """Publishes on a fixed schedule (a rate, not a synchronisation): each waits for the
        one before, so a node that answers slowly lowers the rate rather than piling up calls."""
        loop = asyncio.get_running_loop()
        period, due, n = 1.0 / self.rate, loop.time(), 0
        while not self._stop.is_set():
            scope, sid = self.scopes[n % 2]
            try:
                answer = await self.control.publish(scope, sid, {"type": "fuzz:canary", "payload": {"n": n}})
                self.acked[answer["event_id"]] = (scope, sid)
                self._position(scope, answer.get("pos"))
            except (ControlError, aiohttp.ClientError, asyncio.TimeoutError, OSError, KeyError, TypeError):
                self.refused += 1
            n += 1
            due += period
            try:
                await asyncio.wait_for(self._stop.wait(), max(0.0, due - loop.time()))
            except asyncio.TimeoutError:
                pass

    def _position(self, scope: str, pos) -> None:
        """Keep the newest position of each scope and one about 50 publishes older, for the
        fuzzer's resumes (REP-2..5)."""
        if not isinstance(pos, str):
            return
        name = "pos_task" if scope == "task" else "pos_ws"
        recent = self._recent.setdefault(name, deque(maxlen=50))
        recent.append(pos)
        self.live[name], self.live[name + "_old"] = pos, recent[0]

    @property
    def received(self) -> int:
        return len(self.client.events()) if self.client else 0

    async def finish(self) -> list[Finding]:
        """Stop publishing, give the last events DEL-1's time, and judge what arrived."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        client = self.client
        findings: list[Finding] = []
        if client is None:
            return findings
        remaining = set(self.acked) - {f.get("event_id") for f in client.events()}

        def last_one(frame) -> bool:  # each frame looked at once: no rescans of thousands of events
            if isinstance(frame, dict):
                remaining.discard(frame.get("event_id"))
            return not remaining
        if remaining:
            try:
                await client.wait_for(last_one, SETTLE)
            except (asyncio.TimeoutError, ConnectionClosed):
                pass  # judged below
        got = Counter(f.get("event_id") for f in client.events())
        where = f"subscriber on node {self.sub_node + 1}, publisher on node {self.pub_node + 1}"
        missing = [e for e in self.acked if e not in got]
        if client.closed:
            findings.append(Finding(CANARY_CLOSED, ("DEL-1",), f"the canary's connection was closed (code "
                                    f"{client.close_code}) during the run; {where}", node=self.sub_node))
        if missing:
            findings.append(Finding(CANARY_LOSS, ("DEL-1", "NODE-1"),
                                    f"{len(missing)} of {len(self.acked)} acknowledged events never reached the "
                                    f"canary within {SETTLE:g} s; {where}",
                                    sent=[f"{self.acked[e][0]}:{self.acked[e][1]} event_id {e}" for e in missing[:5]],
                                    node=self.sub_node))
        repeated = {e: n for e, n in got.items() if n > 1 and e in self.acked}
        if repeated:
            findings.append(Finding(CANARY_REPEAT, ("DEL-2",), f"{len(repeated)} events reached the canary more than "
                                    f"once; {where}", got=[f"{e} x{n}" for e, n in list(repeated.items())[:5]],
                                    node=self.sub_node))
        await client.close()
        return findings

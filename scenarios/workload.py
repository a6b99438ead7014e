"""The publisher: events at the scenario's rate, to scopes drawn by type mix and Zipf rank,
through whichever nodes are up, each publish recorded (invoke / ok / fail / info)."""

from __future__ import annotations

import asyncio
import random

import aiohttp

from conformance.history import HistoryWriter
from conformance.recorder import publish

from .population import Population, zipf_pick
from .spec import Scenario

IN_FLIGHT = 64


class Publisher:
    def __init__(self, sc: Scenario, pop: Population, writer: HistoryWriter, session: aiohttp.ClientSession,
                 urls: list[str], token: str, up, seed: int):
        self.sc, self.pop, self.w, self.session, self.urls, self.token = sc, pop, writer, session, urls, token
        self.up = up  # callable: indexes of nodes that are up now
        self.rng = random.Random(seed)
        self.types = [t for t in sc.mix if sc.mix[t] > 0 and pop.pools.get(t)]
        self.weights = [sc.mix[t] for t in self.types]
        self.acked = self.failed = self.indeterminate = 0
        self._gate = asyncio.Semaphore(IN_FLIGHT)
        self._tasks: set[asyncio.Task] = set()

    def pick(self) -> tuple[str, str, str | None]:
        kind = self.rng.choices(self.types, self.weights)[0]
        pool = self.pop.pools[kind]
        i = zipf_pick(self.rng, len(pool), self.sc.zipf_s) if self.sc.distribution == "zipf" else self.rng.randrange(len(pool))
        exclude = None
        if kind == "user" and self.rng.random() < 0.1:
            exclude = self.pop.fixtures["workspaces"] and self.rng.choice(list(self.pop.fixtures["workspaces"]))
        return kind, pool[i], exclude

    async def one(self, scope: str, sid: str, exclude: str | None = None, kind: str = "sim:event") -> None:
        nodes = self.up() or list(range(len(self.urls)))
        url = self.urls[self.rng.choice(nodes)]
        lo, hi = self.sc.payload_bytes
        frame = {"type": kind, "payload": {"pad": "x" * self.rng.randint(lo, hi)}}
        async with self._gate:
            result = await publish(self.w, self.session, url, self.token, scope, sid, frame, exclude, timeout=5.0)
        if result is not None:
            self.acked += 1
        else:
            self.failed += 1

    def spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def warm_up(self) -> None:
        """One event to every scope clients hold, so each has a position to resume from."""
        for kind in ("workspace", "user", "task", "chat"):
            for sid in self.pop.pools.get(kind, []):
                self.spawn(self.one(kind, sid, kind="sim:warmup"))
        await self.drain()

    async def run(self, seconds: float, started: float) -> None:
        """Publish at the scenario's rate (it may change over time) until `seconds` have passed."""
        loop = asyncio.get_running_loop()
        budget, last = 0.0, loop.time()
        while (now := loop.time()) - started < seconds:
            budget += self.sc.rate_at(now - started) * (now - last)
            last = now
            while budget >= 1:
                self.spawn(self.one(*self.pick()))
                budget -= 1
            await asyncio.sleep(0.01)
        await self.drain()

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)

"""Client worker processes: each multiplexes many simulated clients, records its own history
file, and takes commands (jitter, slow readers, stop) from the simulator.

A client connects to its node, subscribes to its scopes, and whenever its connection ends
(server close, node death, a jitter cut) reconnects to any node after a jittered back-off, as
Multica's client does, resuming every scope from the newest position it received when resume
is on."""

from __future__ import annotations

import asyncio
import queue
import random
import time
from dataclasses import asdict

import aiohttp

from conformance.history import HistoryWriter
from conformance.recorder import RecordedConnection

from .population import ClientSpec

TICK_S = 1.0


def worker_main(cfg: dict, commands, stats) -> None:
    """Entry point of one worker process (multiprocessing, spawn)."""
    asyncio.run(Worker(cfg, commands, stats).run())


def worker_config(index: int, urls: list[str], token: str, history_path: str, clients: list[ClientSpec],
                  tokens: dict[str, str], *, resume: bool, backoff: tuple[float, float], churn_per_s: float,
                  seed: int) -> dict:
    return {"index": index, "urls": urls, "token": token, "history": history_path,
            "clients": [asdict(c) for c in clients], "tokens": tokens, "resume": resume,
            "backoff": backoff, "churn_per_s": churn_per_s, "seed": seed}


class Worker:
    def __init__(self, cfg: dict, commands, stats):
        self.cfg, self.commands, self.stats = cfg, commands, stats
        self.clients = [ClientSpec(**{**c, "scopes": [tuple(s) for s in c["scopes"]],
                                       "churn": [tuple(s) for s in c["churn"]]}) for c in cfg["clients"]]
        self.conns: dict[str, RecordedConnection] = {}
        self.stop = asyncio.Event()
        self.jitter: dict | None = None  # {"period_s", "down_s"} while client_jitter is active
        self.slow = False
        self.resumes = {"attempted": 0, "recovered": 0, "not_recovered": 0, "failed": 0}
        self.connects = 0

    async def run(self) -> None:
        self.w = HistoryWriter(self.cfg["history"], process=f"w{self.cfg['index']}", append=False)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.gate = asyncio.Semaphore(200)  # connects in flight: a storm, not a stampede of SYNs
        tasks = [asyncio.create_task(self.client(spec)) for spec in self.clients]
        reporter = asyncio.create_task(self.report())
        await self.listen()
        await asyncio.wait(tasks, timeout=15)
        for t in tasks:
            t.cancel()
        reporter.cancel()
        await asyncio.gather(*tasks, reporter, return_exceptions=True)
        self.send_stats(final=True)
        self.w.close()
        await self.session.close()

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            try:
                cmd = await loop.run_in_executor(None, self.commands.get, True, 0.5)
            except queue.Empty:
                continue
            kind = cmd.get("cmd")
            if kind == "stop":
                self.stop.set()
            elif kind == "jitter":
                self.jitter = cmd if cmd.get("on") else None
            elif kind == "slow":
                self.slow = bool(cmd.get("on"))

    def send_stats(self, final: bool = False) -> None:
        self.stats.put({"worker": self.cfg["index"], "final": final, "at": time.monotonic(),
                        "deliveries": sum(c.received for c in self.conns.values()) + self._closed_received,
                        "connected": sum(1 for c in self.conns.values() if c.open),
                        "connects": self.connects, "resumes": dict(self.resumes)})

    _closed_received = 0

    async def report(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.send_stats()

    async def client(self, spec: ClientSpec) -> None:
        rng = random.Random(f"{self.cfg['seed']}:{spec.key}")
        urls, token = self.cfg["urls"], self.cfg["tokens"][spec.user]
        wanted = [("workspace", spec.workspace), ("user", spec.user), *spec.scopes]
        positions: dict[tuple[str, str], str] = {}
        attempt = 0
        await asyncio.sleep(rng.random() * 0.5)
        while not self.stop.is_set():
            url = urls[spec.node] if attempt == 0 else urls[rng.randrange(len(urls))]
            conn = RecordedConnection(self.w, self.session, f"{spec.key}.{attempt}", url, spec.user,
                                      spec.workspace, spec.auth)
            attempt += 1
            async with self.gate:
                ok = await conn.connect(token)
            if not ok:
                await self.backoff(rng)
                continue
            self.connects += 1
            previous = self.conns.get(spec.key)
            if previous is not None:
                self._closed_received += previous.received
            self.conns[spec.key] = conn
            await self.subscribe_all(conn, wanted, positions)
            reason = await self.live(conn, spec, rng)
            positions.update({k: v for k, v in conn.held.items() if v is not None})
            if reason == "stop":
                await conn.close()
                return
            if reason == "cut":
                await asyncio.sleep(self.jitter["down_s"] * (0.5 + rng.random()) if self.jitter else 1.0)
            else:
                await self.backoff(rng)

    async def subscribe_all(self, conn: RecordedConnection, wanted, positions) -> None:
        """Every scope at once, as a client re-subscribing after a reconnect sends them all
        before the first answer (answers are matched per scope)."""
        async def one(scope) -> None:
            since = positions.get(scope) if self.cfg["resume"] else None
            if since is not None:
                self.resumes["attempted"] += 1
                answer = await conn.subscribe(*scope, since=since)
                if answer is None or answer.get("answer") != "ack":
                    self.resumes["failed"] += 1
                elif answer["frame"]["payload"].get("recovered") is True:
                    self.resumes["recovered"] += 1
                else:
                    self.resumes["not_recovered"] += 1
            elif scope not in conn.held:
                await conn.subscribe(*scope)

        await asyncio.gather(*(one(scope) for scope in wanted))

    async def live(self, conn: RecordedConnection, spec: ClientSpec, rng: random.Random) -> str:
        """Run until the connection ends; returns 'closed', 'cut' or 'stop'."""
        closed = asyncio.create_task(conn.wait_closed())
        stopping = asyncio.create_task(self.stop.wait())
        try:
            while True:
                done, _ = await asyncio.wait({closed, stopping}, timeout=TICK_S * (0.5 + rng.random()),
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopping in done:
                    conn.resume()
                    return "stop"
                if closed in done or not conn.open:
                    return "closed"
                if self.jitter and rng.random() < TICK_S / self.jitter["period_s"]:
                    await conn.cut()
                    return "cut"
                if spec.slow:
                    conn.pause() if self.slow else conn.resume()
                if spec.churn and self.cfg["churn_per_s"] and rng.random() < TICK_S * self.cfg["churn_per_s"]:
                    scope = spec.churn[rng.randrange(len(spec.churn))]
                    if not conn.paused:
                        if scope in conn.held:
                            await conn.unsubscribe(*scope)
                        else:
                            await conn.subscribe(*scope)
        finally:
            for t in (closed, stopping):
                t.cancel()

    async def backoff(self, rng: random.Random) -> None:
        lo, hi = self.cfg["backoff"]
        try:
            await asyncio.wait_for(self.stop.wait(), lo + rng.random() * (hi - lo))
        except asyncio.TimeoutError:
            pass

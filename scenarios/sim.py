"""Runs one scenario: Redis, one proxy per node, the nodes (reference or any implementation's
command), client worker processes, the workload and the nemesis; then heals, lets the cluster
settle, merges the histories and hands them to the checker, the analysis and the report."""

from __future__ import annotations

import asyncio
import datetime
import json
import multiprocessing
import os
import queue
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from conformance import checker
from conformance.client import Control
from conformance.history import HistoryWriter, merge_files, read_history
from conformance.requirements import CONVERGENCE, READERS
from conformance.verdict import Outcome, Verdict, decide
from scopehub.cluster import Cluster, ClusterSpec
from scopehub.processes import NodeStartError
from scopehub.redis_provision import RedisServerError, RedisUnavailable

from . import analysis, population, report
from .clients import worker_config, worker_main
from .nemesis import Nemesis
from .proxy import LinkProxy
from .spec import Scenario
from .workload import Publisher

class SimError(Exception):
    """The simulation could not run (a node did not start, Redis unavailable): one line."""


class SimCluster:
    """The scenario's nodes (scopehub.cluster.Cluster) with a LinkProxy on each node's way to
    Redis, and the fixture world, which a restarted node is given again."""

    def __init__(self, sc: Scenario, token: str, log_dir: str, redis: str | None):
        url = redis if redis not in (None, "auto") else (sc.redis if sc.redis != "auto" else None)
        self.proxies: list[LinkProxy] = []
        # auto: the embedded default, which falls back to in-process fakeredis where no Redis is found
        # redis.cluster: a local Redis Cluster; the nodes reach it directly (no proxy: its redirections
        # name its nodes' own addresses)
        self.cluster = Cluster(ClusterSpec(nodes=sc.nodes, relay=sc.relay, redis_url=url, control_token=token,
                                           redis_cluster=sc.redis_cluster,
                                           fakeredis_fallback=url is None and sc.redis_cluster is None,
                                           node_flags=tuple(sc.node_flags), node_command=sc.node_command,
                                           log_dir=log_dir), link=self._proxy)
        self.token = token
        self.fixtures: dict | None = None
        self.session: aiohttp.ClientSession | None = None

    async def _proxy(self, index: int, redis_url: str) -> str:
        parts = urlsplit(redis_url)
        proxy = LinkProxy(parts.hostname or "127.0.0.1", parts.port or 6379, name=f"node-{index + 1}")
        await proxy.start()
        self.proxies.append(proxy)
        db = parts.path.lstrip("/")
        return proxy.url_for(int(db) if db.isdigit() else 0)

    @property
    def nodes(self):
        return self.cluster.nodes

    @property
    def urls(self) -> list[str]:
        return self.cluster.urls

    @property
    def redis_server(self):
        return self.cluster.redis_server

    @property
    def redis_label(self) -> str:
        return self.cluster.redis.label if self.cluster.redis else "-"

    async def start(self) -> None:
        await self.cluster.start()

    async def load(self, fixtures: dict, only: int | None = None) -> None:
        self.fixtures = fixtures
        for i, url in enumerate(self.urls):
            if only is None or i == only:
                await Control(self.session, url, self.token).call("PUT", "/_control/fixtures", fixtures, timeout=30)

    async def info(self) -> dict:
        return await Control(self.session, self.urls[0], self.token).info()

    async def restart_node(self, i: int) -> None:
        await self.cluster.restart_node(i)
        if self.fixtures is not None:
            await self.load(self.fixtures, only=i)

    async def stop(self) -> None:
        await self.cluster.stop()
        for p in self.proxies:
            await p.stop()


@dataclass
class SimResult:
    passed: bool
    out_dir: str
    summary: dict
    verdicts: list[dict]


async def _mint_tokens(session, urls, token, users: list[str]) -> dict[str, str]:
    gate = asyncio.Semaphore(32)
    tokens: dict[str, str] = {}

    async def one(i: int, user: str) -> None:
        async with gate:
            _, doc = await Control(session, urls[i % len(urls)], token).call(
                "POST", "/_control/token", {"user": user, "ttl_s": 24 * 3600})
            tokens[user] = doc["token"]

    await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))
    return tokens


async def simulate(sc: Scenario, out_dir: str, *, seed: int, redis: str | None, progress, command: str = "") -> SimResult:
    os.makedirs(out_dir, exist_ok=True)
    parts_dir = os.path.join(out_dir, "parts")
    os.makedirs(parts_dir, exist_ok=True)
    token = os.urandom(12).hex()
    pop = population.build(sc, seed)
    cluster = SimCluster(sc, token, parts_dir, redis)
    mp = multiprocessing.get_context("spawn")
    workers, commands = [], []
    stats = mp.Queue()
    started_at = datetime.datetime.now().isoformat(timespec="seconds")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        cluster.session = session
        try:
            progress.phase(f"starting Redis and {sc.nodes} nodes")
            try:
                await cluster.start()
            except (NodeStartError, RedisUnavailable, RedisServerError, ValueError, OSError) as e:
                raise SimError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
            progress.phase(f"Redis: {cluster.redis_label}")
            info = await cluster.info()
            progress.phase(f"loading the world ({len(pop.clients)} users) and minting tokens")
            await cluster.load(pop.fixtures)
            tokens = await _mint_tokens(session, cluster.urls, token, [c.user for c in pop.clients])
            writer = HistoryWriter(os.path.join(parts_dir, "publisher.jsonl"), process="publisher", append=False)
            writer.meta(scenario=sc.name, capabilities=info.get("capabilities", []), profile="default",
                        liveness_s=5.0, seed=seed)
            per = [pop.clients[i::sc.processes] for i in range(sc.processes)]
            for i, chunk in enumerate(per):
                q = mp.Queue()
                cfg = worker_config(i, cluster.urls, token, os.path.join(parts_dir, f"clients-{i}.jsonl"), chunk,
                                    {c.user: tokens[c.user] for c in chunk}, resume=sc.resume, backoff=sc.backoff_s,
                                    churn_per_s=sc.churn_per_s, seed=seed)
                proc = mp.Process(target=worker_main, args=(cfg, q, stats), daemon=True)
                proc.start()
                workers.append(proc)
                commands.append(q)
            live = _Stats(len(workers))
            progress.phase(f"connecting {len(pop.clients)} clients")
            await _until(lambda: live.pull(stats) and live.connected >= len(pop.clients), 60, progress, live)
            publisher = Publisher(sc, pop, writer, session, cluster.urls, token, lambda: [
                i for i in range(sc.nodes) if i not in nemesis.down], seed)
            nemesis = Nemesis(sc, cluster, lambda cmd: [q.put(cmd) for q in commands], history=writer)
            progress.phase("warming up: one event per scope")
            await publisher.warm_up()
            loop = asyncio.get_running_loop()
            await _settle(stats, live, 5.0, progress, loop, loop.time(), publisher, nemesis, still_s=0.5)
            t0 = loop.time()
            t0_mono = time.monotonic()
            progress.phase("fault phase")
            chaos = asyncio.create_task(nemesis.run(t0))
            pub = asyncio.create_task(publisher.run(sc.duration_s, t0))
            while not pub.done():
                if chaos.done() and not chaos.cancelled() and chaos.exception() is not None:
                    pub.cancel()
                    raise SimError(f"a fault could not be applied: {chaos.exception()}")
                live.pull(stats)
                progress.tick(loop.time() - t0, publisher, live, nemesis.active())
                await asyncio.sleep(0.25)
            await pub
            publish_end = time.monotonic()
            chaos.cancel()
            await asyncio.gather(chaos, return_exceptions=True)
            progress.phase("healing and settling")
            await nemesis.heal_all(t0)
            await _settle(stats, live, sc.settle_s, progress, loop, t0, publisher, nemesis,
                          still_s=sc.backoff_s[1] + 1.0, clients=len(pop.clients))
            writer.close()
        finally:
            for q in commands:
                q.put({"cmd": "stop"})
            for w in workers:
                await asyncio.to_thread(w.join, 20)
                if w.is_alive():
                    w.kill()
            await cluster.stop()
    progress.phase("checking the history")
    parts = [os.path.join(parts_dir, n) for n in sorted(os.listdir(parts_dir)) if n.endswith(".jsonl")]
    history = os.path.join(out_dir, "history.jsonl")
    lines = merge_files(parts, history)
    started = time.monotonic()
    caps = info.get("capabilities", [])
    checked = checker.check(read_history(history), capabilities=caps, profile="default")
    checker_s = time.monotonic() - started
    node_names = {u: f"node-{i + 1}" for i, u in enumerate(cluster.urls)}
    summary, series = analysis.summarize(read_history(history), t0=t0_mono, publish_end=publish_end,
                                         node_names=node_names, windows=nemesis.windows,
                                         resume="resume" in caps)
    for figure, rid in (("reordered", "DEL-3"), ("leaked", "AZ-4")):  # counted by the checker, not again here
        v = checked.verdicts.get(rid)
        summary[figure] = v.violations if v is not None and v.status in ("pass", "fail") else None
    summary["excused_by_fault"] = checked.counts.get("excused_by_fault", 0)  # deliveries a fault made impossible
    summary["resume_honesty"] = analysis.resume_honesty(checked)
    summary["store_faults"] = [{"kind": w.kind, "target": w.target, "start": round(w.start, 2),
                                "end": round(w.end, 2) if w.end is not None else None, **w.figures}
                               for w in nemesis.windows if w.figures]
    summary["checker_seconds"] = round(checker_s, 2)
    summary["history_lines"] = lines
    found = [decide(rid, claimed=caps, profile="default", checked=checked.verdicts.get(rid), checked_by="history",
                    elsewhere="the simulator's history checker does not judge it") for rid in sc.checks]
    found.append(convergence(summary, sc.min_delivery_ratio, resume="resume" in caps))
    summary["readers_cut"] = analysis.readers_cut(read_history(history))
    if sc.max_readers_cut is not None:
        found.append(readers_kept(summary["readers_cut"], sc.max_readers_cut))
    verdicts = [v.to_dict() for v in found]
    passed = not any(v.status == Outcome.FAIL for v in found)
    meta = {"scenario": sc.name, "description": sc.description, "seed": seed,
            "implementation": f"{info.get('implementation', '?')} {info.get('version', '')}".strip(),
            "node_command": sc.node_command, "nodes": sc.nodes, "relay": sc.relay, "redis": cluster.redis_label,
            "clients": sc.clients, "duration_s": sc.duration_s, "settle_s": sc.settle_s,
            "started_at": started_at, "command": command, "passed": passed}
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, **summary, "verdicts": [{k: v[k] for k in ("id", "status", "reason")} for v in verdicts]}, f, indent=2)
    report.render_html(os.path.join(out_dir, "report.html"), meta=meta, summary=summary, series=series, verdicts=verdicts)
    return SimResult(passed, out_dir, {"meta": meta, **summary}, verdicts)


def convergence(summary: dict, min_ratio: float, *, resume: bool) -> Verdict:
    """The simulator's own check: after healing, the delivered share of what clients were owed.
    Without `resume` a client is owed only what was published while it was connected."""
    ratio = summary["delivery_ratio"]
    owed = "acknowledged events" + ("" if resume else " published while the client was connected (no resume claimed)")
    v = Verdict(CONVERGENCE.id, f"after healing, delivered >= {min_ratio:.2%} of {owed}", Outcome.PASS)
    if ratio is None:
        v.status, v.reason = Outcome.NO_EVIDENCE, "no acknowledged event was due"
    elif ratio < min_ratio:
        v.status = Outcome.FAIL
        v.reason = f"delivered {ratio:.4%} ({summary['lost']} lost of {summary['expected_deliveries']})"
    return v


def readers_kept(cut: dict, most: int) -> Verdict:
    """The simulator's own check, where a scenario asks for it: healthy readers were not cut."""
    v = Verdict(READERS.id, f"at most {most} reading connections closed by the server", Outcome.PASS)
    if cut["count"] > most:
        v.status = Outcome.FAIL
        v.reason = (f"{cut['count']} connections that kept reading were closed by the server (close codes "
                    + ", ".join(f"{code}: {n}" for code, n in sorted(cut["codes"].items())) + f"; first {cut['first']})")
    return v


class _Stats:
    """Latest figures from each client worker."""

    def __init__(self, workers: int):
        self.latest: dict[int, dict] = {}
        self.workers = workers

    def pull(self, q) -> bool:
        while True:
            try:
                s = q.get_nowait()
            except queue.Empty:
                return True
            self.latest[s["worker"]] = s

    def reported_since(self, t: float) -> bool:
        """Every worker has sent figures taken after `t` (a starved worker's old figures look still)."""
        return len(self.latest) == self.workers and all(s["at"] >= t for s in self.latest.values())

    @property
    def connected(self) -> int:
        return sum(s["connected"] for s in self.latest.values())

    @property
    def deliveries(self) -> int:
        return sum(s["deliveries"] for s in self.latest.values())

    @property
    def resumes(self) -> dict:
        out: dict[str, int] = {}
        for s in self.latest.values():
            for k, v in s["resumes"].items():
                out[k] = out.get(k, 0) + v
        return out


async def _until(cond, timeout: float, progress, live) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if cond():
            return True
        progress.note(f"connected {live.connected}")
        await asyncio.sleep(0.2)
    return False


async def _settle(stats, live: _Stats, settle_s: float, progress, loop, t0, publisher, nemesis,
                  still_s: float = 2.0, clients: int = 0) -> None:
    """Let clients reconnect and resume: stop when every client is connected and deliveries
    have been still for `still_s`, or when the settle deadline passes."""
    deadline = loop.time() + settle_s
    last, still_since = -1, loop.time()
    while loop.time() < deadline:
        live.pull(stats)
        progress.tick(loop.time() - t0, publisher, live, nemesis.active())
        if live.deliveries != last:
            last, still_since = live.deliveries, loop.time()
        elif (loop.time() - still_since >= still_s and live.connected >= clients
              and live.reported_since(still_since + still_s)):
            return
        await asyncio.sleep(0.25)

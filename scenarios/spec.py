"""Scenario files (TOML): cluster, clients, workload, faults and checks, validated before
anything starts. Every error names the key and what was expected."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from conformance.requirements import CHECKER_IDS, REQUIREMENTS
from scopehub.redis_provision import CLUSTER_SPEC_HELP, parse_cluster_spec

FAULT_KINDS = {
    "kill_node": "SIGKILL one node; it is restarted at the end of the window (or at heal)",
    "pause_node": "SIGSTOP one node; SIGCONT at the end of the window",
    "restart_node": "SIGTERM one node and start it again at once",
    "restart_redis": "restart Redis (persistence off: streams are lost)",
    "pause_redis": "SIGSTOP Redis for the window (its port stays open, nothing is answered); SIGCONT at its end",
    "link_latency": "add latency to one node's link to Redis for the window",
    "link_cut": "cut one node off from Redis for the window",
    "client_jitter": "cut clients' sockets at random (every ~period_s, for ~down_s) during the window",
    "slow_readers": "make a fraction of clients stop reading for the window",
    "failover": "SIGSTOP a Redis Cluster primary (primary = i) for the window, until a replica is promoted; "
                "then SIGCONT it and wait until it is back as a replica",
    "reshard": "move `slots` slots from one Redis Cluster primary to another while traffic flows",
}
DEFAULT_CHECKS = CHECKER_IDS  # what the history checker judges (the registry says which)


# Faults on the one Redis, or on a node's single link to it (a proxy, which a Redis Cluster's
# redirections would bypass): not yet for a Redis Cluster.
CLUSTER_UNSUPPORTED = ("restart_redis", "pause_redis", "link_latency", "link_cut")
# Faults on a Redis Cluster's own nodes: only with one (redis.cluster).
CLUSTER_ONLY = ("failover", "reshard")
# A failover needs the node timeout (2 s) to pass and an election to be won before the old primary
# may come back: a shorter freeze would only be a pause.
FAILOVER_MIN_S = 4.0


def _cluster_size(text: str) -> bool:
    try:
        parse_cluster_spec(text)
    except ValueError:
        return False
    return True


class ScenarioError(ValueError):
    """A bad scenario file: one line naming the key."""


@dataclass
class Fault:
    kind: str
    at: float
    duration: float = 0.0
    node: int | None = None
    latency_s: float = 0.0
    fraction: float = 0.1
    period_s: float = 15.0
    down_s: float = 2.0
    primary: int = 0  # failover: which primary; reshard: the one slots move from
    slots: int = 1000  # reshard: how many slots move


@dataclass
class Scenario:
    name: str
    description: str = ""
    seed: int = 1
    duration_s: float = 20.0
    settle_s: float = 15.0
    # cluster
    nodes: int = 3
    relay: str = "streams"
    redis: str = "auto"
    redis_cluster: str | None = None  # [redis] cluster = "M[:R]": a local Redis Cluster instead of one redis-server
    node_flags: list[str] = field(default_factory=list)
    node_command: str | None = None
    # clients
    clients: int = 100
    processes: int = 2
    auth: str = "token"
    resume: bool = True
    workspaces: int = 2
    workspace_size: int = 0  # when set: as many workspaces as it takes to hold the clients, this many each
    tasks_per_client: int = 1
    chats_per_client: int = 0
    hot_fraction: float = 0.0
    slow_fraction: float = 0.0
    churn_per_s: float = 0.0
    backoff_s: tuple[float, float] = (0.2, 2.0)
    # workload
    rate: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 50.0)])
    distribution: str = "zipf"
    zipf_s: float = 1.1
    payload_bytes: tuple[int, int] = (64, 512)
    mix: dict[str, float] = field(default_factory=lambda: {"workspace": 0.3, "user": 0.2, "task": 0.4, "chat": 0.1})
    # faults and checks
    faults: list[Fault] = field(default_factory=list)
    checks: list[str] = field(default_factory=lambda: list(DEFAULT_CHECKS))
    min_delivery_ratio: float = 1.0
    max_readers_cut: int | None = None  # READERS: connections that kept reading yet were closed (None: not judged)
    source: str = ""

    def scaled(self, duration_s: float) -> None:
        """Shorten or stretch the fault phase, keeping every fault at the same point of it."""
        k = duration_s / self.duration_s
        for f in self.faults:
            f.at, f.duration = f.at * k, f.duration * k
            f.period_s = max(0.5, f.period_s * k) if f.kind == "client_jitter" else f.period_s
        self.rate = [(start * k, r) for start, r in self.rate]
        self.duration_s = duration_s

    @property
    def workspace_count(self) -> int:
        return -(-self.clients // self.workspace_size) if self.workspace_size else self.workspaces

    def rate_at(self, t: float) -> float:
        current = self.rate[0][1]
        for start, r in self.rate:
            if t >= start:
                current = r
        return current


class _Reader:
    """Pops keys off one table, checking types; unknown keys are errors (typos must not pass)."""

    def __init__(self, table: dict, where: str):
        if not isinstance(table, dict):
            raise ScenarioError(f"{where}: expected a table")
        self.t, self.where = dict(table), where

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind, default: Any, *, check=None, expect: str = "") -> Any:
        if key not in self.t:
            return default
        value = self.t.pop(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if ok and check is not None:
            ok = check(value)
        if not ok:
            raise ScenarioError(f"{self._key(key)}: expected {expect or ' or '.join(k.__name__ for k in kinds)}, got {value!r}")
        return value

    def done(self) -> None:
        if self.t:
            raise ScenarioError(f"{self._key(sorted(self.t)[0])}: unknown key")


def _primaries(s: "Scenario") -> int:
    return parse_cluster_spec(s.redis_cluster)[0] if s.redis_cluster is not None else 1


def _num(*, lo: float | None = None, hi: float | None = None):
    return lambda v: (lo is None or v >= lo) and (hi is None or v <= hi)


def parse(doc: dict, source: str = "") -> Scenario:
    top = _Reader(doc, "")
    s = Scenario(name=top.get("name", str, "", check=bool, expect="a non-empty string"))
    if not s.name:
        raise ScenarioError("name: expected a non-empty string")
    s.source = source
    s.description = top.get("description", str, "")
    s.seed = top.get("seed", int, 1)
    s.duration_s = float(top.get("duration_s", (int, float), 20.0, check=_num(lo=1), expect="a number >= 1"))
    s.settle_s = float(top.get("settle_s", (int, float), 15.0, check=_num(lo=1), expect="a number >= 1"))

    c = _Reader(top.get("cluster", dict, {}), "cluster")
    s.nodes = c.get("nodes", int, 3, check=_num(lo=1, hi=16), expect="a whole number from 1 to 16")
    s.relay = c.get("relay", str, "streams", check=lambda v: v in ("streams", "sharded"), expect='"streams" or "sharded"')
    s.redis = c.get("redis", str, "auto", check=lambda v: v == "auto" or v.startswith(("redis://", "rediss://")),
                    expect='"auto" or a redis:// URL')
    s.node_flags = c.get("node_flags", list, [], check=lambda v: all(isinstance(x, str) for x in v),
                         expect="a list of strings")
    s.node_command = c.get("node_command", str, None, check=lambda v: "{port}" in v,
                           expect="a command containing {port}")
    c.done()

    rd = _Reader(top.get("redis", dict, {}), "redis")
    s.redis_cluster = rd.get("cluster", str, None, check=_cluster_size, expect=f"a Redis Cluster size {CLUSTER_SPEC_HELP}")
    rd.done()
    if s.redis_cluster is not None and s.redis != "auto":
        raise ScenarioError("redis.cluster: starts a local Redis Cluster; leave cluster.redis at \"auto\"")

    cl = _Reader(top.get("clients", dict, {}), "clients")
    s.clients = cl.get("count", int, 100, check=_num(lo=1, hi=50_000), expect="a whole number from 1 to 50000")
    s.processes = cl.get("processes", int, max(1, min(4, s.clients // 500 + 1)), check=_num(lo=1, hi=32),
                         expect="a whole number from 1 to 32")
    s.auth = cl.get("auth", str, "token", check=lambda v: v in ("token", "cookie", "mixed"),
                    expect='"token", "cookie" or "mixed"')
    s.resume = cl.get("resume", bool, True)
    s.workspaces = cl.get("workspaces", int, 2, check=_num(lo=1), expect="a whole number >= 1")
    s.workspace_size = cl.get("workspace_size", int, 0, check=_num(lo=1), expect="a whole number >= 1")
    if s.workspace_size and "workspaces" in (doc.get("clients") or {}):
        raise ScenarioError("clients.workspace_size: give either workspaces or workspace_size, not both")
    s.tasks_per_client = cl.get("tasks_per_client", int, 1, check=_num(lo=0, hi=50), expect="0 to 50")
    s.chats_per_client = cl.get("chats_per_client", int, 0, check=_num(lo=0, hi=10), expect="0 to 10")
    s.hot_fraction = float(cl.get("hot_fraction", (int, float), 0.0, check=_num(lo=0, hi=1), expect="a fraction 0..1"))
    s.slow_fraction = float(cl.get("slow_fraction", (int, float), 0.0, check=_num(lo=0, hi=1), expect="a fraction 0..1"))
    s.churn_per_s = float(cl.get("churn_per_s", (int, float), 0.0, check=_num(lo=0, hi=10), expect="0 to 10 per second"))
    backoff = cl.get("backoff_s", list, [0.2, 2.0], check=lambda v: len(v) == 2 and all(isinstance(x, int | float) and x > 0 for x in v) and v[0] <= v[1],
                     expect="[min, max] seconds with 0 < min <= max")
    s.backoff_s = (float(backoff[0]), float(backoff[1]))
    cl.done()

    w = _Reader(top.get("workload", dict, {}), "workload")
    rate = w.get("rate", (int, float, list), 50.0)
    if isinstance(rate, list):
        if not rate or not all(isinstance(x, list) and len(x) == 2 and all(isinstance(y, int | float) and y >= 0 for y in x) for x in rate):
            raise ScenarioError("workload.rate: expected events/s, or a list of [at_s, events/s] steps")
        s.rate = sorted((float(a), float(r)) for a, r in rate)
    else:
        if rate < 0:
            raise ScenarioError("workload.rate: expected events/s >= 0")
        s.rate = [(0.0, float(rate))]
    s.distribution = w.get("scopes", str, "zipf", check=lambda v: v in ("zipf", "uniform"), expect='"zipf" or "uniform"')
    s.zipf_s = float(w.get("zipf_s", (int, float), 1.1, check=_num(lo=0.1, hi=5), expect="0.1 to 5"))
    pb = w.get("payload_bytes", list, [64, 512], check=lambda v: len(v) == 2 and all(isinstance(x, int) and 0 <= x <= 60_000 for x in v) and v[0] <= v[1],
               expect="[min, max] bytes, 0..60000")
    s.payload_bytes = (pb[0], pb[1])
    mix = w.get("mix", dict, s.mix)
    if not mix or set(mix) - {"workspace", "user", "task", "chat", "global"} or not all(isinstance(v, int | float) and v >= 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ScenarioError("workload.mix: expected weights >= 0 for workspace, user, task, chat, global")
    s.mix = {k: float(v) for k, v in mix.items()}
    w.done()

    faults = top.get("faults", list, [])
    for i, f in enumerate(faults):
        fr = _Reader(f, f"faults[{i}]")
        kind = fr.get("kind", str, None, check=lambda v: v in FAULT_KINDS, expect="one of " + ", ".join(FAULT_KINDS))
        if kind is None:
            raise ScenarioError(f"faults[{i}].kind: expected one of {', '.join(FAULT_KINDS)}")
        fault = Fault(kind=kind, at=float(fr.get("at", (int, float), 0.0, check=_num(lo=0), expect="seconds >= 0")))
        fault.duration = float(fr.get("duration", (int, float), 0.0, check=_num(lo=0), expect="seconds >= 0"))
        if kind in ("kill_node", "pause_node", "restart_node", "link_latency", "link_cut"):
            fault.node = fr.get("node", int, 0, check=_num(lo=0, hi=s.nodes - 1), expect=f"a node index 0..{s.nodes - 1}")
        fault.latency_s = float(fr.get("latency_s", (int, float), 0.05 if kind == "link_latency" else 0.0, check=_num(lo=0, hi=30), expect="0 to 30 seconds"))
        fault.fraction = float(fr.get("fraction", (int, float), 0.1, check=_num(lo=0, hi=1), expect="a fraction 0..1"))
        fault.period_s = float(fr.get("period_s", (int, float), 15.0, check=_num(lo=0.1), expect="seconds > 0"))
        fault.down_s = float(fr.get("down_s", (int, float), 2.0, check=_num(lo=0), expect="seconds >= 0"))
        if kind in CLUSTER_ONLY:
            fault.primary = fr.get("primary", int, 0, check=_num(lo=0, hi=_primaries(s) - 1),
                                   expect=f"a primary index 0..{_primaries(s) - 1}")
        if kind == "reshard":
            fault.slots = fr.get("slots", int, 1000, check=_num(lo=1, hi=16383), expect="a number of slots 1..16383")
        fr.done()
        if fault.at >= s.duration_s:
            raise ScenarioError(f"faults[{i}].at: expected a time before duration_s ({s.duration_s:g})")
        if kind in CLUSTER_UNSUPPORTED and s.redis_cluster is not None:
            raise ScenarioError(f"faults[{i}].kind: {kind} is not supported with a Redis Cluster (redis.cluster) yet")
        if kind in ("restart_redis", "pause_redis") and s.redis != "auto":
            raise ScenarioError(f"faults[{i}].kind: {kind} needs cluster.redis = \"auto\" (a Redis the simulator started)")
        if kind in CLUSTER_ONLY and s.redis_cluster is None:
            raise ScenarioError(f"faults[{i}].kind: {kind} needs a Redis Cluster (redis.cluster = \"3:1\")")
        if kind == "failover" and parse_cluster_spec(s.redis_cluster)[1] < 1:
            raise ScenarioError(f"faults[{i}].kind: failover needs replicas to promote: redis.cluster = \"M:R\" with R >= 1")
        if kind == "failover" and fault.duration < FAILOVER_MIN_S:
            raise ScenarioError(f"faults[{i}].duration: failover freezes the primary until a replica is promoted "
                                f"(node timeout 2 s plus an election): expected seconds >= {FAILOVER_MIN_S:g}")
        if kind in ("pause_redis", "pause_node") and fault.duration <= 0:
            raise ScenarioError(f"faults[{i}].duration: {kind} needs a window: expected seconds > 0")
        s.faults.append(fault)

    ch = _Reader(top.get("checks", dict, {}), "checks")
    reqs = ch.get("requirements", list, list(DEFAULT_CHECKS), check=lambda v: all(x in REQUIREMENTS for x in v),
                  expect="a list of requirement IDs from docs/protocol.md")
    s.checks = list(reqs)
    s.min_delivery_ratio = float(ch.get("min_delivery_ratio", (int, float), 1.0, check=_num(lo=0, hi=1), expect="a fraction 0..1"))
    s.max_readers_cut = ch.get("max_readers_cut", int, None, check=_num(lo=0), expect="a whole number >= 0")
    ch.done()
    top.done()
    return s


def load(path: str) -> Scenario:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ScenarioError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path} is not valid TOML: {e}") from None
    try:
        return parse(doc, path)
    except ScenarioError as e:
        raise ScenarioError(f"{os.path.basename(path)}: {e}") from None


def builtin(name: str) -> str:
    """Path of a catalogue scenario shipped in this package."""
    return str(resources.files("scenarios").joinpath(f"{name}.toml"))


def catalogue() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("scenarios").iterdir() if p.name.endswith(".toml"))

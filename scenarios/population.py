"""The simulated world: workspaces, one user per client, issue tasks and chats, and what each
client subscribes to. Deterministic for a seed."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

from .spec import Scenario


@dataclass
class ClientSpec:
    key: str
    user: str
    workspace: str
    node: int
    auth: str  # token | cookie
    scopes: list[tuple[str, str]] = field(default_factory=list)  # beyond the auto workspace/user
    churn: list[tuple[str, str]] = field(default_factory=list)  # scopes it subscribes and leaves
    slow: bool = False


@dataclass
class Population:
    fixtures: dict
    clients: list[ClientSpec]
    pools: dict[str, list[str]]  # publishable ids per scope type, hottest first


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def zipf_pick(rng: random.Random, n: int, s: float) -> int:
    """An index in [0, n) with P(k) ~ 1/(k+1)^s (rank 0 is the hottest)."""
    weights = _zipf_weights(n, s)
    return rng.choices(range(n), cum_weights=weights)[0]


_CACHE: dict[tuple[int, float], list[float]] = {}


def _zipf_weights(n: int, s: float) -> list[float]:
    key = (n, s)
    if key not in _CACHE:
        total, cum = 0.0, []
        for k in range(n):
            total += 1.0 / (k + 1) ** s
            cum.append(total)
        _CACHE[key] = cum
    return _CACHE[key]


def build(sc: Scenario, seed: int) -> Population:
    rng = random.Random(seed)
    n_ws = sc.workspace_count
    workspaces = [_uuid(rng) for _ in range(n_ws)]
    tasks_per_ws = max(4, (sc.clients * max(1, sc.tasks_per_client)) // (4 * n_ws))
    issues, tasks, chats = {}, {}, {}
    ws_tasks: dict[str, list[str]] = {}
    for w in workspaces:
        ws_tasks[w] = []
        for _ in range(tasks_per_ws):
            issue, task = _uuid(rng), _uuid(rng)
            issues[issue] = {"workspace": w}
            tasks[task] = {"issue": issue}
            ws_tasks[w].append(task)
    members: dict[str, list[str]] = {w: [] for w in workspaces}
    clients: list[ClientSpec] = []
    for i in range(sc.clients):
        w = workspaces[i % n_ws]
        user = _uuid(rng)
        members[w].append(user)
        auth = sc.auth if sc.auth != "mixed" else ("cookie" if rng.random() < 0.5 else "token")
        spec = ClientSpec(key=f"k{i}", user=user, workspace=w, node=i % sc.nodes, auth=auth)
        pool = ws_tasks[w]
        if sc.hot_fraction and rng.random() < sc.hot_fraction:
            spec.scopes.append(("task", pool[0]))  # the workspace's hot task
        while len([s for s in spec.scopes if s[0] == "task"]) < sc.tasks_per_client:
            t = ("task", pool[zipf_pick(rng, len(pool), sc.zipf_s)])
            if t not in spec.scopes:
                spec.scopes.append(t)
            elif len(pool) <= sc.tasks_per_client:
                break
        for _ in range(sc.chats_per_client):
            chat = _uuid(rng)
            chats[chat] = {"workspace": w, "creator": user}
            spec.scopes.append(("chat", chat))
        if sc.churn_per_s:
            spec.churn = [("task", pool[rng.randrange(len(pool))]) for _ in range(2)]
            spec.churn = [c for c in dict.fromkeys(spec.churn) if c not in spec.scopes]
        spec.slow = rng.random() < sc.slow_fraction
        clients.append(spec)
    fixtures = {
        "workspaces": {w: {"slug": f"sim-{k}", "members": members[w]} for k, w in enumerate(workspaces)},
        "disabled_users": [], "pats": {}, "issues": issues, "tasks": tasks, "chats": chats,
    }
    # Publish pools, hottest first: task popularity follows how many clients hold each task.
    held: dict[str, int] = {}
    for c in clients:
        for s, sid in c.scopes:
            if s == "task":
                held[sid] = held.get(sid, 0) + 1
    all_tasks = sorted((t for ts in ws_tasks.values() for t in ts), key=lambda t: -held.get(t, 0))
    pools = {"workspace": workspaces, "user": [c.user for c in clients], "task": all_tasks,
             "chat": list(chats), "global": ["all"]}
    return Population(fixtures, clients, pools)

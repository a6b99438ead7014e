"""The simulator: scenario files are validated before anything starts, every catalogue scenario
runs in a short form against the reference on a real redis-server and passes, and a scenario
whose faults must cause loss (reconnect-storm without resume) reports that loss."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from scenarios.sim import simulate
from scenarios.spec import ScenarioError, builtin, catalogue, load, parse

CATALOGUE = ["smoke", "node-crash", "redis-restart", "redis-freeze", "node-stall", "relay-partition", "slow-consumers", "reconnect-storm",
             "subscription-churn", "hot-scope", "many-scopes"]
# on a local Redis Cluster, run in short form by tests/test_redis_cluster_faults.py
CLUSTER_CATALOGUE = ["redis-cluster", "redis-failover", "redis-failover-durable"]


class _Quiet:
    def phase(self, name): pass
    def note(self, text): pass
    def tick(self, *a): pass


def _short(name: str, **over):
    sc = load(builtin(name))
    sc.clients = min(sc.clients, over.pop("clients", 40))
    sc.processes = 1
    sc.scaled(over.pop("duration", 4.5))
    sc.settle_s = min(sc.settle_s, 15.0)
    for k, v in over.items():
        setattr(sc, k, v)
    return sc


def test_the_catalogue_is_complete():
    assert sorted(catalogue()) == sorted(CATALOGUE + CLUSTER_CATALOGUE)


@pytest.mark.parametrize("doc, key", [
    ({}, "name"),
    ({"name": "x", "cluster": {"nodes": 0}}, "cluster.nodes"),
    ({"name": "x", "cluster": {"relay": "kafka"}}, "cluster.relay"),
    ({"name": "x", "clients": {"count": "many"}}, "clients.count"),
    ({"name": "x", "clients": {"resume": "yes"}}, "clients.resume"),
    ({"name": "x", "workload": {"rate": -1}}, "workload.rate"),
    ({"name": "x", "workload": {"mix": {"galaxy": 1}}}, "workload.mix"),
    ({"name": "x", "faults": [{"kind": "meteor", "at": 1}]}, "faults[0].kind"),
    ({"name": "x", "duration_s": 10, "faults": [{"kind": "kill_node", "at": 11}]}, "faults[0].at"),
    ({"name": "x", "cluster": {"nodes": 2}, "faults": [{"kind": "kill_node", "at": 1, "node": 5}]}, "faults[0].node"),
    ({"name": "x", "faults": [{"kind": "pause_redis", "at": 1}]}, "faults[0].duration"),
    ({"name": "x", "checks": {"requirements": ["DEL-99"]}}, "checks.requirements"),
    ({"name": "x", "clients": {"cuont": 3}}, "clients.cuont"),
    ({"name": "x", "clients": {"workspaces": 2, "workspace_size": 5}}, "clients.workspace_size"),
])
def test_bad_scenarios_name_the_key(doc, key):
    with pytest.raises(ScenarioError) as e:
        parse(doc)
    assert str(e.value).startswith(key)


def test_bad_scenario_file_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[clients]\ncount = "lots"\n')
    r = subprocess.run([sys.executable, "-m", "scopehub", "sim", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "clients.count" in r.stderr and "Traceback" not in r.stderr


def _storm_without_resume():
    sc = _short("reconnect-storm", duration=8.0, resume=False)
    sc.rate = [(0.0, 40.0)]
    return sc


# Runs besides the catalogue's own: name -> (scenario, seed)
EXTRA = {"storm-without-resume": (_storm_without_resume, 3)}


@pytest.fixture(scope="module")
def sim_runs(request, tmp_path_factory):
    """Every scenario run this module's selected tests want, in short form, two side by side (each
    is a light load on a cluster of its own): name -> (result, its folder)."""
    wanted = [item.callspec.params["name"] for item in request.session.items
              if item.originalname == "test_catalogue_scenario_passes_in_short_form"]
    wanted += [name for name in EXTRA if any(item.originalname == f"test_{name.replace('-', '_')}_reports_the_loss"
                                             for item in request.session.items)]
    gate = asyncio.Semaphore(2)

    async def one(name: str):
        out = tmp_path_factory.mktemp(name)
        sc, seed = (EXTRA[name][0](), EXTRA[name][1]) if name in EXTRA else (_short(name), 7)
        async with gate:
            return name, (await simulate(sc, str(out), seed=seed, redis=None, progress=_Quiet()), out)

    async def every():
        return dict(await asyncio.gather(*(one(n) for n in wanted)))
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, every()).result()


@pytest.mark.heavy
@pytest.mark.req("DEL-1", "DEL-2", "DEL-3", "AZ-4", "REP-3", "NODE-1", "NODE-2", "NODE-3")
@pytest.mark.parametrize("name", CATALOGUE)
def test_catalogue_scenario_passes_in_short_form(name, sim_runs):
    result, out = sim_runs[name]
    failing = [(v["id"], v["reason"]) for v in result.verdicts if v["status"] == "fail"]
    assert result.passed, failing
    assert result.summary["published"]["acknowledged"] > 0
    for name_ in ("history.jsonl", "summary.json", "report.html"):
        assert (out / name_).stat().st_size > 0


@pytest.mark.heavy
@pytest.mark.req("REP-3")
def test_storm_without_resume_reports_the_loss(sim_runs):
    """Clients that do not resume lose what was published while they reconnected, although the
    target claims resume: CONVERGENCE fails and the figures show the loss."""
    result, _ = sim_runs["storm-without-resume"]
    convergence = next(v for v in result.verdicts if v["id"] == "CONVERGENCE")
    assert not result.passed and convergence["status"] == "fail"
    assert result.summary["lost"] > 0 and result.summary["delivery_ratio"] < 1.0


@pytest.mark.heavy
@pytest.mark.req("DEL-1", "NODE-1")
def test_without_any_redis_the_embedded_default_runs_on_labelled_in_process_fakeredis(tmp_path):
    bare = tmp_path / "bin"  # a PATH with no redis-server on it, and no Docker engine to ask
    bare.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DOCKER_HOST")}
    env.update(PATH=str(bare), DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock", COLUMNS="200")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "scopehub", "sim", "--duration", "4", "--clients", "30",
                        "--out", str(out)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "in-process fakeredis" in r.stdout and "not a real Redis" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert "in-process fakeredis" in summary["meta"]["redis"]
    assert summary["delivery_ratio"] == 1.0 and summary["published"]["acknowledged"] > 0
    assert "in-process fakeredis" in (out / "report.html").read_text()

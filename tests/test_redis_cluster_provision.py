"""A local Redis Cluster started by the project (scopehub.redis_provision.RedisClusterServer):
real redis-server children on free loopback ports (never 6379), every one stopped by PID.
Also the M[:R] size and the flags that ask for one."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from scopehub.cli import main
from scopehub.cluster import Cluster, ClusterSpec
from scopehub.redis_provision import (
    RedisClusterServer,
    RedisServerError,
    parse_cluster_spec,
    provision_cluster,
)
from targets import local_redis_cluster

needs_binary = pytest.mark.skipif(not shutil.which("redis-server"), reason="no redis-server binary")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)


@pytest.fixture(scope="module")
def cluster_3_1():
    with local_redis_cluster(3, 1) as cluster:
        yield cluster


# ---- the size


@pytest.mark.parametrize("text, expected", [("3", (3, 0)), ("3:1", (3, 1)), ("5:2", (5, 2)), (" 4:0 ", (4, 0))])
def test_sizes_are_parsed(text, expected):
    assert parse_cluster_spec(text) == expected


@pytest.mark.parametrize("text", ["", "2", "2:1", "0", "3:", ":1", "3:-1", "-3", "x", "3:1:1", "3.5", "40:1"])
def test_bad_sizes_are_one_line_errors(text):
    with pytest.raises(ValueError) as e:
        parse_cluster_spec(text)
    assert "\n" not in str(e.value) and "Redis Cluster" in str(e.value)


# ---- flags: one-line errors, nothing started


@pytest.mark.parametrize("argv, says", [
    (["cluster", "--redis-cluster", "2"], "at least 3 primaries"),
    (["cluster", "--redis-cluster", "three"], "M[:R]"),
    (["cluster", "--redis-cluster", "3", "--redis", "redis://127.0.0.1:1"], "not both"),
    (["conform", "--node-command", "reference", "--redis-cluster", "3:x"], "M[:R]"),
    (["conform", "--node-command", "reference", "--redis-cluster", "3", "--redis", "redis://127.0.0.1:1"],
     "not both"),
    (["conform", "--node", "http://127.0.0.1:1", "--control-token", "t", "--redis-cluster", "3"],
     "--node-command"),
])
def test_flag_mistakes_are_one_line(argv, says, capsys):
    try:
        code = main(argv)  # a UserError: exit code returned
    except SystemExit as e:  # an argparse error
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and says in err and "Traceback" not in err


def test_existing_cluster_urls_reach_the_nodes_as_a_seed():
    c = Cluster(ClusterSpec(nodes=1, redis_cluster_urls=("redis://10.0.0.1:7000", "redis://10.0.0.2:7000")))
    argv = c.node_argv(0, 9000, "redis://10.0.0.1:7000")
    assert argv[argv.index("--redis") + 1] == "redis://10.0.0.1:7000" and "--redis-cluster" in argv
    plain = Cluster(ClusterSpec(nodes=1)).node_argv(0, 9000, "redis://127.0.0.1:1/0")
    assert "--redis-cluster" not in plain
    given = provision_cluster(urls=("redis://10.0.0.1:7000", "redis://10.0.0.2:7000"))
    assert given.is_cluster and given.url == "redis://10.0.0.1:7000" and given.kind == "cluster-url"
    given.stop()  # nothing of ours to stop


def test_the_serve_flag_is_accepted():
    from scopehub.cli import build_parser

    args = build_parser().parse_args(["serve", "--redis", "redis://127.0.0.1:1", "--redis-cluster"])
    assert args.redis_cluster is True


# ---- a real cluster


@pytest.mark.heavy
@needs_binary
def test_a_3_1_cluster_serves_every_slot_with_replicas_attached(cluster_3_1):
    c = cluster_3_1
    assert len(c.primaries) == 3 and len(c.replicas) == 3
    assert c.url == c.urls[0] and len(c.urls) == 3 and 6379 not in {n.port for n in c.nodes}
    for n in c.nodes:
        info = client(f"redis://127.0.0.1:{n.port}").execute_command("CLUSTER", "INFO")
        assert "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info
    for n in c.replicas:
        role = client(f"redis://127.0.0.1:{n.port}").execute_command("ROLE")
        assert role[0] == "slave" and role[3] == "connected"
    for n in c.primaries:
        assert client(f"redis://127.0.0.1:{n.port}").info("replication")["connected_slaves"] == 1


@pytest.mark.heavy
@needs_binary
def test_a_key_written_through_a_cluster_client_is_readable(cluster_3_1):
    async def go():
        rc = RedisCluster.from_url(cluster_3_1.url, decode_responses=True)
        try:
            for i in range(20):  # keys spread over every primary
                await rc.set(f"k{i}", str(i))
            return [await rc.get(f"k{i}") for i in range(20)]
        finally:
            await rc.aclose()
    assert asyncio.run(go()) == [str(i) for i in range(20)]


@pytest.mark.heavy
@needs_binary
def test_stop_leaves_no_child_alive():
    server = RedisClusterServer(3, 0).start()
    try:
        pids = server.pids
        assert len(pids) == 3 and all(alive(p) for p in pids)
        server.primaries[0].pause()  # a paused primary must still be stopped
    finally:
        server.stop()
    assert not any(alive(p) for p in pids)
    server.stop()  # idempotent


@pytest.mark.heavy
@needs_binary
def test_a_failure_while_forming_stops_every_child(monkeypatch):
    server = RedisClusterServer(3, 0, startup_timeout=0.3)
    started: list[int] = []
    real_form = RedisClusterServer._form

    def form(self):
        started.extend(self.pids)
        self.primaries[1].kill()  # a node dies while the cluster forms
        real_form(self)
    monkeypatch.setattr(RedisClusterServer, "_form", form)
    with pytest.raises(RedisServerError) as e:
        server.start()
    assert "\n" not in str(e.value)
    assert len(started) == 3 and not any(alive(p) for p in started)
    assert server.nodes == []


@pytest.mark.heavy
@needs_binary
def test_a_cluster_of_nodes_starts_and_stops_its_redis_cluster():
    async def go():
        cluster = Cluster(ClusterSpec(nodes=0, redis_cluster="3"))
        await cluster.start()
        try:
            assert cluster.redis.is_cluster and cluster.redis.kind == "cluster"
            server = cluster.redis_server
            pids = server.pids
            assert len(pids) == 3 and cluster.redis_url == server.url
            assert "--redis-cluster" in cluster.node_argv(0, 9000, cluster.redis_url)
        finally:
            await cluster.stop()
        return pids
    pids = asyncio.run(go())
    assert not any(alive(p) for p in pids)


# ---- the simulator's [redis] section


def test_a_scenario_may_ask_for_a_redis_cluster():
    from scenarios.spec import parse

    assert parse({"name": "x", "redis": {"cluster": "3:1"}}).redis_cluster == "3:1"
    assert parse({"name": "x"}).redis_cluster is None


@pytest.mark.parametrize("doc, says", [
    ({"redis": {"cluster": "2"}}, "redis.cluster: expected a Redis Cluster size"),
    ({"redis": {"cluster": 3}}, "redis.cluster: expected"),
    ({"redis": {"clustre": "3"}}, "redis.clustre: unknown key"),
    ({"redis": {"cluster": "3"}, "cluster": {"redis": "redis://127.0.0.1:1"}}, "leave cluster.redis"),
    ({"redis": {"cluster": "3"}, "faults": [{"kind": "restart_redis", "at": 1}]}, "not supported with a Redis Cluster"),
    ({"redis": {"cluster": "3"}, "faults": [{"kind": "pause_redis", "at": 1, "duration": 1}]}, "not supported"),
    ({"redis": {"cluster": "3"}, "faults": [{"kind": "link_cut", "at": 1, "duration": 1}]}, "not supported"),
])
def test_bad_redis_sections_are_scenario_errors(doc, says):
    from scenarios.spec import ScenarioError, parse

    with pytest.raises(ScenarioError) as e:
        parse({"name": "x", **doc})
    assert says in str(e.value) and "\n" not in str(e.value)


def test_sim_refuses_a_redis_url_for_a_cluster_scenario(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('name = "c"\n[redis]\ncluster = "3"\n')
    assert main(["sim", str(path), "--redis", "redis://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Redis Cluster" in err

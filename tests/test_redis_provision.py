"""scopehub.redis_provision: explicit URL > Docker (testcontainers) > redis-server binary > one-line
error. Every Redis used here is one these tests started themselves on a free port (never 6379)."""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
import time

import psutil
import pytest
import redis

from scopehub.redis_provision import (
    UNAVAILABLE_MESSAGE,
    RedisServer,
    RedisServerError,
    RedisUnavailable,
    docker_available,
    free_port,
    provision,
)

HAS_TESTCONTAINERS = importlib.util.find_spec("testcontainers") is not None


@pytest.fixture
def no_docker_env(tmp_path):
    """An environment with the real PATH, no REDIS_URL and a DOCKER_HOST nobody answers on."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DOCKER_HOST")}
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
    return env


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def gone(pid: int) -> bool:
    """No such process (or only a zombie nobody of ours will reap)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(cond, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def test_free_port_is_bindable():
    port = free_port()
    assert port != 6379 and 0 < port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_binary_provision_runs_a_real_redis_server(no_docker_env):
    with provision(env=no_docker_env) as p:
        assert p.kind == "binary" and p.server is not None
        server = p.server
        assert server.port != 6379
        assert p.url == server.url == f"redis://127.0.0.1:{server.port}/0"
        proc = psutil.Process(server.pid)
        assert "redis-server" in proc.name()
        assert proc.ppid() == os.getpid()
        assert f"127.0.0.1:{server.port}" in p.label and f"pid {server.pid}" in p.label
        assert p.label.startswith("redis-server 7")
        r = client(p.url)
        assert r.set("k", "v") and r.get("k") == b"v"
        info = r.info("server")
        assert info["process_id"] == server.pid and info["tcp_port"] == server.port
        assert r.config_get("save") == {"save": ""} and r.config_get("appendonly")["appendonly"] == "no"
        assert r.config_get("dir")["dir"] == os.path.realpath(server.dir)
        pid, directory = server.pid, server.dir
        assert os.path.isdir(directory)
        r.close()
    assert not psutil.pid_exists(pid)
    assert not os.path.exists(directory)
    p.stop()  # idempotent


@pytest.mark.req("NODE-3")
def test_restart_keeps_the_port_and_loses_the_data(redis_server):
    r = client(redis_server.url)
    r.set("k", "v")
    port, url, old_pid = redis_server.port, redis_server.url, redis_server.pid
    redis_server.restart()
    assert redis_server.port == port and redis_server.url == url
    assert redis_server.pid != old_pid and not psutil.pid_exists(old_pid)
    assert r.get("k") is None  # persistence is off: a restart is an empty Redis
    assert r.set("k", "again") and r.get("k") == b"again"
    r.close()


@pytest.mark.req("NODE-3")
def test_kill_is_sigkill_without_restart_and_start_comes_back(redis_server):
    pid, port = redis_server.pid, redis_server.port
    redis_server.kill()
    assert not redis_server.running and not psutil.pid_exists(pid)
    with pytest.raises(redis.ConnectionError):
        client(redis_server.url).ping()
    redis_server.kill()  # already gone: no-op
    redis_server.pause()
    redis_server.resume()
    redis_server.start()
    assert redis_server.port == port and redis_server.pid != pid
    assert client(redis_server.url).ping()


def test_pause_and_resume(redis_server):
    proc = psutil.Process(redis_server.pid)
    redis_server.pause()
    wait_until(lambda: proc.status() == psutil.STATUS_STOPPED, what="SIGSTOP")
    r = redis.Redis.from_url(redis_server.url, socket_timeout=0.3)
    with pytest.raises(redis.TimeoutError):
        r.ping()
    redis_server.resume()
    wait_until(lambda: proc.status() != psutil.STATUS_STOPPED, what="SIGCONT")
    assert client(redis_server.url).ping()


def test_stop_of_a_paused_server_still_ends_it(redis_server):
    pid, directory = redis_server.pid, redis_server.dir
    redis_server.pause()
    started = time.monotonic()
    redis_server.stop()
    assert time.monotonic() - started < 4  # SIGCONT lets it act on SIGTERM, no 5 s SIGKILL wait
    assert not psutil.pid_exists(pid) and not os.path.exists(directory)


def test_explicit_url_wins_over_the_binary(redis_server, no_docker_env):
    before = {c.pid for c in psutil.Process().children()}
    with provision(redis_server.url, env={**no_docker_env, "REDIS_URL": "redis://127.0.0.1:1/0"}) as p:
        assert p.kind == "url" and p.url == redis_server.url and p.server is None
        assert "given" in p.label
        assert client(p.url).ping()
        assert {c.pid for c in psutil.Process().children()} == before  # nothing started
    assert redis_server.running  # stopping a URL we were given stops nothing


def test_redis_url_env_wins_over_the_binary(redis_server, no_docker_env, monkeypatch):
    before = {c.pid for c in psutil.Process().children()}
    p = provision(env={**no_docker_env, "REDIS_URL": redis_server.url})
    assert p.kind == "url" and p.url == redis_server.url and "REDIS_URL" in p.label
    assert {c.pid for c in psutil.Process().children()} == before
    p.stop()
    assert redis_server.running
    # the default env is os.environ
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert provision().url == redis_server.url


def test_label_hides_a_password():
    p = provision("redis://user:s3cret@127.0.0.1:1/0", env={})
    assert "s3cret" not in p.label and "user:***@127.0.0.1:1" in p.label
    assert p.url == "redis://user:s3cret@127.0.0.1:1/0"


def test_without_url_docker_or_binary_the_error_is_one_line(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {"PATH": str(empty), "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    with pytest.raises(RedisUnavailable) as e:
        provision(env=env)
    message = str(e.value)
    assert message == UNAVAILABLE_MESSAGE and "\n" not in message
    for way in ("--redis URL", "REDIS_URL", "Docker", "redis-server"):
        assert way in message
    # the same through the process environment
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("DOCKER_HOST", env["DOCKER_HOST"])
    with pytest.raises(RedisUnavailable, match="REDIS_URL"):
        provision()
    with pytest.raises(RedisUnavailable):
        RedisServer()


def test_the_pid_is_stopped_when_the_body_raises(no_docker_env):
    with pytest.raises(ZeroDivisionError):
        with provision(env=no_docker_env) as p:
            pid, directory = p.server.pid, p.server.dir
            1 / 0
    assert not psutil.pid_exists(pid) and not os.path.exists(directory)
    with pytest.raises(ZeroDivisionError):
        with RedisServer() as server:
            pid, directory = server.pid, server.dir
            1 / 0
    assert not psutil.pid_exists(pid) and not os.path.exists(directory)


def test_a_taken_port_is_a_one_line_error_and_leaves_nothing_behind(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = {c.pid for c in psutil.Process().children()}
        server = RedisServer(port=port)
        with pytest.raises(RedisServerError) as e:
            server.start()
    assert "\n" not in str(e.value) and str(port) in str(e.value)
    assert not server.running and server.dir is None
    assert {c.pid for c in psutil.Process().children() if not gone(c.pid)} == before


class _FakeDocker:
    """A unix socket that answers like a Docker engine (or never answers, with reply=None)."""

    def __init__(self, path: str, reply: bytes | None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen()
        self.reply = reply
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.reply is not None:
                conn.recv(1024)
                conn.sendall(self.reply)
                conn.close()

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_docker_check_is_quick_and_bounded(tmp_path):
    assert not docker_available({"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    assert not docker_available({"DOCKER_HOST": "ssh://somewhere"})
    ok = _FakeDocker(str(tmp_path / "ok.sock"), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    silent = _FakeDocker(str(tmp_path / "silent.sock"), None)
    try:
        assert docker_available({"DOCKER_HOST": f"unix://{tmp_path}/ok.sock"})
        started = time.monotonic()
        assert not docker_available({"DOCKER_HOST": f"unix://{tmp_path}/silent.sock"}, timeout=0.3)
        assert time.monotonic() - started < 1.5
    finally:
        ok.close()
        silent.close()


@pytest.mark.skipif(HAS_TESTCONTAINERS, reason="testcontainers installed: would try a real container")
def test_docker_without_testcontainers_falls_back_to_the_binary(tmp_path, no_docker_env):
    fake = _FakeDocker(str(tmp_path / "d.sock"), b"HTTP/1.1 200 OK\r\n\r\nOK")
    try:
        env = {**no_docker_env, "DOCKER_HOST": f"unix://{tmp_path}/d.sock"}
        with provision(env=env) as p:
            assert p.kind == "binary" and client(p.url).ping()
        empty = tmp_path / "empty"
        empty.mkdir()
        with pytest.raises(RedisUnavailable, match="testcontainers is not installed") as e:
            provision(env={**env, "PATH": str(empty)})
        assert "\n" not in str(e.value)
    finally:
        fake.close()


def test_fakeredis_fallback_only_when_asked_and_only_without_a_binary(tmp_path, no_docker_env):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    bare = {"PATH": str(empty), "DOCKER_HOST": no_docker_env["DOCKER_HOST"]}
    with provision(env=no_docker_env, fakeredis_fallback=True) as p:  # a binary is there: it wins
        assert p.kind == "binary"
    with provision(env=bare, fakeredis_fallback=True) as p:
        assert p.kind == "fakeredis" and "in-process fakeredis" in p.label and "not a real Redis" in p.label
        c = client(p.url)
        c.set("k", "v")
        assert c.get("k") == b"v"
        # what the relays need: Lua scripts and stream commands
        assert c.eval("return redis.call('XADD', KEYS[1], 'MAXLEN', '3', '*', 'f', ARGV[1])", 1, "s", "x")
        assert c.xlen("s") == 1
        p.server.restart()  # same URL, empty dataset, like redis-server with persistence off
        c2 = client(p.url)
        assert c2.get("k") is None and c2.ping()
        url = p.url
    with pytest.raises(redis.ConnectionError):
        client(url).ping()

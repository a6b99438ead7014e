"""Provision a Redis for the tests, the CLI and the simulator.

`provision()` tries, in order:

  (a) an explicit URL: the `url` argument, else the `REDIS_URL` environment variable;
  (b) a testcontainers Redis, only where a Docker engine answers within about a second and the
      optional extra `testcontainers[redis]` is installed (`pip install 'scopehub[containers]'`);
  (c) the `redis-server` binary on PATH, started as a child on a free loopback port with
      persistence off and its own temporary directory (`RedisServer`);
  (d) only where the caller allows it (the simulator's embedded default): fakeredis served from
      this process (`scopehub.fake_redis`), labelled as such;
  (e) otherwise it raises `RedisUnavailable` with a one-line message naming those three ways.

`RedisClusterServer` starts a local Redis Cluster instead (M primaries with R replicas each, every
one a `redis-server` child in cluster mode); `provision_cluster("M[:R]")` wraps it like provision().

Everything here is synchronous so that CLI code and pytest fixtures can use it directly. A Redis
this module started is never one somebody else runs: we only ever talk to the ports we chose and
signal the PIDs we spawned.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "LocalRedis",
    "ProvisionedRedis",
    "RedisClusterServer",
    "RedisServer",
    "RedisServerError",
    "RedisUnavailable",
    "docker_available",
    "free_port",
    "parse_cluster_spec",
    "provision",
    "provision_cluster",
]

HOST = "127.0.0.1"
CONTAINER_IMAGE = "redis:7-alpine"

UNAVAILABLE_MESSAGE = (
    "no Redis available: pass --redis URL or set REDIS_URL, run a Docker engine "
    "(with the 'testcontainers[redis]' extra installed), or install redis-server on PATH"
)


class RedisUnavailable(RuntimeError):
    """No way to get a Redis: no URL given, no Docker engine, no redis-server binary."""


class RedisServerError(RuntimeError):
    """A redis-server child could not be started (one-line message with the tail of its log)."""


def free_port(host: str = HOST) -> int:
    """A TCP port that was free on `host` a moment ago (the kernel's choice, so never 6379 unless
    the kernel hands it out, which it does not from its ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# redis-server as a child process


_live: set[LocalRedis] = set()  # anything with stop(): RedisServer, RedisClusterServer
_live_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:  # a safety net for CLI runs that exit without stopping
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


_versions: dict[str, str] = {}


def _binary_version(binary: str) -> str:
    if binary not in _versions:
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        m = re.search(r"v=(\S+)", out)
        _versions[binary] = m.group(1) if m else "?"
    return _versions[binary]


def _server_pid(port: int, timeout: float = 0.25) -> int | None:
    """The process_id a Redis on HOST:port reports (inline INFO server), or None if none answers.
    Comparing it with our child's PID makes sure we never mistake someone else's Redis for ours."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"INFO server\r\n")
            data = b""
            while not re.search(rb"process_id:\d+\r\n", data):
                chunk = s.recv(4096)
                if not chunk or len(data) > 65536:
                    return None
                data += chunk
    except OSError:
        return None
    m = re.search(rb"process_id:(\d+)", data)
    return int(m.group(1)) if m else None


def _tail(path: str | None, lines: int = 5) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            text = f.read()[-4000:].decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)


class LocalRedis:
    """A Redis this process started on 127.0.0.1: its port (kept across restarts) and URL; a
    context manager that starts and stops it."""

    _port: int | None = None

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} has no port yet: call start() first")
        return f"redis://{HOST}:{self._port}/0"

    def start(self):
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RedisServer(LocalRedis):
    """A `redis-server` child on 127.0.0.1, persistence off, in its own temporary directory.

    `start()` picks a free port the first time and keeps it: `restart()` (stop, then start on the
    same port) therefore comes back at the same URL with an empty dataset, which the simulator
    uses as its "Redis restart" fault. `kill()` is SIGKILL without a restart; `pause()`/`resume()`
    are SIGSTOP/SIGCONT. Every control method is a no-op when the process is already gone.
    """

    def __init__(self, *, binary: str | None = None, port: int | None = None,
                 startup_timeout: float = 10.0, stop_timeout: float = 5.0,
                 extra_args: tuple[str, ...] = ()) -> None:
        resolved = binary or shutil.which("redis-server")
        if not resolved:
            raise RedisUnavailable(UNAVAILABLE_MESSAGE)
        self.binary = resolved
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = tuple(extra_args)  # more redis-server options, e.g. cluster mode
        self._port = port
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None

    # ---- properties

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child has not exited (also while it is paused)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def dir(self) -> str | None:
        """The temporary working directory of the current (or last killed) child."""
        return self._dir

    @property
    def log_path(self) -> str | None:
        return os.path.join(self._dir, "redis.log") if self._dir else None

    @property
    def version(self) -> str:
        return _binary_version(self.binary)

    @property
    def label(self) -> str:
        return f"redis-server {self.version} on {HOST}:{self._port} (pid {self.pid})"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {HOST}:{self._port} pid={self.pid} {state}>"

    # ---- lifecycle

    def start(self) -> RedisServer:
        """Start the child and wait (bounded) until it answers PING. No-op when running."""
        if self.running:
            return self
        self._cleanup()  # a previous child that was killed: reap it, drop its directory
        auto = self._port is None  # only a port we picked ourselves may be re-picked
        for attempt in range(3 if auto else 1):
            if auto:
                self._port = free_port()
            try:
                self._spawn()
                return self
            except RedisServerError as e:
                # a port picked by free_port() can be taken by someone else before we bind it
                if not (auto and attempt < 2 and "in use" in str(e)):
                    if auto:
                        self._port = None
                    raise
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="scopehub-redis-")
        log = os.path.join(self._dir, "redis.log")
        argv = [
            self.binary,
            "--port", str(self._port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--daemonize", "no",
            "--logfile", log,
            *self.extra_args,
        ]
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
            )
        except OSError as e:
            self._cleanup()
            raise RedisServerError(f"cannot run {self.binary}: {e}") from None
        with _live_lock:
            _live.add(self)
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.005
        while True:
            if self._proc.poll() is not None:
                tail = _tail(log)
                code = self._proc.returncode
                self._cleanup()
                raise RedisServerError(
                    f"redis-server on {HOST}:{self._port} exited with code {code} before "
                    f"answering PING: {tail or 'no log output'}")
            answered = _server_pid(self._port)
            if answered == self._proc.pid:
                return
            if answered is not None:  # someone else's Redis took the port before ours bound it
                self._cleanup()
                raise RedisServerError(f"port {HOST}:{self._port} is in use by another Redis "
                                       f"(pid {answered})")
            if time.monotonic() >= deadline:
                tail = _tail(log)
                self._cleanup()
                raise RedisServerError(
                    f"redis-server on {HOST}:{self._port} did not answer PING within "
                    f"{self.startup_timeout:g}s: {tail or 'no log output'}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after `stop_timeout`; always reaped; temp dir removed."""
        self._cleanup()

    def restart(self) -> RedisServer:
        """Stop, then start on the same port (the dataset is lost: persistence is off)."""
        port = self._port
        self.stop()
        self._port = port
        return self.start()

    def kill(self) -> None:
        """SIGKILL the child and reap it; no restart (the temp dir stays until stop/start)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing is answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:  # poll() first: never signal a reaped PID
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def _cleanup(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
                        proc.send_signal(signal.SIGCONT)  # a paused child must run to exit
                    try:
                        proc.wait(timeout=self.stop_timeout)
                    except subprocess.TimeoutExpired:
                        with contextlib.suppress(ProcessLookupError):
                            proc.send_signal(signal.SIGKILL)
                        proc.wait()
            finally:
                if proc.poll() is None:  # interrupted above (e.g. KeyboardInterrupt)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
        with _live_lock:
            _live.discard(self)
        directory, self._dir = self._dir, None
        if directory:
            shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# a local Redis Cluster: redis-server children in cluster mode

CLUSTER_SLOTS = 16384
CLUSTER_SPEC_HELP = "M[:R]: M primaries (at least 3) with R replicas each, e.g. 3 or 3:1"


def parse_cluster_spec(text: str) -> tuple[int, int]:
    """"M[:R]" -> (primaries, replicas per primary). ValueError (one line) on bad input."""
    m = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*)?", text or "")
    if not m:
        raise ValueError(f"bad Redis Cluster size {text!r}: expected {CLUSTER_SPEC_HELP}")
    primaries, replicas = int(m.group(1)), int(m.group(2) or 0)
    if primaries < 3:
        raise ValueError(f"bad Redis Cluster size {text!r}: a Redis Cluster needs at least 3 primaries")
    if primaries * (1 + replicas) > 64:
        raise ValueError(f"bad Redis Cluster size {text!r}: at most 64 redis-server processes")
    return primaries, replicas


def _node_flags(line: str) -> set[str]:
    parts = line.split()
    return set(parts[2].split(",")) if len(parts) > 2 else set()


class RedisClusterServer(LocalRedis):
    """A Redis Cluster of `primaries` x (1 + `replicas`) `redis-server` children on free loopback
    ports, each in cluster mode in its own temporary directory, persistence off.

    `start()` starts them, assigns the 16384 slots evenly to the primaries (CLUSTER ADDSLOTSRANGE),
    joins them (CLUSTER MEET), attaches R replicas to each primary (CLUSTER REPLICATE) and waits
    (bounded by `startup_timeout`) until every node reports cluster_state:ok with all slots
    assigned, knows every other node in its role, and every replica's link to its primary is up.
    A failure part-way stops every child already started. `stop()` stops every child by PID.

    `url` is a seed (the first primary), `urls` every primary, `node_urls` every node;
    `primaries` and `replicas` are the RedisServer handles (pid, kill, pause, resume) for faults.
    """

    def __init__(self, primaries: int = 3, replicas: int = 0, *, binary: str | None = None,
                 node_timeout_ms: int = 2000, startup_timeout: float = 30.0,
                 stop_timeout: float = 5.0) -> None:
        if primaries < 3 or replicas < 0:
            raise ValueError("a Redis Cluster needs at least 3 primaries and 0 or more replicas each")
        resolved = binary or shutil.which("redis-server")
        if not resolved:
            raise RedisUnavailable(UNAVAILABLE_MESSAGE)
        self.binary = resolved
        self.primary_count, self.replica_count = primaries, replicas
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.primaries: list[RedisServer] = []
        self.replicas: list[RedisServer] = []  # replicas[i * R + j] replicates primaries[i]
        self._bus: dict[int, int] = {}  # node port -> its cluster bus port

    # ---- properties

    @property
    def nodes(self) -> list[RedisServer]:
        return self.primaries + self.replicas

    @property
    def pids(self) -> list[int]:
        return [n.pid for n in self.nodes if n.pid is not None]

    @property
    def running(self) -> bool:
        return bool(self.nodes) and all(n.running for n in self.nodes)

    @property
    def url(self) -> str:
        """A seed URL: the first primary (no database number: a cluster has only database 0)."""
        if not self.primaries:
            raise RuntimeError("RedisClusterServer has no nodes yet: call start() first")
        return f"redis://{HOST}:{self.primaries[0].port}"

    @property
    def port(self) -> int | None:
        return self.primaries[0].port if self.primaries else None

    @property
    def urls(self) -> list[str]:
        return [f"redis://{HOST}:{n.port}" for n in self.primaries]

    @property
    def node_urls(self) -> list[str]:
        return [f"redis://{HOST}:{n.port}" for n in self.nodes]

    @property
    def version(self) -> str:
        return _binary_version(self.binary)

    @property
    def label(self) -> str:
        shape = f"{self.primary_count} primaries"
        if self.replica_count:
            shape += f" with {self.replica_count} replica{'s' if self.replica_count > 1 else ''} each"
        ports = ",".join(str(n.port) for n in self.nodes)
        return f"Redis Cluster of {shape} (redis-server {self.version}) on {HOST}:{ports}"

    def __repr__(self) -> str:
        return f"<RedisClusterServer {self.primary_count}:{self.replica_count} pids={self.pids}>"

    # ---- lifecycle

    def start(self) -> RedisClusterServer:
        if self.nodes:
            return self
        with _live_lock:
            _live.add(self)
        try:
            taken: set[int] = set()
            for i in range(self.primary_count * (1 + self.replica_count)):
                node = self._start_node(taken)
                (self.primaries if i < self.primary_count else self.replicas).append(node)
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, taken: set[int]) -> RedisServer:
        """One redis-server in cluster mode; its port and cluster bus port are free ports we pick
        (the bus would otherwise be port + 10000, which can be out of range or taken)."""
        for attempt in range(3):
            port, bus = self._pick(taken), self._pick(taken)
            node = RedisServer(binary=self.binary, port=port, startup_timeout=10.0,
                               stop_timeout=self.stop_timeout, extra_args=(
                                   "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                   "--cluster-node-timeout", str(self.node_timeout_ms),
                                   "--cluster-port", str(bus),
                                   # a replica syncs at once, not after the default 5 s delay
                                   "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"))
            try:
                node.start()
                self._bus[port] = bus
                return node
            except RedisServerError as e:
                if attempt == 2 or "in use" not in str(e):
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _pick(taken: set[int]) -> int:
        for _ in range(100):
            port = free_port()
            if port not in taken and port + 10000 not in taken:
                taken.add(port)
                return port
        raise RedisServerError("no free loopback port for a Redis Cluster node")

    def _client(self, node: RedisServer):
        import redis  # a dependency of the relays; imported here so the module loads without it
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # no retries of its own: _wait polls, and a dead node must fail at once
        return redis.Redis(host=HOST, port=node.port, decode_responses=True, socket_timeout=2,
                           socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))

    def _form(self) -> None:
        import redis

        deadline = time.monotonic() + self.startup_timeout
        clients = {id(n): self._client(n) for n in self.nodes}
        try:
            ids = {}
            for n in self.nodes:
                ids[id(n)] = clients[id(n)].execute_command("CLUSTER", "MYID")
            m = self.primary_count
            for i, n in enumerate(self.primaries):  # even slot ranges, like redis-cli --cluster create
                c = clients[id(n)]
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * CLUSTER_SLOTS // m,
                                  (i + 1) * CLUSTER_SLOTS // m - 1)
                c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            for a in self.nodes:  # every pair meets directly: faster than waiting for gossip
                for b in self.nodes:
                    if a is not b:
                        clients[id(a)].execute_command("CLUSTER", "MEET", HOST, b.port, self._bus[b.port])
            # a replica can only REPLICATE a primary it knows of
            self._wait(deadline, clients, lambda: self._unknown(clients), "every node to know every other")
            r = self.replica_count
            for k, n in enumerate(self.replicas):
                clients[id(n)].execute_command("CLUSTER", "REPLICATE", ids[id(self.primaries[k // r])])
            self._wait(deadline, clients, lambda: self._not_ready(clients), "the cluster to be ready")
        except redis.RedisError as e:
            raise RedisServerError(f"cannot form the Redis Cluster: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        finally:
            for c in clients.values():
                c.close()

    def _wait(self, deadline: float, clients, problem: Callable[[], str | None], what: str) -> None:
        """Poll `problem()` (None: ready) every 50 ms until `deadline`."""
        import redis

        last = "no answer yet"
        while True:
            for n in self.nodes:
                if not n.running:
                    raise RedisServerError(f"Redis Cluster node {HOST}:{n.port} exited while "
                                           f"forming the cluster: {_tail(n.log_path) or 'no log output'}")
            try:
                last = problem()
            except redis.RedisError as e:
                last = str(e).splitlines()[0] if str(e) else type(e).__name__
            if last is None:
                return
            if time.monotonic() >= deadline:
                raise RedisServerError(f"Redis Cluster not ready within {self.startup_timeout:g}s "
                                       f"waiting for {what}: {last}")
            time.sleep(0.05)

    def _unknown(self, clients) -> str | None:
        total = len(self.nodes)
        for n in self.nodes:
            lines = clients[id(n)].execute_command("CLUSTER", "NODES").strip().splitlines()
            pending = [ln for ln in lines if _node_flags(ln) & {"handshake", "noaddr"}]
            if len(lines) != total or pending:
                return f"{HOST}:{n.port} knows {len(lines) - len(pending)} of {total} nodes"
        return None

    def _not_ready(self, clients) -> str | None:
        total, m = len(self.nodes), self.primary_count
        for n in self.nodes:
            c = clients[id(n)]
            info = dict(ln.split(":", 1) for ln in c.execute_command("CLUSTER", "INFO").split()
                        if ":" in ln)
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(CLUSTER_SLOTS):
                return (f"{HOST}:{n.port} says cluster_state:{info.get('cluster_state')} with "
                        f"{info.get('cluster_slots_ok')} of {CLUSTER_SLOTS} slots ok")
            flags = [_node_flags(ln) for ln in c.execute_command("CLUSTER", "NODES").strip().splitlines()]
            primaries = sum("master" in f for f in flags)
            if len(flags) != total or primaries != m or any(f & {"fail", "fail?", "handshake", "noaddr"}
                                                             for f in flags):
                return f"{HOST}:{n.port} sees {primaries} primaries among {len(flags)} nodes, not yet {m} of {total}"
        for n in self.replicas:
            repl = clients[id(n)].info("replication")
            if repl.get("role") != "slave" or repl.get("master_link_status") != "up":
                return f"replica {HOST}:{n.port} has no link to its primary yet"
        return None

    def stop(self) -> None:
        """Stop every child by PID (SIGTERM to all, then each is reaped; SIGKILL after
        stop_timeout); their temporary directories are removed. Idempotent."""
        nodes, self.primaries, self.replicas = self.nodes, [], []
        for n in nodes:  # signal all first, so they shut down together
            if n.running:
                n._signal(signal.SIGTERM)
                n._signal(signal.SIGCONT)
        try:
            for n in nodes:
                n.stop()
        finally:
            with _live_lock:
                _live.discard(self)


# --------------------------------------------------------------------------------------------
# Docker / testcontainers


def docker_available(env: Mapping[str, str] = os.environ, timeout: float = 1.0) -> bool:
    """Whether a Docker engine answers at DOCKER_HOST (or /var/run/docker.sock) within `timeout`."""
    host = (env.get("DOCKER_HOST") or "").strip() or "unix:///var/run/docker.sock"
    try:
        if host.startswith("unix://"):
            path = host[len("unix://"):]
            if not os.path.exists(path):
                return False
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(path)
        elif host.startswith(("tcp://", "http://", "https://")):
            parts = urlsplit(host if "://" in host else f"tcp://{host}")
            sock = socket.create_connection((parts.hostname, parts.port or 2375), timeout=timeout)
            if host.startswith("https://") or env.get("DOCKER_TLS_VERIFY"):
                sock.close()  # TLS: a TCP connect is as far as a quick check goes
                return True
        else:
            return False
        with sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status = sock.recv(64).split(b"\r\n", 1)[0].split()
            return len(status) >= 2 and status[0].startswith(b"HTTP/1.") and status[1] == b"200"
    except (OSError, ValueError):
        return False


def _start_container() -> ProvisionedRedis | None:
    try:
        from testcontainers.redis import RedisContainer  # optional extra
    except ImportError:
        return None
    container = RedisContainer(CONTAINER_IMAGE)
    container.start()
    try:
        host = container.get_container_host_ip()
        port = int(container.get_exposed_port(6379))
    except BaseException:
        container.stop()
        raise
    return ProvisionedRedis(
        url=f"redis://{host}:{port}/0", kind="container",
        label=f"testcontainers {CONTAINER_IMAGE} on {host}:{port}", stopper=container.stop,
    )


# --------------------------------------------------------------------------------------------
# provision()


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class ProvisionedRedis:
    """A Redis to use: `url`, `kind` ("url", "container", "binary", "fakeredis", or for a Redis
    Cluster "cluster" (one we started) or "cluster-url" (an existing one)), a short `label`, and
    `server` (what can be restarted: the RedisServer or FakeRedisServer we started; the
    RedisClusterServer for a cluster we started). `is_cluster`: `url` is a seed node of a Redis
    Cluster, `urls` its known nodes. `stop()` stops what we started (nothing for an explicit URL)
    and is idempotent."""

    def __init__(self, *, url: str, kind: str, label: str, server: LocalRedis | None = None,
                 stopper: Callable[[], object] | None = None, is_cluster: bool = False,
                 urls: tuple[str, ...] = ()) -> None:
        self.url = url
        self.kind = kind
        self.label = label
        self.server = server
        self.is_cluster = is_cluster
        self.urls = tuple(urls) or (url,)
        self._stopper = stopper

    def stop(self) -> None:
        stopper, self._stopper = self._stopper, None
        if stopper is not None:
            stopper()

    def __enter__(self) -> ProvisionedRedis:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ProvisionedRedis {self.kind}: {self.label}>"


def provision(url: str | None = None, *, env: Mapping[str, str] = os.environ,
              fakeredis_fallback: bool = False) -> ProvisionedRedis:
    """A Redis: `url`, else $REDIS_URL, else a testcontainers Redis where a Docker engine answers,
    else a `redis-server` from env's PATH, else (when `fakeredis_fallback`) in-process fakeredis;
    else RedisUnavailable (one line)."""
    explicit = url or (env.get("REDIS_URL") or "").strip() or None
    if explicit:
        source = "given" if url else "from REDIS_URL"
        return ProvisionedRedis(url=explicit, kind="url", label=f"{_redact(explicit)} ({source})")

    note = ""
    if docker_available(env):
        try:
            found = _start_container()
        except Exception as e:  # engine answers but the container does not come up
            note = f"; a Docker engine answers but the Redis container failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            found = None
        else:
            if found is None:
                note = "; a Docker engine answers but testcontainers is not installed (pip install 'scopehub[containers]')"
        if found is not None:
            return found

    binary = shutil.which("redis-server", path=env.get("PATH", os.defpath))
    if binary:
        server = RedisServer(binary=binary)
        server.start()
        return ProvisionedRedis(url=server.url, kind="binary", label=server.label, server=server,
                                stopper=server.stop)
    if fakeredis_fallback:
        from .fake_redis import FakeRedisServer

        fake = FakeRedisServer().start()
        return ProvisionedRedis(url=fake.url, kind="fakeredis", label=fake.label, server=fake, stopper=fake.stop)
    raise RedisUnavailable(UNAVAILABLE_MESSAGE + note)


def provision_cluster(size: str | None = None, *, urls: tuple[str, ...] = ()) -> ProvisionedRedis:
    """A Redis Cluster: a local one of `size` ("M[:R]", see RedisClusterServer), or the existing
    one at `urls` (seed URLs; nothing is started or stopped). ValueError for a bad size;
    RedisUnavailable or RedisServerError (one line) when it cannot start."""
    if urls:
        shown = ", ".join(_redact(u) for u in urls)
        return ProvisionedRedis(url=urls[0], kind="cluster-url", label=f"Redis Cluster at {shown} (given)",
                                is_cluster=True, urls=tuple(urls))
    if size is None:
        raise ValueError("a Redis Cluster needs a size M[:R] or the URLs of an existing one")
    primaries, replicas = parse_cluster_spec(size)
    server = RedisClusterServer(primaries, replicas).start()
    return ProvisionedRedis(url=server.url, kind="cluster", label=server.label, server=server,
                            stopper=server.stop, is_cluster=True, urls=tuple(server.urls))

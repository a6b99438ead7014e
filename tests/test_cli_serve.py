"""`scopehub serve` run as a real subprocess: help, one-line errors for bad flags, a port
already in use, a node that answers over HTTP and WebSocket, and a clean stop on SIGTERM /
SIGINT. Every process started here is stopped by its PID in teardown, also when a test fails."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import jwt
import pytest

from conformance.client import AuthRefused, WsClient
from conformance import world as fixture_world

ROOT = Path(__file__).resolve().parents[1]
SCOPEHUB = Path(sys.executable).parent / "scopehub"
START_TIMEOUT = 20.0  # interpreter start plus imports, on a loaded machine
WAIT = 5.0
LISTENING = re.compile(r"scopehub: listening on (http://127\.0\.0\.1:(\d+))")


def run_cli(*args: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess:
    """Run scopehub to completion; subprocess.run kills it by PID if it outlives the timeout."""
    return subprocess.run([str(SCOPEHUB), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def assert_one_line_error(result: subprocess.CompletedProcess, *, code: int | None = 2) -> str:
    """Exit code `code` (any non-zero if None), nothing on stdout, exactly one line on stderr,
    no traceback. Returns that line."""
    if code is None:
        assert result.returncode != 0, result
    else:
        assert result.returncode == code, result
    assert result.stdout == "", result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stderr.endswith("\n"), result.stderr
    assert lines[0].startswith("scopehub"), lines[0]
    return lines[0]


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    base: str
    port: int
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    drains: list[asyncio.Task] = field(default_factory=list)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(asyncio.gather(*self.drains), timeout)
        return code


async def _drain(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(65536):
        into.extend(chunk)


@pytest.fixture
async def serve():
    """serve(*flags) -> Served: `scopehub serve --port 0 *flags`, once it printed its address."""
    started: list[Served] = []

    async def start(*flags: str, nofile: int | None = None) -> Served:
        """nofile: the node's open-file limit (RLIMIT_NOFILE), set in the child before it runs."""
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None
        proc = await asyncio.create_subprocess_exec(
            str(SCOPEHUB), "serve", "--host", "127.0.0.1", "--port", "0", *flags,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, preexec_fn=limit)
        served = Served(proc, "", 0)
        started.append(served)
        served.drains.append(asyncio.create_task(_drain(proc.stderr, served.stderr)))
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        except asyncio.TimeoutError:
            raise AssertionError(f"no listening line; stderr: {served.stderr.decode()!r}") from None
        m = LISTENING.fullmatch(line.decode().rstrip("\n"))
        assert m, (line, served.stderr.decode())
        served.base, served.port = m.group(1), int(m.group(2))
        served.drains.append(asyncio.create_task(_drain(proc.stdout, served.stdout)))
        return served

    yield start
    for served in started:
        if served.proc.returncode is None:
            served.proc.kill()  # SIGKILL to its PID
        try:
            await asyncio.wait_for(served.proc.wait(), 10)
        finally:
            for t in served.drains:
                t.cancel()
            await asyncio.gather(*served.drains, return_exceptions=True)


async def get_json(session: aiohttp.ClientSession, url: str, headers: dict | None = None) -> tuple[int, object]:
    async with session.get(url, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=WAIT)) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


async def ws_connect(session, base: str, workspace: str, token: str | None = None, **kw) -> WsClient:
    return await asyncio.wait_for(WsClient.connect(session, base, workspace_id=workspace, token=token, **kw), WAIT)


# --------------------------------------------------------------------------------------------
# help and flag errors
# --------------------------------------------------------------------------------------------

NODE_FLAGS = ["--host", "--port", "--node-id", "--fixtures", "--log-level", "--control-token", "--jwt-secret",
              "--allowed-origins", "--trusted-proxies", "--metrics-token", "--auth-timeout", "--ping-interval",
              "--pong-timeout", "--send-queue"]


def test_serve_help_explains_every_flag():
    result = run_cli("serve", "--help")
    assert result.returncode == 0, result
    assert result.stderr == ""
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for flag in NODE_FLAGS:
        assert flag in text, flag
    for phrase in ["0 picks a free one", "X-Forwarded-Host", "auth frame", "transport pings", "default 10",
                   "default 54", "default 60", "control API", "CIDRs"]:
        assert phrase in text, phrase


def test_top_level_help_lists_serve():
    result = run_cli("--help")
    assert result.returncode == 0, result
    assert re.search(r"^\s+serve\s+run one reference node", result.stdout, re.M), result.stdout


@pytest.mark.parametrize("flags,mentions", [
    (["--port", "abc"], "--port"),
    (["--port", "70000"], "--port"),
    (["--port", "-1"], "--port"),
    (["--port", ""], "--port"),
    (["--port", "80.5"], "--port"),
    (["--port"], "--port"),
    (["--trusted-proxies", "notacidr"], "--trusted-proxies"),
    (["--trusted-proxies", "10.0.0.0/33"], "--trusted-proxies"),
    (["--trusted-proxies", "10.0.0.0/8,bad"], "--trusted-proxies"),
    (["--auth-timeout", "-1"], "--auth-timeout"),
    (["--auth-timeout", "0"], "--auth-timeout"),
    (["--auth-timeout", "abc"], "--auth-timeout"),
    (["--auth-timeout", "nan"], "--auth-timeout"),
    (["--auth-timeout", "inf"], "--auth-timeout"),
    (["--ping-interval", "0"], "--ping-interval"),
    (["--pong-timeout", "-5"], "--pong-timeout"),
    (["--send-queue", "0"], "--send-queue"),
    (["--send-queue", "1.5"], "--send-queue"),
    (["--log-level", "loud"], "--log-level"),
    (["--no-such-flag"], "--no-such-flag"),
])
def test_bad_flag_gives_one_line_and_exit_2(flags, mentions):
    line = assert_one_line_error(run_cli("serve", *flags))
    assert "error" in line and mentions in line, line


def test_missing_fixtures_file_gives_one_line_and_exit_2(tmp_path):
    line = assert_one_line_error(run_cli("serve", "--fixtures", str(tmp_path / "absent.json")))
    assert "cannot read fixtures" in line and "absent.json" in line, line


@pytest.mark.parametrize("content,phrase", [
    ("{not json", "fixtures are not JSON"),
    ('{"workspaces": []}', "bad fixtures"),
    ('{"workspaces": {"w": {"members": [1]}}}', "bad fixtures"),
], ids=["not_json", "workspaces_list", "member_number"])
def test_bad_fixtures_file_gives_one_line_and_exit_2(tmp_path, content, phrase):
    path = tmp_path / "world.json"
    path.write_text(content)
    line = assert_one_line_error(run_cli("serve", "--fixtures", str(path)))
    assert phrase in line, line


def test_port_in_use_gives_one_line_and_fails():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = assert_one_line_error(run_cli("serve", "--host", "127.0.0.1", "--port", str(port)), code=None)
    assert f"port {port}" in line and "already in use" in line, line


async def test_port_of_a_running_node_gives_one_line_and_fails(serve):
    first = await serve()
    result = await asyncio.to_thread(run_cli, "serve", "--host", "127.0.0.1", "--port", str(first.port))
    line = assert_one_line_error(result, code=None)
    assert "already in use" in line, line
    assert first.proc.returncode is None  # the first node is unharmed


def test_address_not_on_this_host_gives_one_line_and_fails():
    line = assert_one_line_error(run_cli("serve", "--host", "192.0.2.1", "--port", "0"), code=None)
    assert "cannot listen on 192.0.2.1:0" in line, line


# --------------------------------------------------------------------------------------------
# a running node
# --------------------------------------------------------------------------------------------

@pytest.mark.req("HS-3", "IN-2")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_started_node_answers_and_stops_on_signal(serve, session, sig):
    control = secrets.token_hex(8)
    world = fixture_world.TestWorld()
    node = await serve("--control-token", control)
    auth = {"Authorization": f"Bearer {control}"}
    status, info = await get_json(session, node.base + "/_control/info", auth)
    assert status == 200 and info["node_id"] == "node-1", info
    async with session.put(node.base + "/_control/fixtures", json=world.fixtures(), headers=auth,
                           timeout=aiohttp.ClientTimeout(total=WAIT)) as r:
        assert r.status == 200
    async with session.post(node.base + "/_control/token", json={"user": world.alice}, headers=auth,
                            timeout=aiohttp.ClientTimeout(total=WAIT)) as r:
        token = (await r.json())["token"]
    client = await ws_connect(session, node.base, world.ws_a, token)
    await client.send({"type": "ping"})
    assert await client.wait_for(lambda f: f == {"type": "pong"}, WAIT) == {"type": "pong"}

    assert await node.stop(sig) == 0  # stops although a client is still connected
    await client.wait_closed(WAIT)
    assert "scopehub: stopped" in node.stderr.decode()
    assert "Traceback" not in node.stderr.decode()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get_json(session, node.base + "/_control/info", auth)


async def test_flags_reach_the_node(serve, session):
    control = secrets.token_hex(8)
    node = await serve("--control-token", control, "--node-id", "edge-7", "--auth-timeout", "0.5",
                       "--ping-interval", "3", "--pong-timeout", "4.5", "--send-queue", "9",
                       "--allowed-origins", "https://a.example, https://b.example",
                       "--trusted-proxies", "10.0.0.0/8,127.0.0.1", "--header-timeout", "7",
                       "--max-connections", "77", "--max-subscriptions", "5", "--max-bytes", "123456")
    status, info = await get_json(session, node.base + "/_control/info", {"Authorization": f"Bearer {control}"})
    assert status == 200, info
    assert info["node_id"] == "edge-7"
    assert info["timeouts"] == {"auth_s": 0.5, "ping_s": 3.0, "pong_s": 4.5, "header_s": 7.0}
    assert info["send_queue"] == 9
    assert (info["max_connections"], info["max_subscriptions"]) == (77, 5)
    assert info["retention"]["max_bytes"] == 123456
    assert info["origins"] == {"allowed": ["https://a.example", "https://b.example"],
                               "trusted_proxies": ["10.0.0.0/8", "127.0.0.1/32"]}
    # --auth-timeout is what the node enforces: a silent client is refused within it
    silent = await ws_connect(session, node.base, "any-workspace")
    await silent.wait_closed(WAIT)
    assert silent.frames == [{"error": "auth timeout or read error"}]


@pytest.mark.req("HS-4", "HS-5")
async def test_fixtures_file_and_jwt_secret_are_used(serve, session, tmp_path):
    world = fixture_world.TestWorld()
    path = tmp_path / "world.json"
    path.write_text(json.dumps(world.fixtures()))
    secret = "cli-test-secret-" + secrets.token_hex(16)
    node = await serve("--fixtures", str(path), "--jwt-secret", secret, "--allowed-origins", "https://app.example")

    # no control token: the control API is not there
    status, _ = await get_json(session, node.base + "/_control/info", {"Authorization": "Bearer x"})
    assert status == 404

    client = await ws_connect(session, node.base, world.ws_a, world.pat_alice, origin="https://app.example")
    await client.close()
    good = jwt.encode({"sub": world.bob}, secret, algorithm="HS256")
    client = await ws_connect(session, node.base, world.ws_a, good)
    await client.close()
    from reference.config import DEV_JWT_SECRET
    with pytest.raises(AuthRefused, match="^invalid token$"):
        await ws_connect(session, node.base, world.ws_a, jwt.encode({"sub": world.bob}, DEV_JWT_SECRET))
    with pytest.raises(AuthRefused, match="^account disabled$"):
        await ws_connect(session, node.base, world.ws_a, world.pat_dave)
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await ws_connect(session, node.base, world.ws_a, world.pat_alice, origin="https://evil.example")
    assert e.value.status == 403
    assert await node.stop() == 0


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.heavy
@pytest.mark.req("HL-1", "SUB-3")
async def test_memory_returns_after_5000_hostile_subscribes(serve, session):
    """Issue 16, row 4: 5,000 subscribes to distinct 60 KB made-up scope types once kept 294 MB.
    Now nothing a client names is kept: the node's memory is back within 10 MB once it is gone."""
    control = secrets.token_hex(8)
    node = await serve("--control-token", control)
    auth = {"Authorization": f"Bearer {control}"}
    world = fixture_world.TestWorld()
    async with session.put(node.base + "/_control/fixtures", json=world.fixtures(), headers=auth) as r:
        assert r.status == 200
    async with session.post(node.base + "/_control/token", json={"user": world.alice}, headers=auth) as r:
        token = (await r.json())["token"]

    async def hostile(n: int, tag: str) -> None:
        client = await WsClient.connect(session, node.base, workspace_id=world.ws_a, token=token)
        try:
            pad = "x" * 60_000
            for batch in range(0, n, 100):
                for i in range(batch, min(batch + 100, n)):
                    await client.send({"type": "subscribe", "payload": {"scope": f"{tag}{i}-{pad}", "id": "x"}})
                start = len(client.frames)
                await client.send({"type": "ping"})
                await client.wait_for(lambda f: f == {"type": "pong"}, 30, start=start)
                client.frames.clear()  # the echoed answers are the client's memory, not the node's
        finally:
            await client.close()

    await hostile(500, "warm-")  # the allocator's arenas and the interpreter's caches settle first
    before = _rss_kib(node.proc.pid)
    await hostile(5000, "kind-")
    async with session.get(node.base + "/health/realtime") as r:
        doc = await r.json()
    after = _rss_kib(node.proc.pid)
    assert doc["subscribe_denied_total"] == {"other": 5500}
    print(f"RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after")
    assert after - before < 10 * 1024, f"RSS grew by {(after - before) / 1024:.1f} MiB"


async def _slow(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health/realtime HTTP/1.1\r\nHost: x\r\n")  # never the blank line
    await writer.drain()
    return reader, writer


@pytest.mark.heavy
async def test_at_its_open_file_limit_a_node_stays_reachable_and_its_log_readable(serve):
    """Issue 16, row 3: with 1,024 descriptors, 1,050 sockets that never finish their headers once
    locked health and clients out and wrote 375 MB of accept tracebacks in 100 s. Now the cap
    (the limit minus 128) keeps descriptors free, and the oldest header-less socket makes room."""
    node = await serve("--header-timeout", "60", nofile=256)  # cap: 128
    opened = []
    try:
        for _ in range(300):
            opened.append(await _slow(node.port))
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(b"GET /health/realtime HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), WAIT)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        doc = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert doc["header_timeouts_total"] >= 300 - 128  # each newcomer over the cap closed the oldest
    finally:
        for _, w in opened:
            w.close()
    assert await node.stop() == 0
    log = node.stderr.decode()
    assert "Traceback" not in log and "accept" not in log
    assert len(log.splitlines()) <= 5, log[-2000:]

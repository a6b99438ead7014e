"""scopehub.processes.NodeProcess: start on the ready line, signals, terminate, restart, failures.
The children are tiny Python programs; nothing waits with a fixed sleep where a condition can be
polled with a bound."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time

import psutil
import pytest

from scopehub.processes import NodeProcess, NodeStartError
from scopehub.redis_provision import free_port

# Serves "ok\n" to every connection on 127.0.0.1:<argv[1]> (0: any port) after its ready line.
SERVER = textwrap.dedent(r"""
    import socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen()
    print("warming up", flush=True)
    print("node: listening on http://127.0.0.1:%d" % s.getsockname()[1], flush=True)
    while True:
        c, _ = s.accept()
        c.sendall(b"ok\n")
        c.close()
""")


def py(code: str, *args: object) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def poll(cond, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def fetch(url: str, timeout: float = 2.0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    try:
        return await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()


@pytest.fixture
async def nodes():
    """nodes(argv, name, **kw) -> NodeProcess; every one is terminated in teardown."""
    made: list[NodeProcess] = []

    def make(argv, name="n1", **kw) -> NodeProcess:
        node = NodeProcess(argv, name, **kw)
        made.append(node)
        return node

    yield make
    for node in made:
        await node.terminate(timeout=2)


async def test_start_returns_the_url_and_output_goes_to_the_log(nodes, tmp_path):
    port = free_port()
    log = tmp_path / "logs" / "n1.log"
    node = nodes(py(SERVER, port), log_path=str(log))
    url = await node.start(timeout=10)
    assert url == node.base_url == f"http://127.0.0.1:{port}"
    assert node.running and node.pid and psutil.Process(node.pid).is_running()
    assert await node.start() == url  # already running: same URL, same process
    assert await fetch(url) == b"ok\n"
    pid = node.pid
    assert await node.terminate() == -15
    assert not node.running and gone(pid)
    assert node.base_url == url
    text = log.read_text()
    assert "warming up" in text and f"listening on {url}" in text


async def test_kill_and_everything_is_safe_once_gone(nodes):
    node = nodes(py(SERVER, 0))
    for call in (node.kill, node.pause, node.resume):  # before start: no-ops
        call()
    assert await node.terminate() is None and await node.wait() is None and node.pid is None
    await node.start(timeout=10)
    pid = node.pid
    node.kill()
    assert await node.wait(timeout=5) == -9
    assert not node.running and gone(pid)
    node.kill()
    node.pause()
    node.resume()
    assert await node.terminate() == -9


async def test_pause_stops_answering_and_resume_continues(nodes):
    node = nodes(py(SERVER, 0))
    url = await node.start(timeout=10)
    proc = psutil.Process(node.pid)
    node.pause()
    await poll(lambda: proc.status() == psutil.STATUS_STOPPED, what="SIGSTOP")
    with pytest.raises(TimeoutError):
        await fetch(url, timeout=0.3)  # the kernel still accepts; the node answers nothing
    node.resume()
    await poll(lambda: proc.status() != psutil.STATUS_STOPPED, what="SIGCONT")
    assert await fetch(url) == b"ok\n"
    node.pause()
    started = time.monotonic()
    assert await node.terminate(timeout=5) == -15  # a paused node still terminates promptly
    assert time.monotonic() - started < 3


async def test_terminate_escalates_to_sigkill(nodes):
    node = nodes(py("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("listening on http://127.0.0.1:9", flush=True)
        while True:
            time.sleep(1)
    """))
    await node.start(timeout=10)
    started = time.monotonic()
    assert await node.terminate(timeout=0.5) == -9
    assert time.monotonic() - started < 3 and not node.running


async def test_a_node_that_exits_early_fails_fast_with_its_output(nodes):
    node = nodes(py("""
        import sys
        print("loading config", flush=True)
        print("boom: bad --jwt-secret", file=sys.stderr, flush=True)
        sys.exit(3)
    """), name="bad-node")
    started = time.monotonic()
    with pytest.raises(NodeStartError) as e:
        await node.start(timeout=20)
    assert time.monotonic() - started < 5
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("bad-node: exited with code 3")
    assert "loading config" in message and "boom: bad --jwt-secret" in message
    assert not node.running and node.base_url is None


async def test_a_node_that_never_gets_ready_is_killed_after_the_timeout(nodes):
    node = nodes(py("""
        import time
        print("starting, slowly", flush=True)
        time.sleep(60)
    """), name="slow")
    started = time.monotonic()
    with pytest.raises(NodeStartError) as e:
        await node.start(timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 4
    message = str(e.value)
    assert "\n" not in message and "within 0.5s" in message and "starting, slowly" in message
    assert not node.running and gone(node.pid)


async def test_a_missing_program_is_a_start_error(nodes, tmp_path):
    node = nodes([str(tmp_path / "no-such-binary")], name="ghost")
    with pytest.raises(NodeStartError, match="ghost: cannot run"):
        await node.start(timeout=5)
    assert not node.running


async def test_restart_with_a_fixed_port_keeps_the_url(nodes):
    node = nodes(py(SERVER, free_port()))
    url = await node.start(timeout=10)
    old = node.pid
    assert await node.restart() == url
    assert node.pid != old and gone(old) and node.running
    assert await fetch(url) == b"ok\n"
    node.kill()
    await node.wait(timeout=5)
    assert await node.restart() == url  # also after a kill
    assert await fetch(url) == b"ok\n"


async def test_restart_without_a_fixed_port_is_refused(nodes):
    node = nodes(py(SERVER, 0))
    await node.start(timeout=10)
    with pytest.raises(NodeStartError, match="fixed port"):
        await node.restart()
    assert not node.running


async def test_output_keeps_being_drained_after_ready(nodes):
    """A child that writes far more than a pipe buffer after its ready line does not block."""
    node = nodes(py("""
        import sys
        print("listening on http://127.0.0.1:9", flush=True)
        for i in range(20000):
            sys.stdout.write("x" * 200 + "\\n")
        sys.stdout.flush()
        print("all written", flush=True)
        import time
        time.sleep(60)
    """))
    await node.start(timeout=10)
    await poll(lambda: "all written" in node.output_tail(), timeout=10, what="the output to drain")
    assert node.running


async def test_signals_reach_the_whole_process_group(nodes):
    node = nodes(py("""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("grandchild %d" % child.pid, flush=True)
        print("listening on http://127.0.0.1:9", flush=True)
        time.sleep(60)
    """))
    await node.start(timeout=10)
    grandchild = int(next(line for line in node.output_tail() if line.startswith("grandchild")).split()[1])
    assert psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE
    node.pause()
    await poll(lambda: psutil.Process(grandchild).status() == psutil.STATUS_STOPPED, what="group SIGSTOP")
    node.resume()
    await node.terminate(timeout=5)
    await poll(lambda: gone(grandchild), what="the grandchild to go")


async def test_cancelling_start_leaves_no_process(nodes):
    node = nodes(py("""
        import time
        print("never ready", flush=True)
        time.sleep(60)
    """))
    task = asyncio.create_task(node.start(timeout=30))
    await poll(lambda: "never ready" in node.output_tail(), what="the child to run")
    pid = node.pid
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not node.running and gone(pid)

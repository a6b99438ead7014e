"""`scopehub bench` (issue 8): the benchmark machinery as a smoke test on tiny sizes, the CLI's
one-line errors, and the hub's prebuilt-frame delivery path (reference/connection.py):
byte-identical frames, in order, to many connections; held back while the transport is
paused and written after the drain; a connection that does not read still evicted (DEL-6)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import socket
import struct
from urllib.parse import urlsplit

import aiohttp
import psutil
import pytest
from aiohttp import WSMsgType
from aiohttp._websocket.writer import WebSocketWriter
from rich.console import Console

from bench import report, runner
from bench.workloads import Sizes
from reference.connection import Connection, close_frame, text_frame
from reference.metrics import Metrics
from scopehub.cli import main
from wire_helpers import WAIT, health

pytestmark = pytest.mark.heavy  # benchmark machinery on real clusters: left out by --quick

# -- the benchmark, tiny ------------------------------------------------------------------------

TINY = Sizes(connections=12, rates=(20, 40), step_s=0.6, drain_s=2.0, scaling_rate=20,
             w2_scopes=1, w2_subs=6, w2_rates=(20,), w2_target_rate=20,
             w3_scopes=10, w3_subs=2, w3_connections=6, w3_rates=(20,),
             workers=1, w1_relays=("memory",), w2_relays=("streams",), w3_on_memory=False,
             redis_floor_n=50, redis_floor_s=0.3, blast_frames=2)


def _positive_step(step: dict) -> None:
    for key in ("offered_events_per_s", "achieved_events_per_s", "delivered_per_s", "p50_ms", "p99_ms"):
        assert isinstance(step[key], int | float) and step[key] > 0, (key, step[key])
    # CPU is counted in clock ticks (10 ms): a tiny step may not have used one yet.
    assert step["nodes_cpu_total"] >= 0 and step["machine_cpu"] >= 0
    assert step["received"] > 0 and step["received"] == step["expected"] and step["lost"] == 0
    assert step["loadgen_cpu"] and all(c >= 0 for c in step["loadgen_cpu"])
    assert all(v is None or v >= 0 for v in step["node_cpu"].values())


async def test_bench_machinery_on_tiny_sizes_writes_json_and_plot(tmp_path):
    result = await runner.run(TINY, quick=True, only=tuple(w for w in runner.WORKLOADS if w != "durability"))
    assert set(result) >= {"meta", "floor", "workloads", "warnings"}
    assert result["meta"]["machine"]["cores"] >= 1 and "caveat" in result["meta"]

    send = result["floor"]["send_loop"]
    assert send["connections"] == TINY.connections and send["steps"]
    for step in send["steps"]:
        _positive_step(step)
    assert send["peak_deliveries_per_s"] > 0 and send["blast"]["frames_per_s"] > 0
    rf = result["floor"]["redis"]
    for part in ("xadd", "xread"):
        assert rf[part]["ops_per_s"] > 0 and rf[part]["p50_ms"] > 0 and rf[part]["p99_ms"] > 0
    assert rf["xadd_to_xread_block"]["count"] > 0 and rf["xadd_to_xread_block"]["p99_ms"] > 0

    by_name = {(w["workload"], w["relay"]): w for w in result["workloads"]}
    assert set(by_name) == {("hot_scope", "memory"), ("three_nodes", "streams"), ("many_scopes", "streams")}
    for w in result["workloads"]:
        assert w["connections"] > 0 and w["steps"]
        for step in w["steps"]:
            _positive_step(step)
        assert w["peak_deliveries_per_s"] > 0 and w["ratio_to_floor"] > 0
    hot = by_name[("hot_scope", "memory")]
    assert hot["connections"] == TINY.connections
    scaling = hot["scaling"]
    assert scaling["subscribers"] == [TINY.connections // 2, TINY.connections]
    assert len(scaling["steps"]) == 2 and all(st["delivered_per_s"] > 0 for st in scaling["steps"])
    three = by_name[("three_nodes", "streams")]
    assert three["nodes"] == 3 and three["p99_ms_at_target"] > 0
    assert len(three["steps"][0]["node_cpu"]) == 4  # three nodes and Redis

    out = tmp_path / "bench"
    out.mkdir()
    path = report.write_json(result, str(out))
    assert json.loads(open(path, encoding="utf-8").read())["workloads"]
    png = report.plot(result, str(out))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    text = io.StringIO()
    report.render(result, Console(file=text, width=200))
    assert "summary" in text.getvalue() and "floor" in text.getvalue()


# -- durability (issue 17): --durability 1 side by side with the default ---------------------------

TINY_DURABILITY = Sizes(step_s=0.6, drain_s=2.0, workers=1, dur_nodes=1, dur_scopes=1, dur_subs=4,
                        dur_rates=(20, 40), dur_floor_n=30)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.req("NODE-3")
async def test_durability_workload_measures_both_systems_on_one_primary_with_a_replica():
    result = await runner.run(TINY_DURABILITY, only=("durability",), quick=True)
    assert [(w["workload"], w["system"], w["durability"]) for w in result["workloads"]] == [
        ("durability", "streams x1", 0), ("durability", "streams x1 durability=1", 1)]
    for w in result["workloads"]:
        assert [st["offered_events_per_s"] for st in w["steps"]] == [20, 40]
        for step in w["steps"]:
            _positive_step(step)
            assert step["publish_failed"] == 0 and step["publish_refused"] == {}  # an online replica: no 503
            assert 0 < step["publish_p50_ms"] <= step["publish_p99_ms"]
            assert set(step["node_cpu"]) == {"node-1", "redis", "redis-replica"}
        assert all(h["durability_shortfalls"] == 0 for h in w["health"])
    d = result["durability"]
    assert d["systems"] == ["streams x1", "streams x1 durability=1"] and "replica" in d["store"]
    assert [r["rate"] for r in d["rows"]] == [20, 40]
    rf = d["redis_floor"]
    assert rf["short"] == 0 and rf["xadd"]["count"] == rf["xadd_wait"]["count"] == 30
    assert 0 < rf["xadd"]["p50_ms"] and 0 < rf["xadd_wait"]["p50_ms"]
    for r in d["rows"]:
        assert r["publish_failed"] == [0, 0] and r["publish_p50_ratio"] > 0 and r["delivery_p50_ratio"] > 0
    assert len(d["pids"]) == 4 and all(_gone(pid) for pid in d["pids"].values())  # all stopped by PID
    text = io.StringIO()
    report.render(result, Console(file=text, width=200))
    assert all(w in text.getvalue() for w in ("durable / default", "loopback", "XADD + WAIT 1"))


async def test_durability_workload_stops_what_it_started_when_a_system_fails(monkeypatch):
    from bench import durability as dur
    from bench.targets import start_system

    started: dict[str, int] = {}

    class Store(dur.ReplicatedRedis):
        def start(self):
            super().start()
            started.update(self.pids)
            return self

    async def second_fails(*args, node_flags=(), **kw):
        if node_flags == ("--durability", "1"):
            raise OSError("no second system")
        sys_ = await start_system(*args, node_flags=node_flags, **kw)
        started["node"] = sys_.pids[0]
        return sys_

    monkeypatch.setattr(dur, "ReplicatedRedis", Store)
    monkeypatch.setattr(dur, "start_system", second_fails)
    with pytest.raises(OSError, match="no second system"):
        await runner.run(TINY_DURABILITY, only=("durability",), quick=True)
    assert set(started) == {"redis", "redis-replica", "node"}
    assert all(_gone(pid) for pid in started.values())


@pytest.mark.parametrize("argv,words", [
    (["bench", "--node", "http://127.0.0.1:1"], "--control-token"),
    (["bench", "--control-token", "t"], "--node"),
    (["bench", "--rates", "fast"], "--rates"),
])
def test_bench_cli_mistakes_are_one_line_errors(argv, words, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scopehub bench: error:") and words in err and "\n" not in err


# -- the prebuilt frame -------------------------------------------------------------------------

class _Sink:
    """A transport that keeps what it is given (and a protocol that can pause it)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.writing_paused = False
        self.closing = False
        self._waiter: asyncio.Future | None = None

    # transport
    def get_protocol(self):
        return self

    def write(self, data) -> None:
        self.chunks.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True

    def close(self) -> None:
        self.closing = True

    # protocol
    async def _drain_helper(self) -> None:
        if self.writing_paused:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


@pytest.mark.parametrize("text", ["", "x", "é" * 62, "a" * 125, "a" * 126, "b" * 65535, "c" * 65536,
                                  json.dumps({"type": "t", "payload": {"s": "ünï"}})])
async def test_text_frame_is_what_aiohttps_writer_sends(text):
    sink = _Sink()
    await WebSocketWriter(sink, sink, use_mask=False, compress=0).send_frame(text.encode(), WSMsgType.TEXT)
    assert b"".join(sink.chunks) == text_frame(text)


class _Ws:
    closed = False


async def _ticks(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.req("DEL-6")
async def test_queued_frames_wait_for_start_and_drain_and_go_out_in_order():
    sink, metrics, evicted = _Sink(), Metrics(), []
    conn = Connection(_Ws(), sink, "u", "w", 4, metrics, evicted.append)
    assert conn.enqueue("a") and conn.enqueue("b")
    await _ticks()
    assert sink.chunks == []  # not before start() (the upgrade has not completed)
    conn.start(600, 900)
    await _ticks()
    assert sink.chunks == [text_frame("a") + text_frame("b")]  # one write for the iteration
    shared = text_frame("c")
    assert conn.enqueue("c", shared) and conn.enqueue("d")
    await _ticks()
    assert sink.chunks[-1] == shared + text_frame("d")

    sink.writing_paused = True  # the transport's buffer is above its high-water mark
    for s in ("e", "f", "g"):
        assert conn.enqueue(s)
    await _ticks()
    assert len(sink.chunks) == 2
    sink.resume_writing()
    await _ticks()
    assert sink.chunks[-1] == text_frame("e") + text_frame("f") + text_frame("g")

    sink.writing_paused = True
    assert all(conn.enqueue(s) for s in "hijk")  # four: the queue is full
    await _ticks()
    assert not conn.enqueue("l")  # the fifth evicts instead of dropping a frame (DEL-6)
    assert evicted == [conn] and conn.closed and sink.closing
    assert metrics.slow_evictions == 1 and metrics.messages_dropped == 5
    # what the transport had, then the eviction's close frame (try again later)
    assert b"".join(sink.chunks) == b"".join(text_frame(s) for s in "abcdefg") + close_frame(1013, "slow consumer")
    await conn.close()


async def _raw_ws(base: str, workspace: str, cookie: str, rcvbuf: int | None = None):
    """A WebSocket opened by hand, so the test sees the server's frames as bytes."""
    parts = urlsplit(base)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws?workspace_id={workspace} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\nCookie: multica_auth={cookie}\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def _raw_frame(reader) -> bytes:
    head = await reader.readexactly(2)
    n, ext = head[1] & 0x7F, b""
    if n == 126:
        ext = await reader.readexactly(2)
        n = struct.unpack("!H", ext)[0]
    elif n == 127:
        ext = await reader.readexactly(8)
        n = struct.unpack("!Q", ext)[0]
    return head + ext + await reader.readexactly(n)


@pytest.mark.req("DEL-3", "DEL-4")
async def test_many_connections_get_byte_identical_frames_in_publish_order(node, world):
    cookie = await node.control.token(world.alice)
    conns = [await _raw_ws(node.base, world.ws_a, cookie) for _ in range(40)]
    try:
        sizes = [10, 200, 70_000, 5, 126, 1000] * 4
        published = []
        for i, size in enumerate(sizes):  # one at a time: publisher order (DEL-3)
            published.append(await node.control.publish("workspace", world.ws_a,
                                                         {"type": "t", "payload": {"i": i, "pad": "é" * size}}))
        # and a burst of concurrent publishes, delivered in some order, the same for everyone (DEL-4)
        burst = await asyncio.gather(*(node.control.publish("workspace", world.ws_a, {"type": "b", "payload": {"i": i}})
                                       for i in range(30)))
        total = len(sizes) + len(burst)
        seen = []
        for reader, _ in conns:
            seen.append([await asyncio.wait_for(_raw_frame(reader), WAIT) for _ in range(total)])
        first = seen[0]
        assert all(frames == first for frames in seen[1:])  # byte-identical, same order
        texts = []
        for raw in first:
            assert raw[0] == 0x81 and not raw[1] & 0x80  # FIN text, unmasked, no RSV (uncompressed)
            text = raw[2 + {126: 2, 127: 8}.get(raw[1], 0):].decode()
            assert raw == text_frame(text)
            texts.append(json.loads(text))
        assert [t["event_id"] for t in texts[:len(sizes)]] == [p["event_id"] for p in published]
        assert sorted(t["event_id"] for t in texts[len(sizes):]) == sorted(p["event_id"] for p in burst)
    finally:
        for _, writer in conns:
            writer.close()


@pytest.mark.req("DEL-6")
async def test_a_connection_that_does_not_read_is_evicted_while_readers_get_everything(start_node, world):
    node = await start_node(send_queue=4)
    cookie = await node.control.token(world.alice)
    reader, reader_w = await _raw_ws(node.base, world.ws_a, cookie)
    _, stuck_w = await _raw_ws(node.base, world.ws_a, cookie, rcvbuf=4096)  # never read
    received: list[bytes] = []

    async def read_all():
        while True:
            received.append(await _raw_frame(reader))

    task = asyncio.create_task(read_all())
    try:
        async with aiohttp.ClientSession() as s:
            before = await health(s, node)
            published, evicted = [], None
            for i in range(400):
                published.append(await node.control.publish("workspace", world.ws_a,
                                                             {"type": "big", "payload": {"i": i, "blob": "x" * 131072}}))
                if i % 5 == 4:
                    h = await health(s, node)
                    if h["slow_evictions_total"] > before["slow_evictions_total"]:
                        evicted = h
                        break
            assert evicted is not None, f"a connection that never reads still open after {len(published)} events"
            assert evicted["slow_evictions_total"] == before["slow_evictions_total"] + 1
            assert evicted["active_connections"] == 1
            for _ in range(int(WAIT / 0.05)):
                if len(received) >= len(published):
                    break
                await asyncio.sleep(0.05)
        ids = [json.loads(raw[10:].decode())["event_id"] for raw in received]
        assert ids == [p["event_id"] for p in published]  # the reader: everything, in order
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        reader_w.close()
        stuck_w.close()


# -- any implementation: frames recognised by their content --------------------------------------------------

async def test_a_node_that_re_encodes_frames_is_measured_correctly():
    """Issue 18: Go's encoding/json sorts a map's keys, so `sent_at` is not first; the bench once
    reported such a node as delivering nothing. Its frames are now read by content."""
    from permissive_node import node_command
    from scopehub.cluster import Cluster, ClusterSpec

    cluster = Cluster(ClusterSpec(nodes=1, relay="memory", node_command=node_command("sorted-events", "--relay memory")))
    await cluster.start()
    try:
        result = await runner.run(TINY, nodes=cluster.urls, control_token=cluster.spec.control_token, quick=True,
                                  only=("hot_scope",))
    finally:
        await cluster.stop()
    (hot,) = [w for w in result["workloads"] if w["workload"] == "hot_scope"]
    for step in hot["steps"]:
        assert step["unattributed"] == 0
        _positive_step(step)


def test_frames_that_cannot_be_attributed_are_named_not_lost():
    from bench import frames

    assert frames.parse('{"type":"bench:event","payload":{}}') is frames.UNATTRIBUTED
    assert frames.parse_bytes(b'{"k":"two","sent_at":1,"type":"bench:event"}') is frames.UNATTRIBUTED
    assert frames.parse('{"event_id":"e","k":2,"sent_at":1.5,"type":"bench:event"}') == (1.5, 2)
    assert frames.parse('{"type":"pong"}') is None

"""The load generator: subscriber connections spread over worker processes.

Each worker (multiprocessing, spawn) runs one event loop multiplexing many client WebSocket
connections: bench.wsclient's lean protocol by default, aiohttp's client with
client="aiohttp" (twice the CPU per frame, see bench.wsclient). For every benchmark frame it takes time.time() at receipt, subtracts
the frame's `sent_at` and adds the latency to a histogram of the frame's step; it also counts
arrivals per 100 ms of wall time, so the parent can compute delivered frames per second in
any window. A worker reports its own CPU time (time.process_time), so the parent can tell
when the load generator, not the server, was the bottleneck.

Commands go over a multiprocessing Pipe: ("connect", specs), ("snapshot", None),
("disconnect", None), ("stop", None). Every command gets exactly one reply.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from dataclasses import dataclass, field

from .frames import UNATTRIBUTED

BIN_S = 0.1  # arrival counts per 100 ms of wall time
CONNECT_CONCURRENCY = 32


@dataclass
class ConnSpec:
    """One subscriber connection: node URL, workspace, auth cookie, extra scopes to subscribe."""

    url: str
    workspace: str
    cookie: str | None = None
    subscribe: list[tuple[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# the worker process


class _Worker:
    def __init__(self, pipe, index: int, client: str = "raw") -> None:
        self.pipe = pipe
        self.index = index
        self.client = client  # "raw" (bench.wsclient) or "aiohttp"
        self._disconnecting = False
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.conns: list = []
        self.readers: list[asyncio.Task] = []
        self.hist: dict[int, dict[int, int]] = {}  # step -> bucket -> count
        self.count: dict[int, int] = {}  # step -> frames
        self.bins: dict[int, int] = {}  # int(time / BIN_S) -> frames
        self.other = 0  # frames that are not benchmark events (acks...)
        self.unattributed = 0  # benchmark events whose sent_at and step could not be read
        self.unattributed_samples: list[str] = []
        self.closed = 0  # connections the server closed
        self.errors: list[str] = []

    def _on_pipe(self) -> None:
        try:
            msg = self.pipe.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.pipe.fileno())
            msg = ("stop", None)
        self.inbox.put_nowait(msg)

    async def run(self) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        loop.add_reader(self.pipe.fileno(), self._on_pipe)
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        self.session = aiohttp.ClientSession(connector=connector)
        try:
            while True:
                cmd, arg = await self.inbox.get()
                if cmd == "connect":
                    reply = await self.connect(arg)
                elif cmd == "snapshot":
                    reply = self.snapshot()
                elif cmd == "disconnect":
                    await self.disconnect()
                    reply = {"ok": True}
                elif cmd == "stop":
                    await self.disconnect()
                    self._send({"ok": True})
                    return
                else:
                    reply = {"error": f"unknown command {cmd!r}"}
                self._send(reply)
        finally:
            await self.session.close()

    def _send(self, reply) -> None:
        try:
            self.pipe.send(reply)
        except (BrokenPipeError, OSError):
            pass

    # -- connections ---------------------------------------------------------------------------
    async def connect(self, specs: list[ConnSpec]) -> dict:
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
        t0 = time.monotonic()

        async def one(spec: ConnSpec) -> None:
            async with sem:
                try:
                    await self._open(spec)
                except Exception as e:  # noqa: BLE001 - reported to the parent
                    if len(self.errors) < 20:
                        self.errors.append(f"{type(e).__name__}: {e}"[:200])

        before = len(self.conns)
        await asyncio.gather(*(one(s) for s in specs))
        return {"connected": len(self.conns) - before, "wanted": len(specs),
                "seconds": time.monotonic() - t0, "errors": list(self.errors)}

    async def _open(self, spec: ConnSpec) -> None:
        acked = asyncio.Event()
        state = {"want": len(spec.subscribe), "acks": 0, "event": acked}
        if not spec.subscribe:
            acked.set()
        subscribe = ['{"type":"subscribe","payload":{"scope":"%s","id":"%s"}}' % s for s in spec.subscribe]
        if self.client == "aiohttp":
            import aiohttp

            headers = {"Cookie": f"multica_auth={spec.cookie}"} if spec.cookie else {}
            ws = await self.session.ws_connect(spec.url.rstrip("/") + "/ws", params={"workspace_id": spec.workspace},
                                               headers=headers, autoping=True, max_msg_size=0,
                                               timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
            self.conns.append(ws)
            self.readers.append(asyncio.create_task(self._read(ws, state)))
            for text in subscribe:
                await ws.send_str(text)
        else:
            from . import wsclient
            from .frames import parse_bytes

            record = self._recorder(parse_bytes, state, b'"subscribe_')
            proto = await wsclient.connect(spec.url, {"workspace_id": spec.workspace}, record, cookie=spec.cookie)
            self.conns.append(proto)
            proto.closed.add_done_callback(self._lost)
            for text in subscribe:
                proto.send_text(text)
        try:
            await asyncio.wait_for(acked.wait(), 30)
        except asyncio.TimeoutError:
            raise RuntimeError(f"no subscribe_ack for {spec.subscribe} within 30 s") from None

    def _lost(self, _fut) -> None:
        if not self._disconnecting:
            self.closed += 1

    def _recorder(self, parse, state: dict, answer):
        """The per-frame callback: latency into the step's histogram, arrival into its 100 ms bin."""
        from .stats import bucket

        hist, count, bins = self.hist, self.count, self.bins
        now = time.time

        def record(data) -> None:
            t = now()
            got = parse(data)
            if got is UNATTRIBUTED:
                self.unattributed += 1
                if len(self.unattributed_samples) < 3:
                    sample = data if isinstance(data, str) else data.decode("utf-8", "replace")
                    self.unattributed_samples.append(sample[:200])
                return
            if got is None:
                self.other += 1
                if answer in data:  # subscribe_ack or subscribe_error
                    state["acks"] += 1
                    if state["acks"] >= state["want"]:
                        state["event"].set()
                return
            sent, k = got
            h = hist.get(k)
            if h is None:
                h = hist[k] = {}
                count[k] = 0
            b = bucket(t - sent)
            h[b] = h.get(b, 0) + 1
            count[k] += 1
            tb = int(t / BIN_S)
            bins[tb] = bins.get(tb, 0) + 1

        return record

    async def _read(self, ws, state: dict) -> None:
        import aiohttp

        from .frames import parse

        TEXT = aiohttp.WSMsgType.TEXT
        record = self._recorder(parse, state, '"subscribe_')
        try:
            while True:
                msg = await ws.receive()
                if msg.type is not TEXT:
                    break
                record(msg.data)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as e:  # noqa: BLE001
            if len(self.errors) < 20:
                self.errors.append(f"reader: {type(e).__name__}: {e}"[:200])
        if not self._disconnecting:
            self.closed += 1

    async def disconnect(self) -> None:
        self._disconnecting = True
        for t in self.readers:
            t.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        if self.client == "aiohttp":
            await asyncio.gather(*(ws.close() for ws in self.conns), return_exceptions=True)
        else:
            for proto in self.conns:
                proto.close()
            await asyncio.gather(*(asyncio.wait_for(p.closed, 5) for p in self.conns), return_exceptions=True)
        self.conns.clear()
        self.readers.clear()
        self.closed = 0
        self._disconnecting = False

    def snapshot(self) -> dict:
        return {"pid": os.getpid(), "cpu_s": time.process_time(), "wall": time.time(),
                "hist": {k: dict(h) for k, h in self.hist.items()}, "count": dict(self.count),
                "bins": dict(self.bins), "open": len(self.conns) - self.closed, "closed": self.closed,
                "other": self.other, "errors": list(self.errors), "unattributed": self.unattributed,
                "unattributed_samples": list(self.unattributed_samples)}


def worker_main(pipe, index: int, client: str = "raw") -> None:
    """Entry point of a spawned worker process."""
    asyncio.run(_Worker(pipe, index, client).run())


# --------------------------------------------------------------------------------------------
# the parent's side


class WorkerPool:
    """N worker processes; `connect` spreads connection specs over them round-robin."""

    def __init__(self, n: int, client: str = "raw") -> None:
        self.n = max(1, n)
        self.client = client
        self.procs: list = []
        self.pipes: list = []
        self._lock = asyncio.Lock()

    async def start(self) -> "WorkerPool":
        ctx = multiprocessing.get_context("spawn")
        for i in range(self.n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(child, i, self.client), name=f"bench-worker-{i}", daemon=True)
            p.start()
            child.close()
            self.procs.append(p)
            self.pipes.append(parent)
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def _call(self, i: int, cmd: str, arg, timeout: float):
        pipe = self.pipes[i]
        try:
            pipe.send((cmd, arg))
        except (BrokenPipeError, ConnectionError) as e:
            raise RuntimeError(f"load generator worker {i} died (exit code {self.procs[i].exitcode})") from e

        def recv():
            try:
                if not pipe.poll(timeout):
                    raise TimeoutError(f"load generator worker {i} did not answer {cmd!r} within {timeout:g} s")
                return pipe.recv()
            except (EOFError, ConnectionError) as e:
                raise RuntimeError(f"load generator worker {i} died (exit code {self.procs[i].exitcode})") from e

        return await asyncio.to_thread(recv)

    async def call_all(self, cmd: str, args: list | None = None, timeout: float = 60.0) -> list:
        async with self._lock:
            args = args if args is not None else [None] * self.n
            return list(await asyncio.gather(*(self._call(i, cmd, a, timeout) for i, a in enumerate(args))))

    async def connect(self, specs: list[ConnSpec], timeout: float = 120.0) -> dict:
        shares: list[list[ConnSpec]] = [[] for _ in range(self.n)]
        for j, s in enumerate(specs):
            shares[j % self.n].append(s)
        replies = await self.call_all("connect", shares, timeout)
        errors = [e for r in replies for e in r.get("errors", [])]
        return {"connected": sum(r["connected"] for r in replies), "wanted": len(specs),
                "seconds": max(r["seconds"] for r in replies), "errors": errors[:5]}

    async def snapshot(self) -> list[dict]:
        return await self.call_all("snapshot", timeout=30.0)

    async def disconnect(self) -> None:
        await self.call_all("disconnect", timeout=60.0)

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.call_all("stop", timeout=10.0), 15.0)
        except Exception:  # noqa: BLE001 - fall through to terminate
            pass
        for p in self.procs:
            await asyncio.to_thread(p.join, 5.0)
            if p.is_alive():
                p.terminate()
                await asyncio.to_thread(p.join, 2.0)
        for pipe in self.pipes:
            pipe.close()
        self.procs.clear()
        self.pipes.clear()

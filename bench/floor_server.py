"""The floor: a bare aiohttp WebSocket server send loop, no hub.

Run as `python -m bench.floor_server --port P`; it prints the same ready line as
`scopehub serve`, so scopehub.processes.NodeProcess starts and stops it like a node.

- GET /ws: accept any WebSocket (no auth, no scopes) and keep it in one set.
- POST /_control/publish {"frame": {...}}: encode the frame once (as the reference does:
  json.dumps plus the server-set fields) and `await ws.send_str(data)` to every connection,
  in one loop: what a hub's fanout costs with nothing else around it.
- POST /run {"rate": R, "seconds": D, "k": K, "pad": "..."}: the same loop driven by the server's
  own clock, R frames per second for D seconds (the floor's latency-throughput curve: no HTTP
  request per event, so the floor is the send loop alone). Each frame's `sent_at` is taken
  just before its send loop starts.
- POST /blast {"n": N, "pad": "..."}: send N frames to every connection back to back and
  answer how long the server-side loop took and the CPU it used.
- /_control/info, /_control/fixtures and /_control/token answer enough for the bench's
  machinery (a "floor" relay, fixtures ignored, a dummy token).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

from aiohttp import WSMsgType, web

CONNS = web.AppKey("conns", set)


async def ws_handler(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(autoping=True, compress=False)
    await ws.prepare(request)
    conns = request.app[CONNS]
    conns.add(ws)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and '"subscribe"' in msg.data:
                # Answer like a hub would, so clients that subscribe are not left waiting.
                doc = json.loads(msg.data)
                await ws.send_str(json.dumps({"type": "subscribe_ack", "payload": doc.get("payload", {})}))
    finally:
        conns.discard(ws)
    return ws


def _encode(frame: dict, n: int) -> str:
    body = json.dumps(frame, separators=(",", ":"))
    # The same shape and size as a reference event frame: event_id and the server-set fields.
    tail = f'"event_id":"{n:026d}","scope":"workspace","scope_id":"floor","pos":"{n:032d}"}}'
    return body[:-1] + "," + tail


async def publish(request: web.Request) -> web.Response:
    doc = await request.json()
    app = request.app
    app["n"] = n = app.get("n", 0) + 1
    sent = await _send_all(tuple(app[CONNS]), _encode(doc["frame"], n))
    return web.json_response({"event_id": str(n), "pos": None, "sent": sent})


async def _send_all(conns, data: str) -> int:
    sent = 0
    for ws in conns:
        try:
            await ws.send_str(data)
            sent += 1
        except (ConnectionError, RuntimeError):
            pass
    return sent


async def run(request: web.Request) -> web.Response:
    doc = await request.json()
    rate, seconds, k, pad = float(doc["rate"]), float(doc["seconds"]), int(doc["k"]), str(doc.get("pad", ""))
    conns = tuple(request.app[CONNS])
    loop = asyncio.get_running_loop()
    total = max(1, int(round(rate * seconds)))
    cpu0, t0, wall0 = time.process_time(), loop.time(), time.time()
    frames = i = 0
    while i < total:
        due = min(total, int((loop.time() - t0) * rate) + 1)
        while i < due:
            frame = {"sent_at": time.time(), "k": k, "type": "bench:event", "payload": {"n": i, "pad": pad}}
            frames += await _send_all(conns, _encode(frame, i))
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
    wall1 = time.time()
    return web.json_response({"published": total, "frames": frames, "t_start": wall0, "t_end": wall1,
                              "cpu_s": time.process_time() - cpu0})


async def blast(request: web.Request) -> web.Response:
    doc = await request.json()
    n, pad = int(doc.get("n", 10)), str(doc.get("pad", ""))
    conns = tuple(request.app[CONNS])
    cpu0, t0 = time.process_time(), time.perf_counter()
    frames = 0
    for i in range(n):
        frame = {"sent_at": time.time(), "k": -1, "type": "bench:blast", "payload": {"n": i, "pad": pad}}
        frames += await _send_all(conns, _encode(frame, i))
    dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return web.json_response({"frames": frames, "connections": len(conns), "seconds": dt, "cpu_s": cpu,
                              "frames_per_s": frames / dt if dt > 0 else 0.0})


async def info(request: web.Request) -> web.Response:
    return web.json_response({"implementation": "bench-floor", "relay": "floor",
                              "connections": len(request.app[CONNS])})


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def token(request: web.Request) -> web.Response:
    return web.json_response({"token": "floor"})


def build_app() -> web.Application:
    app = web.Application()
    app[CONNS] = set()
    app.router.add_get("/ws", ws_handler)
    app.router.add_post("/_control/publish", publish)
    app.router.add_post("/run", run)
    app.router.add_post("/blast", blast)
    app.router.add_get("/_control/info", info)
    app.router.add_put("/_control/fixtures", ok)
    app.router.add_post("/_control/token", token)

    async def close_all(app: web.Application) -> None:
        for ws in tuple(app[CONNS]):
            await ws.close()

    app.on_shutdown.append(close_all)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(build_app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    print(f"floor: listening on http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.floor_server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

"""A frame-mangling man-in-the-middle: a second way to break a correct target, for
tests/test_suite_catches_bugs.py.

It listens on a port of its own and forwards everything to one node: GET /ws as a WebSocket
(query string, cookie, origin and forwarding headers passed on; frames relayed both ways,
close codes kept), every other path (control API, health) as plain HTTP. On the way to the
client it drops one event frame (a text frame carrying an event_id) in `drop_every`, as a
buggy edge proxy or a lossy client-side buffer would: the node did everything right, the
client still misses acknowledged events (DEL-1). `drop_every=0` forwards faithfully.

    python tests/mangling_proxy.py --upstream http://127.0.0.1:8080 --port 9090 --drop-every 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

import aiohttp
from aiohttp import WSMsgType, web

# Headers of a WebSocket upgrade worth passing on (aiohttp writes the upgrade headers itself).
WS_HEADERS = ("cookie", "origin", "authorization", "user-agent", "x-forwarded-host", "x-forwarded-for",
              "x-forwarded-proto", "forwarded", "x-real-ip")
HOP_BY_HOP = {"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
              "trailer", "content-length"}


def _code(code: int | None) -> int:
    """A close code that may be sent on: abnormal ends (none, 1005, 1006) become 1011."""
    return code if code is not None and 1000 <= code < 5000 and code not in (1005, 1006, 1015) else 1011


def _is_event(text: str) -> bool:
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    return isinstance(doc, dict) and "event_id" in doc


class ManglingProxy:
    def __init__(self, upstream: str, *, drop_every: int = 20, host: str = "127.0.0.1", port: int = 0):
        self.upstream = upstream.rstrip("/")
        self.drop_every = drop_every
        self.host, self.port = host, port
        self.events_seen = 0  # event frames from the node, over all connections
        self.dropped: list[str] = []  # event_ids never forwarded
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.url = ""

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_shutdown.append(self._close_sockets)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "ManglingProxy":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in tuple(self._sockets):
            await ws.close()

    # -- routing ------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/ws" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        return await self._http(request)

    async def _http(self, request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=body or None, allow_redirects=False,
                                         timeout=aiohttp.ClientTimeout(total=30)) as r:
            data = await r.read()
            out = {k: v for k, v in r.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=r.status, body=data, headers=out)

    # -- WebSocket ----------------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() in WS_HEADERS}
        try:
            upstream = await self._session.ws_connect(
                self.upstream + "/ws", params=request.query, headers=headers, autoping=False, max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
        except aiohttp.WSServerHandshakeError as e:  # the node refused the upgrade: pass its answer on
            return web.json_response({"error": e.message}, status=e.status)
        client = web.WebSocketResponse(autoping=False, max_msg_size=0, compress=False)
        await client.prepare(request)
        self._sockets.add(client)
        try:
            down = asyncio.create_task(self._downstream(upstream, client))
            up = asyncio.create_task(self._upstream(client, upstream))
            await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
            for t in (down, up):
                t.cancel()
            await asyncio.gather(down, up, return_exceptions=True)
        finally:
            self._sockets.discard(client)
            await upstream.close()
            if not client.closed:
                await client.close(code=_code(upstream.close_code))
        return client

    async def _downstream(self, upstream: aiohttp.ClientWebSocketResponse, client: web.WebSocketResponse) -> None:
        """Node -> client, dropping one event frame in drop_every."""
        async for msg in upstream:
            if msg.type is WSMsgType.TEXT:
                if _is_event(msg.data):
                    self.events_seen += 1
                    if self.drop_every and self.events_seen % self.drop_every == 0:
                        self.dropped.append(json.loads(msg.data).get("event_id"))
                        continue  # the mangling: this frame never reaches the client
                await client.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await client.send_bytes(msg.data)
            elif msg.type is WSMsgType.PING:
                await client.ping(msg.data)
            elif msg.type is WSMsgType.PONG:
                await client.pong(msg.data)
            else:
                break
        with contextlib.suppress(ConnectionError, RuntimeError):
            await client.close(code=_code(upstream.close_code))

    async def _upstream(self, client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
        """Client -> node, unchanged."""
        async for msg in client:
            if msg.type is WSMsgType.TEXT:
                await upstream.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await upstream.send_bytes(msg.data)
            elif msg.type is WSMsgType.PING:
                await upstream.ping(msg.data)
            elif msg.type is WSMsgType.PONG:
                await upstream.pong(msg.data)
            else:
                break
        with contextlib.suppress(ConnectionError, RuntimeError):
            await upstream.close(code=_code(client.close_code))


async def _serve(args: argparse.Namespace) -> None:
    proxy = ManglingProxy(args.upstream, drop_every=args.drop_every, host=args.host, port=args.port)
    url = await proxy.start()
    print(f"mangling proxy: listening on {url} -> {proxy.upstream}, dropping 1 event frame in {args.drop_every}",
          flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await proxy.stop()


def main() -> None:
    p = argparse.ArgumentParser(description="a WebSocket man-in-the-middle that drops event frames")
    p.add_argument("--upstream", required=True, help="base URL of the node")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--drop-every", type=int, default=20, help="drop one event frame in N (0: none)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(p.parse_args()))


if __name__ == "__main__":
    main()

"""What a case works with: the target, its own fixture world, and helpers that turn every
wrong answer into a `Failed` carrying the expected and the received frames."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

import aiohttp

from .cases import Failed
from .client import AuthRefused, ConnectionClosed, ControlError, WsClient
from .target import Target
from .world import TestWorld


class CaseContext:
    def __init__(self, target: Target, world: TestWorld, *, quick: bool = False):
        self.target = target
        self.world = world
        self.quick = quick
        self.session = target.session
        self.clients: list[WsClient] = []
        self._tokens: dict[str, str] = {}

    async def prepare(self) -> None:
        """Mint every world user's token up front: a case that opens a connection and then asks
        for a token would otherwise spend part of the target's auth timeout on the control API."""
        w = self.world
        users = [w.alice, w.bob, w.carol, w.dave, w.outsider]
        minted = await asyncio.gather(*(self.target.controls[0].token(u) for u in users))
        self._tokens = dict(zip(users, minted))

    # -- connections ----------------------------------------------------------------------------
    async def token(self, user: str | None, node: int = 0, **extra) -> str:
        if node == 0 and not extra and user in self._tokens:
            return self._tokens[user]
        return await self.target.controls[node].token(user, **extra)

    async def connect(self, user: str, workspace: str, *, node: int = 0, cookie: bool = False,
                      token: str | None = None, **kw) -> WsClient:
        """An authenticated connection (token first-message auth, or the cookie)."""
        token = token or await self.token(user, node)
        url = self.target.urls[node]
        try:
            if cookie:
                client = await WsClient.connect(self.session, url, workspace_id=workspace, cookie=token, **kw)
            else:
                client = await WsClient.connect(self.session, url, workspace_id=workspace, token=token, **kw)
        except AuthRefused as e:
            raise Failed(f"{user} could not connect to workspace {workspace}", "auth_ack", {"error": str(e)}) from None
        except aiohttp.WSServerHandshakeError as e:
            raise Failed(f"{user} could not connect to workspace {workspace}", "101 upgrade", f"HTTP {e.status}") from None
        self.clients.append(client)
        return client

    async def raw(self, *, node: int = 0, params: dict | None = None, headers: dict | None = None,
                  cookie: str | None = None, autoping: bool = True) -> WsClient:
        """An upgraded but unauthenticated connection."""
        hdrs = dict(headers or {})
        if cookie is not None:
            hdrs["Cookie"] = f"multica_auth={cookie}"
        ws = await self.session.ws_connect(self.target.urls[node] + "/ws", params=params or {}, headers=hdrs,
                                           autoping=autoping, max_msg_size=0,
                                           timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
        client = WsClient(ws)
        self.clients.append(client)
        return client

    async def upgrade(self, *, node: int = 0, params: dict | None = None, headers: dict | None = None,
                      cookie: str | None = None) -> tuple[int, Any]:
        """Try the upgrade with a plain HTTP request: (status, parsed body) — 101 when accepted."""
        hdrs = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), **(headers or {})}
        if cookie is not None:
            hdrs["Cookie"] = f"multica_auth={cookie}"
        async with aiohttp.ClientSession() as s:  # its own session: a 101 leaves the socket upgraded
            async with s.get(self.target.urls[node] + "/ws", params=params or {}, headers=hdrs,
                             timeout=aiohttp.ClientTimeout(total=10)) as r:
                if r.status == 101:
                    return 101, None
                text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text

    async def http(self, method: str, path: str, *, node: int = 0, headers: dict | None = None,
                   body: Any = None) -> tuple[int, Any, dict]:
        async with self.session.request(method, self.target.urls[node] + path, headers=headers or {},
                                        data=body, timeout=aiohttp.ClientTimeout(total=10)) as r:
            text = await r.text()
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
            return r.status, parsed, dict(r.headers)

    # -- publishing -------------------------------------------------------------------------------
    async def publish(self, scope: str, id_: str, frame: dict | None = None, *, node: int = 0,
                      exclude_workspace: str | None = None) -> dict:
        frame = {"type": "conformance:event", **(frame or {})}
        try:
            return await self.target.controls[node].publish(scope, id_, frame, exclude_workspace)
        except ControlError as e:
            raise Failed(f"publish to {scope}:{id_} through node {node + 1} failed", "200", f"{e.status} {e.body}") from None

    # -- expectations -----------------------------------------------------------------------------
    @staticmethod
    def expect(ok: bool, reason: str, expected: Any = None, received: Any = None) -> None:
        if not ok:
            raise Failed(reason, expected, received)

    def equal(self, received: Any, expected: Any, reason: str) -> None:
        self.expect(received == expected, reason, expected, received)

    async def frame(self, client: WsClient, pred, what: str, *, timeout: float = 5.0, start: int = 0) -> Any:
        """The first frame matching pred, or Failed naming `what` with the frames received."""
        try:
            return await client.wait_for(pred, timeout, start=start)
        except asyncio.TimeoutError:
            raise Failed(f"no {what} within {timeout:g} s", what, client.frames[start:][-10:]) from None
        except ConnectionClosed as e:
            raise Failed(f"connection closed (code {e.code}) before {what}", what, client.frames[start:][-10:]) from None

    async def answer(self, client: WsClient, kind: str, scope: str, id_: str, **extra) -> dict:
        """Send subscribe/unsubscribe and return its answer frame."""
        payload = {"scope": scope, "id": id_, **extra}
        start = len(client.frames)
        await client.send({"type": kind, "payload": payload})
        return await self.frame(client, lambda f: _answers(f, kind, scope, id_), f"answer to {kind} {scope}:{id_}",
                                start=start)

    async def event(self, client: WsClient, published: dict, *, timeout: float = 5.0) -> dict:
        eid = published["event_id"]
        return await self.frame(client, lambda f: isinstance(f, dict) and f.get("event_id") == eid,
                                f"event {eid}", timeout=timeout)

    async def closed(self, client: WsClient, what: str, *, timeout: float) -> int | None:
        try:
            return await client.wait_closed(timeout)
        except asyncio.TimeoutError:
            raise Failed(f"connection still open after {timeout:g} s: expected {what}", what, "open") from None

    async def close_all(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)


def _answers(frame: Any, kind: str, scope: str, id_: str) -> bool:
    return (isinstance(frame, dict) and frame.get("type") in (f"{kind}_ack", f"{kind}_error")
            and isinstance(frame.get("payload"), dict)
            and frame["payload"].get("scope") == scope and frame["payload"].get("id") == id_)

"""What a case works with: the target, its own fixture world, and helpers that turn every
wrong answer into a `Failed` naming the requirement it breaks, with the expected and the
received frames, and every set-up step that does not work into a `SetupError`."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

import aiohttp

from .cases import Failed, NotChecked, SetupError
from .client import AuthRefused, ConnectionClosed, ControlError, WsClient
from .frames import answers_to
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
        self.primary: str | None = None  # the case's first requirement: checks default to it
        self.failures: list[Failed] = []  # soft failures (ctx.check): the case went on
        self.skipped: list[tuple[str, str]] = []  # (requirement, what of it could not be checked, and why)

    def skip(self, req: str, what: str) -> None:
        """A part of the case's check of `req` that cannot run against this target (a secret the
        suite lacks, ...): the rest still judges it, and its verdict says what was skipped."""
        self.skipped.append((req, what))

    def require(self, fact: str) -> None:
        """NotChecked when a probe found that the target lacks `fact` (e.g. "event_id": frames
        carry the published event_id): the failure is reported once, at its root requirement."""
        known = self.target.facts.get(fact)
        if known is not None and not known[0]:
            raise NotChecked(f"depends on {known[1]}")

    async def prepare(self) -> None:
        """Mint every world user's token up front: a case that opens a connection and then asks
        for a token would otherwise spend part of the target's auth timeout on the control API."""
        w = self.world
        users = [w.alice, w.bob, w.carol, w.dave, w.outsider, w.erin, w.frank]
        try:
            minted = await asyncio.gather(*(self.target.controls[0].token(u) for u in users))
        except ControlError as e:
            raise SetupError("mint tokens with POST /_control/token", f"{e.status} {e.body}", req="CTL-3") from None
        self._tokens = dict(zip(users, minted))

    # -- connections ----------------------------------------------------------------------------
    async def token(self, user: str | None, node: int = 0, **extra) -> str:
        if node == 0 and not extra and user in self._tokens:
            return self._tokens[user]
        try:
            return await self.target.controls[node].token(user, **extra)
        except ControlError as e:
            raise SetupError(f"mint a token for {user!r} on node {node + 1}", f"{e.status} {e.body}",
                             req="CTL-3") from None

    async def connect(self, user: str, workspace: str, *, node: int = 0, cookie: bool = False,
                      token: str | None = None, **kw) -> WsClient:
        """An authenticated connection (token first-message auth, or the cookie)."""
        token = token or await self.token(user, node)
        url = self.target.urls[node]
        step = f"connect {user} to workspace {workspace} on node {node + 1} ({'cookie' if cookie else 'token'} auth)"
        try:
            if cookie:
                client = await WsClient.connect(self.session, url, workspace_id=workspace, cookie=token, **kw)
            else:
                client = await WsClient.connect(self.session, url, workspace_id=workspace, token=token, **kw)
        except AuthRefused as e:
            raise SetupError(step, {"error": str(e)}) from None
        except aiohttp.WSServerHandshakeError as e:
            raise SetupError(step, f"HTTP {e.status}") from None
        except asyncio.TimeoutError:  # neither auth_ack nor an error frame: HS-3 answers every auth
            raise SetupError(step, "no answer to auth within 5 s", req=None if cookie else "HS-3",
                             expected='{"type":"auth_ack"} or {"error": ...}') from None
        except ConnectionClosed as e:
            raise SetupError(step, f"closed (code {e.code}) before the answer to auth") from None
        except (aiohttp.ClientError, OSError) as e:
            raise SetupError(step, f"{type(e).__name__}: {e}") from None
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
        step = f"publish to {scope}:{id_} through node {node + 1}"
        try:
            answer = await self.target.controls[node].publish(scope, id_, frame, exclude_workspace)
        except ControlError as e:
            # 503 is the store being unreachable (NODE-3): the case cannot run. Anything else for
            # a publish the contract accepts breaks CTL-4 (200 once stored, else 503).
            raise SetupError(step, f"{e.status} {e.body}", req=None if e.status == 503 else "CTL-4",
                             expected="200 {\"event_id\": str, \"pos\": str|null}") from None
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as e:
            raise SetupError(step, f"{type(e).__name__}: {e}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("event_id"), str) or not answer["event_id"]:
            raise SetupError(step, answer, req="CTL-4", expected='{"event_id": str, "pos": str|null}')
        return answer

    # -- expectations -----------------------------------------------------------------------------
    @staticmethod
    def expect(ok: bool, reason: str, expected: Any = None, received: Any = None, *, req: str | None = None) -> None:
        """A check of `req` (the case's first requirement by default): the case stops if it fails."""
        if not ok:
            raise Failed(reason, expected, received, req)

    def equal(self, received: Any, expected: Any, reason: str, *, req: str | None = None) -> None:
        self.expect(received == expected, reason, expected, received, req=req)

    def check(self, req: str, ok: bool, reason: str, expected: Any = None, received: Any = None) -> bool:
        """A check of `req` that lets the case go on when it fails, so that one observation is
        judged by each requirement on its own (a loss by DEL-1, a repeat by DEL-2, ...)."""
        if not ok:
            self.failures.append(Failed(reason, expected, received, req))
        return ok

    async def frame(self, client: WsClient, pred, what: str, *, timeout: float = 5.0, start: int = 0,
                    req: str | None = None) -> Any:
        """The first frame matching pred, or Failed (of `req`) naming `what` with the frames received."""
        try:
            return await client.wait_for(pred, timeout, start=start)
        except asyncio.TimeoutError:
            raise Failed(f"no {what} within {timeout:g} s", what, client.frames[start:][-10:], req) from None
        except ConnectionClosed as e:
            raise Failed(f"connection closed (code {e.code}) before {what}", what, client.frames[start:][-10:],
                         req) from None

    async def answer(self, client: WsClient, kind: str, scope: str, id_: str, *, req: str | None = None,
                     **extra) -> dict:
        """Send subscribe/unsubscribe and return its answer frame (no answer fails `req`)."""
        payload = {"scope": scope, "id": id_, **extra}
        start = len(client.frames)
        await client.send({"type": kind, "payload": payload})
        return await self.frame(client, lambda f: answers_to(f, kind, scope, id_), f"answer to {kind} {scope}:{id_}",
                                start=start, req=req)

    async def event(self, client: WsClient, published: dict, *, timeout: float = 5.0, req: str = "DEL-1") -> dict:
        """The frame of a published event (found by its event_id); one that never comes is a
        loss: DEL-1 unless the case says which requirement owes it."""
        self.require("event_id")
        eid = published["event_id"]
        try:
            return await client.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == eid, timeout)
        except asyncio.TimeoutError:
            raise Failed(f"no event {eid} within {timeout:g} s", f"event {eid}", client.frames[-10:], req) from None
        except ConnectionClosed as e:  # DEL-1 owes nothing to a connection that closes first
            raise SetupError(f"wait for event {eid}", f"the server closed the connection (code {e.code})") from None

    async def closed(self, client: WsClient, what: str, *, timeout: float, req: str | None = None) -> int | None:
        """The close code once the connection has ended (None: it ended without a close frame)."""
        try:
            return await client.wait_closed(timeout)
        except asyncio.TimeoutError:
            raise Failed(f"connection still open after {timeout:g} s: expected {what}", what, "open", req) from None

    async def close_all(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)


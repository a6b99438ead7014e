"""A wire client for the contract: WebSocket connections and the control API, nothing else.

Used by the suite, the simulator and the project's own tests, so every one of them talks
to a target exactly as a client would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from .frames import answers_to, is_auth_answer

DEFAULT_TIMEOUT = 5.0


class ControlError(Exception):
    def __init__(self, status: int, body: Any):
        super().__init__(f"control API answered {status}: {body}")
        self.status = status
        self.body = body


class Control:
    """The control API of one node (CTL-1..5)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str):
        self.session = session
        self.base = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None, *, expect: int | None = 200,
                   timeout: float = DEFAULT_TIMEOUT) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, json=body, headers=self.headers,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            text = await r.text()
            try:
                doc = json.loads(text) if text else None
            except ValueError:
                doc = text
            if expect is not None and r.status != expect:
                raise ControlError(r.status, doc)
            return r.status, doc

    async def info(self) -> dict:
        return (await self.call("GET", "/_control/info"))[1]

    async def fixtures(self, world: dict) -> None:
        await self.call("PUT", "/_control/fixtures", world)

    async def token(self, user: str | None, **extra) -> str:
        return (await self.call("POST", "/_control/token", {"user": user, **extra}))[1]["token"]

    async def publish(self, scope: str, id_: str, frame: dict, exclude_workspace: str | None = None,
                      *, timeout: float = DEFAULT_TIMEOUT) -> dict:
        body = {"scope": scope, "id": id_, "frame": frame}
        if exclude_workspace is not None:
            body["exclude_workspace"] = exclude_workspace
        return (await self.call("POST", "/_control/publish", body, timeout=timeout))[1]

    async def faults(self, authorizer: str) -> None:
        await self.call("PUT", "/_control/faults", {"authorizer": authorizer})


class WsClient:
    """One client connection. Frames are read by a background task into a buffer, so a test
    can wait for a frame matching a predicate without losing the ones before it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.frames: list[Any] = []  # every text frame received, parsed when JSON
        self.close_code: int | None = None
        self.closed_at: float | None = None
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, base_url: str, *, workspace_id: str | None = None,
                      workspace_slug: str | None = None, token: str | None = None, cookie: str | None = None,
                      headers: dict | None = None, autoping: bool = True, auth: bool = True,
                      timeout: float = DEFAULT_TIMEOUT, **kw) -> "WsClient":
        params = {}
        if workspace_id is not None:
            params["workspace_id"] = workspace_id
        if workspace_slug is not None:
            params["workspace_slug"] = workspace_slug
        hdrs = dict(headers or {})
        if cookie is not None:
            hdrs["Cookie"] = f"multica_auth={cookie}"
        ws = await session.ws_connect(base_url.rstrip("/") + "/ws", params=params, headers=hdrs,
                                      autoping=autoping, timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                                      max_msg_size=0, **kw)
        client = cls(ws)
        if token is not None and auth:
            await client.send({"type": "auth", "payload": {"token": token}})
            # events of the auto-subscribed scopes may come before the ack (HS-6): skipped, kept
            ack = await client.wait_for(is_auth_answer, timeout)
            if ack.get("type") != "auth_ack":
                await client.close()
                raise AuthRefused(ack.get("error", str(ack)))
        return client

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    try:
                        frame = json.loads(msg.data)
                    except ValueError:
                        frame = msg.data
                    async with self._changed:
                        self.frames.append(frame)
                        self._changed.notify_all()
        finally:
            self.close_code = self.ws.close_code
            self.closed_at = asyncio.get_running_loop().time()  # when the close was seen, whoever waits later
            async with self._changed:
                self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._reader.done()

    async def send(self, frame: Any) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def subscribe(self, scope: str, id_: str, *, since: Any = ..., timeout: float = DEFAULT_TIMEOUT) -> dict:
        """Send subscribe and return its answer (subscribe_ack or subscribe_error)."""
        payload: dict = {"scope": scope, "id": id_}
        if since is not ...:
            payload["since"] = since
        start = len(self.frames)
        await self.send({"type": "subscribe", "payload": payload})
        return await self.wait_for(lambda f: answers_to(f, "subscribe", scope, id_), timeout, start=start)

    async def unsubscribe(self, scope: str, id_: str, *, timeout: float = DEFAULT_TIMEOUT) -> dict:
        start = len(self.frames)
        await self.send({"type": "unsubscribe", "payload": {"scope": scope, "id": id_}})
        return await self.wait_for(lambda f: answers_to(f, "unsubscribe", scope, id_), timeout, start=start)

    async def wait_for(self, pred: Callable[[Any], bool], timeout: float = DEFAULT_TIMEOUT, *, start: int = 0) -> Any:
        """The first frame at index >= start matching pred; TimeoutError if none arrives in time."""
        async def scan():
            i = start
            async with self._changed:
                while True:
                    while i < len(self.frames):
                        if pred(self.frames[i]):
                            return self.frames[i]
                        i += 1
                    if self.closed:
                        raise ConnectionClosed(self.close_code)
                    await self._changed.wait()
        return await asyncio.wait_for(scan(), timeout)

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    def events(self, start: int = 0) -> list[dict]:
        """Event frames received (anything with an event_id)."""
        return [f for f in self.frames[start:] if isinstance(f, dict) and "event_id" in f]

    async def close(self) -> None:
        if not self.ws.closed:
            await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class AuthRefused(Exception):
    pass


class ConnectionClosed(Exception):
    def __init__(self, code: int | None):
        super().__init__(f"connection closed (code {code})")
        self.code = code


"""Clients that record what they do and see as a history (conformance/history.py): the suite's
exploration and the simulator's client workers both drive targets through these, and the
one checker judges what they wrote."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

import aiohttp
from ulid import ULID

from .frames import is_auth_answer, is_event
from .history import ABSENT, HistoryWriter

_ANSWERS = {"subscribe_ack", "subscribe_error", "unsubscribe_ack", "unsubscribe_error"}


class RecordedConnection:
    """One WebSocket connection. A single reader task records every frame as it is read, so
    acks and events are recorded in the order the client saw them."""

    def __init__(self, writer: HistoryWriter, session: aiohttp.ClientSession, conn_id: str,
                 node: str, user: str, workspace: str, auth: str = "token"):
        self.w, self.session, self.id = writer, session, conn_id
        self.node, self.user, self.workspace, self.auth = node, user, workspace, auth
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.open = False
        self.held: dict[tuple[str, str], str | None] = {}  # scopes acked -> newest pos received
        self.received = 0
        self.seen: set[str] = set()  # event ids received
        self._pending: dict[tuple[str, str, str], deque[asyncio.Future]] = {}
        self._reading = asyncio.Event()
        self._reading.set()
        self._reader: asyncio.Task | None = None
        self._closing = False

    def __repr__(self) -> str:  # how the exploration's steps name it
        return self.id

    @property
    def paused(self) -> bool:
        return not self._reading.is_set()

    async def connect(self, token: str, timeout: float = 5.0) -> bool:
        self.w.connect_invoke(self.id, self.node, self.user, self.workspace, self.auth)
        self.held = {("workspace", self.workspace): None, ("user", self.user): None}
        params = {"workspace_id": self.workspace}
        headers = {"Cookie": f"multica_auth={token}"} if self.auth == "cookie" else {}
        try:
            self.ws = await asyncio.wait_for(self.session.ws_connect(
                self.node + "/ws", params=params, headers=headers, max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0)), timeout)
            if self.auth != "cookie":
                await self.ws.send_str(json.dumps({"type": "auth", "payload": {"token": token}}))
                answer = await asyncio.wait_for(self._auth_answer(), timeout)
                if answer.get("type") != "auth_ack":
                    raise ConnectionError(str(answer.get("error", answer)))
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, OSError, ValueError) as e:
            self.w.connect_fail(self.id, f"{type(e).__name__}: {e}"[:200])
            self.held = {}
            if self.ws is not None:
                await self.ws.close()
            return False
        self.open = True
        self.w.connect_ok(self.id)
        self._reader = asyncio.create_task(self._read())
        return True

    async def _auth_answer(self) -> dict:
        """Read up to auth_ack or the error frame. Events of the scopes the connection already
        holds may come first (HS-6): they are recorded as received."""
        while True:
            msg = await self.ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return {"error": f"{msg.type.name} before the answer to auth"}
            try:
                frame = json.loads(msg.data)
            except ValueError:
                continue
            if is_auth_answer(frame):
                return frame
            if is_event(frame):
                self._received(frame)

    def _received(self, frame: dict) -> None:
        self.w.recv(self.id, frame)
        self.received += 1
        self.seen.add(frame["event_id"])
        key = (frame.get("scope"), frame.get("scope_id"))
        if key in self.held and isinstance(frame.get("pos"), str):
            self.held[key] = frame["pos"]

    async def _read(self) -> None:
        assert self.ws is not None
        code = None
        try:
            while True:
                await self._reading.wait()
                msg = await self.ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    continue
                if not isinstance(frame, dict):
                    continue
                if is_event(frame):
                    self._received(frame)
                elif frame.get("type") in _ANSWERS:
                    self._answer(frame)
        finally:
            code = self.ws.close_code
            self.open = False
            for waiters in self._pending.values():
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(ConnectionError("closed"))
            if not self._closing:
                self.w.closed(self.id, "server", code)

    def _answer(self, frame: dict) -> None:
        kind, _, outcome = frame["type"].partition("_")
        payload = frame.get("payload") if isinstance(frame.get("payload"), dict) else {}
        scope, sid = payload.get("scope"), payload.get("id")
        if kind == "subscribe":
            rec = {"answer": outcome, "error": payload.get("error")}
            self.w.subscribe_ok(self.id, scope, sid, "ack" if outcome == "ack" else "error", payload.get("error"),
                                payload["recovered"] if "recovered" in payload else ABSENT)
            if outcome == "ack":
                self.held.setdefault((scope, sid), None)
        else:
            rec = {"answer": outcome}
            self.w.unsubscribe_ok(self.id, scope, sid)
            if outcome == "ack":
                self.held.pop((scope, sid), None)
        waiters = self._pending.get((kind, scope, sid))
        if waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result({**rec, "frame": frame})

    async def _request(self, kind: str, scope: str, sid: str, payload: dict, timeout: float) -> dict | None:
        fut = asyncio.get_running_loop().create_future()
        self._pending.setdefault((kind, scope, sid), deque()).append(fut)
        try:
            await self.ws.send_str(json.dumps({"type": kind, "payload": payload}))
            return await asyncio.wait_for(fut, timeout)
        except (asyncio.TimeoutError, ConnectionError, aiohttp.ClientError):
            (self.w.subscribe_info if kind == "subscribe" else self.w.unsubscribe_info)(self.id, scope, sid)
            return None

    async def subscribe(self, scope: str, sid: str, since: Any = ABSENT, timeout: float = 5.0) -> dict | None:
        payload = {"scope": scope, "id": sid}
        if since is not ABSENT:
            payload["since"] = since
        self.w.subscribe_invoke(self.id, scope, sid, since)
        return await self._request("subscribe", scope, sid, payload, timeout)

    async def unsubscribe(self, scope: str, sid: str, timeout: float = 5.0) -> dict | None:
        self.w.unsubscribe_invoke(self.id, scope, sid)
        return await self._request("unsubscribe", scope, sid, {"scope": scope, "id": sid}, timeout)

    def pause(self) -> None:
        """Stop reading: frames pile up in the socket, as with a slow consumer (DEL-6)."""
        if not self.paused:
            self.w.pause(self.id)
            self._reading.clear()

    def resume(self) -> None:
        if self.paused:
            self.w.resume(self.id)
            self._reading.set()

    async def cut(self) -> None:
        """A network cut seen from the client: the socket dies without a close handshake."""
        if self.ws is None or self._reader is None or not self.open:
            return
        self._closing = True
        self.w.closed(self.id, "client", None)
        transport = getattr(self.ws._writer, "transport", None)  # aiohttp keeps no public handle
        if transport is not None:
            transport.abort()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        self.open = False

    async def wait_closed(self) -> None:
        if self._reader is not None:
            await asyncio.gather(asyncio.shield(self._reader), return_exceptions=True)

    async def close(self) -> None:
        if self.ws is None or self._reader is None:
            return
        if self.open:
            self._closing = True
            self._reading.set()
            code = None
            try:
                await asyncio.wait_for(self.ws.close(), 3.0)
                code = self.ws.close_code
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
                pass
            self.w.closed(self.id, "client", code)
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def publish(writer: HistoryWriter, session: aiohttp.ClientSession, node: str, token: str,
                  scope: str, sid: str, frame: dict, exclude_workspace: str | None = None,
                  timeout: float = 5.0) -> dict | None:
    """POST /_control/publish with an event_id of our own, so even a publish that timed out
    can be attributed; records invoke and ok / fail / info."""
    eid = str(ULID())
    frame = {**frame, "event_id": eid}
    writer.publish_invoke(node, scope, sid, eid, frame, exclude_workspace)
    body = {"scope": scope, "id": sid, "frame": frame}
    if exclude_workspace is not None:
        body["exclude_workspace"] = exclude_workspace
    try:
        async with session.post(node + "/_control/publish", json=body, headers={"Authorization": f"Bearer {token}"},
                                timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            text = await r.text()
            status = r.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        writer.publish_info(eid, f"{type(e).__name__}")
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        doc = {}
    if status == 200 and isinstance(doc, dict):
        writer.publish_ok(eid, doc.get("pos"))
        return {"event_id": eid, "pos": doc.get("pos")}
    writer.publish_fail(eid, status, str(doc.get("error") if isinstance(doc, dict) else text)[:200])
    return None

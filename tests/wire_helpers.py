"""Small helpers shared by the SUB / AZ / DEL / HL / CTL tests (not a test module).

Everything here talks to a node over real sockets: the control API, /health/realtime and
WebSocket clients. Every wait is bounded."""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from conformance.client import WsClient

WAIT = 5.0  # the contract's liveness bound (DEL-1)


def ack(kind: str, scope: str, id_: str) -> dict:
    """The exact subscribe_ack / unsubscribe_ack frame."""
    return {"type": f"{kind}_ack", "payload": {"scope": scope, "id": id_}}


def sub_error(scope: str, id_: str, error: str) -> dict:
    """The exact subscribe_error frame."""
    return {"type": "subscribe_error", "payload": {"scope": scope, "id": id_, "error": error}}


def delivered(frame: dict, published: dict, scope: str, scope_id: str) -> dict:
    """The exact frame a subscriber must receive for `frame` published to (scope, scope_id) (EV-2)."""
    return {**frame, "event_id": published["event_id"], "scope": scope, "scope_id": scope_id,
            "pos": published["pos"]}


def event_ids(client: WsClient) -> list[str]:
    return [f["event_id"] for f in client.events()]


def with_id(event_id: str) -> Callable[[Any], bool]:
    return lambda f: isinstance(f, dict) and f.get("event_id") == event_id


async def publish_and_receive(node, client: WsClient, scope: str, scope_id: str, frame: dict | None = None) -> dict:
    """Publish one event and return it as `client` received it."""
    frame = frame if frame is not None else {"type": "test:event", "payload": {"nonce": uuid.uuid4().hex}}
    published = await node.control.publish(scope, scope_id, frame)
    got = await client.wait_for(with_id(published["event_id"]), WAIT)
    assert got == delivered(frame, published, scope, scope_id)
    return got


async def marker(node, scope: str, scope_id: str, *clients: WsClient) -> dict:
    """Publish a marker to a scope every client holds and wait until each has received it.
    Events on one connection arrive in order, so whatever a client has not received before
    its marker was not delivered to it."""
    published = await node.control.publish(scope, scope_id, {"type": "test:marker", "payload": {}})
    for c in clients:
        await c.wait_for(with_id(published["event_id"]), WAIT)
    return published


async def poll(check: Callable[[], Any], timeout: float = WAIT, interval: float = 0.02) -> Any:
    """Call `check` (plain or async) until it returns something truthy; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if loop.time() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {last!r})")
        await asyncio.sleep(interval)


async def http(session: aiohttp.ClientSession, method: str, url: str, *, body: Any = None,
               data: bytes | None = None, headers: dict | None = None) -> tuple[int, Any, Any]:
    """One request; returns (status, parsed JSON or text, response headers)."""
    kw: dict = {"headers": headers or {}, "timeout": aiohttp.ClientTimeout(total=WAIT)}
    if data is not None:
        kw["data"] = data
    elif body is not None:
        kw["json"] = body
    async with session.request(method, url, **kw) as r:
        text = await r.text()
        try:
            doc = json.loads(text) if text else None
        except ValueError:
            doc = text
        return r.status, doc, r.headers


async def health(session: aiohttp.ClientSession, node, headers: dict | None = None) -> dict:
    status, doc, _ = await http(session, "GET", node.base + "/health/realtime", headers=headers)
    assert status == 200, (status, doc)
    return doc

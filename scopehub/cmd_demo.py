"""`scopehub demo`: start a node, connect a client, publish an event, show it arrive.

The quickest proof that a fresh checkout works; `scopehub sim` is the main job once it exists."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import uuid

import aiohttp
from aiohttp import web

from conformance.client import Control, WsClient
from reference.app import build_app, install_guard
from reference.config import ServerConfig


def register(sub) -> None:
    p = sub.add_parser("demo", help="start a node and show a client receiving an event",
                       description="Start one reference node on a free port, connect a client with a "
                       "token, subscribe it to a task, publish an event through the control API and "
                       "print what the client receives.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_demo())


async def _demo() -> int:
    token = secrets.token_hex(8)
    runner = web.AppRunner(build_app(ServerConfig(control_token=token)), access_log=None)
    await runner.setup()
    install_guard(runner)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    print(f"node listening on {base}")
    ws_id, user, issue, task = (str(uuid.uuid4()) for _ in range(4))
    try:
        async with aiohttp.ClientSession() as session:
            control = Control(session, base, token)
            await control.fixtures({"workspaces": {ws_id: {"slug": "demo", "members": [user]}},
                                    "issues": {issue: {"workspace": ws_id}}, "tasks": {task: {"issue": issue}}})
            client = await WsClient.connect(session, base, workspace_slug="demo", token=await control.token(user))
            print("client authenticated (auth_ack), auto-subscribed to its workspace and user")
            print("subscribe task ->", json.dumps(await client.subscribe("task", task)))
            published = await control.publish("task", task, {"type": "task:message", "payload": {"text": "hello"}})
            print("publish ->", json.dumps(published))
            frame = await client.wait_for(lambda f: isinstance(f, dict) and f.get("event_id") == published["event_id"])
            print("client received ->", json.dumps(frame))
            await client.close()
    finally:
        await runner.cleanup()
    return 0

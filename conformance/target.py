"""The implementation under test, seen only through its nodes' URLs and control API."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .client import Control, ControlError


class TargetError(Exception):
    """The target cannot be tested (unreachable, control API missing, fixtures refused): exit 2."""


@dataclass
class Target:
    urls: list[str]
    token: str
    session: aiohttp.ClientSession
    controls: list[Control] = field(default_factory=list)
    infos: list[dict] = field(default_factory=list)
    # What the probes found out (conformance/cases/probes.py): fact -> (holds, why, as
    # "REQ-ID: ..."), e.g. "event_id": (False, "EV-2: delivered frames carry no event_id").
    facts: dict[str, tuple[bool, str]] = field(default_factory=dict)
    # The processes of the nodes, when the suite started them itself (scopehub.cluster.Cluster):
    # only then may a case stop and start a node.
    cluster: Any = None
    fixtures: dict | None = None  # what was loaded last: a node that comes back gets it again

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, urls: list[str], token: str) -> "Target":
        t = cls([u.rstrip("/") for u in urls], token, session)
        t.controls = [Control(session, u, token) for u in t.urls]
        t.infos = list(await asyncio.gather(*(t._info(c) for c in t.controls)))
        return t

    @staticmethod
    async def _info(control: Control) -> dict:
        where = control.base
        try:
            info = await control.info()
        except ControlError as e:
            if e.status == 404:
                raise TargetError(f"{where} has no control API (404): start it with a control token") from None
            if e.status == 401:
                raise TargetError(f"{where} refused the control token (401)") from None
            raise TargetError(f"{where} answered GET /_control/info with {e.status}") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise TargetError(f"{where} is unreachable: {type(e).__name__}: {e}".rstrip(": ")) from None
        if not isinstance(info, dict) or not isinstance(info.get("capabilities"), list):
            raise TargetError(f"{where}: GET /_control/info did not return an object with capabilities")
        return info

    @property
    def capabilities(self) -> set[str]:
        """What every node claims."""
        caps = [set(i.get("capabilities", [])) for i in self.infos]
        return set.intersection(*caps) if caps else set()

    @property
    def info(self) -> dict:
        return self.infos[0]

    def timeout(self, name: str, default: float) -> float:
        value = (self.info.get("timeouts") or {}).get(name)
        return float(value) if isinstance(value, int | float) and value > 0 else default

    @property
    def send_queue(self) -> int:
        value = self.info.get("send_queue")
        return value if isinstance(value, int) and value > 0 else 256

    @property
    def retention(self) -> dict:
        return self.info.get("retention") or {}

    @property
    def implementation(self) -> str:
        i = self.info
        return f"{i.get('implementation', '?')} {i.get('version', '')}".strip()

    @property
    def restartable(self) -> bool:
        return self.cluster is not None

    async def restart_node(self, i: int, while_down: Callable[[], Awaitable[None]] | None = None, *,
                           reload: bool = True) -> None:
        """Stop node i (SIGTERM), run `while_down`, start it again at the same URL and (`reload`)
        give it the world again (a node may keep its fixtures only in memory)."""
        await self.stop_node(i)
        try:
            if while_down is not None:
                await while_down()
        finally:
            await self.start_node(i, reload=reload)

    async def stop_node(self, i: int, *, kill_after: float = 5.0) -> tuple[float, bool]:
        """SIGTERM node i and wait for it to exit, SIGKILL after `kill_after` seconds: (seconds it
        took, whether it had to be killed)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        code = await self.cluster.nodes[i].terminate(kill_after)
        return loop.time() - began, code == -signal.SIGKILL

    async def start_node(self, i: int, *, reload: bool = True) -> None:
        """Start node i again at the same URL and (`reload`) give it the world again (a node may
        keep its fixtures only in memory)."""
        await self.cluster.nodes[i].start()
        if reload and self.fixtures is not None:
            await self.controls[i].fixtures(self.fixtures)

    async def load(self, fixtures: dict) -> None:
        """PUT the world on every node; each must answer 200 (CTL-2)."""
        self.fixtures = fixtures
        for c in self.controls:
            try:
                await c.fixtures(fixtures)
            except ControlError as e:
                raise TargetError(f"{c.base} refused the fixtures: {e.status} {e.body}") from None
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                raise TargetError(f"{c.base} failed PUT /_control/fixtures: {type(e).__name__}") from None

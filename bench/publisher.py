"""Open-loop publishing at a fixed rate through the control API (conformance.client.Control).

The schedule is fixed in advance (event i is due at t0 + i / rate); a bounded number of
publish requests may be in flight, so a publisher that cannot keep up shows as an achieved
rate below the offered one instead of an ever-growing backlog."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from conformance.client import Control, ControlError

from . import frames


@dataclass
class PublishResult:
    offered_rate: float
    published: int  # acknowledged publishes
    failed: int
    t_start: float  # wall clock of the first publish
    t_end: float  # wall clock when the last publish was sent
    per_target: dict  # index into targets -> acknowledged publishes
    error: str = ""
    rtt_s: list = field(default_factory=list)  # round trip of every acknowledged publish call
    refused: dict = field(default_factory=dict)  # HTTP status -> failed publishes it answered

    @property
    def achieved_rate(self) -> float:
        span = self.t_end - self.t_start + 1.0 / self.offered_rate  # N events span (N-1)/rate
        return self.published / span if span > 0 else 0.0


async def publish_at_rate(controls: list[Control], targets: list[tuple[str, str]], rate: float, duration: float,
                          k: int, *, pad: str = "", max_inflight: int = 64, start_n: int = 0,
                          timeout: float = 10.0) -> PublishResult:
    """Publish `rate` events/s for `duration` s, round-robin over `targets` (scope, id) and over
    `controls` (nodes). Every event is a frames.event(k, ...)."""
    loop = asyncio.get_running_loop()
    total = max(1, int(round(rate * duration)))
    sem = asyncio.Semaphore(max_inflight)
    per_target: dict[int, int] = {}
    counts = {"ok": 0, "failed": 0, "error": ""}
    rtt: list[float] = []
    refused: dict[int, int] = {}
    tasks: set[asyncio.Task] = set()

    async def one(i: int) -> None:
        try:
            ti = i % len(targets)
            scope, sid = targets[ti]
            control = controls[(i // len(targets)) % len(controls)] if len(controls) > 1 else controls[0]
            t = time.perf_counter()
            await control.publish(scope, sid, frames.event(k, start_n + i, pad), timeout=timeout)
            rtt.append(time.perf_counter() - t)
            counts["ok"] += 1
            per_target[ti] = per_target.get(ti, 0) + 1
        except Exception as e:  # noqa: BLE001 - counted and reported
            counts["failed"] += 1
            if isinstance(e, ControlError):
                refused[e.status] = refused.get(e.status, 0) + 1
            counts["error"] = f"{type(e).__name__}: {e}"[:200]
        finally:
            sem.release()

    t0 = loop.time()
    wall0 = time.time()
    i = 0
    while i < total:
        due = min(total, int((loop.time() - t0) * rate) + 1)
        while i < due:
            await sem.acquire()
            task = loop.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
    wall1 = time.time()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    return PublishResult(rate, counts["ok"], counts["failed"], wall0, wall1, per_target, counts["error"], rtt, refused)

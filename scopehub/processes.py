"""Run and control the OS processes of cluster nodes (for the simulator's faults and the tests).

A `NodeProcess` spawns its command in its own process group (start_new_session=True), reads its
merged stdout/stderr until the ready line (by default `listening on http://HOST:PORT`, what
`scopehub serve` prints) and returns the base URL captured from it. From then on a background
task keeps draining the output into the log file (or discards it), so the child never blocks on a
full pipe. Signals go to the whole process group, so wrappers and their children go together.
Every control method is a no-op when the process is already gone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import time
from typing import IO

__all__ = ["NodeProcess", "NodeStartError"]

_CHUNK = 65536
_MAX_LINE = 65536


class NodeStartError(RuntimeError):
    """The node exited, or printed no ready line in time; the message is one line ending with
    the last lines of its output."""


class NodeProcess:
    """One node as an OS process.

    `argv` must pin the port (e.g. `--port 8101`) if you want `restart()` to come back at the
    same URL; `env` entries are added to the current environment (PYTHONUNBUFFERED=1 is set
    unless given, so Python children print their ready line at once).
    """

    def __init__(self, argv: list[str], name: str, env: dict[str, str] | None = None,
                 log_path: str | None = None,
                 ready_pattern: str | re.Pattern[str] = r"listening on (http://\S+)",
                 tail_lines: int = 20, probe=None, url: str | None = None) -> None:
        if not argv:
            raise ValueError("NodeProcess needs a non-empty argv")
        self.argv = [str(a) for a in argv]
        self.name = name
        self.env = dict(env) if env else {}
        self.log_path = log_path
        self.ready_re = re.compile(ready_pattern)
        # A node that prints no ready line (another implementation): ready when `probe()` (an
        # async callable) answers True; its URL is then `url`.
        self.probe, self.probe_url = probe, url
        self._proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self._base_url: str | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)

    # ---- state

    @property
    def pid(self) -> int | None:
        """PID of the current (or last) child; also its process group id."""
        return self._proc.pid if self._proc is not None else None

    @property
    def base_url(self) -> str | None:
        """The URL captured from the last ready line (kept after the process exits)."""
        return self._base_url

    @property
    def running(self) -> bool:
        """True until the child has been reaped (a paused child is running; a just-killed one is
        until the event loop has reaped it: await wait() to be sure)."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    def output_tail(self) -> list[str]:
        """The last non-empty lines the child printed (stdout and stderr merged)."""
        return list(self._tail)

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}" if self._proc else "new"
        return f"<NodeProcess {self.name} pid={self.pid} {self._base_url or '-'} {state}>"

    # ---- lifecycle

    async def start(self, timeout: float = 20) -> str:
        """Spawn the child and return the base URL from its ready line. If it exits or `timeout`
        passes first, it is killed and NodeStartError raised. When already running, returns
        the current base URL."""
        if self.running and self._base_url:
            return self._base_url
        await self.terminate()  # a half-started or exited previous child: reap it, finish its drain
        self._tail.clear()
        self._base_url = None
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        log = self._open_log()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True,
            )
        except OSError as e:
            if log is not None:
                log.close()
            raise NodeStartError(f"{self.name}: cannot run {self.argv[0]}: {e}") from None
        self._proc = proc
        if log is not None:
            log.write(f"--- {self.name} pid {proc.pid} started {time.strftime('%H:%M:%S')}\n"
                      .encode())
            log.flush()
        ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._drain = asyncio.create_task(self._drain_output(proc, ready, log),
                                          name=f"drain {self.name}")
        try:
            if self.probe is not None:
                url = await asyncio.wait_for(self._probe_until_ready(proc, ready), timeout)
            else:
                url = await asyncio.wait_for(asyncio.shield(ready), timeout)
        except TimeoutError:
            url, why = None, (f"printed no line matching /{self.ready_re.pattern}/ within "
                              f"{timeout:g}s (killed)")
        except BaseException:  # cancelled while starting: do not leave the child behind
            await self._kill_and_reap()
            raise
        else:
            why = ""
        if url is None:
            if not why:  # output ended: the child exited (or closed its output) before ready
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 1.0)
                why = (f"exited with code {proc.returncode} before its ready line"
                       if proc.returncode is not None else "closed its output before its ready line (killed)")
            await self._kill_and_reap()
            tail = " | ".join(list(self._tail)[-5:])
            if len(tail) > 600:
                tail = "..." + tail[-600:]
            raise NodeStartError(f"{self.name}: {why}: {tail or 'no output'}")
        self._base_url = url
        return url

    async def _probe_until_ready(self, proc, ready: asyncio.Future) -> str | None:
        while proc.returncode is None and not (ready.done() and ready.result() is None):
            try:
                if await self.probe():
                    return self.probe_url
            except Exception:  # not listening yet
                pass
            await asyncio.sleep(0.1)
        return None  # exited (or closed its output) before answering

    async def restart(self, timeout: float = 20) -> str:
        """terminate(), then start() with the same argv. The URL must stay the same (pin the
        port in argv); if it does not, the new child is terminated and NodeStartError raised."""
        before = self._base_url
        await self.terminate()
        url = await self.start(timeout)
        if before and url != before:
            await self.terminate()
            raise NodeStartError(f"{self.name}: came back on {url} instead of {before}; "
                                 f"restart() needs a fixed port in argv")
        return url

    def kill(self) -> None:
        """SIGKILL (the process group). The event loop reaps it; await wait() to see it gone."""
        self._signal(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: sockets stay open, nothing is answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        self._signal(signal.SIGCONT)

    async def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the child has exited and return its exit code (None if none was started).
        Raises TimeoutError when `timeout` passes first."""
        proc = self._proc
        if proc is None:
            return None
        await asyncio.wait_for(proc.wait(), timeout)
        return proc.returncode

    async def terminate(self, timeout: float = 5) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; always waited for."""
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)  # a paused child must run to act on SIGTERM
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await proc.wait()
        await self._finish_drain()
        return proc.returncode

    async def __aenter__(self) -> NodeProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.terminate()

    # ---- internals

    def _signal(self, sig: int) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:  # reaped: its PID may be reused
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # the child left its group (setpgid): signal just the child
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    async def _kill_and_reap(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._signal(signal.SIGKILL)
        await proc.wait()
        await self._finish_drain()

    async def _finish_drain(self) -> None:
        """Let the drain task read to EOF. If something else in the group still holds the pipe
        after the child exited, kill the group and, failing that, stop draining."""
        task, self._drain = self._drain, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 1.0)
            return
        except TimeoutError:
            pass
        proc = self._proc
        if proc is not None:  # the group outlived its leader: pgid is still reserved, kill it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(task), 1.0)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _open_log(self) -> IO[bytes] | None:
        if not self.log_path:
            return None
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        return open(self.log_path, "ab")  # noqa: SIM115 - closed by the drain task

    async def _drain_output(self, proc: asyncio.subprocess.Process,
                            ready: asyncio.Future[str | None], log: IO[bytes] | None) -> None:
        stream = proc.stdout
        assert stream is not None
        buf = b""
        try:
            while True:
                chunk = await stream.read(_CHUNK)
                if not chunk:
                    break
                if log is not None:
                    log.write(chunk)
                    log.flush()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                if len(buf) > _MAX_LINE:  # no newline for a long time: take it as a line
                    lines.append(buf)
                    buf = b""
                for raw in lines:
                    self._line(raw, ready)
            if buf:
                self._line(buf, ready)
        except OSError:
            pass
        finally:
            if not ready.done():
                ready.set_result(None)
            if log is not None:
                log.close()

    def _line(self, raw: bytes, ready: asyncio.Future[str | None]) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        if not text.strip():
            return
        self._tail.append(text[:2000])
        if not ready.done():
            m = self.ready_re.search(text)
            if m:
                ready.set_result(m.group(1) if self.ready_re.groups else m.group(0))

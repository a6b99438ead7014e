"""One fuzzing connection: a raw RFC 6455 socket (conformance/rawws.py, so any bytes can be sent)
and a reader that sorts what the server sends into answers, events and the close.

The reader answers transport pings (IN-5) and a close frame (RFC 6455), and records whether the
connection ended with a close frame or just went (EOF, reset): the latter is what a crashed
connection handler looks like."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from ..rawws import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawWebSocket, encode_frame


class Garbled(str):
    """A server frame that is not a JSON text frame (binary, not JSON): shown as it came."""


class FuzzConn:
    def __init__(self, raw: RawWebSocket, node: int, name: str):
        self.raw, self.node, self.name = raw, node, name
        self.answers: list[Any] = []  # every non-event frame, in arrival order
        self.events: list[dict] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_frame = False  # the server sent a close frame (else: EOF or reset)
        self.ended = False
        self.sent_close = False
        self.granted: set[tuple[str, str]] = set()  # scopes it held at some point (AZ-4)
        self.seen = 0  # answers already judged
        self.found: list = []  # findings not yet reported (judge.Finding)
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, workspace: str, node: int, name: str, timeout: float = 5.0) -> "FuzzConn":
        raw = await RawWebSocket.connect(url, {"workspace_id": workspace}, timeout)
        return cls(raw, node, name)

    async def _read(self) -> None:
        try:
            while True:
                op, data = await self.raw.recv_frame()
                if op == OP_TEXT:
                    try:
                        frame = json.loads(data)
                    except ValueError:
                        frame = Garbled(data.decode("utf-8", "backslashreplace"))
                    (self.events if isinstance(frame, dict) and "event_id" in frame else self.answers).append(frame)
                elif op == OP_PING:
                    self.write(encode_frame(OP_PONG, data))
                elif op == OP_CLOSE:
                    self.close_frame = True
                    self.close_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                    self.close_reason = data[2:].decode("utf-8", "replace")
                    if not self.sent_close:  # echo it (RFC 6455 5.5.1)
                        self.write(encode_frame(OP_CLOSE, data[:2]))
                        self.sent_close = True
                    return
                elif op != OP_PONG:
                    self.answers.append(Garbled(f"<opcode {op}{' binary' if op == OP_BINARY else ''}: {data[:80]!r}>"))
                self._changed.set()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the socket went without a close frame
        finally:
            self.ended = True
            self._changed.set()

    def write(self, data: bytes) -> None:
        if not self.raw.writer.is_closing():
            self.raw.writer.write(data)

    async def send(self, data: bytes, timeout: float = 10.0) -> None:
        """Write and wait (bounded) until the socket takes it; a server that closed meanwhile is
        judged by what the reader saw."""
        try:
            self.write(data)
            await asyncio.wait_for(self.raw.writer.drain(), timeout)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass

    async def until(self, pred, timeout: float) -> bool:
        """Wait until pred() holds (True) or the connection ended or `timeout` passed (pred())."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._changed.clear()
            if pred():
                return True
            if self.ended:
                return pred()
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                return pred()

    async def close(self, timeout: float = 2.0) -> None:
        """The close handshake (bounded), then the socket goes."""
        if not self.ended and not self.sent_close:
            self.sent_close = True
            await self.send(encode_frame(OP_CLOSE, struct.pack("!H", 1000)), timeout)
            await self.until(lambda: False, timeout)
        await self.abort()

    async def abort(self) -> None:
        self.raw.writer.transport.abort()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)

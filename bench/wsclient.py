"""A lean WebSocket client for the load generator: the handshake by hand, then frames parsed
straight in the protocol's data_received, one call per frame into a callback, no task switch
and no message object per frame.

aiohttp's client costs roughly twice as much CPU per received frame (a future, a task step
and a WSMessage per frame); on a machine where the load generator shares the cores with the
server, every cycle it spends is one the server does not get. The load generator uses this
client by default and aiohttp's with `--client aiohttp` (bench.loadgen handles both).

Only what a subscriber needs: text frames (never fragmented by the servers measured here),
pings answered with pongs, masked client frames for the few messages it sends."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.3: a client masks every frame)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    masked = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    return head + key + masked


class WsProtocol(asyncio.Protocol):
    def __init__(self, on_text: Callable[[bytes], None], request: bytes) -> None:
        self.on_text = on_text
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self._open = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"closed before the upgrade: {exc}"))
        if not self.closed.done():
            self.closed.set_result(exc)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self._open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:buf.find(b"\r\n")])
            if b" 101 " not in status + b" ":
                self.upgraded.set_exception(ConnectionError(f"upgrade refused: {status.decode(errors='replace')}"))
                self.transport.close()
                return
            del buf[:end + 4]
            self._open = True
            self.upgraded.set_result(None)
        pos, n = 0, len(buf)
        on_text = self.on_text
        while n - pos >= 2:
            b0, ln = buf[pos], buf[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln, hl = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln, hl = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            end = pos + hl + ln
            if end > n:
                break
            opcode = b0 & 0x0F
            if opcode == _TEXT:
                on_text(bytes(buf[pos + hl:end]))
            elif opcode == _PING:
                self.transport.write(_client_frame(_PONG, bytes(buf[pos + hl:end])))
            elif opcode == _CLOSE:
                self.transport.write(_client_frame(_CLOSE, bytes(buf[pos + hl:pos + hl + 2])))
                self.transport.close()
            pos = end
        if pos:
            del buf[:pos]

    def send_text(self, text: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_client_frame(_TEXT, text.encode()))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_client_frame(_CLOSE, (1000).to_bytes(2, "big")))
            self.transport.close()


async def connect(url: str, params: dict, on_text: Callable[[bytes], None], *, cookie: str | None = None,
                  timeout: float = 30.0) -> WsProtocol:
    """Open url + "/ws" with these query params; on_text gets each text frame's payload."""
    parts = urlsplit(url)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {parts.path.rstrip('/')}/ws?{urlencode(params)} HTTP/1.1", f"Host: {parts.netloc}",
             "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if cookie:
        lines.append(f"Cookie: multica_auth={cookie}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(lambda: WsProtocol(on_text, request), parts.hostname, parts.port or 80), timeout)
    await asyncio.wait_for(proto.upgraded, timeout)
    return proto

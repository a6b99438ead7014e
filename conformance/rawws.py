"""A raw RFC 6455 client over a TCP stream: masked frames of any shape, fragments included.

aiohttp's client cannot send fragmented messages; the inbound-limit checks (IN-4) need them.
Used by the suite's cases and by the project's own tests."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import struct
from urllib.parse import urlencode, urlsplit

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class UpgradeRefused(Exception):
    pass


def padded(prefix: str, size: int, pad_char: str = "x") -> bytes:
    """A JSON object of exactly `size` UTF-8 bytes: `prefix` (an object's opening with at least one
    member, without the closing brace) plus a "pad" member."""
    head = (prefix + ',"pad":"').encode()
    tail = b'"}'
    room = size - len(head) - len(tail)
    unit = len(pad_char.encode())
    data = head + (pad_char * (room // unit) + "x" * (room % unit)).encode() + tail
    if len(data) != size:
        raise ValueError(f"cannot pad {prefix!r} to {size} bytes")
    return data


def ping_of(size: int, pad_char: str = "x") -> bytes:
    return padded('{"type":"ping"', size, pad_char)


def auth_of(token: str, size: int) -> bytes:
    return padded('{"type":"auth","payload":{"token":"%s"}' % token, size)


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One client frame (masked, as a client must)."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    mask = os.urandom(4)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
    return header + mask + masked


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, base_url: str, params: dict, timeout: float = 5.0):
        u = urlsplit(base_url)
        port = u.port or (443 if u.scheme == "https" else 80)
        tls = ssl.create_default_context() if u.scheme == "https" else None
        reader, writer = await asyncio.wait_for(asyncio.open_connection(u.hostname, port, ssl=tls), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = (u.path.rstrip("/") or "") + "/ws"
        writer.write((f"GET {path}?{urlencode(params)} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise UpgradeRefused(head.splitlines()[0].decode(errors="replace"))
        return cls(reader, writer)

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        self.writer.write(encode_frame(opcode, payload, fin=fin))

    def send_fragmented(self, opcode: int, payload: bytes, sizes: list[int]) -> None:
        if sum(sizes) != len(payload):
            raise ValueError("fragment sizes must add up to the payload")
        offset = 0
        for i, size in enumerate(sizes):
            self.send_frame(opcode if i == 0 else OP_CONT, payload[offset:offset + size], fin=i == len(sizes) - 1)
            offset += size

    async def flush(self, timeout: float = 5.0) -> None:
        try:
            await asyncio.wait_for(self.writer.drain(), timeout)
        except ConnectionError:
            pass  # the server may close while we still write; what it sent first is still readable

    async def recv_frame(self) -> tuple[int, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        if b1 & 0x80:
            await self.reader.readexactly(4)  # servers must not mask; read the key anyway
        return b0 & 0x0F, await self.reader.readexactly(n)

    @staticmethod
    def close_code_of(data: bytes) -> int | None:
        return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None

    async def close(self) -> None:
        self.writer.close()

"""RFC 6455 rules aiohttp's server-side reader lets through: client frames must be masked
(section 5.1: "the server MUST close the connection upon receiving a frame that is not
masked") and a close frame's status code must be one an endpoint may send (section 7.4:
1000-1003, 1007-1014, 3000-4999). Either violation fails the connection with 1002.

`StrictWebSocketResponse` puts a frame audit in front of aiohttp's reader: it reads only the
frame headers (and a close frame's code) and hands every byte on unchanged."""

from __future__ import annotations

import struct

from aiohttp import WSCloseCode, web, web_ws
from aiohttp.http_websocket import WebSocketError

_LEN16 = struct.Struct("!H").unpack_from
_LEN64 = struct.Struct("!Q").unpack_from
OP_CLOSE = 0x8


def close_code_allowed(code: int) -> bool:
    """Codes a peer may put in a close frame (1004-1006 and 1015 are reserved, 1016-2999 are
    the IANA's to assign, 5000 and up do not exist)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class FrameAudit:
    """Follows frame boundaries across reads; `check` returns the first violation or None."""

    __slots__ = ("_head", "_skip")

    def __init__(self) -> None:
        self._head = bytearray()  # the frame header being read, plus a close frame's payload
        self._skip = 0  # payload bytes of the current frame still to pass over

    def check(self, data: bytes) -> str | None:
        i, n = 0, len(data)
        while True:
            if self._skip:
                if i >= n:
                    return None
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            head = self._head
            need = self._need()
            if len(head) < need:
                if i >= n:
                    return None
                take = min(need - len(head), n - i)
                head += data[i:i + take]
                i += take
                continue
            if not head[1] & 0x80:
                return "client frame not masked"
            size, offset = self._size()
            if head[0] & 0x0F == OP_CLOSE and size >= 2:
                mask = head[offset - 4:offset]
                code = ((head[offset] ^ mask[0]) << 8) | (head[offset + 1] ^ mask[1])
                if not close_code_allowed(code):
                    return f"close code {code} is not allowed"
                self._skip = size - 2
            else:
                self._skip = size
            self._head = bytearray()

    def _need(self) -> int:
        """How many bytes of `_head` the current frame needs before it can be judged: its first
        two bytes, then (masked) its whole header, and a close frame's code."""
        head = self._head
        if len(head) < 2 or not head[1] & 0x80:
            return 2
        length = head[1] & 0x7F
        offset = 6 + (2 if length == 126 else 8 if length == 127 else 0)
        if len(head) < offset:
            return offset
        size, _ = self._size()
        return offset + 2 if head[0] & 0x0F == OP_CLOSE and size >= 2 else offset

    def _size(self) -> tuple[int, int]:
        """(payload length, where the payload starts) of a complete, masked header."""
        head = self._head
        length = head[1] & 0x7F
        if length == 126:
            return _LEN16(head, 2)[0], 8
        if length == 127:
            return _LEN64(head, 2)[0], 14
        return length, 6


class _AuditedReader:
    """aiohttp's WebSocketReader behind a FrameAudit; built where aiohttp builds its reader."""

    def __init__(self, queue, *args, **kwargs) -> None:
        self._queue = queue
        self._reader = _READER(queue, *args, **kwargs)
        self._audit = FrameAudit()
        self._failed = False

    def feed_eof(self) -> None:
        self._reader.feed_eof()

    def feed_data(self, data) -> tuple[bool, bytes]:
        if self._failed:
            return True, b""
        problem = self._audit.check(bytes(data))
        if problem is not None:
            # As aiohttp's reader does for its own protocol errors: receive() answers it with a
            # close frame carrying the code, then ends the connection.
            self._failed = True
            self._queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, problem))
            return True, b""
        return self._reader.feed_data(data)


_READER = web_ws.WebSocketReader


class StrictWebSocketResponse(web.WebSocketResponse):
    def _post_start(self, request, protocol, writer) -> None:
        # aiohttp builds its reader in _post_start from this module-level name; swapping it for
        # the duration of this synchronous call affects no other response.
        web_ws.WebSocketReader = _AuditedReader
        try:
            super()._post_start(request, protocol, writer)
        finally:
            web_ws.WebSocketReader = _READER

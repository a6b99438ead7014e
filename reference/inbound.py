"""Reading what a peer sends: JSON as RFC 8259 defines it, text as valid Unicode.

Python's `json` is more lenient than the contract: it reads `NaN` and `Infinity`, detects
UTF-16 and UTF-32 in bytes, and lets `"\\ud800"` (a lone surrogate) through as a string that
cannot be encoded again. Every inbound document (WebSocket frames, control API bodies) and
every string taken from one goes through here, so none of that reaches a handler (IN-3)."""

from __future__ import annotations

import json
import math


class NotJson(ValueError):
    """Not a JSON text (RFC 8259), or beyond what the parser takes (nested too deep)."""


def _no_constant(name: str):
    raise NotJson(f"{name} is not JSON")


def _int(digits: str) -> int | float:
    # Python refuses to convert more than 4,300 digits; such a number is still valid JSON, and
    # no field of a client's frame needs its value: keep the frame readable (IN-3).
    return int(digits) if len(digits) <= 4000 else float(digits)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: valid JSON, but no JSON encoder can write it back
        raise NotJson(f"{text[:20]} is out of range")
    return value


def parse(data: str | bytes, *, stored: bool = False) -> object:
    """The JSON value of a frame or body. Bytes must be UTF-8 (no BOM: RFC 8259 section 8.1).
    Raises NotJson. Nesting deeper than Python's parser goes (about 1,000 levels) is NotJson:
    docs/protocol.md, IN-3. `stored`: the document is kept and sent on (a published event), so
    every number must survive being written back as JSON."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")  # strict: encoded surrogates are not UTF-8
        except UnicodeDecodeError:
            raise NotJson("not UTF-8") from None
    try:
        if stored:
            return json.loads(data, parse_constant=_no_constant, parse_float=_finite)
        return json.loads(data, parse_constant=_no_constant, parse_int=_int)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise NotJson(str(e)[:80]) from None


def is_text(value: object) -> bool:
    """A string that is valid Unicode: it can be encoded as UTF-8 (no lone surrogate)."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

"""A step's bytes: its document rendered as JSON text with the run's ids and tokens, encoded,
mangled or padded as drawn, and cut into RFC 6455 frames (masked, as a client's are)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from ..rawws import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, encode_frame, padded
from .gen import Raw, Ref, Step, TokenRef

_DIGITS = {c: chr(0x0660 + int(c)) for c in "0123456789"}  # ARABIC-INDIC DIGITs: int() takes them, a UUID parser must not
_FULLWIDTH = {c: chr(0xFF10 + int(c)) for c in "0123456789"}


@dataclass
class Values:
    """What a run knows: world ids by name (for the connection's identity), tokens by kind, and
    positions the target gave out."""

    ids: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)
    live: dict[str, str] = field(default_factory=dict)  # positions the canary's publishes got, kept current

    def ref(self, r: Ref) -> str:
        value = self.ids.get(r.name) or self.live.get(r.name) or "0-0.000000000000"
        return disguise(value, r.how)


def disguise(value: str, how: str) -> str:
    if how == "upper":
        return value.upper()
    if how == "braces":
        return "{" + value + "}"
    if how == "urn":
        return "urn:uuid:" + value
    if how == "nohyphen":
        return value.replace("-", "")
    if how == "unicode-digits":
        return "".join(_DIGITS.get(c, c) for c in value)
    if how == "fullwidth":
        return "".join(_FULLWIDTH.get(c, c) for c in value)
    if how == "padded":
        return " " + value
    if how == "truncated":
        return value[:-1]
    if how == "surrogate":
        return value + "\ud800"
    return value


def dump(doc: Any, ascii_: bool, values: Values) -> str:
    """JSON text of a document; placeholders filled, Raw inserted as it is."""
    if isinstance(doc, Raw):
        return doc.text
    if isinstance(doc, Ref):
        return json.dumps(values.ref(doc), ensure_ascii=ascii_)
    if isinstance(doc, TokenRef):
        return json.dumps(values.tokens[doc.kind], ensure_ascii=ascii_)
    if isinstance(doc, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=ascii_) + ":" + dump(v, ascii_, values)
                              for k, v in doc.items()) + "}"
    if isinstance(doc, list | tuple):
        return "[" + ",".join(dump(v, ascii_, values) for v in doc) + "]"
    return json.dumps(doc, ensure_ascii=ascii_)


def _mangle(text: str, how: str, at: int) -> str:
    if how == "truncate":
        return text[: at % max(1, len(text))]
    if how == "trailing-comma":
        return text[:-1] + ",}" if text.endswith("}") else text + ","
    if how == "single-quotes":
        return text.replace('"', "'")
    if how == "garbage-after":
        return text + "}x"
    if how == "garbage-before":
        return "x" + text
    if how == "unquoted-key":
        return text.replace('"type"', "type", 1) if '"type"' in text else "{type:1}"
    return text


def payload(step: Step, values: Values) -> bytes:
    """The message's payload (all fragments together)."""
    if step.doc is None:
        return step.raw
    text = _mangle(dump(step.doc, step.ascii, values), *step.mangle)
    if step.pad_to:
        if text.endswith("}") and len(text) > 2:
            return padded(text[:-1], step.pad_to, step.pad_char)
        return text.encode()
    if step.encoding == "surrogatepass":
        return text.encode("utf-8", "surrogatepass")  # lone surrogates as ED xx xx: invalid UTF-8
    try:
        return text.encode(step.encoding if step.kind == "binary" else "utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a UTF-16/32 rendering: escaped instead
        return dump(step.doc, True, values).encode(step.encoding if step.kind == "binary" else "utf-8")


def _split(data: bytes, parts: int) -> list[bytes]:
    n = max(1, min(parts, len(data) or 1))
    size = -(-len(data) // n) or 1
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def _unmasked(opcode: int, data: bytes) -> bytes:
    n = len(data)
    head = struct.pack("!BB", 0x80 | opcode, n) if n < 126 else struct.pack("!BBH", 0x80 | opcode, 126, n)
    return head + data


def wire(step: Step, data: bytes) -> bytes:
    """The bytes written for a step whose payload is `data`."""
    if step.kind in ("ping", "pong"):
        return encode_frame(OP_PING if step.kind == "ping" else OP_PONG, data[:125])
    if step.kind == "violation":
        return _violation(step.violation)
    opcode = OP_TEXT if step.kind == "text" else OP_BINARY
    parts = _split(data, step.fragments) if step.fragments > 1 else [data]
    out = []
    for i, part in enumerate(parts):
        out.append(encode_frame(opcode if i == 0 else OP_CONT, part, fin=i == len(parts) - 1))
        if step.ping_between and i == 0 and len(parts) > 1:
            out.append(encode_frame(OP_PING, b"between"))
    return b"".join(out)


def _violation(kind: str) -> bytes:
    """One RFC 6455 protocol error (close code 1002 by RFC 6455 section 7.4.1)."""
    ping = b'{"type":"ping"}'
    if kind == "continuation-first":
        return encode_frame(OP_CONT, ping)
    if kind == "control-too-long":
        return encode_frame(OP_PING, b"x" * 126)
    if kind == "fragmented-control":
        return encode_frame(OP_PING, b"a", fin=False) + encode_frame(OP_CONT, b"b")
    if kind == "reserved-opcode":
        return encode_frame(0x3, ping)
    if kind == "rsv1":  # no extension was negotiated
        frame = bytearray(encode_frame(OP_TEXT, ping))
        frame[0] |= 0x40
        return bytes(frame)
    if kind == "unmasked":
        return _unmasked(OP_TEXT, ping)
    if kind == "text-inside-fragments":  # a new data message before the fragmented one ended
        return encode_frame(OP_TEXT, ping[:5], fin=False) + encode_frame(OP_TEXT, ping)
    if kind == "bad-close-code":  # 1005 must never be sent (RFC 6455 section 7.4.1)
        return encode_frame(OP_CLOSE, struct.pack("!H", 1005))
    if kind == "close-code-5000":  # no such code (IN-6: 5000 and above)
        return encode_frame(OP_CLOSE, struct.pack("!H", 5000))
    if kind == "close-1-byte":
        return encode_frame(OP_CLOSE, b"\x03")
    raise ValueError(kind)


def describe(step: Step, data: bytes, limit: int = 240) -> str:
    """A step as the report shows it: how it was framed, and its payload (abridged)."""
    if step.kind == "violation":
        return f"protocol violation: {step.violation}"
    how = [step.kind]
    if step.kind == "binary" and step.doc is not None:
        how.append(step.encoding)
    if step.encoding == "surrogatepass":
        how.append("lone surrogates as raw bytes")
    if step.mangle[0]:
        how.append(f"mangled: {step.mangle[0]}")
    if step.fragments > 1:
        how.append(f"{step.fragments} fragments" + (" with a ping between" if step.ping_between else ""))
    how.append(f"{len(data)} bytes")
    try:
        text = data.decode("utf-8") if step.kind == "text" or step.encoding in ("utf-8",) else None
    except UnicodeDecodeError:
        text = None
    shown = repr(text if text is not None else data)
    if len(shown) > limit:
        shown = shown[:limit] + f"... ({len(shown) - limit} more characters)"
    return f"[{', '.join(how)}] {shown}"


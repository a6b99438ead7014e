"""What the contract lets a target do with one inbound message: the oracle.

It reads the message as the contract does, not as Python does: JSON is RFC 8259 (UTF-8; no NaN or
Infinity; integers of any length), a text frame must be valid UTF-8 (RFC 6455: else close 1007), a
message over 65,536 bytes closes with 1009 (IN-4). Then it says which answer is owed (IN-1..3,
SUB-1..4, REP-2/5, HS-3/4) and which close codes the message may cause.

Where the contract leaves room, the expectation is `maybe` or accepts several answers:
a binary frame of UTF-8 JSON (Multica reads binary frames as text; a target may ignore them),
nesting deeper than a parser's limit, a
disguised UUID (upper case, braces, `urn:uuid:`, no hyphens: a UUID parser may accept them), a
`since` string that is no position (REP-5: `invalid payload` or parsed as unknown), an id with a
lone surrogate (echoed as it is, or with U+FFFD as Go's encoder writes it)."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..frames import is_answer
from .gen import LIMIT

AUTH_TEXTS = ("auth timeout or read error", "expected auth message as first frame", "invalid token",
              "invalid claims", "account disabled", "not a member of this workspace")
EXPECTED_AUTH = "expected auth message as first frame"
INVALID_TOKEN = "invalid token"
SCOPES = ("workspace", "user", "task", "chat")
ALWAYS_ALLOWED_CLOSES = {1001: "NODE-5", 1013: "DEL-6"}  # going away, slow consumer: at any time


class Invalid:
    """Not JSON by RFC 8259 (or not UTF-8): IN-3 ignores it."""


class Unsure:
    """Valid or not depending on a parser's limits (nesting depth): anything or nothing may answer."""


INVALID, UNSURE = Invalid(), Unsure()


class _BigNumber(str):
    """A number beyond a double's range: valid JSON, but RFC 8259 (section 6) lets a parser refuse
    it, so the message holding it may be ignored. Never a string value."""


class _Limits:
    """Set while parsing when the text is valid JSON that a parser may still refuse."""

    hit = False


def _int(text: str):
    if len(text) > 300:
        _Limits.hit = True
        return _BigNumber(text)
    return int(text)


def _float(text: str):
    value = float(text)
    if math.isinf(value):
        _Limits.hit = True
        return _BigNumber(text)
    return value


def _reject(name: str):
    raise ValueError(f"{name} is not JSON")


MAX_DEPTH = 20_000  # deeper than anything gen draws; a target's parser may stop sooner (Go's: 10,000)


def parse_json(text: str) -> tuple[Any, bool]:
    """(document or INVALID, whether a parser's own limits (numbers, nesting) may refuse it)."""
    _Limits.hit = False
    deep = text.count("[") + text.count("{") > 500  # at most that deep: lift the recursion limit, and say so
    old = sys.getrecursionlimit()
    try:
        if deep:
            sys.setrecursionlimit(max(old, MAX_DEPTH + 1000))
        doc = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_reject)
    except RecursionError:
        return UNSURE, True
    except ValueError:
        return INVALID, False
    finally:
        sys.setrecursionlimit(old)
    return doc, _Limits.hit or deep


def _is_str(v: Any) -> bool:
    return isinstance(v, str) and not isinstance(v, _BigNumber)


@dataclass
class Expect:
    """What one inbound message is owed. `answer`: "none" (IN-3: ignored), "must" (exactly one
    answer, accepted by `ok`), "maybe" (one answer accepted by `ok`, or none)."""

    answer: str
    want: str  # what is owed, for the report
    reqs: tuple[str, ...]
    ok: Callable[[Any], bool] = lambda f: False
    closes: dict[int, str] = field(default_factory=dict)  # close codes it may cause -> requirement
    must_close: bool = False  # the connection must close (what follows is not answered)
    grants: tuple[tuple[str, str], ...] = ()  # scopes the connection may hold after it (AZ-4)
    auth_ok: bool | None = None  # pre-auth: True auth succeeds, False it fails, None either


@dataclass
class ConnView:
    """What the oracle needs to know about a connection."""

    workspace: str
    user: str
    allowed: dict[str, set[str]]  # scope type -> ids the world allows this connection (task, chat)
    resume: bool = True  # the target claims `resume` (REP-2's recovered field)


# -- reading a message ----------------------------------------------------------------------------------

def read(kind: str, data: bytes) -> tuple[Any, bool] | Expect:
    """The document a message holds and whether every target must read it so (False: a binary
    frame, a byte order mark), or the Expect of a message that never gets that far."""
    if len(data) > LIMIT:
        return Expect("none", "close 1009", ("IN-4",), closes={1009: "IN-4"}, must_close=True)
    if kind == "text":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return Expect("none", "close 1007 (invalid UTF-8 in a text message, RFC 6455 8.1)", ("IN-3",),
                          closes={1007: "IN-3"}, must_close=True)
        sure = True
    else:
        sure = False
        try:
            text = data.decode("utf-8")  # a byte order mark decodes to U+FEFF: not JSON (IN-3)
        except UnicodeDecodeError:
            return Expect("none", "no answer (not UTF-8, so not JSON)", ("IN-3",))
    if "\ufeff" == text[:1]:
        return Expect("none", "no answer (a byte order mark is not JSON text)", ("IN-3",))
    doc, limits = parse_json(text)
    if doc is INVALID:
        return Expect("none", "no answer (not JSON)", ("IN-3",))
    return doc, sure and not limits


def _soften(e: Expect, sure: bool) -> Expect:
    if not sure and e.answer == "must":
        e.answer = "maybe"
    return e


# -- after authentication -----------------------------------------------------------------------------

def after_auth(kind: str, data: bytes, conn: ConnView) -> Expect:
    got = read(kind, data)
    if isinstance(got, Expect):
        return got
    doc, sure = got
    if doc is UNSURE:
        return Expect("maybe", "any answer, or none (nesting deeper than a parser may take)", ("IN-3",), is_answer)
    return _soften(_document(doc, conn), sure)


def _document(doc: Any, conn: ConnView) -> Expect:
    if not isinstance(doc, dict):
        return Expect("none", "no answer (not an object)", ("IN-3",))
    kind = doc.get("type")
    if kind == "ping":
        return Expect("must", '{"type":"pong"}', ("IN-2",), lambda f: f.get("type") == "pong")
    if kind not in ("subscribe", "unsubscribe"):
        return Expect("none", "no answer (unknown type)", ("IN-3",))
    payload = doc.get("payload")
    scope = payload.get("scope") if isinstance(payload, dict) else None
    sid = payload.get("id") if isinstance(payload, dict) else None
    if not (_is_str(scope) and scope and _is_str(sid) and sid):
        echo_scope = scope if _is_str(scope) else ""
        echo_id = sid if _is_str(sid) else ""
        return Expect("must", f'{kind}_error "invalid payload"', ("IN-1",),
                      _error_of(kind, "invalid payload", (echo_scope, ""), (echo_id, "")))
    e = _named(kind, scope, sid, payload, conn)
    if not (_unicode(scope) and _unicode(sid)):  # IN-1: "answered either `invalid payload` or as the string a
        invalid = _error_of(kind, "invalid payload", (scope,), (sid,))  # decoder makes of it"
        first = e.ok
        e.ok = lambda f: first(f) or invalid(f)
        e.want += ', or "invalid payload" (a lone surrogate)'
        e.reqs += ("IN-1",)
    return e


def _unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _named(kind: str, scope: str, sid: str, payload: dict, conn: ConnView) -> Expect:
    """What a subscribe or unsubscribe with a scope and an id is owed."""
    if kind == "unsubscribe":
        return Expect("must", f"unsubscribe_ack {scope}:{sid!r}", ("SUB-4",), _ack_of("unsubscribe", scope, sid, None))
    since = payload.get("since")
    if since is None:
        return _subscribe(scope, sid, conn, None)
    if not _is_str(since):
        return Expect("must", 'subscribe_error "invalid payload" (since not a string)', ("REP-5",),
                      _error_of("subscribe", "invalid payload", (scope,), (sid,)))
    e = _subscribe(scope, sid, conn, since)
    bad_since = _error_of("subscribe", "invalid payload", (scope,), (sid,))
    first = e.ok
    e.ok = lambda f: first(f) or bad_since(f)
    e.want += ', or "invalid payload" (a since that does not parse)'
    e.reqs += ("REP-5",)
    return e


def _subscribe(scope: str, sid: str, conn: ConnView, since: str | None) -> Expect:
    """SUB-1..3 and AZ-1..3: which answers this subscribe may get."""
    decisions = _decide(scope, sid, conn)
    if scope in ("task", "chat"):  # the authorizer's: AZ-3 for a non-UUID, else AZ-1 (task) or AZ-2 (chat)
        reqs: tuple[str, ...] = ("SUB-2", "AZ-3" if _uuid(sid) is None else "AZ-1" if scope == "task" else "AZ-2")
    else:
        reqs = ("SUB-1",) if scope in ("workspace", "user") else ("SUB-3",)
    checks = []
    grants: tuple = ()
    for d in decisions:
        if d == "ack":
            checks.append(_ack_of("subscribe", scope, sid, since if conn.resume else ...))
            grants = ((scope, sid),) + tuple((scope, c) for c in [_uuid(sid)] if c)
        else:
            checks.append(_error_of("subscribe", d, (scope,), (sid,)))
    return Expect("must", f"subscribe {' or '.join(decisions)} for {scope}:{sid!r}", reqs,
                  lambda f: any(c(f) for c in checks), grants=grants)


def _decide(scope: str, sid: str, conn: ConnView) -> list[str]:
    if scope in ("workspace", "user"):
        own = conn.workspace if scope == "workspace" else conn.user
        if sid == own:
            return ["ack"]
        return ["ack", "forbidden"] if _uuid(sid) == own else ["forbidden"]
    if scope in ("task", "chat"):
        allowed = conn.allowed.get(scope, set())
        if sid in allowed:
            return ["ack"]
        return ["ack", "forbidden"] if _uuid(sid) in allowed else ["forbidden"]
    return ["unknown_scope"]


_HEX = re.compile(r"[0-9a-fA-F]{32}")


def _uuid(text: str) -> str | None:
    """The canonical form of a UUID written in a form some parser accepts (ASCII hex only: a
    Unicode digit makes no UUID), or None."""
    t = text
    if t.lower().startswith("urn:uuid:"):
        t = t[9:]
    if t.startswith("{") and t.endswith("}"):
        t = t[1:-1]
    h = t.replace("-", "") if len(t) == 36 and [i for i, c in enumerate(t) if c == "-"] == [8, 13, 18, 23] else t
    if not _HEX.fullmatch(h):
        return None
    h = h.lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _same(got: Any, want: str) -> bool:
    """An echoed string: as sent, or with lone surrogates replaced by U+FFFD."""
    return got == want or (isinstance(got, str) and got == re.sub("[\ud800-\udfff]", "\ufffd", want))


def _ack_of(kind: str, scope: str, sid: str, since: Any):
    """The ack; with `since` given (not ...), REP-2: `recovered` is a boolean when since is a
    string, absent when since is None."""
    def ok(f: Any) -> bool:
        p = f.get("payload")
        if f.get("type") != f"{kind}_ack" or not isinstance(p, dict):
            return False
        if not (_same(p.get("scope"), scope) and _same(p.get("id"), sid)):
            return False
        if kind == "subscribe" and since is not ...:
            return isinstance(p.get("recovered"), bool) if since is not None else "recovered" not in p
        return True
    return ok


def _error_of(kind: str, error: str, scopes: tuple, ids: tuple):
    def ok(f: Any) -> bool:
        p = f.get("payload")
        return (f.get("type") == f"{kind}_error" and isinstance(p, dict) and p.get("error") == error
                and any(_same(p.get("scope"), s) for s in scopes) and any(_same(p.get("id"), i) for i in ids))
    return ok


# -- the first data frame (HS-3, HS-4) ----------------------------------------------------------------------

def first_frame(kind: str, data: bytes, verdict: Callable[[str], str]) -> Expect:
    """The first data frame of a connection that has not authenticated. `verdict(token)` is "ok"
    or the HS-3 text the contract owes for that token."""
    got = read(kind, data)
    if isinstance(got, Expect):
        if got.must_close:
            return got
        return _auth_failure(got.want, (EXPECTED_AUTH,), ("HS-3",))
    doc, sure = got
    if doc is UNSURE:
        return Expect("must", "auth_ack or an HS-3 error", ("HS-3",),
                      lambda f: f.get("type") == "auth_ack" or f.get("error") in AUTH_TEXTS, auth_ok=None)
    payload = doc.get("payload") if isinstance(doc, dict) else None
    token = payload.get("token") if isinstance(payload, dict) else None
    if not isinstance(doc, dict) or doc.get("type") != "auth" or not isinstance(payload, dict):
        e = _auth_failure("not an auth message", (EXPECTED_AUTH,), ("HS-3",))
    elif not (_is_str(token) and token):
        e = _auth_failure("no token string", (EXPECTED_AUTH, INVALID_TOKEN), ("HS-3",))
    else:
        v = verdict(token)
        if v == "ok":
            e = Expect("must", "auth_ack", ("HS-3", "HS-4"), lambda f: f.get("type") == "auth_ack", auth_ok=True)
        else:
            e = _auth_failure(f"token refused: {v}", (v,), ("HS-3", "HS-4"))
    if not sure:  # a binary frame: read as the text it holds, or not at all (the first frame then is no auth)
        first = e.ok
        e.ok = lambda f: first(f) or f.get("error") == EXPECTED_AUTH
        e.auth_ok = None if e.auth_ok else False
        e.want += f', or "{EXPECTED_AUTH}" (binary frame)'
    return e


def _auth_failure(why: str, texts: tuple[str, ...], reqs: tuple[str, ...]) -> Expect:
    return Expect("must", f"{{\"error\": {' or '.join(map(repr, texts))}}} ({why}), then a close", reqs,
                  lambda f: f.get("error") in texts, closes={1008: "HS-3"}, auth_ok=False)

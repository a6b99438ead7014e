"""IN: inbound frames and limits.

"Nothing else was answered" rests on IN-2's order sentence alone, never on waiting: a
connection's answers go out in the order of the frames they answer, so once the answer to a later
frame has arrived, every answer to an earlier one has arrived before it. Where answers must be
counted exactly, the later frame is a subscribe to the connection's own workspace, whose answer
names its scope and id (pongs all look alike: a pong wrongly given to ignored junk would pass for
a marker ping's). Events may come between answers (IN-2, HS-6) and are skipped; answers may carry
extra fields.

Fragmented messages are sent by a minimal RFC 6455 client over plain TCP (conformance/rawws.py;
aiohttp always sets FIN)."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import aiohttp

from . import Failed, NotChecked, SetupError, case
from .. import rawws
from ..client import ConnectionClosed
from ..frames import answers_to, is_answer
from ..rawws import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, auth_of, ping_of
from .common import AUTH_ACK, PING, PONG, answers, auth, matches

LIMIT = 65536  # IN-4: the largest inbound message allowed, in bytes
ANSWER_WAIT = 5.0  # the suite's patience for one answer (the contract sets no bound)
CLOSE_WAIT = 5.0

IN1_PAYLOAD = ("If the payload is not an object, or the scope or id is missing or empty, the answer is "
               '`{"type":"<type>_error","payload":{"scope":S,"id":I,"error":"invalid payload"}}`')
IN2_PONG = '`{"type":"ping"}` is answered `{"type":"pong"}`.'
IN2_ORDER = ("A connection's answers (`auth_ack`, `pong`, subscribe and unsubscribe answers) go out in the "
             "order of the frames they answer")
IN3_IGNORED = ("Frames that are not valid JSON, and frames of an unknown type, are ignored: no answer, and the "
               "connection stays open and keeps working.")
IN1_UNICODE = ("A scope or id that is not valid Unicode (a `\\ud800` escape without its pair) is answered either "
               "`invalid payload` or as the string a decoder makes of it (U+FFFD in its place); either way the "
               "connection keeps working.")
IN3_RFC8259 = ("Valid JSON is RFC 8259's, in UTF-8: `NaN` and `Infinity`, a byte order mark and other encodings "
               "(UTF-16, UTF-32) are not.")
IN3_LIMITS = ("Valid JSON beyond a parser's limits (numbers of more than 4,000 digits, nesting deeper than 500 levels) "
              "may be answered or ignored; either way the connection keeps working.")
IN6_RFC6455 = ("a client frame that is not masked, or a close frame with a code an endpoint may not send (below "
               "1000, 1004 to 1006, 1015 to 2999, 5000 and above), fails the connection with close code 1002.")
IN4_CLOSE = "An inbound message longer than 65,536 bytes closes the connection with code 1009, before or after auth."
IN4_EXACT = "Exactly 65,536 bytes is allowed."
IN4_FRAGMENTS = "The length is counted over all fragments of the message"
IN5_KEEPALIVE = ("The server sends transport pings (default every 54 s) and closes a connection that has not "
                 "answered within the pong timeout (default 60 s).")


# -- helpers ------------------------------------------------------------------------------------------------

async def authed(ctx, node: int = 0):
    """Set-up: alice's token-authenticated connection to workspace A."""
    return await ctx.connect(ctx.world.alice, ctx.world.ws_a, node=node)


async def unauthenticated(ctx, node: int = 0):
    """Set-up: an upgraded connection to workspace A that has not authenticated yet."""
    try:
        return await ctx.raw(node=node, params={"workspace_id": ctx.world.ws_a})
    except aiohttp.WSServerHandshakeError as e:
        raise SetupError(f"open a WebSocket to node {node + 1}", f"HTTP {e.status}") from None


async def until_answer(ctx, client, pred, what: str, *, start: int, req: str | None = None) -> Any:
    """The first answer since `start` matching `pred`. The suite's patience (5 s) starts again
    while other answers keep coming (slower answers are in bound: the contract sets none)."""
    seen = -1
    while True:
        try:
            return await client.wait_for(lambda f: is_answer(f) and pred(f), ANSWER_WAIT, start=start)
        except asyncio.TimeoutError:
            n = len(answers(client, start))
            if n == seen:
                raise Failed(f"no {what} within {ANSWER_WAIT:g} s of the last answer", what,
                             answers(client, start)[-5:], req) from None
            seen = n
        except ConnectionClosed as e:
            raise Failed(f"the connection closed (code {e.code}) before {what}", what, answers(client, start)[-5:],
                         req) from None


def _is_pong(f: Any) -> bool:
    return matches(f, PONG)


async def answered_before_marker(ctx, client, start: int, *, req: str) -> list:
    """Subscribe to the connection's own workspace and return the answers received since `start`
    before that subscribe's answer (IN-2: all of them, in order). The subscribe only has to be
    answered, whatever the answer is; a connection that ends first fails `req`."""
    ws = ctx.world.ws_a
    await client.send({"type": "subscribe", "payload": {"scope": "workspace", "id": ws}})
    marker = await until_answer(ctx, client, lambda f: answers_to(f, "subscribe", "workspace", ws),
                                f"the answer to a marker subscribe to workspace:{ws}", start=start, req=req)
    got = answers(client, start)
    return got[:next(i for i, f in enumerate(got) if f is marker)]


async def _send(client, data: str | bytes) -> None:
    """Send a text (str) or binary (bytes) message; the server may close while it arrives."""
    try:
        await (client.ws.send_bytes(data) if isinstance(data, bytes) else client.send(data))
    except (ConnectionError, RuntimeError):
        pass


# -- IN-1 ---------------------------------------------------------------------------------------------------

# raw payload JSON (None: no payload member), echoed scope, echoed id (None: the payload is not an
# object, so there is no S or I to echo and any is accepted)
BAD_PAYLOADS = [
    (None, None, None),
    ("null", None, None),
    ('"workspace"', None, None),
    ("42", None, None),
    ('["workspace","W"]', None, None),
    ("{}", "", ""),
    ('{"id":"some-id"}', "", "some-id"),
    ('{"scope":"task"}', "task", ""),
    ('{"scope":"","id":"some-id"}', "", "some-id"),
    ('{"scope":"workspace","id":""}', "workspace", ""),
    ('{"scope":"","id":""}', "", ""),
]


def _invalid(kind: str, scope: str | None, sid: str | None) -> dict:
    payload: dict = {"error": "invalid payload"}
    if scope is not None:
        payload.update(scope=scope, id=sid)
    return {"type": f"{kind}_error", "payload": payload}


async def _invalid_payloads(ctx, kind: str) -> None:
    client = await authed(ctx)
    start = len(client.frames)
    sent, want = [], []
    for raw, scope, sid in BAD_PAYLOADS:
        text = '{"type":"%s"}' % kind if raw is None else '{"type":"%s","payload":%s}' % (kind, raw)
        await client.send(text)
        await client.send(PING)
        sent.append(text)
        want += [_invalid(kind, scope, sid), PONG]
    got = await answered_before_marker(ctx, client, start, req="IN-1")
    for i, text in enumerate(sent):
        pair = got[2 * i:2 * i + 2]
        ctx.expect(len(pair) == 2 and matches(pair[0], want[2 * i]) and _is_pong(pair[1]),
                   f"{text} must be answered with one {kind}_error (invalid payload) echoing scope and id",
                   want[2 * i:2 * i + 2], pair)
    ctx.expect(len(got) == len(want), f"one {kind}_error per invalid payload and one pong per ping, nothing else",
               len(want), got[len(want):][:5])


@case("IN-1", title="subscribe with a payload that is not an object, or without scope or id: invalid payload",
      cites=IN1_PAYLOAD)
async def in1_subscribe_invalid_payload(ctx):
    await _invalid_payloads(ctx, "subscribe")


@case("IN-1", title="unsubscribe with a payload that is not an object, or without scope or id: invalid payload",
      cites=IN1_PAYLOAD)
async def in1_unsubscribe_invalid_payload(ctx):
    await _invalid_payloads(ctx, "unsubscribe")


# (payload, what a decoder's U+FFFD string would be answered besides invalid payload)
LONE_SURROGATES = [
    ({"scope": "task", "id": "\ud800"}, "forbidden"),  # not a UUID (AZ-3)
    ({"scope": "task", "id": "\ud800", "since": "1-1.aaaaaaaaaaaa"}, "forbidden"),
    ({"scope": "chat", "id": "\udfff" * 3}, "forbidden"),
    ({"scope": "\ud800", "id": "x"}, "unknown_scope"),  # SUB-3
    ({"scope": "workspace", "id": "ws\ud800"}, "forbidden"),  # not the connection's own (SUB-1)
]


@case("IN-1", title="a scope or id holding a lone surrogate is answered (invalid payload, or as the decoded string "
                    "would be) and the connection keeps working", cites=IN1_UNICODE)
async def in1_lone_surrogates(ctx):
    client = await authed(ctx)
    start = len(client.frames)
    for payload, _ in LONE_SURROGATES:
        await client.send({"type": "subscribe", "payload": payload})  # json.dumps writes the \ud800 escape
    got = await answered_before_marker(ctx, client, start, req="IN-1")
    ctx.expect(len(got) == len(LONE_SURROGATES), "each subscribe holding a lone surrogate must be answered once",
               len(LONE_SURROGATES), got)
    for (payload, decoded), answer in zip(LONE_SURROGATES, got):
        allowed = ("invalid payload", decoded)
        error = (answer.get("payload") or {}).get("error") if isinstance(answer, dict) else None
        ctx.expect(isinstance(answer, dict) and answer.get("type") == "subscribe_error" and error in allowed,
                   f"a subscribe to {json.dumps(payload)} must be answered subscribe_error with "
                   f"{' or '.join(allowed)}", f"subscribe_error: {' | '.join(allowed)}", answer)


# -- IN-2 ---------------------------------------------------------------------------------------------------

@case("IN-2", title='every {"type":"ping"} is answered with exactly one {"type":"pong"}', cites=IN2_PONG)
async def in2_ping_pong(ctx):
    client = await authed(ctx)
    # extra fields and insignificant whitespace do not make a ping something else
    for text in ('{"type":"ping"}', '{"type":"ping","payload":{"n":1}}', '{"type":"ping","payload":"x","id":42}',
                 ' \n{ "type" : "ping" }\t'):
        start = len(client.frames)
        await client.send(text)
        got = await until_answer(ctx, client, lambda f: True, "the pong", start=start)
        ctx.expect(_is_pong(got), f'{text!r} must be answered {{"type":"pong"}}', PONG, got)
    start = len(client.frames)
    for _ in range(20):
        await client.send(PING)
    got = await answered_before_marker(ctx, client, start, req="IN-2")
    ctx.expect(len(got) == 20 and all(map(_is_pong, got)), "20 pings are answered with 20 pongs and nothing else",
               [PONG] * 20, got)


@case("IN-2", title="answers go out in the order of the frames they answer (auth included, frames sent at once)",
      cites=IN2_ORDER)
async def in2_answers_in_request_order(ctx):
    w = ctx.world
    client = await unauthenticated(ctx)
    sent = [
        ("auth_ack", auth(await ctx.token(w.alice)), lambda f: matches(f, AUTH_ACK)),
        ("pong", PING, _is_pong),
        (f"answer to subscribe task:{w.task_a}", {"type": "subscribe", "payload": {"scope": "task", "id": w.task_a}},
         lambda f: answers_to(f, "subscribe", "task", w.task_a)),
        (f"answer to subscribe task:{w.task_b}", {"type": "subscribe", "payload": {"scope": "task", "id": w.task_b}},
         lambda f: answers_to(f, "subscribe", "task", w.task_b)),
        (f"answer to unsubscribe chat:{w.chat_alice}",
         {"type": "unsubscribe", "payload": {"scope": "chat", "id": w.chat_alice}},
         lambda f: answers_to(f, "unsubscribe", "chat", w.chat_alice)),
        ("pong", PING, _is_pong),
        (f"answer to subscribe workspace:{w.ws_a}", {"type": "subscribe", "payload": {"scope": "workspace",
                                                                                    "id": w.ws_a}},
         lambda f: answers_to(f, "subscribe", "workspace", w.ws_a)),
    ]
    for _, frame, _ in sent:
        await client.send(frame)
    first = await until_answer(ctx, client, lambda f: True, "the answer to auth", start=0)
    if isinstance(first, dict) and "error" in first:
        raise SetupError("authenticate alice", first, expected=AUTH_ACK)
    await until_answer(ctx, client, sent[-1][2], sent[-1][0], start=0)
    got = answers(client)
    order = [next((what for what, _, pred in sent if pred(f)), "something else") for f in got]
    ctx.expect(order == [what for what, _, _ in sent], "the answers must come in the order of the frames sent",
               [what for what, _, _ in sent], order)


# -- IN-3 ---------------------------------------------------------------------------------------------------

NOT_JSON = ['{"type":"ping"', "ping", "", "}{", "[" * 5000 + "]" * 5000, "x" * 60000]
NOT_JSON_BINARY = [b"", b"\x00\x01\x02", b"\xff\xfe\xfd", b'{"type":"ping"']
UNKNOWN = ['{"type":"hello","payload":{}}', '{"type":"PING"}', '{"type":"pong"}', "{}", '{"type":null}',
           '{"type":7}', '{"type":{"name":"ping"}}', '{"payload":{"scope":"workspace","id":"x"}}', "null", "42",
           '"ping"', '[{"type":"ping"}]', '{"type":"subscribe_ack","payload":{"scope":"workspace","id":"x"}}']


async def _ignored(ctx, frames: list, what: str) -> None:
    """Send `frames` (str: text, bytes: binary), then a ping: the pong is the only answer, and
    the connection stays open and keeps answering (a subscribe after them is answered)."""
    client = await authed(ctx)
    start = len(client.frames)
    for data in frames:
        await _send(client, data)
    await client.send(PING)
    await until_answer(ctx, client, _is_pong, f"the pong to a ping sent after {what}", start=start)
    got = await answered_before_marker(ctx, client, start, req="IN-3")
    ctx.expect(len(got) == 1 and _is_pong(got[0]), f"{what} must be ignored: no answer, only the pong to the ping "
                                                   "sent after them", [PONG], got)
    ctx.expect(not client.closed, f"{what} must not close the connection", "open", f"closed ({client.close_code})")


@case("IN-3", title="frames that are not valid JSON are ignored; the connection keeps working", cites=IN3_IGNORED)
async def in3_invalid_json_ignored(ctx):
    await _ignored(ctx, NOT_JSON + NOT_JSON_BINARY, "frames that are not valid JSON")


@case("IN-3", title="frames of an unknown type (or no type) are ignored; the connection keeps working",
      cites=IN3_IGNORED)
async def in3_unknown_type_ignored(ctx):
    await _ignored(ctx, UNKNOWN + [b'{"type":"nope"}'], "frames of an unknown type")


NOT_RFC8259_TEXT = ['{"type":"ping","n":NaN}', '{"type":"ping","n":Infinity}', '{"type":"ping","n":-Infinity}',
                    "\ufeff" + '{"type":"ping"}']
NOT_RFC8259_BINARY = ['{"type":"ping"}'.encode("utf-16"), '{"type":"ping"}'.encode("utf-16-be"),
                      '{"type":"ping"}'.encode("utf-32"), b"\xef\xbb\xbf" + b'{"type":"ping"}',
                      b'{"type":"ping","n":NaN}', b'{"type":"ping","x":"\xed\xa0\x80"}']  # the last: an encoded surrogate


@case("IN-3", title="pings that are not RFC 8259 JSON in UTF-8 (NaN, Infinity, byte order marks, UTF-16, UTF-32, "
                    "encoded surrogates) are ignored", cites=IN3_RFC8259)
async def in3_only_rfc8259_json(ctx):
    await _ignored(ctx, NOT_RFC8259_TEXT + NOT_RFC8259_BINARY, "pings that are not RFC 8259 JSON in UTF-8")


@case("IN-3", title="valid JSON beyond a parser's limits (a 5,000-digit number, 600 levels of nesting) leaves the "
                    "connection working", cites=IN3_LIMITS)
async def in3_beyond_parser_limits(ctx):
    client = await authed(ctx)
    start = len(client.frames)
    frames = ['{"type":"ping","n":%s}' % ("7" * 5000), '{"type":"ping","n":-%s.5e3}' % ("1" * 5000),
              '{"type":"ping","deep":%s1%s}' % ("[" * 600, "]" * 600),
              '{"type":"ping","deep":%s}' % ('{"a":' * 600 + "1" + "}" * 600)]
    for text in frames:
        await _send(client, text)
    got = await answered_before_marker(ctx, client, start, req="IN-3")
    ctx.expect(len(got) <= len(frames) and all(map(_is_pong, got)),
               "each of these pings may be answered pong or ignored, nothing else", f"0 to {len(frames)} pongs", got)
    ctx.expect(not client.closed, "these frames must not close the connection", "open",
               f"closed ({client.close_code})")


# -- IN-4 ---------------------------------------------------------------------------------------------------

async def _closed_1009(ctx, client, why: str) -> None:
    code = await ctx.closed(client, "close code 1009", timeout=CLOSE_WAIT)
    ctx.expect(code == 1009, f"{why} must close the connection with 1009", 1009, code)


@case("IN-4", "HS-3", title="an auth message of exactly 65,536 bytes is accepted",
      cites={"IN-4": IN4_EXACT, "HS-3": 'Success is answered `{"type":"auth_ack"}`.'})
async def in4_auth_at_limit(ctx):
    w = ctx.world
    client = await unauthenticated(ctx)
    await client.send(auth_of(await ctx.token(w.alice), LIMIT).decode())
    got = await until_answer(ctx, client, lambda f: True, "the answer to a 65,536-byte auth message", start=0)
    ctx.expect(matches(got, AUTH_ACK), "a 65,536-byte auth message (a valid token and an extra field) must be "
                                       "acknowledged", AUTH_ACK, got, req="HS-3")


@case("IN-4", title="a message of 65,537 bytes before auth closes the connection with 1009",
      cites=IN4_CLOSE)
async def in4_over_limit_before_auth(ctx):
    w = ctx.world
    for binary in (False, True):
        client = await unauthenticated(ctx)
        data = auth_of(await ctx.token(w.alice), LIMIT + 1)
        await _send(client, data if binary else data.decode())
        await _closed_1009(ctx, client, f"a {'binary' if binary else 'text'} message of 65,537 bytes before auth")


@case("IN-4", title="a message of exactly 65,536 bytes after auth is allowed (text and binary)", cites=IN4_EXACT)
async def in4_at_limit_after_auth(ctx):
    client = await authed(ctx)
    start = len(client.frames)
    await client.send(ping_of(LIMIT).decode())
    got = await until_answer(ctx, client, lambda f: True, "the pong to a 65,536-byte ping", start=start)
    ctx.expect(_is_pong(got), "a 65,536-byte ping must be answered pong", PONG, got)
    await _send(client, ping_of(LIMIT))  # binary: that it is handled at all is not the contract's; it is allowed
    await answered_before_marker(ctx, client, len(client.frames), req="IN-4")
    ctx.expect(not client.closed, "a 65,536-byte binary message must not close the connection", "open",
               f"closed ({client.close_code})")


@case("IN-4", title="a message of 65,537 bytes after auth closes the connection with 1009 (text and binary)",
      cites=IN4_CLOSE)
async def in4_over_limit_after_auth(ctx):
    for binary in (False, True):
        client = await authed(ctx)
        data = ping_of(LIMIT + 1)
        await _send(client, data if binary else data.decode())
        await _closed_1009(ctx, client, f"a {'binary' if binary else 'text'} message of 65,537 bytes after auth")


@case("IN-4", title="the limit counts UTF-8 bytes: 65,537 bytes of two-byte characters close with 1009",
      cites={"IN-4": "An inbound message longer than 65,536 bytes closes the connection with code 1009"})
async def in4_counts_bytes_not_characters(ctx):
    ok = await authed(ctx)
    start = len(ok.frames)
    await ok.send(ping_of(LIMIT, "é").decode())
    got = await until_answer(ctx, ok, lambda f: True, "the pong to a ping of 65,536 UTF-8 bytes", start=start)
    ctx.expect(_is_pong(got), "a ping of 65,536 UTF-8 bytes is allowed and must be answered", PONG, got)
    big = await authed(ctx)
    data = ping_of(LIMIT + 1, "é")
    await _send(big, data.decode())
    await _closed_1009(ctx, big, f"65,537 UTF-8 bytes ({len(data.decode())} characters)")


class RawWebSocket(rawws.RawWebSocket):
    """The raw client, with reads that fail the case."""

    async def next_answer(self, what: str, timeout: float = ANSWER_WAIT) -> Any:
        """The next text or binary frame that is an answer (events and transport frames skipped)."""
        async def read():
            while True:
                opcode, data = await self.recv_frame()
                if opcode in (OP_TEXT, OP_BINARY):
                    try:
                        doc = json.loads(data)
                    except ValueError:
                        return data
                    if is_answer(doc):
                        return doc
                elif opcode == OP_CLOSE:
                    code = self.close_code_of(data)
                    raise Failed(f"the connection closed (code {code}) before {what}", what, f"close {code}")
        try:
            return await asyncio.wait_for(read(), timeout)
        except asyncio.TimeoutError:
            raise Failed(f"no {what} within {timeout:g} s", what, "nothing") from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise Failed(f"the connection ended before {what}", what, "end of stream") from None

    async def close_code(self, timeout: float = CLOSE_WAIT) -> int | str | None:
        """Read until the close frame and return its code ("eof": the connection ended without
        one, "open": nothing within `timeout`)."""
        async def read():
            while True:
                try:
                    opcode, data = await self.recv_frame()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return "eof"
                if opcode == OP_CLOSE:
                    return self.close_code_of(data)
        try:
            return await asyncio.wait_for(read(), timeout)
        except asyncio.TimeoutError:
            return "open"


async def raw_socket(ctx, params: dict, node: int = 0) -> RawWebSocket:
    try:
        sock = await RawWebSocket.connect(ctx.target.urls[node], params)
    except (rawws.UpgradeRefused, OSError, asyncio.TimeoutError) as e:
        raise SetupError(f"open a raw WebSocket to node {node + 1}", f"{type(e).__name__}: {e}") from None
    ctx.clients.append(sock)
    return sock


async def _raw_authed(ctx) -> RawWebSocket:
    w = ctx.world
    sock = await raw_socket(ctx, {"workspace_id": w.ws_a})
    sock.send_frame(OP_TEXT, json.dumps(auth(await ctx.token(w.alice))).encode())
    await sock.flush()
    try:
        got = await sock.next_answer("auth_ack")
    except Failed as e:
        raise SetupError("authenticate alice over the raw client", e.reason) from None
    if not matches(got, AUTH_ACK):
        raise SetupError("authenticate alice over the raw client", got, expected=AUTH_ACK)
    return sock


AT_LIMIT = [4096] * 16  # 65,536 bytes in 16 fragments
OVER_LIMIT = [4096] * 16 + [1]  # 65,537 bytes: every fragment is small


@case("IN-4", title="fragments adding up to 65,536 bytes pass; adding up to 65,537 bytes close with 1009 (after auth)",
      cites=IN4_FRAGMENTS)
async def in4_fragments_after_auth(ctx):
    for opcode, kind in ((OP_TEXT, "text"), (OP_BINARY, "binary")):
        sock = await _raw_authed(ctx)
        sock.send_fragmented(opcode, ping_of(LIMIT), AT_LIMIT)
        sock.send_frame(OP_TEXT, json.dumps(PING).encode())
        await sock.flush()
        got = await sock.next_answer(f"the pong after a {kind} message of 16 fragments adding up to 65,536 bytes")
        ctx.expect(_is_pong(got), f"16 {kind} fragments adding up to 65,536 bytes are one allowed message", PONG, got)
        data = ping_of(LIMIT + 1)
        sock.send_frame(opcode, data[:4096], fin=False)
        sock.send_frame(OP_PING, b"between fragments")  # RFC 6455 allows control frames between fragments
        sock.send_fragmented(OP_CONT, data[4096:], OVER_LIMIT[1:])
        await sock.flush()
        code = await sock.close_code()
        ctx.expect(code == 1009, f"17 {kind} fragments adding up to 65,537 bytes must close the connection with 1009",
                   1009, code)


@case("IN-4", "HS-3", title="an auth message in fragments adding up to 65,536 bytes is accepted; adding up to 65,537 "
                            "bytes, it closes the connection with 1009",
      cites={"IN-4": IN4_FRAGMENTS, "HS-3": 'Success is answered `{"type":"auth_ack"}`.'})
async def in4_fragments_before_auth(ctx):
    w = ctx.world
    sock = await raw_socket(ctx, {"workspace_id": w.ws_a})
    sock.send_fragmented(OP_TEXT, auth_of(await ctx.token(w.alice), LIMIT), AT_LIMIT)
    await sock.flush()
    try:
        got = await sock.next_answer("the answer to an auth message of 16 fragments adding up to 65,536 bytes")
    except Failed as e:
        raise Failed(e.reason, AUTH_ACK, e.received, "IN-4") from None  # closed: the message was taken as too long
    ctx.expect(matches(got, AUTH_ACK), "an auth message of 16 fragments adding up to 65,536 bytes (a valid token and "
                                       "an extra field) must be acknowledged", AUTH_ACK, got, req="HS-3")
    sock = await raw_socket(ctx, {"workspace_id": w.ws_a})
    sock.send_fragmented(OP_TEXT, auth_of(await ctx.token(w.alice), LIMIT + 1), OVER_LIMIT)
    await sock.flush()
    code = await sock.close_code()
    ctx.expect(code == 1009, "a fragmented message of 65,537 bytes before auth must close the connection with 1009",
               1009, code)


# -- IN-5 ---------------------------------------------------------------------------------------------------

MAX_WAIT = 110.0  # what a case may wait in all (the runner stops it at 120 s)


def _keepalive(ctx) -> tuple[float, float]:
    ping_s, pong_s = ctx.target.timeout("ping_s", 54), ctx.target.timeout("pong_s", 60)
    if max(ping_s, pong_s) + 5 > MAX_WAIT:
        raise NotChecked(f"ping_s {ping_s:g} / pong_s {pong_s:g}: longer than a case may wait")
    return ping_s, pong_s


CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


class _Bare:
    """An aiohttp WebSocket read directly (transport pings visible, never answered), closed with the case."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws

    async def close(self) -> None:
        if not self.ws.closed:
            await self.ws.close()


async def _bare_authed(ctx) -> aiohttp.ClientWebSocketResponse:
    """Set-up: alice's connection that never answers transport pings, authenticated."""
    w = ctx.world
    step = "authenticate alice on a connection that does not answer transport pings"
    try:
        ws = await ctx.session.ws_connect(ctx.target.urls[0] + "/ws", params={"workspace_id": w.ws_a},
                                          autoping=False, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
    except aiohttp.WSServerHandshakeError as e:
        raise SetupError(step, f"HTTP {e.status}") from None
    ctx.clients.append(_Bare(ws))
    await ws.send_str(json.dumps(auth(await ctx.token(w.alice))))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ANSWER_WAIT
    while True:
        try:
            msg = await ws.receive(timeout=max(deadline - loop.time(), 0.01))
        except asyncio.TimeoutError:
            raise SetupError(step, "no answer to auth within 5 s") from None
        if msg.type in CLOSED:
            raise SetupError(step, f"closed ({msg.type.name}) before the answer to auth")
        if msg.type is not aiohttp.WSMsgType.TEXT:
            continue  # transport pings: not answered
        try:
            frame = json.loads(msg.data)
        except ValueError:
            continue
        if not is_answer(frame):
            continue  # events may come before auth_ack (HS-6)
        if matches(frame, AUTH_ACK):
            return ws
        raise SetupError(step, frame, expected=AUTH_ACK)


@case("IN-5", title="the server sends transport pings within ping_s and closes a client that never answers them "
                    "within pong_s (JSON pings are no answer)", slow=True, cites=IN5_KEEPALIVE)
async def in5_unanswered_pings_close(ctx):
    ping_s, pong_s = _keepalive(ctx)
    loop = asyncio.get_running_loop()
    case_started = loop.time()
    ws = await _bare_authed(ctx)
    started = loop.time()
    first_ping = None
    while True:
        # The pong timeout may run from the connection's last answer (Multica: from its start) or
        # from the ping: the later bound is the one a target must keep.
        bound = (ping_s + 5) if first_ping is None else (first_ping + pong_s + 5)
        cut = case_started + MAX_WAIT - started  # the case cannot wait past this
        remaining = started + min(bound, cut) - loop.time()
        try:
            msg = await asyncio.wait_for(ws.receive(), max(remaining, 0.01))
        except asyncio.TimeoutError:
            if first_ping is None:
                ctx.expect(False, f"no transport ping within ping_s + 5 s ({ping_s + 5:g} s)", "a PING frame",
                           "nothing")
            if cut < bound:
                raise NotChecked(f"still open {loop.time() - started:.0f} s after auth; the pong timeout counted from "
                                 f"the first ping ({first_ping:.0f} s) ends later than a case may wait") from None
            ctx.expect(False, f"a client that never answered the transport pings is still open pong_s + 5 s "
                              f"({pong_s + 5:g} s) after the first one", "the server closes the connection", "open")
        elapsed = loop.time() - started
        if msg.type is aiohttp.WSMsgType.PING:
            first_ping = elapsed if first_ping is None else first_ping
            try:  # activity without a transport pong: not an answer to the ping
                await ws.send_str(json.dumps(PING))
            except (ConnectionError, RuntimeError):
                pass
        elif msg.type in CLOSED:
            ctx.expect(first_ping is not None, f"the connection was closed after {elapsed:.1f} s without a "
                                               "transport ping first", "a PING frame, then the close", msg.type.name)
            return
        # text frames (pongs, events of other cases) are not what this case judges


@case("IN-5", title="a client that answers transport pings stays open past pong_s", slow=True, cites=IN5_KEEPALIVE)
async def in5_answered_pings_keep_open(ctx):
    ping_s, pong_s = _keepalive(ctx)
    client = await authed(ctx)  # aiohttp answers transport pings on its own
    wait = max(ping_s, pong_s) + 5
    try:
        code = await client.wait_closed(wait)
    except asyncio.TimeoutError:
        code = None
    ctx.expect(not client.closed, f"a client answering every transport ping was closed within {wait:g} s",
               "open", f"closed ({code})")


# -- IN-6 ---------------------------------------------------------------------------------------------------

FORBIDDEN_CLOSE_CODES = (999, 1004, 1005, 1006, 1015, 2000, 2999, 5000, 65535)


@case("IN-6", title="a client frame that is not masked, or a close frame with a code an endpoint may not send, fails "
                    "the connection with 1002", cites=IN6_RFC6455)
async def in6_rfc6455_violations_fail_with_1002(ctx):
    unmasked = bytes([0x81, len(b'{"type":"ping"}')]) + b'{"type":"ping"}'
    attempts = [("a text frame that is not masked", unmasked)]
    attempts += [(f"a close frame with code {code}", rawws.encode_frame(OP_CLOSE, struct.pack("!H", code)))
                 for code in FORBIDDEN_CLOSE_CODES]
    for what, data in attempts:
        sock = await _raw_authed(ctx)
        sock.writer.write(data)
        await sock.flush()
        code = await sock.close_code()
        ctx.check("IN-6", code == 1002, f"{what} must fail the connection with close code 1002", 1002, code)

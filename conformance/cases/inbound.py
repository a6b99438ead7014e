"""IN: inbound frames and limits.

"Nothing else was answered" is checked by ordering, not by waiting: a connection's frames are
read one after another and its answers go out in order, so once the pong to a later ping has
arrived, any answer to an earlier frame would have arrived before it. Fragmented messages are
sent by a minimal RFC 6455 client over a plain TCP connection (aiohttp always sets FIN)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from .. import rawws
from ..rawws import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, auth_of, ping_of
from . import Failed, NotChecked, case
from .handshake import CLOSED, AUTH_ACK, PING, PONG, answers, auth, auth_answer, bare_ws, is_answer, receive

LIMIT = 65536  # IN-4: the largest inbound message allowed, in bytes
CLOSE_WAIT = 5.0


async def authed(ctx, user: str | None = None, node: int = 0):
    """A token-authenticated connection of alice (or `user`) in workspace A."""
    w = ctx.world
    client = await ctx.raw(node=node, params={"workspace_id": w.ws_a})
    ctx.equal(await auth_answer(ctx, client, await ctx.token(user or w.alice, node)), AUTH_ACK,
              "the suite's token must be accepted")
    return client


async def answers_up_to_pong(ctx, client, start: int) -> list:
    """Send a ping and return every answer (event frames left out) from `start` up to its pong."""
    await client.send(PING)
    await ctx.frame(client, lambda f: f == PONG, "the pong to a marker ping", start=start)
    got = answers(client, start)
    return got[:got.index(PONG) + 1]


# -- IN-1 ---------------------------------------------------------------------------------------------------

# raw payload JSON (None: no payload member), echoed scope, echoed id
BAD_PAYLOADS = [
    (None, "", ""),
    ("null", "", ""),
    ('"workspace"', "", ""),
    ("42", "", ""),
    ('["workspace","W"]', "", ""),
    ("{}", "", ""),
    ('{"id":"some-id"}', "", "some-id"),
    ('{"scope":"task"}', "task", ""),
    ('{"scope":"","id":"some-id"}', "", "some-id"),
    ('{"scope":"workspace","id":""}', "workspace", ""),
    ('{"scope":"","id":""}', "", ""),
]


async def _invalid_payloads(ctx, kind: str) -> None:
    client = await authed(ctx)
    for raw, scope, sid in BAD_PAYLOADS:
        text = '{"type":"%s"}' % kind if raw is None else '{"type":"%s","payload":%s}' % (kind, raw)
        start = len(client.frames)
        await client.send(text)
        expected = {"type": f"{kind}_error", "payload": {"scope": scope, "id": sid, "error": "invalid payload"}}
        ctx.equal(await answers_up_to_pong(ctx, client, start), [expected, PONG],
                  f"{text} must be answered with exactly one {kind}_error echoing scope and id")
    ack = await ctx.answer(client, kind, "workspace", ctx.world.ws_a)
    ctx.equal(ack, {"type": f"{kind}_ack", "payload": {"scope": "workspace", "id": ctx.world.ws_a}},
              f"after invalid payloads, a well-formed {kind} still works")


@case("IN-1", title="subscribe with a payload that is not an object, or without scope or id: invalid payload")
async def in1_subscribe_invalid_payload(ctx):
    await _invalid_payloads(ctx, "subscribe")


@case("IN-1", title="unsubscribe with a payload that is not an object, or without scope or id: invalid payload")
async def in1_unsubscribe_invalid_payload(ctx):
    await _invalid_payloads(ctx, "unsubscribe")


# -- IN-2 ---------------------------------------------------------------------------------------------------

@case("IN-2", title='every {"type":"ping"} is answered with exactly one {"type":"pong"}')
async def in2_ping_pong(ctx):
    client = await authed(ctx)
    start = len(client.frames)
    await client.send(PING)
    ctx.equal(await ctx.frame(client, is_answer, "the pong", start=start), PONG,
              'a ping must be answered {"type":"pong"}')
    for text in ('{"type":"ping","payload":{"n":1}}', ' \n{ "type" : "ping" }\t'):
        start = len(client.frames)
        await client.send(text)
        ctx.equal(await ctx.frame(client, is_answer, "the pong", start=start), PONG,
                  f"{text!r} is a ping too and must be answered pong")
    start = len(client.frames)
    for _ in range(20):
        await client.send(PING)
    await ctx.frame(client, lambda f: answers(client, start).count(PONG) >= 20, "20 pongs", start=start)
    marker = await answers_up_to_pong(ctx, client, len(client.frames))
    ctx.equal(answers(client, start), [PONG] * 21, "20 pings (and a marker ping) get exactly 21 pongs, nothing else")
    ctx.equal(marker, [PONG], "one pong per ping")


# -- IN-3 ---------------------------------------------------------------------------------------------------

NOT_JSON = ['{"type":"ping"', "ping", "", "}{", "[" * 5000 + "]" * 5000, "x" * 60000]
NOT_JSON_BINARY = [b"", b"\x00\x01\x02", b"\xff\xfe\xfd", b'{"type":"ping"']
UNKNOWN = ['{"type":"hello","payload":{}}', '{"type":"PING"}', '{"type":"pong"}', "{}", '{"type":null}',
           '{"type":7}', '{"payload":{"scope":"workspace","id":"x"}}', "null", "42", '"ping"', '[{"type":"ping"}]',
           '{"type":"subscribe_ack","payload":{"scope":"workspace","id":"x"}}']


async def _ignored(ctx, texts: list, binary: list, what: str) -> None:
    w = ctx.world
    client = await authed(ctx)
    start = len(client.frames)
    for text in texts:
        await client.send(text)
    for data in binary:
        await client.ws.send_bytes(data)
    ctx.equal(await answers_up_to_pong(ctx, client, start), [PONG], f"{what} must be ignored: no answer before the "
                                                                     "pong to a later ping")
    ctx.expect(not client.closed, f"{what} must not close the connection", "open", f"closed ({client.close_code})")
    ack = await ctx.answer(client, "subscribe", "task", w.task_a)
    ctx.equal(ack, {"type": "subscribe_ack", "payload": {"scope": "task", "id": w.task_a}},
              f"after {what} the connection still answers subscribes")
    await ctx.event(client, await ctx.publish("task", w.task_a))


@case("IN-3", title="frames that are not valid JSON are ignored; the connection keeps working")
async def in3_invalid_json_ignored(ctx):
    await _ignored(ctx, NOT_JSON, NOT_JSON_BINARY, "frames that are not valid JSON")


@case("IN-3", title="frames of an unknown type (or no type) are ignored; the connection keeps working")
async def in3_unknown_type_ignored(ctx):
    await _ignored(ctx, UNKNOWN, [b'{"type":"nope"}'], "frames of an unknown type")


# -- IN-4 ---------------------------------------------------------------------------------------------------

@case("IN-4", "HS-3", title="an auth message of exactly 65,536 bytes is accepted")
async def in4_auth_at_limit(ctx):
    w = ctx.world
    client = await ctx.raw(params={"workspace_id": w.ws_a})
    await client.send(auth_of(await ctx.token(w.alice), LIMIT).decode())
    ctx.equal(await ctx.frame(client, is_answer, "auth_ack"), AUTH_ACK, "a 65,536-byte auth message is allowed")
    ctx.equal(await answers_up_to_pong(ctx, client, len(client.frames)), [PONG], "the connection keeps working")


@case("IN-4", title="a message of 65,537 bytes before auth closes the connection with 1009")
async def in4_over_limit_before_auth(ctx):
    w = ctx.world
    client = await ctx.raw(params={"workspace_id": w.ws_a})
    await client.send(auth_of(await ctx.token(w.alice), LIMIT + 1).decode())
    code = await ctx.closed(client, "close code 1009", timeout=CLOSE_WAIT)
    ctx.equal(code, 1009, "a 65,537-byte message before auth must close the connection with 1009")


@case("IN-4", title="a message of exactly 65,536 bytes after auth is processed (text and binary)")
async def in4_at_limit_after_auth(ctx):
    client = await authed(ctx)
    for binary in (False, True):
        start = len(client.frames)
        data = ping_of(LIMIT)
        await (client.ws.send_bytes(data) if binary else client.send(data.decode()))
        got = await ctx.frame(client, is_answer, "the pong to the 65,536-byte ping", start=start)
        ctx.equal(got, PONG, f"a 65,536-byte {'binary' if binary else 'text'} ping must be answered pong")


@case("IN-4", title="a message of 65,537 bytes after auth closes the connection with 1009")
async def in4_over_limit_after_auth(ctx):
    client = await authed(ctx)
    await client.send(ping_of(LIMIT + 1).decode())
    code = await ctx.closed(client, "close code 1009", timeout=CLOSE_WAIT)
    ctx.equal(code, 1009, "a 65,537-byte message after auth must close the connection with 1009")
    ctx.equal(answers(client), [AUTH_ACK], "the oversized ping is not answered")


@case("IN-4", title="the limit counts UTF-8 bytes: 65,537 bytes of two-byte characters close with 1009")
async def in4_counts_bytes_not_characters(ctx):
    ok = await authed(ctx)
    start = len(ok.frames)
    await ok.send(ping_of(LIMIT, "é").decode())
    ctx.equal(await ctx.frame(ok, is_answer, "the pong", start=start), PONG,
              "a ping of 65,536 UTF-8 bytes must be answered")
    big = await authed(ctx)
    data = ping_of(LIMIT + 1, "é")
    await big.send(data.decode())
    code = await ctx.closed(big, "close code 1009", timeout=CLOSE_WAIT)
    ctx.equal(code, 1009, f"65,537 UTF-8 bytes ({len(data.decode())} characters) are over the limit")


class RawWebSocket(rawws.RawWebSocket):
    """The raw client, with answers that fail the case."""

    @classmethod
    async def connect(cls, url: str, params: dict) -> "RawWebSocket":
        try:
            return await super().connect(url, params)
        except rawws.UpgradeRefused as e:
            raise NotChecked(f"the raw client's upgrade was refused: {e}") from None

    async def next_answer(self, what: str, timeout: float = 5) -> Any:
        """The next text or binary frame that is not an event (transport pings are skipped), or
        Failed naming `what`."""
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

    async def close_code(self, timeout: float = CLOSE_WAIT) -> tuple[list, int | None]:
        """Read until the close frame: (answers before it, its code). ("eof", None) when the
        connection ended without a close frame."""
        seen: list = []

        async def read():
            while True:
                try:
                    opcode, data = await self.recv_frame()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return "eof"
                if opcode in (OP_TEXT, OP_BINARY):
                    try:
                        doc = json.loads(data)
                    except ValueError:
                        doc = data
                    if is_answer(doc):
                        seen.append(doc)
                elif opcode == OP_CLOSE:
                    return self.close_code_of(data)
        return seen, await asyncio.wait_for(read(), timeout)



async def raw_socket(ctx, params: dict, node: int = 0) -> RawWebSocket:
    sock = await RawWebSocket.connect(ctx.target.urls[node], params)
    ctx.clients.append(sock)
    return sock


AT_LIMIT = [4096] * 16  # 65,536 bytes in 16 fragments
OVER_LIMIT = [4096] * 16 + [1]  # 65,537 bytes: every fragment is small


@case("IN-4", title="fragments adding up to 65,536 bytes pass; adding up to 65,537 bytes close with 1009 (after auth)")
async def in4_fragments_after_auth(ctx):
    w = ctx.world
    sock = await raw_socket(ctx, {"workspace_id": w.ws_a})
    sock.send_frame(OP_TEXT, json.dumps(auth(await ctx.token(w.alice))).encode())
    await sock.flush()
    ctx.equal(await sock.next_answer("auth_ack"), AUTH_ACK, "the token must be accepted")
    sock.send_fragmented(OP_TEXT, ping_of(LIMIT), AT_LIMIT)
    await sock.flush()
    ctx.equal(await sock.next_answer("the pong"), PONG,
              "16 fragments adding up to 65,536 bytes are one allowed message")
    data = ping_of(LIMIT + 1)
    sock.send_frame(OP_TEXT, data[:4096], fin=False)
    sock.send_frame(OP_PING, b"between fragments")  # RFC 6455 allows control frames between fragments
    sock.send_fragmented(OP_CONT, data[4096:], [4096] * 15 + [1])
    await sock.flush()
    try:
        _, code = await sock.close_code()
    except asyncio.TimeoutError:
        ctx.expect(False, "17 fragments adding up to 65,537 bytes must close the connection", 1009, "still open")
    ctx.equal(code, 1009, "a fragmented message of 65,537 bytes in total must close the connection with 1009")


@case("IN-4", "HS-3", title="fragments adding up to 65,537 bytes before auth close with 1009")
async def in4_fragments_before_auth(ctx):
    w = ctx.world
    sock = await raw_socket(ctx, {"workspace_id": w.ws_a})
    sock.send_fragmented(OP_TEXT, auth_of(await ctx.token(w.alice), LIMIT + 1), OVER_LIMIT)
    await sock.flush()
    try:
        _, code = await sock.close_code()
    except asyncio.TimeoutError:
        ctx.expect(False, "a fragmented auth of 65,537 bytes must close the connection", 1009, "still open")
    ctx.equal(code, 1009, "a fragmented message of 65,537 bytes before auth must close the connection with 1009")


# -- IN-5 ---------------------------------------------------------------------------------------------------

def _keepalive(ctx) -> tuple[float, float]:
    ping_s, pong_s = ctx.target.timeout("ping_s", 54), ctx.target.timeout("pong_s", 60)
    if max(ping_s, pong_s) + 5 > 110:
        raise NotChecked(f"ping_s {ping_s:g} / pong_s {pong_s:g}: longer than a case may wait")
    return ping_s, pong_s


async def _authed_bare(ctx):
    w = ctx.world
    ws = await bare_ws(ctx, {"workspace_id": w.ws_a}, autoping=False)
    await ws.send_str(json.dumps(auth(await ctx.token(w.alice))))
    while True:
        msg = await receive(ctx, ws, "auth_ack")
        if msg.type is aiohttp.WSMsgType.TEXT and json.loads(msg.data) == AUTH_ACK:
            return ws
        ctx.expect(msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.PING), "the token must be accepted",
                   AUTH_ACK, msg.type.name)


@case("IN-5", title="the server sends transport pings within ping_s and closes a client that never answers "
                    "within pong_s", slow=True)
async def in5_unanswered_pings_close(ctx):
    ping_s, pong_s = _keepalive(ctx)
    ws = await _authed_bare(ctx)
    loop = asyncio.get_running_loop()
    started = loop.time()
    first_ping = None
    while True:
        bound = (ping_s + 5) if first_ping is None else (pong_s + 5)
        remaining = started + bound - loop.time()
        try:
            msg = await asyncio.wait_for(ws.receive(), max(remaining, 0.01))
        except asyncio.TimeoutError:
            if first_ping is None:
                ctx.expect(False, f"no transport ping within ping_s + 5 s ({ping_s + 5:g} s)", "a PING frame",
                           "nothing")
            ctx.expect(False, f"a client that never answered the transport pings is still open after pong_s + 5 s "
                              f"({pong_s + 5:g} s)", "the server closes the connection", "open")
        elapsed = loop.time() - started
        if msg.type is aiohttp.WSMsgType.PING:
            first_ping = elapsed if first_ping is None else first_ping  # and do not answer it
        elif msg.type in CLOSED:
            ctx.expect(first_ping is not None, f"the connection was closed after {elapsed:.1f} s without a "
                                               "transport ping first", "a PING frame, then the close", msg.type.name)
            return
        # text frames (events of other cases) are ignored


@case("IN-5", title="a client that answers transport pings stays open past pong_s", slow=True)
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
    ctx.equal(await answers_up_to_pong(ctx, client, len(client.frames)), [PONG],
              "the connection still answers after pong_s")

"""A reference node that uses liberties the contract grants: proof that the conformance suite
passes what it should pass (the "permissive twin" of tests/broken_node.py).

    python tests/permissive_node.py --liberty NAME[,NAME...] <any `scopehub serve` flags>

Each liberty is a small monkeypatch of a reference class or function, applied before
`scopehub.cli.main(["serve", ...])` runs. It chooses differently from the reference where
docs/protocol.md leaves room, and cites the sentence (or the silence) that leaves it; the node
still meets every requirement of the contract. Liberties combine (a comma list applies several,
except `close-drop` with `close-4401`: both choose the close after an auth failure).
`--liberty none` runs the correct reference through the same path.

A few liberties touch the same seam, so they share three small helpers, each installed once:
`_auth_fail` (the answer to a failed auth: its frame, delay and close), `_lanes` (frames held
back per connection, order kept) and `_info`/`_health` wrappers. Patches are applied in the
order of LIBERTIES below, whatever the order on the command line, so that they stack the same
way every time (the queue bound under the delays, the delays under the extra fields)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shlex
import struct
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

# Run as a script (`python tests/permissive_node.py`): make the project importable from any cwd.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aiohttp import web  # noqa: E402
from ulid import ULID  # noqa: E402

from reference import app as ref_app  # noqa: E402
from reference import control, events, positions, ws_handler  # noqa: E402
from reference.broadcaster import MemoryBroadcaster, PublishFailed  # noqa: E402
from reference.connection import Connection  # noqa: E402
from reference.hub import Hub  # noqa: E402
from reference.state import STATE  # noqa: E402
from scopehub import cmd_serve  # noqa: E402

PERMISSIVE_NODE = Path(__file__).resolve()


@dataclass(frozen=True)
class Liberty:
    what: str  # what the node does differently
    why: str  # the sentence of docs/protocol.md that allows it
    patch: object


LIBERTIES: dict[str, Liberty] = {}
CONFLICTS = ({"close-drop", "close-4401"},)


def liberty(name: str, what: str, why: str):
    def register(fn):
        LIBERTIES[name] = Liberty(what, why, fn)
        return fn
    return register


def _forget_on_init(per_conn: dict) -> None:
    """Per-connection state is kept by id(conn) (Connection has __slots__); a new connection may
    reuse a closed one's id, so it starts afresh."""
    orig = Connection.__init__

    def __init__(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        per_conn.pop(id(self), None)
    Connection.__init__ = __init__


def _event_doc(data: str) -> dict | None:
    """The parsed frame when it is an event frame (a top-level event_id), else None."""
    if '"event_id"' not in data:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and "event_id" in doc else None


# -- shared seam 1: the answer to a failed token auth (HS-3) -------------------------------------

AUTH_FAIL = {
    "frame": lambda text: json.dumps({"error": text}, separators=(",", ":")),
    "delay": lambda text: 0.0,
    "close": lambda ws: ws.close(code=1008),  # the reference's choice (docs/protocol.md, last section, 2)
}
_auth_fail_installed = False


def _install_auth_fail() -> None:
    """Replace ws_handler._auth_fail by the same steps, each taken from AUTH_FAIL."""
    global _auth_fail_installed
    if _auth_fail_installed:
        return
    _auth_fail_installed = True

    async def _auth_fail(ws, text, st, peer):
        ws_handler._auth_failed(st, peer, text)  # counted in health, as the reference does
        await asyncio.sleep(AUTH_FAIL["delay"](text))
        try:
            await ws.send_str(AUTH_FAIL["frame"](text))
            await AUTH_FAIL["close"](ws)
        except (ConnectionError, RuntimeError):
            pass
    ws_handler._auth_fail = _auth_fail


# -- shared seam 2: frames held back per connection ("lanes") -------------------------------------

# Seconds a frame is held back before it is queued on its connection, per kind of frame. One FIFO
# per connection and lane, each lane with one fixed delay: frames of a lane keep their order.
DELAYS = {"answer": 0.0, "event": 0.0, "task/chat": 0.0}
SLOW_SCOPES = ("task", "chat")
_delivering: list = [None]  # the scope type of the Hub.deliver call in progress (it is synchronous)
_lanes_installed = False


class _Lane:
    __slots__ = ("conn", "delay", "items", "timer")

    def __init__(self, conn: Connection, delay: float) -> None:
        self.conn, self.delay, self.items, self.timer = conn, delay, deque(), None

    def push(self, data: str, frame: bytes | None) -> None:
        loop = asyncio.get_running_loop()
        self.items.append((loop.time() + self.delay, data, frame))
        if self.timer is None:
            self.timer = loop.call_at(self.items[0][0], self.drain)

    def drain(self) -> None:
        self.timer = None
        conn, loop = self.conn, asyncio.get_running_loop()
        now = loop.time() + 0.001
        while self.items and self.items[0][0] <= now:
            if conn.closed:
                self.items.clear()
                return
            paused = conn._protocol is not None and conn._protocol.writing_paused
            if len(conn._queue) >= conn.limit and not paused:
                # The queue is written this iteration: wait for room rather than evict a reader
                # that keeps up (only a paused transport with a full queue is a slow consumer).
                self.timer = loop.call_later(0.005, self.drain)
                return
            _, data, frame = self.items.popleft()
            _lanes_base(conn, data, frame)  # a slow consumer is evicted here, as by the reference
        if self.items:
            self.timer = loop.call_at(self.items[0][0], self.drain)


def _lanes_base(conn, data, frame):  # replaced by _install_lanes with the enqueue beneath the lanes
    raise AssertionError


def _install_lanes() -> None:
    global _lanes_installed, _lanes_base
    if _lanes_installed:
        return
    _lanes_installed = True
    base = _lanes_base = Connection.enqueue
    lanes: dict[int, dict[str, _Lane]] = {}

    orig_deliver = Hub.deliver

    def deliver(self, scope_type, scope_id, data, etype, exclude_workspace, seq):
        _delivering[0] = scope_type
        try:
            return orig_deliver(self, scope_type, scope_id, data, etype, exclude_workspace, seq)
        finally:
            _delivering[0] = None
    Hub.deliver = deliver

    def enqueue(self, data, frame=None):
        if self.closed:
            return False
        if frame is not None and _delivering[0] is not None:  # Hub.deliver: an event
            scope = _delivering[0]
        else:  # an answer, or an event of a replay (REP-3): its frame names its scope
            doc = _event_doc(data)
            scope = None if doc is None else doc.get("scope", "")
        if scope is None:
            lane, delay = "answer", DELAYS["answer"]
        elif scope in SLOW_SCOPES:
            lane, delay = "task/chat", DELAYS["event"] + DELAYS["task/chat"]
        else:
            lane, delay = "event", DELAYS["event"]
        if delay <= 0:
            return base(self, data, frame)
        mine = lanes.setdefault(id(self), {})
        if lane not in mine:
            mine[lane] = _Lane(self, delay)
        mine[lane].push(data, frame)
        return True
    Connection.enqueue = enqueue
    _forget_on_init(lanes)


# -- shared seam 3: GET /_control/info and GET /health/realtime -----------------------------------

def _wrap_info(change) -> None:
    """control.info(st) -> dict, then change(info, st) edits it."""
    orig = control.info

    def info(st):
        doc = orig(st)
        change(doc, st)
        return doc
    control.info = info


def _wrap_health(change) -> None:
    """The health snapshot, then change(snapshot, st) edits it. app.py bound handle_health by name."""
    orig = ref_app.handle_health

    async def handle_health(request):
        resp = await orig(request)
        if resp.status != 200 or not isinstance(resp, web.Response) or resp.body is None:
            return resp
        snap = json.loads(resp.body)
        change(snap, request.app[STATE])
        return web.json_response(snap, headers={"Cache-Control": "no-store"})
    ref_app.handle_health = handle_health


# == the liberties (applied in this order) =======================================================

@liberty("unbounded-queue", "never evicts a slow consumer: every frame is buffered and sent once it reads again "
         "(send_queue is still reported in info)",
         'DEL-6 "is either still sent everything (DEL-1) or closed by the server within 10 s of the overflow"')
def _unbounded_queue() -> None:
    orig = Connection.__init__

    def __init__(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        # DEL-6 lets a full queue be "still sent everything": no bound, so enqueue never evicts
        # and a replay's put() never waits (info keeps reporting the configured send_queue).
        self.limit = sys.maxsize
    Connection.__init__ = __init__


@liberty("slow-answers", "answers go out ~100 ms late (order kept), event frames ~300 ms late, an auth failure's "
         "error frame ~300 ms late and the auth-timeout error ~1 s after auth_s",
         'DEL-1 "within 5 s"; IN-2 "answers ... go out in the order of the frames they answer" bounds order, '
         'not speed; HS-3 bounds the client ("sent within the auth timeout"), not when the error comes')
def _slow_answers() -> None:
    # The contract bounds delivery (DEL-1: 5 s) and fixes the order of answers (IN-2), not the
    # reference's speed (answers in well under a millisecond): every answer waits ~100 ms, every
    # event frame ~300 ms, each lane in order.
    DELAYS["answer"] = 0.1
    DELAYS["event"] = 0.3
    _install_lanes()
    # HS-3: the client must send auth within auth_s; the error for one that did not may come later.
    AUTH_FAIL["delay"] = lambda text: 1.0 if text == "auth timeout or read error" else 0.3
    _install_auth_fail()


@liberty("reorder-scopes", "frames of task and chat scopes are held ~100 ms longer than those of workspace, user "
         "and global (order within a scope kept)",
         'only per-scope order is required: DEL-3 "every connection that receives both receives e1 first" (both '
         'of S), REP-1 "the frames of one scope arrive on a connection in scope order"')
def _reorder_scopes() -> None:
    # Order is owed per scope (DEL-3, DEL-4, REP-1), never across scopes: task and chat frames take
    # a lane of their own, ~100 ms behind the others.
    DELAYS["task/chat"] = 0.1
    _install_lanes()


@liberty("early-events", "on every successful auth the node publishes a global event of its own (twin:hello) "
         "through its normal publish path, and sends auth_ack only once it was queued to this connection "
         "(cookie connections get it as their first frame)",
         'HS-6 "Events of those scopes, and `global` events, may therefore arrive before `auth_ack`"; EV-1 '
         '"`global:all` (every connection on every node)": events need not come from the control API')
def _early_events() -> None:
    orig_attach = Hub.attach
    orig_enqueue = Connection.enqueue
    waiting: dict[int, tuple[str, asyncio.Future]] = {}  # id(conn) -> (hello event_id, queued)

    def enqueue(self, data, frame=None):
        ok = orig_enqueue(self, data, frame)
        w = waiting.get(id(self))
        if w is not None and ok and w[0] in data and not w[1].done():
            w[1].set_result(None)
        return ok
    Connection.enqueue = enqueue

    async def attach(self, conn, ack):
        # The reference's attach, without the ack: the connection now holds workspace:W, user:U
        # and receives global events (HS-6).
        if not await orig_attach(self, conn, None):
            return False
        eid = str(ULID())  # chosen here: on the memory relay the event is delivered inside publish
        queued = asyncio.get_running_loop().create_future()
        waiting[id(conn)] = (eid, queued)
        try:
            node = getattr(self.broadcaster, "node_id", "")
            await self.publish("global", "all", {"type": "twin:hello", "event_id": eid,
                                                 "payload": {"node": node, "note": "a server-originated event"}})
            await asyncio.wait_for(queued, 3.0)
        except (PublishFailed, asyncio.TimeoutError):
            pass  # the store is down or slow: the hello is ours, not owed; answer auth anyway
        finally:
            waiting.pop(id(conn), None)
        if conn.closed or not conn.counted:
            return False
        if ack is not None:
            conn.enqueue(ack)
        return True
    Hub.attach = attach


@liberty("extra-fields", "every answer carries fields the contract does not name: auth_ack, pong, subscribe and "
         "unsubscribe answers (top level and in payload), auth error frames (code), HS-2 bodies, the control "
         "API's answers (publish, info, token, ...), the health snapshot; HS-1 and HS-5 refusals have plain-text "
         "bodies",
         'Terms: "a frame or an answer body MAY carry fields beyond the ones this document names" (event frames '
         'excepted, EV-2); HS-1 and HS-5 fix only the status ("answers HTTP 400", "HTTP 404", "refused with 403")')
def _extra_fields() -> None:
    orig_enqueue = Connection.enqueue

    def enqueue(self, data, frame=None):
        # Answers only (event frames are exact, EV-2): a top-level field, and one in the payload.
        if frame is None and _event_doc(data) is None:
            try:
                doc = json.loads(data)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                doc["ts"] = _ms()
                if isinstance(doc.get("payload"), dict):
                    doc["payload"]["trace"] = secrets.token_hex(4)
                if doc.get("type") == "auth_ack":
                    doc["session"] = {"id": secrets.token_hex(8)}
                data = json.dumps(doc, separators=(",", ":"))
        return orig_enqueue(self, data, frame)
    Connection.enqueue = enqueue

    # HS-3 error frames: {"error": text} plus a machine code.
    AUTH_FAIL["frame"] = lambda text: json.dumps({"error": text, "code": _code(text), "retry": False},
                                                 separators=(",", ":"))
    _install_auth_fail()

    # HTTP refusals before the upgrade: HS-1 and HS-5 fix only the status, so plain text; HS-2's
    # JSON bodies are fixed ({"error": ...}) and may carry more fields.
    plain = {"workspace not found", "workspace_id or workspace_slug required", "origin not allowed"}

    def _http_error(status, text):
        if text in plain:
            return web.Response(status=status, text=f"{status}: {text}\n")
        return web.json_response({"error": text, "code": _code(text), "status": status}, status=status)
    ws_handler._http_error = _http_error

    # Every JSON object the control API answers (publish, token, fixtures, faults, 401s) and the
    # health snapshot: one more top-level field.
    orig_mw = control.control_auth

    @web.middleware
    async def control_auth(request, handler):
        resp = await orig_mw(request, handler)
        if (request.path.startswith(("/_control/", "/health/")) and isinstance(resp, web.Response)
                and resp.content_type == "application/json" and resp.body is not None):
            doc = json.loads(resp.body)
            if isinstance(doc, dict):
                doc["request_id"] = secrets.token_hex(8)
                resp = web.json_response(doc, status=resp.status, headers={
                    k: v for k, v in resp.headers.items() if k.lower() not in ("content-type", "content-length")})
        return resp
    control.control_auth = control_auth

    # info and health: fields inside the named objects too.
    def more_info(doc, st):
        doc["build"] = {"twin": True}
        for key, extra in (("retention", {"source": "relay"}), ("timeouts", {"write_s": 10}),
                           ("origins", {"mode": "allow-list"})):
            if isinstance(doc.get(key), dict):
                doc[key].update(extra)
    _wrap_info(more_info)

    def more_health(snap, st):
        snap["uptime_s"] = 1
        if isinstance(snap.get("redis"), dict):
            snap["redis"]["stream_prefix"] = "ws:scope:"
    _wrap_health(more_health)


def _ms() -> int:
    return int(time.time() * 1000)


def _code(text: str) -> str:
    return text.upper().replace(" ", "_").replace("/", "_")


@liberty("close-drop", "after an auth failure's error frame the node drops the TCP connection without a close frame "
         "(as Multica does)",
         'HS-3 "after which the connection is closed (for the close code, see the last section)"; last section, 2: '
         '"The contract names no code (Multica drops the connection without a close frame)"')
def _close_drop() -> None:
    async def drop(ws):
        # No close frame: mark the aiohttp response closed (so it sends none when the handler
        # returns) and close the socket once the error frame is written (FIN, as net.Conn.Close).
        ws._set_closed()
        ws._req.transport.close()
    AUTH_FAIL["close"] = drop
    _install_auth_fail()


def _close_frame(code: int, reason: bytes = b"") -> bytes:
    payload = struct.pack("!H", code) + reason
    return struct.pack("!BB", 0x88, len(payload)) + payload  # FIN + close, unmasked (server)


@liberty("close-4401", "after an auth failure's error frame the node closes with code 4401; a slow consumer is "
         "closed with a 1013 close frame",
         'HS-3 names no close code (last section, 2: "The contract names no code"); DEL-6 "closed by the server '
         'within 10 s of the overflow" names none either (only IN-4 fixes one, 1009)')
def _close_4401() -> None:
    AUTH_FAIL["close"] = lambda ws: ws.close(code=4401)
    _install_auth_fail()

    orig_abort = Connection.abort

    def abort(self):
        t = self.transport
        if self.evicted and not self.closed and t is not None and not t.is_closing():
            # An evicted slow consumer (DEL-6) gets a 1013 ("try again later") close frame after
            # what the transport already holds; the socket closes once that is written, and in
            # any case 2 s later (well inside DEL-6's 10 s).
            t.write(_close_frame(1013, b"slow consumer"))
            t.close()
            asyncio.get_running_loop().call_later(2.0, t.abort)
        orig_abort(self)  # closed, tasks stopped; a closing transport is left to finish
    Connection.abort = abort


@liberty("no-resume", "does not claim resume: the publish answer's pos is null, frames carry no scope/scope_id/pos, "
         "a since is ignored (a plain ack, no recovered)",
         'REP "(EXT, capability `resume`)"; CTL-4 "{"event_id": str, "pos": str|null}"; REP-1 "The publish answer '
         'returns the same `pos` (always a string when `resume` is claimed)"')
def _no_resume() -> None:
    # REP-1's server-set fields are the resume capability's: a frame is the published object plus
    # event_id (EV-2) and nothing else. (prepare() still drops published scope/scope_id/pos.)
    events.finish = lambda body, scope_type, scope_id, pos: body

    orig_publish = Hub.publish

    async def publish(self, scope_type, scope_id, frame, exclude_workspace=None):
        event_id, _ = await orig_publish(self, scope_type, scope_id, frame, exclude_workspace)
        return event_id, None  # CTL-4: "pos": str|null
    Hub.publish = publish

    orig_handle = ws_handler._handle_frame

    async def _handle_frame(data, conn, st):
        # REP-2's since is the resume capability's: without it, a subscribe is a subscribe.
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            doc = None
        if (isinstance(doc, dict) and doc.get("type") == "subscribe" and isinstance(doc.get("payload"), dict)
                and "since" in doc["payload"]):
            del doc["payload"]["since"]
            data = json.dumps(doc)
        await orig_handle(data, conn, st)
    ws_handler._handle_frame = _handle_frame

    _wrap_info(lambda doc, st: doc.update(capabilities=[c for c in doc["capabilities"] if c != "resume"]))


@liberty("claims-none", "claims no optional capability (capabilities: []), behaviour unchanged",
         'CTL-1 "`capabilities` (a subset of ...)"; "Requirements that belong to a capability the target does not '
         'claim in `info` are reported `not claimed`"')
def _claims_none() -> None:
    _wrap_info(lambda doc, st: doc.update(capabilities=[]))


@liberty("age-retention", 'declares retention by age only: {"max_len": null, "max_age_s": 3600} (and keeps '
         "every event of the last hour: no length trim)",
         'CTL-1 "`retention` (`max_len` and `max_age_s`, each a number or `null`)"; REP-6 "A target declares its '
         'retention in `info`"')
def _age_retention() -> None:
    # Honest about it: the relay trims by age only (the length bound becomes unreachable).
    orig = cmd_serve.broadcaster_from

    def broadcaster_from(args, node_id, redis_url):
        args.max_len = 2**31 - 1
        return orig(args, node_id, redis_url)
    cmd_serve.broadcaster_from = broadcaster_from
    _wrap_info(lambda doc, st: doc.update(retention={"max_len": None,
                                                     "max_age_s": st.broadcaster.retention()["max_age_s"] or 3600}))


POS_PREFIX = "v9."


@liberty("pos-format", 'positions are another opaque format ("v9." + urlsafe base64 of the reference\'s); a since '
         "string that does not decode is answered recovered: false (not invalid payload)",
         '"**`pos` is opaque.**"; REP-5 "a string that is no position the target ever gave out may be answered '
         '`invalid payload` (it cannot be parsed) or `recovered: false` (it parses but is unknown, REP-4)"')
def _pos_format() -> None:
    orig_encode, orig_decode = positions.encode, positions.decode

    def encode(scope_type, scope_id, entry_id):
        ref = orig_encode(scope_type, scope_id, entry_id)
        return POS_PREFIX + base64.urlsafe_b64encode(ref.encode()).decode().rstrip("=")

    def decode(pos, scope_type, scope_id):
        if not isinstance(pos, str):
            raise positions.BadPosition("since must be a string")  # REP-5: not a string
        if not pos.startswith(POS_PREFIX):
            return None  # every string parses; one we never gave out is unknown: recovered false
        body = pos[len(POS_PREFIX):]
        try:
            ref = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
            return orig_decode(ref, scope_type, scope_id)
        except (ValueError, positions.BadPosition):
            return None
    positions.encode, positions.decode = encode, decode


@liberty("revoke-lazily", "a revocation closes the user's connections ~1 s later (their subscriptions end at once), "
         'with the close reason "access revoked", and answers {"revoked": true}',
         'AZ-5 "closes that user\'s connections to that workspace on every node within 2 s, with close code 1008" (no '
         'reason text named); "Where no requirement fixes an answer body (fixtures, faults, revoke), any JSON object '
         'will do"')
def _revoke_lazily() -> None:
    def revoke(self, workspace_id, user_id):
        gone = [c for c in self.connections if c.workspace_id == workspace_id and c.user_id == user_id]
        loop = asyncio.get_running_loop()
        for conn in gone:
            self.detach(conn)
            loop.call_later(1.0, conn.goodbye, 1008, "access revoked")
        return len(gone)
    Hub.revoke = revoke
    orig = control.post_revoke

    async def post_revoke(request):
        answer = await orig(request)
        if answer.status != 200:
            return answer
        return web.json_response({"revoked": True})
    control.post_revoke = post_revoke


@liberty("global-no-id", "a global publish without id broadcasts (200) instead of 400",
         'CTL-4 "a `global` publish without `id` may be answered either way (400, or a broadcast)"')
def _global_no_id() -> None:
    orig_body = control._body

    async def _body(request):
        doc = await orig_body(request)
        if request.path == "/_control/publish" and doc.get("scope") == "global" and doc.get("id") is None:
            doc["id"] = "all"  # the only id global has
        return doc
    control._body = _body


@liberty("health-multica", "the health snapshot as Multica's: events_sent_by_type counts each publish once on the "
         'publishing node; on the memory relay redis.node_id "" and connected false; extra keys '
         "(unsubscribes_total, active_scope_rooms, ...)",
         'HL-1 "`events_sent_by_type` (... Multica counts each publish once on the node it went through)", '
         '"`node_id` (a string, empty when the node has no relay)", "A node without a relay store reports the '
         '`redis` object with zeros and `connected: false`"')
def _health_multica() -> None:
    orig_deliver, orig_publish = Hub.deliver, Hub.publish

    def deliver(self, scope_type, scope_id, data, etype, exclude_workspace, seq):
        # Sends are not counted per frame any more ...
        sent = self.metrics.events_sent_by_type
        before = sent.get(etype)
        n = orig_deliver(self, scope_type, scope_id, data, etype, exclude_workspace, seq)
        if before is None:
            sent.pop(etype, None)
        else:
            sent[etype] = before
        return n
    Hub.deliver = deliver

    async def publish(self, scope_type, scope_id, frame, exclude_workspace=None):
        answer = await orig_publish(self, scope_type, scope_id, frame, exclude_workspace)
        self.metrics.events_sent_by_type[events.type_of(frame)] += 1  # ... but once per publish, here
        return answer
    Hub.publish = publish

    # No relay store: the redis object is Multica's zeros (health.py fills the zero counters), and
    # nothing else (the reference may make the same choice; this keeps the liberty if it does not).
    MemoryBroadcaster.snapshot = lambda self: {"node_id": "", "connected": False, "last_error": ""}

    unsubscribes: Counter = Counter()
    orig_frame = ws_handler._frame

    def _frame(type_, **payload):
        if type_ == "unsubscribe_ack":
            unsubscribes[payload.get("scope", "")] += 1
        return orig_frame(type_, **payload)
    ws_handler._frame = _frame

    def multica_keys(snap, st):
        snap["unsubscribes_total"] = dict(unsubscribes)
        snap["active_scope_rooms"] = len(st.hub.scopes)
        snap["inbound_too_large_total"] = snap.get("inbound_too_large_total", 0)
        snap["slow_client_warnings_total"] = 0
    _wrap_health(multica_keys)


@liberty("uuid-normalised", "another spelling of a task or chat UUID (upper case, braces, urn:uuid:, no hyphens) "
         "is the canonical scope: authorized and joined as it, answered with the id as sent",
         'AZ-3 "Another spelling of a UUID ... is either forbidden, or names the same scope as the canonical spelling"')
def _uuid_normalised() -> None:
    import uuid

    from reference import authorizer
    orig = ws_handler._subscribe

    def canonical(sid: str) -> str:
        if sid.isascii():
            try:
                return str(uuid.UUID(sid))
            except ValueError:
                pass
        return sid

    async def _subscribe(conn, st, scope, sid, since):
        canon = canonical(sid) if scope in ("task", "chat") else sid
        if canon == sid or since is not ws_handler.RESUME_NONE or authorizer.canonical_uuid(canon) is None:
            return await orig(conn, st, scope, sid, since)  # resumes keep the reference's answer: forbidden
        decision = st.authorizer.decide(conn.user_id, conn.workspace_id, scope, canon)
        if decision != authorizer.ALLOWED:  # answers name the id as sent (SUB-2: {"scope":S,"id":I})
            conn.enqueue(ws_handler._frame("subscribe_error", scope=scope, id=sid, error=decision))
            return
        await st.hub.join(conn, ((scope, canon),), ws_handler._frame("subscribe_ack", scope=scope, id=sid))
    ws_handler._subscribe = _subscribe


@liberty("sorted-events", "event frames are re-encoded with their keys sorted, as Go's encoding/json writes a map "
         "(the published object's own key order is not kept)",
         'EV-2 "A delivered frame is the published object plus `event_id`" fixes fields and values, not their order')
def _sorted_events() -> None:
    orig = events.finish

    def finish(body, scope_type, scope_id, pos):
        return json.dumps(json.loads(orig(body, scope_type, scope_id, pos)), sort_keys=True, separators=(",", ":"))
    events.finish = finish


@liberty("blank-forwarding-absent", "a forwarding header whose every line is blank is taken as absent (as Multica "
         "trims it); any line with a value still counts",
         'HL-2 "a header present only with blank values MAY be taken either way"')
def _blank_forwarding_absent() -> None:
    from reference import health
    orig = health._direct_loopback

    def direct_loopback(request) -> bool:
        sent = any(v.strip() for h in health.FORWARDING_HEADERS for v in request.headers.getall(h, ()))
        return not sent and orig(_WithoutBlank(request))
    health._direct_loopback = direct_loopback


class _WithoutBlank:
    """The request as health reads it, without its blank forwarding headers."""

    def __init__(self, request):
        from multidict import CIMultiDict

        from reference import health
        self.remote = request.remote
        self.headers = CIMultiDict((k, v) for k, v in request.headers.items()
                                   if k.title() not in {h.title() for h in health.FORWARDING_HEADERS} or v.strip())


@liberty("surrogate-replaced", "a lone surrogate in a frame is read as U+FFFD, as Go's decoder does: the scope or "
         "id is then answered for what it says (unknown_scope, forbidden)",
         'IN-1 "is answered either `invalid payload` or as the string a decoder makes of it (U+FFFD in its place)"')
def _surrogate_replaced() -> None:
    from reference import inbound
    orig = inbound.parse

    def mend(value):
        if isinstance(value, str):
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        if isinstance(value, dict):
            return {mend(k): mend(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mend(v) for v in value]
        return value

    def parse(data, *, stored=False):
        doc = orig(data, stored=stored)
        try:
            return mend(doc)
        except RecursionError:  # deeper than this walk goes: ignored, as IN-3 allows
            raise inbound.NotJson("nested too deep") from None
    inbound.parse = parse


@liberty("parser-limits", "frames holding a number of more than 1,000 digits, or nested deeper than 100 levels, "
         "are ignored as not JSON",
         'IN-3 "Valid JSON beyond a parser\'s limits (numbers of more than 4,000 digits, nesting deeper than 500 '
         'levels) may be answered or ignored"')
def _parser_limits() -> None:
    import re

    from reference import inbound
    orig = inbound.parse
    long_number = re.compile(r"[0-9]{1001}")

    def depth(value) -> int:
        deepest, stack = 0, [(value, 0)]  # iterative: a recursive walk would overflow on deep frames
        while stack:
            v, level = stack.pop()
            if isinstance(v, dict | list):
                deepest = max(deepest, level + 1)
                stack.extend((c, level + 1) for c in (v.values() if isinstance(v, dict) else v))
        return deepest

    def parse(data, *, stored=False):
        doc = orig(data, stored=stored)
        text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
        if not stored and (long_number.search(text) or depth(doc) > 100):
            raise inbound.NotJson("beyond this twin's parser limits")
        return doc
    inbound.parse = parse


@liberty("header-408", "a socket whose request headers do not end in time is answered 408 before it is closed",
         'LIM-1 "is closed (with or without an answer such as 408)"')
def _header_408() -> None:
    from reference.guard import ConnectionGuard
    orig = ConnectionGuard._timed_out

    def _timed_out(self, handler):
        transport = handler.transport
        if handler in self.waiting and transport is not None:
            transport.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        orig(self, handler)
    ConnectionGuard._timed_out = _timed_out


# -- running ---------------------------------------------------------------------------------------

def parse_liberties(text: str) -> list[str]:
    """The liberties of a comma list, in application order (LIBERTIES' order)."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if names == {"none"}:
        return []
    unknown = names - set(LIBERTIES)
    if unknown or not names:
        raise ValueError(f"unknown liberty {', '.join(sorted(unknown)) or '(empty)'}: expected none or "
                         f"{', '.join(LIBERTIES)}")
    for clash in CONFLICTS:
        if clash <= names:
            raise ValueError(f"liberties {' and '.join(sorted(clash))} choose the same thing: pick one")
    return [n for n in LIBERTIES if n in names]


def combinable() -> str:
    """Every liberty that combines with the others (the first of each conflicting pair)."""
    left_out = {n for clash in CONFLICTS for n in sorted(clash)[1:]}
    return ",".join(n for n in LIBERTIES if n not in left_out)


def node_command(liberties: str, flags: str = "") -> str:
    """The node-command template of a permissive twin (scopehub.cluster's placeholders), for
    `Cluster(ClusterSpec(node_command=...))` or `scopehub conform --node-command`. Extra `flags`
    come last, so `--relay memory` there overrides the streams relay."""
    parse_liberties(liberties)  # fail here, not in a node that will not start
    return (f"{shlex.quote(sys.executable)} {shlex.quote(str(PERMISSIVE_NODE))} --liberty {shlex.quote(liberties)} "
            f"--host {{host}} --port {{port}} --node-id {{name}} --control-token {{token}} --relay streams "
            f"--redis {{redis_url}} {flags}").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument("--liberty", required=True, help="none, or a comma list of: " + ", ".join(LIBERTIES))
    args, rest = parser.parse_known_args(argv)
    try:
        names = parse_liberties(args.liberty)
    except ValueError as e:
        parser.error(str(e))
    for name in names:
        LIBERTIES[name].patch()
    if names:
        print(f"permissive_node: running with {', '.join(names)}", file=sys.stderr, flush=True)
    from scopehub.cli import main as scopehub_main
    return scopehub_main(["serve", *rest])


if __name__ == "__main__":
    sys.exit(main())

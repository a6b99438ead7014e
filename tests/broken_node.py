"""A reference node with ONE deliberate, test-only bug: proof that the conformance suite fails
what it should fail (tests/test_suite_catches_bugs.py).

    python tests/broken_node.py --bug NAME <any `scopehub serve` flags>

Each bug is a small monkeypatch of a reference class or function, applied before
`scopehub.cli.main(["serve", ...])` runs, and models a plausible mistake of a team porting
Multica's realtime hub. The bugs live only here: `scopehub serve` has no switch for them.
`--bug none` runs the correct reference through the same path (the control group)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import deque

# Run as a script (`python tests/broken_node.py`): make the project importable from any cwd.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reference import authorizer as az  # noqa: E402
from reference import events, inbound, positions, tokens, ws_handler  # noqa: E402
from reference.broadcaster import MemoryBroadcaster  # noqa: E402
from reference.connection import Connection  # noqa: E402
from reference.hub import Hub  # noqa: E402
from reference.relay import base, streams  # noqa: E402

BUGS: dict[str, tuple[str, object]] = {}  # name -> (what the mistake is, patch function)


def bug(name: str, what: str):
    def register(fn):
        BUGS[name] = (what, fn)
        return fn
    return register


def _is_event(data: str) -> bool:
    """Event frames carry an event_id; acks, errors and pongs do not."""
    return '"event_id"' in data


def _forget_on_init(per_conn: dict) -> None:
    """Per-connection state of a bug is kept by id(conn) (Connection has __slots__ and no weakref
    slot); a new connection may reuse a closed one's id, so it starts afresh."""
    orig = Connection.__init__

    def __init__(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        per_conn.pop(id(self), None)
    Connection.__init__ = __init__


# -- stopping ------------------------------------------------------------------------------------

@bug("sigterm-drop", "on SIGTERM every connection is cut without a close frame (clients see 1006), and sockets "
     "still waiting to authenticate are left to their auth timeout")
def _sigterm_drop() -> None:
    Connection.goodbye = lambda self, code, reason, grace=2.0: self.abort()
    from reference.state import NodeState
    orig = NodeState.__post_init__

    def __post_init__(self):
        orig(self)
        self.unauthenticated = _Nowhere()
    NodeState.__post_init__ = __post_init__


class _Nowhere(set):
    """A set that keeps nothing: the node never learns of its unauthenticated sockets."""

    def add(self, item) -> None:
        pass


# -- authorization -------------------------------------------------------------------------------

@bug("chat-any-member", "chat scopes allowed to any member of the chat's workspace: the creator check is missing")
def _chat_any_member() -> None:
    def _chat(self, user_id, ws, sid):
        chat = self._lookup(self._chats, sid)
        # BUG: only the workspace is compared; Multica also requires chat.creator == user.
        return az.ALLOWED if chat is not None and az._uuid(chat["workspace"]) == ws else az.FORBIDDEN
    az.Authorizer._chat = _chat


@bug("task-cross-workspace", "issue tasks allowed whatever the issue's workspace")
def _task_cross_workspace() -> None:
    orig = az.Authorizer._task

    def _task(self, user_id, ws, sid):
        task = self._lookup(self._tasks, sid)
        if task is not None and task.get("issue"):
            # BUG: the issue exists, so the task is allowed; its workspace is never compared.
            return az.ALLOWED if self._lookup(self._issues, az._uuid(task["issue"])) is not None else az.FORBIDDEN
        return orig(self, user_id, ws, sid)
    az.Authorizer._task = _task


@bug("nonuuid-lookup", "non-UUID task/chat ids are looked up (and answer lookup_failed when lookups fail)")
def _nonuuid_lookup() -> None:
    orig = az.Authorizer.decide

    def decide(self, user_id, workspace_id, scope, scope_id):
        if az._uuid(scope_id) is None and scope in ("task", "chat"):
            # BUG: no UUID pre-check; the id goes to the store, which finds nothing, or fails.
            try:
                self._lookup(self._tasks if scope == "task" else self._chats, None)
            except az.LookupError_:
                return az.LOOKUP_FAILED
            return az.FORBIDDEN
        return orig(self, user_id, workspace_id, scope, scope_id)
    az.Authorizer.decide = decide


@bug("resume-unauthorized", "a subscribe with since goes straight to the replay, skipping the authorizer")
def _resume_unauthorized() -> None:
    orig = ws_handler._subscribe

    async def _subscribe(conn, st, scope, sid, since):
        if since is not ws_handler.RESUME_NONE and scope in ("workspace", "user", "task", "chat"):
            # BUG: "it is a reconnect, the client held this scope before": no authorization.
            await st.hub.resume(conn, (scope, sid), since)
            return
        await orig(conn, st, scope, sid, since)
    ws_handler._subscribe = _subscribe


@bug("expired-tokens", "expired JWTs are accepted (exp not verified)")
def _expired_tokens() -> None:
    # BUG: the expiry check was left out when the date checks were moved out of PyJWT.
    orig = tokens._date
    tokens._date = lambda claims, name: None if name == "exp" else orig(claims, name)


# -- delivery ------------------------------------------------------------------------------------

@bug("async-group", "the streams relay acks the subscribe before its consumer group exists: the group is "
     "created ~50 ms later in a background task, at '$' (as Multica's relay does)")
def _async_group() -> None:
    async def on_first_subscriber(self, scope_type, scope_id):
        scope = (scope_type, scope_id)
        if scope in self._open:
            return
        key = streams.stream_key(*scope)
        slot = self.slots[streams.zlib.crc32(key.encode()) % len(self.slots)]
        self._open[scope] = slot

        async def create_group_later():
            # BUG: fire-and-forget; events appended between the ack and this XGROUP CREATE ... $
            # are never read by this node.
            await asyncio.sleep(0.05)
            cursor = await self._open_group(keys=[key, streams.nodes_key(*scope)],
                                            args=[self.group, self.ttl_ms, self.instance, self._node_expiry()])
            if self._open.get(scope) is slot:
                slot.streams[key] = streams._Reading(scope_type, scope_id, cursor)
                await self._wake(slot)
        self._spawn("async-group", create_group_later)
    streams.StreamsRelay.on_first_subscriber = on_first_subscriber


@bug("duplicate-delivery", "every 7th event frame of a connection is queued twice")
def _duplicate_delivery() -> None:
    orig = Connection.enqueue
    counts: dict[int, int] = {}  # id(conn) -> event frames queued on it (Connection has __slots__)

    def enqueue(self, data, frame=None):
        ok = orig(self, data, frame)
        if ok and _is_event(data):
            counts[id(self)] = n = counts.get(id(self), 0) + 1
            if n % 7 == 0:
                orig(self, data, frame)  # BUG: a retry path that re-sends what was already queued
        return ok
    Connection.enqueue = enqueue
    _forget_on_init(counts)


@bug("reorder", "a connection's writer swaps some consecutive event frames (every 5th with the one after it)")
def _reorder() -> None:
    orig = Connection.enqueue
    counts: dict[int, int] = {}  # id(conn) -> event frames queued on it
    held: dict[int, tuple[str, bytes | None]] = {}  # id(conn) -> the event frame held back

    def release(conn) -> None:
        if id(conn) in held:
            orig(conn, *held.pop(id(conn)))

    def enqueue(self, data, frame=None):
        if not _is_event(data):
            release(self)
            return orig(self, data, frame)
        if id(self) in held:
            # BUG: the held-back frame goes out after the one that followed it.
            ok = orig(self, data, frame)
            release(self)
            return ok
        counts[id(self)] = n = counts.get(id(self), 0) + 1
        if n % 5 == 0:
            held[id(self)] = (data, frame)  # a "coalesce with the next frame" optimisation gone wrong
            asyncio.get_running_loop().call_later(0.2, release, self)  # alone: out after 200 ms
            return not self.closed
        return orig(self, data, frame)
    Connection.enqueue = enqueue
    _forget_on_init(counts)
    _forget_on_init(held)


@bug("unsubscribe-noop", "unsubscribe is acknowledged but the subscription stays")
def _unsubscribe_noop() -> None:
    orig = Hub.leave

    def leave(self, conn, scope):
        if conn.counted and not conn.closed:
            return  # BUG: the client's unsubscribe only answers the ack (a close still cleans up)
        orig(self, conn, scope)
    Hub.leave = leave


@bug("slow-drop", "a full send queue drops the frame and keeps the connection open (a silent gap)")
def _slow_drop() -> None:
    orig = Connection.enqueue

    def enqueue(self, data, frame=None):
        if not self.closed and len(self._queue) >= self.limit:
            self._metrics.messages_dropped += 1
            return True  # BUG: "drop and carry on" instead of evicting the slow consumer
        return orig(self, data, frame)
    Connection.enqueue = enqueue


# -- under load, many scopes, long bursts, restarts (what only longer runs show) --------------------

@bug("dedup-window", "every event frame reaches a connection twice (a relay loopback beside a local fast path), the "
     "second copy 256 events later, and only a window of the connection's last 128 event ids deduplicates")
def _dedup_window() -> None:
    orig = Connection.enqueue
    state: dict[int, tuple[deque, deque, list]] = {}  # id(conn) -> (window, pending copies, [count])

    def enqueue(self, data, frame=None):
        if not _is_event(data):
            return orig(self, data, frame)
        window, pending, count = state.setdefault(id(self), (deque(maxlen=128), deque(), [0]))
        eid = json.loads(data).get("event_id")
        ok = orig(self, data, frame) if eid not in window else True
        window.append(eid)
        count[0] += 1
        pending.append((count[0] + 256, eid, data, frame))
        while pending and pending[0][0] <= count[0]:
            _, old, d, f = pending.popleft()
            if old not in window:  # BUG: the window is all that stands between a copy and the client
                orig(self, d, f)
        return ok
    Connection.enqueue = enqueue
    _forget_on_init(state)


@bug("bounded-read-pool", "one blocking read per open scope on a pool of 20 connections: a scope opened while 20 "
     "are open is acknowledged but never read")
def _bounded_read_pool() -> None:
    orig = streams.StreamsRelay.on_first_subscriber

    async def on_first_subscriber(self, scope_type, scope_id):
        scope = (scope_type, scope_id)
        if scope not in self._open and len(self._open) >= 20:
            self._open[scope] = self.slots[0]  # BUG: waits for a pooled connection that never frees up
            return
        await orig(self, scope_type, scope_id)
    streams.StreamsRelay.on_first_subscriber = on_first_subscriber


@bug("stuck-writer", "a connection whose send queue fills is neither sent anything more nor closed (its writer "
     "blocks for good)")
def _stuck_writer() -> None:
    orig = Connection.enqueue
    stuck: dict[int, bool] = {}

    def enqueue(self, data, frame=None):
        if stuck.get(id(self)):
            return True  # BUG: frames vanish behind the blocked writer
        if not self.closed and len(self._queue) >= self.limit:
            stuck[id(self)] = True
            self._started = False  # the writer never writes again; nobody closes the connection
            return True
        return orig(self, data, frame)
    Connection.enqueue = enqueue
    _forget_on_init(stuck)


# A consumer group named after the node, that keeps its position when it already exists.
_KEEP_POSITION = """
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '$', 'MKSTREAM')
if type(r) == 'table' and r.err then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, last = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == ARGV[1] then return last end
  end
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return '0-0'
"""


@bug("replay-after-restart", "each node reads a scope through a consumer group named after the node, and a restarted "
     "node carries on from the group's old position: entries stored before a subscribe reach it")
def _replay_after_restart() -> None:
    orig = streams.StreamsRelay.__init__

    def __init__(self, node_id, settings):
        orig(self, node_id, settings)
        self.group = f"node:{node_id}"  # BUG: the same group after a restart, at its old position
        self._open_group = self.write.register_script(_KEEP_POSITION)
    streams.StreamsRelay.__init__ = __init__

    async def on_last_unsubscribed(self, scope_type, scope_id):
        return None  # the group is kept for the node's next run
    streams.StreamsRelay.on_last_unsubscribed = on_last_unsubscribed


@bug("local-fast-path", "a node delivers its own publishes to its connections at once, and other nodes' when its "
     "reader gets them from the store")
def _local_fast_path() -> None:
    orig_init, orig_publish, orig_deliver = base.RedisRelay.__init__, base.RedisRelay.publish, base.RedisRelay._deliver

    def __init__(self, node_id, settings):
        orig_init(self, node_id, settings)
        self._fast: dict[tuple, dict] = {}  # (stream, entry id) -> fields, delivered at once, skipped when read back
        append = self._append

        async def spy(keys, args):
            entry_id = await append(keys=keys, args=args)
            at = list(args).index("b")
            key = (keys[0], entry_id if isinstance(entry_id, str) else entry_id.decode())
            self._fast.setdefault(key, {}).update(zip(args[at::2], args[at + 1::2]))
            return entry_id
        self._append = spy
    base.RedisRelay.__init__ = __init__

    async def publish(self, scope_type, scope_id, frame, exclude_workspace=None):
        event_id, pos = await orig_publish(self, scope_type, scope_id, frame, exclude_workspace)
        entry_id = positions.entry_str(positions.decode(pos, scope_type, scope_id))
        fields = self._fast.get((streams.stream_key(scope_type, scope_id), entry_id))
        if fields is not None and "b" in fields and not fields.get("sent"):  # BUG: its own subscribers get it at once,
            fields["sent"] = True  # before what the reader has yet to bring from other nodes
            orig_deliver(self, scope_type, scope_id, entry_id, fields)
        return event_id, pos
    base.RedisRelay.publish = publish

    def _deliver(self, scope_type, scope_id, entry_id, fields):
        own = self._fast.setdefault((streams.stream_key(scope_type, scope_id), entry_id), {})
        if own.get("sent"):
            return
        own["sent"] = True  # read back before its publish came round to it (or another node's)
        orig_deliver(self, scope_type, scope_id, entry_id, fields)
    base.RedisRelay._deliver = _deliver


# -- events --------------------------------------------------------------------------------------

@bug("exclude-ignored", "exclude_workspace is ignored: the event reaches the excluded workspace too")
def _exclude_ignored() -> None:
    orig = Hub.deliver

    def deliver(self, scope_type, scope_id, data, etype, exclude_workspace, seq):
        return orig(self, scope_type, scope_id, data, etype, None, seq)  # BUG: the field is dropped
    Hub.deliver = deliver


@bug("event-id-replaced", "a published event_id is replaced by a new server-assigned one")
def _event_id_replaced() -> None:
    orig = events.prepare

    def prepare(frame):
        if isinstance(frame, dict):
            frame = {k: v for k, v in frame.items() if k != "event_id"}  # BUG: always assign our own
        return orig(frame)
    events.prepare = prepare


# -- revocation (AZ-5) ----------------------------------------------------------------------------

@bug("revoke-local-only", "a revocation closes and refuses on the node that received it only: it is never handed "
     "to the other nodes (the hub's local close mistaken for the cluster's)")
def _revoke_local_only() -> None:
    async def revoke(self, workspace_id, user_id):
        return None  # BUG: nothing goes through Redis; the answer is still 200
    base.RedisRelay.revoke = revoke


@bug("revoke-close-1000", "revoked connections are closed with code 1000 (normal closure) instead of 1008")
def _revoke_close_1000() -> None:
    def revoke(self, workspace_id, user_id):
        gone = [c for c in self.connections if c.workspace_id == workspace_id and c.user_id == user_id]
        for conn in gone:
            self.detach(conn)
            conn.goodbye(1000, "bye")  # BUG: a normal closure: clients reconnect as if nothing happened
        return len(gone)
    Hub.revoke = revoke


@bug("revoke-forgets", "a revocation closes the user's open connections but is not remembered: the user "
     "reconnects at once, still a member")
def _revoke_forgets() -> None:
    from reference.state import NodeState

    def revoke(self, workspace_id, user_id):
        return self.hub.revoke(workspace_id, user_id)  # BUG: the membership check never hears of it
    NodeState.revoke = revoke


@bug("fixtures-reset", "loading the fixtures closes every open connection (the hub is reset with the world)")
def _fixtures_reset() -> None:
    from reference.state import NodeState
    orig = NodeState.replace_world

    def replace_world(self, world):
        orig(self, world)
        for conn in tuple(self.hub.connections):  # BUG: "the world changed, start everyone afresh"
            self.hub.detach(conn)
            conn.goodbye(1008, "world replaced")
    NodeState.replace_world = replace_world


# -- hostile input (what `scopehub fuzz` must catch: tests/test_fuzz.py) -------------------------

@bug("ascii-ids", "a subscribe's id is encoded as ASCII for its store key: a non-ASCII id kills the connection "
     "handler (a traceback; the client sees a close it was never owed)")
def _ascii_ids() -> None:
    orig = ws_handler._subscribe

    async def _subscribe(conn, st, scope, sid, since):
        sid.encode("ascii")  # BUG: "ids are UUIDs", so a key is built from ASCII bytes; anything else raises
        await orig(conn, st, scope, sid, since)
    ws_handler._subscribe = _subscribe


@bug("answer-unknown", "a frame of an unknown type is answered with an error frame instead of being ignored (IN-3)")
def _answer_unknown() -> None:
    orig = ws_handler._handle_frame

    async def _handle_frame(data, conn, st):
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            doc = None
        if isinstance(doc, dict) and doc.get("type") not in ("ping", "subscribe", "unsubscribe"):
            # BUG: "be helpful": tell the client its frame was not understood
            conn.enqueue(json.dumps({"error": "unknown message type"}))
            return
        await orig(data, conn, st)
    ws_handler._handle_frame = _handle_frame


# -- resume --------------------------------------------------------------------------------------

@bug("lying-recovered", "resume answers recovered true and replays whatever is retained, even over a trimmed "
     "gap or from a position it cannot place")
def _lying_recovered() -> None:
    orig_resume = Hub.resume

    async def resume(self, conn, scope, since):
        # BUG: a position of another scope is "from the start" rather than "unknown".
        await orig_resume(self, conn, scope, (0, 0) if since is None else since)
    Hub.resume = resume

    async def streams_replay(self, scope_type, scope_id, since):
        key, since_id = streams.stream_key(scope_type, scope_id), streams.positions.entry_str(since)
        entries = []
        async for page in self._entries_after(key, since_id):
            entries.extend(page)
        return self._replayed(scope_type, scope_id, entries)  # BUG: no check that nothing was trimmed
    streams.StreamsRelay.replay = streams_replay

    async def memory_replay(self, scope_type, scope_id, since):
        return [(e.seq, e.data, e.exclude) for e in self._history.get((scope_type, scope_id), ()) if e.seq > since]
    MemoryBroadcaster.replay = memory_replay


@bug("replay-off-by-one", "a replay skips the first missed event")
def _replay_off_by_one() -> None:
    for cls in (streams.StreamsRelay, MemoryBroadcaster):
        def patch(orig):
            async def replay(self, scope_type, scope_id, since):
                entries = await orig(self, scope_type, scope_id, since)
                return entries[1:] if entries else entries  # BUG: "since" treated as inclusive, twice
            return replay
        cls.replay = patch(cls.replay)


# -- Redis Cluster (NODE-4) ---------------------------------------------------------------------------

@bug("tag-per-scope", "each scope's keys share a hash tag of their own ({type:id}), while a reader still reads "
     "many scopes in one XREADGROUP: on a Redis Cluster those reads span slots and fail (CROSSSLOT, MOVED)")
def _tag_per_scope() -> None:
    streams.stream_key = lambda scope_type, scope_id: f"ws:scope:{{{scope_type}:{scope_id}}}:stream"
    streams.nodes_key = lambda scope_type, scope_id: f"ws:scope:{{{scope_type}:{scope_id}}}:nodes"


# -- hostile input (issue 16) ------------------------------------------------------------------------

@bug("surrogate-crash", "strings are used as they come: a lone surrogate in a subscribe's id reaches code that "
     "encodes it, and the connection's handler dies")
def _surrogate_crash() -> None:
    inbound.is_text = lambda value: isinstance(value, str)


@bug("token-surrogate-crash", "a token is handed to the JWT library as it comes: one holding a lone surrogate "
     "cannot be encoded, and the handler dies without an error frame")
def _token_surrogate_crash() -> None:
    tokens.is_text = lambda value: True


@bug("lenient-json", "frames are read with a lenient JSON parser: NaN, Infinity, byte order marks, UTF-16 and UTF-32 "
     "are taken as JSON")
def _lenient_json() -> None:
    def parse(data, *, stored=False):
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as e:
            raise inbound.NotJson(str(e)) from None
    inbound.parse = parse


@bug("unmasked-ok", "the WebSocket reader takes unmasked client frames and any close code")
def _unmasked_ok() -> None:
    from aiohttp import web
    ws_handler.StrictWebSocketResponse = web.WebSocketResponse


@bug("uuid-spellings", "task and chat ids are parsed leniently (upper case, braces, urn:uuid:, no hyphens) and the "
     "scope is keyed by the spelling sent: each spelling is a scope of its own")
def _uuid_spellings() -> None:
    az.canonical_uuid = az._uuid


@bug("blank-forwarding", "as Multica: only the first line of a forwarding header counts, trimmed, so an empty first "
     "line hides a proxy's second one")
def _blank_forwarding() -> None:
    import ipaddress

    from reference import health

    def direct_loopback(request) -> bool:
        if any(request.headers.get(h, "").strip() for h in health.FORWARDING_HEADERS):
            return False
        return ipaddress.ip_address((request.remote or "").split("%", 1)[0]).is_loopback
    health._direct_loopback = direct_loopback


@bug("last-cookie", "of several multica_auth cookies the last one counts (a cookie jar's reading)")
def _last_cookie() -> None:
    ws_handler.auth_cookie = lambda request: request.cookies.get(ws_handler.COOKIE) or None


@bug("string-exp", "an exp or nbf that is not a number is skipped: a JWT whose exp is a string never expires")
def _string_exp() -> None:
    orig = tokens._date
    tokens._date = lambda claims, name: orig(claims, name) if isinstance(claims.get(name), int | float) else None


@bug("nan-control", "control API bodies are read with a lenient JSON parser and ttl_s is any number: NaN reaches the "
     "token and the published frame")
def _nan_control() -> None:
    from reference import control

    class _Lenient:
        NotJson = inbound.NotJson

        @staticmethod
        def parse(data, *, stored=False):
            try:
                return json.loads(data)
            except ValueError as e:
                raise inbound.NotJson(str(e)) from None

        is_text = staticmethod(inbound.is_text)
    control.inbound = _Lenient
    control.MAX_TTL_S = float("inf")


@bug("unicode-digits-since", "positions are parsed with \\d and $: any Unicode digit, and a newline at the end, "
     "still make a position")
def _unicode_digits_since() -> None:
    import re

    old = re.compile(r"^(\d{1,20})-(\d{1,20})$")

    class _Loose:
        fullmatch = staticmethod(old.match)
    positions._ENTRY = _Loose


@bug("no-header-timeout", "sockets that never finish their request headers stay open")
def _no_header_timeout() -> None:
    from reference.guard import ConnectionGuard
    ConnectionGuard._timed_out = lambda self, handler: None


@bug("sub-cap-closes", "a subscribe over max_subscriptions closes the connection instead of answering")
def _sub_cap_closes() -> None:
    orig = ws_handler._subscribe

    async def _subscribe(conn, st, scope, sid, since):
        cap = st.config.max_subscriptions
        if (cap and scope in ("task", "chat") and (scope, sid) not in conn.subscriptions
                and sum(1 for s in conn.subscriptions if s[0] in ("task", "chat")) >= cap):
            conn.goodbye(1008, "too many subscriptions")
            return
        await orig(conn, st, scope, sid, since)
    ws_handler._subscribe = _subscribe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument("--bug", required=True, choices=["none", *BUGS])
    args, rest = parser.parse_known_args(argv)
    if args.bug != "none":
        BUGS[args.bug][1]()
        print(f"broken_node: running with bug {args.bug!r}: {BUGS[args.bug][0]}", file=sys.stderr, flush=True)
    from scopehub.cli import main as scopehub_main
    return scopehub_main(["serve", *rest])


if __name__ == "__main__":
    sys.exit(main())

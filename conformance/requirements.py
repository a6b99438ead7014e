"""The registry: every requirement of the contract (docs/protocol.md), in one place.

Each entry has its ID, a short title, the requirement's sentence as docs/protocol.md states it
(tests/test_registry.py fails when the two disagree), the capability a target must claim for
it to be judged, its profile, and who judges it: the suite's cases (`conformance/cases/`,
registered with the IDs they judge), the history checker (`checker`: the exploration and
the simulator judge it from a recorded history) or, for process and network faults, the
simulator only. The checker, the runner, the exploration, the simulator and every report read
this module; nothing else keeps a list of IDs."""

from __future__ import annotations

from dataclasses import dataclass

SIMULATOR = "needs process and network faults: judged by the simulator (scopehub sim)"


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    sentence: str  # as docs/protocol.md states it (whitespace folded)
    capability: str | None = None  # judged only when the target claims it in /_control/info
    profile: str = "default"  # "strict": judged only with --profile strict
    checker: str = ""  # how the history checker judges it (its anomaly kinds), when it does
    elsewhere: str | None = None  # why the suite cannot judge it, and who does
    contract: bool = True  # False: one of the simulator's own checks, not a sentence of the contract

    @property
    def group(self) -> str:
        return self.id.split("-")[0]


def _r(id: str, title: str, *sentence: str, **kw) -> Requirement:
    return Requirement(id, title, "".join(sentence), **kw)


REQUIREMENTS: dict[str, Requirement] = {r.id: r for r in [
    _r('HS-1', 'workspace_id or workspace_slug; 400 without, 404 for an unknown slug',
     'The client names the workspace with `?workspace_id=W` or `?workspace_slug=S`. With neither, '
     'the server answers HTTP 400 before the upgrade; with a slug it does not know, HTTP 404. The '
     'optional `client_platform`, `client_version` and `client_os` parameters are accepted.'),
    _r('HS-2', "cookie auth is checked before the upgrade, with the contract's statuses",
     'Cookie auth: a `multica_auth` cookie holding a token is checked before the upgrade. A bad '
     'token gets 401 `{"error":"invalid token"}`; a disabled user 403 `{"error":"account '
     'disabled"}`; a user who is not a member of W 403 `{"error":"not a member of this '
     'workspace"}`. On success the connection is live at once; no `auth_ack` is sent. With several '
     "`multica_auth` cookies, the first one counts (as Go's `Request.Cookie` reads them).",
       capability='cookie_auth'),
    _r('HS-3', 'token auth: the first data frame is auth within the timeout, exact error texts',
     "Token auth (no cookie): the client's first data frame MUST be "
     '`{"type":"auth","payload":{"token":T}}`, sent within the auth timeout (10 s). Transport '
     'ping/pong frames do not count as data frames. Success is answered `{"type":"auth_ack"}`. Any '
     'failure is answered with one text frame `{"error":"..."}`, after which the connection is '
     'closed (for the close code, see the last section). The error texts are exactly: `auth '
     'timeout or read error`, `expected auth message as first frame`, `invalid token`, `invalid '
     'claims`, `account disabled`, `not a member of this workspace`.'),
    _r('HS-4', 'HS256 JWTs and mul_ PATs; invalid token vs invalid claims',
     'A token is either an HS256 JWT with a non-empty string `sub` (the user id; `email` is '
     'optional), or a personal access token (PAT) starting `mul_`. A bad signature, any other '
     'algorithm (`none` included), an expired JWT (`now >= exp`, no leeway) or an unknown PAT is '
     '`invalid token`. A correctly signed JWT whose `sub` is missing, empty or not a string is '
     '`invalid claims`; over cookie auth that is a 401 with `{"error":"invalid claims"}`.'),
    _r('HS-5', 'origin checks, X-Forwarded-Host only from trusted proxies',
     'Origin: a request without `Origin` is allowed; so is one whose origin host equals `Host`. '
     'The first entry of `X-Forwarded-Host` is compared too, but only when the peer address is '
     'inside the trusted proxy CIDRs. Any other origin must be in the allow-list, or the upgrade '
     'is refused with 403.',
       capability='origin'),
    _r('HS-6', 'auto-subscribed to workspace and user before auth_ack',
     'Once authenticated, the connection already holds `workspace:W` and `user:U` when `auth_ack` '
     'is sent (cookie mode: before the upgrade completes), so DEL-1 covers both scopes from '
     '`auth_ack` (or the completed upgrade) on, without any `subscribe`. Events of those scopes, '
     'and `global` events, may therefore arrive before `auth_ack`.'),
    _r('HS-7', 'handshake checks answer in the order HS-1, HS-2, HS-5',
     'When several checks fail, the first in the order HS-1, HS-2, HS-5 decides the answer: an '
     'unknown slug with a bad cookie and a foreign origin gets 404.'),
    _r('IN-1', 'subscribe/unsubscribe payload validation: invalid payload',
     '`subscribe` and `unsubscribe` take the payload `{"scope":S,"id":I}`. If the payload is not '
     'an object, or the scope or id is missing or empty, the answer is '
     '`{"type":"<type>_error","payload":{"scope":S,"id":I,"error":"invalid payload"}}`, where '
     '`<type>` is `subscribe` or `unsubscribe`. A scope or id that is not valid Unicode (a `\\ud800` '
     'escape without its pair) is answered either `invalid payload` or as the string a decoder '
     'makes of it (U+FFFD in its place); either way the connection keeps working.'),
    _r('IN-2', 'ping is answered pong',
     '`{"type":"ping"}` is answered `{"type":"pong"}`. A connection\'s answers (`auth_ack`, `pong`, '
     'subscribe and unsubscribe answers) go out in the order of the frames they answer, so a pong '
     'tells the client that every frame it sent before the ping has been answered (Multica handles '
     "a connection's frames one at a time). Event frames may come between answers."),
    _r('IN-3', 'invalid JSON and unknown types are ignored',
     'Frames that are not valid JSON, and frames of an unknown type, are ignored: no answer, and '
     'the connection stays open and keeps working. Valid JSON is RFC 8259\'s, in UTF-8: `NaN` and '
     '`Infinity`, a byte order mark and other encodings (UTF-16, UTF-32) are not. Valid JSON '
     "beyond a parser's limits (numbers of more than 4,000 digits, nesting deeper than 500 levels) "
     'may be answered or ignored; either way the connection keeps working.'),
    _r('IN-4', 'inbound messages over 65,536 bytes close with 1009',
     'An inbound message longer than 65,536 bytes closes the connection with code 1009, before or '
     'after auth. Exactly 65,536 bytes is allowed. The length is counted over all fragments of the '
     'message, after decompression.'),
    _r('IN-5', 'transport pings, and a close after the pong timeout',
     'The server sends transport pings (default every 54 s) and closes a connection that has not '
     'answered within the pong timeout (default 60 s).'),
    _r('IN-6', 'frames RFC 6455 forbids fail the connection with 1002',
     'The server follows RFC 6455 where a client breaks it: a client frame that is not masked, or '
     'a close frame with a code an endpoint may not send (below 1000, 1004 to 1006, 1015 to 2999, '
     '5000 and above), fails the connection with close code 1002.'),
    _r('SUB-1', "workspace/user scopes only for the connection's own ids",
     "`workspace` and `user` may be subscribed only with the connection's own workspace id and "
     'user id; that is answered `subscribe_ack`, as often as asked. Any other id is answered '
     '`subscribe_error` with `forbidden`.'),
    _r('SUB-2', 'task/chat scopes through the authorizer: ack, forbidden, lookup_failed',
     '`task` and `chat` subscriptions are decided by the authorizer (AZ). Allowed: `subscribe_ack` '
     'with `{"scope":S,"id":I}`. Denied: `forbidden`. An authorizer failure other than not-found: '
     '`lookup_failed`.'),
    _r('SUB-3', 'other scopes answer unknown_scope',
     'Any other scope type (`global`, `daemon_runtime`, anything unknown) is answered '
     '`unknown_scope`.'),
    _r('SUB-4', 'unsubscribe always acks; global cannot be left',
     '`unsubscribe` is always answered `unsubscribe_ack` with `{"scope":S,"id":I}`, whether or not '
     'the connection held the scope. It also leaves the auto-subscribed workspace and user scopes. '
     '`global` cannot be left: unsubscribing from it is acknowledged and changes nothing.'),
    _r('SUB-5', 'subscribing twice delivers once; close drops subscriptions',
     'Subscribing to the same scope twice still delivers each event once. Closing a connection '
     'drops all of its subscriptions.'),
    _r('AZ-1', 'task scopes: issue tasks by workspace, chat tasks by creator',
     "`task:T` is allowed for an issue task when the issue's workspace is the connection's "
     "workspace, and for a chat task when the chat's workspace is the connection's workspace and "
     "the chat's creator is the connection's user. A task that is neither, or that is unknown, is "
     'forbidden.'),
    _r('AZ-2', 'chat scopes: same workspace and creator',
     "`chat:C` is allowed when C's workspace is the connection's workspace and C's creator is the "
     "connection's user; otherwise it is forbidden."),
    _r('AZ-3', 'non-UUID task/chat ids are forbidden without a lookup',
     "A task or chat id that is not a UUID is forbidden without any lookup. A UUID's canonical "
     'spelling is 36 characters: lowercase hex digits with hyphens after the 8th, 12th, 16th and '
     '20th. Another spelling of a UUID (upper case, braces, `urn:uuid:`, no hyphens) is either '
     'forbidden, or names the same scope as the canonical spelling: its subscriber receives the '
     'events published to the canonical id.'),
    _r('AZ-4', 'no leak: never an event of a scope not held',
     'No leak: a connection never receives an event of a scope it does not hold a granted '
     "subscription to at that moment. In particular it never sees another workspace's events, "
     "another user's user-scope events, a denied task or chat, and never any of these through "
     'replay (REP-7).',
       checker=('leak: a frame of a scope the connection did not hold at that moment (never asked, '
                "refused, after a refused resume), or of another workspace's or user's scope")),
    _r('AZ-5', "revocation closes the user's connections within 2 s",
     "(EXT, capability `revocation`) `POST /_control/revoke` (or the target's own revocation path) "
     "closes that user's connections to that workspace on every node within 2 s, with close code "
     '1008. Later connections of that user to that workspace are refused as non-members. A target '
     'MUST NOT close connections merely because fixtures were replaced.',
       capability='revocation'),
    _r('EV-1', 'publish targets one scope; exclude_workspace; global reaches everyone',
     'A publish targets exactly one scope: `workspace`, `user`, `task`, `chat`, or `global:all` '
     '(every connection on every node). A user publish may carry `exclude_workspace` X: that '
     "user's connections whose workspace is X are skipped. `exclude_workspace` is valid on the "
     'user scope only.',
       checker=("leak: a user event reaching the user's connection in the workspace it excluded")),
    _r('EV-2', 'delivered frame = published object + event_id (+ server fields)',
     'A delivered frame is the published object plus `event_id`. If the published object has no '
     '`event_id`, the server adds a unique string (a ULID in Multica); if it has one, it must be a '
     'non-empty string, and it is kept and returned by the publish call. The server-set fields of '
     'REP-1 (`scope`, `scope_id`, `pos`) overwrite any published values. Every other field passes '
     'through unchanged.',
       checker=('field_mismatch, phantom: a frame that is not the published object plus event_id; a frame '
                'of an event whose publish was refused')),
    _r('DEL-1', 'completeness: every acknowledged event after the ack, within 5 s',
     'Completeness: a connection that holds a subscription to S (it has received the ack) gets '
     'every event of S whose publish was acknowledged and started after that ack, within 5 s, '
     'wherever the publisher and the connection are, unless the connection closes first. If the '
     'relay store is unreachable when the subscribe is processed, the server MAY still ack; DEL-1 '
     "then covers events acknowledged after the store is back. In practice the node's relay reader "
     "must be in place for S before the ack goes out: Multica's relay creates its consumer group "
     'asynchronously after the subscribe, a known race that can lose the first events.',
       checker=('loss: an acknowledged event due to a connection that held its scope until the deadline '
                'never arrived')),
    _r('DEL-2', 'no duplicates within a subscription',
     'No duplicates: an `event_id` reaches a subscription of a connection at most once, counted '
     'from its ack until its unsubscribe or the close. (A resume after an unsubscribe may repeat '
     'earlier frames.)',
       checker=('duplicate: an event_id twice in one holding period')),
    _r('DEL-3', 'publisher order',
     'Publisher order: if publish(e1) was acknowledged before publish(e2) started and both go to '
     'S, every connection that receives both receives e1 first.',
       checker=("reorder: e2 before e1 although e1 was acknowledged before e2's publish started")),
    _r('DEL-4', 'scope order is the same on every connection',
     '(profile `strict`) Scope order: any two connections that receive e1 and e2 of S receive them '
     'in the same order.',
       profile='strict', checker=('reorder: connections disagree on the order of a scope (a cycle in the union of their '
                'orders)')),
    _r('DEL-5', 'nothing published after unsubscribe_ack arrives',
     'After `unsubscribe_ack` for S, no event of S whose publish started after that ack arrives.',
       checker=('late_after_unsubscribe: a frame whose publish started after the unsubscribe_ack')),
    _r('DEL-6', 'slow consumers: everything, or closed within 10 s; never a gap',
     'Slow consumers: a connection whose send queue (`send_queue` in `info`) is full is either '
     'still sent everything (DEL-1) or closed by the server within 10 s of the overflow. A gap on '
     'a connection that stays open is a violation. Replayed frames (REP-3) follow the same rule: '
     'the server MAY close a connection that cannot take its replay, never leave a gap.',
       checker=('gap_on_open_connection: a paused connection missed events, received later ones and was '
                'not closed in time')),
    _r('DEL-7', 'no stale events without since',
     '(profile `strict`) No stale events: without `since`, a connection receives no event of S '
     'whose publish was acknowledged before it asked for S (for the auto-subscribed scopes: before '
     'it connected).',
       profile='strict', checker=('stale_event: without since, an event acknowledged before the subscribe (or the connect)')),
    _r('REP-1', 'event frames carry scope, scope_id and pos',
     "Every event frame carries `scope`, `scope_id` and `pos`: a string giving the event's "
     'position within its scope. The publish answer returns the same `pos` (always a string when '
     "`resume` is claimed). A scope's positions are totally ordered by the relay's append order, "
     'the **scope order**, and the frames of one scope arrive on a connection in scope order. '
     '`global` frames carry a `pos` too, but `global` cannot be resumed.',
       capability='resume', checker=('field_mismatch, reorder: a frame or publish answer without string scope, scope_id, pos; '
                'frames out of scope order')),
    _r('REP-2', 'subscribe with since is answered with recovered',
     '`subscribe` MAY carry `"since": pos`, also for a scope the connection already holds (the '
     'auto-subscribed workspace and user scopes included). The `subscribe_ack` then carries '
     '`"recovered": true` or `false` and comes before every replayed frame of that subscribe. With '
     '`since` absent or `null` there is no resume and the ack has no `recovered` field.',
       capability='resume', checker=('missing_recovered_flag, field_mismatch, replay_out_of_order: recovered missing or '
                'present where it must not be; a replayed frame before the ack')),
    _r('REP-3', 'recovered true: every missed event once, in scope order, then live',
     '`recovered: true`: the connection receives every event of S after `since`, the missed ones '
     'and those published later, each exactly once and in scope order; no live event overtakes an '
     'older missed one. On a scope already held, the replay skips events already delivered on this '
     'connection, and the order guarantee covers the frames sent after the server processed the '
     'subscribe. Replayed frames carry their `pos`, so resuming again from the newest `pos` '
     'received replays nothing a second time.',
       capability='resume', checker=('lying_recovered, replay_out_of_order, duplicate, stale_event: recovered true, yet a '
                'missed event never came, came after newer ones, twice, or from before since')),
    _r('REP-4', 'recovered false: nothing replayed; never true over a gap',
     '`recovered: false` is all-or-nothing: no replayed frames, and live delivery from the ack on '
     '(DEL-1). The server MUST answer `false` whenever any event after `since` is no longer '
     'retained (trimmed, expired, lost with the stream or in a Redis restart), or `since` comes '
     'from another epoch, another scope, or is unknown. It MUST NOT claim `true` over a gap. A '
     'position therefore has to identify its scope; a bare Redis entry id does not, because ids '
     'repeat across streams.',
       capability='resume', checker=('replay_after_false: recovered false, yet an event from before the subscribe arrived')),
    _r('REP-5', 'an unparseable since is invalid payload, checked first',
     'A `since` that is not a string, or that cannot be parsed, is answered `subscribe_error` with '
     '`invalid payload`. Payload checks come before scope and authorization checks. Which strings '
     "parse depends on the target's own position format: a string that is no position the target "
     'ever gave out may be answered `invalid payload` (it cannot be parsed) or `recovered: false` '
     '(it parses but is unknown, REP-4).',
       capability='resume'),
    _r('REP-6', 'a resume inside the declared retention recovers',
     'A target declares its retention in `info` (`retention`); a resume inside it MUST recover '
     'while the relay store keeps the stream.',
       capability='resume'),
    _r('REP-7', 'resume is authorized like any subscribe',
     'A resume is authorized like any subscribe: if it is denied, nothing is replayed and nothing '
     'leaks.',
       capability='resume'),
    _r('NODE-1', 'every DEL, AZ and REP requirement holds across nodes',
     'Every DEL, AZ and REP requirement holds across nodes: the publisher, the subscriber and a '
     'resuming client may each be on a different node.',
       checker=('any DEL, AZ or REP violation whose publish and connection were on different nodes')),
    _r('NODE-2', 'killing a node loses nothing elsewhere',
     'Killing a node (SIGKILL) loses nothing for connections on the other nodes. Its clients '
     'reconnect to any node and, with resume, recover (REP-3) inside retention.',
       elsewhere=SIMULATOR),
    _r('NODE-3', '503 while the store is unreachable; delivery resumes within 10 s',
     'While the relay store is unreachable, publish answers 503, and never 200 for an event it '
     "could not store. An event answered 503 MAY still be delivered (for example when the store's "
     'answer was lost); an event answered 200 MUST be stored. When the store comes back, nodes '
     'deliver again within 10 s, without a restart.',
       elsewhere=SIMULATOR),
    _r('NODE-4', 'the relay works against a Redis Cluster',
     '(capability `redis_cluster`) The relay works against a Redis Cluster.',
       capability='redis_cluster'),
    _r('NODE-5', 'on SIGTERM: a 1001 close frame to every client, exit within 10 s, nothing lost',
     'Graceful drain: on SIGTERM a node stops accepting connections and, within 2 s, sends every '
     'open WebSocket connection a close frame with code 1001 (going away), so that its clients '
     'reconnect to another node and resume; a connection that has not authenticated yet may be '
     'closed without one. The process exits within 10 s of the signal, and nothing it acknowledged '
     'is lost: an event whose publish it answered 200 reaches the connections of the other nodes '
     '(DEL-1).'),
    _r('LIM-1', 'headers not complete within the header timeout close the connection',
     'A connection that has not sent complete HTTP request headers within the header timeout is '
     'closed (with or without an answer such as 408). The header timeout is the one the target '
     'declares in `info` (`timeouts.header_s`); without one, 10 s.'),
    _r('LIM-2', 'a subscribe over the declared per-connection cap: too many subscriptions',
     'A target MAY cap the task and chat scopes one connection holds; it then declares the cap in '
     '`info` (`max_subscriptions`). A subscribe to one more is answered `subscribe_error` with `too '
     'many subscriptions`; the connection keeps its subscriptions and keeps working, and an '
     'unsubscribe frees a place.'),
    _r('HL-1', 'GET /health/realtime returns the metrics snapshot',
     '`GET /health/realtime` returns a JSON snapshot with: active connections, connects, '
     'disconnects, messages sent and dropped, slow-client evictions, subscribes and denials per '
     "scope type, sends per event type, and the relay's state (node id, connected, XADD and XREAD "
     "totals and errors, last error, lag). The keys are Multica's: `active_connections`, "
     '`connects_total`, `disconnects_total`, `messages_sent_total` (event frames handed to this '
     "node's connections; answers such as `auth_ack` and `pong` are not messages), "
     '`messages_dropped_total`, `slow_evictions_total` (each a non-negative integer), '
     '`subscribes_total` and `subscribe_denied_total` (objects from scope type to count), '
     '`events_sent_by_type` (an object from event type to how many events of that type this node '
     'sent out: Multica counts each publish once on the node it went through), and `redis`, the '
     "relay's state: `node_id` (a string, empty when the node has no relay), `connected` (a "
     'boolean), `xadd_total`, `xadd_errors`, `xread_total`, `xread_errors` (non-negative '
     'integers), `last_error` (a string, empty or `null` when there is none) and '
     '`last_xadd_lag_micros` (a number). A node without a relay store reports the `redis` object '
     'with zeros and `connected: false`.',
       capability='health'),
    _r('HL-2', 'health access: loopback without forwarding headers, or a bearer token',
     'Without a metrics token, only a direct loopback peer that sends none of the forwarding '
     'headers `X-Forwarded-For`, `X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Real-Ip`, `Forwarded` '
     'gets 200; everyone else gets 404. A forwarding header is sent when one of its lines has a '
     'value that is not blank; a header present only with blank values MAY be taken either way. '
     'With a metrics token, the request needs `Authorization: '
     'Bearer <token>` (compared in constant time), or it gets 401 with `WWW-Authenticate: Bearer '
     'realm="metrics"`.',
       capability='health'),
    _r('HL-3', 'at rest, active connections equal open connections',
     'At rest, the active connection count equals the number of connections open on the node.',
       capability='health'),
    _r('CTL-1', 'GET /_control/info',
     '`GET /_control/info` returns `implementation`, `version`, `node_id`, `capabilities` (a '
     'subset of `cookie_auth`, `pat`, `origin`, `health`, `global`, `exclude_workspace`, `resume`, '
     '`revocation`, `strict_order`, `redis_cluster`), `retention` (`max_len` and `max_age_s`, each '
     'a number or `null`), `timeouts` (`auth_s`, `ping_s`, `pong_s`), `send_queue` (how many '
     'frames a connection may have pending before DEL-6 applies) and `origins` (`allowed` and '
     '`trusted_proxies`).'),
    _r('CTL-2', 'PUT /_control/fixtures replaces the world',
     '`PUT /_control/fixtures` replaces the whole world: workspaces with slugs and members, '
     'disabled users, PATs, issues, tasks (of an issue, of a chat, or of neither) and chats. The '
     'suite sends it to every node and waits for each 200; a target may also share it through its '
     'store.'),
    _r('CTL-3', 'POST /_control/token',
     '`POST /_control/token` `{"user": U, "email"?: str, "ttl_s"?: number}` returns `{"token": '
     'str}`, valid on every node of the cluster. `ttl_s <= 0` gives a token that has already '
     'expired. `"user": null` gives a correctly signed token without `sub`, and `"user": ""` one '
     'with an empty `sub` (both for HS-4). A missing `user`, or a `ttl_s` that is not a finite '
     'number, is a 400.'),
    _r('CTL-4', 'POST /_control/publish: 200 only once stored, 400 for bad bodies',
     '`POST /_control/publish` `{"scope": type, "id": id, "frame": {...}, "exclude_workspace"?: '
     'W}` returns 200 `{"event_id": str, "pos": str|null}` only once the event is durably handed '
     'to the relay (for Redis: the XADD succeeded); otherwise 503 `{"error": str}`. `global` with '
     'id `all` broadcasts; a `global` publish without `id` may be answered either way (400, or a '
     'broadcast). The answer is 400 for a malformed body (`NaN` and `Infinity` are not JSON, and a '
     "frame may not hold a number beyond a double's range, such as `1e999`: no client could be "
     'sent it), an unknown scope type, `global` with an '
     'id other than `all`, a frame `event_id` that is not a non-empty string, or an '
     '`exclude_workspace` (other than absent or `null`) that is not a non-empty string or is given '
     'on a scope other than `user`.'),
    _r('CTL-5', 'PUT /_control/faults makes lookups fail',
     '`PUT /_control/faults` `{"authorizer": "ok"|"error"}`: while `error`, task and chat lookups '
     'fail, so those subscribes are answered `lookup_failed`.'),
    _r('CTL-6', 'POST /_control/revoke',
     '`POST /_control/revoke` `{"workspace": W, "user": U}` (capability `revocation`, see AZ-5).',
       capability='revocation'),
]}

#: the simulator's own check beside the contract's requirements
CONVERGENCE = Requirement(
    "CONVERGENCE", "after healing, every acknowledged event a client was owed has been delivered",
    "After the faults are healed and the cluster has settled, each logical client (its connections "
    "across reconnects) has received every acknowledged event of the scopes it held; events "
    "published while it was reconnecting count only when the target claims resume.",
    contract=False)

READERS = Requirement(
    "READERS", "no connection that kept reading was closed by the server",
    "A scenario that sets `max_readers_cut` expects no more connections than that to be closed by the "
    "server while they kept reading, outside a fault that kills or restarts their node. The contract "
    "lets a server close a slow consumer (DEL-6); a reader that keeps up evicted after a stall or a "
    "burst is what the scenario says it must not see.",
    contract=False)

CHECKS: dict[str, Requirement] = {**REQUIREMENTS, CONVERGENCE.id: CONVERGENCE, READERS.id: READERS}

#: what the history checker judges, in registry order
CHECKER_IDS: tuple[str, ...] = tuple(r.id for r in REQUIREMENTS.values() if r.checker)


def order(rid: str) -> int:
    """A requirement's position in the registry (the order of docs/protocol.md)."""
    ids = list(CHECKS)
    return ids.index(rid) if rid in CHECKS else len(ids)


def select(spec: str | None) -> set[str]:
    """IDs named by a comma list of IDs or group prefixes ("HS", "DEL-1,REP")."""
    if not spec:
        return set()
    chosen: set[str] = set()
    for part in (p.strip().upper() for p in spec.split(",") if p.strip()):
        matched = {rid for rid, r in REQUIREMENTS.items() if rid == part or r.group == part}
        if not matched:
            raise ValueError(f"unknown requirement or group {part!r}")
        chosen |= matched
    return chosen

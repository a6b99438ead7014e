"""CTL: the test-only control API.

The suite itself depends on this API (every case loads its world with CTL-2, mints tokens with
CTL-3 and publishes with CTL-4), so these cases check what the other cases take for granted: the
shapes of the answers (extra fields allowed), the refusals the requirements name, and that the
world and the tokens hold on every node. No case here replaces the fixtures: the other cases'
worlds live in them.

The section's opening rules (every `/_control/*` path is 404 without a control token, 401
without the right bearer) carry no requirement ID, so no case judges them; the reference's tests
do (tests/test_reference_control.py)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from . import Failed, SetupError, case
from ..frames import is_auth_answer
from .authorization import AZ1, AZ2
from .common import (AUTH_ACK, DISABLED, INVALID_CLAIMS, INVALID_TOKEN, NOT_MEMBER, ack, alice_on_every_scope, auth, hold,
                     matches, sub_error)
from .subscriptions import (DEL1, SUB2, answer_of, decide, expect_lookup_failed, judge_decision, restore_faults,
                            set_faults)

CAPABILITIES = {"cookie_auth", "pat", "origin", "health", "global", "exclude_workspace", "resume", "revocation",
                "strict_order", "redis_cluster"}

CTL1 = ("`GET /_control/info` returns `implementation`, `version`, `node_id`, `capabilities` (a subset of "
        "`cookie_auth`, `pat`, `origin`, `health`, `global`, `exclude_workspace`, `resume`, `revocation`, "
        "`strict_order`, `redis_cluster`), `retention` (`max_len` and `max_age_s`, each a number or `null`), "
        "`timeouts` (`auth_s`, `ping_s`, `pong_s`), `send_queue` (how many frames a connection may have pending "
        "before DEL-6 applies) and `origins` (`allowed` and `trusted_proxies`).")
CTL2 = ("`PUT /_control/fixtures` replaces the whole world: workspaces with slugs and members, disabled users, PATs, "
        "issues, tasks (of an issue, of a chat, or of neither) and chats. The suite sends it to every node")
CTL3 = '`POST /_control/token` `{"user": U, "email"?: str, "ttl_s"?: number}` returns `{"token": str}`, valid on ' \
       'every node of the cluster.'
CTL4_OK = '`POST /_control/publish` `{"scope": type, "id": id, "frame": {...}, "exclude_workspace"?: W}` returns 200 ' \
          '`{"event_id": str, "pos": str|null}`'
CTL4_400 = ("an unknown scope type, `global` with an id other than `all`, a frame `event_id` that is not a non-empty "
            "string, or an `exclude_workspace` (other than absent or `null`) that is not a non-empty string or is "
            "given on a scope other than `user`.")
CTL4_NUMBERS = ("The answer is 400 for a malformed body (`NaN` and `Infinity` are not JSON, and a frame may not hold "
                "a number beyond a double's range, such as `1e999`: no client could be sent it)")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _count(v: Any) -> bool:
    """A count: a non-negative integer (an integral JSON number such as 256.0 too)."""
    return _number(v) and v >= 0 and float(v).is_integer()


async def control(ctx, method: str, path: str, *, node: int = 0, body: Any = None,
                  raw: bytes | None = None) -> tuple[int, Any]:
    """One control call with the suite's bearer: (status, parsed body)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {ctx.target.token}"}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    status, doc, _ = await ctx.http(method, path, node=node, headers=headers, body=data)
    return status, doc


async def _auth(ctx, token: Any, workspace: str, *, node: int = 0, slug: str | None = None):
    """Open a connection, send auth and return (client, its answer: auth_ack or an error frame)."""
    client = await ctx.raw(node=node, params={"workspace_slug": slug} if slug else {"workspace_id": workspace})
    start = len(client.frames)
    await client.send(auth(token))
    try:
        got = await ctx.frame(client, is_auth_answer, "the answer to auth", start=start)
    except Failed as e:  # HS-3: every auth is answered, auth_ack or an error frame
        raise SetupError(f"get the answer to auth on node {node + 1}", e.reason, req="HS-3",
                         expected='{"type":"auth_ack"} or {"error": ...}') from None
    return client, got


async def accepted(ctx, user: str, workspace: str, why: str, *, req: str, node: int = 0, token: str | None = None,
                   slug: str | None = None):
    """A connection the case's requirement says must authenticate: auth_ack, or a failure of `req`."""
    client, got = await _auth(ctx, token or await ctx.token(user, node), workspace, node=node, slug=slug)
    ctx.expect(matches(got, AUTH_ACK), f"node {node + 1}: {why}: the connection must be accepted", AUTH_ACK, got,
               req=req)
    return client


async def refused_with(ctx, token: Any, workspace: str, text: str, why: str, *, req: str, node: int = 0) -> None:
    """A token the case's requirement says must be refused with `text` (the close that follows is HS-3's)."""
    _, got = await _auth(ctx, token, workspace, node=node)
    ctx.check(req, matches(got, {"error": text}), f"node {node + 1}: {why}: must be refused with {text!r}",
              {"error": text}, got)


# -- CTL-1 ------------------------------------------------------------------------------------------------

@case("CTL-1", title="GET /_control/info answers every field with its shape, on every node", cites={"CTL-1": CTL1})
async def ctl1_info_fields(ctx):
    for node in range(len(ctx.target.urls)):
        where = f"node {node + 1}"
        status, info = await control(ctx, "GET", "/_control/info", node=node)
        ctx.expect(status == 200 and isinstance(info, dict), f"{where}: GET /_control/info must answer 200 with an "
                                                              "object", "200 {...}", f"{status} {info!r}"[:300])
        for k in ("implementation", "version", "node_id"):
            ctx.check("CTL-1", isinstance(info.get(k), str), f"{where}: {k} must be a string", "a string",
                      info.get(k, "absent"))
        caps = info.get("capabilities")
        ctx.check("CTL-1", isinstance(caps, list) and all(isinstance(c, str) for c in caps)
                  and set(caps) <= CAPABILITIES, f"{where}: capabilities must be a list of the contract's names",
                  sorted(CAPABILITIES), caps)
        r = info.get("retention")
        ctx.check("CTL-1", isinstance(r, dict) and "max_len" in r and "max_age_s" in r
                  and all(r[k] is None or _number(r[k]) for k in ("max_len", "max_age_s")),
                  f"{where}: retention must be {{max_len, max_age_s}}, each a number or null",
                  {"max_len": "number|null", "max_age_s": "number|null"}, r)
        t = info.get("timeouts")
        ctx.check("CTL-1", isinstance(t, dict) and all(_number(t.get(k)) for k in ("auth_s", "ping_s", "pong_s")),
                  f"{where}: timeouts must give auth_s, ping_s and pong_s as numbers",
                  {"auth_s": "number", "ping_s": "number", "pong_s": "number"}, t)
        q = info.get("send_queue")
        ctx.check("CTL-1", _count(q), f"{where}: send_queue must be a number of frames", "an integer >= 0", q)
        o = info.get("origins")
        ctx.check("CTL-1", isinstance(o, dict) and isinstance(o.get("allowed"), list)
                  and isinstance(o.get("trusted_proxies"), list)
                  and all(isinstance(x, str) for x in o["allowed"] + o["trusted_proxies"]),
                  f"{where}: origins must be {{allowed: [str], trusted_proxies: [str]}}",
                  {"allowed": "[str]", "trusted_proxies": "[str]"}, o)


# -- CTL-2 ------------------------------------------------------------------------------------------------

@case("CTL-2", title="the loaded world's memberships and slugs hold on every node", cites={"CTL-2": CTL2})
async def ctl2_memberships_on_every_node(ctx):
    w = ctx.world
    for node in range(len(ctx.target.urls)):
        for user, ws, who in ((w.alice, w.ws_a, "alice, member of A"), (w.bob, w.ws_a, "bob, member of A"),
                              (w.carol, w.ws_b, "carol, member of B")):
            await accepted(ctx, user, ws, who, node=node, req="CTL-2")
        await accepted(ctx, w.carol, w.ws_b, "carol, by workspace B's slug", node=node, slug=w.slug_b, req="CTL-2")
        for user, ws, who in ((w.carol, w.ws_a, "carol in A"), (w.alice, w.ws_b, "alice in B"),
                              (w.outsider, w.ws_a, "a user of no workspace")):
            await refused_with(ctx, await ctx.token(user, node), ws, NOT_MEMBER, f"{who} is not a member",
                               node=node, req="CTL-2")


@case("CTL-2", title="the loaded world's disabled users and PATs hold on every node", cites={"CTL-2": CTL2})
async def ctl2_disabled_and_pats_on_every_node(ctx):
    w = ctx.world
    pat = "pat" in ctx.target.capabilities
    for node in range(len(ctx.target.urls)):
        await refused_with(ctx, await ctx.token(w.dave, node), w.ws_a, DISABLED, "the world's disabled user",
                           node=node, req="CTL-2")
        if pat:
            await accepted(ctx, w.alice, w.ws_a, "alice's PAT", node=node, token=w.pat_alice, req="CTL-2")
            await refused_with(ctx, w.pat_dave, w.ws_a, DISABLED, "the PAT of the world's disabled user", node=node,
                               req="CTL-2")


@case("CTL-2", "AZ-1", "AZ-2", "SUB-2", title="the loaded world's issues, tasks and chats decide subscribes alike on "
                                              "every node",
      cites={"CTL-2": CTL2, "AZ-1": AZ1, "AZ-2": AZ2, "SUB-2": SUB2})
async def ctl2_issues_tasks_chats_on_every_node(ctx):
    w = ctx.world
    world = [("task", w.task_a, True), ("chat", w.chat_alice, True), ("task", w.chat_task_alice, True),
             ("task", w.task_b, False), ("chat", w.chat_bob, False), ("task", w.orphan_task, False)]
    got: dict[tuple[int, str], Any] = {}
    n = len(ctx.target.urls)
    for node in range(n):
        alice = await accepted(ctx, w.alice, w.ws_a, "alice, member of A", node=node, req="CTL-2")
        for scope, sid, _ in world:
            got[node, sid] = await ctx.answer(alice, "subscribe", scope, sid, req="SUB-2")
    for scope, sid, allowed in world:
        want = ack("subscribe", scope, sid) if allowed else sub_error(scope, sid, "forbidden")
        right = [node for node in range(n) if matches(got[node, sid], want)]
        if not right:  # every node decides it wrong: the decision's requirement (or SUB-2's form)
            judge_decision(ctx, got[0, sid], scope, sid, allowed, "alice in workspace A, on every node")
        elif len(right) < n:  # the same world decides differently on some nodes: it is not on every node
            wrong = {f"node {node + 1}": got[node, sid] for node in range(n) if node not in right}
            ctx.check("CTL-2", False, f"subscribe {scope}:{sid} is decided as the world says on node {right[0] + 1} "
                                      "but not on every node", want, wrong)


# -- CTL-3 ------------------------------------------------------------------------------------------------

@case("CTL-3", title='POST /_control/token answers {"token": str}, valid as its user on every node',
      cites={"CTL-3": CTL3})
async def ctl3_token_valid_everywhere(ctx):
    w = ctx.world
    n = len(ctx.target.urls)
    for node in range(n):
        status, doc = await control(ctx, "POST", "/_control/token", node=node,
                                    body={"user": w.bob, "email": "bob@example.com", "ttl_s": 600})
        ctx.expect(status == 200 and isinstance(doc, dict) and isinstance(doc.get("token"), str),
                   f"node {node + 1}: POST /_control/token must answer 200 {{\"token\": str}}", '200 {"token": "..."}',
                   f"{status} {doc!r}"[:300])
        other = (node + 1) % n
        client = await accepted(ctx, w.bob, w.ws_a, f"bob's token minted on node {node + 1}", node=other,
                                token=doc["token"], req="CTL-3")
        # the token names its user: bob's own user scope is his, alice's is not (SUB-1 decides by the token's user)
        for scope_id, allowed in ((w.bob, True), (w.alice, False)):
            want = ack("subscribe", "user", scope_id) if allowed else sub_error("user", scope_id, "forbidden")
            got = await answer_of(ctx, client, "user", scope_id, f"subscribe bob to user:{scope_id}", req="SUB-1")
            ctx.check("CTL-3", matches(got, want), "a token minted for bob must authenticate bob", want, got)


@case("CTL-3", title='ttl_s <= 0 gives an expired token; user null / "" a token without / with an empty sub',
      cites={"CTL-3": '`ttl_s <= 0` gives a token that has already expired. `"user": null` gives a correctly '
                      'signed token without `sub`, and `"user": ""` one with an empty `sub` (both for HS-4).'})
async def ctl3_special_tokens(ctx):
    w = ctx.world
    for body, text, why in (({"user": w.alice, "ttl_s": 0}, INVALID_TOKEN, "ttl_s 0 (expired)"),
                            ({"user": w.alice, "ttl_s": -30}, INVALID_TOKEN, "ttl_s -30 (expired)"),
                            ({"user": w.alice, "ttl_s": -0.5}, INVALID_TOKEN, "ttl_s -0.5 (expired)"),
                            ({"user": None}, INVALID_CLAIMS, "user null (no sub)"),
                            ({"user": ""}, INVALID_CLAIMS, 'user "" (an empty sub)')):
        status, doc = await control(ctx, "POST", "/_control/token", body=body)
        ctx.expect(status == 200 and isinstance(doc, dict) and isinstance(doc.get("token"), str),
                   f"a token request with {why} must answer 200 {{\"token\": str}}", '200 {"token": "..."}',
                   f"{status} {doc!r}"[:300])
        await refused_with(ctx, doc["token"], w.ws_a, text, f"the token minted with {why}", req="CTL-3")


@case("CTL-3", title="a token request without user is 400", cites={"CTL-3": "A missing `user`"})
async def ctl3_missing_user_is_400(ctx):
    for raw in (b"{}", b'{"email": "x@example.com"}', b'{"ttl_s": 60}', b'{"email": "x@example.com", "ttl_s": 60}'):
        status, doc = await control(ctx, "POST", "/_control/token", raw=raw)
        ctx.check("CTL-3", status == 400, f"POST /_control/token with {raw.decode()} must be 400", 400,
                  f"{status} {doc!r}"[:300])


@case("CTL-3", title="a token request whose ttl_s is not a finite number is 400",
      cites={"CTL-3": "a `ttl_s` that is not a finite number, is a 400."})
async def ctl3_ttl_not_finite_is_400(ctx):
    user = json.dumps(ctx.world.alice).encode()
    for ttl in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b'"60"', b"true", b"[60]"):
        raw = b'{"user": %s, "ttl_s": %s}' % (user, ttl)
        status, doc = await control(ctx, "POST", "/_control/token", raw=raw)
        ctx.check("CTL-3", status == 400, f"POST /_control/token with ttl_s {ttl.decode()} must be 400", 400,
                  f"{status} {doc!r}"[:300])


# -- CTL-4 ------------------------------------------------------------------------------------------------

def _publish_answer(ctx, status: int, doc: Any, what: str) -> None:
    """A publish the contract accepts: 200 {"event_id": str, "pos": str|null} (CTL-4). 503 is the store
    being unreachable (NODE-3): the case cannot go on."""
    if status == 503:
        raise SetupError(f"publish {what}", f"503 {doc!r}"[:300])
    ctx.expect(status == 200 and isinstance(doc, dict) and isinstance(doc.get("event_id"), str) and doc["event_id"]
               and "pos" in doc and (doc["pos"] is None or isinstance(doc["pos"], str)),
               f"publish {what} must answer 200 {{\"event_id\": str, \"pos\": str|null}}",
               '200 {"event_id": "...", "pos": "..."|null}', f"{status} {doc!r}"[:300], req="CTL-4")


@case("CTL-4", "EV-1", "EV-2", "DEL-1",
      title='publish answers 200 {"event_id": str, "pos": str|null} for every scope type, and the event arrives',
      cites={"CTL-4": CTL4_OK, "EV-1": "A publish targets exactly one scope: `workspace`, `user`, `task`, `chat`, "
                                       "or `global:all` (every connection on every node).",
             "EV-2": "the server adds a unique string", "DEL-1": DEL1})
async def ctl4_publish_answers(ctx):
    client, targets = await alice_on_every_scope(ctx)
    seen: set[str] = set()
    for scope, sid in targets:
        status, doc = await control(ctx, "POST", "/_control/publish",
                                    body={"scope": scope, "id": sid, "frame": {"type": "conformance:ctl4"}})
        _publish_answer(ctx, status, doc, f"to {scope}:{sid}")
        ctx.check("EV-2", doc["event_id"] not in seen, "every publish gets its own event_id", "a new id",
                  doc["event_id"])
        seen.add(doc["event_id"])
        await ctx.event(client, doc, req="EV-1" if scope == "global" else "DEL-1")
    status, doc = await control(ctx, "POST", "/_control/publish",
                                body={"scope": "task", "id": str(uuid.uuid4()), "frame": {"type": "conformance:ctl4"}})
    _publish_answer(ctx, status, doc, "to a task nobody holds")


@case("CTL-4", "DEL-1", "EV-1", title="exclude_workspace null is accepted on every scope, like an absent one",
      capability="exclude_workspace",
      cites={"CTL-4": "an `exclude_workspace` (other than absent or `null`)", "DEL-1": DEL1,
             "EV-1": "`global:all` (every connection on every node)"})
async def ctl4_exclude_workspace_null(ctx):
    client, targets = await alice_on_every_scope(ctx)
    for scope, sid in targets:
        status, doc = await control(ctx, "POST", "/_control/publish", body={
            "scope": scope, "id": sid, "frame": {"type": "conformance:ctl4"}, "exclude_workspace": None})
        _publish_answer(ctx, status, doc, f"to {scope}:{sid} with exclude_workspace null")
        await ctx.event(client, doc, req="EV-1" if scope == "global" else "DEL-1")


BAD_PUBLISH = [  # (why, body, applies only when the target claims this capability)
    ("malformed JSON", b'{"scope": "workspace", ', None),
    ("a body that is not an object", b'["workspace", "W", {}]', None),
    ("an empty body", b"", None),
    ("no scope", {"id": "W", "frame": {}}, None),
    ("a scope that is not a string", {"scope": ["workspace"], "id": "W", "frame": {}}, None),
    ("no id on a workspace publish", {"scope": "workspace", "frame": {}}, None),
    ("no frame", {"scope": "workspace", "id": "W"}, None),
    ("a frame that is not an object", {"scope": "workspace", "id": "W", "frame": "text"}, None),
    ("an unknown scope type", {"scope": "daemon_runtime", "id": "W", "frame": {}}, None),
    ("scope Workspace", {"scope": "Workspace", "id": "W", "frame": {}}, None),
    ("global with id ALL", {"scope": "global", "id": "ALL", "frame": {}}, None),
    ("global with a workspace id", {"scope": "global", "id": "W", "frame": {}}, None),
    # a global publish without id may be answered 400 or broadcast (CTL-4): not listed
    ("an empty event_id", {"scope": "workspace", "id": "W", "frame": {"event_id": ""}}, None),
    ("a numeric event_id", {"scope": "workspace", "id": "W", "frame": {"event_id": 42}}, None),
    ("a null event_id", {"scope": "workspace", "id": "W", "frame": {"event_id": None}}, None),
    ("an object event_id", {"scope": "workspace", "id": "W", "frame": {"event_id": {"id": "x"}}}, None),
    ("exclude_workspace on a workspace publish",
     {"scope": "workspace", "id": "W", "frame": {}, "exclude_workspace": "W"}, "exclude_workspace"),
    ("exclude_workspace on a task publish", {"scope": "task", "id": "T", "frame": {}, "exclude_workspace": "W"},
     "exclude_workspace"),
    ("exclude_workspace on a chat publish", {"scope": "chat", "id": "C", "frame": {}, "exclude_workspace": "W"},
     "exclude_workspace"),
    ("exclude_workspace on a global publish",
     {"scope": "global", "id": "all", "frame": {}, "exclude_workspace": "W"}, "exclude_workspace"),
    ("an empty exclude_workspace", {"scope": "user", "id": "U", "frame": {}, "exclude_workspace": ""},
     "exclude_workspace"),
    ("a numeric exclude_workspace", {"scope": "user", "id": "U", "frame": {}, "exclude_workspace": 7},
     "exclude_workspace"),
    ("a list exclude_workspace", {"scope": "user", "id": "U", "frame": {}, "exclude_workspace": ["W"]},
     "exclude_workspace"),
    ("exclude_workspace false", {"scope": "user", "id": "U", "frame": {}, "exclude_workspace": False},
     "exclude_workspace"),
]


async def _bad_publishes(ctx, rows) -> None:
    w = ctx.world
    ids = {"W": w.ws_a, "U": w.alice, "T": w.task_a, "C": w.chat_alice}
    for why, body, _ in rows:
        if isinstance(body, dict):
            body = {k: (ids.get(v, v) if isinstance(v, str) else v) for k, v in body.items()}
            if isinstance(body.get("frame"), dict):
                body["frame"] = {**body["frame"], "type": "conformance:bad"}
            status, doc = await control(ctx, "POST", "/_control/publish", body=body)
        else:
            status, doc = await control(ctx, "POST", "/_control/publish", raw=body)
        ctx.check("CTL-4", status == 400, f"a publish with {why} must be 400", 400, f"{status} {doc!r}"[:300])


@case("CTL-4", title="publish bodies the contract rejects answer 400", cites={"CTL-4": CTL4_400})
async def ctl4_bad_publish_is_400(ctx):
    await _bad_publishes(ctx, [row for row in BAD_PUBLISH if row[2] is None])


@case("CTL-4", title="exclude_workspace that is not a non-empty string, or not on a user publish, answers 400",
      capability="exclude_workspace", cites={"CTL-4": CTL4_400})
async def ctl4_bad_exclude_workspace_is_400(ctx):
    await _bad_publishes(ctx, [row for row in BAD_PUBLISH if row[2] == "exclude_workspace"])


@case("CTL-4", title="a publish body holding NaN, Infinity or a number beyond a double's range is 400",
      cites={"CTL-4": CTL4_NUMBERS})
async def ctl4_numbers_json_cannot_carry_are_400(ctx):
    head = b'{"scope": "task", "id": %s, "frame": {"type": "conformance:bad", "n": ' % json.dumps(
        ctx.world.task_a).encode()
    for value in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"):
        status, doc = await control(ctx, "POST", "/_control/publish", raw=head + value + b"}}")
        ctx.check("CTL-4", status == 400, f"a publish whose frame holds {value.decode()} must be 400 (a 200 would "
                                          "hand clients a frame that is not JSON)", 400, f"{status} {doc!r}"[:300])


# -- CTL-5 ------------------------------------------------------------------------------------------------

@case("CTL-5", "SUB-2", "SUB-1", "AZ-2", "DEL-1",
      title='faults "error" makes task and chat subscribes lookup_failed (held ones keep delivering); "ok" restores '
            "them", exclusive=True,
      cites={"CTL-5": '`PUT /_control/faults` `{"authorizer": "ok"|"error"}`: while `error`, task and chat lookups '
                      "fail, so those subscribes are answered `lookup_failed`.",
             "SUB-2": "An authorizer failure other than not-found: `lookup_failed`.",
             "SUB-1": "that is answered `subscribe_ack`, as often as asked",
             "AZ-2": AZ2, "DEL-1": DEL1})
async def ctl5_faults(ctx):
    w = ctx.world
    client = await ctx.connect(w.alice, w.ws_a)
    await hold(ctx, client, "task", w.task_a, "alice")
    await set_faults(ctx, "error")  # on every node; anything but 200 is CTL-5's
    try:
        for scope, sid in (("task", w.chat_task_alice), ("chat", w.chat_alice), ("task", w.task_b)):
            await expect_lookup_failed(ctx, client, scope, sid, f"subscribe {scope}:{sid} while lookups fail")
        # workspace and user scopes are decided by SUB-1, without a lookup
        await decide(ctx, client, "workspace", w.ws_a, True, "the connection's own workspace while lookups fail")
        await decide(ctx, client, "workspace", w.ws_b, False, "another workspace while lookups fail")
        # a subscription held before the fault keeps delivering (DEL-1), and so do a new connection's
        # auto-subscribed scopes
        await ctx.event(client, await ctx.publish("task", w.task_a, {"type": "conformance:held"}))
        bob = await ctx.connect(w.bob, w.ws_a)
        await ctx.event(bob, await ctx.publish("workspace", w.ws_a, {"type": "conformance:auto"}))
        await set_faults(ctx, "ok")
        # after "ok", lookups work again: lookup_failed now would be CTL-5's, a wrong decision AZ's
        for scope, sid, allowed in (("chat", w.chat_alice, True), ("chat", w.chat_bob, False)):
            got = await ctx.answer(client, "subscribe", scope, sid, req="SUB-2")
            if matches(got, {"type": "subscribe_error", "payload": {"error": "lookup_failed"}}):
                ctx.check("CTL-5", False, f'after faults {{"authorizer": "ok"}}, subscribe {scope}:{sid} still '
                                          "fails its lookup", "a decision", got)
            else:
                judge_decision(ctx, got, scope, sid, allowed, 'after faults {"authorizer": "ok"}')
    finally:
        await restore_faults(ctx)

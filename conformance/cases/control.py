"""CTL: the test-only control API.

The suite itself depends on this API (every case loads its world with CTL-2, mints tokens
with CTL-3 and publishes with CTL-4), so these cases check what the other cases take for
granted: the shapes of the answers, the refusals, and that the world and the tokens hold
on every node. No case here replaces the fixtures: the other cases' worlds live in them."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

from . import case
from .handshake import AUTH_ACK, DISABLED, INVALID_CLAIMS, INVALID_TOKEN, NOT_MEMBER, auth, auth_answer, refused

CAPABILITIES = {"cookie_auth", "pat", "origin", "health", "global", "exclude_workspace", "resume", "revocation",
                "strict_order", "redis_cluster"}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _ack(kind: str, scope: str, id_: str) -> dict:
    return {"type": f"{kind}_ack", "payload": {"scope": scope, "id": id_}}


def _denied(scope: str, id_: str, error: str) -> dict:
    return {"type": "subscribe_error", "payload": {"scope": scope, "id": id_, "error": error}}


async def control(ctx, method: str, path: str, *, node: int = 0, body: Any = None, raw: bytes | None = None,
                  auth_header: str | None = "good") -> tuple[int, Any]:
    """One control call: (status, parsed body). auth_header "good" sends the suite's bearer."""
    headers = {"Content-Type": "application/json"}
    if auth_header == "good":
        headers["Authorization"] = f"Bearer {ctx.target.token}"
    elif auth_header is not None:
        headers["Authorization"] = auth_header
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    status, doc, _ = await ctx.http(method, path, node=node, headers=headers, body=data)
    return status, doc


async def authed(ctx, user: str, workspace: str, *, node: int = 0, token: str | None = None, slug: str | None = None):
    params = {"workspace_slug": slug} if slug else {"workspace_id": workspace}
    client = await ctx.raw(node=node, params=params)
    got = await auth_answer(ctx, client, token or await ctx.token(user, node))
    ctx.equal(got, AUTH_ACK, f"node {node + 1}: {user} must be able to connect to workspace {workspace}")
    return client


async def marker(ctx, client, scope: str, id_: str, node: int = 0) -> None:
    """Publish a marker the client holds and wait for it: whatever came before it has arrived."""
    await ctx.event(client, await ctx.publish(scope, id_, {"type": "conformance:marker"}, node=node))


# -- CTL-1 ------------------------------------------------------------------------------------------------

@case("CTL-1", title="GET /_control/info answers every field with its type, on every node")
async def ctl1_info_fields(ctx):
    for node in range(len(ctx.target.urls)):
        where = f"node {node + 1}"
        status, info = await control(ctx, "GET", "/_control/info", node=node)
        ctx.expect(status == 200 and isinstance(info, dict), f"{where}: GET /_control/info must answer 200 with an "
                                                              "object", "200 {...}", f"{status} {info!r}"[:300])
        for k in ("implementation", "version", "node_id"):
            ctx.expect(isinstance(info.get(k), str) and info[k] != "", f"{where}: {k} must be a non-empty string",
                       "a string", info.get(k, "absent"))
        caps = info.get("capabilities")
        ctx.expect(isinstance(caps, list) and all(isinstance(c, str) for c in caps) and set(caps) <= CAPABILITIES
                   and len(set(caps)) == len(caps), f"{where}: capabilities must be a list of distinct known names",
                   sorted(CAPABILITIES), caps)
        r = info.get("retention")
        ctx.expect(isinstance(r, dict) and "max_len" in r and "max_age_s" in r
                   and (r["max_len"] is None or type(r["max_len"]) is int)
                   and (r["max_age_s"] is None or _number(r["max_age_s"])),
                   f"{where}: retention must be {{max_len: int|null, max_age_s: number|null}}",
                   {"max_len": "int|null", "max_age_s": "number|null"}, r)
        t = info.get("timeouts")
        ctx.expect(isinstance(t, dict) and all(_number(t.get(k)) and t[k] > 0 for k in ("auth_s", "ping_s", "pong_s")),
                   f"{where}: timeouts must give auth_s, ping_s and pong_s as positive numbers",
                   {"auth_s": "number", "ping_s": "number", "pong_s": "number"}, t)
        q = info.get("send_queue")
        ctx.expect(type(q) is int and q > 0, f"{where}: send_queue must be a positive integer", "int > 0", q)
        o = info.get("origins")
        ctx.expect(isinstance(o, dict) and isinstance(o.get("allowed"), list)
                   and isinstance(o.get("trusted_proxies"), list)
                   and all(isinstance(x, str) for x in o["allowed"] + o["trusted_proxies"]),
                   f"{where}: origins must be {{allowed: [str], trusted_proxies: [str]}}",
                   {"allowed": "[str]", "trusted_proxies": "[str]"}, o)


@case("CTL-1", "CTL-3", "CTL-4", "CTL-5",
      title="control calls without the right bearer token get 401 and change nothing")
async def ctl_bearer_required(ctx):
    w = ctx.world
    client = await authed(ctx, w.alice, w.ws_a)
    wrong = [None, f"Bearer wrong-{secrets.token_hex(8)}", f"Bearer {ctx.target.token}x", f"Basic {ctx.target.token}",
             ctx.target.token]
    # Bodies that would be refused with 400 even with the right bearer, where a wrong one would change state:
    # a target that forgets the bearer answers 400 instead of 401, and still changes nothing.
    calls = [("GET", "/_control/info", None, None),
             ("POST", "/_control/token", {"user": w.alice}, None),
             ("POST", "/_control/publish", {"scope": "workspace", "id": w.ws_a, "frame": {"type": "conformance:leak"}},
              None),
             ("PUT", "/_control/faults", {"authorizer": "bogus"}, None),
             ("PUT", "/_control/fixtures", None, b"[]")]
    for method, path, body, raw in calls:
        for header in wrong:
            status, doc = await control(ctx, method, path, body=body, raw=raw, auth_header=header)
            ctx.equal(status, 401, f"{method} {path} with Authorization {header!r} must get 401")
            ctx.expect(not (isinstance(doc, dict) and "token" in doc), f"{method} {path} without the right bearer "
                       "must not hand out a token", "no token", doc)
    await marker(ctx, client, "workspace", w.ws_a)
    leaked = [f for f in client.events() if f.get("type") == "conformance:leak"]
    ctx.equal(leaked, [], "a publish refused with 401 must not be delivered")


# -- CTL-2 ------------------------------------------------------------------------------------------------

@case("CTL-2", title="the loaded world's memberships and slugs hold on every node")
async def ctl2_memberships_on_every_node(ctx):
    w = ctx.world
    for node in range(len(ctx.target.urls)):
        for user, ws in ((w.alice, w.ws_a), (w.bob, w.ws_a), (w.carol, w.ws_b)):
            await authed(ctx, user, ws, node=node)
        await authed(ctx, w.carol, w.ws_b, node=node, slug=w.slug_b)
        for user, ws in ((w.carol, w.ws_a), (w.alice, w.ws_b), (w.outsider, w.ws_a)):
            client = await ctx.raw(node=node, params={"workspace_id": ws})
            await client.send(auth(await ctx.token(user, node)))
            await refused(ctx, client, NOT_MEMBER, f"node {node + 1}: a user outside the workspace")
        status, _ = await ctx.upgrade(node=node, params={"workspace_slug": w.slug_a + "-not-loaded"})
        ctx.equal(status, 404, f"node {node + 1}: a slug the world does not hold is unknown")


@case("CTL-2", title="the loaded world's disabled users and PATs hold on every node")
async def ctl2_disabled_and_pats_on_every_node(ctx):
    w = ctx.world
    pat = "pat" in ctx.target.capabilities
    for node in range(len(ctx.target.urls)):
        client = await ctx.raw(node=node, params={"workspace_id": w.ws_a})
        await client.send(auth(await ctx.token(w.dave, node)))
        await refused(ctx, client, DISABLED, f"node {node + 1}: the world's disabled user")
        if pat:
            await authed(ctx, w.alice, w.ws_a, node=node, token=w.pat_alice)
            client = await ctx.raw(node=node, params={"workspace_id": w.ws_a})
            await client.send(auth(w.pat_dave))
            await refused(ctx, client, DISABLED, f"node {node + 1}: the PAT of the world's disabled user")


@case("CTL-2", title="the loaded world's issues, tasks and chats decide subscribes on every node")
async def ctl2_issues_tasks_chats_on_every_node(ctx):
    w = ctx.world
    for node in range(len(ctx.target.urls)):
        alice = await authed(ctx, w.alice, w.ws_a, node=node)
        for scope, sid, error in (("task", w.task_a, None), ("chat", w.chat_alice, None),
                                  ("task", w.chat_task_alice, None), ("task", w.task_b, "forbidden"),
                                  ("chat", w.chat_bob, "forbidden"), ("task", w.orphan_task, "forbidden")):
            got = await ctx.answer(alice, "subscribe", scope, sid)
            want = _ack("subscribe", scope, sid) if error is None else _denied(scope, sid, error)
            ctx.equal(got, want, f"node {node + 1}: alice's subscribe to {scope}:{sid} as the world decides")


# -- CTL-3 ------------------------------------------------------------------------------------------------

@case("CTL-3", title='POST /_control/token answers {"token": str}, valid as its user on every node')
async def ctl3_token_valid_everywhere(ctx):
    w = ctx.world
    n = len(ctx.target.urls)
    for node in range(n):
        status, doc = await control(ctx, "POST", "/_control/token", node=node,
                                    body={"user": w.bob, "email": "bob@example.com", "ttl_s": 600})
        ctx.expect(status == 200 and isinstance(doc, dict) and isinstance(doc.get("token"), str) and doc["token"],
                   f"node {node + 1}: POST /_control/token must answer 200 {{\"token\": str}}", '200 {"token": "..."}',
                   f"{status} {doc!r}"[:300])
        other = (node + 1) % n
        client = await authed(ctx, w.bob, w.ws_a, node=other, token=doc["token"])
        ctx.equal(await ctx.answer(client, "subscribe", "user", w.bob), _ack("subscribe", "user", w.bob),
                  f"a token minted on node {node + 1} authenticates bob on node {other + 1}")
        ctx.equal(await ctx.answer(client, "subscribe", "user", w.alice), _denied("user", w.alice, "forbidden"),
                  "bob's token is bob's only")


@case("CTL-3", title="ttl_s <= 0 gives an expired token; user null / \"\" a token without / with an empty sub")
async def ctl3_special_tokens(ctx):
    w = ctx.world
    for body, text, why in (({"user": w.alice, "ttl_s": 0}, INVALID_TOKEN, "ttl_s 0"),
                            ({"user": w.alice, "ttl_s": -30}, INVALID_TOKEN, "ttl_s -30"),
                            ({"user": None}, INVALID_CLAIMS, "user null"),
                            ({"user": ""}, INVALID_CLAIMS, 'user ""')):
        status, doc = await control(ctx, "POST", "/_control/token", body=body)
        ctx.expect(status == 200 and isinstance(doc, dict) and isinstance(doc.get("token"), str),
                   f"a token request with {why} must answer 200 {{\"token\": str}}", '200 {"token": "..."}',
                   f"{status} {doc!r}"[:300])
        client = await ctx.raw(params={"workspace_id": w.ws_a})
        await client.send(auth(doc["token"]))
        await refused(ctx, client, text, f"the token minted with {why}")


@case("CTL-3", title="a token request without user, or not a JSON object, is 400")
async def ctl3_missing_user_is_400(ctx):
    for raw in (b"{}", b'{"email": "x@example.com", "ttl_s": 60}', b"{oops", b"[]"):
        status, doc = await control(ctx, "POST", "/_control/token", raw=raw)
        ctx.equal(status, 400, f"POST /_control/token with {raw.decode()} must be 400")


# -- CTL-4 ------------------------------------------------------------------------------------------------

@case("CTL-4", "EV-1", title='publish answers 200 {"event_id": str, "pos": str|null} for every scope type, and the '
                              "event arrives with that event_id")
async def ctl4_publish_answers(ctx):
    w = ctx.world
    client = await authed(ctx, w.alice, w.ws_a)
    for scope, sid in (("task", w.task_a), ("chat", w.chat_alice)):
        ctx.equal(await ctx.answer(client, "subscribe", scope, sid), _ack("subscribe", scope, sid),
                  f"alice may subscribe to {scope}:{sid}")
    targets = [("workspace", w.ws_a), ("user", w.alice), ("task", w.task_a), ("chat", w.chat_alice)]
    if "global" in ctx.target.capabilities:
        targets.append(("global", "all"))
    seen: set[str] = set()
    for scope, sid in targets:
        status, doc = await control(ctx, "POST", "/_control/publish",
                                    body={"scope": scope, "id": sid, "frame": {"type": "conformance:ctl4"}})
        ctx.expect(status == 200 and isinstance(doc, dict) and set(doc) >= {"event_id", "pos"}
                   and isinstance(doc["event_id"], str) and doc["event_id"] != ""
                   and (doc["pos"] is None or isinstance(doc["pos"], str)),
                   f"publish to {scope}:{sid} must answer 200 {{\"event_id\": str, \"pos\": str|null}}",
                   '200 {"event_id": "...", "pos": "..."|null}', f"{status} {doc!r}"[:300])
        ctx.expect(doc["event_id"] not in seen, "every publish gets its own event_id", "a new id", doc["event_id"])
        seen.add(doc["event_id"])
        got = await ctx.event(client, doc)
        ctx.equal(got.get("pos"), doc["pos"], f"the {scope} event arrives with the pos its publish returned")
    unheld = await control(ctx, "POST", "/_control/publish",
                           body={"scope": "task", "id": str(uuid.uuid4()), "frame": {"type": "conformance:ctl4"}})
    ctx.equal(unheld[0], 200, "a publish to a scope nobody holds is acknowledged too")


@case("CTL-4", "EV-2", title="a publish whose frame carries an event_id keeps it and returns it")
async def ctl4_event_id_kept(ctx):
    w = ctx.world
    client = await authed(ctx, w.alice, w.ws_a)
    eid = f"conformance-{uuid.uuid4()}"
    status, doc = await control(ctx, "POST", "/_control/publish",
                                body={"scope": "workspace", "id": w.ws_a,
                                      "frame": {"type": "conformance:ctl4", "event_id": eid}})
    ctx.expect(status == 200 and isinstance(doc, dict) and doc.get("event_id") == eid,
               "a frame's own event_id must be kept and returned by the publish", {"event_id": eid},
               f"{status} {doc!r}"[:300])
    await ctx.event(client, {"event_id": eid})


BAD_PUBLISH = [
    ("malformed JSON", b'{"scope": "workspace", '),
    ("a body that is not an object", b'["workspace", "W", {}]'),
    ("an empty body", b""),
    ("no scope", {"id": "W", "frame": {}}),
    ("an unknown scope type", {"scope": "daemon_runtime", "id": "W", "frame": {}}),
    ("scope Workspace", {"scope": "Workspace", "id": "W", "frame": {}}),
    ("global with id ALL", {"scope": "global", "id": "ALL", "frame": {}}),
    ("global with a workspace id", {"scope": "global", "id": "W", "frame": {}}),
    ("global without id", {"scope": "global", "frame": {}}),
    ("an empty event_id", {"scope": "workspace", "id": "W", "frame": {"event_id": ""}}),
    ("a numeric event_id", {"scope": "workspace", "id": "W", "frame": {"event_id": 42}}),
    ("a null event_id", {"scope": "workspace", "id": "W", "frame": {"event_id": None}}),
    ("exclude_workspace on a workspace publish",
     {"scope": "workspace", "id": "W", "frame": {}, "exclude_workspace": "W"}),
    ("exclude_workspace on a task publish", {"scope": "task", "id": "T", "frame": {}, "exclude_workspace": "W"}),
    ("exclude_workspace on a global publish", {"scope": "global", "id": "all", "frame": {}, "exclude_workspace": "W"}),
    ("an empty exclude_workspace", {"scope": "user", "id": "U", "frame": {}, "exclude_workspace": ""}),
    ("a numeric exclude_workspace", {"scope": "user", "id": "U", "frame": {}, "exclude_workspace": 7}),
    ("exclude_workspace false", {"scope": "user", "id": "U", "frame": {}, "exclude_workspace": False}),
]


@case("CTL-4", title="publish bodies the contract rejects answer 400 and deliver nothing")
async def ctl4_bad_publish_is_400(ctx):
    w = ctx.world
    ids = {"W": w.ws_a, "U": w.alice, "T": w.task_a}
    client = await authed(ctx, w.alice, w.ws_a)
    ctx.equal(await ctx.answer(client, "subscribe", "task", w.task_a), _ack("subscribe", "task", w.task_a),
              "alice may subscribe to her workspace's task")
    for why, body in BAD_PUBLISH:
        if isinstance(body, dict):
            body = {k: (ids.get(v, v) if isinstance(v, str) else v) for k, v in body.items()}
            if isinstance(body.get("frame"), dict):
                body["frame"] = {**body["frame"], "type": "conformance:bad"}
            status, doc = await control(ctx, "POST", "/_control/publish", body=body)
        else:
            status, doc = await control(ctx, "POST", "/_control/publish", raw=body)
        ctx.equal(status, 400, f"a publish with {why} must be 400")
    await marker(ctx, client, "workspace", w.ws_a)
    delivered = [f for f in client.events() if f.get("type") == "conformance:bad"]
    ctx.equal(delivered, [], "a publish answered 400 must deliver nothing")


# -- CTL-5 ------------------------------------------------------------------------------------------------

async def _faults(ctx, mode: str, node: int = 0) -> None:
    status, doc = await control(ctx, "PUT", "/_control/faults", node=node, body={"authorizer": mode})
    ctx.equal(status, 200, f"PUT /_control/faults {{\"authorizer\": \"{mode}\"}} on node {node + 1} must answer 200")


@case("CTL-5", "SUB-2", title='faults "error" makes task and chat subscribes lookup_failed; "ok" restores them',
      exclusive=True)
async def ctl5_faults(ctx):
    w = ctx.world
    client = await authed(ctx, w.alice, w.ws_a)
    try:
        await _faults(ctx, "error")
        for scope, sid in (("task", w.task_a), ("chat", w.chat_alice), ("task", w.task_b)):
            ctx.equal(await ctx.answer(client, "subscribe", scope, sid), _denied(scope, sid, "lookup_failed"),
                      f"while the authorizer fails, subscribe {scope}:{sid} is lookup_failed")
        ctx.equal(await ctx.answer(client, "subscribe", "workspace", w.ws_a), _ack("subscribe", "workspace", w.ws_a),
                  "workspace subscribes do not use the authorizer")
        ctx.equal(await ctx.answer(client, "subscribe", "workspace", w.ws_b),
                  _denied("workspace", w.ws_b, "forbidden"), "another workspace is still forbidden")
        await _faults(ctx, "ok")
        ctx.equal(await ctx.answer(client, "subscribe", "task", w.task_a), _ack("subscribe", "task", w.task_a),
                  'after faults "ok", task subscribes are decided normally again')
        ctx.equal(await ctx.answer(client, "subscribe", "chat", w.chat_bob), _denied("chat", w.chat_bob, "forbidden"),
                  'after faults "ok", another user\'s chat is forbidden again')
    finally:
        for node in range(len(ctx.target.urls)):
            await control(ctx, "PUT", "/_control/faults", node=node, body={"authorizer": "ok"})

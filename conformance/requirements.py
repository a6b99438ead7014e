"""Every requirement of the contract: its ID, a short title, and when it applies.

`capability` names the capability a target must claim in /_control/info for the requirement
to be checked (else it is reported `not claimed`); `profile` "strict" ones are only checked
with --profile strict."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    capability: str | None = None
    profile: str = "default"


REQUIREMENTS: dict[str, Requirement] = {r.id: r for r in [
    Requirement("HS-1", "workspace_id or workspace_slug; 400 without, 404 for an unknown slug"),
    Requirement("HS-2", "cookie auth is checked before the upgrade, with the contract's statuses", "cookie_auth"),
    Requirement("HS-3", "token auth: the first data frame is auth within the timeout, exact error texts"),
    Requirement("HS-4", "HS256 JWTs and mul_ PATs; invalid token vs invalid claims"),
    Requirement("HS-5", "origin checks, X-Forwarded-Host only from trusted proxies", "origin"),
    Requirement("HS-6", "auto-subscribed to workspace and user before auth_ack"),
    Requirement("HS-7", "handshake checks answer in the order HS-1, HS-2, HS-5"),
    Requirement("IN-1", "subscribe/unsubscribe payload validation: invalid payload"),
    Requirement("IN-2", "ping is answered pong"),
    Requirement("IN-3", "invalid JSON and unknown types are ignored"),
    Requirement("IN-4", "inbound messages over 65,536 bytes close with 1009"),
    Requirement("IN-5", "transport pings, and a close after the pong timeout"),
    Requirement("SUB-1", "workspace/user scopes only for the connection's own ids"),
    Requirement("SUB-2", "task/chat scopes through the authorizer: ack, forbidden, lookup_failed"),
    Requirement("SUB-3", "other scopes answer unknown_scope"),
    Requirement("SUB-4", "unsubscribe always acks; global cannot be left"),
    Requirement("SUB-5", "subscribing twice delivers once; close drops subscriptions"),
    Requirement("AZ-1", "task scopes: issue tasks by workspace, chat tasks by creator"),
    Requirement("AZ-2", "chat scopes: same workspace and creator"),
    Requirement("AZ-3", "non-UUID task/chat ids are forbidden without a lookup"),
    Requirement("AZ-4", "no leak: never an event of a scope not held"),
    Requirement("AZ-5", "revocation closes the user's connections within 2 s", "revocation"),
    Requirement("EV-1", "publish targets one scope; exclude_workspace; global reaches everyone"),
    Requirement("EV-2", "delivered frame = published object + event_id (+ server fields)"),
    Requirement("DEL-1", "completeness: every acknowledged event after the ack, within 5 s"),
    Requirement("DEL-2", "no duplicates within a subscription"),
    Requirement("DEL-3", "publisher order"),
    Requirement("DEL-4", "scope order is the same on every connection", profile="strict"),
    Requirement("DEL-5", "nothing published after unsubscribe_ack arrives"),
    Requirement("DEL-6", "slow consumers: everything, or closed within 10 s; never a gap"),
    Requirement("DEL-7", "no stale events without since", profile="strict"),
    Requirement("REP-1", "event frames carry scope, scope_id and pos", "resume"),
    Requirement("REP-2", "subscribe with since is answered with recovered", "resume"),
    Requirement("REP-3", "recovered true: every missed event once, in scope order, then live", "resume"),
    Requirement("REP-4", "recovered false: nothing replayed; never true over a gap", "resume"),
    Requirement("REP-5", "an unparseable since is invalid payload, checked first", "resume"),
    Requirement("REP-6", "a resume inside the declared retention recovers", "resume"),
    Requirement("REP-7", "resume is authorized like any subscribe", "resume"),
    Requirement("NODE-1", "every DEL, AZ and REP requirement holds across nodes"),
    Requirement("NODE-2", "killing a node loses nothing elsewhere"),
    Requirement("NODE-3", "503 while the store is unreachable; delivery resumes within 10 s"),
    Requirement("NODE-4", "the relay works against a Redis Cluster", "redis_cluster"),
    Requirement("HL-1", "GET /health/realtime returns the metrics snapshot", "health"),
    Requirement("HL-2", "health access: loopback without forwarding headers, or a bearer token", "health"),
    Requirement("HL-3", "at rest, active connections equal open connections", "health"),
    Requirement("CTL-1", "GET /_control/info"),
    Requirement("CTL-2", "PUT /_control/fixtures replaces the world"),
    Requirement("CTL-3", "POST /_control/token"),
    Requirement("CTL-4", "POST /_control/publish: 200 only once stored, 400 for bad bodies"),
    Requirement("CTL-5", "PUT /_control/faults makes lookups fail"),
    Requirement("CTL-6", "POST /_control/revoke", "revocation"),
]}

# Faults on processes and networks are the simulator's: the suite cannot judge these.
SIMULATOR_ONLY = ("NODE-2", "NODE-3", "NODE-4")


def select(spec: str | None) -> set[str]:
    """IDs named by a comma list of IDs or group prefixes ("HS", "DEL-1,REP")."""
    if not spec:
        return set()
    chosen: set[str] = set()
    for part in (p.strip().upper() for p in spec.split(",") if p.strip()):
        matched = {rid for rid in REQUIREMENTS if rid == part or rid.split("-")[0] == part}
        if not matched:
            raise ValueError(f"unknown requirement or group {part!r}")
        chosen |= matched
    return chosen

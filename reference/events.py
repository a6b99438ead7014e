"""Event frames: validated once at publish, serialized once, finished per node with its position.

A stored body is the published object (with its event_id, without the server-set fields)
as JSON. Delivering it splices `scope`, `scope_id` and `pos` into that text, so no node
parses or re-encodes an event per connection."""

from __future__ import annotations

import json

from ulid import ULID

SERVER_FIELDS = ("scope", "scope_id", "pos")
SCOPE_TYPES = ("workspace", "user", "task", "chat")
PUBLISH_SCOPES = SCOPE_TYPES + ("global",)
GLOBAL_ID = "all"


class EventError(ValueError):
    pass


def prepare(frame: dict) -> tuple[str, str]:
    """Return (event_id, body JSON). Keeps a valid event_id (EV-2), else assigns a ULID."""
    if not isinstance(frame, dict):
        raise EventError("frame must be an object")
    event_id = frame.get("event_id")
    if "event_id" in frame:
        if not isinstance(event_id, str) or not event_id:
            raise EventError("event_id must be a non-empty string")
    else:
        event_id = str(ULID())
    body = {k: v for k, v in frame.items() if k not in SERVER_FIELDS}
    body["event_id"] = event_id
    return event_id, json.dumps(body, separators=(",", ":"))


def finish(body: str, scope_type: str, scope_id: str, pos: str | None) -> str:
    """The frame a client receives: body plus the server-set fields (REP-1)."""
    tail = f'"scope":{json.dumps(scope_type)},"scope_id":{json.dumps(scope_id)},"pos":{json.dumps(pos)}}}'
    return body[:-1] + "," + tail  # body always holds event_id, so it is never "{}"


def type_of(frame: dict) -> str:
    """The event's `type`, for per-type send counters (HL-1)."""
    t = frame.get("type")
    return t if isinstance(t, str) else ""

"""The scope authorizer (AZ-1..3), mirroring Multica's cmd/server/scope_authorizer.go."""

from __future__ import annotations

import re
import uuid

from .world import World

ALLOWED, FORBIDDEN, LOOKUP_FAILED = "allowed", "forbidden", "lookup_failed"


def _uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        return None


# AZ-3: a scope id is a UUID only in its canonical spelling. uuid.UUID (like Postgres) also reads
# upper case, braces, `urn:uuid:` and no hyphens; taking those would make one task many scopes,
# each with its own subscribers and stream, and events published under the canonical id would
# never reach them.
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)


def canonical_uuid(text: str) -> uuid.UUID | None:
    return uuid.UUID(text) if _CANONICAL.fullmatch(text) else None


class LookupError_(Exception):
    """A lookup failed for a reason other than not-found (injected through CTL-5)."""


class Authorizer:
    def __init__(self, world: World):
        self.failing = False  # CTL-5 fault switch
        self.replace(world)

    def replace(self, world: World) -> None:
        # Index by parsed UUID: ids compare as UUIDs, like the database does.
        def index(table: dict) -> dict:
            return {u: v for k, v in table.items() if (u := _uuid(k)) is not None}

        self._issues, self._tasks, self._chats = index(world.issues), index(world.tasks), index(world.chats)

    def _lookup(self, table: dict, key: uuid.UUID | None) -> dict | str | None:
        if self.failing:
            raise LookupError_()
        return table.get(key) if key is not None else None

    def decide(self, user_id: str, workspace_id: str, scope: str, scope_id: str) -> str:
        ws = _uuid(workspace_id)
        sid = canonical_uuid(scope_id)
        if ws is None or sid is None:
            return FORBIDDEN  # AZ-3: no lookup for a non-UUID id
        try:
            if scope == "task":
                return self._task(user_id, ws, sid)
            if scope == "chat":
                return self._chat(user_id, ws, sid)
        except LookupError_:
            return LOOKUP_FAILED
        return FORBIDDEN

    def _task(self, user_id: str, ws: uuid.UUID, sid: uuid.UUID) -> str:
        task = self._lookup(self._tasks, sid)
        if task is None:
            return FORBIDDEN
        if task.get("issue"):
            issue_ws = self._lookup(self._issues, _uuid(task["issue"]))
            return ALLOWED if issue_ws is not None and _uuid(issue_ws) == ws else FORBIDDEN
        if task.get("chat"):
            chat = self._lookup(self._chats, _uuid(task["chat"]))
            return self._chat_allows(chat, user_id, ws)
        return FORBIDDEN

    def _chat(self, user_id: str, ws: uuid.UUID, sid: uuid.UUID) -> str:
        return self._chat_allows(self._lookup(self._chats, sid), user_id, ws)

    @staticmethod
    def _chat_allows(chat: dict | None, user_id: str, ws: uuid.UUID) -> str:
        if chat is None or _uuid(chat["workspace"]) != ws:
            return FORBIDDEN
        creator, user = _uuid(chat["creator"]), _uuid(user_id)
        return ALLOWED if user is not None and creator == user else FORBIDDEN

"""The fixture world: workspaces, members, users, PATs, issues, tasks and chats.

The control API replaces it wholesale (CTL-2); connections already open keep their
identity (AZ-5: replacing fixtures must not close anyone). Revocations (AZ-5) live in the world
too: replacing the fixtures installs a new world, so it clears them on that node."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class FixtureError(ValueError):
    pass


@dataclass(frozen=True)
class World:
    workspaces: dict[str, dict] = field(default_factory=dict)  # id -> {"slug", "members"}
    slugs: dict[str, str] = field(default_factory=dict)  # slug -> workspace id
    members: dict[str, frozenset[str]] = field(default_factory=dict)
    disabled_users: frozenset[str] = frozenset()
    pats: dict[str, str] = field(default_factory=dict)
    issues: dict[str, str] = field(default_factory=dict)  # issue id -> workspace id
    tasks: dict[str, dict] = field(default_factory=dict)  # task id -> {"issue": I} | {"chat": C} | {}
    chats: dict[str, dict] = field(default_factory=dict)  # chat id -> {"workspace", "creator"}
    # (workspace id, user id) pairs revoked on this node since the world was installed (AZ-5):
    # the one mutable part, so the fixtures themselves stay as they were loaded.
    revoked: set[tuple[str, str]] = field(default_factory=set, compare=False)

    def is_member(self, user_id: str, workspace_id: str) -> bool:
        return user_id in self.members.get(workspace_id, ()) and (workspace_id, user_id) not in self.revoked


def _obj(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise FixtureError(f"{where} must be an object")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise FixtureError(f"{where} must be a non-empty string")
    return value


def parse_world(doc: Any) -> World:
    """Validate a CTL-2 document and build a World. Raises FixtureError naming the bad key."""
    doc = _obj(doc, "fixtures")
    workspaces, slugs, members = {}, {}, {}
    for wid, w in _obj(doc.get("workspaces", {}), "workspaces").items():
        w = _obj(w, f"workspaces.{wid}")
        slug = w.get("slug")
        if slug is not None:
            slugs[_str(slug, f"workspaces.{wid}.slug")] = wid
        ms = w.get("members", [])
        if not isinstance(ms, list):
            raise FixtureError(f"workspaces.{wid}.members must be a list")
        members[wid] = frozenset(_str(m, f"workspaces.{wid}.members[]") for m in ms)
        workspaces[wid] = w
    disabled = doc.get("disabled_users", [])
    if not isinstance(disabled, list):
        raise FixtureError("disabled_users must be a list")
    pats = {}
    for tok, uid in _obj(doc.get("pats", {}), "pats").items():
        pats[tok] = _str(uid, f"pats.{tok}")
    issues = {}
    for iid, i in _obj(doc.get("issues", {}), "issues").items():
        issues[iid] = _str(_obj(i, f"issues.{iid}").get("workspace"), f"issues.{iid}.workspace")
    tasks = {}
    for tid, t in _obj(doc.get("tasks", {}), "tasks").items():
        t = _obj(t, f"tasks.{tid}")
        for k in ("issue", "chat"):
            if k in t:
                _str(t[k], f"tasks.{tid}.{k}")
        tasks[tid] = t
    chats = {}
    for cid, c in _obj(doc.get("chats", {}), "chats").items():
        c = _obj(c, f"chats.{cid}")
        chats[cid] = {
            "workspace": _str(c.get("workspace"), f"chats.{cid}.workspace"),
            "creator": _str(c.get("creator"), f"chats.{cid}.creator"),
        }
    return World(
        workspaces=workspaces,
        slugs=slugs,
        members=members,
        disabled_users=frozenset(_str(u, "disabled_users[]") for u in disabled),
        pats=pats,
        issues=issues,
        tasks=tasks,
        chats=chats,
    )

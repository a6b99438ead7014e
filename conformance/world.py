"""A fixture world for testing a target: workspaces, members, a disabled user, PATs, issues,
issue tasks, chat tasks and chats, with random UUIDs so runs never collide."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field


def _id() -> str:
    return str(uuid.uuid4())


@dataclass
class TestWorld:
    __test__ = False  # not a pytest test class
    """Two workspaces A and B. alice and bob are members of A; carol of B; dave is a member of
    A but disabled; outsider belongs to none. Each workspace has an issue with a task; alice
    has a chat in A with a chat task; bob has a chat in A too."""

    ws_a: str = field(default_factory=_id)
    ws_b: str = field(default_factory=_id)
    slug_a: str = field(default_factory=lambda: "ws-a-" + secrets.token_hex(4))
    slug_b: str = field(default_factory=lambda: "ws-b-" + secrets.token_hex(4))
    alice: str = field(default_factory=_id)
    bob: str = field(default_factory=_id)
    carol: str = field(default_factory=_id)
    dave: str = field(default_factory=_id)
    outsider: str = field(default_factory=_id)
    issue_a: str = field(default_factory=_id)
    issue_b: str = field(default_factory=_id)
    task_a: str = field(default_factory=_id)  # issue task in A
    task_b: str = field(default_factory=_id)  # issue task in B
    chat_alice: str = field(default_factory=_id)
    chat_bob: str = field(default_factory=_id)
    chat_task_alice: str = field(default_factory=_id)
    orphan_task: str = field(default_factory=_id)  # neither issue nor chat
    pat_alice: str = field(default_factory=lambda: "mul_" + secrets.token_hex(16))
    pat_dave: str = field(default_factory=lambda: "mul_" + secrets.token_hex(16))

    def fixtures(self) -> dict:
        return {
            "workspaces": {
                self.ws_a: {"slug": self.slug_a, "members": [self.alice, self.bob, self.dave]},
                self.ws_b: {"slug": self.slug_b, "members": [self.carol]},
            },
            "disabled_users": [self.dave],
            "pats": {self.pat_alice: self.alice, self.pat_dave: self.dave},
            "issues": {self.issue_a: {"workspace": self.ws_a}, self.issue_b: {"workspace": self.ws_b}},
            "tasks": {
                self.task_a: {"issue": self.issue_a},
                self.task_b: {"issue": self.issue_b},
                self.chat_task_alice: {"chat": self.chat_alice},
                self.orphan_task: {},
            },
            "chats": {
                self.chat_alice: {"workspace": self.ws_a, "creator": self.alice},
                self.chat_bob: {"workspace": self.ws_a, "creator": self.bob},
            },
        }

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
    """Two workspaces A and B. alice and bob are members of A; carol of B; erin of both; dave
    is a member of A but disabled; outsider belongs to none; frank is a member of both, and only
    the revocation case (AZ-5) uses him: revoking him disturbs no case running alongside. Each workspace has an issue with a
    task; alice has a chat in A with a chat task; bob has a chat in A too; erin a chat in A with
    a chat task (what she may see depends on the workspace she connected to)."""

    ws_a: str = field(default_factory=_id)
    ws_b: str = field(default_factory=_id)
    slug_a: str = field(default_factory=lambda: "ws-a-" + secrets.token_hex(4))
    slug_b: str = field(default_factory=lambda: "ws-b-" + secrets.token_hex(4))
    alice: str = field(default_factory=_id)
    bob: str = field(default_factory=_id)
    carol: str = field(default_factory=_id)
    dave: str = field(default_factory=_id)
    outsider: str = field(default_factory=_id)
    erin: str = field(default_factory=_id)  # a member of A and of B
    frank: str = field(default_factory=_id)  # a member of A and of B, revoked from A by the AZ-5 case
    issue_a: str = field(default_factory=_id)
    issue_b: str = field(default_factory=_id)
    task_a: str = field(default_factory=_id)  # issue task in A
    task_b: str = field(default_factory=_id)  # issue task in B
    chat_alice: str = field(default_factory=_id)
    chat_bob: str = field(default_factory=_id)
    chat_task_alice: str = field(default_factory=_id)
    chat_erin: str = field(default_factory=_id)  # erin's chat, in A
    chat_task_erin: str = field(default_factory=_id)
    orphan_task: str = field(default_factory=_id)  # neither issue nor chat
    pat_alice: str = field(default_factory=lambda: "mul_" + secrets.token_hex(16))
    pat_dave: str = field(default_factory=lambda: "mul_" + secrets.token_hex(16))
    more_tasks: list[str] = field(default_factory=list)  # further issue tasks in A, for cases that need many scopes

    @classmethod
    def sized(cls, tasks: int = 0) -> "TestWorld":
        """A world with `tasks` further issue tasks in A."""
        return cls(more_tasks=[_id() for _ in range(tasks)])

    def fixtures(self) -> dict:
        return {
            "workspaces": {
                self.ws_a: {"slug": self.slug_a, "members": [self.alice, self.bob, self.dave, self.erin, self.frank]},
                self.ws_b: {"slug": self.slug_b, "members": [self.carol, self.erin, self.frank]},
            },
            "disabled_users": [self.dave],
            "pats": {self.pat_alice: self.alice, self.pat_dave: self.dave},
            "issues": {self.issue_a: {"workspace": self.ws_a}, self.issue_b: {"workspace": self.ws_b}},
            "tasks": {
                self.task_a: {"issue": self.issue_a},
                self.task_b: {"issue": self.issue_b},
                self.chat_task_alice: {"chat": self.chat_alice},
                self.chat_task_erin: {"chat": self.chat_erin},
                self.orphan_task: {},
                **{t: {"issue": self.issue_a} for t in self.more_tasks},
            },
            "chats": {
                self.chat_alice: {"workspace": self.ws_a, "creator": self.alice},
                self.chat_bob: {"workspace": self.ws_a, "creator": self.bob},
                self.chat_erin: {"workspace": self.ws_a, "creator": self.erin},
            },
        }

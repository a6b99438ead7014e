"""Findings, and how one batch's answers, events and close are judged against the oracle.

A batch is a few steps and a marker: an unsubscribe of a scope id no one else uses, which SUB-4
always answers. IN-2 orders a connection's answers as the frames they answer, so once the marker's
ack arrived every earlier step's answer has arrived before it: the answers in between are judged
as a sequence, with no waiting and no guessing which answer belongs to which step."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .oracle import ALWAYS_ALLOWED_CLOSES, Expect
from .wire import FuzzConn, Garbled

# Kinds of finding, with the question each answers.
CRASH = "connection dropped"  # closed without the close the contract gives for what was sent
WRONG_CLOSE = "wrong close"  # a close was owed, with another code
STAYED_OPEN = "stayed open"  # a close was owed and the connection went on answering
OUTSIDE = "answer outside the contract"
MISSING = "missing answer"  # a frame owed an answer got none before a later frame's answer (IN-2)
STALL = "no answer"  # nothing answered the marker within the bound, connection open
LEAK = "event of a scope not held"  # AZ-4
CANARY_LOSS = "canary loss"  # DEL-1
CANARY_REPEAT = "canary duplicate"  # DEL-2
CANARY_CLOSED = "canary closed"
TRACEBACK = "traceback in a node's log"
UNREACHABLE = "node unreachable"  # a node refused or stopped taking connections


@dataclass
class Finding:
    kind: str
    reqs: tuple[str, ...]
    what: str
    sent: list[str] = field(default_factory=list)  # the steps of the batch (each with what it was owed)
    got: list[str] = field(default_factory=list)  # what came back
    node: int | None = None
    conn: str = ""
    culprits: list[str] | None = None  # the steps that alone reproduce it (None: not isolated)

    @property
    def signature(self) -> str:
        """What the finding is, without where and with which values: findings alike share it."""
        return re.sub(r"'[^']*'|\d+", "_", f"{self.kind}: {self.what}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "requirements": list(self.reqs), "what": self.what, "node": self.node,
                "connection": self.conn, "sent": self.sent, "received": self.got, "culprits": self.culprits}


class Findings:
    """Every finding counted by kind; examples kept per kind, varied: at most PER_SIGNATURE of
    findings alike (judge.Finding.signature), so a rare finding is not crowded out by a common one."""

    KEEP = 50  # per kind; the report shows the first, the JSON keeps them all
    PER_SIGNATURE = 3

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[Finding]] = {}
        self.reqs: Counter[str] = Counter()
        self.signatures: Counter[str] = Counter()

    def add(self, f: Finding) -> None:
        self.counts[f.kind] += 1
        self.reqs.update(f.reqs)
        self.signatures[f.signature] += 1
        kept = self.examples.setdefault(f.kind, [])
        if len(kept) < self.KEEP and self.signatures[f.signature] <= self.PER_SIGNATURE:
            kept.append(f)

    def novel(self, f: Finding) -> bool:
        """Nothing alike was counted yet (before add)."""
        return self.signatures[f.signature] == 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def show(frame: Any, limit: int = 300) -> str:
    text = str(frame) if isinstance(frame, Garbled) else repr(frame)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def close_text(conn: FuzzConn) -> str:
    if conn.close_frame:
        return f"close frame {conn.close_code}" + (f" {conn.close_reason!r}" if conn.close_reason else "")
    return "the socket went without a close frame"


def _fits(e: Expect, a: Any) -> bool:
    return isinstance(a, dict) and e.ok(a)


def alignment(expects: list[Expect], answers: list[Any], ended: bool) -> dict[int, int] | None:
    """A reading of the answers (in order) as one per `must` step and at most one per `maybe`
    step, each accepted by its step, nothing for `none` steps (on a connection that ended the
    answers may stop early): step index -> answer index, or None when there is none. A small
    search: a `maybe` answered or not."""
    def go(k: int, j: int) -> dict[int, int] | None:
        while k < len(expects) and expects[k].answer == "none":
            k += 1
        if k == len(expects):
            return {} if j == len(answers) else None
        if j == len(answers):
            return {} if ended or all(e.answer != "must" for e in expects[k:]) else None
        e = expects[k]
        if _fits(e, answers[j]) and (rest := go(k + 1, j + 1)) is not None:
            return {k: j, **rest}
        return go(k + 1, j) if e.answer == "maybe" else None
    return go(0, 0)


def aligns(expects: list[Expect], answers: list[Any], ended: bool) -> bool:
    return alignment(expects, answers, ended) is not None


def sequence(expects: list[Expect], answers: list[Any], ended: bool) -> tuple[str, int | None, str, Any] | None:
    """The first way `answers` (in arrival order) break `expects` (in send order): (kind, step
    index, explanation, the offending answer), or None. On a connection that ended, answers
    owed after the last one that came are not judged (the close is)."""
    if aligns(expects, answers, ended):
        return None
    # Read the steps otherwise to find the culprit: frames owed nothing that were answered, or
    # frames owed an answer that got none.
    relaxed = [Expect("maybe", e.want, e.reqs, lambda f: True) if e.answer == "none" else e for e in expects]
    found = alignment(relaxed, answers, ended)
    k = next((k for k in found or () if expects[k].answer == "none"), None)
    if k is not None:
        return OUTSIDE, k, f"step {k + 1} was owed {expects[k].want}, and was answered", answers[found[k]]
    relaxed = [Expect("maybe", e.want, e.reqs, e.ok) if e.answer == "must" else e for e in expects]
    found = alignment(relaxed, answers, ended)
    k = next((k for k, e in enumerate(expects) if e.answer == "must" and k not in (found or {k: 0})), None)
    if k is not None:
        return MISSING, k, f"step {k + 1} was owed {expects[k].want} and got no answer", None
    j = 0
    for k, e in enumerate(expects):
        if e.answer == "none":
            continue
        a = answers[j] if j < len(answers) else None
        later = [x for x in expects[k + 1:] if x.answer == "must"]
        if a is not None and _fits(e, a) and not (e.answer == "maybe" and later and _fits(later[0], a)):
            j += 1
            continue
        if e.answer == "maybe":
            continue
        if a is None:
            if ended:
                return None
            return MISSING, k, f"step {k + 1} was owed {e.want}; no answer came before the marker's", None
        if isinstance(a, dict) and any(x.answer != "none" and x.ok(a) for x in expects[k + 1:]):
            return MISSING, k, f"step {k + 1} was owed {e.want}; the answer to a later step came first", a
        return OUTSIDE, k, f"step {k + 1} was owed {e.want}", a
    if j < len(answers):
        return OUTSIDE, None, "an answer no step was owed (a frame the contract ignores was answered)", answers[j]
    return None


def judge_close(conn: FuzzConn, expects: list[Expect], *, after_auth_error: bool = False
                ) -> tuple[str, tuple[str, ...], str] | None:
    """How the connection ended, against what the steps sent allow: None when the contract gives
    this close for them, else (kind, requirement IDs, explanation)."""
    owed = next((e for e in expects if e.must_close), None)
    allowed = {code: req for e in expects for code, req in e.closes.items()}
    if conn.close_frame and conn.close_code in ALWAYS_ALLOWED_CLOSES:
        return None
    if after_auth_error and (not conn.close_frame or conn.close_code == 1008):
        return None  # HS-3: the connection is closed (the reference: 1008; Multica: no close frame)
    if conn.close_frame and conn.close_code in allowed:
        return None
    if owed is not None:
        return (WRONG_CLOSE, owed.reqs, f"owed {owed.want}, got {close_text(conn)}")
    reqs = tuple(dict.fromkeys(r for e in expects for r in e.reqs)) or ("IN-3",)
    return CRASH, reqs, f"{close_text(conn)} after frames that owe no close"

"""What a verdict is: one outcome vocabulary, the checker's witnesses, and one verdict type per
requirement, decided in one place (`decide`) for the case runner, the exploration's checker,
the simulator and every report.

A requirement's verdict combines everything that judged it in a run:
  fail         something showed it broken (a case's check of it, or a checker witness);
  error        nothing failed, but a check of it could not run (set-up broke, the target
               answered in a way the case could not use): it was not fully checked;
  pass         it was checked and held (`skipped` names its checks that did not run, if any);
  not claimed  it belongs to a capability the target does not claim;
  not checked  it was left out (profile, --quick, a secret or fault the suite lacks, or a
               requirement it depends on already failed);
  no evidence  nothing in the run exercised it, so a pass would mean nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .requirements import REQUIREMENTS, Requirement


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    NOT_CHECKED = "not checked"
    NOT_CLAIMED = "not claimed"
    NO_EVIDENCE = "no evidence"


@dataclass
class Anomaly:
    """One violation found by the history checker: what kind, of which requirement, on which
    connection and event. ``also`` names further requirements the same observation violates
    (NODE-1 when the publish and the receiving connection were on different nodes, ...).
    ``excerpt`` holds the history records involved, each with its ``line`` (1-based position in
    the checked stream); received frames the checker did not keep are abridged to their
    ``event_id``."""

    kind: str
    requirement: str
    conn: str | None
    event_id: str | None
    explanation: str
    excerpt: list[dict] = field(default_factory=list)
    also: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"kind": self.kind, "requirement": self.requirement, "conn": self.conn,
                "event_id": self.event_id, "explanation": self.explanation,
                "excerpt": self.excerpt, "also": list(self.also)}


@dataclass
class Finding:
    """What one case found about one requirement."""

    outcome: Outcome
    reason: str = ""
    expected: Any = None
    received: Any = None
    skipped: list[str] = field(default_factory=list)  # parts of a passing check that could not run, and why


@dataclass
class Verdict:
    """The verdict on one requirement (or one of the simulator's own checks)."""

    id: str
    title: str
    status: Outcome
    reason: str = ""
    cases: list[Any] = field(default_factory=list)  # runner.CaseResult of the cases that judged it
    witnesses: list[Anomaly] = field(default_factory=list)  # the checker's first violations
    violations: int = 0  # the checker's violations in all
    evidence: int = 0  # how many observations of the checker exercised it
    skipped: list[str] = field(default_factory=list)  # its checks that did not run, and why

    @property
    def sentence(self) -> str:
        req = REQUIREMENTS.get(self.id)
        return req.sentence if req is not None else ""

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "status": str(self.status), "reason": self.reason,
                "sentence": self.sentence, "violations": self.violations, "evidence": self.evidence,
                "skipped": list(self.skipped), "witnesses": [w.to_dict() for w in self.witnesses]}


def applicability(req: Requirement, claimed: Iterable[str], profile: str) -> tuple[Outcome, str] | None:
    """Why a requirement is not judged in this run at all, or None when it is."""
    if req.capability and req.capability not in set(claimed):
        return Outcome.NOT_CLAIMED, f"the target does not claim {req.capability}"
    if req.profile == "strict" and profile != "strict":
        return Outcome.NOT_CHECKED, "strict profile only (--profile strict)"
    return None


def checker_verdict(rid: str, *, claimed: Iterable[str], profile: str, violations: int,
                    witnesses: list[Anomaly], evidence: int, what: str) -> Verdict:
    """The history checker's verdict on one requirement."""
    req = REQUIREMENTS[rid]
    gate = applicability(req, claimed, profile)
    if gate is not None:
        return Verdict(rid, req.title, gate[0], gate[1])
    if violations:
        first = witnesses[0].kind if witnesses else "?"
        return Verdict(rid, req.title, Outcome.FAIL,
                       f"{violations} violation{'s' if violations != 1 else ''} (first: {first}); {what}: {evidence}",
                       witnesses=list(witnesses), violations=violations, evidence=evidence)
    if evidence:
        return Verdict(rid, req.title, Outcome.PASS, f"no violation; {what}: {evidence}", evidence=evidence)
    return Verdict(rid, req.title, Outcome.NO_EVIDENCE, f"nothing in the history exercised it ({what}: 0)")


def decide(rid: str, *, claimed: Iterable[str], profile: str, case_results: Iterable[Any] = (),
           checked: Verdict | None = None, checked_by: str = "exploration", elsewhere: str | None = None) -> Verdict:
    """One requirement's verdict from the cases that judged it (runner.CaseResult, each with a
    Finding per requirement) and the history checker's verdict on it (on the history recorded
    by `checked_by`). `elsewhere` says who judges a requirement nothing here judged."""
    req = REQUIREMENTS[rid]
    cases = [r for r in case_results if rid in r.findings]
    v = Verdict(rid, req.title, Outcome.NO_EVIDENCE, "no case or exploration exercised it", cases=cases)
    gate = applicability(req, claimed, profile)
    if gate is not None:
        v.status, v.reason = gate
        return v
    found = [(r.case.name, r.findings[rid]) for r in cases]
    if checked is not None:
        v.witnesses, v.violations, v.evidence = list(checked.witnesses), checked.violations, checked.evidence
        if checked.status in (Outcome.PASS, Outcome.FAIL, Outcome.NOT_CHECKED):
            found.append((checked_by, Finding(checked.status, checked.reason)))
    v.skipped = [f"{name}: {f.outcome}: {f.reason}" for name, f in found
                 if f.outcome in (Outcome.ERROR, Outcome.NOT_CHECKED)]
    v.skipped += [f"{name}: not checked: {why}" for name, f in found if f.outcome == Outcome.PASS for why in f.skipped]
    for outcome in (Outcome.FAIL, Outcome.ERROR, Outcome.PASS, Outcome.NOT_CHECKED, Outcome.NOT_CLAIMED):
        hits = [(name, f) for name, f in found if f.outcome == outcome]
        if hits:
            name, f = hits[0]
            v.status, v.reason = outcome, (f.reason if outcome == Outcome.PASS else f"{name}: {f.reason}")
            break
    else:
        if checked is not None:
            v.status, v.reason = checked.status, checked.reason
        elif elsewhere:
            v.status, v.reason = Outcome.NOT_CHECKED, elsewhere
    if v.status == Outcome.PASS and v.skipped:
        v.reason = f"partly checked: {'; '.join(v.skipped)}"
    return v


def exit_code(verdicts: Iterable[Verdict]) -> int:
    """0 every judged requirement held; 1 one failed; 2 none failed but some could not be
    checked (errors). Targets that cannot be tested at all exit 2 before any verdict."""
    statuses = {v.status for v in verdicts}
    if Outcome.FAIL in statuses:
        return 1
    if Outcome.ERROR in statuses:
        return 2
    return 0

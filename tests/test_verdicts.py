"""How a case's end becomes one finding per requirement (runner.judge) and how findings become a
requirement's verdict (verdict.decide): one witness, one requirement; an error is never a
failure; a partly skipped check says what it skipped; capabilities and profiles gate."""

from __future__ import annotations

from conformance.cases import Case, Failed, NotChecked, SetupError
from conformance.runner import judge
from conformance.verdict import Outcome, Verdict, decide, exit_code


async def _nothing(ctx):  # the cases below never run: judge() is given how they ended
    return None


class Ctx:
    def __init__(self, failures=(), skipped=()):
        self.failures, self.skipped = list(failures), list(skipped)


def case(*reqs: str) -> Case:
    return Case("c", reqs, "a case", _nothing)


def test_a_case_that_returns_passes_every_requirement_it_judges():
    r = judge(case("DEL-1", "DEL-2"), Ctx(), None)
    assert r.status == Outcome.PASS and {k: f.outcome for k, f in r.findings.items()} == {
        "DEL-1": Outcome.PASS, "DEL-2": Outcome.PASS}


def test_each_soft_check_fails_only_its_own_requirement():
    r = judge(case("DEL-1", "DEL-2", "DEL-3"), Ctx([Failed("lost one", req="DEL-1")]), None)
    assert r.status == Outcome.FAIL
    assert {k: f.outcome for k, f in r.findings.items()} == {
        "DEL-1": Outcome.FAIL, "DEL-2": Outcome.PASS, "DEL-3": Outcome.PASS}


def test_a_hard_failure_leaves_the_other_requirements_not_checked():
    r = judge(case("REP-3", "DEL-1"), Ctx(), Failed("bad order", req="REP-3"))
    assert r.findings["REP-3"].outcome == Outcome.FAIL
    assert r.findings["DEL-1"].outcome == Outcome.NOT_CHECKED and "REP-3" in r.findings["DEL-1"].reason


def test_a_set_up_step_that_breaks_is_an_error_not_a_failure():
    r = judge(case("DEL-3"), Ctx(), SetupError("publish to task:T", "503 relay unavailable"))
    assert r.status == Outcome.ERROR and r.findings["DEL-3"].outcome == Outcome.ERROR
    assert "could not publish" in r.reason


def test_a_set_up_answer_that_breaks_a_rule_fails_that_rule_alone():
    r = judge(case("DEL-1"), Ctx(), SetupError("connect alice", "no answer to auth", req="HS-3"))
    assert r.findings["HS-3"].outcome == Outcome.FAIL
    assert r.findings["DEL-1"].outcome == Outcome.ERROR


def test_an_unforeseen_exception_is_an_error():
    r = judge(case("EV-2"), Ctx(), KeyError("payload"))
    assert r.status == Outcome.ERROR and "KeyError" in r.reason


def test_not_checked_and_partly_checked():
    assert judge(case("HS-4"), Ctx(), NotChecked("needs the secret")).status == Outcome.NOT_CHECKED
    partly = judge(case("HS-4"), Ctx(skipped=[("HS-4", "HS384: needs the JWT secret")]), None)
    v = decide("HS-4", claimed=(), profile="default", case_results=[partly])
    assert v.status == Outcome.PASS and "HS384" in v.reason and v.skipped


def test_fail_beats_error_beats_pass_and_the_checker_counts_too():
    ok = judge(case("DEL-1"), Ctx(), None)
    err = judge(case("DEL-1"), Ctx(), SetupError("publish", "503"))
    bad = judge(case("DEL-1"), Ctx([Failed("lost", req="DEL-1")]), None)
    assert decide("DEL-1", claimed=(), profile="default", case_results=[ok, err]).status == Outcome.ERROR
    assert decide("DEL-1", claimed=(), profile="default", case_results=[ok, err, bad]).status == Outcome.FAIL
    checker = Verdict("DEL-1", "t", Outcome.FAIL, "1 violation (first: loss)", violations=1)
    v = decide("DEL-1", claimed=(), profile="default", case_results=[ok], checked=checker)
    assert v.status == Outcome.FAIL and v.reason.startswith("exploration:")


def test_capabilities_and_profiles_gate_before_anything_is_judged():
    bad = judge(case("REP-3"), Ctx([Failed("x", req="REP-3")]), None)
    assert decide("REP-3", claimed=(), profile="default", case_results=[bad]).status == Outcome.NOT_CLAIMED
    assert decide("DEL-4", claimed=(), profile="default").status == Outcome.NOT_CHECKED
    assert decide("DEL-4", claimed=(), profile="strict").status == Outcome.NO_EVIDENCE
    assert decide("NODE-2", claimed=(), profile="default", elsewhere="the simulator").reason == "the simulator"


def test_exit_codes_tell_failed_could_not_check_and_passed_apart():
    v = lambda s: Verdict("X", "t", s)  # noqa: E731
    assert exit_code([v(Outcome.PASS), v(Outcome.NOT_CLAIMED)]) == 0
    assert exit_code([v(Outcome.PASS), v(Outcome.ERROR)]) == 2
    assert exit_code([v(Outcome.ERROR), v(Outcome.FAIL)]) == 1

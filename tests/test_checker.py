"""The offline checker on hand-made histories: for each kind of anomaly a history that must fail
with the right requirement and kind, next to a closely matching one that must pass. Plus the
history format itself (HistoryWriter round trip, merge, validation)."""

from __future__ import annotations

import json

import pytest

from conformance.checker import KINDS, check
from conformance.requirements import CHECKER_IDS
from conformance.history import HistoryWriter, merge_histories, read_history, validate

N1, N2 = "http://node-1", "http://node-2"
T = "task-1"
RESUME = ["resume"]


# -- building histories ------------------------------------------------------------------------


class H:
    """A history under construction, with explicit times (seconds)."""

    def __init__(self) -> None:
        self.w = HistoryWriter(process="test")
        self.pos: dict[str, str] = {}
        self.scope: dict[str, tuple[str, str]] = {}

    @property
    def records(self) -> list[dict]:
        return self.w.records

    def conn(self, c: str, t: float, *, node: str = N1, user: str = "alice", ws: str = "ws-a") -> "H":
        self.w.connect_invoke(c, node, user, ws, t=t)
        self.w.connect_ok(c, t=t + 0.01)
        return self

    def sub(self, c: str, t: float, *, scope: str = "task", id: str = T, since=None,
            answer: str = "ack", error: str | None = None, recovered=None) -> "H":
        kw = {} if since is None else {"since": since}
        self.w.subscribe_invoke(c, scope, id, t=t, **kw)
        rk = {} if recovered is None else {"recovered": recovered}
        self.w.subscribe_ok(c, scope, id, answer, error, t=t + 0.01, **rk)
        return self

    def unsub(self, c: str, t: float, *, scope: str = "task", id: str = T) -> "H":
        self.w.unsubscribe_invoke(c, scope, id, t=t)
        self.w.unsubscribe_ok(c, scope, id, t=t + 0.01)
        return self

    def pub(self, e: str, t: float, *, scope: str = "task", id: str = T, node: str = N1,
            outcome="ok", dt: float = 0.1, excl: str | None = None) -> "H":
        self.w.publish_invoke(node, scope, id, e, {"type": "task:message", "payload": {"e": e}, "event_id": e},
                              excl, t=t)
        self.scope[e] = (scope, id)
        if outcome == "ok":
            self.pos[e] = f"{scope}:{id}@{e}"
            self.w.publish_ok(e, self.pos[e], t=t + dt)
        elif outcome == "info":
            self.w.publish_info(e, t=t + dt)
        else:
            self.w.publish_fail(e, outcome, "refused", t=t + dt)
        return self

    def frame(self, e: str, **override) -> dict:
        scope, id = self.scope[e]
        f = {"type": "task:message", "payload": {"e": e}, "event_id": e, "scope": scope, "scope_id": id,
             "pos": self.pos.get(e, f"{scope}:{id}@{e}")}
        f.update(override)
        return f

    def recv(self, c: str, e: str, t: float, **override) -> "H":
        self.w.recv(c, self.frame(e, **override), t=t)
        return self

    def close(self, c: str, t: float, by: str = "client") -> "H":
        self.w.closed(c, by, 1000 if by == "client" else 1008, t=t)
        return self

    def pause(self, c: str, t: float) -> "H":
        self.w.pause(c, t=t)
        return self

    def resume(self, c: str, t: float) -> "H":
        self.w.resume(c, t=t)
        return self

    def check(self, **kw):
        return check(self.records, **kw)


def fails(report, req: str, kind: str) -> None:
    v = report.verdicts[req]
    assert v.status == "fail", report.summary()
    assert any(a.kind == kind for a in v.witnesses), report.summary()
    for a in v.witnesses:
        assert a.kind in KINDS and a.explanation and a.excerpt
        assert all("line" in x for x in a.excerpt)


def passes(report, *reqs: str) -> None:
    assert report.ok, report.summary()
    for req in reqs:
        assert report.verdicts[req].status == "pass", report.summary()


def subscribed(c: str = "c1", node: str = N1, t: float = 0.0) -> H:
    """c holds task T from t+1.01."""
    return H().conn(c, t, node=node).sub(c, t + 1)


# -- DEL-1: completeness ------------------------------------------------------------------------


@pytest.mark.req("DEL-1")
def test_loss_fails():
    h = subscribed().pub("e1", 2).close("c1", 20)
    r = h.check()
    fails(r, "DEL-1", "loss")
    a = r.verdicts["DEL-1"].witnesses[0]
    assert (a.conn, a.event_id, a.requirement) == ("c1", "e1", "DEL-1")


@pytest.mark.req("DEL-1")
def test_same_history_with_the_event_received_passes():
    passes(subscribed().pub("e1", 2).recv("c1", "e1", 2.05).close("c1", 20).check(), "DEL-1")


@pytest.mark.req("DEL-1")
def test_event_published_before_the_ack_may_be_missed():
    h = H().conn("c1", 0).pub("e0", 0.9, dt=0.3).sub("c1", 1).pub("e1", 2).recv("c1", "e1", 2.05).close("c1", 20)
    passes(h.check(), "DEL-1")


@pytest.mark.req("DEL-1")
def test_connection_closed_before_the_deadline_owes_nothing():
    r = subscribed().pub("e1", 2).close("c1", 4).check()
    assert r.ok and r.verdicts["DEL-1"].status == "no evidence"


@pytest.mark.req("DEL-1")
def test_history_ending_before_the_deadline_owes_nothing():
    assert subscribed().pub("e1", 2).check().ok


@pytest.mark.req("DEL-1")
def test_unsubscribe_before_the_deadline_ends_the_obligation():
    assert subscribed().pub("e1", 2).unsub("c1", 3).close("c1", 20).check().ok


@pytest.mark.req("DEL-1", "HS-6")
def test_auto_scopes_are_held_from_connect_ok():
    h = H().conn("c1", 0).pub("w1", 1, scope="workspace", id="ws-a").pub("u1", 1.5, scope="user", id="alice")
    fails(h.close("c1", 20).check(), "DEL-1", "loss")
    h.records.pop()
    h.recv("c1", "w1", 1.05).recv("c1", "u1", 1.55).close("c1", 20)
    passes(h.check(), "DEL-1")


@pytest.mark.req("DEL-1", "EV-1")
def test_global_is_held_by_every_connection():
    h = H().conn("c1", 0).conn("c2", 0, user="carol", ws="ws-b").pub("g1", 1, scope="global", id="all")
    h.recv("c1", "g1", 1.05).close("c1", 20).close("c2", 20)
    fails(h.check(), "DEL-1", "loss")


@pytest.mark.req("DEL-1", "EV-2")
def test_timed_out_publish_may_or_may_not_arrive():
    missed = subscribed().pub("e1", 2, outcome="info").close("c1", 20)
    assert missed.check().ok
    got = subscribed().pub("e1", 2, outcome="info").recv("c1", "e1", 2.05).close("c1", 20)
    assert got.check().ok


@pytest.mark.req("EV-2", "NODE-3")
def test_503_publish_that_arrives_is_not_a_violation():
    assert subscribed().pub("e1", 2, outcome=503).recv("c1", "e1", 2.05).close("c1", 20).check().ok
    assert subscribed().pub("e1", 2, outcome=503).close("c1", 20).check().ok


@pytest.mark.req("EV-2")
def test_400_publish_that_arrives_is_a_phantom():
    r = subscribed().pub("e1", 2, outcome=400).recv("c1", "e1", 2.05).close("c1", 20).check()
    fails(r, "EV-2", "phantom")
    assert subscribed().pub("e1", 2, outcome=400).close("c1", 20).check().ok


# -- DEL-6: slow consumers -------------------------------------------------------------------------


@pytest.mark.req("DEL-6", "DEL-1")
def test_pause_then_server_close_excuses_the_loss():
    h = subscribed().pause("c1", 1.5).pub("e1", 2).resume("c1", 3).close("c1", 9, by="server")
    r = h.check()
    assert r.ok, r.summary()
    assert r.verdicts["DEL-6"].status == "pass"
    assert r.counts["excused_slow_close"] == 1


@pytest.mark.req("DEL-6")
def test_server_close_while_paused_excuses_the_loss():
    assert subscribed().pause("c1", 1.5).pub("e1", 2).close("c1", 30, by="server").check().ok


@pytest.mark.req("DEL-6", "DEL-1")
def test_pause_then_a_late_server_close_is_not_excused():
    h = subscribed().pause("c1", 1.5).pub("e1", 2).resume("c1", 3).close("c1", 14, by="server")
    fails(h.check(), "DEL-1", "loss")


@pytest.mark.req("DEL-6")
def test_gap_on_a_paused_then_resumed_open_connection_fails():
    h = subscribed().pause("c1", 1.5).pub("e1", 2).resume("c1", 3).pub("e2", 4).recv("c1", "e2", 4.05)
    h.close("c1", 30)
    r = h.check()
    fails(r, "DEL-6", "gap_on_open_connection")
    assert r.verdicts["DEL-1"].status != "fail"


@pytest.mark.req("DEL-6")
def test_paused_connection_that_catches_up_passes():
    h = subscribed().pause("c1", 1.5).pub("e1", 2).resume("c1", 3).recv("c1", "e1", 3.01)
    h.pub("e2", 4).recv("c1", "e2", 4.05).close("c1", 30)
    passes(h.check(), "DEL-6", "DEL-1")


# -- DEL-2: duplicates -----------------------------------------------------------------------------


@pytest.mark.req("DEL-2")
def test_duplicate_in_one_holding_period_fails():
    h = subscribed().pub("e1", 2).recv("c1", "e1", 2.05).recv("c1", "e1", 2.06).close("c1", 20)
    fails(h.check(), "DEL-2", "duplicate")


@pytest.mark.req("DEL-2")
def test_same_event_again_after_unsubscribe_and_resubscribe_passes():
    h = subscribed().pub("e1", 2).recv("c1", "e1", 2.05).unsub("c1", 3).sub("c1", 3.5)
    h.recv("c1", "e1", 3.6).close("c1", 20)
    r = h.check(profile="default")
    passes(r, "DEL-2")


@pytest.mark.req("DEL-2", "REP-3")
def test_duplicate_after_a_resume_within_the_same_holding_period_fails():
    h = subscribed().pub("e0", 1.5).recv("c1", "e0", 1.55).pub("e1", 2).recv("c1", "e1", 2.05)
    h.sub("c1", 3, since=h.pos["e0"], recovered=True).recv("c1", "e1", 3.02).close("c1", 20)
    r = h.check(capabilities=RESUME)
    fails(r, "REP-3", "duplicate")
    fails(r, "DEL-2", "duplicate")


@pytest.mark.req("DEL-2", "REP-3")
def test_replay_after_unsubscribe_and_resume_passes():
    h = subscribed().pub("e0", 1.5).recv("c1", "e0", 1.55).pub("e1", 2).recv("c1", "e1", 2.05)
    h.unsub("c1", 2.5).sub("c1", 3, since=h.pos["e0"], recovered=True).recv("c1", "e1", 3.02).close("c1", 20)
    passes(h.check(capabilities=RESUME), "DEL-2", "REP-3")


# -- DEL-3 / DEL-4: order ----------------------------------------------------------------------------


@pytest.mark.req("DEL-3")
def test_publisher_order_violation_fails():
    h = subscribed().pub("e1", 2).pub("e2", 2.2).recv("c1", "e2", 2.25).recv("c1", "e1", 2.3).close("c1", 20)
    fails(h.check(), "DEL-3", "reorder")


@pytest.mark.req("DEL-3")
def test_concurrent_publishes_may_arrive_in_either_order():
    h = subscribed().pub("e1", 2, dt=0.5).pub("e2", 2.2).recv("c1", "e2", 2.35).recv("c1", "e1", 2.4)
    h.pub("e3", 3).recv("c1", "e3", 3.05)
    passes(h.close("c1", 20).check(), "DEL-3")


def _two_receivers_disagree() -> H:
    h = subscribed("c1").conn("c2", 0, node=N2).sub("c2", 1)
    h.pub("e1", 2, dt=0.5).pub("e2", 2.2)  # concurrent: publisher order does not decide
    h.recv("c1", "e1", 2.3).recv("c1", "e2", 2.35).recv("c2", "e2", 2.3).recv("c2", "e1", 2.35)
    return h.close("c1", 20).close("c2", 20)


@pytest.mark.req("DEL-4")
def test_connections_disagreeing_on_scope_order_fail_in_strict():
    r = _two_receivers_disagree().check(profile="strict")
    fails(r, "DEL-4", "reorder")


@pytest.mark.req("DEL-4")
def test_scope_order_is_not_checked_in_the_default_profile():
    r = _two_receivers_disagree().check()
    assert r.ok and r.verdicts["DEL-4"].status == "not checked"


@pytest.mark.req("DEL-4", "REP-1")
def test_scope_order_is_checked_for_rep1_when_resume_is_claimed():
    fails(_two_receivers_disagree().check(capabilities=RESUME), "REP-1", "reorder")


@pytest.mark.req("DEL-4")
def test_connections_agreeing_pass_in_strict():
    h = subscribed("c1").conn("c2", 0, node=N2).sub("c2", 1)
    h.pub("e1", 2, dt=0.5).pub("e2", 2.2)
    h.recv("c1", "e2", 2.3).recv("c1", "e1", 2.35).recv("c2", "e2", 2.3).recv("c2", "e1", 2.35)
    passes(h.close("c1", 20).close("c2", 20).check(profile="strict"), "DEL-4")


# -- DEL-5: after unsubscribe -------------------------------------------------------------------------


@pytest.mark.req("DEL-5", "AZ-4")
def test_event_published_after_unsubscribe_ack_fails():
    h = subscribed().unsub("c1", 3).pub("e1", 4).recv("c1", "e1", 4.05).close("c1", 20)
    r = h.check()
    fails(r, "DEL-5", "late_after_unsubscribe")
    assert r.verdicts["AZ-4"].status == "fail"


@pytest.mark.req("DEL-5")
def test_in_flight_event_after_unsubscribe_ack_passes():
    h = subscribed().pub("e1", 2.95).unsub("c1", 3).recv("c1", "e1", 3.05).close("c1", 20)
    passes(h.check(), "DEL-5")


# -- DEL-7: stale events (strict) ---------------------------------------------------------------------


@pytest.mark.req("DEL-7")
def test_stale_event_fails_only_in_strict():
    h = H().conn("c1", 0).pub("e1", 0.5).sub("c1", 2).recv("c1", "e1", 2.05).close("c1", 20)
    fails(h.check(profile="strict"), "DEL-7", "stale_event")
    r = h.check()
    assert r.ok and r.verdicts["DEL-7"].status == "not checked"


@pytest.mark.req("DEL-7")
def test_event_acknowledged_after_the_subscribe_is_not_stale():
    h = H().pub("e0", 0.1).conn("c1", 0).pub("e1", 1.9, dt=0.5).sub("c1", 2).recv("c1", "e1", 2.45)
    passes(h.close("c1", 20).check(profile="strict"), "DEL-7")


# -- AZ-4 / EV-1: leaks ------------------------------------------------------------------------------


@pytest.mark.req("AZ-4", "REP-7")
def test_leak_after_subscribe_error_fails():
    h = H().conn("c1", 0).pub("e0", 0.5)
    h.sub("c1", 1, since=h.pos["e0"], answer="error", error="forbidden").pub("e1", 2)
    h.recv("c1", "e1", 2.05)
    fails(h.close("c1", 20).check(capabilities=RESUME), "AZ-4", "leak")


@pytest.mark.req("AZ-4", "REP-7")
def test_denied_subscribe_with_nothing_received_passes():
    h = H().conn("c1", 0).pub("e0", 0.5)
    h.sub("c1", 1, since=h.pos["e0"], answer="error", error="forbidden").pub("e1", 2)
    passes(h.close("c1", 20).check(capabilities=RESUME), "AZ-4")


@pytest.mark.req("AZ-4")
def test_event_of_a_scope_never_asked_for_is_a_leak():
    h = H().conn("c1", 0).pub("e1", 1).recv("c1", "e1", 1.05).close("c1", 20)
    fails(h.check(), "AZ-4", "leak")


@pytest.mark.req("AZ-4", "SUB-1")
def test_another_workspaces_event_is_a_leak_even_if_acked():
    h = H().conn("c1", 0).sub("c1", 1, scope="workspace", id="ws-b").pub("e1", 2, scope="workspace", id="ws-b")
    fails(h.recv("c1", "e1", 2.05).close("c1", 20).check(), "AZ-4", "leak")


@pytest.mark.req("EV-1")
def test_exclude_workspace_leak_fails():
    h = H().conn("ca", 0, ws="ws-a").conn("cb", 0, ws="ws-b").pub("u1", 1, scope="user", id="alice", excl="ws-a")
    h.recv("cb", "u1", 1.05).recv("ca", "u1", 1.06).close("ca", 20).close("cb", 20)
    fails(h.check(), "EV-1", "leak")


@pytest.mark.req("EV-1")
def test_exclude_workspace_respected_passes():
    h = H().conn("ca", 0, ws="ws-a").conn("cb", 0, ws="ws-b").pub("u1", 1, scope="user", id="alice", excl="ws-a")
    h.recv("cb", "u1", 1.05).close("ca", 20).close("cb", 20)
    passes(h.check(), "EV-1", "DEL-1")


# -- EV-2: frames -------------------------------------------------------------------------------------


@pytest.mark.req("EV-2")
def test_changed_field_fails():
    h = subscribed().pub("e1", 2).recv("c1", "e1", 2.05, payload={"e": "other"}).close("c1", 20)
    fails(h.check(), "EV-2", "field_mismatch")


@pytest.mark.req("EV-2")
def test_wrong_scope_id_fails_and_pos_must_match_the_publish():
    h = subscribed().pub("e1", 2).recv("c1", "e1", 2.05, scope_id="task-2").close("c1", 20)
    fails(h.check(capabilities=RESUME), "EV-2", "field_mismatch")
    h = subscribed().pub("e1", 2).recv("c1", "e1", 2.05, pos="elsewhere").close("c1", 20)
    fails(h.check(capabilities=RESUME), "EV-2", "field_mismatch")


@pytest.mark.req("EV-2")
def test_exact_frame_passes():
    passes(subscribed().pub("e1", 2).recv("c1", "e1", 2.05).close("c1", 20).check(capabilities=RESUME),
           "EV-2", "REP-1")


# -- REP ----------------------------------------------------------------------------------------------


@pytest.mark.req("REP-1")
def test_missing_pos_fails_when_resume_is_claimed():
    h = subscribed().pub("e1", 2)
    h.w.recv("c1", {k: v for k, v in h.frame("e1").items() if k != "pos"}, t=2.05)
    h.close("c1", 20)
    fails(h.check(capabilities=RESUME), "REP-1", "field_mismatch")
    r = h.check()
    assert r.ok and r.verdicts["REP-1"].status == "not claimed"


@pytest.mark.req("REP-1", "REP-2", "REP-3", "REP-4")
def test_without_resume_capability_rep_is_not_claimed():
    r = subscribed().pub("e1", 2).recv("c1", "e1", 2.05).close("c1", 20).check(capabilities=[])
    for req in ("REP-1", "REP-2", "REP-3", "REP-4"):
        assert r.verdicts[req].status == "not claimed"


@pytest.mark.req("REP-2")
def test_resume_ack_without_recovered_fails():
    h = H().conn("c1", 0).pub("e0", 0.5).sub("c1", 1, since="task:task-1@e0").close("c1", 20)
    fails(h.check(capabilities=RESUME), "REP-2", "missing_recovered_flag")


@pytest.mark.req("REP-2")
def test_plain_ack_with_recovered_fails():
    h = H().conn("c1", 0).sub("c1", 1, recovered=False).close("c1", 20)
    fails(h.check(capabilities=RESUME), "REP-2", "field_mismatch")


@pytest.mark.req("REP-2")
def test_acks_with_the_right_flags_pass():
    h = H().conn("c1", 0).pub("e0", 0.5).sub("c1", 1, since="task:task-1@e0", recovered=True)
    h.sub("c1", 2, scope="chat", id="chat-1").close("c1", 20)
    passes(h.check(capabilities=RESUME), "REP-2")


@pytest.mark.req("REP-2")
def test_replayed_frame_before_the_ack_fails():
    h = H().conn("c1", 0).pub("e0", 0.5).pub("e1", 0.7)
    h.w.subscribe_invoke("c1", "task", T, since=h.pos["e0"], t=1)
    h.recv("c1", "e1", 1.005)
    h.w.subscribe_ok("c1", "task", T, "ack", None, recovered=True, t=1.01)
    fails(h.close("c1", 20).check(capabilities=RESUME), "REP-2", "replay_out_of_order")


def _away_and_back() -> H:
    """c1 received e1 and closed; e2, e3 published while away; c2 (another node) resumes from
    e1's pos at t=5 and is answered at 5.01; e4 is published live at 6."""
    h = subscribed("c1").pub("e1", 2).recv("c1", "e1", 2.05).close("c1", 2.5)
    h.pub("e2", 3).pub("e3", 3.5).conn("c2", 4, node=N2)
    h.sub("c2", 5, since=h.pos["e1"], recovered=True).pub("e4", 6)
    return h


@pytest.mark.req("REP-3", "NODE-2")
def test_lying_recovered_fails():
    h = _away_and_back().recv("c2", "e3", 5.02).recv("c2", "e4", 6.05).close("c2", 20)
    r = h.check(capabilities=RESUME)
    fails(r, "REP-3", "lying_recovered")
    assert r.verdicts["REP-3"].witnesses[0].event_id == "e2"


@pytest.mark.req("REP-3", "NODE-2")
def test_honest_recovery_passes():
    h = _away_and_back().recv("c2", "e2", 5.02).recv("c2", "e3", 5.03).recv("c2", "e4", 6.05).close("c2", 20)
    passes(h.check(capabilities=RESUME, profile="strict"), "REP-3", "REP-1", "DEL-1", "DEL-3")


@pytest.mark.req("REP-3")
def test_replay_out_of_order_fails():
    h = _away_and_back().recv("c2", "e2", 5.02).recv("c2", "e4", 6.05).recv("c2", "e3", 6.06).close("c2", 20)
    fails(h.check(capabilities=RESUME), "REP-3", "replay_out_of_order")


@pytest.mark.req("REP-3")
def test_replaying_the_since_event_itself_fails():
    h = _away_and_back().recv("c2", "e1", 5.015).recv("c2", "e2", 5.02).recv("c2", "e3", 5.03)
    h.recv("c2", "e4", 6.05).close("c2", 20)
    fails(h.check(capabilities=RESUME), "REP-3", "stale_event")


@pytest.mark.req("REP-3")
def test_unknown_since_is_no_evidence():
    h = H().conn("c1", 0).sub("c1", 1, since="no-such-pos", recovered=True).close("c1", 20)
    r = h.check(capabilities=RESUME)
    assert r.ok and r.verdicts["REP-3"].status == "no evidence"


def _away_and_back_false() -> H:
    h = subscribed("c1").pub("e1", 2).recv("c1", "e1", 2.05).close("c1", 2.5)
    h.pub("e2", 3).conn("c2", 4, node=N2).sub("c2", 5, since=h.pos["e1"], recovered=False).pub("e4", 6)
    return h


@pytest.mark.req("REP-4")
def test_replay_after_recovered_false_fails():
    h = _away_and_back_false().recv("c2", "e2", 5.02).recv("c2", "e4", 6.05).close("c2", 20)
    fails(h.check(capabilities=RESUME), "REP-4", "replay_after_false")


@pytest.mark.req("REP-4")
def test_recovered_false_with_live_delivery_only_passes():
    h = _away_and_back_false().recv("c2", "e4", 6.05).close("c2", 20)
    passes(h.check(capabilities=RESUME), "REP-4", "DEL-1")


@pytest.mark.req("REP-4")
def test_recovered_false_on_a_held_scope_allows_in_flight_frames():
    h = subscribed().pub("e1", 2).recv("c1", "e1", 2.05).pub("e2", 2.9, dt=0.05)
    h.sub("c1", 3, since=h.pos["e1"], recovered=False).recv("c1", "e2", 3.02).close("c1", 20)
    passes(h.check(capabilities=RESUME), "REP-4")


# -- NODE-1 -------------------------------------------------------------------------------------------


@pytest.mark.req("NODE-1", "DEL-1")
def test_cross_node_loss_fails_node1_too():
    h = subscribed(node=N2).pub("e1", 2, node=N1).close("c1", 20)
    r = h.check()
    fails(r, "DEL-1", "loss")
    fails(r, "NODE-1", "loss")
    assert "NODE-1" in r.verdicts["DEL-1"].witnesses[0].also


@pytest.mark.req("NODE-1", "DEL-1")
def test_same_node_loss_does_not_fail_node1():
    r = subscribed(node=N1).pub("e1", 2, node=N1).close("c1", 20).check()
    fails(r, "DEL-1", "loss")
    assert r.verdicts["NODE-1"].status != "fail"


@pytest.mark.req("NODE-1")
def test_cross_node_delivery_passes_node1():
    h = subscribed(node=N2).pub("e1", 2, node=N1).recv("c1", "e1", 2.05).close("c1", 20)
    passes(h.check(), "NODE-1")


@pytest.mark.req("NODE-1", "REP-1")
def test_unclaimed_rep_anomaly_across_nodes_does_not_fail_node1():
    h = subscribed(node=N2).pub("e1", 2, node=N1)
    h.w.recv("c1", {k: v for k, v in h.frame("e1").items() if k != "pos"}, t=2.05)
    r = h.close("c1", 20).check()
    passes(r, "NODE-1")


# -- the report ----------------------------------------------------------------------------------------


def test_report_has_every_requirement_and_bounded_witnesses():
    h = subscribed()
    for k in range(12):
        h.pub(f"e{k}", 2 + k * 0.2)
    r = h.close("c1", 30).check(max_witnesses=5)
    assert list(r.verdicts) == list(CHECKER_IDS)
    v = r.verdicts["DEL-1"]
    assert v.status == "fail" and v.violations == 12 and len(v.witnesses) == 5
    assert r.counts["checked_events"] == 12 and r.counts["deliveries"] == 0
    json.dumps(r.to_dict())
    assert "DEL-1" in r.summary()


def test_meta_records_supply_capabilities_and_liveness():
    h = H()
    h.w.meta(capabilities=["resume"], liveness_s=20, profile="strict")
    h.conn("c1", 0).sub("c1", 1).pub("e1", 2).close("c1", 15)  # 15 < 2.1 + 20: not yet due
    r = h.check()
    assert r.ok and r.profile == "strict" and r.capabilities == ("resume",)
    assert r.verdicts["REP-1"].status != "not claimed"


# -- the history format ----------------------------------------------------------------------------------


def test_history_writer_round_trip(tmp_path):
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, process="rec-1") as w:
        w.meta(capabilities=["resume"], seed=7)
        w.connect_invoke("c1", N1, "alice", "ws-a", "token", t=1.0)
        w.connect_ok("c1", t=1.1)
        w.subscribe_invoke("c1", "task", T, since="p-1", t=1.2)
        w.subscribe_ok("c1", "task", T, "ack", recovered=True, t=1.3)
        w.publish_invoke(N1, "task", T, "e1", {"type": "x", "event_id": "e1"}, t=2.0)
        w.recv("c1", {"type": "x", "event_id": "e1", "scope": "task", "scope_id": T, "pos": "p-2"}, t=2.05)
        w.publish_ok("e1", "p-2", t=2.1)
        w.publish_fail("e2", 503, "relay unavailable", t=2.2)
        w.publish_info("e3", t=2.3)
        w.pause("c1", t=2.4)
        w.resume("c1", t=2.5)
        w.unsubscribe_invoke("c1", "task", T, t=2.6)
        w.unsubscribe_ok("c1", "task", T, t=2.7)
        w.closed("c1", "server", 1008, t=3.0)
        w.write({"type": "recv", "conn": "c1", "frame": {"event_id": "e1"}})  # t from the clock
    recs = list(read_history(path))
    assert len(recs) == w.lines == 16
    assert all(r["p"] == "rec-1" for r in recs)
    assert recs[0] == {"type": "meta", "p": "rec-1", "capabilities": ["resume"], "seed": 7}
    assert recs[3]["since"] == "p-1"
    assert recs[4]["recovered"] is True and recs[4]["answer"] == "ack"
    assert recs[7] == {"t": 2.1, "p": "rec-1", "type": "ok", "f": "publish", "event_id": "e1", "pos": "p-2"}
    assert isinstance(recs[-1]["t"], float)
    assert all(validate(r) == [] for r in recs), [validate(r) for r in recs]
    mem = HistoryWriter(process="rec-1")
    mem.publish_ok("e1", "p-2", t=2.1)
    assert mem.records == [recs[7]]


def test_plain_subscribe_records_have_no_since_or_recovered(tmp_path):
    w = HistoryWriter()
    w.subscribe_invoke("c1", "task", T, t=1)
    w.subscribe_ok("c1", "task", T, t=1.1)
    assert "since" not in w.records[0] and "recovered" not in w.records[1]


def test_read_history_drops_a_truncated_last_line_only(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text('{"t":1,"p":"a","type":"pause","conn":"c"}\n\n{"t":2,"p":"a","type":"res')
    assert [r["t"] for r in read_history(path)] == [1]
    path.write_text('{"t":1,"p":"a","type":"pause","conn":"c"}\nnot json\n')
    with pytest.raises(ValueError, match=":2:"):
        list(read_history(path))


def test_merge_histories_orders_by_t_and_keeps_each_files_order(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with HistoryWriter(a, process="a") as w:
        w.meta(seed=1)
        for t in (1, 3, 3, 5):
            w.pause("ca", t=t)
    with HistoryWriter(b, process="b") as w:
        for t in (2, 3, 4):
            w.pause("cb", t=t)
    merged = list(merge_histories(a, b))
    assert merged[0]["type"] == "meta"
    assert [(r["p"], r["t"]) for r in merged[1:]] == [("a", 1), ("b", 2), ("a", 3), ("a", 3), ("b", 3),
                                                      ("b", 4), ("a", 5)]


def test_validate_names_the_problem():
    assert validate({"t": 1, "p": "x", "type": "invoke", "f": "publish", "event_id": "e"})
    assert validate({"t": 1, "p": "x", "type": "close", "conn": "c", "by": "nobody"})
    assert validate({"type": "meta", "seed": 1}) == []


# -- faults in the history: what a fault makes impossible is excused, and the witness says so ------


def _stalled(h: H, fault: str, start: float, end: float, nodes=(N1,), target: str = "node-1") -> H:
    h.w.fault(fault, "start", target, list(nodes), t=start)
    h.w.fault(fault, "end", target, list(nodes), t=end)
    return h


@pytest.mark.req("DEL-1")
@pytest.mark.parametrize("fault", ["pause_node", "link_cut"])
def test_a_frozen_node_is_not_owed_deliveries_until_it_can_have_made_them(fault):
    # e1 is due by t=7.1; the node is frozen from 2.5 to 8: it cannot deliver before it is thawed,
    # and the connection closes at 9, before the deadline moved past the fault
    plain = subscribed().pub("e1", 2).close("c1", 9)
    fails(plain.check(), "DEL-1", "loss")
    stalled = _stalled(subscribed().pub("e1", 2), fault, 2.5, 8.0).close("c1", 9)
    r = stalled.check()
    assert r.verdicts["DEL-1"].status != "fail", r.summary()
    assert r.counts["excused_by_fault"] == 1


@pytest.mark.req("DEL-1")
def test_a_fault_on_another_node_excuses_nothing_and_the_witness_names_the_faults_on_its_own_node():
    other = _stalled(subscribed().pub("e1", 2), "pause_node", 2.5, 8.0, nodes=(N2,), target="node-2").close("c1", 9)
    fails(other.check(), "DEL-1", "loss")
    # still lost long after the fault ended: the witness says the fault was active meanwhile
    late = _stalled(subscribed().pub("e1", 2), "pause_node", 2.5, 4.0).close("c1", 30)
    r = late.check()
    fails(r, "DEL-1", "loss")
    assert "pause_node on node-1" in r.verdicts["DEL-1"].witnesses[0].explanation


@pytest.mark.req("DEL-1", "NODE-3")
def test_events_stored_just_before_a_store_restart_may_be_lost_with_it():
    h = _stalled(subscribed().pub("e1", 2).pub("e2", 3.5), "restart_redis", 3.0, 3.2, target="redis")
    r = h.recv("c1", "e2", 3.8).close("c1", 30).check()
    assert r.verdicts["DEL-1"].status == "pass", r.summary()  # e1: stored, not yet due, gone with the store
    assert r.counts["excused_by_fault"] == 1
    after = _stalled(subscribed().pub("e2", 3.5), "restart_redis", 3.0, 3.2, target="redis").close("c1", 30)
    fails(after.check(), "DEL-1", "loss")  # published after the restart: owed


def test_fault_records_round_trip_and_validate(tmp_path):
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, process="nemesis") as w:
        w.fault("pause_node", "start", "node-2", [N2], t=1.0)
        w.fault("pause_node", "end", "node-2", [N2], t=2.0)
    recs = list(read_history(path))
    assert [validate(r) for r in recs] == [[], []]
    assert [(r["fault"], r["phase"], r["nodes"]) for r in recs] == [("pause_node", "start", [N2]),
                                                                   ("pause_node", "end", [N2])]
    assert validate({"t": 1.0, "p": "x", "type": "fault", "fault": "kill_node", "phase": "begin", "target": "n",
                     "nodes": []})


def test_merge_files_orders_by_t_and_drops_a_truncated_last_line(tmp_path):
    """The simulator merges its recorders' files with the same reader the checker uses: a worker
    killed mid-write leaves a truncated last line, which is dropped, not fatal."""
    from conformance.history import merge_files

    a, b, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "out.jsonl"
    a.write_text('{"t":1,"p":"a","type":"pause","conn":"c1"}\n{"t":3,"p":"a","type":"resume","conn":"c1"}\n')
    b.write_text('{"t":2,"p":"b","type":"pause","conn":"c2"}\n{"t":4,"p":"b","type":"res')
    assert merge_files([a, b, tmp_path / "missing.jsonl"], out) == 3
    assert [r["t"] for r in read_history(out)] == [1, 2, 3]

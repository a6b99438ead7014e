"""scenarios.analysis: the simulator's figures from a hand-made history (the verdicts are the
checker's and tested there)."""

from __future__ import annotations

import pytest

from scenarios.analysis import readers_cut, summarize

W, U, N = "ws-1", "user-1", "http://node-1"


def _publish(eid: str, t: float, ok: bool = True) -> list[dict]:
    recs = [{"t": t, "type": "invoke", "f": "publish", "scope": "workspace", "id": W, "event_id": eid,
             "frame": {"type": "sim:event"}}]
    if ok:
        recs.append({"t": t + 0.01, "type": "ok", "f": "publish", "event_id": eid, "pos": f"{eid}-pos"})
    return recs


def _history() -> list[dict]:
    return [
        {"t": 9.0, "type": "invoke", "f": "connect", "conn": "c.0", "node": N, "user": U, "workspace": W},
        {"t": 9.5, "type": "ok", "f": "connect", "conn": "c.0"},
        *_publish("e1", 10.0),
        {"t": 10.02, "type": "recv", "conn": "c.0", "frame": {"event_id": "e1"}},
        {"t": 10.03, "type": "recv", "conn": "c.0", "frame": {"event_id": "e1"}},  # a duplicate
        {"t": 11.0, "type": "close", "conn": "c.0", "by": "client"},
        *_publish("e2", 11.5),  # missed while disconnected
        {"t": 12.0, "type": "invoke", "f": "connect", "conn": "c.1", "node": N, "user": U, "workspace": W},
        {"t": 12.5, "type": "ok", "f": "connect", "conn": "c.1"},
        {"t": 12.6, "type": "invoke", "f": "subscribe", "conn": "c.1", "scope": "workspace", "id": W, "since": "e1-pos"},
        {"t": 12.7, "type": "ok", "f": "subscribe", "conn": "c.1", "scope": "workspace", "id": W, "answer": "ack",
         "recovered": True},
        {"t": 12.8, "type": "recv", "conn": "c.1", "frame": {"event_id": "e2"}},
        *_publish("e3", 13.0),  # acknowledged, never delivered
        *_publish("e4", 13.5, ok=False),  # no outcome recorded: not expected
    ]


def test_delivery_latency_and_resume_figures():
    summary, series = summarize(iter(_history()), t0=9.0, publish_end=20.0, node_names={N: "node-1"}, windows=[])
    assert (summary["expected_deliveries"], summary["delivered"], summary["lost"]) == (3, 2, 1)
    assert summary["delivery_ratio"] == pytest.approx(2 / 3, abs=1e-6)
    assert summary["duplicated"] == 1
    assert summary["published"] == {"invoked": 4, "acknowledged": 3, "failed": 0, "indeterminate": 0}
    assert summary["latency_ms"]["p50"] == pytest.approx(20.0) and summary["latency_ms"]["max"] == pytest.approx(1300.0)
    assert summary["resumes"] == {"attempted": 1, "recovered": 1, "not_recovered": 0, "failed": 0}
    # replay: from the resume request (12.6) to the missed frame (12.8); catch-up: from the close (11.0)
    assert summary["replay_latency_ms"]["p99"] == pytest.approx(200.0)
    assert summary["catch_up_ms"]["p99"] == pytest.approx(1800.0)
    assert summary["per_node"]["node-1"]["deliveries"] == 2
    assert series["resumes"] == [[3.7, "recovered"]]


def test_events_published_after_the_publish_window_are_not_expected():
    summary, _ = summarize(iter(_history()), t0=9.0, publish_end=12.9, node_names={N: "node-1"}, windows=[])
    assert (summary["expected_deliveries"], summary["lost"]) == (2, 0) and summary["delivery_ratio"] == 1.0


def test_without_resume_a_client_is_owed_only_what_was_published_while_it_was_connected():
    # e2 was published while c.0 was closed and before c.1 connected: only resume could bring it back
    summary, _ = summarize(iter(_history()), t0=9.0, publish_end=20.0, node_names={N: "node-1"}, windows=[],
                           resume=False)
    assert (summary["expected_deliveries"], summary["delivered"], summary["lost"]) == (1, 0, 1)  # e3 only


def test_readers_cut_counts_only_server_closes_of_reading_connections_outside_node_faults():
    n1, n2 = "http://n1", "http://n2"

    def connect(conn, node, t=0.0):
        return {"t": t, "p": "w", "type": "invoke", "f": "connect", "conn": conn, "node": node}
    records = [
        connect("reading", n1), connect("paused", n1), connect("on-killed-node", n2), connect("left", n1),
        {"t": 1.0, "p": "w", "type": "pause", "conn": "paused"},
        {"t": 2.0, "p": "publisher", "type": "fault", "fault": "kill_node", "phase": "start", "target": "node-2", "nodes": [n2]},
        {"t": 2.5, "p": "w", "type": "close", "conn": "on-killed-node", "by": "server", "code": 1006},
        {"t": 3.0, "p": "publisher", "type": "fault", "fault": "kill_node", "phase": "end", "target": "node-2", "nodes": [n2]},
        {"t": 4.0, "p": "w", "type": "close", "conn": "paused", "by": "server", "code": 1013},
        {"t": 4.0, "p": "w", "type": "close", "conn": "left", "by": "client", "code": 1000},
        {"t": 5.0, "p": "w", "type": "close", "conn": "reading", "by": "server", "code": 1013},
    ]
    assert readers_cut(records) == {"count": 1, "codes": {"1013": 1}, "first": "reading"}

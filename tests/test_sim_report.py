"""scenarios.report: the self-contained report.html and the terminal summary, from synthetic inputs."""

from __future__ import annotations

import base64
import random
import re

from rich.console import Console

from scenarios.report import overall_verdict, print_summary, render_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG_RE = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _meta(**over) -> dict:
    meta = {"scenario": "kill-one-node", "description": "SIGKILL node n1 mid-run <and> restart it",
            "seed": 7, "implementation": "scopehub-reference 0.1.0", "node_command": None, "nodes": 2,
            "relay": "streams", "redis": "in-process fakeredis (not a real Redis)", "clients": 50,
            "duration_s": 20.0, "settle_s": 5.0, "started_at": "2025-01-01T00:00:00Z",
            "command": "scopehub sim scenarios/kill.toml"}
    meta.update(over)
    return meta


def _summary() -> dict:
    return {"published": {"invoked": 400, "acknowledged": 390, "failed": 4, "indeterminate": 6},
            "delivery_ratio": 0.9875, "expected_deliveries": 8000, "delivered": 7900, "lost": 100,
            "duplicated": 3, "reordered": 0, "leaked": 0,
            "latency_ms": {"p50": 2.1, "p95": 9.5, "p99": 40.2, "max": 1800.0},
            "resumes": {"attempted": 30, "recovered": 25, "not_recovered": 3, "failed": 2},
            "replay_latency_ms": {"p50": 4.0, "p99": 30.0, "max": 45.0},
            "per_node": {"n0": {"deliveries": 4000, "per_s": 200.0}, "n1": {"deliveries": 3900, "per_s": 195.0}},
            "history_lines": 20000, "checker_seconds": 0.42}


def _series() -> dict:
    rng = random.Random(1)
    latency = []
    for i in range(5000):
        t = i * 20 / 5000
        ms = rng.lognormvariate(0.7, 0.5) + (rng.uniform(200, 2000) if 8 <= t < 11 and rng.random() < 0.3 else 0)
        latency.append([t, ms])
    node_rate = {n: [[s, 0.0 if (n == "n1" and 8 <= s < 11) else 200.0 + rng.uniform(-10, 10)] for s in range(20)]
                 for n in ("n0", "n1")}
    resumes = [[8 + rng.uniform(0, 4), rng.choice(["recovered"] * 8 + ["not_recovered", "failed"])] for _ in range(30)]
    return {"latency": latency,
            "faults": [{"kind": "kill_node", "target": "n1", "start": 8.0, "end": 11.0},
                       {"kind": "restart_redis", "target": "redis", "start": 15.0, "end": 15.0}],
            "node_rate": node_rate, "publish_rate": [[s, 20.0] for s in range(20)], "resumes": resumes}


def _verdicts() -> list[dict]:
    witness = {"kind": "lost", "requirement": "DEL-1", "conn": "c12", "event_id": "01J0000000000000000000AAAA",
               "explanation": "event acknowledged at t=8.2 never delivered to c12", "also": ["NODE-1"],
               "excerpt": [{"line": 10, "type": "invoke", "op": "publish", "t": 8.1},
                           {"line": 11, "type": "ok", "op": "publish", "event_id": "01J0000000000000000000AAAA"}]}
    return [{"id": "DEL-1", "title": "every acknowledged event is delivered", "status": "fail",
             "reason": "[lost] 100 events", "witnesses": [witness] * 7, "violations": 100},
            {"id": "DEL-2", "title": "no duplicates", "status": "pass", "reason": "0 of 7900", "witnesses": []},
            {"id": "REP-2", "title": "resume replays the gap", "status": "no evidence", "reason": "no resumes",
             "witnesses": []},
            {"id": "AZ-4", "title": "no leak after unsubscribe", "status": "not claimed", "reason": "-",
             "witnesses": []},
            {"id": "CONVERGENCE", "title": "delivery ratio >= 99.9 %", "status": "fail", "reason": "98.75 %",
             "witnesses": []}]


def test_render_html_full(tmp_path):
    path = tmp_path / "report.html"
    render_html(str(path), meta=_meta(), summary=_summary(), series=_series(), verdicts=_verdicts())
    text = path.read_text(encoding="utf-8")
    assert "kill-one-node" in text
    assert "FAIL" in text
    for rid in ("DEL-1", "DEL-2", "REP-2", "AZ-4", "CONVERGENCE"):
        assert rid in text
    images = IMG_RE.findall(text)
    assert len(images) == 3
    for b64 in images:
        assert base64.b64decode(b64).startswith(PNG_MAGIC)
    # self-contained: no scripts, no fetched resources; user text is escaped
    assert "<script" not in text.lower()
    assert "http://" not in text and "https://" not in text
    assert "&lt;and&gt;" in text
    # witnesses: the explanation and excerpt records, at most five of the seven
    assert text.count("never delivered to c12") == 5
    assert "5 of 100 violation(s) shown" in text
    assert "also violates NODE-1" in text
    assert "&quot;op&quot;: &quot;publish&quot;" in text


def test_render_html_empty_and_null(tmp_path):
    path = tmp_path / "report.html"
    summary = {"published": {"invoked": 0, "acknowledged": 0, "failed": 0, "indeterminate": 0},
               "delivery_ratio": None, "expected_deliveries": 0, "delivered": 0, "lost": 0, "duplicated": 0,
               "reordered": 0, "leaked": 0, "latency_ms": {"p50": None, "p95": None, "p99": None, "max": None},
               "resumes": {"attempted": 0, "recovered": 0, "not_recovered": 0, "failed": 0},
               "replay_latency_ms": {"p50": None, "p99": None, "max": None}, "per_node": {},
               "history_lines": 0, "checker_seconds": 0.0}
    series = {"latency": [], "faults": [], "node_rate": {}, "publish_rate": [], "resumes": []}
    verdicts = [{"id": "DEL-1", "title": "t", "status": "no evidence", "reason": "nothing published",
                 "witnesses": []}]
    render_html(str(path), meta=_meta(node_command="./mynode --port {port}"), summary=summary, series=series,
                verdicts=verdicts)
    text = path.read_text(encoding="utf-8")
    assert "no data" in text and "DEL-1" in text and "PASS" in text
    assert IMG_RE.findall(text) == []
    # missing keys altogether, and a fault but no samples
    render_html(str(path), meta={}, summary={}, series={"faults": [{"kind": "link_cut", "target": "n0",
                                                                    "start": 1.0, "end": 2.0}]}, verdicts=[])
    assert "no data" in path.read_text(encoding="utf-8")


def test_render_html_degenerate_series(tmp_path):
    """One sample, zero and huge latencies, a node with no points: still three plots."""
    path = tmp_path / "report.html"
    series = {"latency": [[0.5, 0.0], [1.0, 5000.0], [1.2, None]], "faults": [],
              "node_rate": {"n0": [[0, 1.0]], "n1": []}, "publish_rate": [],
              "resumes": [[3.0, "failed"]]}
    render_html(str(path), meta=_meta(duration_s=None), summary={}, series=series, verdicts=_verdicts())
    assert len(IMG_RE.findall(path.read_text(encoding="utf-8"))) == 3


def test_print_summary():
    console = Console(record=True, width=160)
    print_summary(console, meta=_meta(), summary=_summary(), verdicts=_verdicts())
    out = console.export_text()
    for rid in ("DEL-1", "DEL-2", "REP-2", "AZ-4", "CONVERGENCE"):
        assert rid in out
    assert "98.750 %" in out and "FAIL" in out
    assert "[lost] 100 events" in out  # reasons are text, not rich markup


def test_print_summary_nulls():
    console = Console(record=True, width=160)
    print_summary(console, meta={}, summary={"latency_ms": {"p50": None, "p99": None}}, verdicts=[])
    out = console.export_text()
    assert "no data" in out and "PASS" in out


def test_overall_verdict():
    assert overall_verdict([]) == "PASS"
    assert overall_verdict([{"status": "pass"}, {"status": "no evidence"}]) == "PASS"
    assert overall_verdict([{"status": "pass"}, {"status": "fail"}]) == "FAIL"

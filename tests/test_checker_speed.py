"""The checker's benchmark path on a small size. Timing is the benchmark's business
(`python -m conformance.checker --bench 1000000`), so nothing here asserts a duration: these
tests only keep the synthetic history honest (a correct run checks clean, and every
requirement it is meant to exercise is exercised) and the entry point working."""

from __future__ import annotations

import pytest

from conformance.checker import check, main, synthetic_history
from conformance.history import HistoryWriter, read_history


@pytest.mark.req("DEL-1", "DEL-2", "DEL-3", "DEL-4", "DEL-5", "DEL-6", "DEL-7", "AZ-4", "EV-1", "EV-2",
                 "REP-1", "REP-2", "REP-3", "REP-4", "NODE-1")
def test_synthetic_correct_run_checks_clean_in_strict(tmp_path):
    records = synthetic_history(10_000, seed=11)
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, append=False, process="bench") as w:
        for r in records:
            if r["type"] == "meta":
                w.meta(**{k: v for k, v in r.items() if k not in ("type", "p")})
            else:
                w.write(r, r["t"])
    # a short liveness bound, so that most of this short history is due
    report = check(read_history(path), profile="strict", liveness_s=0.3)
    assert report.ok, report.summary()
    assert report.counts["records"] == len(records)
    statuses = {r: v.status for r, v in report.verdicts.items()}
    assert set(statuses.values()) == {"pass"}, statuses


@pytest.mark.req("DEL-1", "DEL-6", "REP-3")
def test_a_dropped_delivery_in_the_synthetic_run_is_found():
    records = synthetic_history(5_000, seed=2)
    i = next(k for k in range(len(records) // 4, len(records)) if records[k]["type"] == "recv")
    report = check(records[:i] + records[i + 1:], liveness_s=0.3)
    assert not report.ok
    assert {a.kind for a in report.anomalies()} & {"loss", "gap_on_open_connection", "lying_recovered"}


def test_bench_entry_point_prints_lines_per_second(capsys):
    assert main(["--bench", "3000"]) == 0
    out = capsys.readouterr().out
    assert "lines/s" in out and "checked" in out

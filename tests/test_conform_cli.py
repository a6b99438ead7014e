"""`scopehub conform` as a user runs it: exit codes that tell passed (0), failed (1) and could not
check (2) apart, reports that show errors apart from failures, one-line errors for mistakes,
and no traceback after a run, whatever the target did."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from xml.etree import ElementTree as ET

import pytest

from targets import TargetSpec

SCOPEHUB = [sys.executable, "-m", "scopehub", "conform"]
NOISE = ("Traceback", "Event loop is closed", "that handles pid", "Task was destroyed", "Unclosed")


def conform(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*SCOPEHUB, *args], capture_output=True, text=True, timeout=timeout,
                          env={"COLUMNS": "160", "PATH": "/usr/bin:/bin:/usr/local/bin"})


def clean(r: subprocess.CompletedProcess) -> None:
    out = r.stdout + r.stderr
    assert not [n for n in NOISE if n in out], out[-4000:]


def test_help_explains_every_flag():
    r = subprocess.run([*SCOPEHUB, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for flag in ("--node", "--node-command", "--nodes", "--control-token", "--profile", "--only", "--exclude",
                 "--seed", "--examples", "--shrink-budget", "--quick", "--no-explore", "--report"):
        assert flag in r.stdout
    text = " ".join(r.stdout.split())
    assert "Exit 0" in text and "1: some failed" in text and "2: the suite could not check" in text


@pytest.mark.parametrize("args, mentions", [
    (["--node", "http://127.0.0.1:9"], "--control-token"),
    (["--node", "ftp://x", "--control-token", "t"], "not an http(s) URL"),
    (["--node", "http://127.0.0.1:9", "--control-token", "t", "--only", "NOPE-1"], "unknown requirement"),
    (["--node-command", "mynode --port {port}", "--only", "HS-1", "--exclude", "HS"], "leave no requirement"),
    (["--node-command", "mynode"], "must contain {port}"),
    (["--node-command", "mynode --port {port} {nope}"], "unknown placeholder"),
    (["--node", "http://127.0.0.1:9", "--control-token", "t", "--shrink-budget", "0"], "--shrink-budget"),
])
def test_a_mistake_is_one_line_and_exit_2(args, mentions):
    r = conform(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert mentions in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    clean(r)


def test_an_unreachable_target_cannot_be_checked_exit_2():
    r = conform("--node", "http://127.0.0.1:9", "--control-token", "t", "--no-explore")
    assert r.returncode == 2 and "cannot test the target" in r.stdout and "unreachable" in r.stdout, r.stdout
    clean(r)


@pytest.mark.req("HS-1", "EV-2", "DEL-1")
def test_the_reference_passes_exit_0_with_reports_and_no_traceback(tmp_path):
    out = tmp_path / "report"
    r = conform("--node-command", "reference", "--nodes", "1", "--quick", "--examples", "1",
                "--only", "HS-1,EV-2,DEL-1", "--report", str(out))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    clean(r)
    doc = json.loads((out / "report.json").read_text())
    verdicts = {q["id"]: q["verdict"] for q in doc["requirements"]}
    assert verdicts == {"HS-1": "pass", "EV-2": "pass", "DEL-1": "pass"}, verdicts
    assert all(q["sentence"] for q in doc["requirements"]), "every verdict cites its requirement's sentence"
    suite = ET.parse(out / "junit.xml").getroot()
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0")
    assert "seed" in (out / "report.html").read_text()


@pytest.mark.req("EV-1")
def test_a_broken_target_fails_exit_1_and_junit_says_failure(tmp_path):
    broken = TargetSpec("broken", 1, script="broken_node.py --bug exclude-ignored").command()
    out = tmp_path / "report"
    r = conform("--node-command", broken, "--nodes", "1", "--quick", "--no-explore", "--only", "EV-1",
                "--report", str(out))
    assert r.returncode == 1, r.stdout[-4000:]
    clean(r)
    suite = ET.parse(out / "junit.xml").getroot()
    failing = [tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert failing and all(name.startswith("EV-1") for name in failing), failing


def test_checks_that_could_not_run_are_errors_exit_2_not_failures(tmp_path):
    """A node whose store is unreachable answers every publish 503 (NODE-3): the delivery cases
    cannot run. That is `error` (could not check), never the failure of a requirement."""
    node = (f"{shlex.quote(sys.executable)} -m scopehub serve --host {{host}} --port {{port}} --node-id {{name}} "
            "--control-token {token} --relay streams --redis redis://127.0.0.1:9")
    out = tmp_path / "report"
    r = conform("--node-command", node, "--nodes", "1", "--quick", "--no-explore", "--only", "HS-1,DEL-3",
                "--report", str(out))
    assert r.returncode == 2, r.stdout[-4000:]
    clean(r)
    doc = json.loads((out / "report.json").read_text())
    verdicts = {q["id"]: q["verdict"] for q in doc["requirements"]}
    assert verdicts["HS-1"] == "pass" and verdicts["DEL-3"] == "error", verdicts
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.get("failures") == "0" and int(suite.get("errors")) >= 1
    assert "could not publish" in (out / "report.html").read_text()


def test_an_exploration_that_cannot_rely_on_event_ids_is_not_run(tmp_path):
    """A target that replaces a given event_id fails EV-2 once, at the probe; the exploration,
    which attributes frames by the ids it gives, is not run and says it depends on EV-2, while
    the cases (which use the ids the publish answers) still judge DEL-3."""
    broken = TargetSpec("broken", 1, script="broken_node.py --bug event-id-replaced").command()
    out = tmp_path / "report"
    r = conform("--node-command", broken, "--nodes", "1", "--quick", "--examples", "1", "--only", "EV-2,DEL-3",
                "--report", str(out))
    assert r.returncode == 1, r.stdout[-4000:]
    clean(r)
    doc = json.loads((out / "report.json").read_text())
    verdicts = {q["id"]: (q["verdict"], q["reason"]) for q in doc["requirements"]}
    assert verdicts["EV-2"][0] == "fail"
    assert verdicts["DEL-3"][0] == "pass" and "exploration: not checked: depends on EV-2" in verdicts["DEL-3"][1], \
        verdicts
    assert "depends on EV-2" in doc["exploration"]["skipped"]


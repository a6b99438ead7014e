"""`scopehub fuzz`: the oracle owes what the contract says, the judge blames the right step, the
generation replays from its seed, broken targets are caught, and the reference is run through a
short fuzz (a long one with --slow, SCOPEHUB_FUZZ_FRAMES frames, 100,000 by default)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conformance.fuzz import gen, oracle
from conformance.fuzz.judge import MISSING, OUTSIDE, sequence
from conformance.fuzz.oracle import ConnView, Expect
from targets import TargetSpec

SCOPEHUB = [sys.executable, "-m", "scopehub", "fuzz"]
WS, USER, TASK = "0b6f2c1e-1111-4a4a-8b8b-000000000001", "0b6f2c1e-1111-4a4a-8b8b-000000000002", \
    "0b6f2c1e-1111-4a4a-8b8b-000000000003"
VIEW = ConnView(WS, USER, {"task": {TASK}, "chat": set()})


def fuzz(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*SCOPEHUB, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "160"})


def doc(d) -> bytes:
    return json.dumps(d).encode()


def owed(kind: str, data: bytes) -> Expect:
    return oracle.after_auth(kind, data, VIEW)


# -- the oracle ------------------------------------------------------------------------------------

@pytest.mark.req("IN-2", "IN-3")
def test_json_is_rfc_8259_not_python():
    assert owed("text", b'{"type":"ping"}').answer == "must"
    assert owed("text", b'{"type":"ping","x":NaN}').answer == "none"  # not JSON
    assert owed("text", b'{"type":"ping","x":-Infinity}').answer == "none"
    assert owed("binary", '{"type":"ping"}'.encode("utf-16")).answer == "none"  # JSON text is UTF-8
    assert owed("binary", '{"type":"ping"}'.encode("utf-32-le")).answer == "none"
    assert owed("binary", b'{"type":"ping"}').answer == "maybe"  # Multica reads binary frames; a target may not
    assert owed("binary", b'\xef\xbb\xbf{"type":"ping"}').answer == "none"  # a byte order mark is not JSON (IN-3)
    huge = owed("text", b'{"type":"ping","n":' + b"9" * 5000 + b"}")
    assert huge.answer == "maybe"  # valid JSON that RFC 8259 lets a parser refuse
    deep = owed("text", b'{"type":"ping","n":' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert deep.answer == "maybe" and deep.ok({"type": "pong"}) and not deep.ok({"type": "subscribe_ack"})


@pytest.mark.req("IN-3", "IN-4")
def test_what_closes_a_connection():
    assert owed("text", b'{"type":"ping","x":"\xed\xa0\x80"}').closes == {1007: "IN-3"}  # invalid UTF-8 text
    from conformance.rawws import ping_of
    assert not owed("text", ping_of(65536)).must_close and owed("text", ping_of(65536)).answer == "must"
    over = owed("text", ping_of(65537))
    assert over.must_close and over.closes == {1009: "IN-4"}


@pytest.mark.req("IN-1", "SUB-1", "SUB-2", "SUB-3", "SUB-4", "AZ-3", "REP-5")
def test_subscribe_answers():
    def sub(payload, kind="subscribe"):
        return owed("text", doc({"type": kind, "payload": payload}))

    assert sub({"scope": "task", "id": TASK}).ok({"type": "subscribe_ack", "payload": {"scope": "task", "id": TASK}})
    digits = TASK.replace("0", "\u0660")  # Arabic-Indic digits: int() takes them, a UUID does not (AZ-3)
    assert not sub({"scope": "task", "id": digits}).ok({"type": "subscribe_ack", "payload": {"scope": "task", "id": digits}})
    upper = sub({"scope": "task", "id": TASK.upper()})  # a UUID parser may accept it
    assert upper.ok({"type": "subscribe_ack", "payload": {"scope": "task", "id": TASK.upper()}})
    assert upper.ok({"type": "subscribe_error", "payload": {"scope": "task", "id": TASK.upper(), "error": "forbidden"}})
    lone = sub({"scope": "task", "id": "\ud800"})
    assert lone.ok({"type": "subscribe_error", "payload": {"scope": "task", "id": "\ud800", "error": "forbidden"}})
    assert lone.ok({"type": "subscribe_error", "payload": {"scope": "task", "id": "\ufffd", "error": "forbidden"}})
    assert lone.ok({"type": "subscribe_error", "payload": {"scope": "task", "id": "\ud800", "error": "invalid payload"}})
    assert not lone.ok({"type": "subscribe_ack", "payload": {"scope": "task", "id": "\ud800"}})
    assert sub({"scope": "\udfff", "id": "x"}, "unsubscribe").ok(  # IN-1: either way
        {"type": "unsubscribe_error", "payload": {"scope": "\udfff", "id": "x", "error": "invalid payload"}})
    assert not sub({"scope": "task", "id": TASK}, "unsubscribe").ok(
        {"type": "unsubscribe_error", "payload": {"scope": "task", "id": TASK, "error": "invalid payload"}})
    assert sub({"scope": "workspace", "id": "other"}).ok(
        {"type": "subscribe_error", "payload": {"scope": "workspace", "id": "other", "error": "forbidden"}, "x": 1})
    assert sub({"scope": "global", "id": "all"}).ok(
        {"type": "subscribe_error", "payload": {"scope": "global", "id": "all", "error": "unknown_scope"}})
    assert sub({"scope": 5, "id": TASK}).ok(
        {"type": "subscribe_error", "payload": {"scope": "", "id": TASK, "error": "invalid payload"}})
    assert sub({"scope": "task", "id": TASK, "since": 7}).ok(
        {"type": "subscribe_error", "payload": {"scope": "task", "id": TASK, "error": "invalid payload"}})
    plain = sub({"scope": "task", "id": TASK, "since": None})  # REP-2: no resume, no recovered field
    assert not plain.ok({"type": "subscribe_ack", "payload": {"scope": "task", "id": TASK, "recovered": False}})
    assert sub({"scope": "chat", "id": "x"}, "unsubscribe").ok(
        {"type": "unsubscribe_ack", "payload": {"scope": "chat", "id": "x"}})
    assert owed("text", doc({"type": "auth", "payload": {"token": "t"}})).answer == "none"  # after auth: unknown


@pytest.mark.req("HS-3", "HS-4")
def test_the_first_frame():
    def first(d, verdict="invalid token", kind="text"):
        return oracle.first_frame(kind, d if isinstance(d, bytes) else doc(d), lambda t: verdict)

    ok = first({"type": "auth", "payload": {"token": "good"}}, "ok")
    assert ok.auth_ok and ok.ok({"type": "auth_ack"})
    bad = first({"type": "auth", "payload": {"token": "x"}})
    assert bad.ok({"error": "invalid token"}) and not bad.ok({"error": "invalid claims"}) and bad.closes == {1008: "HS-3"}
    junk = first({"type": "ping"})
    assert junk.ok({"error": "expected auth message as first frame"}) and not junk.ok({"type": "pong"})
    utf16 = first('{"type":"auth","payload":{"token":"good"}}'.encode("utf-16"), "ok", kind="binary")
    assert utf16.ok({"error": "expected auth message as first frame"}) and not utf16.ok({"type": "auth_ack"})


# -- the judge -------------------------------------------------------------------------------------

PONG = {"type": "pong"}


def _ping() -> Expect:
    return Expect("must", "pong", ("IN-2",), lambda f: f.get("type") == "pong")


def test_the_judge_blames_the_step_that_was_answered_or_not():
    ignored = Expect("none", "no answer", ("IN-3",))
    assert sequence([_ping(), ignored, _ping()], [PONG, PONG], ended=False) is None
    kind, k, _, _ = sequence([ignored, _ping(), _ping()], [PONG, PONG, PONG], ended=False)
    assert (kind, k) == (OUTSIDE, 0)
    kind, k, _, _ = sequence([_ping(), _ping()], [PONG], ended=False)
    assert kind == MISSING
    assert sequence([_ping(), _ping()], [PONG], ended=True) is None  # the close is judged instead
    maybe = Expect("maybe", "pong or nothing", ("IN-3",), lambda f: f.get("type") == "pong")
    assert sequence([maybe, _ping()], [PONG], ended=False) is None
    assert sequence([maybe, _ping()], [PONG, PONG], ended=False) is None


# -- generation ------------------------------------------------------------------------------------

def test_a_seed_replays_the_same_sessions():
    assert gen.chunk(11, 0, 0) == gen.chunk(11, 0, 0)
    assert gen.chunk(11, 0, 0) != gen.chunk(12, 0, 0) and gen.chunk(11, 0, 0) != gen.chunk(11, 1, 0)


# -- the command -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, mentions", [
    (["--node", "http://127.0.0.1:9"], "--control-token"),
    (["--node", "ftp://x", "--control-token", "t"], "not an http(s) URL"),
    (["--node-command", "reference", "--frames", "0"], "--frames"),
    (["--node-command", "reference", "--time", "-1"], "--time"),
    (["--node-command", "mynode"], "must contain {port}"),
])
def test_a_mistake_is_one_line_and_exit_2(args, mentions):
    r = fuzz(*args)
    assert r.returncode == 2 and mentions in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_an_unreachable_target_is_exit_2():
    r = fuzz("--node", "http://127.0.0.1:9", "--control-token", "t", "--frames", "10")
    assert r.returncode == 2 and "cannot fuzz the target" in r.stdout and "unreachable" in r.stdout, r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def _run(tmp_path, redis_server, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "fuzz.json"
    r = fuzz("--redis", redis_server.url, "--out", str(out), *args)
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]
    return r, json.loads(out.read_text())


@pytest.mark.heavy
@pytest.mark.parametrize("bug, kinds, req", [
    ("ascii-ids", {"connection dropped", "traceback in a node's log"}, "SUB-2"),
    ("answer-unknown", {"answer outside the contract"}, "IN-3"),
])
def test_a_broken_target_is_caught(tmp_path, redis_server, bug, kinds, req):
    node = TargetSpec("broken", 1, script=f"broken_node.py --bug {bug}").command()
    r, report = _run(tmp_path, redis_server, "--node-command", node, "--nodes", "1", "--frames", "800",
                     "--connections", "8", "--seed", "7")
    assert r.returncode == 1, r.stdout[-3000:]
    assert kinds <= set(report["findings"]["counts"]), report["findings"]["counts"]
    assert report["verdicts"].get(req) == "fail", report["verdicts"]
    examples = [f for k in kinds for f in report["findings"]["examples"][k]]
    assert all(f["sent"] or f["received"] for f in examples)
    # a batch's finding names the frame that alone reproduces it
    assert any(f["culprits"] for f in examples), examples[:3]
    assert "canary loss" not in report["findings"]["counts"]
    assert "seed 7; replay: scopehub fuzz" in r.stdout


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """A short fuzz of a 2-node streams reference cluster on a redis-server of our own, once for
    the tests below."""
    from scopehub.redis_provision import RedisServer

    server = RedisServer()
    server.start()
    try:
        out = tmp_path_factory.mktemp("fuzz") / "fuzz.json"
        r = fuzz("--node-command", "reference", "--nodes", "2", "--relay", "streams", "--redis", server.url,
                 "--frames", os.environ.get("SCOPEHUB_FUZZ_SHORT", "3000"), "--seed", "1", "--out", str(out))
        assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]
        yield r, json.loads(out.read_text())
    finally:
        server.stop()


@pytest.mark.heavy
@pytest.mark.req("DEL-1", "DEL-2", "IN-2")
def test_hostile_traffic_costs_the_reference_canary_nothing(reference_run):
    """Whatever else the fuzz finds, the canary on the other node gets every event once, every
    node keeps answering, and no connection sees another scope's events."""
    r, report = reference_run
    counts = report["findings"]["counts"]
    for kind in ("canary loss", "canary duplicate", "canary closed", "no answer", "node unreachable",
                 "event of a scope not held"):
        assert kind not in counts, report["findings"]["examples"][kind][0]
    assert report["canary"]["acknowledged"] > 0 and report["canary"]["received"] >= report["canary"]["acknowledged"]
    assert report["frames"] == int(os.environ.get("SCOPEHUB_FUZZ_SHORT", "3000"))


@pytest.mark.heavy
def test_a_short_fuzz_of_the_reference_finds_nothing(reference_run):
    r, report = reference_run
    assert report["findings"]["total"] == 0, (report["findings"]["counts"], r.stdout[-4000:])


@pytest.mark.heavy
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_long_fuzz_of_the_reference_finds_nothing(tmp_path, redis_server):
    frames = os.environ.get("SCOPEHUB_FUZZ_FRAMES", "100000")
    r, report = _run(tmp_path, redis_server, "--node-command", "reference", "--nodes", "2", "--relay", "streams",
                     "--frames", frames)
    assert report["frames"] == int(frames)
    assert report["findings"]["total"] == 0, (report["findings"]["counts"], r.stdout[-4000:])

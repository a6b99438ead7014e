"""Renders verdicts: a terminal table, report.json, JUnit XML and report.html. Errors (a check
that could not run) are shown apart from failures everywhere: in JUnit as <error>, not
<failure>."""

from __future__ import annotations

import dataclasses
import html
import json
import os
from typing import Any
from xml.etree import ElementTree as ET

from rich.console import Console
from rich.table import Table

from .verdict import Outcome, Verdict

STYLE = {Outcome.PASS: "green", Outcome.FAIL: "bold red", Outcome.ERROR: "bold magenta", Outcome.NOT_CLAIMED: "dim",
         Outcome.NOT_CHECKED: "yellow", Outcome.NO_EVIDENCE: "yellow"}


def plain(obj: Any) -> Any:
    """JSON-ready copy of results, anomalies and frames."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != "fn"}
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [plain(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return repr(obj)


def summary(verdicts: dict[str, Verdict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in verdicts.values():
        counts[str(v.status)] = counts.get(str(v.status), 0) + 1
    return counts


def print_table(console: Console, verdicts: dict[str, Verdict], title: str) -> None:
    table = Table(title=title, show_lines=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("requirement")
    table.add_column("verdict", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for v in verdicts.values():
        table.add_row(v.id, v.title, f"[{STYLE.get(v.status, '')}]{v.status}[/]", v.reason)
    console.print(table)
    console.print("  ".join(f"[{STYLE.get(Outcome(k), '')}]{k}: {n}[/]" for k, n in sorted(summary(verdicts).items())))


def to_json(verdicts: dict[str, Verdict], meta: dict) -> dict:
    reqs = []
    for v in verdicts.values():
        reqs.append({
            "id": v.id, "title": v.title, "verdict": str(v.status), "reason": v.reason, "sentence": v.sentence,
            "skipped": list(v.skipped),
            "cases": [{"name": r.case.name, "title": r.case.title, "status": str(r.status),
                       "finding": str(r.findings[v.id].outcome), "reason": r.findings[v.id].reason,
                       "cites": r.case.cites.get(v.id, ""),
                       "expected": plain(r.findings[v.id].expected), "received": plain(r.findings[v.id].received),
                       "duration_s": round(r.duration_s, 3)} for r in v.cases],
            "anomalies": [a.to_dict() for a in v.witnesses],
            "seed": meta.get("seed"), "replay": meta.get("replay"),
        })
    return {**meta, "summary": summary(verdicts), "requirements": reqs}


def write(out_dir: str, verdicts: dict[str, Verdict], meta: dict) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    doc = to_json(verdicts, meta)
    paths = [os.path.join(out_dir, n) for n in ("report.json", "junit.xml", "report.html")]
    with open(paths[0], "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
    ET.ElementTree(_junit(verdicts)).write(paths[1], encoding="utf-8", xml_declaration=True)
    with open(paths[2], "w", encoding="utf-8") as f:
        f.write(_html(doc))
    return paths


def _junit(verdicts: dict[str, Verdict]) -> ET.Element:
    counts = summary(verdicts)
    failures, errors = counts.get(Outcome.FAIL, 0), counts.get(Outcome.ERROR, 0)
    suite = ET.Element("testsuite", name="scopehub conformance", tests=str(len(verdicts)), failures=str(failures),
                       errors=str(errors),
                       skipped=str(len(verdicts) - failures - errors - counts.get(Outcome.PASS, 0)))
    for v in verdicts.values():
        tc = ET.SubElement(suite, "testcase", classname=v.id.split("-")[0], name=f"{v.id} {v.title}")
        if v.status in (Outcome.FAIL, Outcome.ERROR):
            el = ET.SubElement(tc, "failure" if v.status == Outcome.FAIL else "error", message=v.reason)
            found = [(r.case.name, r.findings[v.id]) for r in v.cases if r.findings[v.id].outcome == v.status]
            el.text = "\n".join(f"{name}: {f.reason}\n  expected: {json.dumps(plain(f.expected))}"
                                f"\n  received: {json.dumps(plain(f.received))}" for name, f in found) or v.reason
            el.text += f"\n\n{v.id}: {v.sentence}"
        elif v.status != Outcome.PASS:
            ET.SubElement(tc, "skipped", message=f"{v.status}: {v.reason}")
    return suite


def _detail(r: dict) -> str:
    e = html.escape
    parts = [f'<h3 id="{e(r["id"])}">{e(r["id"])} — {e(r["title"])}: {e(r["verdict"])}</h3>'
             f'<blockquote>{e(r.get("sentence", ""))}</blockquote><p>{e(r["reason"])}</p>']
    for c in r["cases"]:
        if c["finding"] == r["verdict"]:
            cite = f'<br><i>enforces: “{e(c["cites"])}”</i>' if c.get("cites") else ""
            parts.append(f'<h4>case {e(c["name"])}: {e(c["title"])}</h4><p>{e(c["reason"])}{cite}</p>'
                         f'<div class="pair"><div><b>expected</b><pre>{e(json.dumps(c["expected"], indent=2))}</pre></div>'
                         f'<div><b>received</b><pre>{e(json.dumps(c["received"], indent=2))}</pre></div></div>')
    for a in r["anomalies"][:5]:
        parts.append(f'<h4>{e(str(a.get("kind", "anomaly")))} on {e(str(a.get("conn", "")))}</h4>'
                     f'<p>{e(str(a.get("explanation", "")))}</p>'
                     f'<pre>{e(chr(10).join(json.dumps(x) for x in a.get("excerpt", []) or []))}</pre>')
    if r.get("replay") and r["anomalies"]:
        parts.append(f'<p>replay: <code>{e(r["replay"])}</code></p>')
    return "".join(parts)


def _exploration(x: dict, replay: str | None) -> str:
    """The exploration's run: its failing steps (the shortest found), seed and replay command."""
    if not x:
        return ""
    e = html.escape
    head = (f"<p>seed {e(str(x.get('seed')))} · {e(str(x.get('runs', 0)))} runs · {e(str(x.get('seconds', '?')))} s"
            f" · {e(str(x.get('history_lines', 0)))} history lines</p>")
    if x.get("skipped"):
        return f"<h2>Exploration</h2><p>not run: {e(x['skipped'])}</p>"
    if not x.get("steps"):
        return f"<h2>Exploration</h2>{head}<p>no failing run</p>"
    steps = "".join(f"<li><code>{e(s)}</code></li>" for s in x["steps"])
    return (f"<h2>Exploration</h2>{head}<p>{e(str(x.get('failure') or ''))}</p>"
            f"<p>shortest failing run found ({len(x['steps'])} steps):</p><ol>{steps}</ol>"
            f"<p>replay: <code>{e(replay or x.get('replay') or '')}</code></p>")


def _html(doc: dict) -> str:
    e = html.escape
    rows = []
    details = {Outcome.FAIL: [], Outcome.ERROR: []}
    for r in doc["requirements"]:
        cls = r["verdict"].replace(" ", "-")
        rows.append(f'<tr class="{cls}"><td><a href="#{e(r["id"])}">{e(r["id"])}</a></td><td>{e(r["title"])}</td>'
                    f'<td class="v">{e(r["verdict"])}</td><td>{e(r["reason"])}</td></tr>')
        if r["verdict"] in details:
            details[Outcome(r["verdict"])].append(_detail(r))
    t = doc.get("target", {})
    counts = ", ".join(f"{k}: {n}" for k, n in sorted(doc["summary"].items()))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>scopehub conformance report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}}
tr.pass .v{{color:#080}}tr.fail .v{{color:#c00;font-weight:bold}}tr.error .v{{color:#a0a;font-weight:bold}}
tr.not-claimed,tr.not-checked,tr.no-evidence{{color:#888}}blockquote{{color:#444;border-left:3px solid #ccc;margin:0;padding-left:1em}}
pre{{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}}.pair{{display:flex;gap:1em}}.pair div{{flex:1;min-width:0}}</style>
</head><body><h1>scopehub conformance report</h1>
<p><b>target</b>: {e(str(t.get("implementation", "?")))} — {e(", ".join(t.get("urls", [])))}<br>
<b>capabilities</b>: {e(", ".join(t.get("capabilities", [])))}<br><b>profile</b>: {e(str(doc.get("profile")))}
 · <b>seed</b>: {e(str(doc.get("seed")))} · <b>command</b>: <code>{e(str(doc.get("command", "")))}</code><br>
<b>summary</b>: {e(counts)}</p>
<table><tr><th>ID</th><th>requirement</th><th>verdict</th><th>reason</th></tr>{"".join(rows)}</table>
<h2>Failures</h2>{"".join(details[Outcome.FAIL]) or "<p>none</p>"}{_exploration(doc.get("exploration") or {}, doc.get("replay"))}
<h2>Could not check (errors)</h2>{"".join(details[Outcome.ERROR]) or "<p>none</p>"}</body></html>"""

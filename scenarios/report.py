"""The simulator's output: one self-contained ``report.html`` and a terminal summary.

``render_html`` writes a single file with no JavaScript and no network resources: plain CSS,
and the three plots (latency, delivery rate per node, resume outcomes) embedded as base64 PNG,
drawn with matplotlib's Agg backend. ``print_summary`` prints the verdicts and the headline
figures as rich tables. Both take the same dicts the simulator writes to summary.json, and
both cope with empty series and null figures ("no data")."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter

import matplotlib

matplotlib.use("Agg")  # before pyplot: never a display, works in CI and over SSH

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

NO_DATA = "no data"
MAX_WITNESSES = 5
FIG_WIDTH_IN, DPI = 10.0, 100  # 1000 px wide

STATUS_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "not claimed": "#6e7781",
                  "not checked": "#6e7781", "no evidence": "#9a6700"}
RICH_STATUS = {"pass": "green", "fail": "bold red", "not claimed": "dim", "not checked": "dim",
               "no evidence": "yellow"}
RESUME_OUTCOMES = ("recovered", "not_recovered", "failed")
RESUME_COLOURS = {"recovered": "#2da44e", "not_recovered": "#d4a72c", "failed": "#cf222e"}
FAULT_PALETTE = ("#bc4c00", "#8250df", "#1b7c83", "#9a6700", "#bf3989", "#0550ae", "#116329", "#57606a")


# --- small helpers ------------------------------------------------------------------------------

def overall_verdict(verdicts: list[dict]) -> str:
    """"FAIL" when any requirement (or the CONVERGENCE pseudo-requirement) failed, else "PASS"."""
    return "FAIL" if any(v.get("status") == "fail" for v in verdicts) else "PASS"


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _fmt(v, fmt: str = "{:,}") -> str:
    return fmt.format(v) if _is_num(v) else NO_DATA


def _ms(v) -> str:
    return _fmt(v, "{:,.1f} ms")


def _pct(v) -> str:
    return _fmt(v * 100 if _is_num(v) else None, "{:.3f} %")


def _joined(parts: list[str], sep: str = " / ") -> str:
    """Several figures in one cell; a single "no data" when none is known."""
    return NO_DATA if all(p == NO_DATA for p in parts) else sep.join(parts)


def _points(pairs) -> tuple[np.ndarray, np.ndarray]:
    """[[t, v], ...] -> (t, v) arrays, dropping pairs with a missing or non-numeric value."""
    good = [(p[0], p[1]) for p in pairs or () if len(p) >= 2 and _is_num(p[0]) and _is_num(p[1])]
    if not good:
        return np.empty(0), np.empty(0)
    a = np.asarray(good, dtype=float)
    return a[:, 0], a[:, 1]


def _fig_to_base64(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fault_colours(faults: list[dict]) -> dict[str, str]:
    kinds = sorted({str(f.get("kind", "?")) for f in faults})
    return {k: FAULT_PALETTE[i % len(FAULT_PALETTE)] for i, k in enumerate(kinds)}


def _shade_faults(ax, faults: list[dict], *, label: bool = True) -> None:
    """Shade every fault window (a line for instantaneous faults) and, if ``label``, write its
    kind/target along the top, staggered so neighbouring labels do not overprint."""
    colours = _fault_colours(faults)
    trans = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for i, f in enumerate(sorted(faults, key=lambda f: f.get("start") or 0)):
        start = f.get("start")
        if not _is_num(start):
            continue
        end = f.get("end") if _is_num(f.get("end")) else start
        colour = colours[str(f.get("kind", "?"))]
        if end > start:
            ax.axvspan(start, end, color=colour, alpha=0.14, lw=0, zorder=0)
        else:
            ax.axvline(start, color=colour, lw=1.5, ls="--", zorder=0)
        if label:
            text = f"{f.get('kind', '?')} {f.get('target', '')}".strip()
            ax.text(start, 0.97 - 0.08 * (i % 3), " " + text, transform=trans, fontsize=8.5,
                    va="top", ha="left", color=colour, fontweight="bold", clip_on=True, zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})


def _headroom(ax, frac: float = 0.28) -> None:
    """Keep the top ``frac`` of the axes free of data, for the fault labels and the legend."""
    lo, hi = ax.get_ylim()
    if ax.get_yscale() == "log":
        llo, lhi = math.log10(lo), math.log10(hi)
        ax.set_ylim(lo, 10 ** (lhi + (lhi - llo) * frac / (1 - frac)))
    else:
        ax.set_ylim(lo, hi + (hi - lo) * frac / (1 - frac))


def _legend(ax, **kw) -> None:
    """Legend outside the axes on the right, so it never covers data or fault labels."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8.5, **kw)


def _mark_workload_end(ax, meta: dict) -> None:
    end = meta.get("duration_s")
    if _is_num(end) and end > 0:
        ax.axvline(end, color="#57606a", lw=1, ls=":", zorder=1)
        ax.text(end, 0.02, " publishing stops", transform=ax.get_xaxis_transform(), fontsize=8,
                color="#57606a", va="bottom", ha="left")


def _x_limit(meta: dict, *arrays: np.ndarray, faults: list[dict] = ()) -> float:
    candidates = [meta.get("duration_s", 0) or 0]
    if _is_num(meta.get("settle_s")) and _is_num(meta.get("duration_s")):
        candidates.append(meta["duration_s"] + meta["settle_s"])
    candidates += [float(a.max()) for a in arrays if a.size]
    candidates += [f["end"] for f in faults if _is_num(f.get("end"))]
    return max([c for c in candidates if _is_num(c)] + [1.0])


def _per_second_percentiles(t: np.ndarray, v: np.ndarray, qs=(50, 99)) -> tuple[np.ndarray, list[np.ndarray]]:
    """Bin samples into whole seconds; return the bin centres and one array per percentile."""
    bins = np.floor(t).astype(int)
    order = np.argsort(bins, kind="stable")
    bins, v = bins[order], v[order]
    uniq, starts = np.unique(bins, return_index=True)
    groups = np.split(v, starts[1:])
    out = [np.array([np.percentile(g, q) for g in groups]) for q in qs]
    return uniq + 0.5, out


# --- the three plots ----------------------------------------------------------------------------

def plot_latency(series: dict, meta: dict) -> str | None:
    """Publish-to-deliver latency against time: every sample as a faint dot, the per-second p50
    and p99 as lines, fault windows shaded. Log y-axis when the spread is large."""
    t, ms = _points(series.get("latency"))
    if not t.size:
        return None
    faults = series.get("faults") or []
    fig, ax = plt.subplots(figsize=(FIG_WIDTH_IN, 4.6), layout="constrained")
    positive = ms[ms > 0]
    log = positive.size > 0 and positive.max() / max(np.percentile(positive, 1), 1e-3) > 50
    if log:
        floor = max(float(positive.min()), 1e-3)
        ms = np.clip(ms, floor, None)
        ax.set_yscale("log")
    step = max(1, t.size // 50_000)  # the simulator caps samples; this only guards the renderer
    dense = t.size > 5000
    dots = ax.scatter(t[::step], ms[::step], s=3 if dense else 9, alpha=0.25 if dense else 0.6, color="#0969da",
                      lw=0, label="sample", rasterized=True)
    dots.set_in_layout(False)  # inside the axes anyway; measuring 50k markers costs seconds
    centres, (p50, p99) = _per_second_percentiles(t, ms)
    ax.plot(centres, p50, color="#0a3069", lw=1.6, label="p50 per second")
    ax.plot(centres, p99, color="#cf222e", lw=1.6, label="p99 per second")
    _shade_faults(ax, faults)
    _mark_workload_end(ax, meta)
    ax.set_xlim(0, _x_limit(meta, t, faults=faults))
    if not log:
        ax.set_ylim(bottom=0)
    _headroom(ax)
    ax.set_title("Publish-to-deliver latency over time" + (" (log scale)" if log else ""))
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency (ms)")
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, markerscale=3)
    return _fig_to_base64(fig)


def plot_delivery_rate(series: dict, meta: dict) -> str | None:
    """Deliveries per second per node (top) and acknowledged publishes per second (bottom),
    both with the fault windows shaded."""
    node_rate = {name: _points(pts) for name, pts in (series.get("node_rate") or {}).items()}
    node_rate = {name: tv for name, tv in node_rate.items() if tv[0].size}
    pub_t, pub_v = _points(series.get("publish_rate"))
    if not node_rate and not pub_t.size:
        return None
    faults = series.get("faults") or []
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(FIG_WIDTH_IN, 6.2), sharex=True, layout="constrained",
                                      gridspec_kw={"height_ratios": [2.2, 1]})
    for name in sorted(node_rate):
        t, v = node_rate[name]
        top.plot(t, v, lw=1.5, label=name, drawstyle="steps-mid", marker="o" if t.size < 3 else None)
    if node_rate:
        _legend(top, title="node", title_fontsize=8.5)
    else:
        top.text(0.5, 0.5, NO_DATA, transform=top.transAxes, ha="center", va="center", color="#57606a")
    top.set_title("Delivery rate per node, and publish rate")
    top.set_ylabel("deliveries / s")
    top.set_ylim(bottom=0)
    _headroom(top)
    if pub_t.size:
        bottom.plot(pub_t, pub_v, lw=1.5, color="#24292f", drawstyle="steps-mid", label="acknowledged",
                    marker="o" if pub_t.size < 3 else None)
        _legend(bottom)
    else:
        bottom.text(0.5, 0.5, NO_DATA, transform=bottom.transAxes, ha="center", va="center", color="#57606a")
    bottom.set_ylabel("publishes / s")
    bottom.set_xlabel("time since start (s)")
    bottom.set_ylim(bottom=0)
    _headroom(bottom, 0.3)
    all_t = [tv[0] for tv in node_rate.values()] + [pub_t]
    for ax, labelled in ((top, True), (bottom, False)):
        _shade_faults(ax, faults, label=labelled)
        ax.grid(True, alpha=0.3)
    _mark_workload_end(bottom, meta)
    bottom.set_xlim(0, _x_limit(meta, *all_t, faults=faults))
    return _fig_to_base64(fig)


def _resume_counts(series: dict, summary: dict) -> dict[str, int]:
    """Counts per outcome: from summary["resumes"] where given, else counted from the series."""
    from_series = Counter(p[1] for p in series.get("resumes") or () if len(p) >= 2)
    given = summary.get("resumes") or {}
    return {o: given[o] if _is_num(given.get(o)) else from_series.get(o, 0) for o in RESUME_OUTCOMES}


def plot_resumes(series: dict, summary: dict, meta: dict) -> str | None:
    """Resume outcomes: a bar per outcome (left) and outcomes per second over time, stacked,
    with the fault windows shaded (right)."""
    counts = _resume_counts(series, summary)
    events = [(p[0], p[1]) for p in series.get("resumes") or ()
              if len(p) >= 2 and _is_num(p[0]) and p[1] in RESUME_OUTCOMES]
    if not any(counts.values()) and not events:
        return None
    faults = series.get("faults") or []
    fig, (bars, over) = plt.subplots(1, 2, figsize=(FIG_WIDTH_IN, 4.0), layout="constrained",
                                     gridspec_kw={"width_ratios": [1, 2.6]})
    labels = [o.replace("_", "\n") for o in RESUME_OUTCOMES]
    heights = [counts[o] for o in RESUME_OUTCOMES]
    rects = bars.bar(labels, heights, color=[RESUME_COLOURS[o] for o in RESUME_OUTCOMES])
    bars.bar_label(rects, labels=[f"{h:,}" for h in heights], fontsize=9, padding=2)
    bars.set_ylim(0, max(heights + [1]) * 1.15)
    bars.yaxis.set_major_locator(MaxNLocator(integer=True))
    bars.set_title("Resume outcomes")
    bars.set_xlabel("outcome")
    bars.set_ylabel("resumes (count)")
    bars.grid(True, axis="y", alpha=0.3)

    xmax = _x_limit(meta, np.array([t for t, _ in events]) if events else np.empty(0), faults=faults)
    if events:
        edges = np.arange(0, math.ceil(xmax) + 1, 1.0)
        data = [[t for t, o in events if o == outcome] for outcome in RESUME_OUTCOMES]
        over.hist(data, bins=edges, stacked=True, color=[RESUME_COLOURS[o] for o in RESUME_OUTCOMES],
                  label=[o.replace("_", " ") for o in RESUME_OUTCOMES])
        _headroom(over)
        _legend(over)
    else:
        over.text(0.5, 0.5, NO_DATA, transform=over.transAxes, ha="center", va="center", color="#57606a")
    _shade_faults(over, faults)
    over.set_xlim(0, xmax)
    over.set_title("Resume outcomes over time")
    over.set_xlabel("time since start (s)")
    over.set_ylabel("resumes per second")
    over.yaxis.set_major_locator(MaxNLocator(integer=True))
    over.grid(True, axis="y", alpha=0.3)
    return _fig_to_base64(fig)


# --- HTML ---------------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #24292f;
       max-width: 1080px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; margin-top: 1.6em; }
.verdict { font-weight: bold; padding: 0.05em 0.4em; border-radius: 4px; color: white; }
.PASS { background: #1a7f37; } .FAIL { background: #cf222e; }
.description { color: #57606a; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.93em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.status { font-weight: bold; white-space: nowrap; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 0.15em 1em; }
dl.meta dt { font-weight: bold; } dl.meta dd { margin: 0; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.85em; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; padding: 0.6em; overflow-x: auto; white-space: pre; }
img.plot { width: 100%; max-width: 1000px; display: block; margin: 0.8em 0; }
.nodata { color: #57606a; font-style: italic; }
.witness { margin: 0.8em 0 1.2em; }
"""


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _table(headers: list[str], rows: list[list[str]], classes: dict[int, str] | None = None) -> str:
    """Rows are already-escaped HTML cells; ``classes`` gives a CSS class per column index."""
    classes = classes or {}
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="{classes[i]}">{c}</td>' if i in classes else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _meta_html(meta: dict) -> str:
    fields = [("implementation", meta.get("implementation")), ("node command", meta.get("node_command") or "-"),
              ("nodes", meta.get("nodes")), ("relay", meta.get("relay")), ("Redis", meta.get("redis")),
              ("clients", meta.get("clients")), ("seed", meta.get("seed")),
              ("duration", _fmt(meta.get("duration_s"), "{:g} s")), ("settle", _fmt(meta.get("settle_s"), "{:g} s")),
              ("started at", meta.get("started_at")), ("command", meta.get("command"))]
    code = {"command", "node command"}
    items = "".join(f"<dt>{_e(k)}</dt><dd>{f'<code>{_e(v)}</code>' if k in code else _e(v)}</dd>" for k, v in fields)
    return f'<dl class="meta">{items}</dl>'


def _status_cell(status: str | None) -> str:
    colour = STATUS_COLOURS.get(status or "", "#24292f")
    return f'<span style="color:{colour}">{_e(status or "?")}</span>'


def _verdicts_html(verdicts: list[dict]) -> str:
    if not verdicts:
        return f'<p class="nodata">{NO_DATA}</p>'
    rows = []
    for v in verdicts:
        rid = _e(v.get("id"))
        if v.get("status") == "fail":
            rid = f'<a href="#w-{_e(v.get("id"))}">{rid}</a>'
        rows.append([rid, _e(v.get("title")), _status_cell(v.get("status")), _e(v.get("reason"))])
    return _table(["ID", "requirement", "verdict", "reason"], rows, classes={2: "status"})


def _summary_rows(summary: dict) -> list[tuple[str, str]]:
    pub = summary.get("published") or {}
    lat = summary.get("latency_ms") or {}
    res = summary.get("resumes") or {}
    rep = summary.get("replay_latency_ms") or {}
    return [
        ("publishes invoked", _fmt(pub.get("invoked"))),
        ("publishes acknowledged", _fmt(pub.get("acknowledged"))),
        ("publishes failed", _fmt(pub.get("failed"))),
        ("publishes indeterminate", _fmt(pub.get("indeterminate"))),
        ("delivery ratio (acknowledged events)", _pct(summary.get("delivery_ratio"))),
        ("expected deliveries", _fmt(summary.get("expected_deliveries"))),
        ("delivered", _fmt(summary.get("delivered"))),
        ("lost", _fmt(summary.get("lost"))),
        ("duplicated", _fmt(summary.get("duplicated"))),
        ("reordered", _fmt(summary.get("reordered"))),
        ("leaked", _fmt(summary.get("leaked"))),
        ("latency p50 / p95 / p99 / max",
         _joined([_ms(lat.get(k)) for k in ("p50", "p95", "p99", "max")])),
        ("resumes attempted", _fmt(res.get("attempted"))),
        ("resumes recovered / not recovered / failed",
         _joined([_fmt(res.get(k)) for k in RESUME_OUTCOMES])),
        ("replay latency p50 / p99 / max (resume request to last missed frame)",
         _joined([_ms(rep.get(k)) for k in ("p50", "p99", "max")])),
        ("catch-up p50 / p99 / max (connection lost to last missed frame)",
         _joined([_ms((summary.get("catch_up_ms") or {}).get(k)) for k in ("p50", "p99", "max")])),
        *_store_rows(summary),
        ("history lines", _fmt(summary.get("history_lines"))),
        ("checker time", _fmt(summary.get("checker_seconds"), "{:,.2f} s")),
    ]


def _store_rows(summary: dict) -> list[tuple[str, str]]:
    """Acknowledged events the store lost, the honesty of resumes, and the Redis Cluster faults."""
    rows = []
    if "lost_acknowledged" in summary:
        rows.append(("acknowledged events lost (no connection holding the scope received them)",
                     f"{_fmt(summary.get('lost_acknowledged'))} of {_fmt(summary.get('owed_events'))}"))
    h = summary.get("resume_honesty")
    if h:
        rows.append(("resumes recovered true / of them lying (missed an event) / REP-3",
                     _joined([_fmt(h.get("recovered_true")), _fmt(h.get("lying")), str(h.get("rep3") or NO_DATA)])))
        rows.append(("resumes recovered false / REP-4 violations / REP-4",
                     _joined([_fmt(h.get("recovered_false")), _fmt(h.get("rep4_violations")), str(h.get("rep4") or NO_DATA)])))
    rows += [(f"{f.get('kind')} of {f.get('target')} at t={_fmt(f.get('start'), '{:.1f}')} s", store_fault_text(f))
             for f in summary.get("store_faults") or ()]
    return rows


def store_fault_text(f: dict) -> str:
    if f.get("kind") == "failover":
        return (f"replica {f.get('promoted') or 'none'} promoted after {_fmt(f.get('promoted_after_s'), '{:.2f} s')}, "
                f"old primary {f.get('old')} back as a replica after {_fmt(f.get('rejoined_after_s'), '{:.2f} s')}")
    if f.get("kind") == "reshard":
        return (f"{_fmt(f.get('slots'))} slots from primary {f.get('from')} to {f.get('to')} in "
                f"{_fmt(f.get('took_s'), '{:.2f} s')}" + ("" if f.get("ok") else " (did not complete)"))
    return ""


def _summary_html(summary: dict) -> str:
    out = _table(["figure", "value"], [[_e(k), _e(v)] for k, v in _summary_rows(summary)], classes={1: "num"})
    per_node = summary.get("per_node") or {}
    if per_node:
        rows = [[_e(name), _e(_fmt(n.get("deliveries"))), _e(_fmt(n.get("per_s"), "{:,.1f}"))]
                for name, n in sorted(per_node.items())]
        out += _table(["node", "deliveries", "deliveries / s"], rows, classes={1: "num", 2: "num"})
    return out


def _plot_html(b64: str | None, alt: str) -> str:
    if b64 is None:
        return f'<p class="nodata">{_e(alt)}: {NO_DATA}</p>'
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def _witnesses_html(verdicts: list[dict]) -> str:
    failing = [v for v in verdicts if v.get("status") == "fail"]
    if not failing:
        return "<p>No requirement failed.</p>"
    parts = []
    for v in failing:
        parts.append(f'<h3 id="w-{_e(v.get("id"))}">{_e(v.get("id"))}: {_e(v.get("title"))}</h3>'
                     f"<p>{_e(v.get('reason'))}</p>")
        witnesses = v.get("witnesses") or []
        if not witnesses:
            parts.append('<p class="nodata">no witnesses recorded</p>')
        for w in witnesses[:MAX_WITNESSES]:
            where = ", ".join(f"{k} {_e(w.get(k))}" for k in ("conn", "event_id") if w.get(k))
            head = f"<b>[{_e(w.get('kind'))}]</b> {_e(w.get('explanation'))}"
            if w.get("also"):
                where = ", ".join(filter(None, [where, "also violates " + ", ".join(map(_e, w["also"]))]))
            if where:
                head += f" <span class='description'>({where})</span>"
            excerpt = "\n".join(json.dumps(r, sort_keys=False, default=str) for r in w.get("excerpt") or ())
            parts.append(f'<div class="witness"><p>{head}</p><pre>{_e(excerpt or NO_DATA)}</pre></div>')
        total = v.get("violations") if _is_num(v.get("violations")) else len(witnesses)
        shown = min(len(witnesses), MAX_WITNESSES)
        if total > shown:
            parts.append(f"<p class='description'>{shown} of {total:,} violation(s) shown.</p>")
    return "\n".join(parts)


def build_html(*, meta: dict, summary: dict, series: dict, verdicts: list[dict]) -> str:
    """The whole page as a string (render_html writes it)."""
    overall = overall_verdict(verdicts)
    scenario = _e(meta.get("scenario", "?"))
    plots = [
        _plot_html(plot_latency(series, meta), "publish-to-deliver latency over time"),
        _plot_html(plot_delivery_rate(series, meta), "delivery rate per node and publish rate"),
        _plot_html(plot_resumes(series, summary, meta), "resume outcomes"),
    ]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>scopehub scenario {scenario}: {overall}</title>
<style>{CSS}</style></head>
<body>
<h1>Scenario <code>{scenario}</code>: <span class="verdict {overall}">{overall}</span></h1>
<p class="description">{_e(meta.get("description"))}</p>
{_meta_html(meta)}
<h2>Verdicts</h2>
{_verdicts_html(verdicts)}
<h2>Figures</h2>
{_summary_html(summary)}
<h2>Plots</h2>
{plots[0]}
{plots[1]}
{plots[2]}
<h2>Witnesses of failing requirements</h2>
{_witnesses_html(verdicts)}
</body></html>
"""


def render_html(path: str, *, meta: dict, summary: dict, series: dict, verdicts: list[dict]) -> None:
    """Write the self-contained report to ``path``."""
    page = build_html(meta=meta or {}, summary=summary or {}, series=series or {}, verdicts=verdicts or [])
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)


# --- terminal -----------------------------------------------------------------------------------

def verdicts_table(verdicts: list[dict], title: str = "verdicts") -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("ID", "requirement", "verdict", "reason"):
        t.add_column(col, overflow="fold")
    for v in verdicts:
        status = v.get("status") or "?"
        t.add_row(Text(str(v.get("id", "?"))), Text(str(v.get("title") or "")),
                  Text(status, style=RICH_STATUS.get(status, "")), Text(str(v.get("reason") or "")))
    return t


def figures_table(summary: dict) -> Table:
    lat = summary.get("latency_ms") or {}
    res = summary.get("resumes") or {}
    rep = summary.get("replay_latency_ms") or {}
    t = Table(title="figures", title_justify="left")
    for col in ("delivery", "lost", "dup", "reordered", "leaked", "p50", "p99", "resumes rec/not/fail",
                "replay p99"):
        t.add_column(col, justify="right")
    ratio = summary.get("delivery_ratio")
    ratio_s = _pct(ratio)
    if _is_num(ratio) and ratio < 1:
        ratio_s = f"[yellow]{ratio_s}[/]"
    bad = lambda k: (f"[red]{_fmt(summary.get(k))}[/]" if _is_num(summary.get(k)) and summary.get(k) > 0  # noqa: E731
                     else _fmt(summary.get(k)))
    resumes = _joined([_fmt(res.get(k)) for k in RESUME_OUTCOMES], "/")
    if _is_num(res.get("attempted")):
        resumes += f" of {res['attempted']:,}"
    t.add_row(ratio_s, bad("lost"), bad("duplicated"), bad("reordered"), bad("leaked"),
              _ms(lat.get("p50")), _ms(lat.get("p99")), resumes, _ms(rep.get("p99")))
    return t


def print_summary(console: Console, *, meta: dict, summary: dict, verdicts: list[dict]) -> None:
    """Verdicts and headline figures as rich tables, then the overall verdict on one line."""
    meta, summary, verdicts = meta or {}, summary or {}, verdicts or []
    console.print(verdicts_table(verdicts, title=f"scenario {meta.get('scenario', '?')}: verdicts"))
    console.print(figures_table(summary))
    h = summary.get("resume_honesty") or {}
    if summary.get("store_faults") or summary.get("lost_acknowledged"):
        console.print(f"acknowledged events lost: {_fmt(summary.get('lost_acknowledged'))} of "
                      f"{_fmt(summary.get('owed_events'))}; resumes recovered true {_fmt(h.get('recovered_true'))} "
                      f"(lying {_fmt(h.get('lying'))}, REP-3 {h.get('rep3')}), recovered false "
                      f"{_fmt(h.get('recovered_false'))} (REP-4 {h.get('rep4')})", highlight=False)
    for f in summary.get("store_faults") or ():
        console.print(f"{f.get('kind')} of {f.get('target')} at t={_fmt(f.get('start'), '{:.1f}')} s: "
                      f"{store_fault_text(f)}", highlight=False)
    overall = overall_verdict(verdicts)
    colour = "bold green" if overall == "PASS" else "bold red"
    failed = [str(v.get("id")) for v in verdicts if v.get("status") == "fail"]
    console.print(f"[{colour}]{overall}[/]" + (f": failed {', '.join(failed)}" if failed else ""))

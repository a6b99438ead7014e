"""The run's output: rich tables on the console, bench.json and latency_throughput.png."""

from __future__ import annotations

import json
import math
import os

from rich.console import Console
from rich.table import Table

JSON_NAME = "bench.json"
PLOT_NAME = "latency_throughput.png"


def _num(v, fmt: str = "{:,.0f}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return fmt.format(v)


def _pct(v) -> str:
    return "-" if v is None else f"{v:.0%}"


def _cpu(step: dict) -> str:
    parts = [f"{name.replace('node-', 'n')} {_pct(v)}" for name, v in step["node_cpu"].items() if v is not None]
    return ", ".join(parts) or "-"


def steps_table(title: str, w: dict) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("events/s", "achieved", "offered dl/s", "delivered/s", "p50 ms", "p99 ms", "lost",
                "CPU (share of a core)", "dl per node CPU-s", "loadgen CPU", "machine busy", "kept up"):
        t.add_column(col, justify="left" if col in ("CPU (share of a core)", "kept up") else "right")
    for s in w["steps"]:
        lg = ", ".join(_pct(c) for c in s["loadgen_cpu"])
        if s.get("loadgen_busy"):
            lg = f"[yellow]{lg}[/]"
        t.add_row(_num(s["offered_events_per_s"]), _num(s["achieved_events_per_s"]),
                  _num(s["offered_deliveries_per_s"]), _num(s["delivered_per_s"]),
                  _num(s["p50_ms"], "{:.1f}"), _num(s["p99_ms"], "{:.1f}"), _num(s["lost"]), _cpu(s),
                  _num(s.get("deliveries_per_node_cpu_s")), lg,
                  f"{s.get('machine_cpu', 0):.2f} cores", "yes" if s["kept_up"] else "[red]no[/]")
    return t


def summary_table(result: dict) -> Table:
    t = Table(title="scopehub bench: summary", title_justify="left")
    for col in ("workload", "system", "conns", "subs/scope", "sustained dl/s", "peak dl/s", "ratio to floor",
                "dl per node CPU-s", "per-CPU ratio to floor", "p99 ms (last kept-up step)", "CPU/event ms"):
        t.add_column(col, justify="left" if col in ("workload", "system") else "right")
    send = result["floor"].get("send_loop")
    rows = ([send] if send else []) + result["workloads"]
    for w in rows:
        kept = [s for s in w["steps"] if s["kept_up"]]
        last = kept[-1] if kept else (w["steps"][-1] if w["steps"] else None)
        cpe = None
        if last and last["achieved_events_per_s"] and last.get("nodes_cpu_total"):
            cpe = last["nodes_cpu_total"] / last["achieved_events_per_s"] * 1000
        ratio = w.get("ratio_to_floor")
        t.add_row(w["workload"], w["system"], _num(w.get("connections")), _num(w.get("subscribers_per_scope")),
                  _num(w["sustained_deliveries_per_s"]), _num(w["peak_deliveries_per_s"]),
                  "1.00 (floor)" if w is send else _num(ratio, "{:.2f}"), _num(w.get("deliveries_per_node_cpu_s")),
                  "1.00 (floor)" if w is send else _num(w.get("cpu_ratio_to_floor"), "{:.2f}"),
                  _num(last["p99_ms"] if last else None, "{:.1f}"), _num(cpe, "{:.3f}"))
    return t


def durability_table(d: dict) -> Table:
    """Rate by rate, the default and --durability 1 side by side, with durable / default."""
    a, b = d["systems"]
    t = Table(title=f"durability: {a} vs {b} (same primary + replica), durable / default",
              title_justify="left")
    for col in ("events/s", "achieved", "publish p50 ms", "x", "publish p99 ms", "x", "delivery p50 ms", "x",
                "delivery p99 ms", "failed publishes"):
        t.add_column(col, justify="right")

    def pair(v: list, fmt: str) -> str:
        return " / ".join(_num(x, fmt) for x in v)

    for r in d["rows"]:
        d99 = r["delivery_p99_ms"]
        t.add_row(_num(r["rate"]), pair(r["achieved"], "{:,.0f}"), pair(r["publish_p50_ms"], "{:.2f}"),
                  _num(r["publish_p50_ratio"], "{:.2f}"), pair(r["publish_p99_ms"], "{:.2f}"),
                  _num(r["publish_p99_ratio"], "{:.2f}"), pair(r["delivery_p50_ms"], "{:.1f}"),
                  _num(r["delivery_p50_ratio"], "{:.2f}"), pair(d99, "{:.1f}"),
                  pair(r["publish_failed"], "{:,}"))
    return t


def render(result: dict, console: Console | None = None) -> None:
    console = console or Console()
    send = result["floor"].get("send_loop")
    if send:
        console.print(steps_table(f"floor: bare aiohttp send loop, {send['connections']} connections", send))
        if send.get("blast"):
            b = send["blast"]
            console.print(f"floor blast: {b['frames_per_s']:,.0f} frames/s handed to transports by the bare "
                          f"send loop ({b['frames']} frames to {b['connections']} connections, "
                          f"{b['cpu_s']:.2f} s CPU)")
    rf = result["floor"].get("redis")
    if rf:
        console.print(
            f"floor Redis (redis-py asyncio, one command at a time): XADD {rf['xadd']['ops_per_s']:,.0f}/s "
            f"p50 {rf['xadd']['p50_ms']:.3f} ms p99 {rf['xadd']['p99_ms']:.3f} ms; XREAD "
            f"{rf['xread']['ops_per_s']:,.0f}/s p50 {rf['xread']['p50_ms']:.3f} ms p99 {rf['xread']['p99_ms']:.3f} ms; "
            f"XADD->XREAD BLOCK at {rf['xadd_to_xread_block']['rate']:g}/s p50 "
            f"{_num(rf['xadd_to_xread_block']['p50_ms'], '{:.3f}')} ms p99 "
            f"{_num(rf['xadd_to_xread_block']['p99_ms'], '{:.3f}')} ms")
    for w in result["workloads"]:
        title = (f"{w['workload']}: {w['system']}, {w['connections']} connections, {w.get('scopes', 1)} scope(s) x "
                 f"{w['subscribers_per_scope']} subscribers")
        console.print(steps_table(title, w))
        sc = w.get("scaling")
        if sc and sc.get("ratio") is not None:
            a, b = sc["cpu_ms_per_event"]
            console.print(f"  CPU per event at {sc['rate']:g} events/s: {sc['subscribers'][0]} subscribers "
                          f"{a:.3f} ms, {sc['subscribers'][1]} subscribers {b:.3f} ms: x{sc['ratio']:.2f} "
                          f"for x{sc['subscribers'][1] / max(1, sc['subscribers'][0]):.1f} subscribers")
        if w.get("p99_ms_at_target") is not None:
            console.print(f"  at {w['target_rate']:g} events/s: p50 {_num(w['p50_ms_at_target'], '{:.1f}')} ms, "
                          f"p99 {_num(w['p99_ms_at_target'], '{:.1f}')} ms")
    if result.get("durability"):
        console.print(durability_table(result["durability"]))
        rf = result["durability"].get("redis_floor")
        if rf:
            a, b = rf["xadd"], rf["xadd_wait"]
            console.print(f"  on the primary itself (redis-py, one at a time, {a['count']} each): XADD p50 "
                          f"{a['p50_ms']:.3f} ms p99 {a['p99_ms']:.3f} ms; XADD + WAIT {rf['replicas']} p50 "
                          f"{b['p50_ms']:.3f} ms p99 {b['p99_ms']:.3f} ms; WAIT short {rf['short']}")
        console.print(f"  [dim]{result['durability']['note']}[/]")
    console.print(summary_table(result))
    for text in result.get("warnings", []):
        console.print(f"[yellow]warning:[/] {text}")
    console.print(f"[dim]{result['meta']['caveat']}[/]")


def write_json(result: dict, out_dir: str) -> str:
    path = os.path.join(out_dir, JSON_NAME)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, sort_keys=False, default=str)
    return path


def plot(result: dict, out_dir: str) -> str:
    """Latency (p99 solid, p50 dashed) against delivered frames per second: one node and the
    floor on the left, the multi-node and many-scope workloads on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = os.path.join(out_dir, PLOT_NAME)
    left, right = [], []
    if result["floor"].get("send_loop"):
        left.append(("floor: bare aiohttp send loop", result["floor"]["send_loop"]))
    for w in result["workloads"]:
        (left if w["workload"] == "hot_scope" else right).append((f"{w['workload']}: {w['system']}", w))
    panels = [p for p in ((left, "one hot scope (and the floor)"), (right, "three nodes / many scopes")) if p[0]]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(7 * max(1, len(panels)), 6), dpi=100, squeeze=False)
    color = 0
    for ax, (series, title) in zip(axes[0], panels):
        for name, w in series:
            pts = [(s["delivered_per_s"], s["p50_ms"], s["p99_ms"]) for s in w["steps"]
                   if s["p99_ms"] is not None and s["delivered_per_s"] > 0]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            c = f"C{color % 10}"
            color += 1
            ax.plot(xs, [p[2] for p in pts], "-o", color=c, label=f"{name} p99", markersize=4,
                    linewidth=2.4 if name.startswith("floor") else 1.5)
            ax.plot(xs, [p[1] for p in pts], "--x", color=c, alpha=0.6, label=f"{name} p50", markersize=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("delivered frames per second (all subscribers)")
        ax.set_ylabel("publish-to-deliver latency (ms)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    quick = " (--quick)" if result["meta"].get("quick") else ""
    fig.suptitle(f"scopehub bench{quick}: latency against throughput, "
                 f"{result['meta']['machine']['cores']} cores shared by everything")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

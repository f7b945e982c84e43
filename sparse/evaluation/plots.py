"""PNG figures for people: training curves, before/after bars, a FLOPS-vs-NDCG@10 Pareto plot.

Matplotlib only, on the headless ``Agg`` backend (no display needed). Every function takes
plain Python data (lists of dicts, dicts of numbers), writes one PNG and returns its path, so
the demo, the evaluation reports and the reproduction grid share them. Numbers are never
computed here; the caller passes what its JSON/CSV already holds.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402

from sparse.errors import UserError  # noqa: E402

DPI = 110


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_training_curves(records: Sequence[Mapping], path: str,
                         series: Optional[Sequence[tuple[str, str]]] = None,
                         step_key: str = "step", title: Optional[str] = None) -> str:
    """One panel per logged quantity against the training step.

    ``records``: the per-step log entries (dicts with ``step_key`` and numeric values).
    ``series``: ``(key, label)`` pairs to draw; a key absent from every record is skipped, and
    if none is present the call fails, naming the keys it looked for.
    """
    series = list(series or [("ranking_loss", "ranking loss"), ("flops_loss", "FLOPS loss"),
                             ("doc_length", "mean document length")])
    present = []
    for key, label in series:
        pts = [(r[step_key], r[key]) for r in records
               if _finite(r.get(step_key)) and _finite(r.get(key))]
        if pts:
            present.append((key, label, pts))
    if not present:
        raise UserError(f"no training log values to plot: looked for {[k for k, _ in series]} "
                        f"against '{step_key}' in {len(records)} records")
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (ax, (key, label, pts)) in enumerate(zip(axes[0], present)):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 30 else None,
                markersize=3, color=colors[i % len(colors)])
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_before_after(before: Mapping[str, float], after: Mapping[str, float], path: str,
                      metrics: Optional[Sequence[tuple[str, str]]] = None,
                      labels: tuple[str, str] = ("zero-shot", "fine-tuned"),
                      title: Optional[str] = None) -> str:
    """Side-by-side bars per metric (one small panel each, since their scales differ)."""
    metrics = list(metrics or [(k, k) for k in before if k in after])
    metrics = [(k, lab) for k, lab in metrics if _finite(before.get(k)) and _finite(after.get(k))]
    if not metrics:
        raise UserError("plot_before_after: no metric has a number on both sides")
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics), 3.4), squeeze=False)
    colors = ("#8c8c8c", "#1f77b4")
    for ax, (key, label) in zip(axes[0], metrics):
        vals = [before[key], after[key]]
        bars = ax.bar([0, 1], vals, color=colors, width=0.6)
        ax.set_xticks([0, 1], labels, fontsize=8)
        ax.set_title(label, fontsize=10)
        for bar, v in zip(bars, vals):
            ax.annotate(_fmt(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, max(vals) * 1.18 if max(vals) > 0 else 1)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.4f}"


def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both lower cost (x) and higher quality (y), by x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def plot_pareto(rows: Sequence[Mapping], path: str, x: str = "flops", y: str = "ndcg@10",
                group: str = "method", label: Optional[str] = None,
                x_label: str = "FLOPS (lower is cheaper)", y_label: str = "NDCG@10",
                title: Optional[str] = None) -> str:
    """Every run as a point, one colour and one line per ``group``; the line joins that group's
    Pareto-optimal points (cheapest-first), dominated runs are drawn hollow.

    ``label``: an optional key whose value is written next to each point (e.g. lambda).
    Rows without a finite ``x`` and ``y`` are an error (the caller filters unfinished runs).
    """
    bad = [r for r in rows if not (_finite(r.get(x)) and _finite(r.get(y)))]
    if bad:
        raise UserError(f"plot_pareto: {len(bad)} rows lack a number for '{x}' or '{y}'")
    if not rows:
        raise UserError("plot_pareto: no rows to plot")
    groups: dict[str, list[Mapping]] = {}
    for r in rows:
        groups.setdefault(str(r.get(group, "")), []).append(r)
    fig, ax = plt.subplots(figsize=(10, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^v<>Pp*Xh"
    for i, (name, members) in enumerate(groups.items()):
        color, marker = colors[i % len(colors)], markers[i % len(markers)]
        pts = [(float(r[x]), float(r[y])) for r in members]
        front = pareto_front(pts)
        on_front = set(front)
        ax.plot([p[0] for p in front], [p[1] for p in front], color=color, marker=marker,
                linestyle="-", label=f"{name} ({len(members)})")
        off = [p for p in pts if p not in on_front]
        if off:
            ax.scatter([p[0] for p in off], [p[1] for p in off], facecolors="none",
                       edgecolors=color, marker=marker)
        if label:
            for r in members:
                if r.get(label) is not None:
                    ax.annotate(str(r[label]), (float(r[x]), float(r[y])), fontsize=6,
                                xytext=(3, 3), textcoords="offset points", color=color)
    xs = [float(r[x]) for r in rows]
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title=group, title_fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_serving_sweep(rows: Sequence[Mapping], path: str, ndcg_floor: float, title: Optional[str] = None) -> str:
    """NDCG@10 and Recall@100 against index size (MB), one colour per prune type and one marker per
    precision; settings within tolerance (NDCG@10 >= ``ndcg_floor``, dashed line) are filled, the others
    hollow, the chosen one ringed. ``rows``: the sweep's rows (setting, prune_type, precision, NDCG@10,
    Recall@100, index_bytes, within_tolerance, chosen)."""
    if not rows:
        raise UserError("plot_serving_sweep: no rows to plot")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    types = list(dict.fromkeys(r["prune_type"] for r in rows))
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    markers = "osD^v<>P"
    for ax, metric in zip(axes, ("NDCG@10", "Recall@100")):
        for r in rows:
            color = colors[types.index(r["prune_type"]) % len(colors)]
            marker = markers[precisions.index(r["precision"]) % len(markers)]
            x = r["index_bytes"] / 1e6
            ax.scatter([x], [r[metric]], marker=marker, edgecolors=color,
                       facecolors=color if r["within_tolerance"] else "none", s=36)
            if r["chosen"]:
                ax.scatter([x], [r[metric]], marker="o", s=220, facecolors="none", edgecolors="black")
        if metric == "NDCG@10":
            ax.axhline(ndcg_floor, color="grey", linestyle="--", linewidth=1, label="tolerance")
        ax.set_xlabel("index size (MB, raw postings)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colors[i % len(colors)], marker="o", linestyle="", label=t)
               for i, t in enumerate(types)]
    handles += [plt.Line2D([], [], color="black", marker=markers[i % len(markers)], linestyle="", fillstyle="none",
                           label=p) for i, p in enumerate(precisions)]
    axes[1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title)
    return _save(fig, path)

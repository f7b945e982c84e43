"""Per-method reading of a grid's rows: NDCG@10 on each method's frontier at given FLOPS, the seed
spread there, the best run under a FLOPS budget, and the wall times.

Rows are the aggregate's (``sparse.reproduce.aggregate.run_row``). A stage is a pair of columns
(NDCG@10, FLOPS): the run itself, and its second stage (the query-side IDF fit). Frontiers use
the frontier runs only (``seed repeat of`` empty); the seed spread at a FLOPS uses the frontier
run nearest it (by FLOPS, as the seed phase picks) and its repeats, when at least two are evaluated.
"""

from __future__ import annotations

from typing import Optional, Sequence

from sparse.reproduce import frontier, times

STAGES = {"model": ("NDCG@10 avg", "FLOPS"), "model + IDF fit": ("2-stage NDCG@10 avg", "2-stage FLOPS")}
TIME_COLUMNS = tuple(f"{step} s" for step in times.STEPS)


def _measured(rows: Sequence[dict], ndcg: str, flops: str) -> list[dict]:
    return [r for r in rows if r.get(ndcg) is not None and r.get(flops) is not None]


def _seed_cell(rows: Sequence[dict], method: str, target: float, ndcg: str, flops: str) -> Optional[str]:
    """``mean ± std (min), n seeds`` of the frontier run nearest ``target`` and its repeats."""
    own = [r for r in rows if r["method"] == method and r.get("FLOPS") is not None]
    pick = frontier.nearest([(f"{r['block']}/{r['run']}", r["FLOPS"]) for r in own if not r.get("seed repeat of")],
                            target)
    if pick is None:
        return None
    block, point = pick.split("/", 1)
    values = [r[ndcg] for r in own if r["block"] == block and (r.get("seed repeat of") or r["run"]) == point
              and r.get(ndcg) is not None]
    if len(values) < 2:
        return None
    s = frontier.spread(values)
    return f"{s['mean']:.4f} ± {s['std']:.4f} ({s['min']:.4f}), {s['n']} seeds, {point}"


def method_rows(rows: Sequence[dict], points: Sequence[float], budget: Optional[float]) -> list[dict]:
    """One row per (method, stage): its FLOPS span, NDCG@10 at each of ``points``, the seed spread
    there and its best run at FLOPS <= ``budget``."""
    out = []
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for stage, (ndcg, flops) in STAGES.items():
        for method in methods:
            runs = _measured([r for r in rows if r["method"] == method and not r.get("seed repeat of")], ndcg, flops)
            if not runs:
                continue
            pts = [(r[flops], r[ndcg]) for r in runs]
            row = {"method": method, "stage": stage, "runs": len(runs),
                   "FLOPS span": f"{min(p[0] for p in pts):.2f}-{max(p[0] for p in pts):.2f}"}
            for f in points:
                value = frontier.at_flops(pts, f)
                row[f"NDCG@10 at FLOPS {f:g}"] = "out of range" if value is None else round(value, 4)
                row[f"seeds at FLOPS {f:g}"] = _seed_cell(rows, method, f, ndcg, flops)
            if budget is not None:
                best = best_within(runs, budget, ndcg, flops)
                row[f"best at FLOPS <= {budget:g}"] = None if best is None else \
                    f"{best[ndcg]:.4f} ({best['run']}, FLOPS {best[flops]:.2f})"
            out.append(row)
    return out


def best_within(rows: Sequence[dict], budget: float, ndcg: str, flops: str) -> Optional[dict]:
    """The row with the highest NDCG@10 among those with FLOPS <= ``budget`` (None if there is none)."""
    within = [r for r in _measured(rows, ndcg, flops) if r[flops] <= budget]
    return max(within, key=lambda r: r[ndcg]) if within else None


def verdict(rows: Sequence[dict], budget: float, reference: Optional[dict]) -> str:
    """Which method is best at FLOPS <= ``budget`` (either stage, frontier runs) and whether it
    reaches the reference (``{"label": ..., "ndcg10": ...}``)."""
    frontier_rows = [r for r in rows if not r.get("seed repeat of")]
    best = None
    for stage, (ndcg, flops) in STAGES.items():
        cand = best_within(frontier_rows, budget, ndcg, flops)
        if cand is not None and (best is None or cand[ndcg] > best[0]):
            best = (cand[ndcg], cand[flops], stage, cand)
    if best is None:
        return f"No run has FLOPS <= {budget:g} yet."
    value, flops_value, stage, row = best
    text = (f"Best at FLOPS <= {budget:g} (frontier runs, one seed each): **{row['method']}** ({stage}), run "
            f"{row['block']}/{row['run']}, NDCG@10 {value:.4f} at FLOPS {flops_value:.2f}.{_gap(value, reference)}")
    seeded = best_seeded(rows, budget)
    if seeded:
        mean, spread, mean_flops, stage, method, point = seeded
        text += (f" Best point repeated with seeds whose mean FLOPS is <= {budget:g}: **{method}** ({stage}), "
                 f"{point}, NDCG@10 {mean:.4f} ± {spread['std']:.4f} over {spread['n']} seeds (min "
                 f"{spread['min']:.4f}) at FLOPS {mean_flops:.2f}.{_gap(mean, reference)}")
    return text


def _gap(value: float, reference: Optional[dict]) -> str:
    if not reference:
        return ""
    gap = value - float(reference["ndcg10"])
    return (f" {'Reaches' if gap >= 0 else 'Does not reach'} {reference['label']} "
            f"({float(reference['ndcg10']):.4f}): {gap:+.4f}.")


def best_seeded(rows: Sequence[dict], budget: float) -> Optional[tuple]:
    """(mean NDCG@10, its spread, mean FLOPS, stage, method, point) of the point repeated with seeds (2 or
    more measured) that scores best on average among those whose mean FLOPS is <= ``budget``; None if none."""
    best = None
    for stage, (ndcg, flops) in STAGES.items():
        groups: dict[tuple, list[dict]] = {}
        for r in _measured(rows, ndcg, flops):
            groups.setdefault((r["method"], r["block"], r.get("seed repeat of") or r["run"]), []).append(r)
        for (method, block, point), members in groups.items():
            if len(members) < 2:
                continue
            mean_flops = sum(r[flops] for r in members) / len(members)
            spread = frontier.spread([r[ndcg] for r in members])
            if mean_flops <= budget and (best is None or spread["mean"] > best[0]):
                best = (spread["mean"], spread, mean_flops, stage, method, f"{block}/{point}")
    return best


def timing_line(rows: Sequence[dict]) -> str:
    """Total and per-run wall time of each step over the runs that recorded it, per training device
    when the runs trained on more than one (a CPU and a GPU differ by an order of magnitude)."""
    devices = sorted({r.get("device") or "unknown" for r in rows if any(r.get(c) is not None for c in TIME_COLUMNS)})
    if not devices:
        return "No wall times recorded yet."
    if len(devices) == 1:
        return f"Wall time ({devices[0]}): " + _timing_parts(rows)
    return "Wall time: " + " ".join(f"on {d}: " + _timing_parts([r for r in rows if (r.get("device") or "unknown") == d])
                                    for d in devices)


def _timing_parts(rows: Sequence[dict]) -> str:
    parts, total = [], 0.0
    for col in TIME_COLUMNS:
        values = [r[col] for r in rows if r.get(col) is not None]
        if values:
            total += sum(values)
            parts.append(f"{col[:-2]} {sum(values) / len(values):.0f} s per run ({min(values):.0f}-{max(values):.0f}, "
                         f"{len(values)} runs)")
    return "; ".join(parts) + f". Total {total / 3600:.2f} h."

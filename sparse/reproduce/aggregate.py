"""Aggregate every grid run into one table and a FLOPS-vs-NDCG@10 Pareto plot.

``python -m sparse.reproduce.aggregate [--output_root output/reproduce] [--beir_datasets a,b]``
reads ``<output_root>/manifest.json`` and each run's ``<run>/beir_eval<suffix>/results/<dataset>.json`` and
writes ``results.json``, ``results.csv``, ``results.md`` and ``pareto.png`` into
``output_root``. A run without every dataset's result is listed with its status and left out
of the averages and the plot; the command says which ones.

Columns: block, method, run, seed (and the frontier run a seed repeat repeats), lambda, threshold,
activation, NDCG@10 per dataset and their average, FLOPS and mean document and query length (all
averaged over the datasets, as the reference's avg_res), the wall time of each step
(``sparse.reproduce.times``). For a preset with a second stage, its NDCG@10, FLOPS and query
length (``2-stage ...``) and ``pareto_2stage.png``; for a preset with a ``report`` section, the
per-method table of ``sparse.reproduce.summary`` (NDCG@10 on each method's frontier at the
report's FLOPS, the seed spread there, the best run under the FLOPS budget against the reference).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Optional

from sparse.config import Command, key, run_command
from sparse.errors import UserError, write_text
from sparse.evaluation import plots
from sparse.reproduce import grid as grid_mod
from sparse.reproduce import seeds, summary, times
from sparse.reproduce.training_log import training_device
from sparse.reproduce.results import eval_results_dir, read_dataset_row
from sparse.reproduce.second_stage import stage_dir

AVG = "NDCG@10 avg"


def eval_dir(run: grid_mod.Run, output_dir: Optional[str] = None) -> str:
    """``<run output_dir>/beir_eval<suffix>``: the runner evaluates into the run's own directory
    (a second stage into its own, ``output_dir``)."""
    return eval_results_dir(output_dir or run.output_dir, run.values)


def run_datasets(run: grid_mod.Run, datasets: Optional[list[str]] = None) -> list[str]:
    if datasets:
        return list(datasets)
    from sparse.config import DEFAULT_BEIR_DATASETS

    raw = run.values.get("beir_datasets") or DEFAULT_BEIR_DATASETS
    return [d.strip() for d in str(raw).split(",") if d.strip()]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def dataset_means(folder: str, datasets: list[str]) -> tuple[dict, list[str]]:
    """NDCG@10 per dataset and (when every dataset has a result) NDCG@10, FLOPS, document and query
    length averaged over the datasets, from the evaluation folder ``folder``; and the missing datasets."""
    per = {ds: read_dataset_row(folder, ds) for ds in datasets}
    missing = [ds for ds, m in per.items() if m is None]
    out = {ds: None if per[ds] is None else per[ds]["NDCG@10"] for ds in datasets}
    out.update({AVG: None, "FLOPS": None, "doc length": None, "query length": None})
    if missing:
        return out, missing
    out[AVG] = _mean([per[ds]["NDCG@10"] for ds in datasets])
    for col, stat in (("FLOPS", "flops"), ("doc length", "d_length"), ("query length", "q_length")):
        vals = [per[ds][stat] for ds in datasets if per[ds].get(stat) is not None]
        out[col] = _mean(vals) if len(vals) == len(datasets) else None
    return out, []


def run_row(run: grid_mod.Run, datasets: list[str], second_stage: bool = False) -> dict:
    """One table row; ``status`` is ``done`` only when every dataset has a result. With
    ``second_stage``, the ``2-stage`` columns hold the run's IDF-fit evaluation (empty until done)."""
    row = {"block": run.block, "method": run.method, "run": run.name, "seed": run.seed, "seed repeat of": run.parent,
           "lambda": run.flops_d_lambda, "threshold": run.flops_threshold, "activation": run.activation}
    first, missing = dataset_means(eval_dir(run), datasets)
    row.update({f"NDCG@10 {ds}": first[ds] for ds in datasets})
    row.update({k: first[k] for k in (AVG, "FLOPS", "doc length", "query length")})
    if second_stage:
        second, _ = dataset_means(eval_dir(run, stage_dir(run)), datasets)
        row.update({f"2-stage {k}": second[k] for k in (AVG, "FLOPS", "query length")})
    spent = times.read(run.output_dir)
    row.update({f"{step} s": spent.get(step) for step in times.STEPS})
    row["device"] = training_device(run.output_dir)
    row["status"] = "not evaluated: " + ",".join(missing) if missing else "done"
    return row


SECOND_COLUMNS = ("2-stage NDCG@10 avg", "2-stage FLOPS", "2-stage query length")


def table_columns(rows: list[dict], second: bool) -> list[str]:
    """The markdown table's columns: the run, its figures, the second stage's, the wall times; a
    descriptive column every row leaves empty, and per-dataset NDCG@10 for a single dataset, are left out."""
    per_dataset = [c for c in rows[0] if c.startswith("NDCG@10 ") and c != AVG]
    optional = ["seed", "lambda", "threshold", "activation", *(per_dataset if len(per_dataset) > 1 else [])]
    columns = ["block", "method", "run"] + [c for c in optional if any(r.get(c) is not None for r in rows)]
    columns += [AVG, "FLOPS", "doc length", "query length", *(SECOND_COLUMNS if second else ())]
    timed = [c for c in (*summary.TIME_COLUMNS, "device") if any(r.get(c) is not None for r in rows)]
    return columns + timed + ["status"]


def aggregate(output_root: str, datasets: Optional[list[str]] = None, plot: bool = True) -> dict:
    """Write the JSON/CSV/markdown table and the Pareto plot; return paths and rows."""
    from sparse.evaluation import report

    runs = grid_mod.load_manifest(output_root)
    if not runs:
        raise UserError(f"{output_root}/manifest.json lists no runs")
    section = grid_mod.manifest_preset(output_root)
    second = bool(section.get("second_stage"))
    rows = [run_row(run, run_datasets(run, datasets), second) for run in runs]
    out = {"rows": rows}
    out["json"] = report.write_json(os.path.join(output_root, "results.json"), rows)
    out["csv"] = report.write_csv(os.path.join(output_root, "results.csv"), rows)
    done = [r for r in rows if r["status"] == "done"]
    out["missing"] = [f"{r['block']}/{r['run']} ({r['status']})" for r in rows if r["status"] != "done"]
    if section.get("seeds"):
        flops = {f"{r['block']}/{r['run']}": r["FLOPS"] for r in rows}
        out["missing"] += [f"the seed repeats of {m} (made once all its runs are evaluated)"
                           for m in seeds.waiting(runs, flops)]
    if second:
        out["missing"] += [f"{r['block']}/{r['run']} (second stage not evaluated)" for r in done
                           if r["2-stage NDCG@10 avg"] is None]
    # headings from level 3 down, so the file pastes into a docs page under its own section
    md = [f"{len(done)} of {len(rows)} runs evaluated; NDCG@10 per dataset and averaged, FLOPS and mean document "
          "and query length (non-zeros) averaged over the datasets."
          + (" `2-stage`: the same run after the query-side IDF fit." if second else ""), ""]
    md += method_section(rows, section.get("report"))
    md += ["### Every run", "", report.markdown_table(rows, columns=table_columns(rows, second), floatfmt=".4f"),
           summary.timing_line(rows)]
    plottable = [r for r in done if r["FLOPS"] is not None and not r["seed repeat of"]]
    if plot and plottable:
        out["png"] = plots.plot_pareto(plottable, os.path.join(output_root, "pareto.png"), x="FLOPS", y=AVG,
                                       group="method", label="run", y_label="NDCG@10 (average over datasets)",
                                       title="FLOPS vs NDCG@10, one line per method (Pareto front)")
        md += ["", "![FLOPS vs NDCG@10](pareto.png)"]
        fitted = [r for r in plottable if r.get("2-stage FLOPS") is not None]
        if fitted:
            out["png_2stage"] = plots.plot_pareto(
                fitted, os.path.join(output_root, "pareto_2stage.png"), x="2-stage FLOPS", y="2-stage NDCG@10 avg",
                group="method", label="run", y_label="NDCG@10 after the IDF fit",
                title="After the query-side IDF fit: FLOPS vs NDCG@10, one line per method")
            md += ["", "![after the IDF fit: FLOPS vs NDCG@10](pareto_2stage.png)"]
    if out["missing"]:
        md += ["", "### Missing", ""] + [f"- {m}" for m in out["missing"]]
    md_path = os.path.join(output_root, "results.md")
    write_text(md_path, "\n".join(md) + "\n")
    out["markdown"] = md_path
    return out


def method_section(rows: list[dict], spec: Optional[dict]) -> list[str]:
    """The per-method table (a preset's ``report``: ``flops_points``, ``flops_budget``, ``reference``)."""
    if not spec:
        return []
    from sparse.evaluation import report

    points = [float(f) for f in spec.get("flops_points") or []]
    budget = spec.get("flops_budget")
    table = summary.method_rows(rows, points, budget)
    if not table:
        return ["No method has an evaluated run yet.", ""]
    lines = ["### Per method", "",
             "NDCG@10 read on each method's frontier (its runs sorted by FLOPS, upper envelope, linear between "
             "neighbours; out of range outside the method's FLOPS span); seeds: the run nearest that FLOPS and its "
             "repeats, mean ± std (min).", "", report.markdown_table(table, floatfmt=".4f")]
    if budget is not None:
        lines += [summary.verdict(rows, float(budget), spec.get("reference")), ""]
    return lines


@dataclass
class AggregateArguments:
    """Options of ``python -m sparse.reproduce.aggregate``."""

    output_root: str = key(grid_mod.DEFAULT_OUTPUT_ROOT, "The grid's output root (configs, runs, results).")
    beir_datasets: Optional[str] = key(None, "Comma list of datasets; null: each run's beir_datasets.")


COMMAND = Command("python -m sparse.reproduce.aggregate", "Aggregate the grid's runs into a table and a Pareto plot.",
                  options=AggregateArguments)


def main(argv=None) -> int:
    """``python -m sparse.reproduce.aggregate``: the one command-line reader, then ``report``."""
    return run_command(COMMAND, report, argv)


def report(args: AggregateArguments) -> int:
    """Aggregate and print the table."""
    out = aggregate(args.output_root, args.beir_datasets.split(",") if args.beir_datasets else None)
    print(open(out["markdown"], encoding="utf-8").read())
    for missing in out["missing"]:
        print(f"missing: {missing}", file=sys.stderr)
    print(f"wrote {out['csv']}, {out['markdown']}, {out['json']}" + (f", {out['png']}" if "png" in out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Aggregate every grid run into one table and a FLOPS-vs-NDCG@10 Pareto plot.

``python -m sparse.reproduce.aggregate [--output_root output/reproduce] [--beir_datasets a,b]``
reads ``<output_root>/manifest.json`` and each run's ``<run>/beir_eval<suffix>/results/<dataset>.json`` and
writes ``results.json``, ``results.csv``, ``results.md`` and ``pareto.png`` into
``output_root``. A run without every dataset's result is listed with its status and left out
of the averages and the plot; the command says which ones.

Columns: block, method, run, lambda, threshold, activation, NDCG@10 per dataset, their average,
FLOPS and mean document length (both averaged over the datasets, as the reference's avg_res).
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
from sparse.reproduce.results import eval_results_dir, read_dataset_row

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


def run_row(run: grid_mod.Run, datasets: list[str]) -> dict:
    """One table row; ``status`` is ``done`` only when every dataset has a result."""
    row = {"block": run.block, "method": run.method, "run": run.name,
           "lambda": run.flops_d_lambda, "threshold": run.flops_threshold, "activation": run.activation}
    per = {ds: read_dataset_row(eval_dir(run), ds) for ds in datasets}
    missing = [ds for ds, m in per.items() if m is None]
    for ds in datasets:
        row[f"NDCG@10 {ds}"] = None if per[ds] is None else per[ds]["NDCG@10"]
    if missing:
        row.update({AVG: None, "FLOPS": None, "doc length": None,
                    "status": "not evaluated: " + ",".join(missing)})
        return row
    row[AVG] = _mean([per[ds]["NDCG@10"] for ds in datasets])
    for col, key in (("FLOPS", "flops"), ("doc length", "d_length")):
        vals = [per[ds][key] for ds in datasets if per[ds].get(key) is not None]
        row[col] = _mean(vals) if len(vals) == len(datasets) else None
    row["status"] = "done"
    return row


def aggregate(output_root: str, datasets: Optional[list[str]] = None, plot: bool = True) -> dict:
    """Write the JSON/CSV/markdown table and the Pareto plot; return paths and rows."""
    from sparse.evaluation import report

    runs = grid_mod.load_manifest(output_root)
    if not runs:
        raise UserError(f"{output_root}/manifest.json lists no runs")
    rows = [run_row(run, run_datasets(run, datasets)) for run in runs]
    out = {"rows": rows}
    out["json"] = report.write_json(os.path.join(output_root, "results.json"), rows)
    out["csv"] = report.write_csv(os.path.join(output_root, "results.csv"), rows)
    done = [r for r in rows if r["status"] == "done"]
    plottable = [r for r in done if r["FLOPS"] is not None]
    md = ["# Reproduction grid results", "",
          f"{len(done)} of {len(rows)} runs evaluated; NDCG@10 per dataset and averaged, "
          "FLOPS and mean document length averaged over the datasets.", ""]
    md.append(report.markdown_table(rows, floatfmt=".4f"))
    if plot and plottable:
        png = plots.plot_pareto(plottable, os.path.join(output_root, "pareto.png"), x="FLOPS", y=AVG,
                                group="method", label="run",
                                y_label="NDCG@10 (average over datasets)",
                                title="FLOPS vs NDCG@10, one line per method (Pareto front)")
        out["png"] = png
        md += ["", "![FLOPS vs NDCG@10](pareto.png)"]
    md_path = os.path.join(output_root, "results.md")
    write_text(md_path, "\n".join(md) + "\n")
    out["markdown"] = md_path
    out["missing"] = [f"{r['block']}/{r['run']} ({r['status']})" for r in rows if r["status"] != "done"]
    return out


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

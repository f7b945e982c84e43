"""Result writers: JSON, CSV and markdown tables over datasets (with an average row) and checkpoints.

A *result* is the dict written to ``results/<dataset>.json`` by the BEIR evaluation:
``{"dataset", "metrics": {"NDCG@10", ...}, "sparsity": {"flops", "q_length", "d_length", ...},
"timings": {...}, ...}``. ``result_row`` flattens one into a table row; the table functions take
plain rows (dicts), so plots and other reports can reuse them.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Optional, Sequence

from sparse.errors import write_atomic, write_text

METRIC_COLUMNS = ("NDCG@10", "NDCG@100", "Recall@100", "Recall@1000", "MRR@10", "MAP@100")
SPARSITY_COLUMNS = ("flops", "q_length", "d_length")
INDEX_COLUMNS = ("postings", "index_bytes", "touched_per_query")  # sparse.evaluation.footprint
LATENCY_COLUMNS = ("p50_ms", "p99_ms")
DATASET_COLUMNS = ("dataset",) + METRIC_COLUMNS + SPARSITY_COLUMNS + INDEX_COLUMNS + LATENCY_COLUMNS


def write_json(path: str, obj: Any) -> str:
    """``obj`` as JSON, atomically (``sparse.errors.write_atomic``)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def result_row(result: dict) -> dict:
    """One table row from a result dict: dataset, the metrics, the sparsity, index-size and latency figures."""
    row = {"dataset": result.get("dataset")}
    row.update({k: result.get("metrics", {}).get(k) for k in METRIC_COLUMNS})
    row.update({k: result.get("sparsity", {}).get(k) for k in SPARSITY_COLUMNS})
    row.update({k: (result.get("index") or {}).get(k) for k in INDEX_COLUMNS})
    row.update({k: (result.get("latency") or {}).get(k) for k in LATENCY_COLUMNS})
    return row


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def average_row(rows: Sequence[dict], columns: Sequence[str], label_column: str, label: str = "average") -> dict:
    """Arithmetic mean over rows of every numeric column (None where a row lacks the value)."""
    out = {label_column: label}
    for col in columns:
        if col == label_column:
            continue
        vals = [r.get(col) for r in rows]
        out[col] = sum(vals) / len(vals) if vals and all(_is_number(v) for v in vals) else None
    return out


def columns_of(rows: Sequence[dict]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    return cols


def write_csv(path: str, rows: Sequence[dict], columns: Optional[Sequence[str]] = None) -> str:
    columns = list(columns or columns_of(rows))

    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    return write_atomic(path, write)


def read_csv(path: str) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _fmt(v, floatfmt: str) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return format(v, floatfmt)
    return str(v).replace("|", "\\|")


def markdown_table(rows: Sequence[dict], columns: Optional[Sequence[str]] = None, floatfmt: str = ".4f",
                   average: bool = False, label_column: Optional[str] = None) -> str:
    """A GitHub markdown table; ``average`` appends the mean row (labelled in ``label_column``)."""
    columns = list(columns or columns_of(rows))
    rows = list(rows)
    if average and rows:
        rows.append(average_row(rows, columns, label_column or columns[0]))
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c), floatfmt) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_dataset_summary(out_dir: str, results: Sequence[dict], name: str = "summary") -> dict:
    """``<name>.csv`` (+ average row) and ``<name>.md`` over datasets; returns the average row."""
    rows = [result_row(r) for r in results]
    avg = average_row(rows, DATASET_COLUMNS, "dataset")
    write_csv(os.path.join(out_dir, f"{name}.csv"), rows + [avg], DATASET_COLUMNS)
    write_text(os.path.join(out_dir, f"{name}.md"), markdown_table(rows, DATASET_COLUMNS, average=True,
                                                                   label_column="dataset"))
    return avg


def checkpoint_rows(per_checkpoint: dict[str, Sequence[dict]], metric: str = "NDCG@10") -> list[dict]:
    """One row per checkpoint: its averages, then ``metric`` of every dataset."""
    rows = []
    for ckpt, results in per_checkpoint.items():
        dataset_rows = [result_row(r) for r in results]
        avg = average_row(dataset_rows, DATASET_COLUMNS, "dataset")
        row = {"checkpoint": ckpt}
        row.update({f"avg {c}": avg.get(c) for c in (metric,) + SPARSITY_COLUMNS})
        row.update({r["dataset"]: r.get(metric) for r in dataset_rows})
        rows.append(row)
    return rows


def write_checkpoint_summary(out_dir: str, per_checkpoint: dict[str, Sequence[dict]],
                             name: str = "checkpoints") -> list[dict]:
    rows = checkpoint_rows(per_checkpoint)
    write_csv(os.path.join(out_dir, f"{name}.csv"), rows)
    write_text(os.path.join(out_dir, f"{name}.md"), markdown_table(rows))
    return rows


def write_trec_run(path: str, run: dict[str, dict[str, float]], tag: str = "sparse") -> str:
    """TREC run format: ``qid Q0 docid rank score tag``, per query by score descending, id ascending."""
    def write(f) -> None:
        for qid in sorted(run):
            hits = sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (did, score) in enumerate(hits, 1):
                f.write(f"{qid} Q0 {did} {rank} {score:.6f} {tag}\n")
    return write_atomic(path, write)


def read_trec_run(path: str) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            qid, _, did, _, score, _ = line.split()
            run.setdefault(qid, {})[did] = float(score)
    return run

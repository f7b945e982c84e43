"""Reading what ``evaluate_beir.py`` wrote: one dataset's figures from ``results/<dataset>.json``.

The result format is that of ``sparse.evaluation.report`` (``metrics`` and ``sparsity``
sections); ``report.result_row`` flattens it to ``NDCG@10``, ``Recall@100``, ``flops``,
``q_length``, ``d_length``, ... which is what the demo and the grid tables show.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from sparse.errors import UserError
from sparse.evaluation import report

LABELS = {"NDCG@10": "NDCG@10", "Recall@100": "Recall@100", "flops": "FLOPS",
          "d_length": "mean doc length", "q_length": "mean query length"}


def eval_results_dir(output_dir: str, values: Optional[dict] = None) -> str:
    """Where ``evaluate_beir.py --output_dir output_dir`` (CLI mode) writes, given the config
    keys it was run with: ``<output_dir>/beir_eval<suffix>`` (suffix as in the reference)."""
    from sparse.config import resolve
    from sparse.evaluation.runner import suffix_of

    keys = ("use_two_phase", "query_prune", "corpus_max_seq_length", "eval_max_seq_length", "prune_ratio",
            "doc_prune_type", "doc_prune_value", "doc_window_length", "doc_window_stride", "doc_window_combine")
    cfg = resolve({k: v for k, v in (values or {}).items() if k in keys},
                  sections=("model", "data", "eval", "serving", "windows"))
    return os.path.join(output_dir, f"beir_eval{suffix_of(cfg)}")


def result_path(eval_dir: str, dataset: str) -> str:
    return os.path.join(eval_dir, "results", f"{dataset}.json")


def read_dataset_row(eval_dir: str, dataset: str, required: tuple = ("NDCG@10",)) -> Optional[dict]:
    """``report.result_row`` of ``dataset`` under ``eval_dir``; None if not evaluated yet."""
    path = result_path(eval_dir, dataset)
    if not os.path.isfile(path):
        return None
    try:
        row = report.result_row(report.read_json(path))
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise UserError(f"cannot read evaluation result {path}: {exc}") from None
    missing = [m for m in required if row.get(m) is None]
    if missing:
        raise UserError(f"{path} has no value for {missing}")
    return row

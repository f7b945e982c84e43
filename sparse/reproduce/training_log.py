"""Per-step training records of a ``train_ir.py`` run, for the training-curve plots.

Sources, first found wins:
1. ``<output_dir>/train_log.jsonl`` (one JSON object per logging step, if the trainer writes it);
2. ``log_history`` of the newest ``checkpoint-*/trainer_state.json`` (HF Trainer state);
3. the ``step N: {...}`` lines the trainer writes to ``<output_dir>/train.log`` every
   ``logging_steps`` (a Python dict literal of the logged values).

Each record is a dict with ``step`` plus the logged keys (``ranking_loss``, ``flops_loss``,
``flops_d``, ``lambda_d``, ``doc_nnz``, ``query_nnz``, ``loss``, ``learning_rate``, ...).
"""

from __future__ import annotations

import ast
import glob
import json
import os
import re
from typing import Optional

STEP_LINE = re.compile(r" - step (\d+): (\{.*\})\s*$")


def _from_jsonl(path: str) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def _from_trainer_state(output_dir: str) -> list[dict]:
    states = glob.glob(os.path.join(output_dir, "checkpoint-*", "trainer_state.json"))
    best, best_step = None, -1
    for path in states:
        m = re.search(r"checkpoint-(\d+)", path)
        if m and int(m.group(1)) > best_step:
            best, best_step = path, int(m.group(1))
    if best is None:
        return []
    with open(best, encoding="utf-8") as f:
        history = json.load(f).get("log_history", [])
    return [dict(r) for r in history if "step" in r and "ranking_loss" in r]


def _from_train_log(path: str) -> list[dict]:
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = STEP_LINE.search(line)
            if not m:
                continue
            try:
                values = ast.literal_eval(m.group(2))
            except (ValueError, SyntaxError):
                continue
            if isinstance(values, dict):
                out.append({"step": int(m.group(1)), **values})
    return out


DEVICE_LINE = re.compile(r"process \d+ of (\d+), device (\w+)")


def training_device(output_dir: str) -> Optional[str]:
    """Where the run trained, from its ``train.log``: ``cpu``, ``cuda``, or ``cuda x4`` under torchrun."""
    path = os.path.join(output_dir, "train.log")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = DEVICE_LINE.search(line)
            if m:
                return m.group(2) + (f" x{m.group(1)}" if int(m.group(1)) > 1 else "")
    return None


def read_training_log(output_dir: str) -> list[dict]:
    """The run's per-step records (possibly empty), sorted by step, one per step."""
    records: list[dict] = []
    jsonl = os.path.join(output_dir, "train_log.jsonl")
    if os.path.isfile(jsonl):
        records = _from_jsonl(jsonl)
    if not records:
        records = _from_trainer_state(output_dir)
    if not records and os.path.isfile(os.path.join(output_dir, "train.log")):
        records = _from_train_log(os.path.join(output_dir, "train.log"))
    by_step = {}
    for r in records:
        if isinstance(r.get("step"), int):
            by_step[r["step"]] = r  # a resumed run logs a step again: keep the latest
    return [by_step[s] for s in sorted(by_step)]


CURVES = [("ranking_loss", "ranking loss"), ("flops_loss", "FLOPS loss (lambda x FLOPS)"),
          ("doc_nnz", "mean document length (non-zeros)")]

# the query-side fit (``freeze_document_encoder``) logs its own values
IDF_FIT_CURVES = [("loss", "distillation loss (KL to the teachers)"), ("query_nnz", "mean query length (non-zeros)"),
                  ("idf_shift", "mean |IDF change| of training-query tokens")]


def curves_for(records: list[dict]) -> list[tuple[str, str]]:
    """The curves a run's records hold: the encoder training's, or the IDF fit's."""
    curves = CURVES if any("ranking_loss" in r for r in records) else IDF_FIT_CURVES
    return [c for c in curves if any(c[0] in r for r in records)]  # logs of older runs may lack one

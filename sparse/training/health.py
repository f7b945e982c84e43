"""Training health: a per-logging-step JSON log and the collapse watch.

Every logging step appends one line to ``<output_dir>/train_log.jsonl`` with the step's logged
values at full precision (loss terms, grad norm, the learning rate of every optimizer group,
document and query non-zeros) and ``vocab_inactive``: the fraction of vocabulary entries that no
document of the last ``window`` training batches used (a ReLU that stays below zero for every
document gets no gradient from the ranking loss, so a rising value means the model is losing
terms it cannot win back).

Collapse watch: the first logged mean document non-zeros is the reference ``start``. When a
later value falls below ``collapse_ratio * reference`` a warning names the step and the figures;
``reference`` is ``start``, or ``target_doc_nnz`` when the user asked the regularizer to shrink
documents to that size (then only falling below half of the target is a collapse). With
``stop_on_collapse`` the run saves a checkpoint and stops.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Optional

import torch

logger = logging.getLogger(__name__)


class TrainingHealth:
    """Tracks vocabulary activity across batches, writes ``train_log.jsonl`` and spots collapse."""

    def __init__(self, vocab_size: int, output_dir: Optional[str], window: int = 100, collapse_ratio: float = 0.5,
                 target_doc_nnz: Optional[float] = None):
        self.window = int(window)
        self.collapse_ratio = float(collapse_ratio)
        self.target_doc_nnz = target_doc_nnz
        self.path = os.path.join(output_dir, "train_log.jsonl") if output_dir else None
        self.batches = 0
        self.vocab_size = vocab_size
        self.last_active: Optional[torch.Tensor] = None  # on the documents' device: no copy per step
        self.start_doc_nnz: Optional[float] = None
        self.collapsed_at: Optional[int] = None

    def observe(self, docs: torch.Tensor) -> None:
        """Record which vocabulary entries the documents of one training batch used."""
        if self.last_active is None:
            self.last_active = torch.full((self.vocab_size,), -(10 ** 9), dtype=torch.long, device=docs.device)
        self.last_active[(docs > 0).any(dim=0)] = self.batches
        self.batches += 1

    def inactive_fraction(self) -> float:
        """Fraction of vocabulary entries unused by every document of the last ``window`` batches."""
        if self.last_active is None:
            return math.nan
        recent = self.last_active > self.batches - 1 - self.window
        return float(1.0 - recent.float().mean())

    def reference_nnz(self) -> Optional[float]:
        return self.target_doc_nnz if self.target_doc_nnz is not None else self.start_doc_nnz

    def check(self, step: int, doc_nnz: Optional[float]) -> Optional[str]:
        """A warning text when documents have collapsed at this step, else None."""
        if doc_nnz is None:
            return None
        if self.start_doc_nnz is None:
            self.start_doc_nnz = doc_nnz
        reference = self.reference_nnz()
        if reference and doc_nnz < self.collapse_ratio * reference:
            self.collapsed_at = step if self.collapsed_at is None else self.collapsed_at
            what = f"the target_doc_nnz {reference:g}" if self.target_doc_nnz is not None else \
                f"{reference:.1f} at the first log"
            return (f"!!! COLLAPSE: documents have {doc_nnz:.1f} non-zeros at step {step}, below "
                    f"{self.collapse_ratio:g} x {what}; {self.inactive_fraction():.1%} of the vocabulary was unused "
                    f"in the last {self.window} batches. See docs/training.md (lower the learning rate or "
                    "flops_d_lambda; distillation losses need score_norm: std). If the regularizer is meant to "
                    "shrink documents this far, set target_doc_nnz to the size aimed at")
        return None

    def write(self, step: int, logs: dict) -> None:
        """Append the step's values (numbers at full precision) to ``train_log.jsonl``."""
        if not self.path:
            return
        record = {"step": step}
        for key, value in logs.items():
            if isinstance(value, (int, float, str, bool)) or value is None:
                record[key] = value
            elif isinstance(value, torch.Tensor) and value.numel() == 1:
                record[key] = float(value)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

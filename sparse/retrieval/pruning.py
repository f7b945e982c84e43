"""Document pruning as the OpenSearch ``sparse_encoding`` ingest processor does it (``prune_type``,
``prune_ratio``; neural-search ``PruneUtils``, 2.19+), applied to each vector on its own:

    max_ratio   keep w >= ratio * max_t w                       ratio in [0, 1)
    top_k       keep the k largest weights                       k an integer >= 1
    alpha_mass  keep the largest weights, in decreasing order,   alpha in [0, 1)
                while their running sum <= alpha * sum_t w
    abs_value   keep w >= value                                  value >= 0

Ties are broken by token id (the smaller id is kept first), so a pruned batch is a pure function
of the vectors. ``none`` keeps every weight. The model key ``prune_ratio`` prunes inside the
encoder with the same max_ratio rule, except that it keeps ``w > ratio * max`` (the reference's
strict test): the two differ only for a weight exactly at the threshold.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from sparse.errors import ConfigError
from sparse.modeling.vectors import SparseBatch
from sparse.retrieval.base import row_max

PRUNE_TYPES = ("none", "max_ratio", "top_k", "alpha_mass", "abs_value")
RANGES = {"max_ratio": "in [0, 1)", "top_k": "an integer >= 1", "alpha_mass": "in [0, 1)", "abs_value": ">= 0"}


def check_prune(prune_type: str, value: Optional[float], names: tuple = ("doc_prune_type", "doc_prune_value")) -> None:
    """A ConfigError naming the keys when ``value`` does not fit ``prune_type`` (see the module docstring)."""
    type_key, value_key = names
    if prune_type not in PRUNE_TYPES:
        raise ConfigError(f"{type_key} must be one of {PRUNE_TYPES}, got {prune_type!r}")
    if prune_type == "none":
        if value is not None:
            raise ConfigError(f"{value_key} {value} is set but {type_key} is none; set {type_key} too "
                              f"({', '.join(PRUNE_TYPES[1:])})")
        return
    if value is None:
        raise ConfigError(f"{type_key} {prune_type} needs {value_key} ({RANGES[prune_type]})")
    if not value_fits(prune_type, value):
        raise ConfigError(f"{value_key} for {type_key} {prune_type} must be {RANGES[prune_type]}, got {value!r}")


def value_fits(prune_type: str, value: float) -> bool:
    """Whether ``value`` lies in the range of ``prune_type`` (``RANGES``)."""
    return {"max_ratio": 0 <= value < 1, "alpha_mass": 0 <= value < 1, "abs_value": value >= 0,
            "top_k": value >= 1 and float(value).is_integer()}[prune_type]


def _rank_in_row(batch: SparseBatch, row_of: np.ndarray) -> np.ndarray:
    """Per row, the order of its entries by weight descending, then token id (positions into the batch)."""
    return np.lexsort((batch.indices, -batch.values, row_of))


def prune_documents(batch: SparseBatch, prune_type: str, value: Optional[float]) -> SparseBatch:
    """``batch`` with each vector pruned by ``prune_type`` and ``value`` (see the module docstring)."""
    check_prune(prune_type, value)
    if prune_type == "none" or batch.nnz == 0:
        return batch
    row_of = batch.row_of_entries()
    if prune_type == "max_ratio":
        return batch.keep(batch.values >= np.float32(value) * row_max(batch)[row_of])
    if prune_type == "abs_value":
        return batch.keep(batch.values >= np.float32(value))
    order = _rank_in_row(batch, row_of)  # rows stay in order, so each row's entries are one run
    starts = batch.indptr[row_of[order]]
    if prune_type == "top_k":
        keep_sorted = np.arange(batch.nnz) - starts < int(value)
    else:  # alpha_mass: the running sum of each row, sorted, against alpha x the row's total
        sorted_values = batch.values[order].astype(np.float64)
        running = np.cumsum(sorted_values)
        before_row = np.concatenate([[0.0], running])[starts]
        totals = np.bincount(row_of, weights=batch.values.astype(np.float64), minlength=len(batch))
        keep_sorted = running - before_row <= value * totals[row_of[order]]
    keep = np.zeros(batch.nnz, bool)
    keep[order] = keep_sorted
    return batch.keep(keep)

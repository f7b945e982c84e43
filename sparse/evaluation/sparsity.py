"""Sparsity figures of an evaluation (the statistics the reference's ``evaluate_beir.py`` reports).

With p_q(t) the fraction of queries in which token t is active (weight > 0) and p_d(t) the
fraction of documents in which it is active:

    flops    = sum_t p_q(t) * p_d(t)   expected posting-list intersections per (query, doc) pair
    q_length = sum_t p_q(t)            mean number of non-zero tokens per query
    d_length = sum_t p_d(t)            mean number of non-zero tokens per document

The figures are computed on the vectors that were searched (after ``query_prune``), special
tokens included where the model activates them.
"""

from __future__ import annotations

import numpy as np

from sparse.modeling.vectors import SparseBatch


def activation_rate(batch: SparseBatch) -> np.ndarray:
    """p(t): fraction of vectors in which token t has a non-zero weight."""
    if len(batch) == 0:
        return np.zeros(batch.vocab_size)
    active = batch.indices[batch.values > 0]
    return np.bincount(active, minlength=batch.vocab_size).astype(np.float64) / len(batch)


def sparsity_stats(queries: SparseBatch, docs: SparseBatch) -> dict:
    p_q, p_d = activation_rate(queries), activation_rate(docs)
    q_len, d_len = queries.lengths(), docs.lengths()
    return {
        "flops": float(p_q @ p_d),
        "q_length": float(p_q.sum()),
        "d_length": float(p_d.sum()),
        "q_length_max": int(q_len.max()) if len(q_len) else 0,
        "d_length_max": int(d_len.max()) if len(d_len) else 0,
        "empty_queries": int((q_len == 0).sum()),
        "empty_docs": int((d_len == 0).sum()),
        "n_queries": len(queries),
        "n_docs": len(docs),
    }

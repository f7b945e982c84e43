"""How big the index is and how much a query costs: the figures reported with every evaluation.

With P the postings (the non-zero document weights the index holds: after document pruning, and
after quantization for the embedded engine, which keeps no posting for a weight rounded to 0), df(t)
the documents holding token t, and Q the searched queries (after query pruning):

    postings          P = sum_d |d|
    bytes[format]     P * (4 + value_bytes(format))     4: the int32 id of each posting; value:
                      float 4 (float32), opensearch 2 (rank_features' 16-bit term frequency),
                      seismic 1 (a byte), impact 1, 2 or 4 (the smallest integer width holding the
                      largest round(w * scale))
    touched_per_query mean over q in Q of sum_{t in q} df(t)   (posting entries a query reads)

The byte figures are the raw postings, an estimate of what each format stores: engines compress
document ids (Lucene's block-packed deltas) and add a term dictionary, skip data and, for SEISMIC,
a forward index and cluster summaries. They compare formats and prune settings on one scale; they
are not a disk size. Latency is the embedded engine's, one query at a time in one thread, on the
machine that ran the evaluation.
"""

from __future__ import annotations

import numpy as np

from sparse.modeling.vectors import SparseBatch
from sparse.retrieval.precision import IMPACT_SCALE, PRECISIONS, TERM_ID_BYTES, value_bytes


def index_bytes(postings: int, precision: str, largest_weight: float = 0.0, impact_scale: float = IMPACT_SCALE) -> int:
    """Bytes of ``postings`` postings in ``precision`` (see the module docstring)."""
    largest_impact = round(largest_weight * impact_scale)
    return int(postings) * (TERM_ID_BYTES + value_bytes(precision, largest_impact))


def postings_touched(queries: SparseBatch, docs: SparseBatch) -> np.ndarray:
    """Per query, the posting entries its tokens' lists hold: sum over its tokens of df(t)."""
    df = np.bincount(docs.indices, minlength=docs.vocab_size).astype(np.int64)
    return np.bincount(queries.row_of_entries(), weights=df[queries.indices], minlength=len(queries))


def footprint(docs: SparseBatch, queries: SparseBatch, precision: str, impact_scale: float = IMPACT_SCALE) -> dict:
    """Postings, bytes in ``precision`` and in every format, and postings touched per query."""
    largest = float(docs.values.max()) if docs.nnz else 0.0
    by_format = {p: index_bytes(docs.nnz, p, largest, impact_scale) for p in PRECISIONS}
    touched = postings_touched(queries, docs)
    return {"postings": docs.nnz, "index_bytes": by_format[precision], "precision": precision,
            "bytes_by_format": by_format,
            "touched_per_query": float(touched.mean()) if len(touched) else 0.0}


def latency_stats(seconds: np.ndarray) -> dict:
    """p50 / p99 / mean query latency in milliseconds, and how many queries were timed."""
    if len(seconds) == 0:
        return {"queries_timed": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None}
    ms = np.asarray(seconds) * 1000.0
    return {"queries_timed": int(len(ms)), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}

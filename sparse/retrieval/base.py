"""The ``Index`` protocol shared by evaluation, hard-negative mining and KD preparation.

Every engine scores a query ``q`` against a document ``d`` with the plain dot product of their
sparse vectors over the vocabulary,

    score(q, d) = sum_t  w_q(t) * w_d(t)

(OpenSearch ``rank_features`` stores ``w_d`` at 9 significant bits, see ``precision``), and
returns, per query, the ``k`` documents with the highest score, best first. Only documents that
share at least one token with the query (score > 0) are returned, as an inverted index does, so
a query may get fewer than ``k`` hits. Ties are broken by document id (ascending string order),
so a ranking is a pure function of the data.

Engines differ in what callers must know about them; each says so through class attributes
(readable before an index is built, via ``index_class(engine)``) instead of callers testing the
engine's name or type:

* ``persistent``: the documents live in a named index outside this process (a cluster); it can
  outlive the process and be searched again without ingesting (``verify_count``), and it needs an
  ``index_name``, ``skip_ingest`` and ``delete_on_close`` when built;
* ``needs_token_names``: the engine addresses vocabulary entries by token string, so it is built
  with ``id_to_token`` (the encoder's token of every vocabulary id).
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from sparse.modeling.vectors import SparseBatch

SearchResult = tuple[list[list[str]], list[list[float]]]
ENGINES = ("embedded", "opensearch")  # the engine names of ``build_index``


@runtime_checkable
class Index(Protocol):
    """What an engine offers. ``add`` may be called several times; ids must be unique."""

    persistent: bool
    needs_token_names: bool

    def add(self, ids: list[str], vectors: SparseBatch) -> None:
        """Index ``vectors[i]`` under ``ids[i]``."""

    def search(self, queries: SparseBatch, k: int) -> SearchResult:
        """Per query: (doc ids, scores) of its top ``k``, best first, ties by doc id."""

    def close(self) -> None:
        """Release resources (connections, memory); the index may not be used afterwards."""

    def size_bytes(self) -> Optional[int]:
        """Storage of the indexed documents in bytes, or None where the engine cannot tell."""

    def verify_count(self, expected: int) -> None:
        """Persistent engines: use the documents already indexed, which must number ``expected``."""

    def __len__(self) -> int:
        """Number of documents indexed."""


def prune_queries(queries: SparseBatch, ratio: float) -> SparseBatch:
    """Drop every query token with ``w <= ratio * max_t w`` of its query (reference ``query_prune``).

    ``ratio <= 0`` returns the batch unchanged (all stored weights are already > 0).
    """
    if not ratio or ratio <= 0:
        return queries
    if ratio >= 1:
        raise ValueError(f"query_prune must be in [0, 1), got {ratio}")
    row_of = queries.row_of_entries()
    keep = queries.values > ratio * row_max(queries)[row_of]
    return queries.keep(keep)


def row_max(batch: SparseBatch) -> np.ndarray:
    """The largest weight of every vector (0 for an empty one)."""
    out = np.zeros(len(batch), np.float32)
    if batch.nnz:
        np.maximum.at(out, batch.row_of_entries(), batch.values)
    return out


def rank_hits(ids: Sequence[str], scores: Sequence[float], k: int) -> tuple[list[str], list[float]]:
    """Sort hits by (score descending, id ascending) and keep the first ``k``."""
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:k]
    return [ids[i] for i in order], [float(scores[i]) for i in order]


def check_k(k: int) -> int:
    """``k`` as an int, or a ValueError when it is not a positive integer."""
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)

"""Documents indexed as token windows, one vector per window: the top k documents by their best window.

A window is indexed under ``<doc id>\\0<window number, zero-padded>``: ``\\0`` sorts below every other
character, so windows sort by document id first, and the engine's tie-break by id (ascending) is
the documents' tie-break. A document's score is the maximum of its windows' scores, as an
OpenSearch ``nested`` query with ``score_mode: max`` over chunks gives.

Exactness: searching ``k * m`` windows (m: the most windows any document has) finds the top ``k``
documents. For a document d of the true top k, every window ranked above d's best window belongs to
a document ranked above d or to d itself: at most k documents, so at most ``k * m`` windows.
"""

from __future__ import annotations

from typing import Sequence

from sparse.modeling.vectors import SparseBatch
from sparse.retrieval.base import SearchResult

SEP = "\0"


def window_ids(doc_ids: Sequence[str], counts: Sequence[int]) -> list[str]:
    """The index id of every window, documents in order, ``counts[i]`` windows for ``doc_ids[i]``."""
    return [f"{d}{SEP}{j:06d}" for d, n in zip(doc_ids, counts) for j in range(int(n))]


def document_of(window_id: str) -> str:
    """The document id of a window's index id."""
    return window_id.rsplit(SEP, 1)[0]


def search_best_window(index, queries: SparseBatch, k: int, max_windows: int) -> SearchResult:
    """Per query the top ``k`` documents of an ``index`` of windows, each scored by its best window."""
    hit_ids, hit_scores = index.search(queries, k * max(1, int(max_windows)))
    out_ids, out_scores = [], []
    for ids, scores in zip(hit_ids, hit_scores):
        seen: set[str] = set()
        docs, best = [], []
        for wid, score in zip(ids, scores):  # best first, ties by id: a document's first window is its best
            doc = document_of(wid)
            if doc not in seen:
                seen.add(doc)
                docs.append(doc)
                best.append(score)
                if len(docs) == k:
                    break
        out_ids.append(docs)
        out_scores.append(best)
    return out_ids, out_scores

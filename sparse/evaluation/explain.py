"""Why each top document scored what it did: the per-query file that ``sparse compare`` reads.

``runs/<dataset>.explain.jsonl`` holds one JSON object per query with qrels (ids sorted)::

    {"query_id", "query", "metrics": {"NDCG@10": ..., ...},      # this query's figures
     "judged": {doc_id: grade, ...},                              # its qrels
     "hits": [{"doc_id", "rank", "score", "text",                 # the run's top explain_top_k
               "tokens": [[token, w_q, w_d], ...]}, ...]}         # every token both vectors hold

A hit's ``score`` is the run's; ``tokens`` lists every token of the searched query vector (after
``query_prune``) that the document vector holds, with both weights, largest contribution
``w_q * w_d`` first, so the contributions sum to the score (the engine adds in float32: equal to
about 1e-6 relative). Document weights are those the index stores (at ``index_precision``); a
document indexed as windows is explained by its best window. ``text`` is the document's first
``SNIPPET_CHARS`` characters. Computing this needs only what the evaluation holds anyway, so a
comparison of two evaluations needs neither model.
"""

from __future__ import annotations

import json
from typing import Callable, Sequence

import numpy as np

from sparse.errors import UserError, write_atomic
from sparse.modeling.vectors import SparseBatch

SNIPPET_CHARS = 240
Row = tuple[np.ndarray, np.ndarray]  # (token ids, weights) of one vector


def contributions(query: Row, doc: Row) -> list[tuple[int, float, float]]:
    """``(token id, w_q, w_d)`` of every token both vectors hold, largest ``w_q * w_d`` first (ties by id)."""
    q_ids, q_vals = query
    d_ids, d_vals = doc
    common, qi, di = np.intersect1d(q_ids, d_ids, assume_unique=True, return_indices=True)
    rows = [(int(t), float(q_vals[a]), float(d_vals[b])) for t, a, b in zip(common, qi, di)]
    return sorted(rows, key=lambda r: (-r[1] * r[2], r[0]))


def best_row(query: Row, rows: Sequence[Row]) -> Row:
    """The row of ``rows`` with the highest dot product with ``query`` (the first on ties)."""
    scores = [sum(q * d for _, q, d in contributions(query, r)) for r in rows]
    return rows[int(np.argmax(scores))]


def explain_rows(query_ids: Sequence[str], query_texts: dict[str, str], queries: SparseBatch,
                 run: dict[str, dict[str, float]], per_query: dict[str, dict], qrels: dict[str, dict[str, int]],
                 doc_rows: Callable[[str], Sequence[Row]], doc_text: Callable[[str], str],
                 id_to_token: Sequence[str], top_k: int) -> list[dict]:
    """One explain object per query of ``query_ids`` with qrels (``queries[i]`` is ``query_ids[i]``'s
    searched vector; ``doc_rows(doc_id)``: the stored vectors of a document, one per window)."""
    out = []
    for i, qid in enumerate(query_ids):
        if qid not in qrels:
            continue
        query = queries.row(i)
        hits = sorted(run.get(qid, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        explained = []
        for rank, (doc_id, score) in enumerate(hits, 1):
            tokens = contributions(query, best_row(query, doc_rows(doc_id)))
            explained.append({"doc_id": doc_id, "rank": rank, "score": float(score),
                              "text": doc_text(doc_id)[:SNIPPET_CHARS],
                              "tokens": [[id_to_token[t], q, d] for t, q, d in tokens]})
        out.append({"query_id": qid, "query": query_texts.get(qid, ""), "metrics": per_query.get(qid, {}),
                    "judged": dict(qrels[qid]), "hits": explained})
    return out


def write_explain(path: str, rows: Sequence[dict]) -> str:
    """The explain file: one JSON object per line."""
    return write_atomic(path, lambda f: f.writelines(json.dumps(r) + "\n" for r in rows))


def read_explain(path: str) -> dict[str, dict]:
    """``{query id: explain object}`` of an explain file; a malformed line is one error naming it."""
    out = {}
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    out[str(row["query_id"])] = row
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise UserError(f"{path}:{number} is not an explain line ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    return out

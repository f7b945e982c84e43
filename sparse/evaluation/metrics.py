"""Retrieval metrics with pytrec_eval, following BEIR's ``EvaluateRetrieval.evaluate`` conventions.

* A retrieved document whose id equals the query id is removed before scoring
  (BEIR ``ignore_identical_ids=True``: e.g. ArguAna and Quora hold queries in the corpus).
* NDCG@k (``ndcg_cut``), MAP@k (``map_cut``) and Recall@k (``recall``) are pytrec_eval's, averaged
  over the queries pytrec_eval scores (those with qrels and at least one retrieved document),
  as BEIR divides by ``len(scores)``.
* MRR@k is BEIR's ``mrr``: per query the reciprocal rank of the first document with grade > 0
  among the top k (sorted by score), summed and divided by the number of queries with qrels.

``queries_without_results`` counts queries with qrels that retrieved nothing: BEIR leaves them
out of the NDCG/MAP/Recall averages, so a non-zero count is reported next to the figures.
"""

from __future__ import annotations

from typing import Optional, Sequence

import pytrec_eval

HEADLINE = "NDCG@10"
DEFAULT_METRICS = ("NDCG@10", "NDCG@100", "Recall@100", "Recall@1000", "MRR@10", "MAP@100")
_PYTREC = {"NDCG": "ndcg_cut", "MAP": "map_cut", "Recall": "recall"}


def drop_identical_ids(run: dict[str, dict[str, float]]) -> tuple[dict[str, dict[str, float]], int]:
    """The run without self-hits (doc id == query id), and how many were dropped."""
    dropped = 0
    out = {}
    for qid, hits in run.items():
        if qid in hits:
            hits = {d: s for d, s in hits.items() if d != qid}
            dropped += 1
        out[qid] = hits
    return out, dropped


def _parse(name: str) -> tuple[str, int]:
    measure, _, k = name.partition("@")
    if not k.isdigit() or measure not in (*_PYTREC, "MRR"):
        raise ValueError(f"unknown metric {name!r}: use NDCG@k, MAP@k, Recall@k or MRR@k")
    return measure, int(k)


def mrr_at_k(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], k: int) -> float:
    total = 0.0
    for qid, hits in run.items():
        relevant = {d for d, g in qrels.get(qid, {}).items() if g > 0}
        top = sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        for rank, (did, _) in enumerate(top, 1):
            if did in relevant:
                total += 1.0 / rank
                break
    return total / len(qrels) if qrels else 0.0


def query_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]],
                  metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, dict[str, Optional[float]]]:
    """Per query with qrels, each metric: pytrec_eval's value (None where pytrec_eval scores no
    query: nothing retrieved) and MRR@k (0 for a query that retrieved nothing). ``run`` is taken as
    given (``evaluate_run`` drops self-hits first)."""
    parsed = [(_parse(m), m) for m in metrics]
    measures: dict[str, set] = {}
    for (measure, k), _ in parsed:
        if measure != "MRR":
            measures.setdefault(_PYTREC[measure], set()).add(k)
    pytrec_measures = {f"{m}." + ",".join(map(str, sorted(ks))) for m, ks in measures.items()}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, pytrec_measures)
    scores = evaluator.evaluate({q: h for q, h in run.items() if q in qrels and h})
    out: dict[str, dict[str, Optional[float]]] = {}
    for qid in qrels:
        row: dict[str, Optional[float]] = {}
        for (measure, k), name in parsed:
            if measure == "MRR":
                row[name] = mrr_at_k({qid: qrels[qid]}, {qid: run.get(qid, {})}, k)
            else:
                row[name] = scores[qid][f"{_PYTREC[measure]}_{k}"] if qid in scores else None
        out[qid] = row
    return out


def evaluate_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]],
                 metrics: Sequence[str] = DEFAULT_METRICS, ignore_identical_ids: bool = True) -> dict:
    """``{metric: value, ..., "queries", "queries_evaluated", "queries_without_results", "self_hits_dropped"}``."""
    dropped = 0
    if ignore_identical_ids:
        run, dropped = drop_identical_ids(run)
    per_query = query_metrics(qrels, run, metrics)
    out: dict = {}
    for name in metrics:
        values = [row[name] for row in per_query.values()]
        if _parse(name)[0] == "MRR":  # BEIR divides by every query with qrels
            out[name] = sum(values) / len(qrels) if qrels else 0.0
        else:  # BEIR divides by the queries pytrec_eval scores
            scored = [v for v in values if v is not None]
            out[name] = sum(scored) / len(scored) if scored else 0.0
    out["queries"] = len(qrels)
    out["queries_evaluated"] = sum(1 for q in qrels if run.get(q))
    out["queries_without_results"] = sum(1 for q in qrels if not run.get(q))
    out["self_hits_dropped"] = dropped
    return out

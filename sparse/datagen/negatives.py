"""From retrieved candidates to ``posnegs`` rows ``{query, pos, negs}`` (+ ids), two ways.

Mining (``build_posnegs_rows``, ``demo_train_data.py``), for a query q with qrels R(q) (any grade)
and positives P(q) = {d in R(q): grade > 0}:

  1. candidates = the retrieved top-k of q, best first, minus every document of R(q)
     (a judged document is never a negative, whatever its grade);
  2. the first ``skip_top`` candidates are stepped over (likely unjudged positives);
  3. ``sampling="top"`` keeps the next ``negatives_per_query`` (all when None);
     ``sampling="random"`` draws that many uniformly from what is left, with a generator seeded
     by (seed, crc32(query id)), and keeps them in rank order: the draw of one query does not
     depend on the others, on their order or on sharding;
  4. one row per positive, all sharing the negatives.

Teacher-filtered (``build_filtered_posnegs``, ``data_preparation.py --write_posnegs DIR``), with
every candidate and positive scored by the teacher ensemble (S, in [0, 1)):

    s_min(q)  = min_{p in P(q)} S(q, p)
    negs(q)   = [d in C(q), ensemble order : d not in R(q) and S(q, d) < s_min(q) - margin]

so a candidate the teachers score within ``--negative_margin`` of the weakest positive (a likely
unjudged positive) is never a negative.

A query is dropped, and counted under its reason (``sparse.datagen.stats``), when it has no
positive, none of its positives is in the corpus, or fewer than ``min_negatives`` negatives are left.
"""

from __future__ import annotations

import os
import zlib
from typing import Optional, Sequence

import numpy as np

from sparse.datagen.stats import DROP_FEW_NEGATIVES, DROP_NO_POSITIVE, DROP_POSITIVES_MISSING, MiningStats
from sparse.errors import write_json


def query_rng(seed: int, query_id: str) -> np.random.Generator:
    """The generator of one query's random draw: seeded by (seed, crc32(query id))."""
    return np.random.default_rng([int(seed), zlib.crc32(str(query_id).encode("utf-8"))])


def select_negatives(candidates: Sequence[str], judged: set, skip_top: int = 0,
                     negatives_per_query: Optional[int] = None, sampling: str = "top",
                     rng: Optional[np.random.Generator] = None) -> list[str]:
    """Steps 1-3 of the module docstring: negative doc ids in rank order."""
    pool = [d for d in candidates if d not in judged][skip_top:]
    n = len(pool) if negatives_per_query is None else min(negatives_per_query, len(pool))
    if sampling == "top" or n == len(pool):
        return pool[:n]
    if sampling != "random":
        raise ValueError(f"sampling must be 'top' or 'random', got {sampling!r}")
    if rng is None:
        raise ValueError("random sampling needs a generator")
    keep = np.sort(rng.choice(len(pool), size=n, replace=False))
    return [pool[i] for i in keep]


def judged_positives(qid: str, qrels: dict, stats: MiningStats) -> tuple[dict, list[str]]:
    """A query's judged documents and its positives (grade > 0, sorted); counts the query in, and
    as dropped when it has no positive."""
    stats.queries_in += 1
    judged = qrels.get(qid, {})
    positives = sorted(d for d, g in judged.items() if g > 0)
    if not positives:
        stats.drop(DROP_NO_POSITIVE, qid)
    return judged, positives


def build_posnegs_rows(query_ids: Sequence[str], queries: dict, qrels: dict, retrieved: Sequence[Sequence[str]],
                       doc_text: dict, skip_top: int = 0, negatives_per_query: Optional[int] = None,
                       sampling: str = "top", seed: int = 42, min_negatives: int = 1,
                       stats: Optional[MiningStats] = None) -> tuple[list[dict], MiningStats]:
    """Rows ``{query, pos, negs, query_id, pos_id, neg_ids}`` for ``query_ids`` (same order)."""
    stats = stats or MiningStats()
    rows: list[dict] = []
    for qid, cands in zip(query_ids, retrieved):
        judged, positives = judged_positives(qid, qrels, stats)
        if not positives:
            continue
        stats.positives_in_candidates += sum(1 for d in cands if d in judged)
        negs = select_negatives(cands, set(judged), skip_top, negatives_per_query, sampling,
                                query_rng(seed, qid) if sampling == "random" else None)
        if len(negs) < min_negatives:
            stats.drop(DROP_FEW_NEGATIVES, qid)
            continue
        present = [p for p in positives if p in doc_text]
        stats.positives_missing.extend(f"{qid}:{p}" for p in positives if p not in doc_text)
        if present:
            rows.extend(_rows(qid, queries, present, negs, doc_text))
            stats.add_query(len(negs), len(present))
        else:
            stats.drop(DROP_POSITIVES_MISSING, qid)
    return rows, stats


def posnegs_features():
    """The columns of a ``posnegs`` row: ``{query, pos, negs, query_id, pos_id, neg_ids}``."""
    from datasets import Features, List, Value

    return Features({"query": Value("string"), "pos": Value("string"), "negs": List(Value("string")),
                     "query_id": Value("string"), "pos_id": Value("string"), "neg_ids": List(Value("string"))})


def write_rows(rows: list[dict], output: str, stats: MiningStats, extra_files: Optional[dict] = None) -> None:
    """``save_to_disk`` directory plus ``stats.json`` (written last: it marks a finished output)."""
    from datasets import Dataset

    ds = Dataset.from_list(rows, features=posnegs_features())
    ds.save_to_disk(output)
    for name, content in (extra_files or {}).items():
        write_json(os.path.join(output, name), content, default=str)
    stats.save(os.path.join(output, "stats.json"))



def filtered_negatives(ids: Sequence[str], scores: Sequence[float], judged, min_positive: float,
                       margin: float) -> tuple[list[str], int]:
    """(negatives in the given order, how many unjudged candidates the margin dropped)."""
    negs, dropped = [], 0
    for d, s in zip(ids, scores):
        if d in judged:
            continue
        if s < min_positive - margin:
            negs.append(d)
        else:
            dropped += 1
    return negs, dropped


def build_filtered_posnegs(qids: Sequence[str], queries: dict, qrels: dict, scored: dict, text_of: dict,
                           margin: float, min_negatives: int = 1) -> tuple[list[dict], MiningStats]:
    """Teacher-filtered rows of the module docstring; ``scored[qid] = (doc ids in ensemble order, scores)``
    (a query absent from ``scored`` had no candidate)."""
    stats = MiningStats(extra={"negatives_dropped_by_margin": 0})
    rows: list[dict] = []
    for qid in qids:
        judged, positives = judged_positives(qid, qrels, stats)
        if not positives:
            continue
        present = [p for p in positives if p in text_of]
        stats.positives_missing.extend(f"{qid}:{p}" for p in positives if p not in text_of)
        if not present:
            stats.drop(DROP_POSITIVES_MISSING, qid)
            continue
        ids, scores = scored.get(qid, ([], []))
        score_of = dict(zip(ids, (float(s) for s in scores)))
        unscored = [p for p in present if p not in score_of]
        if unscored:
            raise RuntimeError(f"query {qid}: positives {unscored} were not scored (include_positives is off)")
        stats.positives_in_candidates += sum(1 for d in ids if d in judged)
        negs, dropped = filtered_negatives(ids, scores, judged, min(score_of[p] for p in present), margin)
        stats.extra["negatives_dropped_by_margin"] += dropped
        if len(negs) < min_negatives:
            stats.drop(DROP_FEW_NEGATIVES, qid)
            continue
        rows.extend(_rows(qid, queries, present, negs, text_of))
        stats.add_query(len(negs), len(present))
    return rows, stats


def _rows(qid: str, queries: dict, positives: Sequence[str], negs: Sequence[str], text_of: dict) -> list[dict]:
    """One posnegs row per positive, all sharing ``negs``."""
    neg_texts = [text_of[d] for d in negs]
    return [{"query": queries[qid], "pos": text_of[pid], "negs": neg_texts, "query_id": qid, "pos_id": pid,
             "neg_ids": list(negs)} for pid in positives]

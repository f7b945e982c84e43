"""From retrieved candidates to ``posnegs`` rows (as the reference's ``demo_train_data.py`` builds them).

For a query q with qrels R(q) (any grade) and positives P(q) = {d in R(q): grade > 0}:

  1. candidates = the retrieved top-k of q, best first, minus every document of R(q)
     (a judged document is never a negative, whatever its grade);
  2. the first ``skip_top`` candidates are stepped over (likely unjudged positives);
  3. ``sampling="top"`` keeps the next ``negatives_per_query`` (all when None, the reference);
     ``sampling="random"`` draws that many uniformly from what is left, with a generator seeded
     by (seed, crc32(query id)), and keeps them in rank order: the draw of one query does not
     depend on the others, on their order or on sharding;
  4. one row ``{query, pos, negs}`` per positive (plus ids), all sharing the negatives.

A query is dropped, and counted under its reason, when it has no positive, or fewer than
``min_negatives`` negatives are left. Nothing is dropped silently: see ``MiningStats``.
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np

from sparse.errors import write_json

DROP_NO_POSITIVE = "no positive (grade > 0) in qrels"
DROP_FEW_NEGATIVES = "fewer than min_negatives negatives left"
DROP_POSITIVES_MISSING = "positives not in the corpus"


def query_rng(seed: int, query_id: str) -> np.random.Generator:
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


@dataclass
class MiningStats:
    """Counts of a mining run: queries in and kept, rows, negatives per row, and what was dropped why."""

    queries_in: int = 0
    queries_kept: int = 0
    rows: int = 0
    negatives_total: int = 0
    min_negatives: Optional[int] = None
    max_negatives: Optional[int] = None
    dropped: dict = field(default_factory=dict)
    positives_in_candidates: int = 0  # judged docs retrieved and removed (not an error)
    positives_missing: list = field(default_factory=list)  # "qid:docid" of qrels docs absent from the corpus
    extra: dict = field(default_factory=dict)

    def add_query(self, n_negs: int, n_rows: int) -> None:
        self.queries_kept += 1
        self.rows += n_rows
        self.negatives_total += n_negs * n_rows
        self.min_negatives = n_negs if self.min_negatives is None else min(self.min_negatives, n_negs)
        self.max_negatives = n_negs if self.max_negatives is None else max(self.max_negatives, n_negs)

    def drop(self, reason: str, query_id: str) -> None:
        entry = self.dropped.setdefault(reason, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < 10:
            entry["examples"].append(query_id)

    @property
    def mean_negatives(self) -> float:
        return self.negatives_total / self.rows if self.rows else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["mean_negatives"] = round(self.mean_negatives, 3)
        out["queries_dropped"] = sum(v["count"] for v in self.dropped.values())
        return out

    def save(self, path: str) -> None:
        write_json(path, self.to_dict())

    def summary(self) -> str:
        drops = ", ".join(f"{v['count']} {k}" for k, v in self.dropped.items()) or "none"
        return (f"{self.rows} rows from {self.queries_kept}/{self.queries_in} queries, "
                f"{self.mean_negatives:.1f} negatives per row (min {self.min_negatives}, max "
                f"{self.max_negatives}); dropped queries: {drops}")


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
        neg_texts = [doc_text[d] for d in negs]
        kept = 0
        for pid in positives:
            if pid not in doc_text:
                stats.positives_missing.append(f"{qid}:{pid}")
                continue
            rows.append({"query": queries[qid], "pos": doc_text[pid], "negs": neg_texts,
                         "query_id": qid, "pos_id": pid, "neg_ids": list(negs)})
            kept += 1
        if kept:
            stats.add_query(len(negs), kept)
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


def histogram(values: Sequence[int]) -> dict:
    return dict(sorted(Counter(values).items()))

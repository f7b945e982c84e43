"""Counts of a data-generation run: what came in, what was written, and what was dropped why.

``MiningStats`` counts posnegs rows (mining and the teacher-filtered rows of KD data); a run cut
into parts (``sparse.datagen.parts``) merges the counts of its parts here, posnegs parts with
``merge_mining_stats`` and KD parts with ``merge_kd_stats``. Every drop is counted under its reason
with the first ``MAX_EXAMPLES`` query ids as examples: nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from sparse.errors import write_json

DROP_NO_POSITIVE = "no positive (grade > 0) in qrels"
DROP_FEW_NEGATIVES = "fewer than min_negatives negatives left"
DROP_POSITIVES_MISSING = "positives not in the corpus"
DROP_NO_HITS = "no document retrieved (the query shares no token with the collection)"
MAX_EXAMPLES = 10


def add_drops(dropped: dict, reason: str, count: int, examples: Sequence[str]) -> None:
    """Count ``count`` queries dropped for ``reason`` in ``dropped`` (``{reason: {count, examples}}``)."""
    entry = dropped.setdefault(reason, {"count": 0, "examples": []})
    entry["count"] += count
    entry["examples"] = (entry["examples"] + list(examples))[:MAX_EXAMPLES]


@dataclass
class MiningStats:
    """Counts of posnegs rows: queries in and kept, rows, negatives per row, and what was dropped why."""

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
        """Count a kept query with ``n_negs`` negatives shared by its ``n_rows`` rows."""
        self.queries_kept += 1
        self.rows += n_rows
        self.negatives_total += n_negs * n_rows
        self.min_negatives = n_negs if self.min_negatives is None else min(self.min_negatives, n_negs)
        self.max_negatives = n_negs if self.max_negatives is None else max(self.max_negatives, n_negs)

    def drop(self, reason: str, query_id: str) -> None:
        """Count a dropped query under ``reason``."""
        add_drops(self.dropped, reason, 1, [query_id])

    @property
    def mean_negatives(self) -> float:
        """Negatives per row."""
        return self.negatives_total / self.rows if self.rows else 0.0

    def to_dict(self) -> dict:
        """Every count, plus the mean negatives and the number of dropped queries."""
        out = asdict(self)
        out["mean_negatives"] = round(self.mean_negatives, 3)
        out["queries_dropped"] = sum(v["count"] for v in self.dropped.values())
        return out

    def save(self, path: str) -> None:
        """``to_dict()`` as JSON at ``path``."""
        write_json(path, self.to_dict())

    def summary(self) -> str:
        """One line: rows, kept queries, negatives per row and drops."""
        drops = ", ".join(f"{v['count']} {k}" for k, v in self.dropped.items()) or "none"
        return (f"{self.rows} rows from {self.queries_kept}/{self.queries_in} queries, "
                f"{self.mean_negatives:.1f} negatives per row (min {self.min_negatives}, max "
                f"{self.max_negatives}); dropped queries: {drops}")


def merge_mining_stats(parts: Sequence[dict]) -> MiningStats:
    """One ``MiningStats`` from the ``to_dict()`` of several parts (counts summed, drops merged)."""
    total = MiningStats()
    for p in parts:
        for key in ("queries_in", "queries_kept", "rows", "negatives_total", "positives_in_candidates"):
            setattr(total, key, getattr(total, key) + int(p[key]))
        for key, pick in (("min_negatives", min), ("max_negatives", max)):
            if p[key] is not None:
                old = getattr(total, key)
                setattr(total, key, p[key] if old is None else pick(old, p[key]))
        for reason, v in p["dropped"].items():
            add_drops(total.dropped, reason, v["count"], v["examples"])
        total.positives_missing.extend(p["positives_missing"])
        for key, value in p.get("extra", {}).items():
            total.extra[key] = total.extra.get(key, 0) + value
    return total


def merge_kd_stats(parts: Sequence[dict]) -> dict:
    """The counts of a KD run from its parts' stats (``dropped``: {reason: [query ids]} per part)."""
    total = {"queries_in": 0, "rows": 0, "docs": 0, "dropped": {}, "seconds_parts": 0.0, "positives_added": 0}
    for s in parts:
        for k in ("queries_in", "rows", "docs"):
            total[k] += s[k]
        total["positives_added"] += s.get("positives_added", 0)
        if s.get("positives_not_in_collection"):
            total["positives_not_in_collection"] = total.get("positives_not_in_collection", 0) + \
                s["positives_not_in_collection"]
        for name, hits in s.get("retriever_hits", {}).items():
            total.setdefault("retriever_hits", {})[name] = total.get("retriever_hits", {}).get(name, 0) + hits
        total["seconds_parts"] += s.get("seconds", 0.0)
        for reason, ids in s["dropped"].items():
            add_drops(total["dropped"], reason, len(ids), ids)
    total["mean_docs"] = total["docs"] / total["rows"] if total["rows"] else 0.0
    total["queries_dropped"] = sum(v["count"] for v in total["dropped"].values())
    total["seconds_parts"] = round(total["seconds_parts"], 1)
    return total

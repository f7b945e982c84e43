"""``EmbeddedIndex``: exact in-process dot-product search over an inverted index (no server).

Documents are kept as an inverted index (vocabulary x documents, CSR: one posting list per
token) split into chunks of ``doc_chunk`` documents. A query is scored against a chunk by
scatter-adding ``w_q(t) * w_d(t)`` of its tokens' posting lists into a dense accumulator of the
chunk's documents (``P[tokens].T @ w_q``): only the query tokens' posting lists are touched, and
memory per query is bounded by the chunk size whatever the corpus size. Per query the top ``k``
of each chunk are kept (score > 0, ties by document id) and the chunk winners are merged.
Queries run in parallel threads (scipy's sparse kernels and numpy release the GIL). Scores are
accumulated in float32, as Lucene does.

``precision`` decides what is kept of each weight (``sparse.retrieval.precision``): ``opensearch``
stores document weights truncated to 9 significant bits, so scores equal a cluster's
``rank_features`` scores; ``seismic`` and ``impact`` quantize documents and queries as those engines
do. ``query_prune`` drops query tokens with ``w <= ratio * max w`` before scoring.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from sparse.errors import UserError, save_atomic
from sparse.modeling.vectors import SparseBatch
from sparse.retrieval.base import ENGINES, SearchResult, check_k, prune_queries
from sparse.retrieval.precision import IMPACT_SCALE, PRECISIONS, ingest_ceiling, query_values, store_values

FORMAT_VERSION = 1


class EmbeddedIndex:
    """Exact in-process search over an inverted index (see the module docstring)."""

    persistent = False  # documents live in this process only
    needs_token_names = False  # works on vocabulary ids

    def __init__(self, precision: str = "float", query_prune: float = 0.0, doc_chunk: int = 262_144,
                 query_batch: int = 16, threads: Optional[int] = None, progress: bool = False,
                 ingest_ceiling: Optional[float] = None, impact_scale: float = IMPACT_SCALE):
        if precision not in PRECISIONS:
            raise UserError(f"index precision must be one of {PRECISIONS}, got {precision!r}")
        if not 0 <= query_prune < 1:
            raise UserError(f"query_prune must be in [0, 1), got {query_prune}")
        self.precision = precision
        # seismic: documents clipped to [0, ceiling]; None: the export's rule over the documents at first search
        self.ingest_ceiling = None if ingest_ceiling is None else float(ingest_ceiling)
        self.impact_scale = float(impact_scale)  # impact: round(w * scale)
        self.query_prune = float(query_prune)
        self.doc_chunk = int(doc_chunk)
        self.query_batch = int(query_batch)
        self.threads = int(threads or min(4, os.cpu_count() or 1))
        self.progress = progress
        self._ids: list[str] = []
        self._id_set: set[str] = set()
        self._parts: list[SparseBatch] = []
        self._docs: Optional[SparseBatch] = None
        self._postings: Optional[list[tuple[int, sp.csr_matrix]]] = None
        self._id_rank: Optional[np.ndarray] = None
        self.vocab_size: Optional[int] = None

    # ------------------------------------------------------------------ building
    def add(self, ids: list[str], vectors: SparseBatch) -> None:
        ids = [str(i) for i in ids]
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if self.vocab_size is None:
            self.vocab_size = vectors.vocab_size
        elif vectors.vocab_size != self.vocab_size:
            raise ValueError(f"vectors over {vectors.vocab_size} tokens added to an index over {self.vocab_size}")
        dup = [i for i in ids if i in self._id_set]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup += [i for i in ids if i in seen or seen.add(i)]
        if dup:
            raise UserError(f"duplicate document ids: {sorted(set(dup))[:10]}")
        self._ids.extend(ids)
        self._id_set.update(ids)
        self._parts.append(vectors)  # stored at ``precision`` when the index is built
        self._postings = None

    def _build(self) -> None:
        """Merge added parts and build the chunked inverted index (done once, lazily)."""
        if self._postings is not None:
            return
        if self._parts:
            self._docs = SparseBatch.concat(([self._docs] if self._docs is not None else [])
                                            + [self._store(SparseBatch.concat(self._parts))])
            self._parts = []
        if self._docs is None:
            self._docs = SparseBatch.empty(self.vocab_size or 1)
        csr = self._docs.to_csr()
        self._postings = []
        for start in range(0, len(self._docs), self.doc_chunk):
            chunk = csr[start:start + self.doc_chunk]
            self._postings.append((start, chunk.T.tocsr()))
        order = np.argsort(np.asarray(self._ids, dtype=object), kind="stable") if self._ids else np.zeros(0, int)
        self._id_rank = np.empty(len(order), np.int64)
        self._id_rank[order] = np.arange(len(order))

    def _store(self, vectors: SparseBatch) -> SparseBatch:
        """``vectors`` at the index's precision; a weight quantized to 0 leaves no posting."""
        if self.ingest_ceiling is None:
            self.ingest_ceiling = ingest_ceiling(float(vectors.values.max()) if vectors.nnz else 0.0)
        values = store_values(vectors.values, self.precision, self.ingest_ceiling, self.impact_scale)
        stored = SparseBatch(vectors.indptr, vectors.indices, values, vectors.vocab_size)
        return stored.keep(stored.values > 0)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def documents(self) -> SparseBatch:
        """The stored document vectors (in ``precision``), in insertion order."""
        self._build()
        return self._docs

    def size_bytes(self) -> int:
        """Memory of the stored vectors: 4-byte token id + 4-byte weight per non-zero, 8 per row."""
        self._build()
        return int(self._docs.nnz * 8 + (len(self._docs) + 1) * 8)

    # ------------------------------------------------------------------ search
    def _top(self, positions: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of (positions, scores) with score > 0, by (-score, doc id)."""
        keep = scores > 0
        if not keep.all():
            positions, scores = positions[keep], scores[keep]
        if len(scores) > k:
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            sel = scores >= kth  # every tie of the k-th score stays a candidate
            positions, scores = positions[sel], scores[sel]
        order = np.lexsort((self._id_rank[positions], -scores))[:k]
        return positions[order], scores[order]

    def _search_one(self, tokens: np.ndarray, weights: np.ndarray, k: int) -> tuple[list[str], list[float]]:
        """Top ``k`` of one query: scatter-add its posting lists into a dense accumulator per chunk."""
        if len(tokens) == 0:
            return [], []
        found = []
        for start, postings in self._postings:
            # rows = the query tokens' posting lists; (c x t) @ (t,) = per-document scores
            scores = postings[tokens].T @ weights
            hit = np.flatnonzero(scores > 0)
            if len(hit):
                found.append(self._top(hit + start, scores[hit], k))
        if not found:
            return [], []
        if len(found) == 1:
            pos, sc = found[0]
        else:
            pos, sc = self._top(np.concatenate([p for p, _ in found]), np.concatenate([s for _, s in found]), k)
        return [self._ids[i] for i in pos.tolist()], sc.astype(np.float64).tolist()

    def search(self, queries: SparseBatch, k: int) -> SearchResult:
        """Exact top-k per query; queries run in ``threads`` threads (scipy and numpy release the GIL)."""
        k = check_k(k)
        if self.vocab_size is not None and queries.vocab_size != self.vocab_size:
            raise ValueError(f"queries over {queries.vocab_size} tokens, index over {self.vocab_size}")
        self._build()
        rows = self._query_rows(queries)
        bar = tqdm(total=len(rows), desc="search", unit="q", disable=not self.progress)

        def run_block(block):
            out = [self._search_one(toks, w, k) for toks, w in block]
            bar.update(len(block))
            return out

        blocks = [rows[i:i + self.query_batch] for i in range(0, len(rows), self.query_batch)]
        if self.threads > 1 and len(blocks) > 1:
            with ThreadPoolExecutor(self.threads) as pool:
                results = [r for block in pool.map(run_block, blocks) for r in block]
        else:
            results = [r for block in blocks for r in run_block(block)]
        bar.close()
        return [r[0] for r in results], [r[1] for r in results]

    def _query_rows(self, queries: SparseBatch) -> list[tuple[np.ndarray, np.ndarray]]:
        """(token ids, weights) of each query as searched: pruned, then at the index's precision."""
        queries = prune_queries(queries, self.query_prune)
        values = query_values(queries.values, self.precision, self.impact_scale)
        return [(queries.indices[queries.indptr[i]:queries.indptr[i + 1]].astype(np.int64),
                 values[queries.indptr[i]:queries.indptr[i + 1]]) for i in range(len(queries))]

    def time_queries(self, queries: SparseBatch, k: int, limit: Optional[int] = None) -> np.ndarray:
        """Seconds each of the first ``limit`` queries takes, searched one at a time in this thread."""
        k = check_k(k)
        self._build()
        rows = self._query_rows(queries if limit is None else queries.take(range(min(limit, len(queries)))))
        seconds = np.zeros(len(rows))
        for i, (toks, w) in enumerate(rows):
            t = time.perf_counter()
            self._search_one(toks, w, k)
            seconds[i] = time.perf_counter() - t
        return seconds

    def verify_count(self, expected: int) -> None:
        raise UserError("the embedded index lives in this process: there are no indexed documents to reuse")

    def close(self) -> None:
        self._postings = None
        self._docs = None
        self._parts = []

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str) -> str:
        """Write ``vectors.npz``, ``ids.json`` and ``meta.json`` into ``directory`` (atomically)."""
        self._build()

        def save(tmp: str) -> None:
            os.makedirs(tmp)
            self._docs.save(os.path.join(tmp, "vectors.npz"))
            with open(os.path.join(tmp, "ids.json"), "w", encoding="utf-8") as f:
                json.dump(self._ids, f)
            with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
                json.dump({"format_version": FORMAT_VERSION, "precision": self.precision,
                           "ingest_ceiling": self.ingest_ceiling, "impact_scale": self.impact_scale,
                           "n_docs": len(self._ids), "vocab_size": self._docs.vocab_size}, f)

        os.makedirs(os.path.dirname(os.path.abspath(directory)), exist_ok=True)
        return save_atomic(directory, save)

    @classmethod
    def load(cls, directory: str, **opts) -> "EmbeddedIndex":
        meta_path = os.path.join(directory, "meta.json")
        if not os.path.isfile(meta_path):
            raise UserError(f"no saved index in {directory} (meta.json missing)")
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{directory} holds index format {meta.get('format_version')}, expected {FORMAT_VERSION}")
        with open(os.path.join(directory, "ids.json"), encoding="utf-8") as f:
            ids = json.load(f)
        docs = SparseBatch.load(os.path.join(directory, "vectors.npz"))
        if len(ids) != len(docs) or len(ids) != meta["n_docs"]:
            raise UserError(f"{directory} is inconsistent: {len(ids)} ids, {len(docs)} vectors")
        stored_as = {k: meta[k] for k in ("ingest_ceiling", "impact_scale") if k in meta}
        index = cls(precision=meta["precision"], **stored_as, **opts)
        index.vocab_size = docs.vocab_size
        index._ids = ids
        index._id_set = set(ids)
        index._docs = docs  # already stored at its precision
        return index


def index_class(engine: str) -> type:
    """The ``Index`` class of an engine name: ``embedded`` (EmbeddedIndex) or ``opensearch`` (OpenSearchIndex)."""
    if engine == "embedded":
        return EmbeddedIndex
    if engine == "opensearch":
        from sparse.retrieval.opensearch import OpenSearchIndex

        return OpenSearchIndex
    raise UserError(f"engine must be one of {ENGINES}, got {engine!r}")


def build_index(engine: str = "embedded", **opts):
    """Create an engine by name (``index_class``) with its options."""
    return index_class(engine)(**opts)

"""Candidate retrievers for data generation: the sparse model through an ``Index``, or BM25.

Both return, per query, ``(doc ids, scores)`` of the top k, best first, ties broken by doc id.

* ``SparseRetriever`` never encodes or searches by itself: the corpus goes through the shared
  cached, torchrun-sharded ``sparse.evaluation.corpus_cache.encode_corpus`` (so evaluation
  and mining of the same model and corpus encode it once), queries through
  ``SparseEncoder.encode_queries`` (inference-free or siamese, as the checkpoint says), and the
  search through ``sparse.retrieval.build_index`` (``embedded`` or ``opensearch``).
* ``BM25Retriever`` uses ``bm25s`` (Lucene BM25, k1=1.5, b=0.75, English stop words; the
  Snowball stemmer when ``PyStemmer`` is installed).
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from sparse.errors import UserError

logger = logging.getLogger(__name__)


class SparseRetriever:
    def __init__(self, encoder, doc_ids: Sequence[str], doc_texts: Sequence[str], engine: str = "embedded",
                 cache_dir: Optional[str] = "cache/corpus", key_parts: Sequence = (), batch_size: int = 32,
                 max_length: Optional[int] = None, index_opts: Optional[dict] = None, progress: bool = True,
                 searcher: bool = True):
        from sparse.evaluation import distributed
        from sparse.evaluation.corpus_cache import encode_corpus

        self.encoder = encoder
        self.batch_size = batch_size
        self.progress = progress
        self.doc_ids = list(doc_ids)
        vectors = encode_corpus(encoder, self.doc_ids, list(doc_texts), cache_dir, key_parts=key_parts,
                                batch_size=batch_size, max_length=max_length, progress=progress,
                                all_ranks=searcher)
        self.cache_entry = encode_corpus.last_entry
        self.rank = distributed.rank()
        # under torchrun a rank that only helps encoding (``searcher=False``) builds no index
        self.index = self._build_index(engine, vectors, index_opts or {}) if searcher else None

    def _build_index(self, engine: str, vectors, opts: dict):
        from sparse.retrieval import build_index

        if engine == "opensearch":
            opts = {"id_to_token": self.encoder.id_to_token, **opts}
        try:
            index = build_index(engine, **opts)
        except TypeError as exc:
            raise UserError(f"cannot create the {engine} index with options {sorted(opts)}: {exc}") from None
        index.add(self.doc_ids, vectors)
        return index

    def search(self, query_texts: Sequence[str], k: int) -> tuple[list[list[str]], list[list[float]]]:
        if not query_texts:
            return [], []
        qvecs = self.encoder.encode_queries(list(query_texts), batch_size=self.batch_size, progress=False)
        return self.index.search(qvecs, k)

    def close(self) -> None:
        if self.index is not None:
            self.index.close()


class BM25Retriever:
    def __init__(self, doc_ids: Sequence[str], doc_texts: Sequence[str], k1: float = 1.5, b: float = 0.75,
                 progress: bool = True):
        import bm25s

        self._bm25s = bm25s
        self.doc_ids = list(doc_ids)
        self.stemmer = _stemmer()
        self.progress = progress
        tokens = bm25s.tokenize(list(doc_texts), stopwords="en", stemmer=self.stemmer, show_progress=progress)
        self.model = bm25s.BM25(k1=k1, b=b, method="lucene")
        self.model.index(tokens, show_progress=progress)

    def search(self, query_texts: Sequence[str], k: int) -> tuple[list[list[str]], list[list[float]]]:
        from sparse.retrieval.base import rank_hits

        if not query_texts:
            return [], []
        # the vocabulary of the index, so unseen query words are ignored, not errors
        tokens = self._bm25s.tokenize(list(query_texts), stopwords="en", stemmer=self.stemmer,
                                      return_ids=False, show_progress=False)
        depth = min(len(self.doc_ids), k + 16)  # a margin so ties at the k-th place sort by id
        docs, scores = self.model.retrieve(tokens, k=depth, show_progress=self.progress, n_threads=0)
        out_ids, out_scores = [], []
        for row_docs, row_scores in zip(docs, scores):
            hits = [(self.doc_ids[int(d)], float(s)) for d, s in zip(row_docs, row_scores) if s > 0]
            ids, vals = rank_hits([h[0] for h in hits], [h[1] for h in hits], k)
            out_ids.append(ids)
            out_scores.append(vals)
        return out_ids, out_scores

    def close(self) -> None:
        self.model = None


def _stemmer():
    try:
        import Stemmer  # PyStemmer, optional

        return Stemmer.Stemmer("english").stemWord
    except ImportError:
        return None

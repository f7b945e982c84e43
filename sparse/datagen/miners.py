"""Candidate retrievers for data generation: the sparse model through an ``Index``, or BM25.

Both return, per query, ``(doc ids, scores)`` of the top k, best first, ties broken by doc id.

* ``SparseRetriever`` never encodes or searches by itself: the corpus goes through the shared
  cached, torchrun-sharded ``sparse.corpus.encode_corpus`` (so evaluation and mining of the
  same model and corpus encode it once), queries through
  ``SparseEncoder.encode_queries`` (inference-free or siamese, as the checkpoint says), and the
  search through ``sparse.retrieval.build_index`` (``embedded`` or ``opensearch``).
* ``BM25Retriever`` is the toolkit's one BM25, ``sparse.retrieval.bm25.BM25Index`` (bm25s, Lucene
  BM25; defaults k1=0.9, b=0.4, English stop words, the English Snowball stemmer of PyStemmer),
  its index cached under ``cache_dir`` when one is given.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from sparse.errors import UserError

logger = logging.getLogger(__name__)


class SparseRetriever:
    """Top-k documents of the sparse model: corpus vectors from ``encode_corpus``, search by an ``Index``.

    ``cache_dir`` is where corpus vectors are cached (None: no cache, one process only).
    """

    def __init__(self, encoder, doc_ids: Sequence[str], doc_texts: Sequence[str], *, cache_dir: Optional[str],
                 engine: str = "embedded", key_parts: Sequence = (), batch_size: int = 32,
                 max_length: Optional[int] = None, index_opts: Optional[dict] = None, progress: bool = True,
                 searcher: bool = True):
        from sparse.corpus import distributed, encode_corpus

        self.encoder = encoder
        self.batch_size = batch_size
        self.progress = progress
        self.doc_ids = list(doc_ids)
        encoded = encode_corpus(encoder, self.doc_ids, list(doc_texts), cache_dir, key_parts=key_parts,
                                batch_size=batch_size, max_length=max_length, progress=progress,
                                all_ranks=searcher)
        self.cache_entry = encoded.entry
        self.rank = distributed.launch_rank()
        # under torchrun a rank that only helps encoding (``searcher=False``) builds no index
        self.index = self._build_index(engine, encoded.vectors, index_opts or {}) if searcher else None

    def _build_index(self, engine: str, vectors, opts: dict):
        from sparse.retrieval import index_class

        engine_cls = index_class(engine)
        if engine_cls.needs_token_names:
            opts = {"id_to_token": self.encoder.id_to_token, **opts}
        try:
            index = engine_cls(**opts)
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
    """Top-k documents by BM25 (``sparse.retrieval.bm25.BM25Index``), for mining without a sparse model.

    ``params``: a ``BM25Params`` (default k1=0.9, b=0.4, English stop words and stemmer);
    ``cache_dir``: where the index is cached (None: not cached); ``label`` names the cache entry.
    """

    def __init__(self, doc_ids: Sequence[str], doc_texts: Sequence[str], params=None,
                 cache_dir: Optional[str] = None, label: str = "corpus", progress: bool = True, index=None):
        from sparse.retrieval.bm25 import BM25Index

        self.index = index if index is not None else BM25Index(doc_ids, doc_texts, params, cache_dir=cache_dir,
                                                               label=label, progress=progress)
        self.doc_ids = self.index.doc_ids

    def search(self, query_texts: Sequence[str], k: int) -> tuple[list[list[str]], list[list[float]]]:
        return self.index.search(query_texts, k)

    def close(self) -> None:
        pass  # the index may be shared (KD candidates and the bm25 teacher): dropped with the last reference

"""The retrievers of data generation: the sparse model (student), BM25, a dense model, and their union.

Each gives, per query, ``(doc ids, scores)`` of the top k over the whole collection, best first,
ties broken by doc id. None encodes or searches by itself:

* ``SparseRetriever``: corpus vectors from the shared, cached, torchrun-sharded
  ``sparse.corpus.encode_corpus`` (evaluation and data generation of the same model and corpus
  encode it once), queries through ``SparseEncoder.encode_queries`` (inference-free or siamese, as
  the checkpoint says), search through an ``Index`` of ``sparse.retrieval`` (``embedded`` or
  ``opensearch``, a scratch index deleted after);
* ``BM25Retriever``: ``sparse.retrieval.bm25.BM25Index`` (bm25s, Lucene BM25; ``--bm25_*``), cached;
* ``DenseRetriever``: exact cosine over the collection with a dense teacher's own embeddings
  (``DenseTeacher.embed``: pooled, L2-normalized states; ``--dense_pooling``,
  ``--teacher_max_length``, ``--teacher_dtype``), the corpus embeddings from the same corpus cache
  (``sparse.corpus.embed_corpus``);
* ``UnionRetriever``: the union of several retrievers' top-k (``--candidates``).

For KD data the candidates of a query q are C(q) = union over the ``--candidates`` retrievers of
their top-k, plus, with ``--include_positives``, the judged positives of q (grade > 0) that are in
the collection, so the teachers score them too.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import torch

from sparse.corpus import (cached_embeddings, corpus_cache_dir, distributed, embed_corpus, encode_corpus,
                           engine_options, load_encoder)
from sparse.datagen.args import KDPrepArguments, MiningArguments, parse_candidates
from sparse.errors import UserError

logger = logging.getLogger(__name__)

SCORE_BLOCK = 2 ** 27  # query x document scores computed at once by the dense retriever (512 MiB)
ENCODE_BATCH = 32  # documents per batch of the sparse model when encode_batch_size is not given


class SparseRetriever:
    """Top-k documents of the sparse model: corpus vectors from ``encode_corpus``, search by an ``Index``.

    ``cache_dir`` is where corpus vectors are cached (None: no cache, one process only). Under
    ``torchrun`` a rank that only helps encoding (``searcher=False``) builds no index.
    """

    def __init__(self, encoder, doc_ids: Sequence[str], doc_texts: Sequence[str], *, cache_dir: Optional[str],
                 engine: str = "embedded", key_parts: Sequence = (), batch_size: int = 32,
                 max_length: Optional[int] = None, index_opts: Optional[dict] = None, progress: bool = True,
                 searcher: bool = True):
        self.encoder = encoder
        self.batch_size = batch_size
        self.progress = progress
        self.doc_ids = list(doc_ids)
        encoded = encode_corpus(encoder, self.doc_ids, list(doc_texts), cache_dir, key_parts=key_parts,
                                batch_size=batch_size, max_length=max_length, progress=progress,
                                all_ranks=searcher)
        self.cache_entry = encoded.entry
        self.rank = distributed.launch_rank()
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
        """Top-k (doc ids, scores) per query."""
        if not query_texts:
            return [], []
        qvecs = self.encoder.encode_queries(list(query_texts), batch_size=self.batch_size, progress=False)
        return self.index.search(qvecs, k)

    def close(self) -> None:
        """Close the index (a scratch OpenSearch index is deleted)."""
        if self.index is not None:
            self.index.close()


class BM25Retriever:
    """Top-k documents by BM25 (``sparse.retrieval.bm25.BM25Index``).

    ``params``: a ``BM25Params`` (default k1=0.9, b=0.4, English stop words and stemmer);
    ``cache_dir``: where the index is cached (None: not cached); ``index``: an already built index.
    """

    def __init__(self, doc_ids: Sequence[str], doc_texts: Sequence[str], params=None,
                 cache_dir: Optional[str] = None, progress: bool = True, index=None):
        from sparse.retrieval.bm25 import BM25Index

        self.index = index if index is not None else BM25Index(doc_ids, doc_texts, params, cache_dir=cache_dir,
                                                               progress=progress)
        self.doc_ids = self.index.doc_ids

    def search(self, query_texts: Sequence[str], k: int) -> tuple[list[list[str]], list[list[float]]]:
        """Top-k (doc ids, scores) per query."""
        return self.index.search(query_texts, k)

    def close(self) -> None:
        """Nothing to close: the index may be shared (KD candidates and the bm25 teacher)."""


class DenseRetriever:
    """Exact cosine top-k over the collection with a dense teacher's embeddings (ties by doc id)."""

    def __init__(self, teacher, doc_ids: Sequence[str], doc_texts: Sequence[str], cache_dir: Optional[str],
                 progress: bool = True, searcher: bool = True):
        self.teacher = teacher
        self.doc_ids = list(doc_ids)
        self.embeddings = embed_corpus(teacher, self.doc_ids, list(doc_texts), cache_dir, progress=progress,
                                       all_ranks=searcher).vectors
        if self.embeddings is not None:  # the same teacher then scores candidates without re-embedding them
            teacher.remember_documents(list(doc_texts), self.embeddings)
        order = sorted(range(len(self.doc_ids)), key=self.doc_ids.__getitem__)
        self._id_rank = np.empty(len(self.doc_ids), np.int64)
        self._id_rank[order] = np.arange(len(self.doc_ids))

    @torch.no_grad()
    def search(self, query_texts: Sequence[str], k: int) -> tuple[list[list[str]], list[list[float]]]:
        """Top-k (doc ids, cosine scores) per query."""
        from sparse.retrieval.bm25 import top_k_positions

        if not len(query_texts):
            return [], []
        q = self.teacher.embed_queries(list(query_texts)).float().cpu()
        docs = torch.from_numpy(self.embeddings)
        block = max(1, SCORE_BLOCK // max(len(self.doc_ids), 1))
        ids, scores = [], []
        for s in range(0, len(q), block):
            sims = (q[s:s + block] @ docs.T).numpy()
            for row in sims:
                top = top_k_positions(row, self._id_rank, k)
                ids.append([self.doc_ids[i] for i in top])
                scores.append([float(x) for x in row[top]])
        return ids, scores

    def close(self) -> None:
        """Drop the embeddings."""
        self.embeddings = None


class UnionRetriever:
    """The union of several retrievers' top-k per query.

    ``search`` returns, per query, the union's doc ids ordered by their best rank over the
    retrievers (then retriever order, then doc id) and that best rank (1 = someone's first hit):
    a deterministic order only; KD rows are ordered by the ensemble afterwards.
    """

    def __init__(self, retrievers: Sequence[tuple[str, object]]):
        if not retrievers:
            raise ValueError("a union needs at least one retriever")
        self.retrievers = list(retrievers)
        self.last_hits: dict[str, int] = {}

    def search_each(self, query_texts: Sequence[str], k: int) -> list[list[list[str]]]:
        """[retriever][query] top-k doc ids."""
        return [r.search(list(query_texts), k)[0] for _, r in self.retrievers]

    def search(self, query_texts: Sequence[str], k: int) -> tuple[list[list[str]], list[list[float]]]:
        """(union doc ids, best rank) per query; ``last_hits`` counts each retriever's hits."""
        each = self.search_each(query_texts, k)
        self.last_hits = {name: sum(len(ids) for ids in each[m]) for m, (name, _) in enumerate(self.retrievers)}
        out_ids, out_ranks = [], []
        for i in range(len(query_texts)):
            best: dict[str, tuple[int, int]] = {}
            for m, per_query in enumerate(each):
                for rank, d in enumerate(per_query[i], 1):
                    if d not in best or (rank, m) < best[d]:
                        best[d] = (rank, m)
            order = sorted(best, key=lambda d: (best[d], d))
            out_ids.append(order)
            out_ranks.append([float(best[d][0]) for d in order])
        return out_ids, out_ranks

    def close(self) -> None:
        """Close every retriever."""
        for _, r in self.retrievers:
            r.close()


def scratch_index_options(cfg, name: str = "") -> dict:
    """Engine options from the config; an OpenSearch index is a scratch one, deleted after."""
    opts = engine_options(cfg)
    if cfg.eval.engine != "embedded":
        opts.update(delete_on_close=True,
                    index_name=f"{cfg.opensearch.opensearch_index_prefix}-datagen-{name}".lower())
    return opts


def student_retriever(cfg, data, progress: bool = True, searcher: bool = True,
                      index_name: str = "") -> SparseRetriever:
    """The sparse model of ``model_name_or_path`` over ``data``'s collection."""
    encoder = load_encoder(cfg, device=distributed.local_device())
    return SparseRetriever(encoder, data.doc_ids, data.doc_texts, engine=cfg.eval.engine,
                           cache_dir=corpus_cache_dir(cfg), key_parts=(data.name,),
                           batch_size=cfg.eval.encode_batch_size or ENCODE_BATCH,
                           max_length=cfg.eval.corpus_max_seq_length,
                           index_opts=scratch_index_options(cfg, index_name or data.name), progress=progress,
                           searcher=searcher)


def mining_retriever(cfg, args: MiningArguments, data, progress: bool = True):
    """The retriever of ``--miner``: BM25, or the sparse model (every torchrun rank helps encode)."""
    if args.miner == "bm25":
        return BM25Retriever(data.doc_ids, data.doc_texts, args.bm25_params(), cache_dir=corpus_cache_dir(cfg),
                             progress=progress)
    return student_retriever(cfg, data, progress, searcher=distributed.is_launch_main())


def candidate_retriever(cfg, args: KDPrepArguments, data, ensemble=None, bm25_index=None, progress: bool = True,
                        searcher: bool = True):
    """The retriever of ``--candidates``: one retriever, or a ``UnionRetriever`` of several.

    Every ``torchrun`` rank must call this (the student's and the dense corpus encodings are
    sharded); ranks with no part to do pass ``searcher=False``. ``ensemble``: a dense teacher of
    the same model is reused for dense retrieval; ``bm25_index``: the shared ``BM25Index``.
    """
    cache_dir = corpus_cache_dir(cfg)
    out = []
    for kind, model in parse_candidates(args.candidates):
        if kind == "student":
            r = student_retriever(cfg, data, progress, searcher,
                                  index_name=f"{data.name}-rank{distributed.launch_rank()}")
        elif kind == "bm25":
            if not searcher:
                continue  # nothing to share out: only ranks that search build it
            r = BM25Retriever(data.doc_ids, data.doc_texts, args.bm25_params(), cache_dir=cache_dir,
                              progress=progress, index=bm25_index)
        else:
            r = DenseRetriever(_dense_teacher(args, model, ensemble), data.doc_ids, data.doc_texts, cache_dir,
                               progress=progress, searcher=searcher)
        out.append((f"{kind}:{model}" if model else kind, r))
    if not out:
        return None
    if len(out) == 1:
        return out[0][1]
    return UnionRetriever(out)


def _dense_teacher(args: KDPrepArguments, model: str, ensemble=None):
    """The ensemble's dense teacher of ``model`` if there is one, else a new one with the teacher keys."""
    from sparse.teachers import build_teacher

    for t in getattr(ensemble, "teachers", []):
        if getattr(t, "teacher_type", None) == "dense" and t.name == model:
            return t
    return build_teacher("dense", model, max_length=args.teacher_max_length, device=distributed.local_device(),
                         dtype=args.teacher_dtype, trust_remote_code=args.teacher_trust_remote_code,
                         batch_size=args.teacher_batch_size, pooling=args.dense_pooling)


def reuse_cached_embeddings(ensemble, doc_ids: Sequence[str], texts: Sequence[str], cache_dir: Optional[str]) -> int:
    """Let each bi-encoder teacher look up corpus embeddings that an earlier run cached (no new embedding);
    returns how many teachers found theirs."""
    if ensemble is None or cache_dir is None:
        return 0
    found = 0
    for teacher in ensemble.teachers:
        if not hasattr(teacher, "remember_documents") or getattr(teacher, "_known_docs", None):
            continue  # not a bi-encoder teacher (or a wrapper of one), or it already knows the corpus
        cached = cached_embeddings(teacher, doc_ids, texts, cache_dir)
        if cached is not None:
            teacher.remember_documents(list(texts), cached)
            logger.info("teacher %s reuses the cached corpus embeddings", teacher.name)
            found += 1
    return found

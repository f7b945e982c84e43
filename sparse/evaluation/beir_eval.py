"""Evaluate one sparse encoder on one BEIR(-format) dataset: encode, index, search, score.

    corpus --encode_corpus (cached, torchrun-sharded)--> doc vectors --(doc pruning) Index.add-->
    queries --encode_queries--> query vectors --(query_prune) Index.search top_k--> run
    run --metrics.evaluate_run (pytrec_eval, BEIR conventions)--> metrics
    (queries, docs) --sparsity.sparsity_stats--> flops, q_length, d_length
    (queries, docs) --footprint--> postings, bytes per format, postings touched; latency p50/p99
    (run, stored vectors) --explain.explain_rows--> per query: top documents, their tokens' contributions

Long documents (``window_length``): every document is split into token windows
(``sparse.modeling.windows``); ``max_window`` indexes each window and scores a document by its best
one (``sparse.retrieval.windows``), ``max_pool`` indexes one vector per document, the elementwise
max of its windows'. Sparsity and the index size are then those of what is indexed.

``prepare_dataset`` reads and encodes once; ``serve_dataset`` applies one set of serving settings
(document pruning, precision, query pruning) to those vectors, so a sweep encodes a corpus once.

Only rank 0 indexes, searches and scores; the other ranks help encode and return None.
Writes ``<out_dir>/results/<dataset>.json``, ``<out_dir>/runs/<dataset>.trec`` and
``<out_dir>/runs/<dataset>.explain.jsonl`` (``sparse.evaluation.explain``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from sparse.corpus import corpus_key, distributed, encode_corpus, encoder_fingerprint
from sparse.data.beir import load_beir, sorted_corpus
from sparse.evaluation.footprint import footprint, latency_stats
from sparse.evaluation.explain import explain_rows, write_explain
from sparse.evaluation.metrics import DEFAULT_METRICS, drop_identical_ids, evaluate_run, query_metrics
from sparse.evaluation.report import write_json, write_trec_run
from sparse.evaluation.sparsity import sparsity_stats
from sparse.modeling.vectors import SparseBatch
from sparse.modeling.windows import window_content
from sparse.retrieval.base import prune_queries
from sparse.retrieval.embedded import index_class
from sparse.retrieval.precision import IMPACT_SCALE, query_values, store_values
from sparse.retrieval.pruning import prune_documents
from sparse.retrieval.windows import search_best_window, window_ids

logger = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    """How one dataset is evaluated: split, depth, engine and its options, caching, batching, outputs."""

    split: str = "test"
    top_k: int = 1000
    engine: str = "embedded"
    engine_opts: dict = field(default_factory=dict)  # passed to build_index (precision, url, ...)
    query_prune: float = 0.0
    doc_prune_type: str = "none"  # sparse.retrieval.pruning, applied to the cached vectors
    doc_prune_value: Optional[float] = None
    latency_queries: int = 1000  # embedded engine: queries timed one at a time (0: none)
    cache_dir: Optional[str] = None
    batch_size: int = 32
    dtype: str = "fp32"  # encode dtype: fp32 exact, bf16 / fp16 autocast (their vectors are cached apart)
    max_length: int = 512
    progress: bool = True
    metrics: tuple = DEFAULT_METRICS
    index_prefix: str = "sparse-eval"
    skip_ingest: bool = False
    delete_index: bool = False
    write_run: bool = True
    window_length: Optional[int] = None  # token windows instead of truncation (sparse.modeling.windows)
    window_stride: Optional[int] = None  # None: the window's text tokens (no overlap)
    window_combine: str = "max_window"
    explain_top_k: int = 10  # documents per query in the explain file (0: none)


def index_name(prefix: str, dataset: str, key: str) -> str:
    """An OpenSearch-legal index name (lowercase, no ``\\/*?"<>| ,#:``) per dataset and model."""
    name = f"{prefix}-{dataset}-{key[:12]}".lower()
    return re.sub(r"[^a-z0-9_.+-]", "-", name).lstrip("-_+")


def _run_dict(query_ids, hit_ids, hit_scores) -> dict[str, dict[str, float]]:
    return {qid: dict(zip(ids, scores)) for qid, ids, scores in zip(query_ids, hit_ids, hit_scores)}


@dataclass
class PreparedDataset:
    """One dataset read and encoded once, for any number of serving settings."""

    name: str
    doc_ids: list
    texts: list
    docs: Any  # SparseBatch of what is indexed (documents or windows), before serving-time pruning
    index_ids: list  # the id of each row of docs: the document's, or its window's
    window_counts: Any  # windows per document (max_window), else None
    window: Optional[tuple]  # (length, stride) or None
    query_ids: list
    query_texts: dict
    queries: Any  # SparseBatch of the queries, before query pruning
    qrels: dict
    timings: dict
    encoded: Any  # the corpus cache's answer (entry, key, hit)


@dataclass
class Served:
    """What one serving setting indexed and searched with, as the engine applies it (for explain files)."""

    docs: Any  # stored document (or window) vectors
    queries: Any  # query vectors as searched


def prepare_dataset(encoder, dataset: str, dataset_dir: str, opts: EvalOptions) -> Optional[PreparedDataset]:
    """Read ``dataset`` and encode its corpus (cached) and queries; None on ranks other than 0."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    corpus, queries, qrels = load_beir(dataset_dir, opts.split)
    doc_ids, texts = sorted_corpus(corpus)
    timings["load_s"] = time.perf_counter() - t
    logger.info("%s: %d documents, %d queries with qrels (%s split)", dataset, len(doc_ids), len(queries), opts.split)

    window = (opts.window_length, opts.window_stride or window_content(encoder.tokenizer, opts.window_length)) \
        if opts.window_length else None
    encoded = encode_corpus(encoder, doc_ids, texts, opts.cache_dir, key_parts=(dataset,),
                            batch_size=opts.batch_size, max_length=opts.max_length, progress=opts.progress,
                            dtype=opts.dtype, window=window)
    timings["encode_corpus_s"] = encoded.seconds
    if not distributed.is_launch_main():
        return None
    docs, index_ids, counts = indexed_vectors(encoded.vectors, doc_ids, opts.window_combine if window else None)
    query_ids = sorted(queries)
    t = time.perf_counter()
    qvecs = encoder.encode_queries([queries[q] for q in query_ids], batch_size=opts.batch_size,
                                   progress=opts.progress, dtype=opts.dtype)
    timings["encode_queries_s"] = time.perf_counter() - t
    return PreparedDataset(dataset, doc_ids, texts, docs, index_ids, counts, window, query_ids, queries, qvecs, qrels,
                           timings, encoded)


def indexed_vectors(encoded, doc_ids: list[str], combine: Optional[str]):
    """(vectors, ids, windows per document or None) to index: the documents' own vectors; with windows
    (``combine``), every window under its own id (``max_window``) or the max-pooled windows (``max_pool``)."""
    if combine is None:
        return encoded, doc_ids, None
    if combine == "max_pool":
        return encoded.max_pool(), doc_ids, None
    return encoded.windows, window_ids(doc_ids, encoded.counts), encoded.counts


def evaluate_dataset(encoder, dataset: str, dataset_dir: str, out_dir: str, opts: EvalOptions,
                     extra: Optional[dict[str, Any]] = None) -> Optional[dict]:
    """Evaluate ``encoder`` on ``dataset``; returns the result dict on rank 0, None elsewhere."""
    prepared = prepare_dataset(encoder, dataset, dataset_dir, opts)
    if prepared is None:
        return None
    result, run, served = serve_dataset(encoder, prepared, opts, extra)
    write_json(os.path.join(out_dir, "results", f"{dataset}.json"), result)
    if opts.write_run:
        write_trec_run(os.path.join(out_dir, "runs", f"{dataset}.trec"), run)
    if opts.write_run and opts.explain_top_k:
        write_explanations(encoder, prepared, served, run, opts, os.path.join(out_dir, "runs", f"{dataset}.explain.jsonl"))
    m, sp_, ix = result["metrics"], result["sparsity"], result["index"]
    logger.info("%s: NDCG@10 %.4f  Recall@100 %.4f  flops %.3f  q_len %.1f  d_len %.1f  postings %d  (%.1fs)",
                dataset, m.get("NDCG@10", float("nan")), m.get("Recall@100", float("nan")),
                sp_["flops"], sp_["q_length"], sp_["d_length"], ix["postings"], result["timings"]["total_s"])
    return result


def serve_dataset(encoder, prepared: PreparedDataset, opts: EvalOptions,
                  extra: Optional[dict[str, Any]] = None) -> tuple[dict, dict, Served]:
    """Index the prepared corpus with the serving settings of ``opts``, search, score; (result, run, served)."""
    timings = dict(prepared.timings)
    docs = prune_documents(prepared.docs, opts.doc_prune_type, opts.doc_prune_value)
    searched = prune_queries(prepared.queries, opts.query_prune)
    engine = index_class(opts.engine)
    engine_opts = dict(opts.engine_opts)
    if engine.persistent:  # a named index per dataset, model and document pruning, reusable with skip_ingest
        key = prepared.encoded.key or corpus_key(encoder_fingerprint(encoder), prepared.doc_ids, prepared.texts,
                                                 opts.max_length, opts.dtype, prepared.window)
        if prepared.window:
            key += f"-{opts.window_combine}"  # one index per way of indexing the windows
        if opts.doc_prune_type != "none":
            key = hashlib.sha256(f"{key}|{opts.doc_prune_type}|{opts.doc_prune_value!r}".encode()).hexdigest()
        engine_opts.setdefault("index_name", index_name(opts.index_prefix, prepared.name, key))
        engine_opts.setdefault("skip_ingest", opts.skip_ingest)
        engine_opts.setdefault("delete_on_close", opts.delete_index)
    if engine.needs_token_names:
        engine_opts.setdefault("id_to_token", encoder.id_to_token)
    index = engine(**engine_opts)
    latency = latency_stats([])
    try:
        t = time.perf_counter()
        if engine.persistent and opts.skip_ingest:
            index.verify_count(len(prepared.doc_ids))
        else:
            index.add(prepared.index_ids, docs)
        timings["index_s"] = time.perf_counter() - t
        t = time.perf_counter()
        counts = prepared.window_counts
        if counts is None:
            hit_ids, hit_scores = index.search(searched, opts.top_k)
        else:
            hit_ids, hit_scores = search_best_window(index, searched, opts.top_k, int(counts.max(initial=1)))
        timings["search_s"] = time.perf_counter() - t
        timings["queries_per_second"] = len(prepared.query_ids) / max(timings["search_s"], 1e-9)
        size = index.size_bytes()
        # the stored vectors (after quantization drops zeros); OpenSearch keeps rank_features' 9 bits
        held = index.documents() if hasattr(index, "documents") else \
            SparseBatch(docs.indptr, docs.indices, store_values(docs.values, "opensearch"), docs.vocab_size)
        if hasattr(index, "time_queries") and opts.latency_queries:
            latency = latency_stats(index.time_queries(prepared.queries, opts.top_k, opts.latency_queries))
        serving = serving_record(opts, encoder, getattr(index, "ingest_ceiling", None))
    finally:
        index.close()

    run = _run_dict(prepared.query_ids, hit_ids, hit_scores)
    metrics = evaluate_run(prepared.qrels, run, opts.metrics)
    sparsity = sparsity_stats(searched, docs)
    sparsity["index_size_bytes"] = size
    timings["total_s"] = sum(v for k, v in timings.items() if k.endswith("_s"))
    result = {
        "dataset": prepared.name,
        "split": opts.split,
        "metrics": {k: metrics[k] for k in opts.metrics},
        "counts": {k: metrics[k] for k in ("queries", "queries_evaluated", "queries_without_results",
                                           "self_hits_dropped")} | {"documents": len(prepared.doc_ids)}
                  | ({"windows": int(prepared.encoded.vectors.counts.sum())} if prepared.window else {}),
        "windows": {"length": prepared.window[0], "stride": prepared.window[1], "combine": opts.window_combine}
                   if prepared.window else None,
        "sparsity": sparsity,
        "serving": serving,
        "index": footprint(held, searched, serving["index_precision"], serving["impact_scale"]),
        "latency": latency,
        "timings": timings,
        "corpus_cache": {"entry": prepared.encoded.entry,
                         "hit": prepared.encoded.cache_hit if prepared.encoded.entry else None},
        "options": {k: v for k, v in asdict(opts).items() if k != "engine_opts"}
                   | {"engine_opts": _public_opts(opts.engine_opts)},
    }
    if extra:
        result.update(extra)
    applied = SparseBatch(searched.indptr, searched.indices,
                          query_values(searched.values, serving["index_precision"], serving["impact_scale"]),
                          searched.vocab_size)
    return result, run, Served(held, applied)


def write_explanations(encoder, prepared: PreparedDataset, served: Served, run: dict, opts: EvalOptions,
                       path: str) -> None:
    """The explain file: each query's top documents with every matching token's contribution, as served."""
    t = time.perf_counter()
    counts = prepared.window_counts
    first = np.concatenate([[0], np.cumsum(counts)]) if counts is not None else np.arange(len(prepared.doc_ids) + 1)
    position = {d: i for i, d in enumerate(prepared.doc_ids)}
    stored = served.docs
    per_query = query_metrics(prepared.qrels, drop_identical_ids(run)[0], opts.metrics)
    rows = explain_rows(prepared.query_ids, prepared.query_texts, served.queries, run, per_query, prepared.qrels,
                        lambda d: [stored.row(j) for j in range(first[position[d]], first[position[d] + 1])],
                        lambda d: prepared.texts[position[d]], encoder.id_to_token, opts.explain_top_k)
    write_explain(path, rows)
    logger.info("%s: explained the top %d of %d queries in %.1fs", prepared.name, opts.explain_top_k, len(rows),
                time.perf_counter() - t)


def serving_record(opts: EvalOptions, encoder, ceiling: Optional[float]) -> dict:
    """Every serving setting of a run, as the results JSON records it."""
    e = opts.engine_opts
    precision = e.get("precision", "float") if opts.engine == "embedded" else "opensearch"
    return {"doc_prune_type": opts.doc_prune_type, "doc_prune_value": opts.doc_prune_value,
            "model_prune_ratio": encoder.settings.prune_ratio, "index_precision": precision,
            "seismic_ceiling_ingest": ceiling if precision == "seismic" else None,
            "impact_scale": e.get("impact_scale", IMPACT_SCALE), "query_prune": opts.query_prune,
            "use_two_phase": bool(e.get("two_phase", False))}


_SECRET_OPTS = {"password", "http_auth", "user", "id_to_token", "client"}


def _public_opts(engine_opts: dict) -> dict:
    """Engine options fit for a results file: no credentials, the URL without user-info."""
    from sparse.retrieval.opensearch import redact_url

    out = {k: v for k, v in engine_opts.items() if k not in _SECRET_OPTS}
    if out.get("url"):
        out["url"] = redact_url(out["url"])
    return out

"""KD training data with teacher scores (the l0 paper's data): the pipeline of ``data_preparation.py``.

For every query q of the split (queries with qrels, sorted by id):

  1. D(q) = the top ``top_k`` documents of the **whole collection** for q, retrieved with the
     given sparse model (corpus encoded once, cached and shared with evaluation; ``Index``
     search), best first, ties by doc id; a query with no hit is dropped and counted. With
     ``--candidates`` D(q) is instead the union of several retrievers' top-k (student, bm25,
     dense:MODEL; ``sparse.datagen.retrievers``), plus the judged positives with
     ``--include_positives``, listed by ensemble score (ties by doc id);
  2. every teacher m scores every pair (q, d), d in D(q): bi-encoders (dense, sparse) embed q
     and each distinct document once, cross-encoders and seq2seq models read every pair;
  3. per query and per teacher the scores are min-max normalized over D(q)
     (``sparse.teachers.minmax_per_row``: (s - min) / (max - min + 1e-6), in [0, 1));
  4. score(q, d) = mean over teachers of the normalized scores, also in [0, 1].

Steps 2-4 are ``TeacherEnsemble.score_candidates`` (``sparse.teachers.ensemble``, the same
ensemble as online distillation) with ``score_scale`` 1. With one retriever and no positives
added, rows keep that retriever's rank order; otherwise they are ordered by ensemble score.
``--write_posnegs DIR`` also writes teacher-filtered posnegs rows
(``negatives.build_filtered_posnegs``).

Rows are ``kd`` / ``kd-ids`` rows: ``{query, q_id, docs, d_ids, scores}`` (+ ``teacher_scores``
[teacher][doc] with ``--save_teacher_scores``). Work is cut into parts of ``queries_per_part``
queries, sharded over ``torchrun`` ranks and resumable (``sparse.datagen.parts``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import asdict
from typing import Sequence

import numpy as np
import torch

from sparse.corpus import corpus_cache_dir, distributed
from sparse.datagen.args import KDPrepArguments, parse_candidates, parse_teacher_specs
from sparse.datagen.negatives import build_filtered_posnegs, posnegs_features
from sparse.datagen.parts import PartStore, assigned_parts
from sparse.datagen.retrievers import candidate_retriever, reuse_cached_embeddings
from sparse.datagen.sources import beir_dataset_dir, load_source
from sparse.datagen.stats import DROP_NO_HITS, merge_kd_stats, merge_mining_stats
from sparse.errors import ConfigError, UserError, write_json

logger = logging.getLogger(__name__)

KD_SCORE_SCALE = 1.0  # the stored scores stay in [0, 1); training scales them with its score_scale key


# ------------------------------------------------------------------------------ teachers
def build_kd_ensemble(args: KDPrepArguments, device=None, bm25_index=None, cache_dir=None):
    """The ``TeacherEnsemble`` of ``--teachers`` (score_scale ``KD_SCORE_SCALE``).

    ``bm25`` teachers take the ``--bm25_*`` settings; a bare ``bm25`` scores with ``bm25_index``
    (the ``BM25Index`` of the collection being processed).
    """
    from sparse.teachers import build_ensemble

    specs = parse_teacher_specs(args.teachers)
    options = []
    for kind, model in specs:
        if kind != "bm25":
            options.append(None)
            continue
        if model is None and bm25_index is None:
            raise ConfigError("teacher 'bm25' without a collection needs the collection's BM25 index")
        opts = {**asdict(args.bm25_params()), "cache_dir": cache_dir}
        options.append({**opts, "index": bm25_index} if model is None else opts)
    kwargs = {"types": [k for k, _ in specs], "model_ids": [m for _, m in specs],
              "poolings": args.dense_pooling, "max_lengths": args.teacher_max_length,
              "batch_size": args.teacher_batch_size, "trust_remote_code": args.teacher_trust_remote_code,
              "score_scale": KD_SCORE_SCALE, "teacher_options": options}
    if args.teacher_dtype:
        kwargs["dtype"] = args.teacher_dtype
    return build_ensemble(kwargs, max_length=args.teacher_max_length, device=device)


# ------------------------------------------------------------------------------ one part
def kd_features(with_teacher_scores: bool):
    """The columns of a ``kd`` row (+ ``teacher_scores``)."""
    from datasets import Features, List, Value

    spec = {"query": Value("string"), "q_id": Value("string"), "docs": List(Value("string")),
            "d_ids": List(Value("string")), "scores": List(Value("float32"))}
    if with_teacher_scores:
        spec["teacher_scores"] = List(List(Value("float32")))
    return Features(spec)


def rows_dataset(rows: list[dict], features):
    """A ``Dataset`` of ``rows`` with these columns; no rows gives an empty dataset that keeps them."""
    from datasets import Dataset

    return Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)


def make_part(qids: Sequence[str], data, text_of: dict, retriever, ensemble, args: KDPrepArguments,
              progress: bool = False):
    """(kd dataset of these queries, part stats, posnegs (dataset, ``MiningStats`` dict) or None);
    ``ensemble`` is a ``TeacherEnsemble``."""
    hit_ids, _ = retriever.search([data.queries[q] for q in qids], args.top_k)
    added, absent = 0, 0
    if args.wants_positives():  # the judged positives join the candidates, so the teachers score them
        hit_ids = [list(ids) for ids in hit_ids]
        for q, ids in zip(qids, hit_ids):
            have = set(ids)
            positives = [d for d, g in sorted(data.qrels.get(q, {}).items()) if g > 0]
            extra = [d for d in positives if d in text_of and d not in have]
            ids.extend(extra)
            added += len(extra)
            absent += sum(1 for d in positives if d not in text_of)
    kept = [(q, ids) for q, ids in zip(qids, hit_ids) if ids]
    dropped = [q for q, ids in zip(qids, hit_ids) if not ids]
    queries = [data.queries[q] for q, _ in kept]
    docs = [[text_of[d] for d in ids] for _, ids in kept]
    means, per_teacher = ensemble.score_candidates(queries, docs, progress) if kept else ([], [])
    if args.ensemble_order():  # best ensemble score first, ties by doc id
        for i, (q, ids) in enumerate(kept):
            order = np.lexsort((np.asarray(ids), -means[i]))
            kept[i] = (q, [ids[j] for j in order])
            docs[i] = [docs[i][j] for j in order]
            means[i] = means[i][order]
            for m in range(len(per_teacher)):
                per_teacher[m][i] = per_teacher[m][i][order]
    rows = []
    for i, (q, ids) in enumerate(kept):
        row = {"query": queries[i], "q_id": q, "docs": docs[i], "d_ids": list(ids),
               "scores": means[i].tolist()}
        if args.save_teacher_scores:
            row["teacher_scores"] = [per_teacher[m][i].tolist() for m in range(len(ensemble.teachers))]
        rows.append(row)
    ds = rows_dataset(rows, kd_features(args.save_teacher_scores))
    stats = {"queries_in": len(qids), "rows": len(rows), "docs": int(sum(len(d) for d in docs)),
             "dropped": {DROP_NO_HITS: dropped} if dropped else {}, "positives_added": added}
    if absent:
        stats["positives_not_in_collection"] = absent  # judged positives the corpus lacks: not added
    if getattr(retriever, "last_hits", None):
        stats["retriever_hits"] = dict(retriever.last_hits)
    posnegs = None
    if args.write_posnegs:
        scored = {q: (ids, means[i]) for i, (q, ids) in enumerate(kept)}
        prow, pstats = build_filtered_posnegs(qids, data.queries, data.qrels, scored, text_of,
                                              args.negative_margin, args.min_negatives)
        posnegs = (rows_dataset(prow, posnegs_features()), pstats.to_dict())
    return ds, stats, posnegs


# ------------------------------------------------------------------------------ the run
def _plan(cfg, args: KDPrepArguments, data, qids: list[str]) -> dict:
    h = hashlib.blake2b(digest_size=12)
    for q in qids:
        h.update(q.encode() + b"\x00")
    keep = {k: v for k, v in asdict(args).items() if k not in ("overwrite", "teacher_batch_size",
                                                               "num_shards", "output")}
    return {"args": keep, "model": cfg.model.model_name_or_path, "idf_path": cfg.model.idf_path,
            "max_seq_length": cfg.eval.corpus_max_seq_length, "engine": cfg.eval.engine,
            "corpus_size": len(data.doc_ids), "queries": len(qids), "queries_hash": h.hexdigest()}


def select_queries(data, max_queries) -> list[str]:
    """The query ids processed: sorted, the first ``max_queries`` when given."""
    qids = sorted(data.queries)
    return qids[:max_queries] if max_queries else qids


def run_kd(cfg, args: KDPrepArguments, progress: bool = True, retriever=None, ensemble=None) -> dict:
    """Build (or resume) the KD dataset; returns the stats dict on rank 0, {} on other ranks.

    ``retriever`` and ``ensemble`` (a ``TeacherEnsemble``) default to the ones the arguments describe.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    started = time.time()
    data_dir = args.data_dir or beir_dataset_dir(cfg)[1]
    data = load_source(data_dir, args.split, fix_encoding=args.fix_encoding)
    out = args.output_dir(data.name)
    rank, world = distributed.launch_rank(), distributed.launch_world_size()
    store = PartStore(out)
    if os.path.isfile(os.path.join(out, "stats.json")):
        if not args.overwrite:
            raise UserError(f"{out} already holds finished KD data; pass --overwrite true to rebuild it")
    pstore = PartStore(args.write_posnegs) if args.write_posnegs else None
    if pstore is not None and os.path.isfile(os.path.join(pstore.output, "stats.json")) and not args.overwrite:
        raise UserError(f"{pstore.output} already holds finished posnegs data; pass --overwrite true to rebuild it")
    if args.overwrite and rank == 0:
        for st in (store, pstore):
            if st is not None:
                st.remove()
                if os.path.isdir(st.output):
                    shutil.rmtree(st.output)
    qids = select_queries(data, args.max_queries)
    parts = [qids[s:s + args.queries_per_part] for s in range(0, len(qids), args.queries_per_part)]
    if rank != 0 and args.overwrite:
        # rank 0 deletes the old parts first: wait for the plan it writes afterwards
        distributed.wait_for_files([os.path.join(store.root, "plan.json")], 3600.0, "rank 0's plan",
                                   newer_than=started - 1)
    store.check_plan(_plan(cfg, args, data, qids))  # every rank: same plan or a clear error
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    todo = [i for i in assigned_parts(len(parts), rank, world) if not store.is_done(i)]
    skipped = len(assigned_parts(len(parts), rank, world)) - len(todo)
    if skipped:
        logger.info("rank %d: %d finished parts found, not redone", rank, skipped)
    # under torchrun every rank takes part in encoding the corpus, with or without parts to do
    if todo or world > 1:
        bm25_index = None  # one BM25 index of the collection, for bm25 candidates and a bare bm25 teacher
        if todo and ((retriever is None and ("bm25", None) in parse_candidates(args.candidates))
                     or (ensemble is None and ("bm25", None) in parse_teacher_specs(args.teachers))):
            from sparse.retrieval.bm25 import BM25Index

            bm25_index = BM25Index(data.doc_ids, data.doc_texts, args.bm25_params(), cache_dir=corpus_cache_dir(cfg),
                                   progress=progress)
        if ensemble is None and todo:
            ensemble = build_kd_ensemble(args, device=distributed.local_device(), bm25_index=bm25_index,
                                         cache_dir=corpus_cache_dir(cfg))
        if retriever is None:
            retriever = candidate_retriever(cfg, args, data, ensemble, bm25_index, progress=progress,
                                            searcher=bool(todo))
        if todo:
            reuse_cached_embeddings(ensemble, data.doc_ids, data.doc_texts, corpus_cache_dir(cfg))
    text_of = data.text_of()
    bar = tqdm(total=sum(len(parts[i]) for i in todo), desc=f"kd queries (rank {rank})", unit="query",
               disable=not progress)
    for i in todo:
        t = time.perf_counter()
        ds, stats, posnegs = make_part(parts[i], data, text_of, retriever, ensemble, args, progress)
        stats["seconds"] = round(time.perf_counter() - t, 2)
        if pstore is not None:
            pstore.save(i, *posnegs)  # before the kd part: a finished kd part implies its posnegs part
        store.save(i, ds, stats)
        bar.update(len(parts[i]))
    bar.close()
    if rank != 0:
        return {}
    store.wait_all(len(parts))
    merged = store.merge(len(parts), args.num_shards)
    stats = merge_kd_stats([store.stats(i) for i in range(len(parts))])
    stats.update({"dataset": data.name, "data_dir": data_dir, "split": args.split, "corpus_size": len(data.doc_ids),
                  "teachers": list(args.teachers or []), "top_k": args.top_k, "rows_written": len(merged),
                  "seconds_this_run": round(time.perf_counter() - t0, 1), "resumed_parts": skipped})
    if pstore is not None:
        stats["posnegs"] = _finish_posnegs(pstore, len(parts), args, cfg, data.name)
    _write_json(os.path.join(out, "kd_config.json"), {"kd": asdict(args), **cfg.to_dict()})
    _write_json(os.path.join(out, "stats.json"), stats)
    store.remove()
    msg = (f"{out}: {stats['rows']} kd rows from {stats['queries_in']} queries, "
           f"{stats['mean_docs']:.1f} docs per row; dropped: {stats['queries_dropped']}")
    logger.info(msg)
    print(msg)
    return stats


def _finish_posnegs(pstore: PartStore, n_parts: int, args: KDPrepArguments, cfg, name: str) -> dict:
    """Merge the posnegs parts into ``--write_posnegs`` (rows + ``stats.json``, as ``demo_train_data.py``)."""
    merged = pstore.merge(n_parts, args.num_shards)
    mstats = merge_mining_stats([pstore.stats(i) for i in range(n_parts)])
    mstats.extra.update({"dataset": name, "split": args.split, "candidates": list(args.candidates),
                         "teachers": list(args.teachers or []), "negative_margin": args.negative_margin,
                         "top_k": args.top_k})
    _write_json(os.path.join(pstore.output, "prep_config.json"), {"kd": asdict(args), **cfg.to_dict()})
    mstats.save(os.path.join(pstore.output, "stats.json"))
    pstore.remove()
    msg = f"{pstore.output}: {mstats.summary()}"
    logger.info(msg)
    print(msg)
    if not len(merged):
        logger.warning("%s holds no posnegs rows (%s)", pstore.output, mstats.summary())
    return {"output": pstore.output, "rows": mstats.rows, "queries_kept": mstats.queries_kept,
            "queries_dropped": mstats.to_dict()["queries_dropped"], "mean_negatives": round(mstats.mean_negatives, 3)}


def _write_json(path: str, content: dict) -> None:
    write_json(path, content, default=str)

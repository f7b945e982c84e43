"""KD training data with teacher scores (the l0 paper's data): the pipeline of ``data_preparation.py``.

For every query q of the split (queries with qrels, sorted by id):

  1. D(q) = the top ``top_k`` documents of the **whole collection** for q, retrieved with the
     given sparse model (corpus encoded once, cached and shared with evaluation; ``Index``
     search), best first, ties by doc id; a query with no hit is dropped and counted;
  2. every teacher m scores every pair (q, d), d in D(q): bi-encoders (dense, sparse) embed q
     and each distinct document once, cross-encoders and seq2seq models read every pair;
  3. per query and per teacher the scores are min-max normalized over D(q)
     (``sparse.teachers.minmax_per_row``: (s - min) / (max - min + 1e-6), in [0, 1));
  4. score(q, d) = mean over teachers of the normalized scores, also in [0, 1].

The reference (``data_preparation.py`` on l0_enhance, section 2.10) normalized over batches of
50 pairs that mixed queries, retrieved from the ~10 passages attached to each query rather than
the collection, and could not run (bug 8.21); none of that is reproduced.

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

from sparse.datagen.args import KDPrepArguments, load_encoder
from sparse.datagen.parts import PartStore, assigned_parts
from sparse.errors import ConfigError, UserError

logger = logging.getLogger(__name__)

TEACHER_TYPES = ("dense", "sparse", "cross", "seq2seq")
DROP_NO_HITS = "no document retrieved (the query shares no token with the collection)"


# ------------------------------------------------------------------------------ teachers
def parse_teacher_specs(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``["dense:PATH", "cross:ID", ...]`` -> [(type, model id)]."""
    out = []
    for spec in specs or []:
        kind, sep, model = str(spec).partition(":")
        if not sep or not model or kind not in TEACHER_TYPES:
            raise ConfigError(f"teacher {spec!r} must be TYPE:MODEL with TYPE one of {TEACHER_TYPES}")
        out.append((kind, model))
    if not out:
        raise ConfigError("--teachers is required: e.g. --teachers dense:PATH,sparse:PATH "
                          f"(types {TEACHER_TYPES})")
    return out


def build_teachers(args: KDPrepArguments, device=None) -> list:
    from sparse.teachers import build_ensemble

    specs = parse_teacher_specs(args.teachers)
    kwargs = {"types": [k for k, _ in specs], "model_ids": [m for _, m in specs],
              "poolings": args.dense_pooling, "max_lengths": args.teacher_max_length,
              "batch_size": args.teacher_batch_size, "trust_remote_code": args.teacher_trust_remote_code}
    if args.teacher_dtype:
        kwargs["dtype"] = args.teacher_dtype
    return build_ensemble(kwargs, max_length=args.teacher_max_length, device=device).teachers


def _name(teacher) -> str:
    return getattr(teacher, "teacher_type", type(teacher).__name__)


def _embed_in_chunks(embed, texts: list[str], desc: str, progress: bool, chunk: int = 512) -> torch.Tensor:
    from tqdm.auto import tqdm

    out = []
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress, leave=False) as bar:
        for s in range(0, len(texts), chunk):
            out.append(embed(texts[s:s + chunk]).float().cpu())
            bar.update(len(texts[s:s + chunk]))
    return torch.cat(out) if out else torch.zeros(0)


def raw_teacher_scores(teacher, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]],
                       progress: bool = False) -> list[np.ndarray]:
    """One teacher's raw scores: for each query, an array over its documents."""
    if getattr(teacher, "is_bi_encoder", False):
        # distinct documents, longest first, so each batch pads to similar lengths
        distinct = sorted({d for docs in docs_per_query for d in docs}, key=lambda d: (-len(d), d))
        position = {d: i for i, d in enumerate(distinct)}
        d_emb = _embed_in_chunks(teacher.embed_docs, distinct, f"{_name(teacher)} docs", progress)
        q_emb = _embed_in_chunks(teacher.embed_queries, list(queries), f"{_name(teacher)} queries", progress)
        return [(d_emb[[position[d] for d in docs]] @ q_emb[i]).numpy() if docs else np.zeros(0, np.float32)
                for i, docs in enumerate(docs_per_query)]
    flat_q = [q for q, docs in zip(queries, docs_per_query) for _ in docs]
    flat_d = [d for docs in docs_per_query for d in docs]
    from tqdm.auto import tqdm

    chunk = 1024
    pieces = []
    with tqdm(total=len(flat_q), desc=f"{_name(teacher)} pairs", unit="pair", disable=not progress,
              leave=False) as bar:
        for s in range(0, len(flat_q), chunk):
            pieces.append(teacher.score_pairs(flat_q[s:s + chunk], flat_d[s:s + chunk]).float().cpu().numpy())
            bar.update(len(pieces[-1]))
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    bounds = np.cumsum([0] + [len(docs) for docs in docs_per_query])
    return [flat[bounds[i]:bounds[i + 1]] for i in range(len(docs_per_query))]


def normalize_row(scores: np.ndarray) -> np.ndarray:
    from sparse.teachers import minmax_per_row

    if len(scores) == 0:
        return scores.astype(np.float32)
    return minmax_per_row(torch.from_numpy(np.asarray(scores, np.float32))[None, :])[0].numpy()


def ensemble_scores(teachers, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]],
                    progress: bool = False):
    """(mean normalized score per query, [teacher][query] normalized scores)."""
    per_teacher = []
    for teacher in teachers:
        raw = raw_teacher_scores(teacher, queries, docs_per_query, progress)
        per_teacher.append([normalize_row(r) for r in raw])
    means = [np.mean([per_teacher[m][i] for m in range(len(teachers))], axis=0).astype(np.float32)
             for i in range(len(queries))]
    return means, per_teacher


# ------------------------------------------------------------------------------ one part
def kd_features(with_teacher_scores: bool):
    from datasets import Features, List, Value

    spec = {"query": Value("string"), "q_id": Value("string"), "docs": List(Value("string")),
            "d_ids": List(Value("string")), "scores": List(Value("float32"))}
    if with_teacher_scores:
        spec["teacher_scores"] = List(List(Value("float32")))
    return Features(spec)


def make_part(qids: Sequence[str], data, text_of: dict, retriever, teachers, args: KDPrepArguments,
              progress: bool = False):
    """(kd dataset of these queries, part stats)."""
    from datasets import Dataset

    hit_ids, _ = retriever.search([data.queries[q] for q in qids], args.top_k)
    kept = [(q, ids) for q, ids in zip(qids, hit_ids) if ids]
    dropped = [q for q, ids in zip(qids, hit_ids) if not ids]
    queries = [data.queries[q] for q, _ in kept]
    docs = [[text_of[d] for d in ids] for _, ids in kept]
    means, per_teacher = ensemble_scores(teachers, queries, docs, progress) if kept else ([], [])
    rows = []
    for i, (q, ids) in enumerate(kept):
        row = {"query": queries[i], "q_id": q, "docs": docs[i], "d_ids": list(ids),
               "scores": means[i].tolist()}
        if args.save_teacher_scores:
            row["teacher_scores"] = [per_teacher[m][i].tolist() for m in range(len(teachers))]
        rows.append(row)
    ds = Dataset.from_list(rows, features=kd_features(args.save_teacher_scores))
    stats = {"queries_in": len(qids), "rows": len(rows), "docs": int(sum(len(d) for d in docs)),
             "dropped": {DROP_NO_HITS: dropped} if dropped else {}}
    return ds, stats


# ------------------------------------------------------------------------------ the run
def _plan(cfg, args: KDPrepArguments, data, qids: list[str]) -> dict:
    h = hashlib.blake2b(digest_size=12)
    for q in qids:
        h.update(q.encode() + b"\x00")
    keep = {k: v for k, v in asdict(args).items() if k not in ("overwrite", "batch_size", "teacher_batch_size",
                                                               "num_shards", "output")}
    return {"args": keep, "model": cfg.model.model_name_or_path, "idf_path": cfg.model.idf_path,
            "max_seq_length": cfg.data.max_seq_length, "engine": cfg.eval.engine,
            "corpus_size": len(data.doc_ids), "queries": len(qids), "queries_hash": h.hexdigest()}


def select_queries(data, max_queries) -> list[str]:
    qids = sorted(data.queries)
    return qids[:max_queries] if max_queries else qids


def output_dir(args: KDPrepArguments, name: str) -> str:
    return args.output or os.path.join("data", f"{name}_kd")


def run_kd(cfg, args: KDPrepArguments, progress: bool = True, retriever=None, teachers=None) -> dict:
    """Build (or resume) the KD dataset; returns the stats dict on rank 0, {} on other ranks."""
    from tqdm.auto import tqdm

    from sparse.datagen.mining import _device, corpus_cache_dir, index_options
    from sparse.datagen.sources import load_source
    from sparse.evaluation import distributed

    t0 = time.perf_counter()
    started = time.time()
    data_dir = args.data_dir or _beir_dir(cfg)
    data = load_source(data_dir, args.split, fix_encoding=args.fix_encoding)
    out = output_dir(args, data.name)
    rank, world = distributed.rank(), distributed.world_size()
    store = PartStore(out)
    if os.path.isfile(os.path.join(out, "stats.json")):
        if not args.overwrite:
            raise UserError(f"{out} already holds finished KD data; pass --overwrite true to rebuild it")
    if args.overwrite and rank == 0:
        store.remove()
        if os.path.isdir(out):
            shutil.rmtree(out)
    qids = select_queries(data, args.max_queries)
    parts = [qids[s:s + args.queries_per_part] for s in range(0, len(qids), args.queries_per_part)]
    if rank != 0 and args.overwrite:
        # rank 0 deletes the old parts first: wait for the plan it writes afterwards
        _wait_file(os.path.join(store.root, "plan.json"), newer_than=started - 1)
    store.check_plan(_plan(cfg, args, data, qids))  # every rank: same plan or a clear error
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    todo = [i for i in assigned_parts(len(parts), rank, world) if not store.is_done(i)]
    skipped = len(assigned_parts(len(parts), rank, world)) - len(todo)
    if skipped:
        logger.info("rank %d: %d finished parts found, not redone", rank, skipped)
    # under torchrun every rank takes part in encoding the corpus, with or without parts to do
    if todo or world > 1:
        if retriever is None:
            from sparse.datagen.miners import SparseRetriever

            encoder = load_encoder(cfg, device=_device())
            retriever = SparseRetriever(encoder, data.doc_ids, data.doc_texts, engine=cfg.eval.engine,
                                        cache_dir=corpus_cache_dir(cfg),
                                        key_parts=(data.name,), batch_size=args.batch_size,
                                        max_length=cfg.data.max_seq_length, progress=progress,
                                        index_opts=index_options(cfg, f"{data.name}-rank{rank}"),
                                        searcher=bool(todo))
        if teachers is None and todo:
            teachers = build_teachers(args, device=_device())
    text_of = data.text_of()
    bar = tqdm(total=sum(len(parts[i]) for i in todo), desc=f"kd queries (rank {rank})", unit="query",
               disable=not progress)
    for i in todo:
        t = time.perf_counter()
        ds, stats = make_part(parts[i], data, text_of, retriever, teachers, args, progress)
        stats["seconds"] = round(time.perf_counter() - t, 2)
        store.save(i, ds, stats)
        bar.update(len(parts[i]))
    bar.close()
    if rank != 0:
        return {}
    store.wait_all(len(parts))
    merged = store.merge(len(parts), args.num_shards)
    stats = _merge_stats(store, len(parts))
    stats.update({"dataset": data.name, "data_dir": data_dir, "split": args.split, "corpus_size": len(data.doc_ids),
                  "teachers": list(args.teachers or []), "top_k": args.top_k, "rows_written": len(merged),
                  "seconds_this_run": round(time.perf_counter() - t0, 1), "resumed_parts": skipped})
    _write_json(os.path.join(out, "kd_config.json"), {"kd": asdict(args), **cfg.to_dict()})
    _write_json(os.path.join(out, "stats.json"), stats)
    store.remove()
    msg = (f"{out}: {stats['rows']} kd rows from {stats['queries_in']} queries, "
           f"{stats['mean_docs']:.1f} docs per row; dropped: {stats['queries_dropped']}")
    logger.info(msg)
    print(msg)
    return stats


def _merge_stats(store: PartStore, n_parts: int) -> dict:
    total = {"queries_in": 0, "rows": 0, "docs": 0, "dropped": {}, "seconds_parts": 0.0}
    for i in range(n_parts):
        s = store.stats(i)
        for k in ("queries_in", "rows", "docs"):
            total[k] += s[k]
        total["seconds_parts"] += s.get("seconds", 0.0)
        for reason, ids in s["dropped"].items():
            entry = total["dropped"].setdefault(reason, {"count": 0, "examples": []})
            entry["count"] += len(ids)
            entry["examples"] = (entry["examples"] + ids)[:10]
    total["mean_docs"] = total["docs"] / total["rows"] if total["rows"] else 0.0
    total["queries_dropped"] = sum(v["count"] for v in total["dropped"].values())
    total["seconds_parts"] = round(total["seconds_parts"], 1)
    return total


def _beir_dir(cfg) -> str:
    from sparse.datagen.mining import dataset_dir

    return dataset_dir(cfg)[1]


def _wait_file(path: str, timeout: float = 3600.0, newer_than: float = 0.0) -> None:
    deadline = time.monotonic() + timeout
    while not (os.path.isfile(path) and os.path.getmtime(path) >= newer_than):
        if time.monotonic() > deadline:
            raise UserError(f"timed out waiting for {path}")
        time.sleep(0.5)


def _write_json(path: str, content: dict) -> None:
    import json

    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2, default=str)

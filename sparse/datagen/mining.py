"""Hard-negative mining for a BEIR-format dataset: the pipeline behind ``demo_train_data.py``.

1. load the split (``--split train``) of ``<beir_dir>/<name>``;
2. retrieve the top ``top_k`` documents of every query that has qrels, with the sparse model
   (corpus encoded once: cached and shared with evaluation, sharded under ``torchrun``) or BM25;
3. build ``posnegs`` rows (``negatives.build_posnegs_rows``: qrels removed, ``skip_top``,
   ``sampling``, one row per positive);
4. write a ``save_to_disk`` directory with ``stats.json`` (rows, queries, negatives, drops) and
   ``mining_config.json``.

Under ``torchrun`` every rank encodes its share of the corpus; rank 0 searches and writes.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict

from sparse.corpus import distributed
from sparse.datagen.args import MiningArguments
from sparse.datagen.negatives import build_posnegs_rows, write_rows
from sparse.datagen.retrievers import mining_retriever
from sparse.datagen.sources import beir_dataset_dir, load_beir_data
from sparse.errors import UserError

logger = logging.getLogger(__name__)

SEARCH_BATCH = 256


def search_all(retriever, query_texts: list[str], k: int, progress: bool = True):
    """Top-k (doc ids, scores) of every query, searched in batches of ``SEARCH_BATCH``."""
    from tqdm.auto import tqdm

    ids, scores = [], []
    bar = tqdm(total=len(query_texts), desc="search queries", unit="query", disable=not progress)
    for s in range(0, len(query_texts), SEARCH_BATCH):
        i, sc = retriever.search(query_texts[s:s + SEARCH_BATCH], k)
        ids.extend(i)
        scores.extend(sc)
        bar.update(len(i))
    bar.close()
    return ids, scores


def run_mining(cfg, args: MiningArguments, progress: bool = True) -> dict:
    """Mine and write; returns the stats dict (rank 0) or {} (other ranks)."""
    name, path = beir_dataset_dir(cfg)
    out = args.output_dir(name)
    rank = distributed.launch_rank()
    if os.path.isfile(os.path.join(out, "stats.json")) and not args.overwrite:
        raise UserError(f"{out} already holds mined data; pass --overwrite true to replace it")
    if args.miner == "bm25" and rank != 0:
        return {}  # BM25 has no corpus encoding to share out
    t0 = time.perf_counter()
    data = load_beir_data(path, args.split)
    retriever = mining_retriever(cfg, args, data, progress=progress)
    t_index = time.perf_counter() - t0
    if rank != 0:
        retriever.close()
        return {}
    qids = sorted(data.queries)
    retrieved, _ = search_all(retriever, [data.queries[q] for q in qids], args.top_k, progress)
    retriever.close()
    rows, stats = build_posnegs_rows(qids, data.queries, data.qrels, retrieved, data.text_of(),
                                     skip_top=args.skip_top, negatives_per_query=args.negatives_per_query,
                                     sampling=args.sampling, seed=args.seed, min_negatives=args.min_negatives)
    if not rows:
        raise UserError(f"no training rows from {path} ({stats.summary()})")
    stats.extra = {"dataset": name, "split": args.split, "miner": args.miner, "corpus_size": len(data.doc_ids),
                   "seconds_encode_and_index": round(t_index, 1),
                   "seconds_total": round(time.perf_counter() - t0, 1)}
    if os.path.isdir(out):
        shutil.rmtree(out)
    run_config = {"mining": asdict(args), **cfg.to_dict()}
    write_rows(rows, out, stats, extra_files={"mining_config.json": run_config})
    logger.info("wrote %s: %s", out, stats.summary())
    print(f"{out}: {stats.summary()}")
    return stats.to_dict()

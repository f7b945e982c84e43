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

from sparse.corpus import corpus_cache_dir, distributed, load_encoder
from sparse.datagen.args import MiningArguments
from sparse.datagen.negatives import build_posnegs_rows, write_rows
from sparse.datagen.sources import load_beir_data
from sparse.errors import UserError

logger = logging.getLogger(__name__)

SEARCH_BATCH = 256


def dataset_dir(cfg) -> tuple[str, str]:
    names = [n.strip() for n in str(cfg.data.beir_datasets).split(",") if n.strip()]
    if len(names) != 1:
        raise UserError(f"--beir_datasets must name exactly one dataset to mine, got {names}")
    from sparse.assets import beir_dataset

    return names[0], str(beir_dataset(names[0], cfg.data.beir_dir))


def output_dir(args: MiningArguments, name: str) -> str:
    return args.output or os.path.join("data", f"{name}_train")


def make_retriever(cfg, args: MiningArguments, data, progress: bool = True):
    if args.miner == "bm25":
        from sparse.datagen.args import bm25_params
        from sparse.datagen.miners import BM25Retriever

        return BM25Retriever(data.doc_ids, data.doc_texts, bm25_params(args), cache_dir=corpus_cache_dir(cfg),
                             label=data.name, progress=progress)
    from sparse.datagen.miners import SparseRetriever

    encoder = load_encoder(cfg, device=distributed.local_device())
    return SparseRetriever(encoder, data.doc_ids, data.doc_texts, engine=cfg.eval.engine,
                           cache_dir=corpus_cache_dir(cfg),
                           key_parts=(data.name,), batch_size=args.batch_size,
                           max_length=cfg.data.max_seq_length, index_opts=index_options(cfg, data.name),
                           progress=progress, searcher=distributed.is_launch_main())


def index_options(cfg, name: str = "") -> dict:
    """Engine options from the eval keys (the OpenSearch index is a scratch one, deleted after)."""
    e = cfg.eval
    if e.engine == "embedded":
        return {"precision": e.index_precision}
    opts = {"url": e.opensearch_url, "query_form": e.opensearch_query_form,
            "verify_certs": e.opensearch_verify_certs, "timeout": e.opensearch_timeout,
            "bulk_size": e.opensearch_bulk_size, "delete_on_close": True,
            "index_name": f"{e.opensearch_index_prefix}-datagen-{name}".lower()}
    return {k: v for k, v in opts.items() if v is not None}


def search_all(retriever, query_texts: list[str], k: int, progress: bool = True):
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
    name, path = dataset_dir(cfg)
    out = output_dir(args, name)
    rank = distributed.launch_rank()
    if os.path.isfile(os.path.join(out, "stats.json")) and not args.overwrite:
        raise UserError(f"{out} already holds mined data; pass --overwrite true to replace it")
    if args.miner == "bm25" and rank != 0:
        return {}  # BM25 has no corpus encoding to share out
    t0 = time.perf_counter()
    data = load_beir_data(path, args.split)
    retriever = make_retriever(cfg, args, data, progress=progress)
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

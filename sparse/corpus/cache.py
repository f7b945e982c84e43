"""Encode a corpus once: document vectors cached on disk, sharded across ``torchrun`` ranks.

The cache entry of a corpus lives in ``<cache_dir>/<label>-<key>/`` where ``key`` hashes

* the encoder (``encoder_fingerprint``: its weights, sparse settings and vocabulary; not the
  query-side IDF, inference-free flag or query length, which never change a document vector),
* the caller's ``key_parts`` (e.g. the dataset name),
* ``max_length`` and the document ids and texts themselves,

so a changed model, dataset or truncation length never reuses stale vectors. A complete entry
holds ``vectors.npz`` (a ``SparseBatch`` in the caller's document order) and ``meta.json``
(written last: it marks the entry complete). An entry that cannot be read, or holds another
number of vectors than the corpus has documents, is encoded again, with a warning that says why.

With ``WORLD_SIZE = w > 1`` rank r encodes positions r, r+w, ... and writes
``shard-r-of-w.npz``; rank 0 waits for every shard, interleaves them back into document order,
writes the entry and removes the shards. A completed entry is loaded by every rank at once.

Encoding is resumable: each rank encodes its documents in blocks of ``block_docs`` and saves
every finished block (``block-r-of-w-k.npz``, atomically) in the entry; a run killed mid-corpus
and started again loads the finished blocks and encodes only the rest. Blocks are removed once
the entry is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import zipfile
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

from sparse.corpus import distributed
from sparse.data.digest import corpus_digest
from sparse.errors import UserError, write_json
from sparse.modeling.vectors import SparseBatch

logger = logging.getLogger(__name__)

VECTORS = "vectors.npz"
META = "meta.json"
BLOCK_DOCS = 20_000  # documents per saved block: what a killed encode can lose at most, per rank


@dataclass
class CorpusVectors:
    """What ``encode_corpus`` returns: the document vectors and how they were obtained."""

    vectors: Optional[SparseBatch]  # in the order of ``ids``; None on a rank that only helped encode
    ids: list[str]
    cache_hit: bool  # loaded from a complete cache entry, not encoded
    seconds: float  # wall time of the call (hashing, loading or encoding, merging shards)
    entry: Optional[str] = None  # the cache entry directory (None without a cache)
    key: Optional[str] = None  # the hash of model + corpus behind ``entry`` (None without a cache)


# query-side state: document vectors never depend on it, so a new (learned or in-domain) IDF
# reuses the cached document vectors; the length is part of the key separately (``encode_corpus``)
QUERY_ONLY_SETTINGS = ("inf_free", "query_max_seq_length", "idf_requires_grad", "max_seq_length")
QUERY_ONLY_TENSORS = ("idf",)


def encoder_fingerprint(encoder) -> str:
    """A hash of everything that decides an encoder's document vectors (not the query-side IDF)."""
    h = hashlib.blake2b(digest_size=16)
    settings = {k: v for k, v in asdict(encoder.settings).items() if k not in QUERY_ONLY_SETTINGS}
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(str(encoder.vocab_size).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        if name in QUERY_ONLY_TENSORS:
            continue
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def corpus_key(fingerprint: str, doc_ids: Sequence[str], texts: Sequence[str], max_length: Optional[int],
               key_parts: Sequence = ()) -> str:
    """The cache key of a corpus (ids and texts in order) encoded by an encoder of this fingerprint."""
    return corpus_digest([fingerprint, list(map(str, key_parts)), max_length, len(doc_ids)], doc_ids, texts)


def _label(key_parts: Sequence) -> str:
    label = "-".join(str(p) for p in key_parts) or "corpus"
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)[:80]


def _atomic_save(batch: SparseBatch, path: str) -> None:
    tmp = path + f".tmp{os.getpid()}.npz"
    batch.save(tmp)
    os.replace(tmp, path)


def cache_entry_dir(cache_dir: str, key_parts: Sequence, key: str) -> str:
    """``<cache_dir>/<label>-<key>``, the label made of ``key_parts`` (e.g. the dataset name)."""
    return os.path.join(cache_dir, f"{_label(key_parts)}-{key}")


def load_cached(entry: str, n_docs: int) -> Optional[SparseBatch]:
    """The vectors of a complete cache entry, or None.

    An unusable entry (unreadable, or not ``n_docs`` vectors) is marked incomplete (its
    ``meta.json`` removed, so no rank waits on it) and None is returned after a warning that says why.
    """
    if not os.path.isfile(os.path.join(entry, META)):
        return None
    try:
        batch = SparseBatch.load(os.path.join(entry, VECTORS))
        why = None if len(batch) == n_docs else f"it holds {len(batch)} vectors for {n_docs} documents"
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        why = f"it cannot be read ({type(exc).__name__}: {exc})"
    if why is None:
        return batch
    logger.warning("corpus cache entry %s is unusable, %s: encoding the corpus again", entry, why)
    try:
        os.remove(os.path.join(entry, META))
    except FileNotFoundError:  # another rank removed it first
        pass
    return None


def encode_corpus(encoder, doc_ids: Sequence[str], texts: Sequence[str], cache_dir: Optional[str],
                  key_parts: Sequence = (), batch_size: int = 32, max_length: Optional[int] = None,
                  progress: bool = True, rank: Optional[int] = None, world_size: Optional[int] = None,
                  all_ranks: bool = False, wait_timeout: float = 24 * 3600.0,
                  block_docs: Optional[int] = None, dtype: str = "fp32") -> CorpusVectors:
    """Document vectors of ``texts`` (in their order), from the cache or encoded and cached.

    ``cache_dir=None`` disables caching (single process only). Under ``torchrun`` every rank
    must call this; rank 0 gets the full batch in ``vectors``, the other ranks get None unless
    ``all_ranks``. ``rank`` / ``world_size`` default to the launch's. ``dtype`` is the encode dtype
    (``SparseEncoder.encode_documents``); callers put a non-fp32 one in ``key_parts``.
    """
    if len(doc_ids) != len(texts):
        raise ValueError(f"{len(doc_ids)} ids for {len(texts)} texts")
    t0 = time.perf_counter()
    ids = doc_ids if isinstance(doc_ids, list) else list(doc_ids)

    def result(vectors, hit, entry=None, key=None) -> CorpusVectors:
        return CorpusVectors(vectors, ids, hit, time.perf_counter() - t0, entry, key)

    rank = distributed.launch_rank() if rank is None else rank
    world = distributed.launch_world_size() if world_size is None else world_size
    if cache_dir is None:
        if world > 1:
            raise UserError("encoding a corpus across processes needs a cache_dir (the shards meet there)")
        return result(_encode(encoder, list(texts), batch_size, max_length, progress, dtype=dtype), False)
    max_length = max_length or encoder.settings.max_seq_length
    key = corpus_key(encoder_fingerprint(encoder), doc_ids, texts, max_length, key_parts)
    entry = cache_entry_dir(cache_dir, key_parts, key)
    cached = load_cached(entry, len(doc_ids))
    if cached is not None:
        logger.info("corpus vectors loaded from cache %s", entry)
        return result(cached if (rank == 0 or all_ranks) else None, True, entry, key)
    os.makedirs(entry, exist_ok=True)
    positions = list(distributed.shard_positions(len(texts), rank, world))
    t_encode = time.perf_counter()
    shard = _encode_in_blocks(encoder, [texts[i] for i in positions], batch_size, max_length, progress and rank == 0,
                              desc=f"encode corpus (rank {rank}/{world})" if world > 1 else "encode corpus",
                              folder=entry, tag=f"{rank}-of-{world}", block_docs=block_docs or BLOCK_DOCS,
                              dtype=dtype)
    logger.info("rank %d encoded %d documents in %.1fs (%.1f docs/s)", rank, len(positions),
                time.perf_counter() - t_encode, len(positions) / max(time.perf_counter() - t_encode, 1e-9))
    if world == 1:
        full = shard
    else:
        shard_paths = [os.path.join(entry, f"shard-{r}-of-{world}.npz") for r in range(world)]
        _atomic_save(shard, shard_paths[rank])
        distributed.barrier()
        if rank != 0:
            if not all_ranks:
                return result(None, False, entry, key)
            distributed.wait_for_files([os.path.join(entry, META)], wait_timeout, "rank 0 to merge the corpus shards")
            merged = load_cached(entry, len(doc_ids))
            if merged is None:
                raise UserError(f"rank 0 merged the corpus shards into {entry}, but rank {rank} cannot use them")
            return result(merged, False, entry, key)
        distributed.wait_for_files(shard_paths, wait_timeout, "every rank's corpus shard")
        shards = [SparseBatch.load(p) for p in shard_paths]
        stacked = SparseBatch.concat(shards)
        # stacked row j holds document position order[j]; invert that to document order
        order = np.concatenate([np.arange(r, len(texts), world) for r in range(world)])
        inverse = np.empty(len(order), np.int64)
        inverse[order] = np.arange(len(order))
        full = stacked.take(inverse)
    _atomic_save(full, os.path.join(entry, VECTORS))
    meta = {"n_docs": len(doc_ids), "key_parts": list(map(str, key_parts)), "max_length": max_length,
            "world_size": world, "nnz": full.nnz, "vocab_size": full.vocab_size}
    write_json(os.path.join(entry, META), meta, indent=None)
    for name in os.listdir(entry):
        if name.startswith(("shard-", "block-")):
            os.remove(os.path.join(entry, name))
    return result(full, False, entry, key)


def _encode_in_blocks(encoder, texts: list[str], batch_size: int, max_length: Optional[int], progress: bool,
                      desc: str, folder: str, tag: str, block_docs: int, dtype: str = "fp32") -> SparseBatch:
    """``_encode`` block by block, each finished block saved in ``folder`` and reused on a rerun."""
    blocks = []
    for k, start in enumerate(range(0, len(texts), block_docs)):
        part = texts[start:start + block_docs]
        path = os.path.join(folder, f"block-{tag}-{k}.npz")
        done = None
        if os.path.isfile(path):
            try:
                done = SparseBatch.load(path)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                done = None
        if done is not None and len(done) == len(part):
            logger.info("block %d of %s: %d documents already encoded (%s)", k, desc, len(part), path)
            blocks.append(done)
            continue
        batch = _encode(encoder, part, batch_size, max_length, progress, dtype=dtype,
                        desc=f"{desc} block {k + 1}" if len(texts) > block_docs else desc)
        _atomic_save(batch, path)
        blocks.append(batch)
    return SparseBatch.concat(blocks) if blocks else SparseBatch.empty(encoder.vocab_size)


def _encode(encoder, texts: list[str], batch_size: int, max_length: Optional[int], progress: bool,
            desc: str = "encode corpus", dtype: str = "fp32") -> SparseBatch:
    if not texts:
        return SparseBatch.empty(encoder.vocab_size)
    return encoder.encode_documents(texts, batch_size=batch_size, max_length=max_length, progress=progress,
                                    desc=desc, dtype=dtype)

"""Encode a corpus once: per-document data cached on disk, sharded across ``torchrun`` ranks.

Three kinds of per-document data go through this one cache:

* ``encode_corpus``: a sparse encoder's document vectors (a ``SparseBatch``), in
  ``<cache_dir>/sparse-<key>/vectors.npz``; with ``window`` the vectors of every document's token
  windows (a ``WindowedVectors``), in ``<cache_dir>/windows-<key>/windows.npz``, the window length
  and stride in the key;
* ``embed_corpus``: a dense bi-encoder's document embeddings (an ``(n, dim)`` float32 array, e.g.
  a dense teacher's), in ``<cache_dir>/dense-<key>/embeddings.npy``.

``key`` hashes what decides the data and nothing else (``corpus_key``): the model
(``encoder_fingerprint`` / ``teacher_fingerprint``: weights and settings; for a sparse encoder not
the query-side IDF, inference-free flag or query length, which never change a document vector),
the truncation length, a non-fp32 encode dtype, and the corpus content (ids and texts in order).
The dataset's name is not in the key: the same corpus under another folder name reuses the entry,
and the name (``key_parts``) is only recorded in ``meta.json``. A changed model, corpus or
truncation length never reuses stale data.

A corpus that differs from a cached one in some documents (edited, added, removed: e.g. the
adapt command's dev corpus, with 150 of 5,183 documents cut) computes only those: every entry
records one digest per document (``docs.npy``) and, in ``meta.json``, its ``family`` (the key
without the corpus: model, length, dtype, window); on a miss, the entry of the same family that
shares the most documents, at least half, gives their rows (single process only).

A complete entry holds the data file and ``meta.json`` (written last: it marks the entry
complete). An entry that cannot be read, or holds another number of rows than the corpus has
documents, is computed again, with a warning that says why.

With ``WORLD_SIZE = w > 1`` rank r computes positions r, r+w, ... and writes ``shard-r-of-w``;
rank 0 waits for every shard, interleaves them back into document order, writes the entry and
removes the shards. A completed entry is loaded by every rank at once.

Work is resumable: each rank computes its documents in blocks of ``block_docs`` and saves every
finished block (``block-r-of-w-k``, atomically) in the entry; a run killed mid-corpus and started
again loads the finished blocks and computes only the rest. Blocks are removed once the entry is
complete.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
import zipfile
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from sparse.corpus import distributed
from sparse.data.digest import corpus_digest
from sparse.errors import UserError, save_atomic, write_json
from sparse.modeling.vectors import SparseBatch
from sparse.modeling.windows import WindowedVectors, encode_windows

logger = logging.getLogger(__name__)

META = "meta.json"
DOC_DIGESTS = "docs.npy"  # one digest per document, in order: which rows another corpus can reuse
MIN_REUSE = 0.5  # reuse another entry's rows only when it holds at least this share of the documents
BLOCK_DOCS = 20_000  # documents per saved block: what a killed encode can lose at most, per rank
EMBED_CHUNK = 512  # texts per dense embed call (progress granularity)
READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


@dataclass(frozen=True)
class DocumentStore:
    """How one kind of per-document data is named, saved, loaded and put back into document order."""

    prefix: str  # entry folder: <cache_dir>/<prefix>-<key>
    filename: str  # the data file of a complete entry (its extension is the shards' and blocks')
    save: Callable[[Any, str], None]
    load: Callable[[str], Any]
    concat: Callable[[list], Any]
    take: Callable[[Any, np.ndarray], Any]
    describe: Callable[[Any], dict]  # what meta.json records about the data

    def ext(self) -> str:
        """The data file's extension, which shards and blocks share (writers such as np.save add it)."""
        return os.path.splitext(self.filename)[1]


SPARSE_VECTORS = DocumentStore("sparse", "vectors.npz", lambda b, p: b.save(p), SparseBatch.load, SparseBatch.concat,
                               lambda b, order: b.take(order), lambda b: {"nnz": b.nnz, "vocab_size": b.vocab_size})
# documents split into token windows (sparse.modeling.windows): every window's vector, counted per document
WINDOW_VECTORS = DocumentStore("windows", "windows.npz", lambda w, p: w.save(p), WindowedVectors.load,
                               WindowedVectors.concat, lambda w, order: w.take(order),
                               lambda w: {"windows": len(w.windows), "nnz": w.windows.nnz})
DENSE_EMBEDDINGS = DocumentStore("dense", "embeddings.npy", lambda a, p: np.save(p, a), np.load, np.concatenate,
                                 lambda a, order: a[order], lambda a: {"dim": int(a.shape[1])})


@dataclass
class CorpusVectors:
    """What ``encode_corpus`` / ``embed_corpus`` return: the per-document data and how it was obtained."""

    vectors: Any  # SparseBatch or (n, dim) array in the order of ``ids``; None on a rank that only helped
    ids: list[str]
    cache_hit: bool  # loaded from a complete cache entry, not computed
    seconds: float  # wall time of the call (hashing, loading or computing, merging shards)
    entry: Optional[str] = None  # the cache entry directory (None without a cache)
    key: Optional[str] = None  # the hash of model + corpus behind ``entry`` (None without a cache)


# query-side state: document vectors never depend on it, so a new (learned or in-domain) IDF
# reuses the cached document vectors; the length is part of the key separately (``corpus_key``)
QUERY_ONLY_SETTINGS = ("inf_free", "query_max_seq_length", "idf_requires_grad", "max_seq_length")
QUERY_ONLY_TENSORS = ("idf",)


def weights_fingerprint(header, state_dict: dict, skip: Sequence[str] = ()) -> str:
    """A hash of ``header`` (JSON) and every tensor of ``state_dict`` but ``skip``, by name order."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(header, sort_keys=True).encode())
    for name, tensor in sorted(state_dict.items()):
        if name in skip:
            continue
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def encoder_fingerprint(encoder) -> str:
    """A hash of everything that decides an encoder's document vectors (not the query-side IDF)."""
    settings = {k: v for k, v in asdict(encoder.settings).items() if k not in QUERY_ONLY_SETTINGS}
    return weights_fingerprint([settings, encoder.vocab_size], encoder.state_dict(), skip=QUERY_ONLY_TENSORS)


def teacher_fingerprint(teacher) -> str:
    """A hash of everything that decides a dense teacher's document embeddings."""
    header = [type(teacher).__name__, teacher.name, getattr(teacher, "pooling", None), teacher.max_length,
              str(teacher.dtype)]
    return weights_fingerprint(header, teacher.model.state_dict())


def corpus_key(fingerprint: str, doc_ids: Sequence[str], texts: Sequence[str], max_length: Optional[int],
               dtype: str = "fp32", window: Optional[tuple[int, int]] = None) -> str:
    """The cache key of a corpus (ids and texts in order) computed by a model of this fingerprint;
    ``window`` (length, stride): the documents were split into token windows."""
    header = [fingerprint, max_length, len(doc_ids)] + _encoding_options(dtype, window)
    return corpus_digest(header, doc_ids, texts)


def _encoding_options(dtype: str, window: Optional[tuple[int, int]]) -> list:
    # the defaults (fp32, no window) add nothing, so keys made before these options existed still hold
    return ([dtype] if dtype != "fp32" else []) + (["window", *window] if window else [])


def corpus_family(fingerprint: str, max_length: Optional[int], dtype: str = "fp32",
                  window: Optional[tuple[int, int]] = None) -> str:
    """What ``corpus_key`` hashes besides the corpus: entries of one family hold interchangeable rows."""
    header = [fingerprint, max_length] + _encoding_options(dtype, window)
    return hashlib.blake2b(json.dumps(header).encode(), digest_size=12).hexdigest()


def document_digests(doc_ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """One 16-byte digest of (id, text) per document, in order (``S16`` array)."""
    return np.array([hashlib.blake2b(f"{i}\x00{t}".encode(), digest_size=16).digest()
                     for i, t in zip(doc_ids, texts)], dtype="S16")


def reusable_rows(store: DocumentStore, cache_dir: str, family: str, digests: np.ndarray):
    """(rows, positions, entry): the rows of the documents at ``positions`` (of the corpus with these
    ``digests``) taken from the complete entry of ``family`` that shares the most documents, at
    least ``MIN_REUSE`` of them; None when no entry does."""
    best = None
    for name in sorted(os.listdir(cache_dir)):
        entry = os.path.join(cache_dir, name)
        try:
            with open(os.path.join(entry, META)) as f:
                if json.load(f).get("family") != family:
                    continue
            theirs = np.load(os.path.join(entry, DOC_DIGESTS))
        except READ_ERRORS:
            continue
        where = {d: i for i, d in enumerate(theirs.tolist())}
        pairs = [(pos, where[d]) for pos, d in enumerate(digests.tolist()) if d in where]
        if len(pairs) >= MIN_REUSE * len(digests) and (best is None or len(pairs) > len(best[1])):
            best = (entry, pairs, len(theirs))
    if best is None:
        return None
    entry, pairs, n_theirs = best
    data = load_cached(entry, n_theirs, store)
    if data is None:
        return None
    positions = np.array([p for p, _ in pairs], np.int64)
    return store.take(data, np.array([q for _, q in pairs], np.int64)), positions, entry


def load_cached(entry: str, n_docs: int, store: DocumentStore = SPARSE_VECTORS):
    """The data of a complete cache entry, or None.

    An unusable entry (unreadable, or not ``n_docs`` rows) is marked incomplete (its ``meta.json``
    removed, so no rank waits on it) and None is returned after a warning that says why.
    """
    if not os.path.isfile(os.path.join(entry, META)):
        return None
    try:
        data = store.load(os.path.join(entry, store.filename))
        why = None if len(data) == n_docs else f"it holds {len(data)} rows for {n_docs} documents"
    except READ_ERRORS as exc:
        why = f"it cannot be read ({type(exc).__name__}: {exc})"
    if why is None:
        return data
    logger.warning("corpus cache entry %s is unusable, %s: computing it again", entry, why)
    try:
        os.remove(os.path.join(entry, META))
    except FileNotFoundError:  # another rank removed it first
        pass
    return None


def encode_corpus(encoder, doc_ids: Sequence[str], texts: Sequence[str], cache_dir: Optional[str],
                  key_parts: Sequence = (), batch_size: int = 32, max_length: Optional[int] = None,
                  progress: bool = True, rank: Optional[int] = None, world_size: Optional[int] = None,
                  all_ranks: bool = False, wait_timeout: float = 24 * 3600.0,
                  block_docs: Optional[int] = None, dtype: str = "fp32",
                  window: Optional[tuple[int, int]] = None) -> CorpusVectors:
    """Document vectors of ``texts`` (in their order), from the cache or encoded and cached.

    ``cache_dir=None`` disables caching (single process only). Under ``torchrun`` every rank
    must call this; rank 0 gets the full batch in ``vectors``, the other ranks get None unless
    ``all_ranks``. ``rank`` / ``world_size`` default to the launch's. ``dtype`` is the encode dtype
    (``SparseEncoder.encode_documents``). ``key_parts`` name the entry in its ``meta.json`` (e.g.
    the dataset); they are not part of the key. ``window`` = (length, stride) splits every document
    into token windows (``sparse.modeling.windows``) instead of truncating it at ``max_length``:
    ``vectors`` is then a ``WindowedVectors``, cached apart from truncated vectors.
    """
    def encode(part: list[str], desc: str, show: bool):
        opts = dict(batch_size=batch_size, progress=show, desc=desc, dtype=dtype)
        if window:
            return encode_windows(encoder, part, *window, **opts)
        if not part:
            return SparseBatch.empty(encoder.vocab_size)
        return encoder.encode_documents(part, max_length=length, **opts)

    length = window[0] if window else (max_length or encoder.settings.max_seq_length)
    fingerprint = functools.cache(lambda: encoder_fingerprint(encoder))
    key = (lambda: corpus_key(fingerprint(), doc_ids, texts, length, dtype, window)) if cache_dir else None
    meta = {"key_parts": list(map(str, key_parts)), "max_length": length} | ({"window": list(window)} if window else {})
    store = WINDOW_VECTORS if window else SPARSE_VECTORS
    return cached_corpus(store, encode, doc_ids, texts, cache_dir, key, meta, "encode corpus", progress,
                         rank, world_size, all_ranks, wait_timeout, block_docs,
                         family=lambda: corpus_family(fingerprint(), length, dtype, window))


def embed_corpus(teacher, doc_ids: Sequence[str], texts: Sequence[str], cache_dir: Optional[str],
                 progress: bool = True, rank: Optional[int] = None, world_size: Optional[int] = None,
                 all_ranks: bool = False, wait_timeout: float = 24 * 3600.0,
                 block_docs: Optional[int] = None) -> CorpusVectors:
    """(n, dim) float32 embeddings of ``texts`` by a bi-encoder ``teacher`` (``embed_docs``: pooled,
    normalized states), from the cache or embedded and cached; ranks and arguments as ``encode_corpus``."""
    def embed(part: list[str], desc: str, show: bool) -> np.ndarray:
        return embed_texts(teacher, part, show, desc)

    fingerprint = functools.cache(lambda: teacher_fingerprint(teacher))
    key = (lambda: corpus_key(fingerprint(), doc_ids, texts, None)) if cache_dir else None
    return cached_corpus(DENSE_EMBEDDINGS, embed, doc_ids, texts, cache_dir, key, {"model": teacher.name},
                         "dense corpus", progress, rank, world_size, all_ranks, wait_timeout, block_docs,
                         family=lambda: corpus_family(fingerprint(), None))


def cached_embeddings(teacher, doc_ids: Sequence[str], texts: Sequence[str], cache_dir: str) -> Optional[np.ndarray]:
    """The teacher's embeddings of this corpus if an earlier run cached them (nothing is computed)."""
    key = corpus_key(teacher_fingerprint(teacher), doc_ids, texts, None)
    return load_cached(entry_dir(cache_dir, DENSE_EMBEDDINGS, key), len(doc_ids), DENSE_EMBEDDINGS)


def embed_texts(teacher, texts: Sequence[str], progress: bool = False, desc: str = "dense embed") -> np.ndarray:
    """(n, dim) float32 embeddings by ``teacher.embed_docs``, longest texts first (less padding)."""
    from tqdm.auto import tqdm

    texts = list(texts)
    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
    pieces = []
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress, leave=False) as bar:
        for s in range(0, len(order), EMBED_CHUNK):
            chunk = [texts[i] for i in order[s:s + EMBED_CHUNK]]
            pieces.append(teacher.embed_docs(chunk).float().cpu().numpy())
            bar.update(len(chunk))
    if not pieces:
        return np.zeros((0, 0), np.float32)
    stacked = np.concatenate(pieces)
    out = np.empty_like(stacked)
    out[np.asarray(order)] = stacked
    return out


def entry_dir(cache_dir: str, store: DocumentStore, key: str) -> str:
    """``<cache_dir>/<prefix>-<key>``: named by content alone, so any name of the corpus finds it."""
    return os.path.join(cache_dir, f"{store.prefix}-{key}")


def cached_corpus(store: DocumentStore, compute: Callable[[list[str], str, bool], Any], doc_ids: Sequence[str],
                  texts: Sequence[str], cache_dir: Optional[str], key: Optional[Callable[[], str]], meta: dict,
                  desc: str, progress: bool = True, rank: Optional[int] = None, world_size: Optional[int] = None,
                  all_ranks: bool = False, wait_timeout: float = 24 * 3600.0,
                  block_docs: Optional[int] = None, family: Optional[Callable[[], str]] = None) -> CorpusVectors:
    """The cache of the module docstring: ``compute(texts, desc, progress)`` runs on what is missing;
    ``family()`` names the entries whose rows this corpus may reuse (``corpus_family``)."""
    if len(doc_ids) != len(texts):
        raise ValueError(f"{len(doc_ids)} ids for {len(texts)} texts")
    t0 = time.perf_counter()
    ids = doc_ids if isinstance(doc_ids, list) else list(doc_ids)

    def result(data, hit, entry=None, k=None) -> CorpusVectors:
        return CorpusVectors(data, ids, hit, time.perf_counter() - t0, entry, k)

    rank = distributed.launch_rank() if rank is None else rank
    world = distributed.launch_world_size() if world_size is None else world_size
    if cache_dir is None:
        if world > 1:
            raise UserError("computing a corpus across processes needs a cache_dir (the shards meet there)")
        return result(compute(list(texts), desc, progress), False)
    k = key()
    entry = entry_dir(cache_dir, store, k)
    cached = load_cached(entry, len(doc_ids), store)
    if cached is not None:
        logger.info("corpus %s loaded from cache %s", store.filename, entry)
        return result(cached if (rank == 0 or all_ranks) else None, True, entry, k)
    os.makedirs(entry, exist_ok=True)
    digests = document_digests(ids, texts)
    fam = family() if family else None
    reused = reusable_rows(store, cache_dir, fam, digests) if fam and world == 1 else None
    if reused is not None:
        full = _fill_in(store, compute, texts, reused, progress, desc, entry, block_docs or BLOCK_DOCS)
        _save_entry(store, entry, full, digests, {"n_docs": len(doc_ids), **meta, "family": fam, "world_size": 1,
                                                  "reused_rows": len(reused[1]),
                                                  "reused_from": os.path.basename(reused[2])})
        return result(full, False, entry, k)
    positions = list(distributed.shard_positions(len(texts), rank, world))
    t_compute = time.perf_counter()
    shard = _in_blocks(store, compute, [texts[i] for i in positions], progress and rank == 0,
                       f"{desc} (rank {rank}/{world})" if world > 1 else desc, entry, f"{rank}-of-{world}",
                       block_docs or BLOCK_DOCS)
    seconds = max(time.perf_counter() - t_compute, 1e-9)
    logger.info("rank %d computed %d documents in %.1fs (%.1f docs/s)", rank, len(positions), seconds,
                len(positions) / seconds)
    if world == 1:
        full = shard
    else:
        shard_paths = [os.path.join(entry, f"shard-{r}-of-{world}{store.ext()}") for r in range(world)]
        save_atomic(shard_paths[rank], lambda tmp: store.save(shard, tmp))
        distributed.barrier()
        if rank != 0:
            if not all_ranks:
                return result(None, False, entry, k)
            distributed.wait_for_files([os.path.join(entry, META)], wait_timeout, "rank 0 to merge the corpus shards")
            merged = load_cached(entry, len(doc_ids), store)
            if merged is None:
                raise UserError(f"rank 0 merged the corpus shards into {entry}, but rank {rank} cannot use them")
            return result(merged, False, entry, k)
        distributed.wait_for_files(shard_paths, wait_timeout, "every rank's corpus shard")
        stacked = store.concat([store.load(p) for p in shard_paths])
        # stacked row j holds document position order[j]; invert that to document order
        order = np.concatenate([np.arange(r, len(texts), world) for r in range(world)])
        full = _in_document_order(store, stacked, order)
    _save_entry(store, entry, full, digests, {"n_docs": len(doc_ids), **meta, "family": fam, "world_size": world})
    return result(full, False, entry, k)


def _save_entry(store: DocumentStore, entry: str, full, digests: np.ndarray, meta: dict) -> None:
    """The data, the document digests, then ``meta.json`` (the mark of a complete entry); shards and blocks go."""
    save_atomic(os.path.join(entry, store.filename), lambda tmp: store.save(full, tmp))
    save_atomic(os.path.join(entry, DOC_DIGESTS), lambda tmp: np.save(tmp, digests))
    write_json(os.path.join(entry, META), {**meta, **store.describe(full)}, indent=None)
    for name in os.listdir(entry):
        if name.startswith(("shard-", "block-")):
            os.remove(os.path.join(entry, name))


def _fill_in(store: DocumentStore, compute: Callable, texts: Sequence[str], reused, progress: bool, desc: str,
             entry: str, block_docs: int):
    """The corpus's rows: those ``reused`` (rows, positions, source entry), the rest computed."""
    rows, positions, source = reused
    missing = np.setdiff1d(np.arange(len(texts)), positions)
    logger.info("%d of %d documents reused from %s; computing %d", len(positions), len(texts), source, len(missing))
    # blocks are named by the documents they hold: a rerun reusing other rows never mixes them up
    tag = "fill-" + hashlib.blake2b(missing.tobytes(), digest_size=6).hexdigest()
    computed = _in_blocks(store, compute, [texts[i] for i in missing], progress, f"{desc} ({len(missing)} new)",
                          entry, tag, block_docs)
    stacked = store.concat([rows, computed]) if len(missing) else rows
    return _in_document_order(store, stacked, np.concatenate([positions, missing]))


def _in_document_order(store: DocumentStore, stacked, order: np.ndarray):
    """``stacked`` (row j holds document position ``order[j]``) put back into document order."""
    inverse = np.empty(len(order), np.int64)
    inverse[order] = np.arange(len(order))
    return store.take(stacked, inverse)


def _in_blocks(store: DocumentStore, compute: Callable, texts: list[str], progress: bool, desc: str, folder: str,
               tag: str, block_docs: int):
    """``compute`` block by block, each finished block saved in ``folder`` and reused on a rerun."""
    blocks = []
    for k, start in enumerate(range(0, len(texts), block_docs)):
        part = texts[start:start + block_docs]
        path = os.path.join(folder, f"block-{tag}-{k}{store.ext()}")
        done = None
        if os.path.isfile(path):
            try:
                done = store.load(path)
            except READ_ERRORS:
                done = None
        if done is not None and len(done) == len(part):
            logger.info("block %d of %s: %d documents already computed (%s)", k, desc, len(part), path)
            blocks.append(done)
            continue
        data = compute(part, f"{desc} block {k + 1}" if len(texts) > block_docs else desc, progress)
        save_atomic(path, lambda tmp: store.save(data, tmp))
        blocks.append(data)
    return store.concat(blocks) if blocks else compute([], desc, False)

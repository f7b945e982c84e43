"""Candidates of KD data preparation: the union of several retrievers' top-k, and teacher-filtered negatives.

``--candidates`` lists retrievers, each giving the top ``top_k`` documents of the whole collection
for a query:

* ``student``: the sparse model of ``--model_name_or_path`` (``miners.SparseRetriever``: the
  shared, cached corpus encoding and an ``Index``), today's default;
* ``bm25``: ``sparse.retrieval.bm25.BM25Index`` of the collection (``--bm25_*`` settings, cached);
* ``dense:MODEL``: exact cosine over the collection, with the dense teacher's own embedding code
  (``DenseTeacher.embed``: pooled, L2-normalized states; ``--dense_pooling``,
  ``--teacher_max_length``, ``--teacher_dtype``), the corpus embeddings cached on disk.

For a query q the candidates are C(q) = union over retrievers of their top-k, plus, with
``--include_positives``, the judged positives of q (grade > 0) that are in the collection, so the
teachers score them too. The teacher ensemble then scores every (q, d), d in C(q) (min-max per
query over C(q), mean over teachers). Row order: with one retriever and no positives added, that
retriever's rank order (the output of earlier versions, unchanged); otherwise the ensemble score,
descending, ties broken by document id.

Teacher-filtered ``posnegs`` rows (``--write_posnegs DIR``), for a query q with judged documents
R(q) and positives P(q) (grade > 0, in the collection; all scored, since positives are included):

    s_min(q)  = min_{p in P(q)} S(q, p)                   (S: the ensemble score, in [0, 1))
    negs(q)   = [d in C(q), ensemble order : d not in R(q) and S(q, d) < s_min(q) - margin]

so a candidate the teachers score within ``--negative_margin`` of the weakest positive (a likely
unjudged positive) is never a negative. One row ``{query, pos, negs}`` (+ ids) per positive, all
sharing negs(q), written as ``demo_train_data.py`` writes its rows (``negatives.posnegs_features``,
``MiningStats`` in ``stats.json``). A query with no positive, or fewer than ``--min_negatives``
negatives left, is dropped and counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Optional, Sequence

import numpy as np
import torch

from sparse.datagen.negatives import DROP_FEW_NEGATIVES, DROP_POSITIVES_MISSING, MiningStats, judged_positives
from sparse.errors import ConfigError, UserError, write_json

logger = logging.getLogger(__name__)

CANDIDATE_KINDS = ("student", "bm25", "dense")
EMBEDDINGS, META = "embeddings.npy", "meta.json"
EMBED_CHUNK = 512  # texts per embed call (progress granularity)
SCORE_BLOCK = 2 ** 27  # query x document scores computed at once by the dense retriever (512 MiB)


# ------------------------------------------------------------------------------ arguments
def parse_candidates(specs: Sequence[str]) -> list[tuple[str, Optional[str]]]:
    """``["student", "bm25", "dense:MODEL"]`` -> [(kind, model or None)], in the given order."""
    out: list[tuple[str, Optional[str]]] = []
    for spec in specs or []:
        kind, sep, model = str(spec).strip().partition(":")
        if kind in ("student", "bm25") and not sep:
            out.append((kind, None))
        elif kind == "dense" and sep and model:
            out.append((kind, model))
        else:
            raise ConfigError(f"candidates entry {spec!r}: use student, bm25 or dense:MODEL")
    if not out:
        raise ConfigError("candidates needs at least one retriever: student, bm25 or dense:MODEL")
    if len(set(out)) != len(out):
        raise ConfigError(f"candidates names a retriever twice: {specs}")
    return out


def wants_positives(args) -> bool:
    """``include_positives``, where null means: true unless the candidates are the student's alone
    (today's output) and no posnegs rows are written."""
    if args.include_positives is not None:
        return bool(args.include_positives)
    return parse_candidates(args.candidates) != [("student", None)] or bool(args.write_posnegs)


def ensemble_order(args) -> bool:
    """Whether rows list their documents by ensemble score (else in the single retriever's order)."""
    return len(parse_candidates(args.candidates)) > 1 or wants_positives(args)


def check_candidate_args(args) -> None:
    parse_candidates(args.candidates)
    if args.write_posnegs:
        if args.include_positives is False:
            raise ConfigError("write_posnegs needs the positives scored by the teachers: include_positives "
                              "cannot be false")
        if args.output and os.path.normpath(args.write_posnegs) == os.path.normpath(args.output):
            raise ConfigError("write_posnegs must be another directory than output")
    if not args.negative_margin >= 0:
        raise ConfigError(f"negative_margin must be >= 0, got {args.negative_margin}")
    if args.min_negatives < 1:
        raise ConfigError(f"min_negatives must be >= 1, got {args.min_negatives}")


# ------------------------------------------------------------------------------ dense retrieval
def _teacher_fingerprint(teacher) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([type(teacher).__name__, teacher.name, getattr(teacher, "pooling", None),
                         teacher.max_length, str(teacher.dtype)]).encode())
    for name, tensor in sorted(teacher.model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _collection_key(fingerprint: str, doc_ids: Sequence[str], texts: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps([fingerprint, len(doc_ids)]).encode())
    for doc_id, text in zip(doc_ids, texts):
        h.update(str(doc_id).encode() + b"\x00" + text.encode() + b"\x01")
    return h.hexdigest()


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


def _atomic_save(array: np.ndarray, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def _dense_entry(cache_dir: str, label: str, teacher, doc_ids: Sequence[str], texts: Sequence[str]) -> str:
    """The cache folder of a teacher's embeddings of a collection."""
    return os.path.join(cache_dir, f"dense-{label}-{_collection_key(_teacher_fingerprint(teacher), doc_ids, texts)}")


def _load_entry(entry: str, n_docs: int) -> Optional[np.ndarray]:
    if not os.path.isfile(os.path.join(entry, META)):
        return None
    try:
        emb = np.load(os.path.join(entry, EMBEDDINGS))
        if emb.shape[0] == n_docs:
            return emb
        why = f"it holds {emb.shape[0]} embeddings for {n_docs} documents"
    except (OSError, ValueError) as exc:
        why = f"it cannot be read ({type(exc).__name__}: {exc})"
    logger.warning("dense corpus cache entry %s is unusable, %s: embedding the corpus again", entry, why)
    try:
        os.remove(os.path.join(entry, META))
    except FileNotFoundError:
        pass
    return None


def _wait_for(paths: list[str], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not all(os.path.isfile(p) for p in paths):
        if time.monotonic() > deadline:
            raise UserError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def dense_corpus_embeddings(teacher, doc_ids: Sequence[str], texts: Sequence[str], cache_dir: Optional[str],
                            label: str = "corpus", progress: bool = True, all_ranks: bool = True,
                            rank: Optional[int] = None, world: Optional[int] = None,
                            wait_timeout: float = 24 * 3600.0) -> Optional[np.ndarray]:
    """(N, dim) float32 embeddings of the collection, cached in ``<cache_dir>/dense-<label>-<key>/``.

    ``key`` hashes the teacher (class, name, pooling, max length, dtype, weights) and the collection
    (ids and texts in order). Under ``torchrun`` rank r embeds positions r, r + w, ...; rank 0
    merges the shards; the other ranks get the merged array when ``all_ranks``, else None.
    """
    from sparse.corpus import distributed

    rank = distributed.launch_rank() if rank is None else rank
    world = distributed.launch_world_size() if world is None else world
    if cache_dir is None:
        if world > 1:
            raise UserError("embedding a corpus across processes needs a cache_dir (the shards meet there)")
        return embed_texts(teacher, texts, progress, "dense corpus")
    entry = _dense_entry(cache_dir, label, teacher, doc_ids, texts)
    cached = _load_entry(entry, len(doc_ids))
    if cached is not None:
        logger.info("dense corpus embeddings loaded from cache %s", entry)
        return cached
    os.makedirs(entry, exist_ok=True)
    t0 = time.perf_counter()
    positions = list(distributed.shard_positions(len(texts), rank, world))
    shard = embed_texts(teacher, [texts[i] for i in positions], progress and rank == 0,
                        f"dense corpus (rank {rank}/{world})" if world > 1 else "dense corpus")
    logger.info("rank %d embedded %d documents in %.1fs", rank, len(positions), time.perf_counter() - t0)
    if world == 1:
        full = shard
    else:
        shard_paths = [os.path.join(entry, f"shard-{r}-of-{world}.npy") for r in range(world)]
        _atomic_save(shard, shard_paths[rank])
        if rank != 0:
            if not all_ranks:
                return None
            _wait_for([os.path.join(entry, META)], wait_timeout, "rank 0 to merge the dense corpus shards")
            merged = _load_entry(entry, len(doc_ids))
            if merged is None:
                raise UserError(f"rank 0 merged the dense corpus shards into {entry}, but rank {rank} cannot use them")
            return merged
        _wait_for(shard_paths, wait_timeout, "every rank's dense corpus shard")
        parts = [np.load(p) for p in shard_paths]
        full = np.empty((len(texts), parts[0].shape[1]), np.float32)
        for r, part in enumerate(parts):
            full[r::world] = part
    _atomic_save(full, os.path.join(entry, EMBEDDINGS))
    write_json(os.path.join(entry, META), {"n_docs": len(doc_ids), "dim": int(full.shape[1]),
                                           "model": teacher.name, "world_size": world}, indent=None)
    for name in os.listdir(entry):
        if name.startswith("shard-"):
            os.remove(os.path.join(entry, name))
    return full


class DenseRetriever:
    """Exact cosine top-k over the collection with a dense teacher's embeddings (ties by doc id)."""

    def __init__(self, teacher, doc_ids: Sequence[str], doc_texts: Sequence[str], cache_dir: Optional[str],
                 label: str = "corpus", progress: bool = True, searcher: bool = True):
        self.teacher = teacher
        self.doc_ids = list(doc_ids)
        self.embeddings = dense_corpus_embeddings(teacher, self.doc_ids, list(doc_texts), cache_dir, label,
                                                  progress, all_ranks=searcher)
        if self.embeddings is not None:  # the same teacher then scores candidates without re-embedding them
            teacher.remember_documents(list(doc_texts), self.embeddings)
        order = sorted(range(len(self.doc_ids)), key=self.doc_ids.__getitem__)
        self._id_rank = np.empty(len(self.doc_ids), np.int64)
        self._id_rank[order] = np.arange(len(self.doc_ids))

    @torch.no_grad()
    def search(self, query_texts: Sequence[str], k: int) -> tuple[list[list[str]], list[list[float]]]:
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
        self.embeddings = None


def reuse_cached_corpus_embeddings(ensemble, doc_ids: Sequence[str], texts: Sequence[str],
                                   cache_dir: Optional[str], label: str = "corpus") -> int:
    """Let each bi-encoder teacher look up corpus embeddings that an earlier run cached (no new embedding);
    returns how many teachers found theirs."""
    if ensemble is None or cache_dir is None:
        return 0
    found = 0
    for teacher in ensemble.teachers:
        if not hasattr(teacher, "remember_documents") or getattr(teacher, "_known_docs", None):
            continue  # not a bi-encoder teacher (or a wrapper of one), or it already knows the corpus
        entry = _dense_entry(cache_dir, label, teacher, doc_ids, texts)
        cached = _load_entry(entry, len(doc_ids))
        if cached is not None:
            teacher.remember_documents(list(texts), cached)
            logger.info("teacher %s reuses the cached corpus embeddings of %s", teacher.name, entry)
            found += 1
    return found


# ------------------------------------------------------------------------------ the union
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
        for _, r in self.retrievers:
            r.close()


def build_candidate_retriever(cfg, args, data, ensemble=None, bm25_index=None, progress: bool = True,
                              searcher: bool = True, index_opts: Optional[dict] = None):
    """The retriever of ``--candidates``: one retriever, or a ``UnionRetriever`` of several.

    Every ``torchrun`` rank must call this (the student's and the dense corpus encodings are
    sharded); ranks with no part to do pass ``searcher=False``. ``ensemble``: a dense teacher of
    the same model is reused for dense retrieval; ``bm25_index``: the shared ``BM25Index``.
    """
    from sparse.corpus import corpus_cache_dir, distributed, load_encoder
    from sparse.datagen.miners import BM25Retriever, SparseRetriever

    cache_dir = corpus_cache_dir(cfg)
    out = []
    for kind, model in parse_candidates(args.candidates):
        if kind == "student":
            encoder = load_encoder(cfg, device=distributed.local_device())
            r = SparseRetriever(encoder, data.doc_ids, data.doc_texts, engine=cfg.eval.engine, cache_dir=cache_dir,
                                key_parts=(data.name,), batch_size=args.batch_size,
                                max_length=cfg.data.max_seq_length, progress=progress, index_opts=index_opts,
                                searcher=searcher)
        elif kind == "bm25":
            if not searcher:
                continue  # nothing to share out: only ranks that search build it
            r = BM25Retriever(data.doc_ids, data.doc_texts, index=bm25_index) if bm25_index is not None else \
                BM25Retriever(data.doc_ids, data.doc_texts, bm25_params_of(args), cache_dir=cache_dir,
                              label=data.name, progress=progress)
        else:
            teacher = _dense_teacher(args, model, ensemble)
            r = DenseRetriever(teacher, data.doc_ids, data.doc_texts, cache_dir, label=data.name,
                               progress=progress, searcher=searcher)
        out.append((f"{kind}:{model}" if model else kind, r))
    if not out:
        return None
    if len(out) == 1:
        return out[0][1]
    return UnionRetriever(out)


def bm25_params_of(args):
    from sparse.datagen.args import bm25_params

    return bm25_params(args)


def _dense_teacher(args, model: str, ensemble=None):
    """The ensemble's dense teacher of ``model`` if there is one, else a new one with the teacher keys."""
    from sparse.corpus import distributed
    from sparse.teachers import build_teacher

    for t in getattr(ensemble, "teachers", []):
        if getattr(t, "teacher_type", None) == "dense" and t.name == model:
            return t
    return build_teacher("dense", model, max_length=args.teacher_max_length, device=distributed.local_device(),
                         dtype=args.teacher_dtype, trust_remote_code=args.teacher_trust_remote_code,
                         batch_size=args.teacher_batch_size, pooling=args.dense_pooling)


# ------------------------------------------------------------------------------ posnegs
def filtered_negatives(ids: Sequence[str], scores: Sequence[float], judged, min_positive: float,
                       margin: float) -> tuple[list[str], int]:
    """(negatives in the given order, how many unjudged candidates the margin dropped)."""
    negs, dropped = [], 0
    for d, s in zip(ids, scores):
        if d in judged:
            continue
        if s < min_positive - margin:
            negs.append(d)
        else:
            dropped += 1
    return negs, dropped


def build_filtered_posnegs(qids: Sequence[str], queries: dict, qrels: dict, scored: dict, text_of: dict,
                           margin: float, min_negatives: int = 1) -> tuple[list[dict], MiningStats]:
    """``posnegs`` rows of the module docstring; ``scored[qid] = (doc ids in ensemble order, scores)``
    (a query absent from ``scored`` had no candidate)."""
    stats = MiningStats(extra={"negatives_dropped_by_margin": 0})
    rows: list[dict] = []
    for qid in qids:
        judged, positives = judged_positives(qid, qrels, stats)
        if not positives:
            continue
        present = [p for p in positives if p in text_of]
        stats.positives_missing.extend(f"{qid}:{p}" for p in positives if p not in text_of)
        if not present:
            stats.drop(DROP_POSITIVES_MISSING, qid)
            continue
        ids, scores = scored.get(qid, ([], []))
        score_of = dict(zip(ids, (float(s) for s in scores)))
        unscored = [p for p in present if p not in score_of]
        if unscored:
            raise RuntimeError(f"query {qid}: positives {unscored} were not scored (include_positives is off)")
        stats.positives_in_candidates += sum(1 for d in ids if d in judged)
        negs, dropped = filtered_negatives(ids, scores, judged, min(score_of[p] for p in present), margin)
        stats.extra["negatives_dropped_by_margin"] += dropped
        if len(negs) < min_negatives:
            stats.drop(DROP_FEW_NEGATIVES, qid)
            continue
        neg_texts = [text_of[d] for d in negs]
        for pid in present:
            rows.append({"query": queries[qid], "pos": text_of[pid], "negs": neg_texts, "query_id": qid,
                         "pos_id": pid, "neg_ids": list(negs)})
        stats.add_query(len(negs), len(present))
    return rows, stats


def merge_mining_stats(parts: Sequence[dict]) -> MiningStats:
    """One ``MiningStats`` from the ``to_dict()`` of several parts (counts summed, drops merged)."""
    total = MiningStats()
    for p in parts:
        for key in ("queries_in", "queries_kept", "rows", "negatives_total", "positives_in_candidates"):
            setattr(total, key, getattr(total, key) + int(p[key]))
        for key, pick in (("min_negatives", min), ("max_negatives", max)):
            if p[key] is not None:
                old = getattr(total, key)
                setattr(total, key, p[key] if old is None else pick(old, p[key]))
        for reason, v in p["dropped"].items():
            entry = total.dropped.setdefault(reason, {"count": 0, "examples": []})
            entry["count"] += v["count"]
            entry["examples"] = (entry["examples"] + v["examples"])[:10]
        total.positives_missing.extend(p["positives_missing"])
        for key, value in p.get("extra", {}).items():
            total.extra[key] = total.extra.get(key, 0) + value
    return total

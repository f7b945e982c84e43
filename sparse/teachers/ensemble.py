"""The teacher ensemble, used online (training) and offline (``data_preparation.py``).

For teachers m = 1..M with raw scores s_m of one query over its candidate documents (one row per
query), the ensemble score is

    S = score_scale * (1/M) * sum_m minmax_per_row(s_m)

with ``minmax_per_row`` (``sparse.teachers.base``) mapping each teacher's row to [0, 1). This is
the reference's ``get_scores_batch``. The mean over teachers is a left-to-right sum divided by M,
so a query's score does not depend on the other rows scored with it. Scores are computed without
gradients.

Three ways to lay out the candidates, one formula (``TeacherEnsemble.combine``):

* ``score_groups``: online, each query against its own k documents -> (B, k);
* ``score_all``: online in-batch, each local query against every document of the global batch
  -> (B, N);
* ``score_candidates``: offline, each query against its own candidate list (any length), e.g.
  the top-k retrieved documents -> one array per query, plus each teacher's normalized scores.

Online training uses ``score_scale`` 30 by default (``kd_ensemble_teacher_kwargs``); KD data
preparation uses 1, so the stored scores stay in [0, 1).
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from sparse.errors import ConfigError
from sparse.teachers.base import Teacher, build_teacher, minmax_per_row

logger = logging.getLogger(__name__)

KNOWN_KWARGS = {"types", "model_ids", "teacher_tokenizer_ids", "score_scale", "max_lengths", "poolings",
                "dtype", "batch_size", "trust_remote_code", "teacher_options"}
UNSUPPORTED_TYPES = {"remote": "the reference's DynamoDB embedding service"}
PAIR_CHUNK = 1024  # pairs per score_pairs call when scoring candidate lists
TEXT_CHUNK = 512  # texts per embed call when scoring candidate lists


class TeacherEnsemble:
    """Several teachers whose per-query min-max normalized scores are averaged and scaled."""

    def __init__(self, teachers: Sequence[Teacher], score_scale: float = 30.0):
        if not teachers:
            raise ConfigError("a teacher ensemble needs at least one teacher")
        self.teachers = list(teachers)
        self.score_scale = float(score_scale)

    def __repr__(self) -> str:
        return f"TeacherEnsemble({self.teachers}, score_scale={self.score_scale})"

    # ------------------------------------------------------------------ the formula
    @staticmethod
    def normalize(per_teacher: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each teacher's (rows, n) raw scores, min-max normalized per row, as float32 on CPU."""
        return [minmax_per_row(s.float().cpu()) for s in per_teacher]

    def average(self, normalized: Sequence[torch.Tensor]) -> torch.Tensor:
        """score_scale * the mean over teachers of already normalized scores."""
        total = normalized[0]
        for s in normalized[1:]:
            total = total + s
        return self.score_scale * (total / len(normalized))

    def combine(self, per_teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        """The ensemble score of the module docstring from each teacher's (rows, n) raw scores."""
        return self.average(self.normalize(per_teacher))

    # ------------------------------------------------------------------ online (training)
    @torch.no_grad()
    def score_groups(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        """(B, k) scores of each query against its own k = len(docs) / B documents (query-major)."""
        b = len(queries)
        if b == 0 or len(docs) % b:
            raise ValueError(f"{len(docs)} documents cannot be split into groups for {b} queries")
        k = len(docs) // b
        rep_q = [q for q in queries for _ in range(k)]
        return self.combine([t.score_pairs(rep_q, list(docs)).view(b, k) for t in self.teachers])

    @torch.no_grad()
    def score_all(self, queries: Sequence[str], docs: Sequence[str],
                  gather_tensor: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                  gather_texts: Optional[Callable[[list], list]] = None) -> torch.Tensor:
        """(B, N) scores of the local queries against every document of the global batch.

        ``docs`` are this process's documents; ``gather_tensor`` / ``gather_texts`` concatenate a
        tensor / a list over all processes in global-rank order (identity on one process).
        Bi-encoders embed only their local documents and gather the embeddings.
        """
        per = []
        for t in self.teachers:
            if t.is_bi_encoder:
                d_emb = t.embed_docs(list(docs))
                if gather_tensor is not None:
                    d_emb = gather_tensor(d_emb.to(t.device)).float()
                per.append(t.embed_queries(list(queries)) @ d_emb.to(t.device).T)
            else:
                all_docs = gather_texts(list(docs)) if gather_texts is not None else list(docs)
                per.append(t.score_matrix(list(queries), all_docs))
        return self.combine(per)

    # ------------------------------------------------------------------ offline (KD data)
    @torch.no_grad()
    def score_candidates(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]],
                         progress: bool = False) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
        """(ensemble scores per query, [teacher][query] normalized scores), float32 arrays.

        Query i is scored against its own ``docs_per_query[i]``: bi-encoders embed each distinct
        document and each query once, other teachers read every pair.
        """
        raw = [candidate_scores(t, queries, docs_per_query, progress) for t in self.teachers]
        scores, per_teacher = [], [[] for _ in self.teachers]
        for i, docs in enumerate(docs_per_query):
            if not len(docs):
                normalized = [torch.zeros(1, 0) for _ in self.teachers]
                combined = torch.zeros(1, 0)
            else:
                normalized = self.normalize([torch.from_numpy(np.asarray(r[i], np.float32))[None, :] for r in raw])
                combined = self.average(normalized)
            scores.append(combined[0].numpy())
            for m, row in enumerate(normalized):
                per_teacher[m].append(row[0].numpy())
        return scores, per_teacher


def _teacher_label(teacher) -> str:
    """A short name of a teacher for progress bars and logs."""
    return getattr(teacher, "teacher_type", type(teacher).__name__)


def _embed_in_chunks(embed, texts: list[str], desc: str, progress: bool) -> torch.Tensor:
    from tqdm.auto import tqdm

    out = []
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress, leave=False) as bar:
        for s in range(0, len(texts), TEXT_CHUNK):
            out.append(embed(texts[s:s + TEXT_CHUNK]).float().cpu())
            bar.update(len(texts[s:s + TEXT_CHUNK]))
    return torch.cat(out) if out else torch.zeros(0)


def candidate_scores(teacher, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]],
                     progress: bool = False) -> list[np.ndarray]:
    """One teacher's raw scores: for each query, a float32 array over its own documents."""
    name = _teacher_label(teacher)
    if getattr(teacher, "is_bi_encoder", False):
        # distinct documents, longest first, so each batch pads to similar lengths
        distinct = sorted({d for docs in docs_per_query for d in docs}, key=lambda d: (-len(d), d))
        position = {d: i for i, d in enumerate(distinct)}
        d_emb = _embed_in_chunks(teacher.embed_docs, distinct, f"{name} docs", progress)
        q_emb = _embed_in_chunks(teacher.embed_queries, list(queries), f"{name} queries", progress)
        return [(d_emb[[position[d] for d in docs]] @ q_emb[i]).numpy() if docs else np.zeros(0, np.float32)
                for i, docs in enumerate(docs_per_query)]
    from tqdm.auto import tqdm

    flat_q = [q for q, docs in zip(queries, docs_per_query) for _ in docs]
    flat_d = [d for docs in docs_per_query for d in docs]
    pieces = []
    with tqdm(total=len(flat_q), desc=f"{name} pairs", unit="pair", disable=not progress, leave=False) as bar:
        for s in range(0, len(flat_q), PAIR_CHUNK):
            pieces.append(teacher.score_pairs(flat_q[s:s + PAIR_CHUNK], flat_d[s:s + PAIR_CHUNK])
                          .float().cpu().numpy())
            bar.update(len(pieces[-1]))
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    bounds = np.cumsum([0] + [len(docs) for docs in docs_per_query])
    return [flat[bounds[i]:bounds[i + 1]] for i in range(len(docs_per_query))]


def _per_teacher(kwargs: dict, key: str, n: int, default):
    value = kwargs.get(key, default)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ConfigError(f"kd_ensemble_teacher_kwargs.{key} has {len(value)} entries for {n} teachers")
        return list(value)
    return [value] * n


def build_ensemble(kwargs: dict, max_length: int = 512, device=None) -> TeacherEnsemble:
    """Build the ensemble from ``kd_ensemble_teacher_kwargs`` (training) or the ``--teachers`` of KD prep.

    Reference keys: ``types``, ``model_ids``, ``teacher_tokenizer_ids``, ``score_scale`` (30).
    New keys (one value or a list with one entry per teacher): ``max_lengths`` (default: the
    training ``max_seq_length``), ``poolings`` (dense teachers: cls | mean; default cls),
    ``dtype`` (fp16 | bf16 | fp32; default half precision on GPU, fp32 on CPU), ``batch_size``,
    ``trust_remote_code``, ``teacher_options`` (a list with one mapping, or null, per teacher: extra
    arguments of that teacher type's ``load``, e.g. ``{k1: 1.2, b: 0.75}`` for a ``bm25`` teacher).
    Types are the names of the teacher registry (``teacher_types()``).
    """
    unknown = set(kwargs) - KNOWN_KWARGS
    if unknown:
        raise ConfigError(f"unknown kd_ensemble_teacher_kwargs keys {sorted(unknown)}; known: {sorted(KNOWN_KWARGS)}")
    types = kwargs.get("types")
    ids = kwargs.get("model_ids")
    if not types or not ids:
        raise ConfigError("kd_ensemble_teacher_kwargs needs 'types' and 'model_ids' lists")
    if isinstance(types, str) or isinstance(ids, str):
        raise ConfigError("kd_ensemble_teacher_kwargs 'types' and 'model_ids' must be lists")
    if len(types) != len(ids):
        raise ConfigError(f"kd_ensemble_teacher_kwargs has {len(types)} types but {len(ids)} model_ids")
    for kind, what in UNSUPPORTED_TYPES.items():
        if kind in types:
            raise ConfigError(f"teacher type {kind!r} ({what}) is not supported")
    n = len(types)
    toks = _per_teacher(kwargs, "teacher_tokenizer_ids", n, None)
    lengths = _per_teacher(kwargs, "max_lengths", n, max_length)
    poolings = _per_teacher(kwargs, "poolings", n, "cls")
    options = kwargs.get("teacher_options") or [None] * n
    if not isinstance(options, (list, tuple)) or len(options) != n \
            or not all(o is None or isinstance(o, dict) for o in options):
        raise ConfigError(f"kd_ensemble_teacher_kwargs.teacher_options must be a list of {n} mappings (or nulls), "
                          f"one per teacher, got {options!r}")
    teachers = []
    for i in range(n):
        extra = {"pooling": poolings[i]} if types[i] == "dense" else {}
        extra.update(options[i] or {})
        teacher = build_teacher(types[i], ids[i], tokenizer_id=toks[i] or ids[i], max_length=int(lengths[i]),
                                device=device, dtype=kwargs.get("dtype"),
                                trust_remote_code=bool(kwargs.get("trust_remote_code", False)),
                                batch_size=int(kwargs.get("batch_size", 64)), **extra)
        logger.info("teacher %d: %r", i, teacher)
        teachers.append(teacher)
    return TeacherEnsemble(teachers, score_scale=float(kwargs.get("score_scale", 30)))

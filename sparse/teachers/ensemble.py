"""The online teacher ensemble (reference ``get_scores_batch``), and its config parser.

For teachers m = 1..M with raw scores s_m over each query's candidate documents (one row per
query: its own k documents, or in in-batch mode every document of the global batch):

    S = score_scale * (1/M) * sum_m minmax_per_row(s_m)          (logits in [0, score_scale])

Scores are computed without gradients and replace any dataset scores.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import torch

from sparse.errors import ConfigError
from sparse.teachers.base import Teacher, build_teacher, minmax_per_row

logger = logging.getLogger(__name__)

KNOWN_KWARGS = {"types", "model_ids", "teacher_tokenizer_ids", "score_scale", "max_lengths", "poolings",
                "dtype", "batch_size", "trust_remote_code"}


class TeacherEnsemble:
    def __init__(self, teachers: Sequence[Teacher], score_scale: float = 30.0):
        if not teachers:
            raise ConfigError("a teacher ensemble needs at least one teacher")
        self.teachers = list(teachers)
        self.score_scale = float(score_scale)

    def __repr__(self) -> str:
        return f"TeacherEnsemble({self.teachers}, score_scale={self.score_scale})"

    def _combine(self, per_teacher: list[torch.Tensor]) -> torch.Tensor:
        normed = [minmax_per_row(s.float().cpu()) for s in per_teacher]
        return self.score_scale * torch.stack(normed).mean(dim=0)

    @torch.no_grad()
    def score_groups(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        """(B, k) scores of each query against its own k = len(docs) / B documents (query-major)."""
        b = len(queries)
        if b == 0 or len(docs) % b:
            raise ValueError(f"{len(docs)} documents cannot be split into groups for {b} queries")
        k = len(docs) // b
        rep_q = [q for q in queries for _ in range(k)]
        return self._combine([t.score_pairs(rep_q, list(docs)).view(b, k) for t in self.teachers])

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
        return self._combine(per)


def _per_teacher(kwargs: dict, key: str, n: int, default):
    value = kwargs.get(key, default)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ConfigError(f"kd_ensemble_teacher_kwargs.{key} has {len(value)} entries for {n} teachers")
        return list(value)
    return [value] * n


def build_ensemble(kwargs: dict, max_length: int = 512, device=None) -> TeacherEnsemble:
    """Build the ensemble from ``kd_ensemble_teacher_kwargs``.

    Reference keys: ``types``, ``model_ids``, ``teacher_tokenizer_ids``, ``score_scale`` (30).
    New keys (one value or a list with one entry per teacher): ``max_lengths`` (default: the
    training ``max_seq_length``), ``poolings`` (dense teachers: cls | mean; default cls),
    ``dtype`` (fp16 | bf16 | fp32; default half precision on GPU, fp32 on CPU), ``batch_size``,
    ``trust_remote_code``.
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
    if "remote" in types:
        raise ConfigError("teacher type 'remote' (the reference's DynamoDB embedding service) is not supported")
    n = len(types)
    toks = _per_teacher(kwargs, "teacher_tokenizer_ids", n, None)
    lengths = _per_teacher(kwargs, "max_lengths", n, max_length)
    poolings = _per_teacher(kwargs, "poolings", n, "cls")
    teachers = []
    for i in range(n):
        extra = {"pooling": poolings[i]} if types[i] == "dense" else {}
        teacher = build_teacher(types[i], ids[i], tokenizer_id=toks[i] or ids[i], max_length=int(lengths[i]),
                                device=device, dtype=kwargs.get("dtype"),
                                trust_remote_code=bool(kwargs.get("trust_remote_code", False)),
                                batch_size=int(kwargs.get("batch_size", 64)), **extra)
        logger.info("teacher %d: %r", i, teacher)
        teachers.append(teacher)
    return TeacherEnsemble(teachers, score_scale=float(kwargs.get("score_scale", 30)))

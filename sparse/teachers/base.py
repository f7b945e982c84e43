"""Teacher models: the shared interface, the type registry and per-row min-max normalization.

A teacher scores (query, document) pairs without gradients:

* ``score_pairs(queries, docs) -> (n,)``: one score per pair ``(queries[i], docs[i])``;
* bi-encoders (dense, sparse) also ``score_matrix(queries, docs) -> (nq, nd)``; other teachers
  get a generic ``score_matrix`` that scores every pair.

Types are registered in ``TEACHER_TYPES`` with ``@register_teacher("name")``; that registry is
the one list of teacher types (``teacher_types()``). ``build_teacher`` imports
``sparse.teachers.<type>`` on first use of an unknown type, so a module such as
``sparse/teachers/seq2seq.py`` registers itself just by existing.

A new type: a module ``sparse/teachers/<type>.py`` with a ``@register_teacher("<type>")`` subclass
of ``Teacher`` (or ``BiEncoderTeacher``) that has a ``load(model_id, **kwargs)`` classmethod and
``score_pairs`` (bi-encoders: ``_embed_batch``); heavy imports belong inside ``load``.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
from typing import Callable, Optional, Sequence

import torch

from sparse.errors import ConfigError, UserError

logger = logging.getLogger(__name__)

TEACHER_TYPES: dict[str, type] = {}


def register_teacher(name: str) -> Callable[[type], type]:
    """Class decorator: register a teacher class under ``name`` (its ``teacher_type``)."""

    def wrap(cls: type) -> type:
        TEACHER_TYPES[name] = cls
        cls.teacher_type = name
        return cls

    return wrap


NOT_TEACHER_MODULES = {"base", "ensemble"}


def teacher_types() -> tuple[str, ...]:
    """Every registered teacher type, after importing each module of ``sparse/teachers/`` once."""
    for module in pkgutil.iter_modules([os.path.dirname(__file__)]):
        if module.name not in NOT_TEACHER_MODULES:
            importlib.import_module(f"sparse.teachers.{module.name}")
    return tuple(sorted(TEACHER_TYPES))


def minmax_per_row(scores: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-row min-max normalization (reference ``get_scores_batch``):

        s_hat[i, j] = (s[i, j] - min_j s[i, :]) / (max_j s[i, :] - min_j s[i, :] + eps)
    """
    lo = scores.amin(dim=1, keepdim=True)
    hi = scores.amax(dim=1, keepdim=True)
    return (scores - lo) / (hi - lo + eps)


def default_device(device=None) -> torch.device:
    """``device``, else the GPU when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device, dtype=None) -> torch.dtype:
    """Teachers run in half precision on GPU (bf16 where supported), float32 on CPU."""
    if isinstance(dtype, str):
        try:
            dtype = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
                     "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}[dtype]
        except KeyError:
            raise ConfigError(f"unknown teacher dtype {dtype!r}; use fp16, bf16 or fp32") from None
    if dtype is not None:
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class Teacher:
    """Common plumbing: tokenizer, device, dtype, batching. Subclasses implement scoring."""

    teacher_type = "base"
    is_bi_encoder = False

    def __init__(self, model, tokenizer, max_length: int = 512, device=None, dtype=None,
                 batch_size: int = 64, name: str = ""):
        self.device = default_device(device)
        self.dtype = default_dtype(self.device, dtype)
        self.model = model.to(self.device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.name = name or type(model).__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, max_length={self.max_length}, dtype={self.dtype})"

    def _tokenize(self, texts, pair_texts=None) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), list(pair_texts) if pair_texts is not None else None,
                             padding=True, truncation=True if pair_texts is None else "longest_first",
                             max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def score_matrix(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        """Every query against every document, by scoring all nq x nd pairs."""
        qs = [q for q in queries for _ in docs]
        ds = [d for _ in queries for d in docs]
        return self.score_pairs(qs, ds).view(len(queries), len(docs))


class BiEncoderTeacher(Teacher):
    """A teacher that embeds queries and documents separately; the score is a dot product."""

    is_bi_encoder = True

    def _embed_batch(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """float32 embeddings (n, dim), in ``batch_size`` chunks."""
        out = [self._embed_batch(texts[i:i + self.batch_size]).float()
               for i in range(0, len(texts), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0)

    embed_queries = embed

    def remember_documents(self, texts: Sequence[str], embeddings) -> None:
        """Embeddings already computed for these texts (a cached corpus): ``embed_docs`` looks them up."""
        self._known_docs = {t: i for i, t in enumerate(texts)}
        self._known_embeddings = torch.as_tensor(embeddings, dtype=torch.float32)

    @torch.no_grad()
    def embed_docs(self, texts: Sequence[str]) -> torch.Tensor:
        """Document embeddings; remembered texts are looked up, only the others are embedded."""
        known = getattr(self, "_known_docs", None)
        if not known:
            return self.embed(texts)
        rows = [known.get(t) for t in texts]
        missing = [i for i, r in enumerate(rows) if r is None]
        if not missing:
            return self._known_embeddings[rows]
        out = torch.empty(len(texts), self._known_embeddings.shape[1])
        hit = [i for i, r in enumerate(rows) if r is not None]
        if hit:
            out[hit] = self._known_embeddings[[rows[i] for i in hit]]
        out[missing] = self.embed([texts[i] for i in missing]).to(out.device)
        return out

    @torch.no_grad()
    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        if len(queries) != len(docs):
            raise ValueError(f"score_pairs needs as many queries as docs ({len(queries)} vs {len(docs)})")
        return (self.embed_queries(list(queries)) * self.embed_docs(list(docs))).sum(-1)

    @torch.no_grad()
    def score_matrix(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        return self.embed_queries(list(queries)) @ self.embed_docs(list(docs)).T


def build_teacher(type: str, model_id: str, tokenizer_id: Optional[str] = None, max_length: int = 512,
                  device=None, dtype=None, trust_remote_code: bool = False, **kwargs) -> Teacher:
    """Build a registered teacher type from a model id or path (``tokenizer_id`` defaults to it)."""
    if type not in TEACHER_TYPES:
        try:
            importlib.import_module(f"sparse.teachers.{type}")
        except ModuleNotFoundError as exc:
            if exc.name != f"sparse.teachers.{type}":
                raise
    if type not in TEACHER_TYPES:
        raise ConfigError(f"unknown teacher type {type!r}; known types: {list(teacher_types())}")
    if not model_id and getattr(TEACHER_TYPES[type], "needs_model_id", True):
        raise ConfigError(f"teacher of type {type!r} needs a model id")
    try:
        return TEACHER_TYPES[type].load(model_id, tokenizer_id=tokenizer_id or model_id, max_length=max_length,
                                        device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                        **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load {type} teacher {model_id!r}: {exc}") from None

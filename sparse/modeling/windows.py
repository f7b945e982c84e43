"""Long documents as token windows: where the windows fall, their vectors, and max pooling.

A document's tokens (preprocessed, no special tokens, no truncation) are cut into windows of
``content = length - s`` tokens, where ``s`` is the number of special tokens the tokenizer adds
(2 for BERT: ``[CLS] ... [SEP]``), so a window is exactly ``length`` tokens as the model sees it
and the first window is the document truncated at ``length``. Windows start every ``stride``
tokens (``stride <= content``: no token is skipped; ``stride < content``: neighbours overlap by
``content - stride`` tokens), and the last window is the first one that reaches the document's end
(it may be shorter). An empty document has one empty window.

Two ways to score a document from its windows (``COMBINE_MODES``):

* ``max_window``: every window is indexed as its own vector and a document scores the maximum of
  its windows' scores, as an OpenSearch ingest pipeline with ``text_chunking`` and a ``nested``
  query with ``score_mode: max`` does;
* ``max_pool``: one vector per document, the elementwise maximum of its windows' vectors (the
  document side's max pooling, continued across windows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sparse.errors import UserError
from sparse.modeling.vectors import SparseBatch

COMBINE_MODES = ("max_window", "max_pool")


def window_spans(n_tokens: int, content: int, stride: int) -> list[tuple[int, int]]:
    """``(start, end)`` token spans of one document's windows (see the module docstring)."""
    if not 1 <= stride <= content:
        raise UserError(f"a window stride of {stride} tokens with {content} content tokens per window "
                        f"{'skips tokens' if stride > content else 'is not a stride'}: use 1 <= stride <= {content}")
    spans = []
    start = 0
    while True:
        end = min(start + content, n_tokens)
        spans.append((start, end))
        if end >= n_tokens:
            return spans
        start += stride


@dataclass
class WindowedVectors:
    """The window vectors of n documents: ``windows`` in document order, ``counts[i]`` of them for document i."""

    windows: SparseBatch
    counts: np.ndarray

    def __post_init__(self):
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if int(self.counts.sum()) != len(self.windows):
            raise ValueError(f"{int(self.counts.sum())} windows counted, {len(self.windows)} vectors given")

    def __len__(self) -> int:
        return len(self.counts)

    def owners(self) -> np.ndarray:
        """The document position of every window."""
        return np.repeat(np.arange(len(self.counts)), self.counts)

    def max_pool(self) -> SparseBatch:
        """One vector per document: the elementwise maximum of its windows' vectors."""
        w = self.windows
        rows = np.repeat(self.owners(), w.lengths())
        cols = w.indices.astype(np.int64)
        order = np.lexsort((cols, rows))
        rows, cols, values = rows[order], cols[order], w.values[order]
        flat = rows * w.vocab_size + cols
        starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]]) if len(flat) else np.zeros(0, np.int64)
        pooled = np.maximum.reduceat(values, starts) if len(flat) else np.zeros(0, np.float32)
        indptr = np.zeros(len(self) + 1, np.int64)
        np.cumsum(np.bincount(rows[starts], minlength=len(self)), out=indptr[1:])
        return SparseBatch(indptr, cols[starts], pooled, w.vocab_size)

    # the DocumentStore interface of sparse.corpus.cache ---------------------------------------------
    def save(self, path: str) -> None:
        w = self.windows
        np.savez(path, indptr=w.indptr, indices=w.indices, values=w.values, vocab_size=np.int64(w.vocab_size),
                 counts=self.counts)

    @classmethod
    def load(cls, path: str) -> "WindowedVectors":
        with np.load(path) as z:
            windows = SparseBatch(z["indptr"], z["indices"], z["values"], int(z["vocab_size"]))
            return cls(windows, z["counts"])

    @staticmethod
    def concat(parts: Sequence["WindowedVectors"]) -> "WindowedVectors":
        return WindowedVectors(SparseBatch.concat([p.windows for p in parts]),
                               np.concatenate([p.counts for p in parts]))

    def take(self, order: Sequence[int]) -> "WindowedVectors":
        """The documents at positions ``order``, each with all its windows."""
        order = np.asarray(order, np.int64)
        first = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        rows = np.concatenate([np.arange(first[i], first[i] + self.counts[i]) for i in order]) if len(order) \
            else np.zeros(0, np.int64)
        return WindowedVectors(self.windows.take(rows), self.counts[order])


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The special token ids ``tokenizer`` puts before and after a text (BERT: ``[CLS]``, ``[SEP]``), read
    off a tokenized probe (transformers 5 tokenizers have no ``build_inputs_with_special_tokens``)."""
    inner = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(inner) + 1):
        if full[i:i + len(inner)] == inner:
            return list(full[:i]), list(full[i + len(inner):])
    raise UserError("cannot tell the tokenizer's special tokens apart from the text, so documents cannot be "
                    "split into windows with it")


def window_content(tokenizer, length: int) -> int:
    """Text tokens in a window of ``length`` tokens: ``length`` less the special tokens ``tokenizer`` adds."""
    prefix, suffix = special_tokens(tokenizer)
    content = length - len(prefix) - len(suffix)
    if content < 1:
        raise UserError(f"doc_window_length {length} leaves no room for text next to the special tokens")
    return content


def check_window(tokenizer, length: int, stride: "int | None") -> None:
    """A window length and stride this tokenizer can use (``window_spans``' rule), checked before any work."""
    content = window_content(tokenizer, length)
    if stride is not None and stride > content:
        raise UserError(f"doc_window_stride {stride} would skip tokens: a window of {length} tokens holds {content} "
                        f"text tokens next to the special ones, so the stride must be at most {content}")


def encode_windows(encoder, texts: Sequence[str], length: int, stride: int, **encode_opts) -> WindowedVectors:
    """The window vectors of ``texts`` by ``encoder`` (``encode_opts``: those of ``encode_token_ids``)."""
    prefix, suffix = special_tokens(encoder.tokenizer)
    content = window_content(encoder.tokenizer, length)
    inputs, counts = [], []
    for ids in encoder.content_token_ids(list(texts)):
        spans = window_spans(len(ids), content, stride)
        inputs += [prefix + ids[s:e] + suffix for s, e in spans]
        counts.append(len(spans))
    if not inputs:
        return WindowedVectors(SparseBatch.empty(encoder.vocab_size), np.zeros(0, np.int64))
    encode_opts.setdefault("desc", "encode windows")
    return WindowedVectors(encoder.encode_token_ids(inputs, **encode_opts), counts)

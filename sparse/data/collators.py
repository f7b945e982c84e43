"""Collation of training items into student tensors plus the raw texts teachers need.

Output of ``TrainingCollator`` for B items with k documents each:
  q_input_ids / q_attention_mask   (B, Lq)     queries, student tokenizer (query max length)
  d_input_ids / d_attention_mask   (B*k, Ld)   documents in query-major order
  scores                           (B, k)      only when every item has scores
  queries: list[str] (B), docs: list[str] (B*k)   for online teachers, each with its own tokenizer
"""

from __future__ import annotations

import torch


class TrainingCollator:
    """Batches training items into the student's tensors plus the raw texts (see the module docstring)."""

    def __init__(self, tokenize, max_seq_length: int, query_max_seq_length: int | None = None):
        """``tokenize(texts, max_length) -> {input_ids, attention_mask}`` (``SparseEncoder.tokenize``)."""
        self.tokenize = tokenize
        self.max_seq_length = max_seq_length
        self.query_max_seq_length = query_max_seq_length or max_seq_length

    def __call__(self, items: list[dict]) -> dict:
        k = len(items[0]["docs"])
        if any(len(it["docs"]) != k for it in items):
            raise ValueError("every item of a batch must have the same number of documents")
        queries = [it["query"] for it in items]
        docs = [d for it in items for d in it["docs"]]
        q = self.tokenize(queries, self.query_max_seq_length)
        d = self.tokenize(docs, self.max_seq_length)
        out = {"q_input_ids": q["input_ids"], "q_attention_mask": q["attention_mask"],
               "d_input_ids": d["input_ids"], "d_attention_mask": d["attention_mask"],
               "queries": queries, "docs": docs}
        if all(it.get("scores") is not None for it in items):
            out["scores"] = torch.tensor([it["scores"] for it in items], dtype=torch.float32)
        return out

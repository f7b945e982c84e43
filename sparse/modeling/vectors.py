"""Sparse vectors: the one conversion module used everywhere.

A ``SparseBatch`` holds n vectors over a vocabulary of size V in CSR layout
(``indptr`` int64 of n+1, ``indices`` int32, ``values`` float32), with each row's indices sorted
ascending and only strictly positive weights stored. It converts to and from dense tensors,
scipy CSR matrices and OpenSearch ``{token: weight}`` dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch


@dataclass
class SparseBatch:
    """n sparse vectors over a vocabulary in CSR layout (see the module docstring)."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    vocab_size: int

    def __post_init__(self):
        self.indptr = np.asarray(self.indptr, dtype=np.int64)
        self.indices = np.asarray(self.indices, dtype=np.int32)
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.indptr.ndim != 1 or len(self.indptr) == 0 or self.indptr[0] != 0:
            raise ValueError("indptr must be a 1-D array starting at 0")
        if self.indptr[-1] != len(self.indices) or len(self.indices) != len(self.values):
            raise ValueError("indptr, indices and values disagree in length")

    # construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, vocab_size: int) -> "SparseBatch":
        return cls(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), vocab_size)

    @classmethod
    def from_dense(cls, dense) -> "SparseBatch":
        """From a (n, V) tensor or array; keeps entries > 0."""
        if isinstance(dense, torch.Tensor):
            dense = dense.detach()
            rows, cols = torch.nonzero(dense > 0, as_tuple=True)
            values = dense[rows, cols].float().cpu().numpy()
            rows, cols = rows.cpu().numpy(), cols.cpu().numpy()
            n, vocab = dense.shape
        else:
            dense = np.asarray(dense)
            rows, cols = np.nonzero(dense > 0)
            values = dense[rows, cols]
            n, vocab = dense.shape
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return cls(indptr, cols, values, vocab)

    @classmethod
    def from_csr(cls, matrix: sp.csr_matrix) -> "SparseBatch":
        m = sp.csr_matrix(matrix, dtype=np.float32)
        m.sum_duplicates()
        m.sort_indices()
        m.data[m.data < 0] = 0
        m.eliminate_zeros()
        return cls(m.indptr, m.indices, m.data, m.shape[1])

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[Sequence[int], Sequence[float]]], vocab_size: int) -> "SparseBatch":
        """From per-row (indices, values); duplicates summed, non-positive weights dropped."""
        data, idx, ptr = [], [], [0]
        for ids, vals in rows:
            ids = np.asarray(ids, np.int64)
            vals = np.asarray(vals, np.float32)
            ptr.append(ptr[-1] + len(ids))
            idx.append(ids)
            data.append(vals)
        n = len(rows)
        m = sp.csr_matrix(
            (np.concatenate(data) if data else np.zeros(0, np.float32),
             np.concatenate(idx) if idx else np.zeros(0, np.int64),
             np.asarray(ptr, np.int64)),
            shape=(n, vocab_size),
        )
        return cls.from_csr(m)

    @classmethod
    def from_token_dicts(cls, dicts: Sequence[dict[str, float]], token_to_id: dict[str, int], vocab_size: int) -> "SparseBatch":
        rows = []
        for d in dicts:
            unknown = [t for t in d if t not in token_to_id]
            if unknown:
                raise KeyError(f"tokens not in the vocabulary: {unknown[:5]}")
            rows.append(([token_to_id[t] for t in d], list(d.values())))
        return cls.from_rows(rows, vocab_size)

    @staticmethod
    def concat(batches: Sequence["SparseBatch"]) -> "SparseBatch":
        if not batches:
            raise ValueError("nothing to concatenate")
        vocab = batches[0].vocab_size
        if any(b.vocab_size != vocab for b in batches):
            raise ValueError("cannot concatenate batches over different vocabularies")
        offsets = np.cumsum([0] + [b.nnz for b in batches[:-1]])
        indptr = np.concatenate([[0]] + [b.indptr[1:] + off for b, off in zip(batches, offsets)])
        return SparseBatch(indptr, np.concatenate([b.indices for b in batches]),
                           np.concatenate([b.values for b in batches]), vocab)

    # access ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s, e = self.indptr[i], self.indptr[i + 1]
        return self.indices[s:e], self.values[s:e]

    def lengths(self) -> np.ndarray:
        """Number of non-zero entries of each vector."""
        return np.diff(self.indptr)

    def keep(self, mask: np.ndarray) -> "SparseBatch":
        """The batch with only the entries where ``mask`` (one bool per stored entry) is true."""
        mask = np.asarray(mask, bool)
        row_of = self.row_of_entries()
        indptr = np.zeros(len(self) + 1, np.int64)
        np.cumsum(np.bincount(row_of[mask], minlength=len(self)), out=indptr[1:])
        return SparseBatch(indptr, self.indices[mask], self.values[mask], self.vocab_size)

    def row_of_entries(self) -> np.ndarray:
        """The row of every stored entry (int64, one per non-zero)."""
        return np.repeat(np.arange(len(self)), self.lengths())

    def take(self, order: Sequence[int]) -> "SparseBatch":
        return SparseBatch.from_csr(self.to_csr()[np.asarray(order, np.int64)])

    def to_csr(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=(len(self), self.vocab_size))

    def to_dense(self) -> torch.Tensor:
        return torch.from_numpy(self.to_csr().toarray())

    def to_token_dicts(self, id_to_token: Sequence[str]) -> list[dict[str, float]]:
        """OpenSearch form: one ``{token: weight}`` dict per vector."""
        out = []
        for i in range(len(self)):
            ids, vals = self.row(i)
            out.append({id_to_token[j]: float(v) for j, v in zip(ids.tolist(), vals.tolist())})
        return out

    # persistence -----------------------------------------------------------------------------
    def save(self, path: str) -> None:
        np.savez(path, indptr=self.indptr, indices=self.indices, values=self.values,
                 vocab_size=np.int64(self.vocab_size))

    @classmethod
    def load(cls, path: str) -> "SparseBatch":
        with np.load(path) as z:
            return cls(z["indptr"], z["indices"], z["values"], int(z["vocab_size"]))

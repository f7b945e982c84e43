"""EmbeddedIndex against brute-force dense scoring; the 9-bit mode against hand truncation."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import scipy.sparse as sp

from sparse.errors import UserError
from sparse.modeling.vectors import SparseBatch
from sparse.retrieval import EmbeddedIndex, Index, build_index, fp9, prune_queries


def random_batch(n, vocab, density, seed, scale=3.0):
    m = sp.random(n, vocab, density=density, random_state=seed, format="csr", dtype=np.float64)
    m.data = (m.data * scale).astype(np.float32)
    return SparseBatch.from_csr(m.astype(np.float32))


def brute_force(queries: SparseBatch, docs: SparseBatch, ids, k):
    """Dense float64 scores, positives only, sorted by (-score, id) with Python's sort."""
    dense = queries.to_dense().double().numpy() @ docs.to_dense().double().numpy().T
    out_ids, out_scores = [], []
    for row in dense:
        hits = sorted(((-s, ids[j]) for j, s in enumerate(row) if s > 0))[:k]
        out_ids.append([d for _, d in hits])
        out_scores.append([-s for s, _ in hits])
    return out_ids, out_scores


def assert_same(got, want, rtol=1e-5):
    assert got[0] == want[0]
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("doc_chunk,query_batch", [(10_000, 64), (97, 7)])
def test_exact_topk_matches_brute_force(doc_chunk, query_batch):
    docs = random_batch(600, 400, 0.04, seed=1)
    queries = random_batch(25, 400, 0.05, seed=2)
    ids = [f"doc{i:04d}" for i in np.random.default_rng(0).permutation(600)]
    index = EmbeddedIndex(doc_chunk=doc_chunk, query_batch=query_batch, threads=2)
    index.add(ids[:250], docs.take(range(250)))
    index.add(ids[250:], docs.take(range(250, 600)))
    assert isinstance(index, Index) and len(index) == 600
    for k in (1, 10, 1000):
        assert_same(index.search(queries, k), brute_force(queries, docs, ids, k))


def test_ties_are_broken_by_document_id_across_chunks():
    row = SparseBatch.from_rows([([3, 7], [1.0, 2.0])], 10)
    docs = SparseBatch.concat([row] * 6 + [SparseBatch.from_rows([([3], [0.5])], 10)])
    ids = ["f", "b", "e", "a", "d", "c", "z"]
    index = EmbeddedIndex(doc_chunk=2)  # equal-score docs fall in different chunks
    index.add(ids, docs)
    got_ids, got_scores = index.search(SparseBatch.from_rows([([3, 7], [1.0, 1.0])], 10), 4)
    assert got_ids == [["a", "b", "c", "d"]]
    assert got_scores == [[3.0] * 4]
    got_ids, _ = index.search(SparseBatch.from_rows([([3], [1.0])], 10), 10)
    assert got_ids == [["a", "b", "c", "d", "e", "f", "z"]]


def test_no_match_and_empty_query_return_no_hits():
    index = EmbeddedIndex()
    index.add(["a"], SparseBatch.from_rows([([1], [1.0])], 5))
    ids, scores = index.search(SparseBatch.from_rows([([2], [1.0]), ([], [])], 5), 3)
    assert ids == [[], []] and scores == [[], []]


def _hand_fp9(w: float) -> float:
    """Keep 9 significant bits by arithmetic: floor(w / ulp9) * ulp9 with ulp9 = 2^(e-8)."""
    w32 = struct.unpack("f", struct.pack("f", w))[0]
    mantissa, exp = math.frexp(w32)  # w = mantissa * 2^exp, mantissa in [0.5, 1)
    step = 2.0 ** (exp - 1 - 8)
    return math.floor(w32 / step) * step


def test_fp9_matches_hand_truncation():
    assert float(fp9(np.float32(0.3))) == 0.2998046875  # 307 * 2^-10, by hand
    assert float(fp9(np.float32(1.0))) == 1.0
    assert float(fp9(np.float32(2.9))) == 2.8984375  # floor(2.9 / 2^-7) = 371, times 2^-7
    values = np.random.default_rng(3).gamma(1.0, 1.5, size=2000).astype(np.float32)
    got = fp9(values)
    want = np.array([_hand_fp9(float(v)) for v in values], np.float32)
    np.testing.assert_array_equal(got, want)
    rel = (values - got) / values
    assert rel.min() >= 0 and rel.max() < 2 ** -8


def test_opensearch_precision_scores_truncated_documents():
    docs = random_batch(300, 200, 0.06, seed=4)
    queries = random_batch(12, 200, 0.06, seed=5)
    ids = [str(i) for i in range(300)]
    truncated = SparseBatch(docs.indptr, docs.indices, [_hand_fp9(float(v)) for v in docs.values], docs.vocab_size)
    index = EmbeddedIndex(precision="opensearch")
    index.add(ids, docs)
    assert_same(index.search(queries, 20), brute_force(queries, truncated, ids, 20))
    exact = EmbeddedIndex(precision="float")
    exact.add(ids, docs)
    assert index.search(queries, 20)[1] != exact.search(queries, 20)[1]  # truncation is visible


def test_query_prune_drops_weights_at_or_below_ratio_of_max():
    q = SparseBatch.from_rows([([1, 2, 3, 4], [1.0, 0.5, 0.49, 2.0]), ([5], [0.1])], 10)
    pruned = prune_queries(q, 0.25)  # thresholds 0.5 and 0.025
    assert pruned.row(0)[0].tolist() == [1, 4]  # 0.5 == 0.25 * 2.0 is dropped (<=)
    assert pruned.row(1)[0].tolist() == [5]
    docs = SparseBatch.from_rows([([1], [1.0]), ([2], [10.0]), ([4], [1.0])], 10)
    index = EmbeddedIndex(query_prune=0.25)
    index.add(["x", "y", "z"], docs)
    ids, scores = index.search(q.take([0]), 5)
    assert ids == [["z", "x"]] and scores == [[2.0, 1.0]]


def test_save_load_roundtrip(tmp_path):
    docs = random_batch(200, 300, 0.05, seed=6)
    queries = random_batch(9, 300, 0.05, seed=7)
    ids = [f"d{i}" for i in range(200)]
    index = build_index("embedded", precision="opensearch")
    index.add(ids, docs)
    before = index.search(queries, 15)
    index.save(str(tmp_path / "idx"))
    loaded = EmbeddedIndex.load(str(tmp_path / "idx"))
    assert loaded.precision == "opensearch" and len(loaded) == 200
    assert loaded.search(queries, 15) == before
    with pytest.raises(UserError):
        EmbeddedIndex.load(str(tmp_path / "missing"))


def test_user_errors():
    index = EmbeddedIndex()
    index.add(["a"], SparseBatch.from_rows([([1], [1.0])], 5))
    with pytest.raises(UserError, match="duplicate"):
        index.add(["a"], SparseBatch.from_rows([([1], [1.0])], 5))
    with pytest.raises(UserError):
        EmbeddedIndex(precision="fp16")
    with pytest.raises(UserError):
        build_index("lucene")

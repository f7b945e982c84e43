"""Serving settings: document pruning (every OpenSearch prune_type), stored precision (float, rank_features
9-bit, SEISMIC bytes, integer impacts), the index-size and cost figures, their place in an evaluation,
and the 9-bit + max_ratio emulation against the OpenSearch emulator (osmem-server).

Every expected value is computed here again, with plain Python loops over {token: weight} dicts.
"""

from __future__ import annotations

import struct
import uuid

import numpy as np
import pytest

from sparse.errors import ConfigError
from sparse.evaluation.footprint import footprint, latency_stats, postings_touched
from sparse.modeling.vectors import SparseBatch
from sparse.retrieval import EmbeddedIndex
from sparse.retrieval.precision import ingest_ceiling, query_values, store_values
from sparse.retrieval.pruning import check_prune, prune_documents

VOCAB = 12
# hand-made documents: ties (0.5, 0.5), a single token, an empty vector
DOCS = [{0: 2.0, 3: 0.5, 5: 1.0, 7: 0.5, 9: 0.1}, {1: 0.3}, {}, {2: 4.0, 4: 0.4, 6: 0.39, 8: 3.6, 11: 0.02}]


def batch(rows):
    return SparseBatch.from_rows([(list(r), list(r.values())) for r in rows], VOCAB)


def as_dicts(b):
    return [dict(zip(b.row(i)[0].tolist(), b.row(i)[1].tolist())) for i in range(len(b))]


def by_weight(row):
    """Entries of one vector by weight descending, then token id: the tie rule."""
    return sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))


def expected(row, prune_type, value):
    """The pruned vector, computed one entry at a time."""
    f32 = {t: float(np.float32(w)) for t, w in row.items()}
    if prune_type == "max_ratio":
        return {t: w for t, w in f32.items() if w >= float(np.float32(value) * np.float32(max(f32.values())))}
    if prune_type == "abs_value":
        return {t: w for t, w in f32.items() if w >= float(np.float32(value))}
    if prune_type == "top_k":
        return dict(by_weight(f32)[:int(value)])
    kept, running, total = {}, 0.0, sum(f32.values())
    for t, w in by_weight(f32):  # alpha_mass
        running += w
        if running <= value * total:
            kept[t] = w
    return kept


@pytest.mark.parametrize("prune_type,value", [("max_ratio", 0.25), ("max_ratio", 0.0), ("top_k", 2), ("top_k", 1),
                                              ("alpha_mass", 0.8), ("alpha_mass", 0.5), ("abs_value", 0.4),
                                              ("abs_value", 0.0)])
def test_each_prune_type_equals_a_direct_computation(prune_type, value):
    docs = DOCS[:2] + DOCS[3:] if prune_type == "max_ratio" else DOCS
    got = as_dicts(prune_documents(batch(docs), prune_type, value))
    want = [expected(r, prune_type, value) if r else {} for r in docs]
    assert [sorted(g) for g in got] == [sorted(w) for w in want]
    assert got == want
    assert sum(map(len, got)) < sum(map(len, docs)) or value == 0.0  # the cases above do prune


def test_alpha_mass_keeps_a_running_sum_equal_to_alpha_times_total():
    row = {0: 2.0, 1: 1.0, 2: 1.0}  # 0.5 x 4.0 = 2.0: the first weight alone reaches it exactly
    assert as_dicts(prune_documents(batch([row]), "alpha_mass", 0.5)) == [expected(row, "alpha_mass", 0.5)] == [{0: 2.0}]


def test_top_k_ties_keep_the_smaller_token_id_and_none_keeps_everything():
    assert as_dicts(prune_documents(batch([{7: 0.5, 3: 0.5, 1: 0.2}]), "top_k", 1)) == [{3: 0.5}]
    b = batch(DOCS)
    assert prune_documents(b, "none", None) is b


@pytest.mark.parametrize("prune_type,value,message", [
    ("max_ratio", 1.0, r"in \[0, 1\)"), ("alpha_mass", 1.5, r"in \[0, 1\)"), ("top_k", 2.5, "integer >= 1"),
    ("top_k", 0, "integer >= 1"), ("abs_value", -0.1, ">= 0"), ("max_ratio", None, "needs doc_prune_value"),
    ("none", 0.1, "doc_prune_type is none"), ("random", 0.1, "must be one of")])
def test_bad_prune_settings_are_one_clear_error(prune_type, value, message):
    with pytest.raises(ConfigError, match=message):
        check_prune(prune_type, value)


def test_model_prune_ratio_is_the_max_ratio_case(tiny_bert):
    """The encoder's prune_ratio (applied while encoding) keeps what max_ratio keeps after encoding."""
    from sparse.modeling.encoder import SparseEncoder

    mlm, tok = tiny_bert
    texts = ["the cat sat on the mat", "a red bird flew over the house", "dog"]
    full = SparseEncoder(mlm, tok).encode_documents(texts)
    encoder = SparseEncoder(mlm, tok)
    encoder.settings.prune_ratio = 0.3
    pruned_in_model = encoder.encode_documents(texts)
    pruned_after = prune_documents(full, "max_ratio", 0.3)
    assert pruned_in_model.nnz < full.nnz
    for got, want in zip(as_dicts(pruned_in_model), as_dicts(pruned_after)):
        assert sorted(got) == sorted(want) and got == pytest.approx(want)


# ----------------------------------------------------------------------------- precision
def lucene_fp9(w):
    """Lucene FeatureField: encode floatToIntBits(w) >>> 15, decode intBitsToFloat(tf << 15)."""
    bits = struct.unpack("<I", struct.pack("<f", w))[0]
    return struct.unpack("<f", struct.pack("<I", (bits >> 15) << 15))[0]


def test_each_precision_rounds_as_its_engine():
    values = [0.7, 0.01, 1.0, 2.99, 5.0, 0.004, 0.456]
    assert store_values(values, "float").tolist() == pytest.approx(values)
    assert store_values(values, "opensearch").tolist() == [lucene_fp9(v) for v in values]
    assert lucene_fp9(0.7) == 179 * 2 ** -8  # 0.69921875: truncated, not rounded
    # SEISMIC: clip to [0, c], round(w * 255 / c) levels of c / 255
    for c in (3.0, 6.0):
        want = [round(min(v, c) * 255 / c) * c / 255 for v in values]
        assert store_values(values, "seismic", ingest_ceiling=c).tolist() == pytest.approx(want, rel=1e-6)
    assert store_values([5.0], "seismic", ingest_ceiling=3.0)[0] == pytest.approx(3.0)  # clipped
    assert query_values([20.0, 1.0], "seismic").tolist() == pytest.approx([16.0, round(255 / 16) * 16 / 255])
    # impacts: round(w * scale) integers, kept divided by the scale
    assert store_values(values, "impact", impact_scale=100).tolist() == pytest.approx(
        [round(v * 100) / 100 for v in values])
    assert query_values([0.456], "impact", impact_scale=10).tolist() == pytest.approx([0.5])
    assert query_values([0.456], "opensearch").tolist() == pytest.approx([0.456])  # a boost: not truncated


def test_ingest_ceiling_is_what_the_export_writes():
    assert ingest_ceiling(0.5) == 3.0 and ingest_ceiling(3.0) == 3.0
    assert ingest_ceiling(3.2) == 4.0 and ingest_ceiling(7.0) == 7.0


@pytest.mark.parametrize("precision", ["float", "opensearch", "seismic", "impact"])
def test_index_scores_equal_the_integer_or_truncated_dot_product(precision):
    docs = batch(DOCS)
    queries = batch([{0: 1.5, 3: 0.7, 8: 0.2, 11: 0.9}, {1: 12.0, 9: 0.3}])
    index = EmbeddedIndex(precision=precision, impact_scale=10)
    index.add([f"d{i}" for i in range(len(DOCS))], docs)
    ids, scores = index.search(queries, 10)
    stored = as_dicts(index.documents())
    if precision == "impact":  # 0.02 x 10 rounds to 0: no posting is left for it
        assert sum(map(len, stored)) == docs.nnz - 1 and 11 not in stored[3]
    else:
        assert sum(map(len, stored)) == docs.nnz
    c = ingest_ceiling(max(w for r in DOCS for w in r.values()))
    assert c == 4.0
    if precision == "seismic":
        assert index.ingest_ceiling == c
    for q, (qid, qs) in zip(as_dicts(queries), zip(ids, scores)):
        want = {}
        for i, d in enumerate(as_dicts(docs)):  # the float32 weights the index was given
            if precision == "seismic":  # the integer dot product, rescaled by c_s * c_i / 255^2
                s = sum(round(min(q[t], 16) * 255 / 16) * round(min(w, c) * 255 / c) for t, w in d.items()
                        if t in q) * 16 * c / 255 ** 2
            elif precision == "impact":
                s = sum(round(q[t] * 10) * round(w * 10) for t, w in d.items() if t in q) / 100
            else:
                s = sum(q[t] * (lucene_fp9(w) if precision == "opensearch" else w) for t, w in d.items() if t in q)
            if s > 0:
                want[f"d{i}"] = s
        assert dict(zip(qid, qs)) == pytest.approx(want, rel=1e-5)


# ----------------------------------------------------------------------------- figures
def test_footprint_of_a_hand_made_index():
    docs = batch(DOCS)
    queries = batch([{0: 1.0, 2: 1.0, 10: 1.0}, {}, {1: 0.5, 0: 0.5, 3: 0.1}])
    fp = footprint(docs, queries, "impact", impact_scale=100)
    postings = sum(len(r) for r in DOCS)
    assert fp["postings"] == postings == 11
    # 4-byte ids plus the value: float32 4, rank_features 2, a byte 1, impacts up to 400 need 2
    assert fp["bytes_by_format"] == {"float": postings * 8, "opensearch": postings * 6, "seismic": postings * 5,
                                     "impact": postings * 6}
    assert fp["index_bytes"] == fp["bytes_by_format"]["impact"]
    assert footprint(docs, queries, "impact", impact_scale=50)["bytes_by_format"]["impact"] == postings * 5  # <= 200
    df = {t: sum(t in r for r in DOCS) for t in range(VOCAB)}
    touched = [df[0] + df[2] + df[10], 0, df[1] + df[0] + df[3]]
    assert postings_touched(queries, docs).tolist() == touched
    assert fp["touched_per_query"] == pytest.approx(sum(touched) / 3)


def test_latency_percentiles():
    stats = latency_stats(np.arange(1, 101) / 1000.0)  # 1 .. 100 ms
    assert stats["queries_timed"] == 100
    assert stats["p50_ms"] == pytest.approx(50.5) and stats["p99_ms"] == pytest.approx(99.01)
    assert latency_stats(np.zeros(0))["p50_ms"] is None


# ----------------------------------------------------------------------------- the OpenSearch emulator
def test_fp9_and_max_ratio_emulation_equals_osmem(osmem_url):
    """Documents pruned by the toolkit (max_ratio, as the ingest processor would) and stored by osmem as
    rank_features score like EmbeddedIndex(precision="opensearch") and like an fp9 dot product, to 1e-5."""
    import scipy.sparse as sp

    from sparse.retrieval.opensearch import OpenSearchIndex

    rng = np.random.default_rng(0)
    vocab = 200
    m = sp.random(120, vocab, density=0.08, random_state=1, format="csr", dtype=np.float64)
    m.data = rng.gamma(1.5, 1.0, size=m.nnz)
    docs = prune_documents(SparseBatch.from_csr(m.astype(np.float32)), "max_ratio", 0.2)
    q = sp.random(12, vocab, density=0.1, random_state=2, format="csr", dtype=np.float64)
    queries = SparseBatch.from_csr(q.astype(np.float32))
    ids = [f"d{i:03d}" for i in range(len(docs))]
    tokens = [f"t{i}" for i in range(vocab)]
    cluster = OpenSearchIndex(f"test-serving-{uuid.uuid4().hex[:8]}", tokens, url=osmem_url, delete_on_close=True)
    cluster.add(ids, docs)
    embedded = EmbeddedIndex(precision="opensearch")
    embedded.add(ids, docs)
    got, want = cluster.search(queries, 30), embedded.search(queries, 30)
    cluster.close()
    assert got[0] == want[0] and sum(map(len, got[0])) > 100
    dense_q, dense_d = queries.to_csr().toarray(), docs.to_csr().toarray()
    fp9_dot = dense_q.astype(np.float64) @ np.vectorize(lucene_fp9)(dense_d).T
    for row, (hit_ids, hit_scores), (_, emb_scores) in zip(fp9_dot, zip(*got), zip(*want)):
        np.testing.assert_allclose(hit_scores, emb_scores, atol=1e-5, rtol=0)
        np.testing.assert_allclose(hit_scores, [row[int(d[1:])] for d in hit_ids], atol=1e-5, rtol=0)

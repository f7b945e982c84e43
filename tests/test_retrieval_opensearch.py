"""OpenSearchIndex against a live osmem-server (``osmem_url``: conftest, 127.0.0.1, a free port).

osmem serves rank_features, _bulk and rank_feature queries with Lucene's 9-bit scoring, so the
rank_feature form must give the same top-k and scores as EmbeddedIndex(precision="opensearch").
It rejects neural_sparse, so that form gets request-body tests. Tests against a real cluster run
when OPENSEARCH_URL is set.
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
import scipy.sparse as sp

from sparse.errors import UserError
from sparse.modeling.vectors import SparseBatch
from sparse.retrieval import EmbeddedIndex
from sparse.retrieval.opensearch import (OpenSearchIndex, connection_settings, feature_name, query_body,
                                         redact_url, token_of_feature, two_phase_pipeline)

VOCAB = 300
TOKENS = [f"tok{i}" for i in range(VOCAB)]
TOKENS[3], TOKENS[4], TOKENS[5], TOKENS[6], TOKENS[7] = ".", "##.", "50%", "[CLS]", "é.x"


def random_batch(n, density, seed, scale=3.0):
    m = sp.random(n, VOCAB, density=density, random_state=seed, format="csr", dtype=np.float64)
    m.data = m.data * scale
    return SparseBatch.from_csr(m.astype(np.float32))


def assert_matches_embedded_fp9(index, ids, docs, queries, k):
    """``index`` (empty, deleted on close) holds every document and returns the same top-k and
    scores as EmbeddedIndex in 9-bit mode."""
    index.add(ids, docs)
    assert len(index) == len(docs) and index.count() == len(docs)
    embedded = EmbeddedIndex(precision="opensearch")
    embedded.add(ids, docs)
    got, want = index.search(queries, k), embedded.search(queries, k)
    index.close()
    assert got[0] == want[0]
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _name():
    return f"test-{uuid.uuid4().hex[:10]}"


def test_rank_feature_form_equals_embedded_fp9(osmem_url):
    docs = random_batch(400, 0.05, seed=1)
    docs = SparseBatch.concat([docs, docs.take([0, 1])])  # exact duplicates: ties broken by id
    queries = random_batch(15, 0.06, seed=2, scale=1.0)
    ids = [f"d{i:03d}" for i in range(len(docs))]
    index = OpenSearchIndex(_name(), TOKENS, url=osmem_url, bulk_size=128, delete_on_close=True)
    assert_matches_embedded_fp9(index, ids, docs, queries, 25)
    # the special tokens (".", "##.", "50%", non-ASCII) were used by some query and document
    used = set(queries.indices.tolist()) & set(docs.indices.tolist())
    assert used & {3, 4, 5, 7}


def test_feature_names_round_trip():
    for tok in TOKENS + ["a%2Eb", "%", "..."]:
        name = feature_name(tok)
        assert "." not in name and token_of_feature(name) == tok
    assert len({feature_name(t) for t in ["a.b", "a%2Eb"]}) == 2


def test_zero_and_negative_weights_are_filtered(osmem_url):
    # a hand-built batch holding 0 and a negative weight (SparseBatch itself never stores them)
    docs = SparseBatch(np.array([0, 3, 4]), np.array([1, 2, 3, 2]), np.array([0.0, 1.5, -2.0, 0.7]), VOCAB)
    index = OpenSearchIndex(_name(), TOKENS, url=osmem_url, delete_on_close=True)
    index.add(["a", "b"], docs)
    assert index.filtered_weights == 2 and index.count() == 2
    ids, scores = index.search(SparseBatch.from_rows([([2], [2.0])], VOCAB), 5)
    index.close()
    assert ids == [["a", "b"]]
    np.testing.assert_allclose(scores[0], [3.0, 2 * 0.69921875], rtol=1e-6)  # fp9(0.7) = 179 * 2^-8


def test_skip_ingest_reuses_and_checks_count(osmem_url):
    name = _name()
    docs = random_batch(50, 0.05, seed=3)
    ids = [str(i) for i in range(50)]
    first = OpenSearchIndex(name, TOKENS, url=osmem_url)
    first.add(ids, docs)
    before = first.search(docs.take([0, 1]), 5)
    first.close()
    reuse = OpenSearchIndex(name, TOKENS, url=osmem_url, skip_ingest=True, delete_on_close=True)
    reuse.verify_count(50)
    assert reuse.search(docs.take([0, 1]), 5) == before
    with pytest.raises(UserError, match="holds 50 documents"):
        reuse.verify_count(51)
    reuse.close()  # deletes
    gone = OpenSearchIndex(name, TOKENS, url=osmem_url, skip_ingest=True)
    with pytest.raises(UserError, match="does not exist"):
        gone.verify_count(50)


def test_neural_sparse_request_body_and_weight_cap():
    body = query_body({"cat": 1.5, "%2E": 64.0}, 7, field="vec", form="neural_sparse")
    assert body["size"] == 7
    assert body["query"] == {"neural_sparse": {"vec": {"query_tokens": {"cat": 1.5, "%2E": 64.0}}}}
    with pytest.raises(UserError, match=r"\(0, 64\]"):
        query_body({"cat": 64.5}, 7, form="neural_sparse")
    rf = query_body({"cat": 100.0}, 3, field="vec")
    assert rf["query"]["bool"]["should"] == [{"rank_feature": {"field": "vec.cat", "linear": {}, "boost": 100.0}}]
    pipe = two_phase_pipeline()
    proc = pipe["request_processors"][0]["neural_sparse_two_phase_processor"]
    assert proc["two_phase_parameter"] == {"prune_ratio": 0.4, "expansion_rate": 5.0, "max_window_size": 10000}


def test_neural_sparse_rejected_by_osmem_is_a_clear_error(osmem_url):
    docs = random_batch(20, 0.1, seed=4)
    index = OpenSearchIndex(_name(), TOKENS, url=osmem_url, query_form="neural_sparse", delete_on_close=True)
    index.add([str(i) for i in range(20)], docs)
    with pytest.raises(UserError, match="neural_sparse"):
        index.search(docs.take([0]), 5)
    index.close()
    with pytest.raises(UserError, match="two-phase"):
        OpenSearchIndex(_name(), TOKENS, url=osmem_url, two_phase=True)  # rank_feature form


def test_credentials_are_never_in_messages(monkeypatch):
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "s3cret-env")
    monkeypatch.setenv("OPENSEARCH_USER", "alice")
    with pytest.raises(UserError, match="must not hold credentials") as err:  # one rule: never in URLs
        connection_settings("https://bob:hunter2@127.0.0.1:1")
    assert "hunter2" not in str(err.value)
    conn = connection_settings("https://127.0.0.1:1")
    assert conn["user"] == "alice" and conn["password"] == "s3cret-env" and conn["url"] == "https://127.0.0.1:1"
    assert redact_url("http://u:p@h:9200/x") == "http://h:9200/x"
    with pytest.raises(UserError) as err:
        OpenSearchIndex("x", TOKENS, url="http://bob:hunter2@127.0.0.1:1", max_retries=0, timeout=2)
    assert "hunter2" not in str(err.value) and "127.0.0.1:1" in str(err.value)
    monkeypatch.delenv("OPENSEARCH_PASSWORD")
    with pytest.raises(UserError, match="both a user and a password"):
        connection_settings("http://127.0.0.1:9200")


class FlakyClient:
    """A stand-in client: rejects some bulk items with 429 once, others for good (mapping error)."""

    def __init__(self, bad_ids=(), flaky_ids=()):
        self.bad, self.flaky, self.stored, self.calls = set(bad_ids), set(flaky_ids), {}, 0

    class indices:  # noqa: N801
        pass

    def bulk(self, body):
        self.calls += 1
        items = []
        for meta, src in zip(body[::2], body[1::2]):
            doc_id = meta["index"]["_id"]
            if doc_id in self.bad:
                items.append({"index": {"_id": doc_id, "status": 400,
                                         "error": {"type": "mapper_parsing_exception", "reason": "bad feature"}}})
            elif doc_id in self.flaky:
                self.flaky.discard(doc_id)
                items.append({"index": {"_id": doc_id, "status": 429, "error": {"type": "es_rejected"}}})
            else:
                self.stored[doc_id] = src
                items.append({"index": {"_id": doc_id, "status": 201}})
        return {"errors": any(i["index"]["status"] >= 300 for i in items), "items": items}


def _fake_index(client):
    index = OpenSearchIndex("fake", TOKENS, url="http://127.0.0.1:9", client=client, backoff=0.0)
    index._created = True
    index.count = lambda: len(client.stored)
    return index


def test_bulk_retries_rejected_items_and_reports_permanent_failures():
    docs = random_batch(30, 0.1, seed=5)
    ids = [str(i) for i in range(30)]
    ok = FlakyClient(flaky_ids={"3", "17"})
    _fake_index(ok).add(ids, docs)
    assert sorted(ok.stored) == sorted(ids) and ok.calls == 2
    bad = FlakyClient(bad_ids={"5", "9"})
    with pytest.raises(UserError) as err:
        _fake_index(bad).add(ids, docs)
    msg = str(err.value)
    assert "28 of 30" in msg and "5: 400 mapper_parsing_exception" in msg and "9: 400" in msg


# ------------------------------------------------------------------------------- real cluster
real = pytest.mark.skipif(not os.environ.get("OPENSEARCH_URL"),
                          reason="set OPENSEARCH_URL (and OPENSEARCH_USER/OPENSEARCH_PASSWORD) to test a real cluster")


@real
@pytest.mark.parametrize("form", ["rank_feature", "neural_sparse"])
def test_real_cluster_matches_embedded_fp9(form):
    docs = random_batch(300, 0.05, seed=6)
    queries = random_batch(10, 0.06, seed=7, scale=1.0)
    ids = [f"d{i:03d}" for i in range(300)]
    index = OpenSearchIndex(_name(), TOKENS, query_form=form, delete_on_close=True)
    assert_matches_embedded_fp9(index, ids, docs, queries, 20)


@real
def test_real_cluster_two_phase_returns_full_scores_of_its_candidates():
    docs = random_batch(300, 0.05, seed=8)
    queries = random_batch(5, 0.06, seed=9, scale=1.0)
    ids = [f"d{i:03d}" for i in range(300)]
    index = OpenSearchIndex(_name(), TOKENS, query_form="neural_sparse", two_phase=True, delete_on_close=True)
    index.add(ids, docs)
    embedded = EmbeddedIndex(precision="opensearch")
    embedded.add(ids, docs)
    got, full = index.search(queries, 10), embedded.search(queries, 300)
    index.close()
    for q in range(len(queries)):
        exact = dict(zip(*[full[0][q], full[1][q]]))
        for doc_id, score in zip(got[0][q], got[1][q]):
            assert score == pytest.approx(exact[doc_id], rel=1e-5)

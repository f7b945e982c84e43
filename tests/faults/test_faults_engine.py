"""OpenSearch engine faults, injected by a proxy on 127.0.0.1 in front of the osmem-server: dropped
connections, delays, 429 / 503 answers and partial _bulk / _msearch failures. Bounded retries
with backoff recover from transient faults; persistent ones end in an error that counts what failed."""

from __future__ import annotations

import logging
import socket
import uuid

import numpy as np
import pytest
import scipy.sparse as sp

from sparse.errors import UserError
from sparse.modeling.vectors import SparseBatch
from sparse.retrieval import EmbeddedIndex
from sparse.retrieval.opensearch import OpenSearchIndex

TOKENS = [f"t{i}" for i in range(64)]


def _batch(n, seed, density=0.2):
    m = sp.random(n, len(TOKENS), density=density, random_state=seed, format="csr", dtype=np.float64) * 3
    return SparseBatch.from_csr(m.astype(np.float32))


DOCS = _batch(120, 1)
IDS = [f"d{i:03d}" for i in range(len(DOCS))]
QUERIES = _batch(12, 2, density=0.1)


def _index(url, **kw):
    opts = dict(bulk_size=40, max_retries=3, backoff=0.01, timeout=5, delete_on_close=True, search_batch=6)
    opts.update(kw)
    return OpenSearchIndex(f"fault-{uuid.uuid4().hex[:8]}", TOKENS, url=url, **opts)


def _expected(k=10):
    emb = EmbeddedIndex(precision="opensearch")
    emb.add(IDS, DOCS)
    return emb.search(QUERIES, k)


def test_transient_ingest_faults_are_retried(fault_proxy, caplog):
    fault_proxy.plan("_bulk", ["503", "drop", "delay:0.3", "429", "partial", "partial"])
    index = _index(fault_proxy.url)
    with caplog.at_level(logging.WARNING, logger="sparse.retrieval.opensearch"):
        index.add(IDS, DOCS)
    assert index.count() == len(IDS)
    assert len(fault_proxy.injected) == 6
    assert sum("retrying" in r.getMessage() for r in caplog.records) >= 5
    assert index.search(QUERIES, 10)[0] == _expected()[0]
    index.close()


def test_transient_search_faults_are_retried(fault_proxy):
    index = _index(fault_proxy.url)
    index.add(IDS, DOCS)
    fault_proxy.plan("_msearch", ["429", "drop", "partial", "503", "partial"])
    got = index.search(QUERIES, 10)
    assert len(fault_proxy.injected) == 5
    want = _expected()
    assert got[0] == want[0]
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    index.close()


def test_persistent_bulk_rejections_say_how_many_documents_failed(fault_proxy):
    fault_proxy.plan("_bulk", ["partial"] * 20)
    index = _index(fault_proxy.url, max_retries=2)
    with pytest.raises(UserError, match=r"failed to index \(d\d+: 429"):
        index.add(IDS, DOCS)
    index.close()


def test_persistent_bulk_errors_stop_with_the_count_not_sent(fault_proxy):
    index = _index(fault_proxy.url, max_retries=2)
    index.add(IDS[:40], DOCS.take(list(range(40))))
    fault_proxy.plan("_bulk", ["503"] * 3)
    with pytest.raises(UserError, match=r"bulk ingest failed with 503.*ingest stopped with 80 of 80 documents not "
                                        r"sent.*incomplete"):
        index.add(IDS[40:], DOCS.take(list(range(40, 120))))
    assert len(fault_proxy.injected) == 3  # 1 try + 2 retries, then it gives up
    index.close()


def test_persistent_search_rejections_say_how_many_queries_failed(fault_proxy):
    index = _index(fault_proxy.url, max_retries=1)
    index.add(IDS, DOCS)
    fault_proxy.plan("_msearch", ["partial"] * 4)
    with pytest.raises(UserError, match=r"search failed for 1 of \d+ queries after 1 retries .*no results are scored"):
        index.search(QUERIES, 10)
    index.close()


def test_search_connection_lost_says_how_many_queries_were_not_searched(fault_proxy):
    index = _index(fault_proxy.url, max_retries=1)
    index.add(IDS, DOCS)
    fault_proxy.plan("_msearch", ["429", "pass", "drop", "drop"])  # the 1st batch recovers, the 2nd gives up
    with pytest.raises(UserError, match=r"cannot reach OpenSearch.*6 of 12 queries were not searched"):
        index.search(QUERIES, 10)
    index.close()


def test_slow_answer_times_out_and_is_retried(fault_proxy):
    index = _index(fault_proxy.url, timeout=0.5)
    index.add(IDS, DOCS)
    fault_proxy.plan("_msearch", ["delay:1.5"])
    assert index.search(QUERIES, 10)[0] == _expected()[0]
    index.close()


def test_unreachable_server_is_bounded_and_clear():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(UserError, match=rf"cannot reach OpenSearch at http://127\.0\.0\.1:{port}"):
        _index(f"http://127.0.0.1:{port}", max_retries=2)


def test_tls_verification_is_on_by_default(monkeypatch):
    from sparse.retrieval.opensearch import connection_settings

    monkeypatch.delenv("OPENSEARCH_VERIFY_CERTS", raising=False)
    assert connection_settings("https://127.0.0.1:9200")["verify_certs"] is True
    assert connection_settings("https://127.0.0.1:9200", verify_certs=False)["verify_certs"] is False

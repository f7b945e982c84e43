"""Hard-negative mining on a SciFact subset with the offline SPLADE model (and BM25), against
independent brute-force rankings computed here: the mined negatives of a query must be the
independent top-k minus its judged documents, in rank order (ties by document id).

SPLADE: ``IndependentSplade`` (conftest: the HF masked LM one text at a time, idf.json by hand).
BM25: Lucene's formula by hand over the bm25s tokenizer's tokens (English stop words, PyStemmer's
English Snowball stemmer), with the default k1, b (0.9, 0.4) and with others given on the command line.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections import Counter

import numpy as np
import pytest

from sparse.datagen.args import MiningArguments, parse_script_args
from sparse.datagen.mining import run_mining

N_QUERIES, N_EXTRA_DOCS = 20, 80  # train queries of the subset, random other documents
TOP_K = 30
MAX_LENGTH = 128


@pytest.fixture(scope="module")
def scifact_subset(scifact_dir, tmp_path_factory, random_subset):
    root = tmp_path_factory.mktemp("beir")
    random_subset(scifact_dir, root / "scifact_sub", n_queries=N_QUERIES, n_extra_docs=N_EXTRA_DOCS)
    return str(root)


@pytest.fixture(scope="module")
def subset_data(scifact_subset, beir_files):
    """The subset read here (not through the toolkit): doc ids/texts, queries with qrels, qrels."""
    return beir_files(os.path.join(scifact_subset, "scifact_sub"))


def _mine(tmp, beir_root, *extra):
    # one corpus-vector cache for the module (next to the subset): later tests reuse the encoding
    argv = ["--beir_dir", beir_root, "--beir_datasets", "scifact_sub", "--output", str(tmp / "out"),
            "--cache_dir", os.path.join(beir_root, "cache"), *extra]
    cfg, args = parse_script_args(argv, MiningArguments)
    return run_mining(cfg, args, progress=False), str(tmp / "out")


def expected_rows(data, score_rows, ranking, negatives_per_query=None, min_negatives=1):
    """{qid: (negative ids, {doc id: score})} of the queries that keep rows, the (qid, positive)
    pairs in output order, and the judged documents found in the candidates."""
    kept, pairs, found = {}, [], 0
    for qid, row in zip(data["qids"], score_rows):
        top, _ = ranking.rank(data["doc_ids"], row, TOP_K)
        judged = data["qrels"][qid]
        found += sum(1 for d in top if d in judged)
        negs = [d for d in top if d not in judged][:negatives_per_query]
        positives = sorted(d for d, g in judged.items() if g > 0 and d in data["text"])
        if not positives or len(negs) < min_negatives:
            continue
        kept[qid] = (negs, dict(zip(data["doc_ids"], map(float, row))))
        pairs += [(qid, p) for p in positives]
    return kept, pairs, found


def check_rows(ds, data, kept, pairs, ranking):
    assert {"query", "pos", "negs", "query_id", "pos_id", "neg_ids"} <= set(ds.column_names)
    assert [(r["query_id"], r["pos_id"]) for r in ds] == pairs  # one row per (query, positive), by id
    for row in ds:
        want_negs, score_of = kept[row["query_id"]]
        ranking.check(row["neg_ids"], want_negs, score_of, where=f"query {row['query_id']}")
        assert row["negs"] == [data["text"][d] for d in row["neg_ids"]]
        assert row["pos"] == data["text"][row["pos_id"]] and row["query"] == data["queries"][row["query_id"]]


def test_sparse_mining_on_scifact_subset(tmp_path, scifact_subset, subset_data, splade_path, idf_path,
                                         independent_splade, ranking):
    from datasets import load_from_disk

    from sparse.errors import UserError

    stats, out = _mine(tmp_path, scifact_subset, "--model_name_or_path", splade_path, "--idf_path", idf_path,
                       "--max_seq_length", str(MAX_LENGTH), "--top_k", str(TOP_K))
    ds = load_from_disk(out)
    scores = independent_splade.scores([subset_data["queries"][q] for q in subset_data["qids"]],
                                       [subset_data["text"][d] for d in subset_data["doc_ids"]], MAX_LENGTH)
    kept, pairs, found = expected_rows(subset_data, scores, ranking)
    check_rows(ds, subset_data, kept, pairs, ranking)
    assert len(kept) == N_QUERIES and max(len(n) for n, _ in kept.values()) >= TOP_K - 3  # k cuts the ranking
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["rows"] == len(ds) == stats["rows"] == len(pairs)
    assert saved["queries_kept"] == len(kept) and saved["queries_in"] == N_QUERIES and saved["queries_dropped"] == 0
    assert saved["positives_in_candidates"] == found
    assert saved["mean_negatives"] == pytest.approx(np.mean([len(kept[q][0]) for q, _ in pairs]), abs=1e-3)

    # a second run reads the cached corpus vectors and refuses to overwrite without being told
    with pytest.raises(UserError, match="overwrite"):
        _mine(tmp_path, scifact_subset, "--model_name_or_path", splade_path)
    _mine(tmp_path, scifact_subset, "--model_name_or_path", splade_path, "--idf_path", idf_path,
          "--max_seq_length", str(MAX_LENGTH), "--top_k", str(TOP_K), "--skip_top", "3", "--negatives_per_query",
          "10", "--sampling", "random", "--seed", "3", "--overwrite", "true")
    sampled = load_from_disk(out)
    full = {r["query_id"]: r["neg_ids"] for r in ds}
    assert [(r["query_id"], r["pos_id"]) for r in sampled] == pairs
    for row in sampled:
        # documented draw: 10 of the candidates below the skipped top 3, by a generator seeded with
        # (seed, crc32(query id)), kept in rank order
        pool = full[row["query_id"]][3:]
        rng = np.random.default_rng([3, zlib.crc32(row["query_id"].encode("utf-8"))])
        assert row["neg_ids"] == [pool[i] for i in np.sort(rng.choice(len(pool), size=10, replace=False))]


def bm25_scores(query_texts, doc_texts, k1, b):
    """Lucene BM25 by hand: sum over query tokens (repeats count) of
    idf(t) * tf / (tf + k1 * (1 - b + b * dl / avgdl)), idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    docs = bm25s.tokenize(list(doc_texts), stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)
    queries = bm25s.tokenize(list(query_texts), stopwords="en", stemmer=stemmer, return_ids=False,
                             show_progress=False)
    n, avgdl = len(docs), sum(len(d) for d in docs) / len(docs)
    tfs = [Counter(d) for d in docs]
    df = Counter(t for d in docs for t in set(d))
    out = np.zeros((len(queries), n))
    for i, q in enumerate(queries):
        for j, tf_doc in enumerate(tfs):
            norm = k1 * (1 - b + b * len(docs[j]) / avgdl)
            out[i, j] = sum(math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) * tf_doc[t] / (tf_doc[t] + norm)
                            for t in q if t in tf_doc)
    return out


@pytest.mark.parametrize("k1,b", [(None, None), (1.5, 0.75)], ids=["defaults", "k1=1.5,b=0.75"])
def test_bm25_mining_on_scifact_subset(tmp_path, scifact_subset, subset_data, ranking, k1, b):
    from datasets import load_from_disk

    given = [] if k1 is None else ["--bm25_k1", str(k1), "--bm25_b", str(b)]
    stats, out = _mine(tmp_path, scifact_subset, "--miner", "bm25", "--top_k", str(TOP_K),
                       "--negatives_per_query", "12", "--min_negatives", "8", *given)
    scores = bm25_scores([subset_data["queries"][q] for q in subset_data["qids"]],
                         [subset_data["text"][d] for d in subset_data["doc_ids"]],
                         *((0.9, 0.4) if k1 is None else (k1, b)))  # the documented defaults: Anserini's
    kept, pairs, found = expected_rows(subset_data, scores, ranking, negatives_per_query=12, min_negatives=8)
    check_rows(load_from_disk(out), subset_data, kept, pairs, ranking)
    assert len(kept) >= N_QUERIES // 2
    assert stats["queries_kept"] == len(kept) and stats["queries_kept"] + stats["queries_dropped"] == N_QUERIES
    assert stats["positives_in_candidates"] == found


def test_mining_errors(tmp_path, scifact_subset):
    from sparse.errors import UserError

    with pytest.raises(UserError, match="exactly one"):
        _mine(tmp_path, scifact_subset, "--miner", "bm25", "--beir_datasets", "a,b")
    with pytest.raises(UserError, match="split 'dev' is missing"):
        _mine(tmp_path, scifact_subset, "--miner", "bm25", "--split", "dev")


def test_opensearch_engine_mines_what_the_embedded_engine_mines(tmp_path, scifact_subset, splade_path, idf_path,
                                                                osmem_url):
    """Through a live osmem-server (rank_features, 9-bit weights) = embedded at OpenSearch precision."""
    from datasets import load_from_disk

    common = ["--model_name_or_path", splade_path, "--idf_path", idf_path, "--max_seq_length", str(MAX_LENGTH),
              "--top_k", "20"]
    _mine(tmp_path / "emb", scifact_subset, *common, "--index_precision", "opensearch")
    _mine(tmp_path / "os", scifact_subset, *common, "--engine", "opensearch", "--opensearch_url", osmem_url)
    emb, os_rows = load_from_disk(str(tmp_path / "emb" / "out")), load_from_disk(str(tmp_path / "os" / "out"))
    assert len(emb) > 0 and emb.to_list() == os_rows.to_list()

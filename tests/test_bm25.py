"""The toolkit's one BM25 (``sparse.retrieval.bm25``), the ``bm25`` teacher and the BM25 miner.

Checked against computations done here without the toolkit: bm25s's own ``BM25.get_scores``
over an index built here (bm25s tokenizer, PyStemmer's English stemmer, bm25s's English stop
words, Lucene k1/b), and BM25 values worked out by hand for a 3-document toy collection:

    score(q, d) = sum_{t in q} idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl)),
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

K1, B = 0.9, 0.4
TOY = {"a": "apple banana apple", "b": "banana cherry", "c": "cherry cherry cherry date"}


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory, beir_writer):
    root = tmp_path_factory.mktemp("toy") / "toy"
    return beir_writer(root, {d: {"title": "", "text": t} for d, t in TOY.items()}, {"q1": "apple cherry"},
                       {"q1": {"a": 1}}, split="train")


@pytest.fixture(scope="module")
def subset(scifact_dir, tmp_path_factory, random_subset, beir_files):
    """A SciFact subset read here: (dir, doc ids sorted, texts, query texts)."""
    root = tmp_path_factory.mktemp("bm25")
    path = random_subset(scifact_dir, root / "scifact_bm25", n_queries=12, n_extra_docs=60)
    data = beir_files(path)
    return path, data["doc_ids"], [data["text"][d] for d in data["doc_ids"]], [data["queries"][q] for q in data["qids"]]


def bm25s_scores(doc_texts, query_texts, k1=K1, b=B):
    """(n_queries, n_docs): bm25s's own get_scores over an index built here (stemmed, stop words)."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    model = bm25s.BM25(k1=k1, b=b, method="lucene")
    model.index(bm25s.tokenize(list(doc_texts), stopwords="en", stemmer=stemmer, show_progress=False),
                show_progress=False)
    queries = bm25s.tokenize(list(query_texts), stopwords="en", stemmer=stemmer, return_ids=False,
                             show_progress=False)
    return np.stack([model.get_scores(q) if q else np.zeros(len(doc_texts)) for q in queries])


def test_toy_collection_by_hand(toy_dir, tmp_path):
    """N = 3, |a| = 3, |b| = 2, |c| = 4, avgdl = 3; df(apple) = 1, df(cherry) = 2."""
    from sparse.retrieval.bm25 import BM25Index, BM25Params

    idx = BM25Index(list(TOY), list(TOY.values()), BM25Params(stemmer=None, stopwords=None), progress=False)
    idf_apple, idf_cherry = math.log(1 + 2.5 / 1.5), math.log(1 + 1.5 / 2.5)
    want = {"a": idf_apple * 2 / (2 + K1 * (1 - B + B * 3 / 3)),
            "b": idf_cherry * 1 / (1 + K1 * (1 - B + B * 2 / 3)),
            "c": idf_cherry * 3 / (3 + K1 * (1 - B + B * 4 / 3))}
    got = idx.score_pairs(["apple cherry"] * 3, list(TOY.values()))
    np.testing.assert_allclose(got, [want[d] for d in TOY], rtol=1e-12)
    ids, scores = idx.search(["apple cherry", "kiwi"], k=2)
    assert ids == [["a", "c"], []]
    np.testing.assert_allclose(scores[0], [want["a"], want["c"]], rtol=1e-6)
    # a text outside the collection: its own length and tf, the collection's N, df and avgdl;
    # a token the collection never holds has df = 0
    got = idx.score_pairs(["apple kiwi", "apple kiwi"], ["apple apple kiwi kiwi kiwi", "banana"])
    norm = K1 * (1 - B + B * 5 / 3)
    want_new = idf_apple * 2 / (2 + norm) + math.log(1 + 3.5 / 0.5) * 3 / (3 + norm)
    np.testing.assert_allclose(got, [want_new, 0.0], rtol=1e-12)
    # equal scores: ascending doc id, also across the k-th place
    same = BM25Index(["z", "m", "a", "b"], ["same words", "same words", "same words", "other words"],
                     BM25Params(stemmer=None, stopwords=None), progress=False)
    assert same.search(["same"], k=2)[0] == [["a", "m"]]
    assert same.search(["same words"], k=4)[0] == [["a", "m", "z", "b"]]


def test_index_search_and_pairs_equal_bm25s(subset, tmp_path, ranking):
    from sparse.retrieval.bm25 import BM25Index

    _, ids, texts, queries = subset
    want = bm25s_scores(texts, queries)
    idx = BM25Index(ids, texts, cache_dir=str(tmp_path), progress=False)
    assert not idx.cache_hit
    got_ids, got_scores = idx.search(queries, k=10)
    for i, q in enumerate(queries):
        want_ids, _ = ranking.rank(ids, want[i], 10)
        ranking.check(got_ids[i], want_ids, dict(zip(ids, want[i])), got_scores[i], where=q)
        np.testing.assert_allclose(idx.score_pairs([q] * len(texts), texts), want[i], rtol=1e-5, atol=1e-9)
    # cached: the second build loads the entry and answers the same; other settings, another entry
    again = BM25Index(ids, texts, cache_dir=str(tmp_path), progress=False)
    assert again.cache_hit and again.entry == idx.entry
    assert again.search(queries, k=10) == (got_ids, got_scores)
    from sparse.retrieval.bm25 import BM25Params

    other = BM25Index(ids, texts, BM25Params(k1=1.2), cache_dir=str(tmp_path), progress=False)
    assert not other.cache_hit and other.entry != idx.entry


def test_bm25_teacher_online_offline(subset, toy_dir, tmp_path):
    """From ``kd_ensemble_teacher_kwargs`` (a BEIR dir as its model id), from the training documents
    (no model id), and from ``--teachers ...,bm25`` (``parse_teacher_specs``)."""
    from datasets import Dataset

    from sparse.datagen.args import parse_teacher_specs
    from sparse.errors import ConfigError
    from sparse.teachers import build_ensemble, minmax_per_row
    from sparse.teachers.bm25 import fit_on_training_data

    path, ids, texts, queries = subset
    ens = build_ensemble({"types": ["bm25"], "model_ids": [path], "teacher_options": [{"cache_dir": str(tmp_path)}],
                          "score_scale": 1.0})
    (teacher,) = ens.teachers
    want = bm25s_scores(texts, queries[:3])
    for i in range(3):
        np.testing.assert_allclose(teacher.score_pairs([queries[i]] * len(texts), texts).numpy(), want[i],
                                   rtol=1e-5, atol=1e-6)
    # per-query min-max normalization is the ensemble's, as for every teacher
    groups = ens.score_groups(queries[:2], texts[:4] + texts[4:8])
    raw = np.stack([want[0][:4], want[1][4:8]])
    np.testing.assert_allclose(groups.numpy(), minmax_per_row(torch.tensor(raw)).numpy(), atol=1e-5)

    # no collection: the statistics of the distinct training documents
    ens = build_ensemble({"types": ["bm25"], "model_ids": [None],
                          "teacher_options": [{"stemmer": None, "stopwords": None, "cache_dir": str(tmp_path)}]})
    rows = Dataset.from_list([{"query": "q", "pos": TOY["a"], "negs": [TOY["b"], TOY["c"]]},
                              {"query": "q", "pos": TOY["c"], "negs": [TOY["a"]]}])
    assert fit_on_training_data(ens, [rows]) == 1
    assert ens.teachers[0].index.n_docs == 3 and ens.teachers[0].index.avgdl == 3.0
    idf_apple = math.log(1 + 2.5 / 1.5)
    np.testing.assert_allclose(ens.teachers[0].score_pairs(["apple"], [TOY["a"]]).numpy(),
                               [idf_apple * 2 / (2 + K1)], rtol=1e-6)

    assert parse_teacher_specs(["dense:m", "bm25", f"bm25:{toy_dir}"]) == [("dense", "m"), ("bm25", None),
                                                                          ("bm25", toy_dir)]
    with pytest.raises(ConfigError):
        parse_teacher_specs(["dense"])
    with pytest.raises(ConfigError, match="unknown options"):
        build_ensemble({"types": ["bm25"], "model_ids": [toy_dir], "teacher_options": [{"k_1": 2}]})


def test_bm25_miner_with_pystemmer(subset, tmp_path, ranking):
    """``demo_train_data.py --miner bm25`` with PyStemmer installed (it used to hand bm25s a
    one-word stemmer: TypeError), with non-default k1 / b given as flags."""
    from datasets import load_from_disk

    from sparse.datagen.args import MiningArguments, parse_script_args
    from sparse.datagen.mining import run_mining

    path, ids, texts, queries = subset
    argv = ["--beir_dir", os.path.dirname(path), "--beir_datasets", os.path.basename(path), "--miner", "bm25",
            "--output", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), "--top_k", "8",
            "--bm25_k1", "1.2", "--bm25_b", "0.75"]
    cfg, args = parse_script_args(argv, MiningArguments)
    run_mining(cfg, args, progress=False)
    rows = load_from_disk(str(tmp_path / "out"))
    assert len(rows) > 0
    with open(os.path.join(path, "qrels", "train.tsv"), encoding="utf-8") as f:
        judged = {}
        for line in f.read().splitlines()[1:]:
            q, d, _ = line.split("\t")
            judged.setdefault(q, set()).add(d)
    by_text = dict(zip(queries, range(len(queries))))
    want = bm25s_scores(texts, queries, k1=1.2, b=0.75)
    for row in rows:
        i = by_text[row["query"]]
        top, _ = ranking.rank(ids, want[i], 8)
        expected = [d for d in top if d not in judged[row["query_id"]]]
        ranking.check(row["neg_ids"], expected, dict(zip(ids, want[i])), where=row["query_id"])

"""Long documents in token windows: where windows fall, their vectors, max pooling, best-window
search and evaluation, each against a computation made here without the windowing code."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from sparse.corpus import corpus_key, encode_corpus
from sparse.evaluation.beir_eval import EvalOptions, evaluate_dataset
from sparse.evaluation.runner import main as evaluate_main
from sparse.modeling.encoder import SparseEncoder
from sparse.modeling.vectors import SparseBatch
from sparse.modeling.windows import WindowedVectors, encode_windows, window_spans
from sparse.retrieval.embedded import EmbeddedIndex
from sparse.retrieval.windows import search_best_window, window_ids

# whole words of the tiny vocabulary: one token each, so a window's text is its words joined
WORDS = ["the", "cat", "sat", "on", "a", "mat", "bird", "flew", "over", "house", "red", "dog", "blue", "green",
         "big", "small", "is"]


def long_doc(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [WORDS[int(i)] for i in rng.integers(0, len(WORDS), n)]


@pytest.fixture
def encoder(tiny_bert):
    mlm, tok = tiny_bert
    return SparseEncoder(mlm, tok)


def test_window_spans_cover_a_document_with_overlap_and_a_short_last_window():
    assert window_spans(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]  # overlap of 1, last window ends at 10
    assert window_spans(11, 4, 3) == [(0, 4), (3, 7), (6, 10), (9, 11)]  # a short last window
    assert window_spans(9, 4, 4) == [(0, 4), (4, 8), (8, 9)]  # touching windows
    assert window_spans(4, 4, 2) == [(0, 4)]  # a document that fits is one window
    assert window_spans(0, 4, 2) == [(0, 0)]  # an empty document still gets a vector
    for n, content, stride in ((37, 6, 4), (50, 8, 8), (5, 8, 3)):
        spans = window_spans(n, content, stride)
        covered = sorted({t for s, e in spans for t in range(s, e)})
        assert covered == list(range(n)) and all(e - s <= content for s, e in spans)
        assert [s for s, _ in spans] == list(range(0, stride * len(spans), stride))
    with pytest.raises(Exception, match="skips tokens"):
        window_spans(10, 4, 5)


def test_window_vectors_equal_each_window_encoded_as_text(encoder):
    words = long_doc(23, seed=1)
    length, stride = 8, 4  # 6 text tokens next to [CLS] and [SEP], overlap of 2
    got = encode_windows(encoder, [" ".join(words), "cat"], length, stride, batch_size=3)
    assert got.counts.tolist() == [6, 1]  # starts 0, 4, ..., 20: the window at 16 ends at 22, short of 23
    starts = [0, 4, 8, 12, 16, 20]
    want = encoder.encode_documents([" ".join(words[s:s + 6]) for s in starts] + ["cat"], max_length=64)
    np.testing.assert_array_equal(got.windows.indptr, want.indptr)
    np.testing.assert_array_equal(got.windows.indices, want.indices)
    np.testing.assert_allclose(got.windows.values, want.values, rtol=1e-6)
    # the first window is the document truncated at the window length
    truncated = encoder.encode_documents([" ".join(words)], max_length=length)
    np.testing.assert_allclose(got.windows.to_dense()[0], truncated.to_dense()[0], rtol=1e-6)


def test_max_pool_is_the_elementwise_max_of_the_windows(encoder):
    texts = [" ".join(long_doc(n, seed=n)) for n in (30, 3, 17, 0)]
    windowed = encode_windows(encoder, texts, 8, 5)
    dense = windowed.windows.to_dense()
    owners = windowed.owners()
    want = torch.stack([dense[torch.from_numpy(owners == i)].amax(dim=0) for i in range(len(texts))])
    assert windowed.counts.tolist() == [6, 1, 4, 1]  # 30 and 17 tokens: windows start every 5, hold 6
    torch.testing.assert_close(windowed.max_pool().to_dense(), want)
    # the cache's reordering keeps each document with its windows
    order = [2, 0, 3, 1]
    taken = windowed.take(order)
    torch.testing.assert_close(taken.max_pool().to_dense(), want[order])


def test_best_window_search_equals_brute_force_max_over_windows():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 6, 40)
    vocab = 30
    dense = rng.random((int(counts.sum()), vocab)) * (rng.random((int(counts.sum()), vocab)) < 0.2)
    dense[3] = dense[4]  # a tie between two windows
    windows = SparseBatch.from_dense(dense.astype(np.float32))
    doc_ids = [f"d{i:02d}" for i in range(len(counts))]
    queries = SparseBatch.from_dense((rng.random((6, vocab)) * (rng.random((6, vocab)) < 0.3)).astype(np.float32))
    index = EmbeddedIndex()
    index.add(window_ids(doc_ids, counts), windows)
    k = 7
    got_ids, got_scores = search_best_window(index, queries, k, int(counts.max()))
    owner = np.repeat(np.arange(len(counts)), counts)
    window_scores = queries.to_dense().numpy().astype(np.float64) @ windows.to_dense().numpy().astype(np.float64).T
    for qi in range(len(queries)):
        best = {doc_ids[d]: window_scores[qi][owner == d].max() for d in range(len(counts))}
        ranked = sorted(((d, s) for d, s in best.items() if s > 0), key=lambda kv: (-kv[1], kv[0]))[:k]
        assert got_ids[qi] == [d for d, _ in ranked]
        np.testing.assert_allclose(got_scores[qi], [s for _, s in ranked], rtol=1e-5)


def test_windowed_vectors_get_their_own_cache_entries(encoder, tmp_path):
    ids, texts = ["a", "b"], [" ".join(long_doc(20, 3)), "cat sat"]
    keys = {corpus_key("fp", ids, texts, 8), corpus_key("fp", ids, texts, 8, window=(8, 6)),
            corpus_key("fp", ids, texts, 8, window=(8, 3)), corpus_key("fp", ids, texts, 8, window=(10, 3))}
    assert len(keys) == 4
    cache = str(tmp_path / "cache")
    plain = encode_corpus(encoder, ids, texts, cache, max_length=8, progress=False)
    windowed = encode_corpus(encoder, ids, texts, cache, window=(8, 3), progress=False)
    assert plain.entry != windowed.entry and os.path.basename(windowed.entry).startswith("windows-")
    assert isinstance(windowed.vectors, WindowedVectors) and windowed.vectors.counts.tolist() == [6, 1]
    again = encode_corpus(encoder, ids, texts, cache, window=(8, 3), progress=False)
    assert again.cache_hit and again.entry == windowed.entry
    torch.testing.assert_close(again.vectors.windows.to_dense(), windowed.vectors.windows.to_dense())


@pytest.fixture
def long_beir(tmp_path, beir_writer):
    corpus = {f"d{i}": {"title": "", "text": " ".join(long_doc(6 + 7 * i, seed=10 + i))} for i in range(8)}
    queries = {"q1": "bird flew over the house", "q2": "red dog", "q3": "small green mat"}
    qrels = {"q1": {"d3": 1}, "q2": {"d5": 1, "d1": 1}, "q3": {"d7": 2}}
    return beir_writer(tmp_path / "beir" / "long", corpus, queries, qrels), corpus, queries


@pytest.mark.parametrize("combine", ["max_window", "max_pool"])
def test_windowed_evaluation_equals_an_independent_ranking(encoder, long_beir, tmp_path, combine):
    root, corpus, queries = long_beir
    length, stride, top_k = 8, 4, 5
    opts = EvalOptions(top_k=top_k, progress=False, window_length=length, window_stride=stride,
                       window_combine=combine, cache_dir=str(tmp_path / "cache"))
    result = evaluate_dataset(encoder, "long", str(root), str(tmp_path / "out"), opts)
    run = {}
    with open(tmp_path / "out" / "runs" / "long.trec") as f:
        for line in f:
            q, _, d, _, s, _ = line.split()
            run.setdefault(q, []).append((d, float(s)))
    # independently: every window's words encoded as text, dense float64 scores
    qvec = encoder.encode_queries([queries[q] for q in sorted(queries)]).to_dense().double()
    for qi, qid in enumerate(sorted(queries)):
        scores = {}
        for did, doc in corpus.items():
            words = doc["text"].split()
            windows, start = [], 0
            while True:  # windows of 6 words (8 tokens with [CLS] and [SEP]) until one reaches the end
                windows.append(" ".join(words[start:start + length - 2]))
                if start + length - 2 >= len(words):
                    break
                start += stride
            dense = encoder.encode_documents(windows, max_length=64).to_dense().double()
            if combine == "max_window":
                scores[did] = float((dense @ qvec[qi]).max())
            else:
                scores[did] = float(dense.amax(dim=0) @ qvec[qi])
        ranked = sorted(((d, s) for d, s in scores.items() if s > 0), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        assert [d for d, _ in run[qid]] == [d for d, _ in ranked], qid
        np.testing.assert_allclose([s for _, s in run[qid]], [s for _, s in ranked], rtol=1e-5, atol=2e-6)
    # the explain file explains each hit by the vector that scored it (max_window: its best window)
    with open(tmp_path / "out" / "runs" / "long.explain.jsonl") as f:
        explained = [json.loads(line) for line in f]
    assert [e["query_id"] for e in explained] == sorted(queries)
    for e in explained:
        assert [h["doc_id"] for h in e["hits"]] == [d for d, _ in run[e["query_id"]]][:opts.explain_top_k]
        for hit in e["hits"]:
            assert sum(q * d for _, q, d in hit["tokens"]) == pytest.approx(hit["score"], rel=1e-5)
    assert result["windows"] == {"length": length, "stride": stride, "combine": combine}
    assert result["counts"]["windows"] > result["counts"]["documents"]
    assert result["timings"]["encode_corpus_s"] > 0
    assert result["options"]["window_combine"] == combine


def test_window_keys_name_the_output_folder_and_are_checked_before_writing(tiny_checkpoint_factory, tmp_path,
                                                                           long_beir, capsys):
    tiny_checkpoint_factory(tmp_path, seed=0)
    base = ["--model_name_or_path", str(tmp_path / "model"), "--beir_datasets", "long", "--beir_dir",
            str(tmp_path / "beir"), "--cache_dir", str(tmp_path / "cache")]
    for bad, message in ((["--doc_window_length", "8", "--doc_window_stride", "7"], "would skip tokens"),
                         (["--doc_window_stride", "4"], "needs doc_window_length")):
        out = tmp_path / "bad"
        from sparse.config import run_cli

        with pytest.raises(SystemExit) as exit_info:
            run_cli(evaluate_main, base + ["--output_dir", str(out)] + bad)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
        assert not out.exists()
    out = tmp_path / "ok"
    evaluate_main(base + ["--output_dir", str(out), "--doc_window_length", "8", "--doc_window_combine", "max_pool"])
    result = json.loads((out / "beir_eval_win8_pool" / "results" / "long.json").read_text())
    assert result["windows"] == {"length": 8, "stride": 6, "combine": "max_pool"}
    assert result["config"]["windows"]["doc_window_length"] == 8

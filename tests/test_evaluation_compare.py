"""``sparse compare``: the page's numbers equal the run files, contributions sum to the scores, the
summary, bad input, and the page in headless Chromium (100 queries, ready in under 2 s)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import pytrec_eval

from sparse.commands import main as sparse_main
from sparse.evaluation.runner import main as evaluate_main

WORDS = ["the", "cat", "sat", "on", "a", "mat", "bird", "flew", "over", "house", "red", "dog", "blue", "green",
         "big", "small", "is"]
N_QUERIES, N_DOCS, TOP_K, EXPLAIN = 100, 40, 20, 10
LOAD_LIMIT_MS = 2000.0  # the target for a 100-query page


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_checkpoint_factory, beir_writer):
    """Two tiny models (seeds 0 and 1) evaluated on a 100-query toy dataset; and a third folder
    evaluated on a subset of the queries."""
    root = tmp_path_factory.mktemp("compare")
    rng = np.random.default_rng(0)
    corpus = {f"d{i:02d}": {"title": "", "text": " ".join(rng.choice(WORDS, int(rng.integers(3, 12))))}
              for i in range(N_DOCS)}
    queries = {f"q{i:03d}": " ".join(rng.choice(WORDS, int(rng.integers(2, 5)))) for i in range(N_QUERIES)}
    qrels = {q: {f"d{int(j):02d}": int(rng.integers(1, 3)) for j in rng.choice(N_DOCS, 2, replace=False)}
             for q in queries}
    beir_writer(root / "beir" / "toy", corpus, queries, qrels)
    few = sorted(queries)[:5]
    beir_writer(root / "beir" / "toyfew", corpus, {q: queries[q] for q in few}, {q: qrels[q] for q in few})
    out = {}
    for label, seed, dataset in (("a", 0, "toy"), ("b", 1, "toy"), ("few", 1, "toyfew")):
        tiny_checkpoint_factory(root / label, seed=seed)
        evaluate_main(["--model_name_or_path", str(root / label / "model"), "--beir_datasets", dataset,
                       "--beir_dir", str(root / "beir"), "--output_dir", str(root / label / "eval"),
                       "--cache_dir", str(root / "cache"), "--eval_max_seq_length", "32",
                       "--eval_top_k", str(TOP_K), "--explain_top_k", str(EXPLAIN)])
        out[label] = root / label / "eval" / "beir_eval_32"
    sparse_main(["compare", str(out["a"]), str(out["b"]), "--output", str(root / "report"),
                 "--label_a", "zero-shot", "--label_b", "fine-tuned"])
    return {"root": root, "qrels": qrels, "corpus": corpus, **out}


def page_data(path) -> dict:
    text = open(path, encoding="utf-8").read()
    return json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', text, re.S).group(1))


def read_run(path) -> dict:
    run = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            qid, _, did, rank, score, _ = line.split()
            run.setdefault(qid, []).append((int(rank), did, float(score)))
    return {q: sorted(hits) for q, hits in run.items()}


def test_page_numbers_equal_the_run_files(runs):
    data = page_data(runs["root"] / "report" / "compare.html")
    assert data["labels"] == ["zero-shot", "fine-tuned"] and len(data["queries"]) == N_QUERIES
    for side, folder in (("a", runs["a"]), ("b", runs["b"])):
        trec = read_run(folder / "runs" / "toy.trec")
        evaluator = pytrec_eval.RelevanceEvaluator(runs["qrels"], {"ndcg_cut.10", "recall.100"})
        per_query = evaluator.evaluate({q: {d: s for _, d, s in hits} for q, hits in trec.items()})
        for row in data["queries"]:
            hits = data["details"][row["id"]][side]
            want = trec.get(row["id"], [])[:EXPLAIN]
            assert [(h["rank"], h["doc_id"]) for h in hits] == [(r, d) for r, d, _ in want]
            np.testing.assert_allclose([h["score"] for h in hits], [s for _, _, s in want], atol=1e-6)
            assert row[side]["NDCG@10"] == pytest.approx(per_query[row["id"]]["ndcg_cut_10"], abs=1e-12)
            assert row[side]["Recall@100"] == pytest.approx(per_query[row["id"]]["recall_100"], abs=1e-12)
        result = json.loads((folder / "results" / "toy.json").read_text())
        mean = np.mean([row[side]["NDCG@10"] for row in data["queries"]])
        assert mean == pytest.approx(result["metrics"]["NDCG@10"], abs=1e-12)
        assert data["means"][0 if side == "a" else 1]["NDCG@10"] == result["metrics"]["NDCG@10"]
    deltas = [r["delta"] for r in data["queries"]]
    assert deltas == sorted(deltas, reverse=True)
    assert all(r["delta"] == pytest.approx(r["b"]["NDCG@10"] - r["a"]["NDCG@10"]) for r in data["queries"])
    c = data["counts"]
    assert c["gains"] > 0 and c["losses"] > 0 and c["gains"] + c["losses"] + c["ties"] == N_QUERIES
    assert all(data["details"][q]["judged"] == runs["qrels"][q] for q in runs["qrels"])


def test_contributions_sum_to_the_score_and_are_the_vectors_weights(runs):
    from sparse.modeling.encoder import SparseEncoder

    data = page_data(runs["root"] / "report" / "compare.html")
    checked = 0
    for row in data["queries"]:
        for side in ("a", "b"):
            for hit in data["details"][row["id"]][side]:
                total = sum(q * d for _, q, d in hit["tokens"])
                assert total == pytest.approx(hit["score"], rel=1e-5), (row["id"], hit["doc_id"])
                products = [q * d for _, q, d in hit["tokens"]]
                assert products == sorted(products, reverse=True)
                checked += 1
    assert checked > N_QUERIES
    # the tokens and weights are the model's: query tokens (binary weights, no IDF) found in the document vector
    encoder = SparseEncoder.from_pretrained(str(runs["root"] / "b" / "model"))
    qid = data["queries"][0]["id"]
    hit = data["details"][qid]["b"][0]
    doc = encoder.encode_documents([runs["corpus"][hit["doc_id"]]["text"]], max_length=32)
    query = encoder.encode_queries([row["query"] for row in data["queries"] if row["id"] == qid])
    ids, weights = doc.row(0)
    doc_weights = {encoder.id_to_token[i]: w for i, w in zip(ids.tolist(), weights.tolist())}
    query_tokens = {encoder.id_to_token[i]: w for i, w in zip(*map(np.ndarray.tolist, query.row(0)))}
    assert {t for t, _, _ in hit["tokens"]} == set(doc_weights) & set(query_tokens)
    for token, wq, wd in hit["tokens"]:
        assert wq == pytest.approx(query_tokens[token]) and wd == pytest.approx(doc_weights[token], rel=1e-5)


def test_summary_lists_means_gains_and_losses_and_links_the_page(runs):
    text = (runs["root"] / "report" / "compare.md").read_text()
    data = page_data(runs["root"] / "report" / "compare.html")
    assert "[compare.html](compare.html)" in text
    for mean in data["means"]:
        assert f"{mean['NDCG@10']:.4f}" in text
    best, worst = data["queries"][0], data["queries"][-1]
    gains, losses = text.split("## Largest gains")[1].split("## Largest losses")
    assert f"| {best['id']} |" in gains and f"| {worst['id']} |" in losses
    assert f"{data['counts']['gains']} gained, {data['counts']['losses']} lost" in text


def test_bad_input_is_one_error_and_writes_nothing(runs, capsys):
    root = runs["root"]

    def fails(argv, message):
        with pytest.raises(SystemExit) as info:
            sparse_main(["compare", *argv])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err

    fails([str(runs["a"]), str(runs["few"]), "--output", str(root / "x1"), "--dataset", "toy"], "no results for dataset")
    fails([str(runs["a"]), str(root / "few" / "eval"), "--output", str(root / "x1")], "share 0 datasets")
    assert not (root / "x1").exists()
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "compare.md").write_text("my own notes\n")
    fails([str(runs["a"]), str(runs["b"]), "--output", str(foreign)], "was not written by sparse compare")
    assert (foreign / "compare.md").read_text() == "my own notes\n" and not (foreign / "compare.html").exists()
    os.rename(runs["a"] / "runs" / "toy.explain.jsonl", root / "moved.jsonl")
    try:
        fails([str(runs["a"]), str(runs["b"]), "--output", str(root / "x2")], "explain_top_k")
    finally:
        os.rename(root / "moved.jsonl", runs["a"] / "runs" / "toy.explain.jsonl")
    assert not (root / "x2").exists()
    # rerunning over its own files is allowed
    sparse_main(["compare", str(runs["a"]), str(runs["b"]), "--output", str(root / "report")])


def test_page_renders_in_headless_chromium_within_the_time_limit(runs, dump_dom):
    dom = dump_dom(runs["root"] / "report" / "compare.html")
    assert 'data-ready="1"' in dom, "the page's script did not finish"
    load_ms = float(re.search(r'<span id="load-ms">([0-9.]+)</span>', dom).group(1))
    assert load_ms < LOAD_LIMIT_MS, f"page ready after {load_ms} ms"
    assert len(re.findall(r'<tr data-qid="', dom)) == N_QUERIES
    data = page_data(runs["root"] / "report" / "compare.html")
    first = data["queries"][0]["id"]
    assert '<tr data-qid="%s" class="sel">' % first in dom and f"Query {first}:" in dom
    assert len(re.findall(r'data-doc="', dom)) == len(data["details"][first]["a"]) + len(data["details"][first]["b"])

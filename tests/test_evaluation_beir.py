"""End-to-end BEIR evaluation against an independent computation, cache reuse, YAML mode, sharding.

The SciFact check: 20 test queries over a corpus of their judged documents plus each query's
hardest BM25 distractors from the full SciFact corpus. The pipeline's written run (doc ids and
scores, every query, top-k) must equal a ranking computed here without the toolkit: the HF
masked-LM run one text at a time, log(1 + relu(logits)) max-pooled over tokens, special tokens
zeroed (``IndependentSplade`` in conftest); inference-free queries looked up in idf.json by hand;
a brute-force float64 dot product; ties by document id.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import pytrec_eval
import torch
import yaml

from sparse.corpus import encode_corpus
from sparse.evaluation.runner import main as evaluate_main
from sparse.modeling.encoder import SparseEncoder

N_QUERIES = 20  # SciFact test queries (the first by id)
BM25_DISTRACTORS = 6  # per query, from the full corpus
MAX_LENGTH = 128  # eval_max_seq_length: documents truncated here by both computations
TOP_K = 50  # eval_top_k (the subset has ~115 documents, so the cut matters)
RTOL, ATOL = 1e-5, 2e-5  # float32 batched encoding vs float64 one at a time; runs are written with 6 decimals


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_qrels(path):
    qrels = {}
    with open(path, encoding="utf-8") as f:
        for line in f.read().splitlines()[1:]:
            if line.strip():
                q, d, g = line.split("\t")
                qrels.setdefault(q, {})[d] = int(g)
    return qrels


def read_run_file(path):
    """A TREC run file, parsed here: {qid: [(doc id, score)] in rank order}."""
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            qid, q0, did, rank, score, _tag = line.split()
            assert q0 == "Q0"
            rows.setdefault(qid, []).append((int(rank), did, float(score)))
    out = {}
    for qid, hits in rows.items():
        hits.sort()
        assert [r for r, _, _ in hits] == list(range(1, len(hits) + 1)), qid
        out[qid] = [(d, s) for _, d, s in hits]
    return out


@pytest.fixture(scope="module")
def hard_scifact(scifact_dir, tmp_path_factory, beir_writer):
    """20 SciFact test queries; corpus = their judged documents + each query's 6 best BM25
    documents of the full corpus (bm25s, no stemming: the same subset everywhere)."""
    import bm25s

    corpus = {d["_id"]: {"title": d.get("title") or "", "text": d.get("text") or ""}
              for d in read_jsonl(os.path.join(scifact_dir, "corpus.jsonl"))}
    queries = {d["_id"]: d["text"] for d in read_jsonl(os.path.join(scifact_dir, "queries.jsonl"))}
    qrels = read_qrels(os.path.join(scifact_dir, "qrels", "test.tsv"))
    qids = sorted(qrels)[:N_QUERIES]
    all_ids = sorted(corpus)
    bm25 = bm25s.BM25()
    bm25.index(bm25s.tokenize([corpus[d]["title"] + " " + corpus[d]["text"] for d in all_ids], stopwords="en",
                              show_progress=False), show_progress=False)
    hits, _ = bm25.retrieve(bm25s.tokenize([queries[q] for q in qids], stopwords="en", show_progress=False),
                            k=BM25_DISTRACTORS, show_progress=False, n_threads=0)
    judged = {d for q in qids for d in qrels[q] if d in corpus}
    distractors = {all_ids[int(j)] for row in hits for j in row} - judged
    keep = sorted(judged | distractors)
    assert len(distractors) >= 4 * N_QUERIES and 100 <= len(keep) <= 300
    root = tmp_path_factory.mktemp("beir") / "scifact-hard"
    beir_writer(root, {d: corpus[d] for d in keep}, {q: queries[q] for q in qids}, {q: qrels[q] for q in qids})
    return {"root": str(root), "doc_ids": keep, "texts": [(corpus[d]["title"] + " " + corpus[d]["text"]).strip()
                                                          for d in keep],
            "qids": qids, "queries": [queries[q] for q in qids], "qrels": {q: qrels[q] for q in qids}}


@pytest.fixture(scope="module")
def independent_run(hard_scifact, independent_splade, ranking):
    """{qid: (ranked ids, ranked scores, {doc id: score} over the whole corpus)}, computed without the toolkit."""
    scores = independent_splade.scores(hard_scifact["queries"], hard_scifact["texts"], MAX_LENGTH)
    out = {}
    for qid, row in zip(hard_scifact["qids"], scores):
        ids, vals = ranking.rank(hard_scifact["doc_ids"], row, TOP_K)
        out[qid] = (ids, vals, dict(zip(hard_scifact["doc_ids"], row.tolist())))
    return out


@pytest.fixture(scope="module")
def cli_run(hard_scifact, splade_path, idf_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    argv = ["--model_name_or_path", splade_path, "--idf_path", idf_path, "--beir_datasets", "scifact-hard",
            "--beir_dir", os.path.dirname(hard_scifact["root"]), "--output_dir", str(out / "run"),
            "--cache_dir", str(out / "cache"), "--per_device_eval_batch_size", "16",
            "--eval_max_seq_length", str(MAX_LENGTH), "--eval_top_k", str(TOP_K), "--write_run_files", "true"]
    evaluate_main(argv)
    return out, argv


def test_cli_run_equals_independent_computation(cli_run, hard_scifact, independent_run, ranking):
    out, _ = cli_run
    root = out / "run" / f"beir_eval_{MAX_LENGTH}"
    run = read_run_file(str(root / "runs" / "scifact-hard.trec"))
    assert sorted(run) == hard_scifact["qids"]  # every query has hits
    for qid in hard_scifact["qids"]:
        want_ids, _, score_of = independent_run[qid]
        got_ids, got_scores = [d for d, _ in run[qid]], [s for _, s in run[qid]]
        ranking.check(got_ids, want_ids, score_of, got_scores, rtol=RTOL, atol=ATOL, where=f"query {qid}")
    assert sum(len(independent_run[q][0]) == TOP_K for q in hard_scifact["qids"]) >= N_QUERIES // 2  # k cuts

    # the metrics are those of that run (self-hits dropped, BEIR's convention)
    result = json.loads((root / "results" / "scifact-hard.json").read_text())
    indep = {q: {d: s for d, s in zip(*independent_run[q][:2]) if d != q} for q in hard_scifact["qids"]}
    per_query = pytrec_eval.RelevanceEvaluator(hard_scifact["qrels"], {"ndcg_cut.10"}).evaluate(indep)
    ndcg = [v["ndcg_cut_10"] for v in per_query.values()]
    assert result["metrics"]["NDCG@10"] == pytest.approx(float(np.mean(ndcg)), abs=1e-6)
    assert sum(v == 1.0 for v in ndcg) <= N_QUERIES // 2  # hard distractors: the ranking matters
    assert set(result["metrics"]) == {"NDCG@10", "NDCG@100", "Recall@100", "Recall@1000", "MRR@10", "MAP@100"}
    assert result["counts"]["documents"] == len(hard_scifact["doc_ids"]) and result["counts"]["queries"] == N_QUERIES
    assert result["sparsity"]["d_length"] > 10 and result["sparsity"]["flops"] > 0
    assert result["corpus_cache"]["hit"] is False
    rows = list(csv_rows(root / "summary.csv"))
    assert [r["dataset"] for r in rows] == ["scifact-hard", "average"]
    assert float(rows[0]["NDCG@10"]) == pytest.approx(result["metrics"]["NDCG@10"], abs=1e-6)
    assert "| average |" in (root / "summary.md").read_text()
    assert (root / "eval_config.yaml").is_file() and (root / "eval_beir.log").is_file()


def csv_rows(path):
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f)


def test_rerun_reuses_cached_corpus_vectors(cli_run):
    out, argv = cli_run
    first = json.loads((out / "run" / f"beir_eval_{MAX_LENGTH}" / "results" / "scifact-hard.json").read_text())
    evaluate_main(argv + ["--query_prune", "0.1"])  # another suffix, same corpus vectors
    second = json.loads((out / "run" / f"beir_eval_0.1_{MAX_LENGTH}" / "results" / "scifact-hard.json").read_text())
    assert second["corpus_cache"]["hit"] is True
    assert second["timings"]["encode_corpus_s"] < first["timings"]["encode_corpus_s"]
    assert second["sparsity"]["d_length"] == first["sparsity"]["d_length"]
    assert second["sparsity"]["q_length"] < first["sparsity"]["q_length"]  # pruned queries


# ----------------------------------------------------------------------------- tiny models
TOY_CORPUS = {"d1": {"title": "", "text": "the cat sat on the mat"}, "d2": {"title": "a", "text": "dog is big"},
              "d3": {"title": "", "text": "the bird flew over the house"}, "d4": {"title": "", "text": "red blue green"},
              "d5": {"title": "", "text": ""}}
TOY_QUERIES = {"q1": "cat on a mat", "q2": "big dog", "q3": "bird house"}
TOY_QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 2, "d1": 0}}


def _perturbed_checkpoints(mlm, tok, run_dir, subdirs, seed=100):
    """Save one checkpoint per ``subdirs`` entry, each with its own weights: the MLM head's
    transform gets a different random perturbation before each save."""
    for i, sub in enumerate(subdirs):
        gen = torch.Generator().manual_seed(seed + i)
        with torch.no_grad():
            for p in mlm.cls.predictions.transform.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)
        SparseEncoder(mlm, tok).save_pretrained(str(run_dir / sub) if sub else str(run_dir))


def test_yaml_mode_evaluates_every_checkpoint(tiny_bert, tmp_path, beir_writer):
    """Every checkpoint has its own weights; the sweep (one corpus cache for all) must give each
    one exactly what evaluating that checkpoint alone (its own fresh cache) gives."""
    mlm, tok = tiny_bert
    run_dir = tmp_path / "train_out"
    _perturbed_checkpoints(mlm, tok, run_dir, ("checkpoint-10", "checkpoint-2", ""))
    beir_writer(tmp_path / "beir" / "toy", TOY_CORPUS, TOY_QUERIES, TOY_QRELS)
    cfg = {"model_name_or_path": "base-model-not-evaluated", "output_dir": str(run_dir), "beir_datasets": "toy",
           "beir_dir": str(tmp_path / "beir"), "cache_dir": str(tmp_path / "cache"), "inf_free": True,
           "eval_max_seq_length": 32, "max_steps": 10}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    per_model = evaluate_main([str(tmp_path / "run.yaml")])
    labels = ["checkpoint-2", "checkpoint-10", "final"]
    assert list(per_model) == labels
    root = run_dir / "beir_eval_32"
    rows = list(csv_rows(root / "checkpoints.csv"))
    assert [r["checkpoint"] for r in rows] == labels

    direct_runs = {}
    for label, row in zip(labels, rows):
        path = run_dir if label == "final" else run_dir / label
        alone = tmp_path / "alone" / label
        evaluate_main(["--model_name_or_path", str(path), "--beir_datasets", "toy", "--beir_dir", str(tmp_path / "beir"),
                       "--cache_dir", str(alone / "cache"), "--output_dir", str(alone), "--inf_free", "true",
                       "--eval_max_seq_length", "32"])
        direct_runs[label] = read_run_file(str(alone / "beir_eval_32" / "runs" / "toy.trec"))
        sweep_run = read_run_file(str(root / label / "runs" / "toy.trec"))
        assert sweep_run.keys() == direct_runs[label].keys()
        for q in sweep_run:
            assert [d for d, _ in sweep_run[q]] == [d for d, _ in direct_runs[label][q]], (label, q)
            np.testing.assert_allclose([s for _, s in sweep_run[q]], [s for _, s in direct_runs[label][q]],
                                       rtol=1e-6, err_msg=f"{label} {q}")
        want = json.loads((alone / "beir_eval_32" / "results" / "toy.json").read_text())
        got = json.loads((root / label / "results" / "toy.json").read_text())
        assert want["corpus_cache"]["hit"] is False
        assert got["metrics"] == want["metrics"] and got["sparsity"] == pytest.approx(want["sparsity"], rel=1e-12)
        assert float(row["toy"]) == pytest.approx(want["metrics"]["NDCG@10"], abs=1e-9)
        assert got["counts"]["documents"] == 5 and got["counts"]["queries"] == 3
    # the checkpoints really differ, so a shared cache entry could not pass the checks above
    assert direct_runs["checkpoint-2"] != direct_runs["checkpoint-10"] != direct_runs["final"]
    assert direct_runs["checkpoint-2"] != direct_runs["final"]


def test_sharded_encoding_equals_single_process(tiny_bert, tmp_path):
    mlm, tok = tiny_bert
    enc = SparseEncoder(mlm, tok)
    ids = [f"d{i}" for i in range(11)]
    texts = [" ".join(["the cat", "dog sat", "on a mat", "bird"][: 1 + i % 4]) for i in range(11)]
    direct = enc.encode_documents(texts, batch_size=4)
    cache = str(tmp_path / "cache")
    helper = encode_corpus(enc, ids, texts, cache, ("toy",), batch_size=4, rank=1, world_size=2, progress=False)
    assert helper.vectors is None
    result = encode_corpus(enc, ids, texts, cache, ("toy",), batch_size=4, rank=0, world_size=2, progress=False)
    merged = result.vectors
    np.testing.assert_array_equal(merged.indptr, direct.indptr)
    np.testing.assert_array_equal(merged.indices, direct.indices)
    np.testing.assert_allclose(merged.values, direct.values, rtol=1e-6)
    entry = result.entry
    assert not [n for n in os.listdir(entry) if n.startswith("shard-")]
    again = encode_corpus(enc, ids, texts, cache, ("toy",), batch_size=4, progress=False)
    assert again.cache_hit and again.vectors.nnz == direct.nnz
    changed = encode_corpus(enc, ids, texts[:-1] + ["red"], cache, ("toy",), batch_size=4, progress=False)
    assert not changed.cache_hit and changed.vectors.row(10)[0].tolist() != direct.row(10)[0].tolist()


def test_opensearch_engine_run_equals_embedded_fp9(tiny_bert, tmp_path, osmem_url, beir_writer):
    mlm, tok = tiny_bert
    SparseEncoder(mlm, tok).save_pretrained(str(tmp_path / "model"))
    beir_writer(tmp_path / "beir" / "toy", TOY_CORPUS, TOY_QUERIES, TOY_QRELS)
    base = ["--model_name_or_path", str(tmp_path / "model"), "--beir_datasets", "toy", "--beir_dir",
            str(tmp_path / "beir"), "--cache_dir", str(tmp_path / "cache"), "--eval_max_seq_length", "32"]
    evaluate_main(base + ["--output_dir", str(tmp_path / "emb"), "--index_precision", "opensearch"])
    evaluate_main(base + ["--output_dir", str(tmp_path / "os"), "--engine", "opensearch",
                          "--opensearch_url", osmem_url])
    evaluate_main(base + ["--output_dir", str(tmp_path / "reuse"), "--engine", "opensearch",
                          "--opensearch_url", osmem_url, "--skip_ingest", "true", "--delete_index", "true"])
    runs = [read_run_file(str(tmp_path / d / "beir_eval_32" / "runs" / "toy.trec")) for d in ("emb", "os", "reuse")]
    assert runs[0].keys() == runs[1].keys() == runs[2].keys()
    for q in runs[0]:
        assert [d for d, _ in runs[0][q]] == [d for d, _ in runs[1][q]] == [d for d, _ in runs[2][q]]
        np.testing.assert_allclose([s for _, s in runs[1][q]], [s for _, s in runs[0][q]], rtol=1e-5)
    res = [json.loads((tmp_path / d / "beir_eval_32" / "results" / "toy.json").read_text()) for d in ("emb", "os")]
    assert res[1]["metrics"]["NDCG@10"] == pytest.approx(res[0]["metrics"]["NDCG@10"], abs=1e-9)
    with pytest.raises(Exception, match="does not exist"):  # the reuse run deleted the index
        evaluate_main(base + ["--output_dir", str(tmp_path / "gone"), "--engine", "opensearch",
                              "--opensearch_url", osmem_url, "--skip_ingest", "true"])

"""End-to-end BEIR evaluation against an independent computation, cache reuse, YAML mode, sharding.

The independent computation shares no code with the pipeline: the HF masked-LM run one text at a
time, log(1 + relu(logits)) max-pooled over tokens, special tokens zeroed; inference-free queries
looked up in idf.json by hand; a dense float64 dot product; pytrec_eval on the full ranking.
The full SciFact check (5183 documents, 300 queries) runs with SPARSE_FULL_SCIFACT=1.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import pytrec_eval
import torch
import yaml

from sparse.data.beir import load_beir
from sparse.evaluation.corpus_cache import encode_corpus
from sparse.evaluation.report import read_csv, read_trec_run
from sparse.evaluation.runner import main as evaluate_main
from sparse.modeling.encoder import SparseEncoder
from tests.test_evaluation_metrics import write_beir


def independent_ndcg10(model_dir: str, idf_path: str, dataset_dir: str) -> float:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    corpus, queries, qrels = load_beir(dataset_dir, "test")
    tok = AutoTokenizer.from_pretrained(model_dir)
    mlm = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    special = sorted(set(tok.all_special_ids))
    doc_ids = list(corpus)
    docs = []
    with torch.no_grad():
        for did in doc_ids:
            text = (corpus[did]["title"] + " " + corpus[did]["text"]).strip()
            enc = tok(text, truncation=True, max_length=512, return_tensors="pt")
            logits = mlm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0]
            w = torch.log1p(torch.relu(logits)).max(dim=0).values
            w[special] = 0
            docs.append(w.double().numpy())
    with open(idf_path) as f:
        idf = json.load(f)
    vocab_inv = {i: t for t, i in tok.get_vocab().items()}
    qids = list(queries)
    qmat = np.zeros((len(qids), len(docs[0])))
    for r, qid in enumerate(qids):
        for tid in set(tok(queries[qid], truncation=True, max_length=512)["input_ids"]) - set(special):
            qmat[r, tid] = max(idf.get(vocab_inv[tid], 1.0), 0.0)
    scores = qmat @ np.stack(docs).T
    run = {}
    for r, qid in enumerate(qids):
        run[qid] = {doc_ids[j]: float(scores[r, j]) for j in np.nonzero(scores[r] > 0)[0] if doc_ids[j] != qid}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate({q: h for q, h in run.items() if h})
    return float(np.mean([v["ndcg_cut_10"] for v in per_query.values()]))


@pytest.fixture(scope="module")
def mini_scifact(scifact_dir, tmp_path_factory):
    """20 SciFact test queries, their relevant documents and 60 other (short) documents."""
    corpus, queries, qrels = load_beir(scifact_dir, "test")
    qids = sorted(queries)[:20]
    keep = {d for q in qids for d in qrels[q] if d in corpus}
    others = sorted((d for d in corpus if d not in keep), key=lambda d: len(corpus[d]["text"]))[:60]
    root = tmp_path_factory.mktemp("beir") / "scifact-mini"
    write_beir(str(root), {d: corpus[d] for d in sorted(keep) + others}, {q: queries[q] for q in qids},
               {q: qrels[q] for q in qids})
    return str(root)


@pytest.fixture(scope="module")
def cli_run(mini_scifact, splade_path, idf_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    argv = ["--model_name_or_path", splade_path, "--idf_path", idf_path, "--beir_datasets", "scifact-mini",
            "--beir_dir", os.path.dirname(mini_scifact), "--output_dir", str(out / "run"),
            "--cache_dir", str(out / "cache"), "--per_device_eval_batch_size", "16"]
    evaluate_main(argv)
    return out, argv


def test_cli_run_equals_independent_computation(cli_run, mini_scifact, splade_path, idf_path):
    out, _ = cli_run
    root = out / "run" / "beir_eval"
    result = json.loads((root / "results" / "scifact-mini.json").read_text())
    want = independent_ndcg10(splade_path, idf_path, mini_scifact)
    assert result["metrics"]["NDCG@10"] == pytest.approx(want, abs=1e-3)
    assert set(result["metrics"]) == {"NDCG@10", "NDCG@100", "Recall@100", "Recall@1000", "MRR@10", "MAP@100"}
    assert result["counts"]["documents"] > 60 and result["counts"]["queries"] == 20
    assert result["sparsity"]["d_length"] > 10 and result["sparsity"]["flops"] > 0
    assert result["corpus_cache"]["hit"] is False
    run = read_trec_run(str(root / "runs" / "scifact-mini.trec"))
    assert set(run) == set(load_beir(mini_scifact, "test")[1])
    rows = read_csv(str(root / "summary.csv"))
    assert [r["dataset"] for r in rows] == ["scifact-mini", "average"]
    assert "| average |" in (root / "summary.md").read_text()
    assert (root / "eval_config.yaml").is_file() and (root / "eval_beir.log").is_file()


def test_rerun_reuses_cached_corpus_vectors(cli_run):
    out, argv = cli_run
    first = json.loads((out / "run" / "beir_eval" / "results" / "scifact-mini.json").read_text())
    evaluate_main(argv + ["--query_prune", "0.1"])  # another suffix, same corpus vectors
    second = json.loads((out / "run" / "beir_eval_0.1" / "results" / "scifact-mini.json").read_text())
    assert second["corpus_cache"]["hit"] is True
    assert second["timings"]["encode_corpus_s"] < first["timings"]["encode_corpus_s"]
    assert second["sparsity"]["d_length"] == first["sparsity"]["d_length"]
    assert second["sparsity"]["q_length"] < first["sparsity"]["q_length"]  # pruned queries


@pytest.mark.skipif(not os.environ.get("SPARSE_FULL_SCIFACT"), reason="set SPARSE_FULL_SCIFACT=1 (minutes)")
def test_full_scifact_equals_independent_computation(scifact_dir, splade_path, idf_path, tmp_path):
    out = tmp_path / "run"
    evaluate_main(["--model_name_or_path", splade_path, "--idf_path", idf_path, "--beir_datasets", "scifact",
                   "--beir_dir", os.path.dirname(scifact_dir), "--output_dir", str(out)]
                  + (["--cache_dir", os.environ["SPARSE_CACHE_DIR"]] if os.environ.get("SPARSE_CACHE_DIR") else []))
    got = json.loads((out / "beir_eval" / "results" / "scifact.json").read_text())["metrics"]["NDCG@10"]
    want = independent_ndcg10(splade_path, idf_path, scifact_dir)
    print(f"SciFact NDCG@10 pipeline {got:.5f} independent {want:.5f}")
    assert got == pytest.approx(want, abs=1e-3)


# ----------------------------------------------------------------------------- tiny models
TOY_CORPUS = {"d1": {"title": "", "text": "the cat sat on the mat"}, "d2": {"title": "a", "text": "dog is big"},
              "d3": {"title": "", "text": "the bird flew over the house"}, "d4": {"title": "", "text": "red blue green"},
              "d5": {"title": "", "text": ""}}
TOY_QUERIES = {"q1": "cat on a mat", "q2": "big dog", "q3": "bird house"}
TOY_QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 2, "d1": 0}}


def test_yaml_mode_evaluates_every_checkpoint(tiny_bert, tmp_path):
    mlm, tok = tiny_bert
    run_dir = tmp_path / "train_out"
    for sub in ("checkpoint-10", "checkpoint-2", ""):
        SparseEncoder(mlm, tok).save_pretrained(str(run_dir / sub) if sub else str(run_dir))
    write_beir(str(tmp_path / "beir" / "toy"), TOY_CORPUS, TOY_QUERIES, TOY_QRELS)
    cfg = {"model_name_or_path": "base-model-not-evaluated", "output_dir": str(run_dir), "beir_datasets": "toy",
           "beir_dir": str(tmp_path / "beir"), "cache_dir": str(tmp_path / "cache"), "inf_free": True,
           "eval_max_seq_length": 32, "max_steps": 10}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    per_model = evaluate_main([str(tmp_path / "run.yaml")])
    assert list(per_model) == ["checkpoint-2", "checkpoint-10", "final"]
    root = run_dir / "beir_eval_32"
    rows = read_csv(str(root / "checkpoints.csv"))
    assert [r["checkpoint"] for r in rows] == ["checkpoint-2", "checkpoint-10", "final"]
    # identical weights in every checkpoint: identical figures; the 4-query toy is easy to check
    res = json.loads((root / "final" / "results" / "toy.json").read_text())
    assert float(rows[0]["toy"]) == pytest.approx(res["metrics"]["NDCG@10"])
    assert res["counts"]["documents"] == 5 and res["counts"]["queries"] == 3


def test_sharded_encoding_equals_single_process(tiny_bert, tmp_path):
    mlm, tok = tiny_bert
    enc = SparseEncoder(mlm, tok)
    ids = [f"d{i}" for i in range(11)]
    texts = [" ".join(["the cat", "dog sat", "on a mat", "bird"][: 1 + i % 4]) for i in range(11)]
    direct = enc.encode_documents(texts, batch_size=4)
    cache = str(tmp_path / "cache")
    assert encode_corpus(enc, ids, texts, cache, ("toy",), batch_size=4, rank=1, world_size=2, progress=False) is None
    merged = encode_corpus(enc, ids, texts, cache, ("toy",), batch_size=4, rank=0, world_size=2, progress=False)
    np.testing.assert_array_equal(merged.indptr, direct.indptr)
    np.testing.assert_array_equal(merged.indices, direct.indices)
    np.testing.assert_allclose(merged.values, direct.values, rtol=1e-6)
    entry = encode_corpus.last_entry
    assert not [n for n in os.listdir(entry) if n.startswith("shard-")]
    again = encode_corpus(enc, ids, texts, cache, ("toy",), batch_size=4, progress=False)
    assert encode_corpus.last_hit and again.nnz == direct.nnz
    changed = encode_corpus(enc, ids, texts[:-1] + ["red"], cache, ("toy",), batch_size=4, progress=False)
    assert not encode_corpus.last_hit and changed.row(10)[0].tolist() != direct.row(10)[0].tolist()


from tests.test_retrieval_opensearch import osmem_url  # noqa: E402,F401  (module-scoped server fixture)


def test_opensearch_engine_run_equals_embedded_fp9(tiny_bert, tmp_path, osmem_url):  # noqa: F811
    mlm, tok = tiny_bert
    SparseEncoder(mlm, tok).save_pretrained(str(tmp_path / "model"))
    write_beir(str(tmp_path / "beir" / "toy"), TOY_CORPUS, TOY_QUERIES, TOY_QRELS)
    base = ["--model_name_or_path", str(tmp_path / "model"), "--beir_datasets", "toy", "--beir_dir",
            str(tmp_path / "beir"), "--cache_dir", str(tmp_path / "cache"), "--eval_max_seq_length", "32"]
    evaluate_main(base + ["--output_dir", str(tmp_path / "emb"), "--index_precision", "opensearch"])
    evaluate_main(base + ["--output_dir", str(tmp_path / "os"), "--engine", "opensearch",
                          "--opensearch_url", osmem_url])
    evaluate_main(base + ["--output_dir", str(tmp_path / "reuse"), "--engine", "opensearch",
                          "--opensearch_url", osmem_url, "--skip_ingest", "true", "--delete_index", "true"])
    runs = [read_trec_run(str(tmp_path / d / "beir_eval_32" / "runs" / "toy.trec")) for d in ("emb", "os", "reuse")]
    assert runs[0].keys() == runs[1].keys() == runs[2].keys()
    for q in runs[0]:
        assert list(runs[0][q]) == list(runs[1][q]) == list(runs[2][q])
        np.testing.assert_allclose(list(runs[1][q].values()), list(runs[0][q].values()), rtol=1e-5)
    res = [json.loads((tmp_path / d / "beir_eval_32" / "results" / "toy.json").read_text()) for d in ("emb", "os")]
    assert res[1]["metrics"]["NDCG@10"] == pytest.approx(res[0]["metrics"]["NDCG@10"], abs=1e-9)
    with pytest.raises(Exception, match="does not exist"):  # the reuse run deleted the index
        evaluate_main(base + ["--output_dir", str(tmp_path / "gone"), "--engine", "opensearch",
                              "--opensearch_url", osmem_url, "--skip_ingest", "true"])

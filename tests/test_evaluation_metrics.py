"""Metrics (hand-computed), sparsity figures, report writers and the BEIR loader."""

from __future__ import annotations

import math
import os

import pytest

from sparse.data.beir import doc_text, load_beir, sorted_corpus
from sparse.errors import UserError
from sparse.evaluation.metrics import evaluate_run
from sparse.evaluation.report import (average_row, markdown_table, read_csv, read_trec_run, write_checkpoint_summary,
                                      write_dataset_summary, write_trec_run)
from sparse.evaluation.sparsity import sparsity_stats
from sparse.modeling.vectors import SparseBatch


def test_metrics_match_hand_computation():
    qrels = {"q1": {"d1": 1, "d2": 2, "d9": 0}, "q2": {"d4": 1}}
    run = {"q1": {"q1": 9.0, "d3": 3.0, "d1": 2.0, "d2": 1.0}, "q2": {}}
    m = evaluate_run(qrels, run, ("NDCG@10", "NDCG@1", "MRR@10", "Recall@100", "Recall@1", "MAP@100"))
    # linear gains (trec_eval): DCG = 1/log2(3) + 2/log2(4); IDCG = 2/log2(2) + 1/log2(3)
    dcg = 1 / math.log2(3) + 2 / math.log2(4)
    idcg = 2 + 1 / math.log2(3)
    assert m["NDCG@10"] == pytest.approx(dcg / idcg, abs=1e-6)  # the self-hit q1 was dropped
    assert m["NDCG@1"] == pytest.approx(0.0)
    assert m["Recall@100"] == pytest.approx(1.0) and m["Recall@1"] == pytest.approx(0.0)
    assert m["MAP@100"] == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-6)
    assert m["MRR@10"] == pytest.approx(0.5 / 2)  # BEIR divides MRR by every query with qrels
    assert m["queries_evaluated"] == 1 and m["queries_without_results"] == 1 and m["self_hits_dropped"] == 1


def test_sparsity_figures_by_hand():
    q = SparseBatch.from_rows([([1, 2], [1.0, 1.0]), ([2], [3.0])], 5)
    d = SparseBatch.from_rows([([2, 3], [1.0, 1.0]), ([3], [2.0]), ([1], [1.0]), ([], [])], 5)
    s = sparsity_stats(q, d)
    # p_q = [0, .5, 1, 0, 0]; p_d = [0, 1/4, 1/4, 2/4, 0]
    assert s["flops"] == pytest.approx(0.5 * 0.25 + 1 * 0.25)
    assert s["q_length"] == pytest.approx(1.5) and s["d_length"] == pytest.approx(1.0)
    assert s["empty_docs"] == 1 and s["d_length_max"] == 2


def _result(name, ndcg, flops):
    return {"dataset": name, "metrics": {"NDCG@10": ndcg, "Recall@100": 0.5}, "sparsity": {"flops": flops}}


def test_tables_with_average_row(tmp_path):
    results = [_result("a", 0.5, 1.0), _result("b", 0.7, 3.0)]
    avg = write_dataset_summary(str(tmp_path), results)
    assert avg["NDCG@10"] == pytest.approx(0.6) and avg["flops"] == pytest.approx(2.0)
    rows = read_csv(str(tmp_path / "summary.csv"))
    assert [r["dataset"] for r in rows] == ["a", "b", "average"] and float(rows[2]["NDCG@10"]) == pytest.approx(0.6)
    md = (tmp_path / "summary.md").read_text().splitlines()
    assert md[0].startswith("| dataset | NDCG@10") and md[-1].startswith("| average | 0.6000")
    table = write_checkpoint_summary(str(tmp_path), {"checkpoint-1": results, "final": results[:1]})
    assert table[0]["avg NDCG@10"] == pytest.approx(0.6) and table[1]["a"] == 0.5 and "b" not in table[1]
    assert "| checkpoint-1 |" in (tmp_path / "checkpoints.md").read_text()
    assert average_row([{"x": 1, "n": "p"}, {"x": None, "n": "q"}], ["n", "x"], "n")["x"] is None
    assert markdown_table([{"a": "x|y"}]).splitlines()[2] == "| x\\|y |"


def test_trec_run_round_trip(tmp_path):
    run = {"q2": {"b": 1.0, "a": 1.0, "c": 2.5}, "q1": {"z": 0.25}}
    path = write_trec_run(str(tmp_path / "r.trec"), run)
    lines = open(path).read().splitlines()
    assert lines[0] == "q1 Q0 z 1 0.250000 sparse"
    assert [l.split()[2] for l in lines[1:]] == ["c", "a", "b"]  # ties by id
    assert read_trec_run(path) == run


def test_load_beir_keeps_queries_with_qrels(tmp_path, beir_writer):
    root = beir_writer(str(tmp_path / "ds"), {"d2": {"title": "T", "text": "body"}, "d1": {"title": "", "text": " x "}},
                      {"q1": "first", "q2": "second"}, {"q1": {"d1": 1, "d2": 0}})
    corpus, queries, qrels = load_beir(root, "test")
    assert queries == {"q1": "first"} and qrels == {"q1": {"d1": 1, "d2": 0}}
    assert sorted_corpus(corpus) == (["d1", "d2"], ["x", "T body"])
    assert doc_text({"title": None, "text": "a"}) == "a"
    with pytest.raises(UserError, match=r"split 'dev' is missing \(splits here: \['test'\]\)"):
        load_beir(root, "dev")
    with open(os.path.join(root, "corpus.jsonl"), "a") as f:
        f.write("{not json\n")
    with pytest.raises(UserError, match="corpus.jsonl:3"):
        load_beir(root, "test")
    with pytest.raises(UserError, match="not found"):
        load_beir(str(tmp_path / "nope"), "test")


def test_load_nanobeir_parquet_layout(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for part, rows in {"corpus": [{"_id": "d1", "text": "alpha"}], "queries": [{"_id": "q1", "text": "a?"}],
                       "qrels": [{"query-id": "q1", "corpus-id": "d1"}]}.items():
        os.makedirs(tmp_path / part)
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / part / "train-00000-of-00001.parquet")
    corpus, queries, qrels = load_beir(str(tmp_path), "train")
    assert corpus == {"d1": {"title": "", "text": "alpha"}} and queries == {"q1": "a?"} and qrels == {"q1": {"d1": 1}}

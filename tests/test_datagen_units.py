"""Data generation pieces that need no model: negatives, stats, readers, parts, args, pre-scored join."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from sparse.config import ConfigError
from sparse.corpus import explicit_sparse_settings
from sparse.datagen.args import KDPrepArguments, MiningArguments, parse_script_args
from sparse.datagen.negatives import build_posnegs_rows, query_rng, select_negatives
from sparse.datagen.stats import DROP_FEW_NEGATIVES, DROP_NO_POSITIVE
from sparse.datagen.parts import PartStore, assigned_parts
from sparse.datagen.sources import fix_mojibake, load_source
from sparse.errors import UserError


def test_select_negatives_removes_judged_skips_and_samples():
    cands = [f"d{i}" for i in range(10)]
    judged = {"d1", "d4"}
    assert select_negatives(cands, judged) == ["d0", "d2", "d3", "d5", "d6", "d7", "d8", "d9"]
    assert select_negatives(cands, judged, skip_top=2, negatives_per_query=3) == ["d3", "d5", "d6"]
    a = select_negatives(cands, judged, skip_top=1, negatives_per_query=4, sampling="random", rng=query_rng(7, "q"))
    b = select_negatives(cands, judged, skip_top=1, negatives_per_query=4, sampling="random", rng=query_rng(7, "q"))
    assert a == b and len(a) == 4 and not set(a) & (judged | {"d0"})
    assert a == sorted(a, key=cands.index)  # rank order kept
    draws = {tuple(select_negatives(cands, judged, 0, 3, "random", query_rng(s, "q"))) for s in range(20)}
    assert len(draws) > 1  # the seed matters


def test_build_rows_one_per_positive_and_counts_drops():
    queries = {"q1": "one", "q2": "two", "q3": "three"}
    qrels = {"q1": {"a": 1, "b": 2, "c": 0}, "q2": {"a": 0}, "q3": {"b": 1}}
    text = {d: d.upper() for d in "abcdefg"}
    retrieved = [["c", "d", "a", "e"], ["a", "b"], ["b"]]
    rows, stats = build_posnegs_rows(["q1", "q2", "q3"], queries, qrels, retrieved, text, min_negatives=1)
    assert [(r["query_id"], r["pos_id"]) for r in rows] == [("q1", "a"), ("q1", "b")]
    assert rows[0]["neg_ids"] == ["d", "e"] and rows[0]["negs"] == ["D", "E"]  # grade-0 "c" is not a negative
    assert stats.dropped[DROP_NO_POSITIVE]["examples"] == ["q2"]
    assert stats.dropped[DROP_FEW_NEGATIVES]["examples"] == ["q3"]
    d = stats.to_dict()
    assert (d["rows"], d["queries_kept"], d["queries_in"], d["queries_dropped"], d["mean_negatives"]) == (2, 1, 3, 2, 2.0)


def test_fix_mojibake_repairs_only_broken_text():
    assert fix_mojibake("cafÃ© au lait") == "café au lait"
    assert fix_mojibake("café") == "café"  # genuine latin-1 text is left alone
    assert fix_mojibake("plain") == "plain"
    assert fix_mojibake("naïve → ok") == "naïve → ok"


def test_msmarco_reader(tmp_path):
    (tmp_path / "collection.tsv").write_text("0\tfirst passage\n1\tcafÃ© passage\n2\tthird\n", encoding="utf-8")
    (tmp_path / "queries.train.tsv").write_text("10\tquery ten\n11\tquery eleven\n", encoding="utf-8")
    (tmp_path / "qrels.train.tsv").write_text("10\t0\t1\t1\n", encoding="utf-8")
    data = load_source(str(tmp_path), "train")
    assert data.doc_ids == ["0", "1", "2"] and data.doc_texts[1] == "café passage"
    assert data.queries == {"10": "query ten"} and data.qrels == {"10": {"1": 1}}
    (tmp_path / "qrels.train.tsv").write_text("99\t0\t1\t1\n", encoding="utf-8")
    with pytest.raises(UserError, match="no query text"):
        load_source(str(tmp_path), "train")
    with pytest.raises(UserError, match="not found"):
        load_source(str(tmp_path / "nope"), "train")


def test_args_parse_and_validate(tmp_path):
    cfg, args = parse_script_args(["--model_name_or_path", "m", "--beir_datasets", "scifact", "--top_k", "20",
                                   "--negatives_per_query", "5", "--sampling", "random"], MiningArguments)
    assert (args.top_k, args.negatives_per_query, args.sampling) == (20, 5, "random")
    assert cfg.model.model_name_or_path == "m" and cfg.data.beir_datasets == "scifact"
    assert explicit_sparse_settings(cfg) == {}  # nothing explicit: the checkpoint decides (inf_free included)
    cfg, _ = parse_script_args(["--model_name_or_path", "m", "--inf_free", "false"], MiningArguments)
    assert explicit_sparse_settings(cfg) == {"inf_free": False}
    with pytest.raises(ConfigError, match="sampling"):
        parse_script_args(["--sampling", "best"], MiningArguments)
    with pytest.raises(ConfigError, match="unknown config key 'top_kk'"):
        parse_script_args(["--top_kk", "3"], MiningArguments)
    _, kd = parse_script_args(["--teachers", "dense:a/b,sparse:c"], KDPrepArguments)
    assert kd.teachers == ["dense:a/b", "sparse:c"] and kd.top_k == 100
    from sparse.datagen.args import parse_teacher_specs

    assert parse_teacher_specs(kd.teachers) == [("dense", "a/b"), ("sparse", "c")]
    with pytest.raises(ConfigError, match="TYPE:MODEL"):
        parse_teacher_specs(["colbert:x"])


def test_part_store_plan_resume_and_merge(tmp_path):
    from datasets import Dataset

    store = PartStore(str(tmp_path / "out"))
    store.check_plan({"a": 1})
    store.check_plan({"a": 1})  # same plan: fine
    store.check_plan({"a": 2})  # no part finished yet: a corrected rerun is not refused
    store.check_plan({"a": 1})
    assert assigned_parts(5, 1, 2) == [1, 3]
    for i in range(3):
        assert not store.is_done(i)
        store.save(i, Dataset.from_list([{"x": i * 10 + j} for j in range(2)]), {"rows": 2})
        assert store.is_done(i)
    with pytest.raises(UserError, match="other settings"):
        store.check_plan({"a": 2})  # finished parts were made with a=1: never mixed
    merged = store.merge(3, num_shards=2)
    assert merged["x"] == [0, 1, 10, 11, 20, 21]
    assert sorted(os.listdir(tmp_path / "out"))[:2] == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    store.remove()
    assert not os.path.exists(store.root)


def test_prescored_join(tmp_path):
    from datasets import load_from_disk

    from sparse.datagen.prescored import join_prescored

    msm = tmp_path / "msmarco"
    msm.mkdir()
    (msm / "collection.tsv").write_text("0\tzero\n1\tone Ã©\n2\ttwo\n", encoding="utf-8")
    (msm / "queries.train.tsv").write_text("7\tseven\n8\teight\n", encoding="utf-8")
    ids = tmp_path / "ids.jsonl"
    rows = [{"query": "7", "docs": ["1", "0"], "scores": [3.5, 1.0]},
            {"query": "8", "docs": ["2", "5"], "scores": [1.0, 0.0]}]  # doc 5 is missing
    ids.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    stats = join_prescored(str(ids), str(msm), str(tmp_path / "out"))
    ds = load_from_disk(str(tmp_path / "out"))
    assert ds.to_list() == [{"query": "seven", "q_id": "7", "docs": ["one é", "zero"], "d_ids": ["1", "0"],
                             "scores": [3.5, 1.0]}]
    assert stats["rows_dropped_missing_text"]["count"] == 1
    with pytest.raises(UserError, match="already holds"):
        join_prescored(str(ids), str(msm), str(tmp_path / "out"))


def test_normalized_scores_per_query():
    from sparse.teachers import TeacherEnsemble

    class Fake:
        is_bi_encoder = False

        def __init__(self, scale):
            self.scale = scale

        def score_pairs(self, queries, docs):
            import torch

            return torch.tensor([self.scale * len(q) * len(d) for q, d in zip(queries, docs)], dtype=torch.float32)

    ensemble = TeacherEnsemble([Fake(1.0), Fake(-5.0)], 1.0)
    means, per = ensemble.score_candidates(["ab", "abcd"], [["x", "xyz", "xy"], ["x", "x"]])
    assert np.allclose(per[0][0], [0, 1, 0.5], atol=1e-5) and np.allclose(per[1][0], [1, 0, 0.5], atol=1e-5)
    assert np.allclose(means[0], [0.5, 0.5, 0.5], atol=1e-5)
    assert np.allclose(per[0][1], [0, 0]) and len(means[1]) == 2  # constant row: zeros, not NaN

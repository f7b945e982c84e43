"""KD data preparation on a SciFact subset: SPLADE retrieval, all-MiniLM-L6-v2 + SPLADE teachers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sparse.datagen.args import KDPrepArguments, parse_script_args
from sparse.datagen.kd import run_kd

from tests.test_datagen_mining import make_subset


@pytest.fixture(scope="module")
def kd_setup(scifact_dir, splade_path, idf_path, minilm_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("kd")
    data_dir = make_subset(scifact_dir, root / "scifact_kd", n_queries=6, n_extra_docs=30)

    def argv(out, *extra):
        return ["--model_name_or_path", splade_path, "--idf_path", idf_path, "--data_dir", data_dir,
                "--output", str(out), "--cache_dir", str(root / "cache"), "--max_seq_length", "64",
                "--top_k", "5", "--teachers", f"dense:{minilm_path},sparse:{splade_path}",
                "--teacher_max_length", "64", "--queries_per_part", "2", "--save_teacher_scores", "true",
                "--seed", "5", *extra]

    return root, argv


def _rows(out):
    from datasets import load_from_disk

    return load_from_disk(str(out)).to_list()


class Counting:
    """A teacher wrapper logging the queries of each call, optionally failing at call ``fail_at`` (a crash)."""

    def __init__(self, teacher, log, fail_at=None):
        self.teacher, self.log, self.fail_at = teacher, log, fail_at
        self.is_bi_encoder = teacher.is_bi_encoder

    def _record(self, queries):
        self.log.append(sorted(set(queries)))
        if self.fail_at is not None and len(self.log) == self.fail_at:
            raise RuntimeError("simulated crash")

    def embed_queries(self, queries):
        self._record(queries)
        return self.teacher.embed_queries(queries)

    def embed_docs(self, docs):
        return self.teacher.embed_docs(docs)

    def score_pairs(self, queries, docs):
        self._record(queries)
        return self.teacher.score_pairs(queries, docs)


def test_kd_rows_scores_determinism_and_resume(kd_setup):
    root, argv = kd_setup
    cfg, args = parse_script_args(argv(root / "a"), KDPrepArguments)
    stats = run_kd(cfg, args, progress=False)
    rows = _rows(root / "a")
    assert stats["rows"] == len(rows) == 6 and stats["queries_dropped"] == 0
    assert sorted(os.listdir(root / "a")) == ["data-00000-of-00001.arrow", "dataset_info.json", "kd_config.json",
                                              "state.json", "stats.json"]
    assert not os.path.exists(str(root / "a") + ".parts")
    for row in rows:
        assert len(row["docs"]) == len(row["d_ids"]) == len(row["scores"]) == 5
        ts = np.array(row["teacher_scores"])
        assert ts.shape == (2, 5)
        assert ts.min() >= 0 and ts.max() <= 1  # per teacher, per query min-max normalized
        assert np.isclose(ts.min(axis=1), 0).all() and np.isclose(ts.max(axis=1), 1, atol=1e-4).all()
        assert np.allclose(ts.mean(axis=0), row["scores"], atol=1e-6)
    # teachers agree with the retriever more often than not: the top retrieved doc scores high
    assert np.mean([r["scores"][0] for r in rows]) > 0.5

    # same seed, same output
    from sparse.datagen.miners import SparseRetriever
    from sparse.datagen.args import load_encoder
    from sparse.datagen.kd import build_teachers
    from sparse.datagen.sources import load_source

    data = load_source(args.data_dir)
    retriever = SparseRetriever(load_encoder(cfg), data.doc_ids, data.doc_texts, cache_dir=str(root / "cache"),
                                key_parts=(data.name,), max_length=64, progress=False)
    teachers = build_teachers(args)
    cfg_b, args_b = parse_script_args(argv(root / "b"), KDPrepArguments)
    run_kd(cfg_b, args_b, progress=False, retriever=retriever, teachers=teachers)
    assert _rows(root / "b") == rows

    # a crash in the second part, then a resumed run: finished parts are not redone
    log = []
    crashing = [Counting(t, log, fail_at=3 if i == 0 else None) for i, t in enumerate(teachers)]  # call 3: part 1
    cfg_c, args_c = parse_script_args(argv(root / "c"), KDPrepArguments)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_kd(cfg_c, args_c, progress=False, retriever=retriever, teachers=crashing)
    parts = str(root / "c") + ".parts"
    assert sorted(os.listdir(parts)) == ["part-00000", "plan.json"]
    first_part_queries = log[0]
    log.clear()
    resumed = [Counting(t, log) for t in teachers]
    stats_c = run_kd(cfg_c, args_c, progress=False, retriever=retriever, teachers=resumed)
    assert stats_c["resumed_parts"] == 1
    assert len(log) == 2 * 2  # parts 1 and 2, two teachers each
    assert all(set(q).isdisjoint(first_part_queries) for q in log)
    assert _rows(root / "c") == rows

    assert not os.path.exists(parts)  # removed once merged
    # a finished output is not silently rebuilt
    from sparse.errors import UserError

    with pytest.raises(UserError, match="already holds finished"):
        run_kd(cfg_c, args_c, progress=False, retriever=retriever, teachers=teachers)


class Overlap:
    """A cheap deterministic cross-encoder stand-in: shared lowercase words."""

    is_bi_encoder = False

    def score_pairs(self, queries, docs):
        import torch

        return torch.tensor([len(set(q.lower().split()) & set(d.lower().split())) for q, d in zip(queries, docs)],
                            dtype=torch.float32)


def test_kd_torchrun_sharding_equals_one_process(kd_setup, monkeypatch):
    """Ranks do disjoint parts; rank 0 merges them into what one process writes."""
    from sparse.datagen.miners import BM25Retriever
    from sparse.datagen.sources import load_source

    root, argv = kd_setup
    cfg, args = parse_script_args(argv(root / "one"), KDPrepArguments)
    data = load_source(args.data_dir)
    retriever = BM25Retriever(data.doc_ids, data.doc_texts, progress=False)
    run_kd(cfg, args, progress=False, retriever=retriever, teachers=[Overlap()])
    single = _rows(root / "one")
    assert len(single) == 6

    cfg2, args2 = parse_script_args(argv(root / "two"), KDPrepArguments)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert run_kd(cfg2, args2, progress=False, retriever=retriever, teachers=[Overlap()]) == {}
    parts = str(root / "two") + ".parts"
    assert sorted(os.listdir(parts)) == ["part-00001", "plan.json"]  # 3 parts of 2 queries: rank 1 does part 1
    monkeypatch.setenv("RANK", "0")
    stats = run_kd(cfg2, args2, progress=False, retriever=retriever, teachers=[Overlap()])
    assert stats["rows"] == 6 and _rows(root / "two") == single

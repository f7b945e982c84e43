"""KD data preparation on a SciFact subset: SPLADE retrieval, all-MiniLM-L6-v2 + SPLADE teachers.

The rows are checked against an independent computation done here: each query's documents =
the brute-force top-k of the inference-free SPLADE model (``IndependentSplade``, conftest);
teacher scores = MiniLM mean-pooled, L2-normalized cosines and SPLADE siamese dot products, each
computed one text at a time from the HF models, min-max normalized per query
((s - min) / (max - min + 1e-6)) and averaged over the teachers.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from sparse.datagen.args import KDPrepArguments, parse_script_args
from sparse.datagen.kd import run_kd

TOP_K, MAX_LENGTH, TEACHER_MAX_LENGTH = 5, 64, 64


@pytest.fixture(scope="module")
def kd_setup(scifact_dir, splade_path, idf_path, minilm_path, tmp_path_factory, random_subset):
    root = tmp_path_factory.mktemp("kd")
    data_dir = random_subset(scifact_dir, root / "scifact_kd", n_queries=6, n_extra_docs=30)

    def argv(out, *extra):
        return ["--model_name_or_path", splade_path, "--idf_path", idf_path, "--data_dir", data_dir,
                "--output", str(out), "--cache_dir", str(root / "cache"), "--max_seq_length", "64",
                "--top_k", "5", "--teachers", f"dense:{minilm_path},sparse:{splade_path}",
                "--teacher_max_length", "64", "--queries_per_part", "2", "--save_teacher_scores", "true",
                "--seed", "5", *extra]

    return root, argv


@pytest.fixture(scope="module")
def independent_kd(kd_setup, minilm_path, independent_splade, ranking, beir_files):
    """What a kd row holds, computed without the toolkit: per query the retrieval ranking and
    scores, and ``teacher_raw(query, doc ids) -> [dense scores, sparse scores]``."""
    from transformers import AutoModel, AutoTokenizer

    root, _ = kd_setup
    data = beir_files(str(root / "scifact_kd"))
    doc_ids, text, qids, queries = data["doc_ids"], data["text"], data["qids"], data["queries"]
    retrieval = independent_splade.scores([queries[q] for q in qids], [text[d] for d in doc_ids], MAX_LENGTH)
    tok = AutoTokenizer.from_pretrained(minilm_path)
    dense = AutoModel.from_pretrained(minilm_path).eval()

    @torch.no_grad()
    def dense_vec(t):  # one text: every token is real, mean-pool them, L2-normalize
        enc = tok(t, truncation=True, max_length=TEACHER_MAX_LENGTH, return_tensors="pt")
        e = dense(**enc).last_hidden_state[0].double().mean(0)
        return (e / e.norm()).numpy()

    def sparse_vec(t):  # siamese SPLADE: queries and documents by the document formula
        return independent_splade.doc_vector(t, TEACHER_MAX_LENGTH)

    def teacher_raw(query, ids):
        return [np.array([dense_vec(query) @ dense_vec(text[d]) for d in ids]),
                np.array([sparse_vec(query) @ sparse_vec(text[d]) for d in ids])]

    per_query = {}
    for qid, row in zip(qids, retrieval):
        ids, _ = ranking.rank(doc_ids, row, TOP_K)
        per_query[qid] = (ids, dict(zip(doc_ids, map(float, row))), queries[qid])
    return {"queries": per_query, "text": text, "teacher_raw": teacher_raw}


def check_against_independent(rows, independent, ranking):
    assert [r["q_id"] for r in rows] == sorted(independent["queries"])
    for row in rows:
        ids, score_of, query = independent["queries"][row["q_id"]]
        ranking.check(row["d_ids"], ids, score_of, where=f"query {row['q_id']}")
        assert row["query"] == query and row["docs"] == [independent["text"][d] for d in row["d_ids"]]
        raw = independent["teacher_raw"](query, row["d_ids"])
        normalized = [(s - s.min()) / (s.max() - s.min() + 1e-6) for s in raw]
        np.testing.assert_allclose(row["teacher_scores"], normalized, atol=1e-4, err_msg=row["q_id"])
        np.testing.assert_allclose(row["scores"], np.mean(normalized, axis=0), atol=1e-4, err_msg=row["q_id"])


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


def test_kd_rows_scores_determinism_and_resume(kd_setup, independent_kd, ranking):
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
    check_against_independent(rows, independent_kd, ranking)

    # same seed, same output
    from sparse.datagen.retrievers import SparseRetriever
    from sparse.corpus import load_encoder
    from sparse.datagen.kd import build_kd_ensemble
    from sparse.teachers import TeacherEnsemble
    from sparse.datagen.sources import load_source

    data = load_source(args.data_dir)
    retriever = SparseRetriever(load_encoder(cfg), data.doc_ids, data.doc_texts, cache_dir=str(root / "cache"),
                                key_parts=(data.name,), max_length=64, progress=False)
    ensemble = build_kd_ensemble(args)
    teachers = ensemble.teachers
    cfg_b, args_b = parse_script_args(argv(root / "b"), KDPrepArguments)
    run_kd(cfg_b, args_b, progress=False, retriever=retriever, ensemble=ensemble)
    assert _rows(root / "b") == rows

    # a crash in the second part, then a resumed run: finished parts are not redone
    log = []
    crashing = [Counting(t, log, fail_at=3 if i == 0 else None) for i, t in enumerate(teachers)]  # call 3: part 1
    cfg_c, args_c = parse_script_args(argv(root / "c"), KDPrepArguments)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_kd(cfg_c, args_c, progress=False, retriever=retriever, ensemble=TeacherEnsemble(crashing, 1.0))
    parts = str(root / "c") + ".parts"
    assert sorted(os.listdir(parts)) == ["part-00000", "plan.json"]
    first_part_queries = log[0]
    log.clear()
    resumed = [Counting(t, log) for t in teachers]
    stats_c = run_kd(cfg_c, args_c, progress=False, retriever=retriever, ensemble=TeacherEnsemble(resumed, 1.0))
    assert stats_c["resumed_parts"] == 1
    assert len(log) == 2 * 2  # parts 1 and 2, two teachers each
    assert all(set(q).isdisjoint(first_part_queries) for q in log)
    assert _rows(root / "c") == rows

    assert not os.path.exists(parts)  # removed once merged
    # a finished output is not silently rebuilt
    from sparse.errors import UserError

    with pytest.raises(UserError, match="already holds finished"):
        run_kd(cfg_c, args_c, progress=False, retriever=retriever, ensemble=ensemble)


class Overlap:
    """A cheap deterministic cross-encoder stand-in: shared lowercase words."""

    is_bi_encoder = False

    def score_pairs(self, queries, docs):
        import torch

        return torch.tensor([len(set(q.lower().split()) & set(d.lower().split())) for q, d in zip(queries, docs)],
                            dtype=torch.float32)


def test_kd_torchrun_sharding_equals_one_process(kd_setup, monkeypatch):
    """Ranks do disjoint parts; rank 0 merges them into what one process writes."""
    from sparse.datagen.retrievers import BM25Retriever
    from sparse.datagen.sources import load_source
    from sparse.teachers import TeacherEnsemble

    root, argv = kd_setup
    cfg, args = parse_script_args(argv(root / "one"), KDPrepArguments)
    data = load_source(args.data_dir)
    retriever = BM25Retriever(data.doc_ids, data.doc_texts, progress=False)
    run_kd(cfg, args, progress=False, retriever=retriever, ensemble=TeacherEnsemble([Overlap()], 1.0))
    single = _rows(root / "one")
    assert len(single) == 6

    cfg2, args2 = parse_script_args(argv(root / "two"), KDPrepArguments)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert run_kd(cfg2, args2, progress=False, retriever=retriever, ensemble=TeacherEnsemble([Overlap()], 1.0)) == {}
    parts = str(root / "two") + ".parts"
    assert sorted(os.listdir(parts)) == ["part-00001", "plan.json"]  # 3 parts of 2 queries: rank 1 does part 1
    monkeypatch.setenv("RANK", "0")
    stats = run_kd(cfg2, args2, progress=False, retriever=retriever, ensemble=TeacherEnsemble([Overlap()], 1.0))
    assert stats["rows"] == 6 and _rows(root / "two") == single

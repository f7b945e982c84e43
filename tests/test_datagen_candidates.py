"""``data_preparation.py --candidates student,bm25,dense:MODEL --write_posnegs DIR`` on a SciFact subset.

Checked against computations done here without the toolkit:

* each retriever's brute-force top-k: inference-free SPLADE (``IndependentSplade``, conftest),
  BM25 by bm25s's own ``get_scores`` (English stemmer and stop words, k1 = 0.9, b = 0.4), and
  all-MiniLM-L6-v2 cosines (mean-pooled, L2-normalized, one text at a time);
* a row's documents = the union of the three top-k plus the query's judged positives, ordered by
  the ensemble score (descending, ties by doc id); with the one teacher ``bm25`` that score is
  min-max((bm25s scores over the row's documents));
* posnegs rows: per positive, negatives = the row's documents in order, minus judged ones, minus
  those scored >= (lowest positive's score - margin).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

TOP_K, MARGIN, MAX_LENGTH = 4, 0.45, 64


@pytest.fixture(scope="module")
def setup(scifact_dir, splade_path, idf_path, minilm_path, tmp_path_factory, random_subset, beir_files):
    root = tmp_path_factory.mktemp("cand")
    data_dir = random_subset(scifact_dir, root / "scifact_cand", n_queries=5, n_extra_docs=30)
    # a judged positive no retriever finds: only --include_positives brings it to the teachers; it
    # joins a query that has an easy positive, so the lowest positive score is not the highest
    with open(os.path.join(data_dir, "qrels", "train.tsv"), encoding="utf-8") as f:
        hidden_qid = sorted({line.split("\t")[0] for line in f.read().splitlines()[1:]})[1]
    with open(os.path.join(data_dir, "corpus.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"_id": "zz-hidden", "title": "", "text": "xylophone quartz"}) + "\n")
    with open(os.path.join(data_dir, "qrels", "train.tsv"), "a", encoding="utf-8") as f:
        f.write(f"{hidden_qid}\tzz-hidden\t1\n")
    data = beir_files(data_dir)
    text, qrels, queries = data["text"], data["qrels"], data["queries"]
    argv = ["--model_name_or_path", splade_path, "--idf_path", idf_path, "--data_dir", data_dir,
            "--output", str(root / "kd"), "--cache_dir", str(root / "cache"), "--max_seq_length", str(MAX_LENGTH),
            "--top_k", str(TOP_K), "--teachers", "bm25", "--teacher_max_length", str(MAX_LENGTH),
            "--candidates", f"student,bm25,dense:{minilm_path}", "--dense_pooling", "mean",
            "--write_posnegs", str(root / "posnegs"), "--negative_margin", str(MARGIN), "--queries_per_part", "2"]
    return {"root": root, "argv": argv, "ids": sorted(text), "text": text, "qrels": qrels, "queries": queries}


def independent_scores(setup, independent_splade, minilm_path):
    """{retriever: (n_queries, n_docs)} computed here, queries in sorted id order."""
    import bm25s
    import Stemmer
    from transformers import AutoModel, AutoTokenizer

    ids, text = setup["ids"], setup["text"]
    qids = sorted(setup["queries"])
    qtexts, dtexts = [setup["queries"][q] for q in qids], [text[d] for d in ids]
    student = independent_splade.scores(qtexts, dtexts, MAX_LENGTH)
    stemmer = Stemmer.Stemmer("english")
    model = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
    model.index(bm25s.tokenize(dtexts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    bm25 = np.stack([model.get_scores(t) for t in bm25s.tokenize(qtexts, stopwords="en", stemmer=stemmer,
                                                                     return_ids=False, show_progress=False)])
    tok = AutoTokenizer.from_pretrained(minilm_path)
    dense_model = AutoModel.from_pretrained(minilm_path).eval()

    @torch.no_grad()
    def vec(t):
        e = dense_model(**tok(t, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")).last_hidden_state[0]
        e = e.double().mean(0)
        return (e / e.norm()).numpy()

    dvecs = np.stack([vec(t) for t in dtexts])
    dense = np.stack([dvecs @ vec(q) for q in qtexts])
    return qids, {"student": student, "bm25": bm25, "dense": dense}


def test_union_candidates_and_teacher_filtered_posnegs(setup, independent_splade, minilm_path, ranking):
    from datasets import load_from_disk

    from sparse.datagen.args import KDPrepArguments, parse_script_args
    from sparse.datagen.kd import run_kd

    cfg, args = parse_script_args(setup["argv"], KDPrepArguments)
    stats = run_kd(cfg, args, progress=False)
    qids, scores = independent_scores(setup, independent_splade, minilm_path)
    ids, qrels = setup["ids"], setup["qrels"]
    kd = {r["q_id"]: r for r in load_from_disk(str(setup["root"] / "kd"))}
    assert sorted(kd) == qids and stats["queries_dropped"] == 0
    for i, q in enumerate(qids):
        row = kd[q]
        union = {d for d, g in qrels[q].items() if g > 0}  # the positives, always scored here
        boundary = set()
        for name, s in scores.items():
            positive = (s[i] > 0) if name != "dense" else np.ones(len(ids), bool)
            order = sorted((d for d, keep in zip(ids, positive) if keep), key=lambda d: (-s[i][ids.index(d)], d))
            union |= set(order[:TOP_K])
            if len(order) > TOP_K:  # documents tied with the k-th within float noise may go either way
                kth = s[i][ids.index(order[TOP_K - 1])]
                boundary |= {d for d in order if np.isclose(s[i][ids.index(d)], kth, rtol=1e-5, atol=1e-6)}
        got = set(row["d_ids"])
        assert len(got) == len(row["d_ids"])
        assert got ^ union <= boundary, f"{q}: got {sorted(got)}, want {sorted(union)}"
        # the one teacher, bm25: min-max of bm25s's scores over the row's documents, best first
        raw = np.array([scores["bm25"][i][ids.index(d)] for d in row["d_ids"]])
        want = (raw - raw.min()) / (raw.max() - raw.min() + 1e-6)
        np.testing.assert_allclose(row["scores"], want, atol=1e-5)
        want_order, _ = ranking.rank(row["d_ids"], want + 1.0)  # + 1: rank keeps scores > 0 only
        ranking.check(row["d_ids"], want_order, dict(zip(row["d_ids"], want)))
    assert stats["positives_added"] == 1  # zz-hidden
    assert stats["retriever_hits"] == {"student": len(qids) * TOP_K, "bm25": len(qids) * TOP_K,
                                       f"dense:{minilm_path}": len(qids) * TOP_K}

    # posnegs: an independent filter over each row
    posnegs = load_from_disk(str(setup["root"] / "posnegs"))
    with open(setup["root"] / "posnegs" / "stats.json", encoding="utf-8") as f:
        pstats = json.load(f)
    want_rows, dropped_by_margin, in_band, spread = [], 0, 0, 0.0
    for q in qids:
        row = kd[q]
        score_of = dict(zip(row["d_ids"], row["scores"]))
        positives = sorted(d for d, g in qrels[q].items() if g > 0)
        floor = min(score_of[p] for p in positives) - MARGIN
        spread = max(spread, max(score_of[p] for p in positives) - floor - MARGIN)
        negs = [d for d in row["d_ids"] if d not in qrels[q] and score_of[d] < floor]
        dropped_by_margin += sum(1 for d in row["d_ids"] if d not in qrels[q] and score_of[d] >= floor)
        in_band += sum(1 for d in row["d_ids"] if d not in qrels[q] and floor <= score_of[d] < floor + MARGIN)
        if negs:
            want_rows += [(q, p, negs) for p in positives]
    got_rows = [(r["query_id"], r["pos_id"], r["neg_ids"]) for r in posnegs]
    assert got_rows == want_rows
    assert in_band > 0  # the margin matters on this data: some candidates score just below a positive
    assert spread > MARGIN  # and which positive sets the floor matters too
    assert pstats["extra"]["negatives_dropped_by_margin"] == dropped_by_margin
    assert pstats["rows"] == len(want_rows) == stats["posnegs"]["rows"]
    for r in posnegs:
        assert r["query"] == setup["queries"][r["query_id"]] and r["pos"] == setup["text"][r["pos_id"]]
        assert r["negs"] == [setup["text"][d] for d in r["neg_ids"]]


def test_candidate_arguments():
    from sparse.datagen.args import KDPrepArguments, parse_candidates, parse_script_args
    from sparse.errors import ConfigError

    assert parse_candidates(["student", "bm25", "dense:m"]) == [("student", None), ("bm25", None), ("dense", "m")]
    for bad in (["dense"], ["bm25:x"], ["colbert"], ["bm25", "bm25"], []):
        with pytest.raises(ConfigError):
            parse_candidates(bad)
    _, args = parse_script_args(["--teachers", "bm25"], KDPrepArguments)
    assert args.candidates == ["student"] and not args.wants_positives()
    _, args = parse_script_args(["--teachers", "bm25", "--candidates", "student,bm25"], KDPrepArguments)
    assert args.wants_positives()
    _, args = parse_script_args(["--teachers", "bm25", "--write_posnegs", "x"], KDPrepArguments)
    assert args.wants_positives()
    with pytest.raises(ConfigError, match="include_positives"):
        parse_script_args(["--write_posnegs", "x", "--include_positives", "false"], KDPrepArguments)
    with pytest.raises(ConfigError, match="BM25 b|bm25_b"):
        parse_script_args(["--bm25_b", "2"], KDPrepArguments)

"""Hard-negative mining on a SciFact subset with the offline SPLADE model (and BM25)."""

from __future__ import annotations

import json
import os
import random

import pytest

from sparse.datagen.args import MiningArguments, parse_script_args
from sparse.datagen.mining import run_mining


def make_subset(src: str, dst, n_queries: int, n_extra_docs: int, split: str = "train", seed: int = 0) -> str:
    """A BEIR dir with the first ``n_queries`` queries of ``split``, their judged docs and random others."""
    os.makedirs(dst / "qrels", exist_ok=True)
    with open(os.path.join(src, "qrels", f"{split}.tsv"), encoding="utf-8") as f:
        header, *lines = f.read().splitlines()
    rows = [line.split("\t") for line in lines if line.strip()]
    qids = sorted({r[0] for r in rows})[:n_queries]
    keep = [r for r in rows if r[0] in set(qids)]
    with open(os.path.join(src, "corpus.jsonl"), encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    judged = {r[1] for r in keep}
    others = [d for d in docs if d["_id"] not in judged]
    random.Random(seed).shuffle(others)
    chosen = [d for d in docs if d["_id"] in judged] + others[:n_extra_docs]
    (dst / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in chosen), encoding="utf-8")
    with open(os.path.join(src, "queries.jsonl"), encoding="utf-8") as f:
        (dst / "queries.jsonl").write_text(f.read(), encoding="utf-8")
    (dst / "qrels" / f"{split}.tsv").write_text(header + "\n" + "".join("\t".join(r) + "\n" for r in keep),
                                                encoding="utf-8")
    return str(dst)


@pytest.fixture(scope="module")
def scifact_subset(scifact_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("beir")
    make_subset(scifact_dir, root / "scifact_sub", n_queries=30, n_extra_docs=150)
    return str(root)


def _mine(tmp, beir_root, *extra):
    # one corpus-vector cache for the module (next to the subset): later tests reuse the encoding
    argv = ["--beir_dir", beir_root, "--beir_datasets", "scifact_sub", "--output", str(tmp / "out"),
            "--cache_dir", os.path.join(beir_root, "cache"), *extra]
    cfg, args = parse_script_args(argv, MiningArguments)
    return run_mining(cfg, args, progress=False), str(tmp / "out")


def _check_rows(out, scifact_subset, min_negs, coverage=0.985):
    from datasets import load_from_disk

    from sparse.data.beir import load_beir

    _, queries, qrels = load_beir(os.path.join(scifact_subset, "scifact_sub"), "train")
    ds = load_from_disk(out)
    assert {"query", "pos", "negs"} <= set(ds.column_names)
    with_positive = {q for q, rel in qrels.items() if any(g > 0 for g in rel.values())}
    covered = set(ds["query_id"])
    assert len(covered) >= coverage * len(with_positive)  # the bar: 800 of 809 (0.989)
    for row in ds:
        assert len(row["negs"]) >= min_negs
        assert not set(row["neg_ids"]) & set(qrels[row["query_id"]])  # no judged doc is a negative
        assert qrels[row["query_id"]][row["pos_id"]] > 0
        assert row["query"] == queries[row["query_id"]]
    # one row per (query, positive)
    assert len(ds) == sum(sum(1 for g in qrels[q].values() if g > 0) for q in covered)
    return ds


def test_sparse_mining_on_scifact_subset(tmp_path, scifact_subset, splade_path, idf_path):
    stats, out = _mine(tmp_path, scifact_subset, "--model_name_or_path", splade_path, "--idf_path", idf_path,
                       "--max_seq_length", "128", "--top_k", "50")
    ds = _check_rows(out, scifact_subset, min_negs=10)
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["rows"] == len(ds) == stats["rows"]
    assert saved["queries_kept"] + saved["queries_dropped"] == saved["queries_in"] == 30
    assert saved["mean_negatives"] >= 10
    # the positives are mostly found: the model retrieves, it does not return arbitrary documents
    assert saved["positives_in_candidates"] >= 0.5 * len(ds)
    # a second run reads the cached corpus vectors and refuses to overwrite without being told
    from sparse.errors import UserError

    with pytest.raises(UserError, match="overwrite"):
        _mine(tmp_path, scifact_subset, "--model_name_or_path", splade_path)
    stats2, _ = _mine(tmp_path, scifact_subset, "--model_name_or_path", splade_path, "--idf_path", idf_path,
                      "--max_seq_length", "128", "--top_k", "50", "--skip_top", "3", "--negatives_per_query",
                      "10", "--sampling", "random", "--seed", "3", "--overwrite", "true")
    from datasets import load_from_disk

    sampled = load_from_disk(out)
    full = {r["query_id"]: r["neg_ids"] for r in ds}
    for row in sampled:
        assert len(row["neg_ids"]) == 10
        assert set(row["neg_ids"]) <= set(full[row["query_id"]][3:])  # drawn below the skipped top 3


def test_bm25_mining_on_scifact_subset(tmp_path, scifact_subset):
    # on a 190-document subset a few queries share words with fewer than 10 documents
    stats, out = _mine(tmp_path, scifact_subset, "--miner", "bm25", "--top_k", "50", "--negatives_per_query", "20",
                       "--min_negatives", "10")
    ds = _check_rows(out, scifact_subset, min_negs=10, coverage=0.8)
    assert all(10 <= len(n) <= 20 for n in ds["negs"])
    assert stats["queries_kept"] + stats["queries_dropped"] == 30
    assert stats["positives_in_candidates"] >= 0.5 * len(ds)


def test_mining_errors(tmp_path, scifact_subset):
    from sparse.errors import UserError

    with pytest.raises(UserError, match="exactly one"):
        _mine(tmp_path, scifact_subset, "--miner", "bm25", "--beir_datasets", "a,b")
    with pytest.raises(UserError, match="split 'dev' is missing"):
        _mine(tmp_path, scifact_subset, "--miner", "bm25", "--split", "dev")


def test_opensearch_engine_mines_what_the_embedded_engine_mines(tmp_path, scifact_subset, splade_path, idf_path):
    """Through a live osmem-server (rank_features, 9-bit weights) = embedded at OpenSearch precision."""
    import subprocess

    from datasets import load_from_disk
    from osmem_server import resolve_binary

    common = ["--model_name_or_path", splade_path, "--idf_path", idf_path, "--max_seq_length", "128",
              "--top_k", "20"]
    _mine(tmp_path / "emb", scifact_subset, *common, "--index_precision", "opensearch")
    proc = subprocess.Popen([resolve_binary(), "--addr", "127.0.0.1:0", "--no-ja"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = json.loads(proc.stdout.readline())["url"]
        _mine(tmp_path / "os", scifact_subset, *common, "--engine", "opensearch", "--opensearch_url", url)
    finally:
        proc.stdin.close()  # osmem exits when stdin closes
        proc.wait(timeout=10)
    emb, os_rows = load_from_disk(str(tmp_path / "emb" / "out")), load_from_disk(str(tmp_path / "os" / "out"))
    assert len(emb) > 0 and emb.to_list() == os_rows.to_list()

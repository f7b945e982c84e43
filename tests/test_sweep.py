"""The serving keys in ``evaluate_beir.py`` (results JSON, report, cache reuse, bad combinations), the sweep
command end to end on a tiny model and a toy corpus (files, tolerance marks, the choice, the printed export
command, which is then run), and the export's ``--prune_type`` / ``--prune_ratio``.
"""

from __future__ import annotations

import csv
import json
import shlex

import pytest

from sparse.evaluation.runner import main as evaluate_main
from sparse.evaluation.sweep import main as sweep_main
from sparse.export.command import main as export_main
from sparse.modeling.encoder import SparseEncoder
from sparse.retrieval.pruning import prune_documents

CORPUS = {"d1": {"title": "", "text": "the cat sat on the mat"}, "d2": {"title": "a", "text": "dog is big"},
          "d3": {"title": "", "text": "the bird flew over the house"}, "d4": {"title": "", "text": "red blue green"},
          "d5": {"title": "", "text": "a small red house"}}
QUERIES = {"q1": "cat on a mat", "q2": "big dog", "q3": "bird house"}
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 2, "d1": 0}}
MAX_LENGTH = 32


@pytest.fixture(scope="module")
def toy(tmp_path_factory, tiny_checkpoint_factory, beir_writer):
    root = tmp_path_factory.mktemp("serving")
    mlm, tok = tiny_checkpoint_factory(root, seed=3)
    SparseEncoder(mlm, tok).save_pretrained(str(root / "model"))
    beir_writer(root / "beir" / "toy", CORPUS, QUERIES, QRELS)
    base = ["--model_name_or_path", str(root / "model"), "--beir_datasets", "toy", "--beir_dir", str(root / "beir"),
            "--cache_dir", str(root / "cache"), "--corpus_max_seq_length", str(MAX_LENGTH), "--inf_free", "true"]
    docs = SparseEncoder.from_pretrained(str(root / "model")).encode_documents(
        [(CORPUS[d]["title"] + " " + CORPUS[d]["text"]).strip() for d in sorted(CORPUS)], max_length=MAX_LENGTH)
    return {"root": root, "base": base, "docs": docs}


def run_cli(main, argv, capsys):
    """(exit status, stdout, stderr) of an entry point run in-process."""
    try:
        main(list(map(str, argv)))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_serving_keys_reach_the_results_and_reuse_the_cache(toy, capsys):
    root = toy["root"]
    evaluate_main(toy["base"] + ["--output_dir", str(root / "plain")])
    evaluate_main(toy["base"] + ["--output_dir", str(root / "pruned"), "--doc_prune_type", "top_k",
                                 "--doc_prune_value", "4", "--index_precision", "impact", "--impact_scale", "10"])
    plain = json.loads((root / "plain" / "beir_eval_32" / "results" / "toy.json").read_text())
    pruned = json.loads((root / "pruned" / "beir_eval_32_top_k-4" / "results" / "toy.json").read_text())
    assert pruned["corpus_cache"]["hit"] is True  # serving settings never change the cached vectors
    assert pruned["serving"] == {"doc_prune_type": "top_k", "doc_prune_value": 4.0, "model_prune_ratio": None,
                                 "index_precision": "impact", "seismic_ceiling_ingest": None, "impact_scale": 10.0,
                                 "query_prune": 0.0, "use_two_phase": False}
    assert plain["index"]["postings"] == toy["docs"].nnz
    top4 = prune_documents(toy["docs"], "top_k", 4)
    assert top4.lengths().max() <= 4 < toy["docs"].lengths().max()
    assert 0 < pruned["index"]["postings"] <= top4.nnz  # impacts rounded to 0 leave no posting
    assert plain["index"]["index_bytes"] == plain["index"]["postings"] * 8
    assert plain["latency"]["queries_timed"] == len(QUERIES) and plain["latency"]["p99_ms"] > 0
    table = (root / "plain" / "beir_eval_32" / "summary.md").read_text()
    assert "| postings | index_bytes | touched_per_query | p50_ms | p99_ms |" in table


@pytest.mark.parametrize("extra,message", [
    (["--doc_prune_type", "max_ratio"], "needs doc_prune_value"),
    (["--doc_prune_type", "top_k", "--doc_prune_value", "0.5"], "integer >= 1"),
    (["--doc_prune_value", "0.1"], "doc_prune_type is none"),
    (["--seismic_ceiling_ingest", "4"], "applies to index_precision seismic"),
    (["--index_precision", "seismic", "--engine", "opensearch", "--opensearch_url", "http://127.0.0.1:9"],
     "embedded engine"),
])
def test_bad_serving_combinations_stop_before_writing(toy, capsys, extra, message):
    from sparse.config import run_cli as config_run_cli

    out_dir = toy["root"] / "bad"
    code, _, err = run_cli(lambda a: config_run_cli(evaluate_main, a), toy["base"] + ["--output_dir", out_dir] + extra,
                           capsys)
    assert code == 2 and err.count("error:") == 1 and message in err
    assert not out_dir.exists()


@pytest.fixture(scope="module")
def sweep(toy, tmp_path_factory):
    """A sweep with a tolerance that lets pruned settings in; (output folder, sweep.json, stdout)."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        sweep_main(toy["base"] + ["--output_dir", str(out), "--max_ratio", "0.1", "0.3", "--top_k", "4",
                                  "--alpha_mass", "0.8", "--precisions", "float", "opensearch", "seismic",
                                  "--seismic_ceiling_ingest", "2", "--tolerance", "0.05"])
    return out, json.loads((out / "sweep.json").read_text()), buf.getvalue()


def test_sweep_writes_its_table_and_plot(sweep, real_png):
    out, summary, _ = sweep
    rows = summary["rows"]
    assert len(rows) == 3 * (1 + 2 + 1 + 1)  # precisions x (none + the grid)
    assert rows[0]["setting"] == "none / float" == summary["reference"]["setting"]
    with open(out / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["setting"] for r in table] == [r["setting"] for r in rows]
    assert "**chosen**" in (out / "sweep.md").read_text()
    assert {r["serving"]["seismic_ceiling_ingest"] for r in summary["results"]} == {None, 2.0}
    real_png(out / "sweep.png")
    # every precision holds the same postings per prune setting; bytes follow the format
    by = {(r["prune_type"], r["prune_value"], r["precision"]): r for r in rows}
    for (t, v, p), r in by.items():
        assert r["postings"] <= by[(t, v, "float")]["postings"]
        assert r["index_bytes"] == r["postings"] * {"float": 8, "opensearch": 6, "seismic": 5}[p]


def test_sweep_marks_the_tolerance_and_chooses_the_fewest_postings(sweep, toy):
    _, summary, printed = sweep
    rows, ref = summary["rows"], summary["reference"]
    assert ref["postings"] == toy["docs"].nnz
    within = [r for r in rows if r["NDCG@10"] >= ref["NDCG@10"] - 0.05]
    assert [r["within_tolerance"] for r in rows] == [r in within for r in rows]
    assert len(within) < len(rows)  # the tolerance really excludes something here
    fewest = min(r["postings"] for r in within)
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["postings"] == fewest and chosen[0]["prune_type"] != "none"
    assert chosen[0]["index_bytes"] == min(r["index_bytes"] for r in within if r["postings"] == fewest)
    assert summary["chosen"]["setting"] == chosen[0]["setting"] and chosen[0]["setting"] in printed
    assert f"  {summary['export_command']}\n" in printed


def test_the_printed_export_command_writes_the_pruning_into_the_pipeline(sweep, tmp_path):
    _, summary, _ = sweep
    words = shlex.split(summary["export_command"])
    assert words[:3] == ["python", "-m", "sparse.export"]
    args = words[3:]
    args[args.index("--output") + 1] = str(tmp_path / "export")
    export_main(args + ["--no_onnx"])
    pipeline = json.loads((tmp_path / "export" / "requests" / "ingest_pipeline.json").read_text())
    proc = pipeline["processors"][0]["sparse_encoding"]
    assert proc["prune_type"] == summary["chosen"]["prune_type"]
    assert proc["prune_ratio"] == summary["chosen"]["prune_value"]


@pytest.mark.parametrize("extra,message", [
    (["--max_ratio", "0.1", "1.5"], "--max_ratio values must be in [0, 1), got 1.5"),
    (["--top_k", "2.5"], "--top_k values must be an integer >= 1"),
    (["--beir_datasets", "toy,other"], "one dataset"),
    (["--index_precision", "opensearch"], "sets index_precision itself"),
    (["--precisions", "float", "bf16"], "precisions entries must be among"),
    (["--impact_scale", "10"], "applies to index_precision impact"),
])
def test_sweep_bad_input_is_one_error_and_writes_nothing(toy, capsys, tmp_path, extra, message):
    code, out, err = run_cli(sweep_main, toy["base"] + ["--output_dir", tmp_path / "out"] + extra, capsys)
    assert code == 2 and err.strip().count("\n") == 0 and err.startswith("error:") and message in err, err
    assert not (tmp_path / "out").exists()


def test_sweep_never_replaces_files_it_did_not_write(toy, capsys, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sweep.md").write_text("someone's notes")
    argv = toy["base"] + ["--output_dir", tmp_path / "out", "--max_ratio", "0.1", "--top_k", "--alpha_mass"]
    code, _, err = run_cli(sweep_main, argv, capsys)
    assert code == 2 and "--overwrite" in err
    code, _, err = run_cli(sweep_main, argv + ["--overwrite"], capsys)
    assert code == 2 and "no earlier sweep wrote" in err
    assert (tmp_path / "out" / "sweep.md").read_text() == "someone's notes"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sweep.md"]


@pytest.mark.parametrize("extra,message", [
    (["--prune_type", "top_k", "--prune_ratio", "0.5"], "integer >= 1"),
    (["--prune_type", "max_ratio"], "needs --prune_ratio"),
    (["--prune_ratio", "0.2"], "--prune_type is none"),
])
def test_export_prune_options_are_checked_before_writing(toy, capsys, tmp_path, extra, message):
    code, _, err = run_cli(export_main, [toy["root"] / "model", "--to", "opensearch", "--output", tmp_path / "x"]
                           + extra, capsys)
    assert code == 2 and message in err and err.startswith("error:")
    assert not (tmp_path / "x").exists()

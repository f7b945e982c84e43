"""Bad input: each case ends with one clear message (what, where, how to fix), exit code 2, no
traceback, and no output directory left behind. Entry points run in-process through ``run_cli``
(the same function the scripts call); two cases run as real processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from sparse.errors import UserError

TRAIN = ["model_name_or_path={model}", "train_file={posnegs}", "data_type=posnegs", "loss_types=[infonce]",
         "output_dir={out}", "max_steps=1", "report_to=none", "max_seq_length=16"]
EVAL = ["--model_name_or_path", "{model}", "--beir_dir", "{beir}", "--beir_datasets", "tinyset",
        "--output_dir", "{out}"]
MINE = ["--model_name_or_path", "{model}", "--beir_dir", "{beir}", "--beir_datasets", "tinyset", "--split", "test",
        "--output", "{out}"]
KD = ["--model_name_or_path", "{model}", "--data_dir", "{beir}/tinyset", "--split", "test", "--output", "{out}"]


def _train(*extra, **replace):
    """The training arguments with ``key=value`` entries replaced and ``extra`` added."""
    args = [a for a in TRAIN if a.split("=")[0] not in replace]
    return args + [f"{k}={v}" for k, v in replace.items()] + list(extra)


# (id, entry point, argv with {placeholders}, regex the one-line message must match)
CASES = [
    ("yaml-unknown-key", "train_ir", ["{f[typo_yaml]}", *TRAIN],
     r"unknown config key 'flops_d_lamda' in .*typo\.yaml; did you mean 'flops_d_lambda'"),
    ("cli-unknown-key", "train_ir", _train("flops_d_lamda=1"),
     r"unknown config key 'flops_d_lamda' on the command line; did you mean 'flops_d_lambda'"),
    ("wrong-type-int", "train_ir", _train(max_seq_length="long"),
     r"'max_seq_length' expects int, got 'long' \(on the command line\)"),
    ("wrong-type-bool", "train_ir", _train("inf_free=maybe"), r"'inf_free' expects bool"),
    ("missing-yaml", "train_ir", ["{tmp}/nope.yaml"], r"config file not found: .*nope\.yaml"),
    ("invalid-yaml", "train_ir", ["{f[bad_yaml]}"], r"bad\.yaml is not valid YAML"),
    ("yaml-not-mapping", "train_ir", ["{f[list_yaml]}"], r"list\.yaml must hold a mapping"),
    ("no-model", "train_ir", ["train_file={posnegs}", "output_dir={out}"], r"model_name_or_path is required"),
    ("model-dir-empty", "train_ir", _train(model_name_or_path="{f[empty_dir]}"), r"holds no model \(no config\.json"),
    ("model-without-mlm-head", "train_ir", _train(model_name_or_path="{f[headless]}"), r"has no masked-LM head"),
    ("train-file-missing", "train_ir", _train(train_file="{tmp}/none.jsonl"),
     r"train_file: file or directory not found: .*none\.jsonl"),
    ("train-file-empty", "train_ir", _train(train_file="{f[empty_jsonl]}"), r"empty\.jsonl"),
    ("missing-column", "train_ir", _train(train_file="{f[nocol_jsonl]}"), r"needs column\(s\) \['negs'\]"),
    ("empty-lists", "train_ir", _train(train_file="{f[emptylist_jsonl]}"), r"fewer than sample_num_one_query"),
    ("sample-num-too-large", "train_ir", _train(sample_num_one_query=9), r"fewer than sample_num_one_query=9"),
    ("kd-scores-docs-differ", "train_ir", _train(train_file="{f[kd_mismatch]}", data_type="kd",
                                                 loss_types="[kldiv]"), r"row 0 has 4 docs but 3 scores"),
    ("idf-not-json", "train_ir", _train(idf_path="{f[idf_badjson]}"), r"IDF file .*idf_bad\.json is not valid JSON"),
    ("idf-other-tokenizer", "train_ir", _train(idf_path="{f[idf_foreign]}"),
     r"2 of 2 tokens of .*idf_foreign\.json are not in the tokenizer's vocabulary"),
    ("idf-missing", "train_ir", _train(idf_path="{tmp}/none.json"), r"idf_path: file not found"),
    ("report-to-not-installed", "train_ir", _train(report_to="tensorboard"),
     r"report_to=tensorboard, but the 'tensorboard' package is not installed"),
    ("resume-without-checkpoint", "train_ir", _train(resume_from_checkpoint="true"),
     r"resume_from_checkpoint=true, but .* holds no checkpoint"),
    ("resume-not-a-checkpoint", "train_ir", _train(resume_from_checkpoint="{f[empty_dir]}"),
     r"is not a checkpoint directory"),
    ("bad-activation", "train_ir", _train(activation_type="gelu"), r"activation_type must be one of"),
    ("loss-weights-count", "train_ir", _train(loss_weights="[1,2]"), r"loss_weights needs one weight per entry"),
    ("data-type-kd-ids", "train_ir", _train(data_type="kd-ids"), r"data_type kd-ids .* not supported"),
    ("old-lelu-key", "train_ir", _train(lelu_alpha=0.1), r"lelu_alpha .* is not supported"),
    ("eval-dir-without-model", "evaluate_beir", [*EVAL[2:], "--model_name_or_path", "{f[empty_dir]}"],
     r"holds no model \(no config\.json"),
    ("eval-misspelled-dataset", "evaluate_beir", [*EVAL[:4], "--beir_datasets", "scifcat", "--output_dir", "{out}"],
     r"unknown BEIR dataset 'scifcat' .*did you mean 'scifact'\? known names: msmarco"),
    ("eval-no-qrels-for-split", "evaluate_beir", [*EVAL, "--eval_split", "dev"],
     r"tinyset/qrels/dev\.tsv not found, so split 'dev' cannot be evaluated; splits here: \['test'\]"),
    ("eval-credentials-in-url", "evaluate_beir", [*EVAL, "--engine", "opensearch", "--opensearch_url",
                                                  "http://bob:hunter2@127.0.0.1:9"],
     r"opensearch_url must not hold credentials.*OPENSEARCH_USER"),
    ("eval-two-phase-embedded", "evaluate_beir", [*EVAL, "--use_two_phase", "true"], r"use_two_phase .* needs --engine"),
    ("eval-top-k-zero", "evaluate_beir", [*EVAL, "--eval_top_k", "0"], r"eval_top_k must be >= 1"),
    ("eval-no-datasets", "evaluate_beir", [*EVAL[:4], "--beir_datasets", ",", "--output_dir", "{out}"],
     r"beir_datasets is empty"),
    ("mine-script-key-typo", "demo_train_data", [*MINE, "--minr", "bm25"],
     r"unknown config key 'minr' on the command line; did you mean 'miner'"),
    ("mine-skip-top", "demo_train_data", [*MINE, "--top_k", "5", "--skip_top", "5"], r"skip_top \(5\) must be below"),
    ("mine-misspelled-dataset", "demo_train_data", [*MINE[:4], "--beir_datasets", "nfcorpos"],
     r"unknown BEIR dataset 'nfcorpos'.*did you mean 'nfcorpus'"),
    ("kd-teacher-missing", "data_preparation", [*KD, "--teachers", "dense:{tmp}/no/such/model"],
     r"--teachers dense:.*: model directory not found"),
    ("kd-teacher-spec", "data_preparation", [*KD, "--teachers", "magic:x"], r"teacher 'magic:x' must be TYPE:MODEL"),
    ("kd-data-dir-missing", "data_preparation", [*KD[:2], "--data_dir", "{tmp}/nodata", "--teachers", "bm25"],
     r"data_dir: directory not found"),
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, faults_env, jsonl_writer):
    """Files that are wrong in one way each."""
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("bad")
    rows = faults_env["rows"]
    (root / "typo.yaml").write_text("flops_d_lamda: 0.1\n")
    (root / "bad.yaml").write_text("a: [unclosed\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "empty").mkdir()
    (root / "empty.jsonl").write_text("")
    jsonl_writer(root / "nocol.jsonl", [{"query": r["query"], "pos": r["pos"]} for r in rows])
    jsonl_writer(root / "emptylist.jsonl", [{**r, "negs": []} for r in rows])
    jsonl_writer(root / "kd_mismatch.jsonl", [{"query": r["query"], "docs": [r["pos"], *r["negs"]],
                                               "scores": [3.0, 2.0, 1.0]} for r in rows])
    (root / "idf_bad.json").write_text("{")
    (root / "idf_foreign.json").write_text(json.dumps({"zebra": 2.0, "quokka": 3.0}))
    headless = BertModel(BertConfig(vocab_size=23, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=32, max_position_embeddings=64))
    headless.save_pretrained(root / "headless")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(faults_env["model"]).save_pretrained(root / "headless")
    names = {"typo_yaml": "typo.yaml", "bad_yaml": "bad.yaml", "list_yaml": "list.yaml", "empty_dir": "empty",
             "empty_jsonl": "empty.jsonl", "nocol_jsonl": "nocol.jsonl", "emptylist_jsonl": "emptylist.jsonl",
             "kd_mismatch": "kd_mismatch.jsonl", "idf_badjson": "idf_bad.json", "idf_foreign": "idf_foreign.json",
             "headless": "headless"}
    return {k: str(root / v) for k, v in names.items()}


def _fill(argv, faults_env, bad_files, tmp_path):
    values = {"model": faults_env["model"], "posnegs": faults_env["posnegs"], "beir": faults_env["beir_dir"],
              "out": str(tmp_path / "out"), "tmp": str(tmp_path), "f": bad_files}
    return [a.format(**values) for a in argv]


def test_at_least_25_bad_inputs():
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error(case, cli, faults_env, bad_files, tmp_path, monkeypatch):
    name, entry, argv, pattern = case
    if name == "report-to-not-installed" and _installed("tensorboard"):
        pytest.skip("tensorboard is installed here")
    monkeypatch.chdir(tmp_path)  # anything written to a default path would land here
    before = set(os.listdir(tmp_path))
    code, out, err = cli(entry, *_fill(argv, faults_env, bad_files, tmp_path))
    assert code == 2, (code, out, err)
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(message) == 1, err
    assert re.search(pattern, message[0]), message[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists(), "a failed command left its output directory"
    assert set(os.listdir(tmp_path)) == before, "a failed command left files behind"


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("entry", ["train_ir", "evaluate_beir", "data_preparation", "demo_train_data"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_keys(entry, flag, cli):
    code, out, err = cli(entry, flag)
    assert code == 0, err
    assert f"{entry}.py" in out and "model_name_or_path" in out and "beir_datasets" in out
    if entry == "train_ir":
        assert "learning_rate" in out and "resume_from_checkpoint" in out
    if entry == "demo_train_data":
        assert "miner" in out and "negatives_per_query" in out
    if entry == "data_preparation":
        assert "teachers" in out and "queries_per_part" in out


def test_debug_shows_the_traceback(cli, faults_env, tmp_path):
    with pytest.raises(UserError, match="model_name_or_path is required"):
        cli("train_ir", "--debug", f"output_dir={tmp_path / 'out'}")


def test_real_processes_exit_2_without_traceback_and_files(tmp_path):
    """As a user types it: no arguments at all, and --help, as separate processes."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo)
    proc = subprocess.run([sys.executable, os.path.join(repo, "train_ir.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: model_name_or_path is required")
    assert "Traceback" not in proc.stderr and os.listdir(tmp_path) == []
    proc = subprocess.run([sys.executable, os.path.join(repo, "evaluate_beir.py"), "-h"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "eval_top_k" in proc.stdout and os.listdir(tmp_path) == []

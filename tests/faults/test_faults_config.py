"""What a new user runs into: YAML 1.1 words, $BEIR_DIR, ignored reference keys, an IDF that
overrides a checkpoint's, atomic results files, resumable parts, dry runs, asset hashes."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
import yaml

from sparse.config import parse_config, resolve
from sparse.errors import UserError, write_json

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_yaml_1_1_words_stay_strings_for_string_keys(tmp_path):
    cfg = parse_config(["save_strategy=no", "inf_free=off", "use_l0=yes", f"output_dir={tmp_path}"])
    assert cfg.training.save_strategy == "no"
    assert cfg.model.inf_free is False and cfg.model.activation_type == "l1_relu"
    path = tmp_path / "c.yaml"
    path.write_text("save_strategy: no\nlogging_strategy: no\ninf_free: on\n")
    cfg = parse_config([str(path), f"output_dir={tmp_path}"])
    assert cfg.training.save_strategy == "no" and cfg.training.logging_strategy == "no"
    assert cfg.model.inf_free is True


def test_beir_dir_env_is_honoured_when_not_given(cli, faults_env, tmp_path, monkeypatch):
    monkeypatch.setenv("BEIR_DIR", faults_env["beir_dir"])
    monkeypatch.setenv("SPARSE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "eval"
    code, _, err = cli("evaluate_beir", "--model_name_or_path", faults_env["model"], "--beir_datasets", "tinyset",
                       "--output_dir", str(out), "--eval_max_seq_length", "16")
    assert code == 0, err
    result = json.loads((out / "beir_eval_16" / "results" / "tinyset.json").read_text())
    assert result["metrics"]["NDCG@10"] >= 0
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers  # atomic writes leave no temporary files


def test_ignored_reference_keys_warn_once_naming_the_key(caplog):
    from sparse import config

    config.forget_notes()
    with caplog.at_level(logging.WARNING, logger="sparse.config"):
        resolve({"do_search": False}, sections=("model", "data", "eval"))
        resolve({"do_search": False}, sections=("model", "data", "eval"))
    warned = [r.getMessage() for r in caplog.records if "do_search" in r.getMessage()]
    assert len(warned) == 1 and "ignored" in warned[0]


def test_idf_path_over_a_checkpoint_idf_warns(faults_env, tmp_path, caplog):
    from sparse.modeling.encoder import SparseEncoder

    enc = SparseEncoder.from_pretrained(faults_env["model"])
    enc.save_pretrained(str(tmp_path / "ckpt"))  # writes its own idf.json (all 1.0)
    other = tmp_path / "other_idf.json"
    other.write_text(json.dumps({"cat": 5.0, "dog": 4.0}))
    rounded = tmp_path / "rounded_idf.json"  # the same table before float32 rounding: not a different one
    rounded.write_text(json.dumps({"cat": 1.0 + 1e-9, "dog": 1.0 - 1e-9}))
    with caplog.at_level(logging.WARNING, logger="sparse.modeling.encoder"):
        SparseEncoder.from_pretrained(str(tmp_path / "ckpt"), idf_path=str(tmp_path / "ckpt" / "idf.json"))
        SparseEncoder.from_pretrained(str(tmp_path / "ckpt"), idf_path=str(rounded))
        assert not [r for r in caplog.records if "replaces" in r.getMessage()]
        SparseEncoder.from_pretrained(str(tmp_path / "ckpt"), idf_path=str(other))
    warned = [r.getMessage() for r in caplog.records if "replaces the checkpoint's own" in r.getMessage()]
    assert len(warned) == 1 and "2 tokens differ" in warned[0]


def test_python_api_accepts_the_config_name_activation_type(faults_env):
    from sparse.modeling.encoder import SparseEncoder

    enc = SparseEncoder.from_pretrained(faults_env["model"], settings={"activation_type": "l1_relu"})
    assert enc.settings.activation == "l1_relu"


def test_results_files_are_written_atomically(tmp_path):
    path = tmp_path / "results.json"
    write_json(str(path), {"ok": 1})

    class Boom:
        def __repr__(self):
            raise RuntimeError("crash while writing")

    with pytest.raises(TypeError):
        write_json(str(path), {"half": [1, 2, Boom()]})  # fails midway through the dump
    assert json.loads(path.read_text()) == {"ok": 1}
    assert sorted(os.listdir(tmp_path)) == ["results.json"]


def test_changed_settings_rerun_is_refused_only_when_a_part_finished(tmp_path):
    from sparse.datagen.parts import PartStore

    store = PartStore(str(tmp_path / "kd"))
    store.check_plan({"teachers": ["dense:/wrong/path"]})
    store.check_plan({"teachers": ["dense:/right/path"]})  # nothing finished: the corrected rerun goes on
    os.makedirs(store.part_dir(0))
    Path(store.part_dir(0), "state.json").write_text("{}")
    with pytest.raises(UserError, match=r"parts of a run with other settings \(\['teachers'\]\)"):
        store.check_plan({"teachers": ["dense:/third/path"]})


def test_reproduce_dry_run_writes_nothing(tmp_path, capsys):
    from sparse.reproduce.runner import main

    assert main(["--smoke", "--dry_run", "--output_root", str(tmp_path / "rr"), "--nproc", "0"]) == 0
    out = capsys.readouterr().out
    assert "dry run, nothing was run or written" in out and "would train 7" in out
    assert not (tmp_path / "rr").exists()


def test_assets_are_hash_checked(tmp_path, monkeypatch, idf_path):
    from sparse import assets

    monkeypatch.setenv("SPARSE_ASSETS_DIR", str(tmp_path / "assets"))
    monkeypatch.setenv("SPARSE_IDF_PATH", idf_path)
    got = assets.idf_file()
    assert got == tmp_path / "assets" / "idf.json"  # where config/l0.yaml looks (relative to the repo)
    assert yaml.safe_load((REPO_ROOT / "config" / "l0.yaml").read_text())["idf_path"] == "assets/idf.json"
    got.write_text(got.read_text()[:-2] + "}")  # damaged
    with pytest.raises(UserError, match="has sha256 .* expected .*delete it and fetch again"):
        assets.idf_file()


def test_credentials_never_reach_a_written_config(tmp_path, monkeypatch):
    from sparse.errors import ConfigError

    with pytest.raises(ConfigError, match="must not hold credentials"):
        parse_config(["opensearch_url=https://admin:secret@host:9200", f"output_dir={tmp_path}"])
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "secret")
    cfg = parse_config(["opensearch_url=https://host:9200", f"output_dir={tmp_path}"])
    assert "secret" not in Path(cfg.save(str(tmp_path))).read_text()


# ----------------------------------------------------------------------------- every key checked from its range
_TRAIN = ["model_name_or_path={model}", "train_file={posnegs}", "data_type=posnegs", "loss_types=[infonce]",
          "output_dir={out}", "max_steps=1", "report_to=none", "max_seq_length=16"]
_EVAL = ["--model_name_or_path", "{model}", "--beir_dir", "{beir}", "--beir_datasets", "tinyset", "--output_dir", "{out}"]
_MINE = ["--model_name_or_path", "{model}", "--beir_dir", "{beir}", "--beir_datasets", "tinyset", "--split", "test",
         "--output", "{out}"]

RANGE_CASES = [
    ("train_ir", "per_device_train_batch_size=0", r"per_device_train_batch_size must be >= 1, got 0"),
    ("train_ir", "gradient_accumulation_steps=0", r"gradient_accumulation_steps must be >= 1, got 0"),
    ("train_ir", "learning_rate=-1e-5", r"learning_rate must be >= 0, got -1e-05"),
    ("train_ir", "flops_d_lambda=-5", r"flops_d_lambda must be >= 0, got -5"),
    ("train_ir", "max_seq_length=0", r"max_seq_length must be >= 1, got 0"),
    ("train_ir", "temperature=0", r"temperature must be > 0, got 0"),
    ("train_ir", "health_window=0", r"health_window must be >= 1, got 0"),
    ("train_ir", "max_steps=0", r"max_steps must be -1 \(unset: num_train_epochs decides\) or >= 1, got 0"),
    ("train_ir", "max_steps=-1 num_train_epochs=0", r"num_train_epochs must be > 0, got 0"),
    ("train_ir", "loss_weights=[-1]", r"loss_weights must be >= 0, got -1"),
    ("train_ir", "score_scale=0", r"score_scale must be > 0, got 0"),
    ("train_ir", "collapse_ratio=-1", r"collapse_ratio must be >= 0, got -1"),
    ("evaluate_beir", "--per_device_eval_batch_size 0", r"per_device_eval_batch_size must be >= 1, got 0"),
    ("evaluate_beir", "--encode_batch_size 0", r"encode_batch_size must be >= 1, got 0"),
    ("evaluate_beir", "--eval_max_seq_length 0", r"corpus_max_seq_length must be >= 1, got 0"),
    ("evaluate_beir", "--opensearch_timeout 0", r"opensearch_timeout must be > 0, got 0"),
    ("demo_train_data", "--max_seq_length 0", r"corpus_max_seq_length must be >= 1, got 0"),
    ("demo_train_data", "--prune_ratio 1", r"prune_ratio must be in \[0, 1\), got 1"),
]


@pytest.mark.parametrize("entry,extra,message", RANGE_CASES, ids=[f"{e}:{x}" for e, x, _ in RANGE_CASES])
def test_out_of_range_values_are_one_error_before_anything_is_written(entry, extra, message, cli, faults_env,
                                                                      tmp_path):
    out = tmp_path / "out"
    base = {"train_ir": _TRAIN, "evaluate_beir": _EVAL, "demo_train_data": _MINE}[entry]
    fill = {"model": faults_env["model"], "posnegs": faults_env["posnegs"], "out": str(out),
            "beir": faults_env["beir_dir"]}
    argv = [a.format(**fill) for a in base] + extra.split()
    code, _, err = cli(entry, *argv)
    assert code == 2, err
    assert re.search(message, err), err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0] and not out.exists()


def test_num_train_epochs_is_not_checked_when_max_steps_decides(tmp_path):
    cfg = parse_config(["num_train_epochs=0", "max_steps=5", f"output_dir={tmp_path}"])
    assert cfg.training.max_steps == 5


def test_list_entries_get_their_element_type(tmp_path):
    from sparse.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("loss_types: [kldiv, marginmse]\nloss_weights: [1e-1, 1]\n")  # YAML 1.2: 1e-1 is a string
    cfg = parse_config([str(path), f"output_dir={tmp_path}"])
    assert cfg.loss.loss_weights == [0.1, 1.0] and all(isinstance(w, float) for w in cfg.loss.loss_weights)
    with pytest.raises(ConfigError, match=r"'loss_weights\[0\]' expects float, got 'heavy'"):
        parse_config([str(path), "loss_weights=[heavy, 1]", f"output_dir={tmp_path}"])


# ----------------------------------------------------------------------------- keys the chosen mode never reads
def _training_cfg(tmp_path, *args):
    from sparse.training.run import check_config

    cfg = parse_config([f"output_dir={tmp_path}", *args])
    check_config(cfg)
    return cfg


def test_teachers_with_the_query_side_fit_are_an_error(tmp_path):
    from sparse.errors import ConfigError

    with pytest.raises(ConfigError, match="kd_ensemble_teacher_kwargs is set, but freeze_document_encoder"):
        _training_cfg(tmp_path, "freeze_document_encoder=true", "idf_requires_grad=true",
                      "kd_ensemble_teacher_kwargs={types: [bm25], model_ids: [null]}")


@pytest.mark.parametrize("args,key,why", [
    (["freeze_document_encoder=true", "idf_requires_grad=true", "flops_d_lambda=0.5"], "flops_d_lambda",
     "no FLOPS regularizer"),
    (["freeze_document_encoder=true", "idf_requires_grad=true", "use_in_batch_negatives=true"],
     "use_in_batch_negatives", "its own documents"),
    (["loss_types=[infonce]", "temperature=0.05"], "temperature", "reads no temperature"),
    (["loss_types=[infonce]", "score_norm=none"], "score_norm", "reads no scores"),
    (["infonce_exclude_other_positives=true"], "infonce_exclude_other_positives", "without use_in_batch_negatives"),
    (["inf_free=true", "flops_q_lambda=0.1"], "flops_q_lambda", "inference-free"),
])
def test_keys_the_mode_never_reads_are_named(args, key, why, tmp_path, caplog):
    from sparse.config import forget_notes

    forget_notes()
    with caplog.at_level(logging.WARNING, logger="sparse.config"):
        _training_cfg(tmp_path, *args)
    warned = [r.getMessage() for r in caplog.records if f"'{key}'" in r.getMessage()]
    assert len(warned) == 1 and "ignored" in warned[0] and why in warned[0], warned


def test_teachers_with_infonce_alone_are_named(tmp_path, caplog):
    from sparse.config import forget_notes

    forget_notes()
    with caplog.at_level(logging.WARNING, logger="sparse.config"):
        _training_cfg(tmp_path, "loss_types=[infonce]", "kd_ensemble_teacher_kwargs={types: [bm25], model_ids: [null]}")
    assert [r for r in caplog.records if "'kd_ensemble_teacher_kwargs'" in r.getMessage()
            and "reads no teacher scores" in r.getMessage()]


def test_temperature_with_a_distillation_loss_is_not_warned_about(tmp_path, caplog):
    from sparse.config import forget_notes

    forget_notes()
    with caplog.at_level(logging.WARNING, logger="sparse.config"):
        _training_cfg(tmp_path, "loss_types=[infonce, kldiv]", "temperature=2")
    assert not [r for r in caplog.records if "temperature" in r.getMessage()]


def test_query_max_seq_length_truncates_inference_free_queries(faults_env):
    """What its help text says: every query, inference-free ones included, is cut at query_max_seq_length."""
    from sparse.config import ModelArguments
    from sparse.modeling.encoder import SparseEncoder

    text = " ".join(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"] * 2)
    full = SparseEncoder.from_pretrained(faults_env["model"], settings={"inf_free": True})
    short = SparseEncoder.from_pretrained(faults_env["model"], settings={"inf_free": True, "query_max_seq_length": 4})
    ids_full = full.tokenize([text], max_length=full.query_max_length())["input_ids"]
    ids_short = short.tokenize([text], max_length=short.query_max_length())["input_ids"]
    assert ids_short.shape[1] == 4 < ids_full.shape[1]
    help_text = ModelArguments.__dataclass_fields__["query_max_seq_length"].metadata["help"]
    assert "inference-free" in help_text and "siamese" in help_text


def test_an_out_of_range_value_says_where_it_was_given(tmp_path):
    from sparse.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("flops_d_lambda: -5\n")
    with pytest.raises(ConfigError, match=rf"flops_d_lambda must be >= 0, got -5.0 \(in {path}\)"):
        parse_config([str(path), f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"temperature must be > 0, got 0.0 \(on the command line\)"):
        parse_config(["temperature=0", f"output_dir={tmp_path}"])

"""What a new user runs into: YAML 1.1 words, $BEIR_DIR, ignored reference keys, an IDF that
overrides a checkpoint's, atomic results files, resumable parts, dry runs, asset hashes."""

from __future__ import annotations

import json
import logging
import os
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
    with caplog.at_level(logging.WARNING, logger="sparse.modeling.encoder"):
        SparseEncoder.from_pretrained(str(tmp_path / "ckpt"), idf_path=str(tmp_path / "ckpt" / "idf.json"))
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

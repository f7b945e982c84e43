"""Config system: the reference's YAML files parse, overrides work, errors say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sparse.config import ConfigError, parse_config, resolve, split_overrides

# the reference project's YAML files (shared/reference/configs), copied here so they always run
REFERENCE_DIR = Path(__file__).resolve().parent / "fixtures" / "reference_configs"
REFERENCE_NAMES = ["config_infonce.yaml", "config_kd.yaml", "config_l0.yaml", "l0_sample.yaml"]


def test_every_reference_config_is_tested():
    assert sorted(p.name for p in REFERENCE_DIR.glob("*.yaml")) == REFERENCE_NAMES


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_reference_yaml_files_parse(name, tmp_path):
    path = str(REFERENCE_DIR / name)
    raw = yaml.safe_load(open(path))
    cfg = parse_config([path, f"output_dir={tmp_path}"])
    assert cfg.model.model_name_or_path == raw["model_name_or_path"]
    assert cfg.loss.loss_types == raw["loss_types"]
    assert cfg.regularizer.flops_d_lambda == pytest.approx(float(raw["flops_d_lambda"]))
    assert cfg.training.max_steps == raw["max_steps"]
    assert cfg.training.learning_rate == pytest.approx(float(raw["learning_rate"]))
    assert not cfg.training.max_grad_norm  # null: no clipping (HF stores it as 0)
    if raw.get("use_l0") or raw.get("activation_type") == "l1_relu":
        assert cfg.model.activation_type == "l1_relu"
    if "flops_threshold" in raw:
        assert cfg.regularizer.flops_threshold == raw["flops_threshold"]
    if "kd_ensemble_teacher_kwargs" in raw:
        assert cfg.teachers.kd_ensemble_teacher_kwargs["score_scale"] == 30
    saved = cfg.save(str(tmp_path))
    again = yaml.safe_load(open(saved))
    assert again["loss"]["loss_types"] == raw["loss_types"]


def test_cli_overrides_both_forms(tmp_path):
    cfg = parse_config(["--model_name_or_path", "m", "flops_d_lambda=0.5", "--use_in_batch_negatives",
                        "loss_types=[infonce,kldiv]", "--idf_path=null", f"output_dir={tmp_path}", "max_steps=7"])
    assert cfg.model.model_name_or_path == "m"
    assert cfg.regularizer.flops_d_lambda == 0.5
    assert cfg.loss.use_in_batch_negatives is True
    assert cfg.loss.loss_types == ["infonce", "kldiv"]
    assert cfg.model.idf_path is None
    assert cfg.training.max_steps == 7


def test_yaml_then_override_wins(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("flops_d_lambda: 0.1\nmax_seq_length: 128\n")
    cfg = parse_config([str(path), "flops_d_lambda=0.2"], sections=("model", "data", "eval"))
    assert cfg.regularizer.flops_d_lambda == 0.2 and cfg.data.max_seq_length == 128


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown config key 'flops_d_lamda'.*did you mean 'flops_d_lambda'"):
        resolve({"flops_d_lamda": 0.1}, sections=("model", "data"))


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError, match=r"'max_seq_length' expects int, got 'long'"):
        resolve({"max_seq_length": "long"}, sections=("data",))
    with pytest.raises(ConfigError, match=r"'inf_free' expects bool"):
        resolve({"inf_free": "maybe"}, sections=("model",))


def test_invalid_values_are_rejected():
    with pytest.raises(ConfigError, match="activation_type"):
        resolve({"activation_type": "gelu"}, sections=("model",))
    with pytest.raises(ConfigError, match="use_l0"):
        resolve({"use_l0": True, "activation_type": "l2_relu"}, sections=("model",))
    with pytest.raises(ConfigError, match="loss_types"):
        resolve({"loss_types": ["mse"]}, sections=("data",))


def test_split_overrides_rejects_garbage():
    with pytest.raises(ConfigError, match="cannot parse"):
        split_overrides(["lonely"])


def test_report_to_none_stays_a_string(tmp_path):
    cfg = parse_config(["report_to=none", f"output_dir={tmp_path}"])
    assert cfg.training.report_to in ([], ["none"], "none")  # HF normalises "none" to no reporter


def test_evaluation_encode_batch_and_dtype(tmp_path):
    """Evaluation encodes 64 documents per batch unless a batch is given; fp32 unless asked otherwise."""
    from sparse.evaluation.runner import encode_batch_size, eval_options

    def opts(*args):
        cfg = parse_config(["--model_name_or_path", "m", f"output_dir={tmp_path}", *args])
        return encode_batch_size(cfg), eval_options(cfg).dtype

    assert opts() == (64, "fp32")  # not the HF per_device_eval_batch_size default of 8
    assert opts("per_device_eval_batch_size=16") == (16, "fp32")
    assert opts("per_device_eval_batch_size=16", "encode_batch_size=128", "encode_dtype=bf16") == (128, "bf16")
    with pytest.raises(ConfigError, match="encode_dtype"):
        parse_config(["--model_name_or_path", "m", "encode_dtype=fp64"])

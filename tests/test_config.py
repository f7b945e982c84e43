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


# ----------------------------------------------------------------------------- groups, metadata, aliases
def _group_fields():
    import dataclasses

    from sparse.config import GROUPS

    return [(name, f) for name, cls in GROUPS.items() for f in dataclasses.fields(cls)]


def test_groups_are_small_and_every_key_has_help_and_one_home():
    from sparse.config import GROUPS

    for name, cls in GROUPS.items():
        assert len(cls.__dataclass_fields__) <= 15, f"group {name} holds {len(cls.__dataclass_fields__)} keys"
    names = [f.name for _, f in _group_fields()]
    assert len(names) == len(set(names)), "a key name appears in two groups"
    aliases = [a for _, f in _group_fields() for a in f.metadata["aliases"]]
    assert not set(aliases) & set(names) and len(aliases) == len(set(aliases))
    for group, f in _group_fields():
        help_text = f.metadata.get("help", "")
        assert help_text and "(new)" not in help_text and "issue" not in help_text, f"{group}.{f.name}"


def test_every_choice_names_an_existing_registry():
    from sparse.config.keys import resolve_choices

    for group, f in _group_fields():
        if f.metadata.get("choices") is not None:
            assert resolve_choices(f.metadata["choices"]), f"{group}.{f.name}"


def test_older_names_are_read_as_their_keys_with_one_note(caplog):
    import logging

    from sparse.config import forget_notes

    forget_notes()
    with caplog.at_level(logging.INFO, logger="sparse.config"):
        cfg = resolve({"eval_max_seq_length": 96, "batch_size": 16, "use_l0": True})
        resolve({"eval_max_seq_length": 96})
    assert cfg.eval.corpus_max_seq_length == 96 and cfg.eval.encode_batch_size == 16
    assert cfg.model.activation_type == "l1_relu"
    assert {"corpus_max_seq_length", "encode_batch_size", "activation_type"} <= cfg.explicit_keys
    notes = [r.getMessage() for r in caplog.records if "older name" in r.getMessage()]
    assert len([n for n in notes if "'eval_max_seq_length'" in n]) == 1
    assert any("'use_l0'" in n and "'activation_type'" in n for n in notes)
    assert resolve({"use_l0": False, "activation_type": "l2_relu"}).model.activation_type == "l2_relu"
    with pytest.raises(ConfigError, match="eval_max_seq_length.*corpus_max_seq_length"):
        resolve({"eval_max_seq_length": 96, "corpus_max_seq_length": 128})
    with pytest.raises(ConfigError, match="use_l0"):
        resolve({"use_l0": "maybe"})


def test_datagen_reads_max_seq_length_as_corpus_truncation():
    from sparse.datagen.args import MiningArguments, parse_script_args

    cfg, _ = parse_script_args(["--model_name_or_path", "m", "--max_seq_length", "96"], MiningArguments)
    assert cfg.eval.corpus_max_seq_length == 96
    cfg, _ = parse_script_args(["--model_name_or_path", "m", "corpus_max_seq_length=80"], MiningArguments)
    assert cfg.eval.corpus_max_seq_length == 80
    with pytest.raises(ConfigError, match="reads 'max_seq_length' as 'corpus_max_seq_length'"):
        parse_script_args(["--max_seq_length", "64", "--corpus_max_seq_length", "80"], MiningArguments)


def test_saved_config_is_grouped_and_flat_view_reads_any_grouping(tmp_path):
    from sparse.config import flat_view

    cfg = parse_config(["flops_d_lambda=0.25", "health_window=7", f"output_dir={tmp_path}"])
    saved = yaml.safe_load(open(cfg.save(str(tmp_path))))
    assert saved["regularizer"]["flops_d_lambda"] == 0.25 and saved["health"]["health_window"] == 7
    assert flat_view(saved)["flops_d_lambda"] == 0.25
    assert flat_view({"data": {"flops_d_lambda": 1}})["flops_d_lambda"] == 1  # an older run's grouping


# ----------------------------------------------------------------------------- the one reader
def _commands():
    """(name, main(argv), keys and help texts --help must show) of every entry point."""
    import importlib.util

    from sparse.assets import main as assets_main
    from sparse.config.docs import main as docs_main
    from sparse.export.command import main as export_main
    from sparse.idf import main as idf_main
    from sparse.reproduce import aggregate, demo, grid, runner, subset

    root = Path(__file__).resolve().parent.parent

    def script(name):  # what ``python name.py ARGS`` runs
        from sparse.config import run_cli

        spec = importlib.util.spec_from_file_location(f"_help_{name}", root / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return lambda argv: run_cli(module.main, argv, usage=module.__doc__)

    group_keys = {"flops_d_lambda": "Weight of the FLOPS regularizer on document vectors.",
                  "corpus_max_seq_length": "Token limit of documents when a whole corpus is encoded"}
    return [
        ("train_ir", script("train_ir"), {**group_keys, "learning_rate": "The initial learning rate for the optimizer.",
                                          "max_steps": "Optimizer steps to train; -1: num_train_epochs decides."}),
        ("evaluate_beir", script("evaluate_beir"), {**group_keys, "eval_top_k": "Documents retrieved per query."}),
        ("demo_train_data", script("demo_train_data"), {**group_keys, "negatives_per_query": None}),
        ("data_preparation", script("data_preparation"), {**group_keys, "queries_per_part": None}),
        ("sparse.export", export_main, {"to": "What to write.", "overwrite": None, "CHECKPOINT": None}),
        ("sparse.assets", assets_main, {"only": "Fetch only these assets"}),
        ("sparse.idf", idf_main, {"tokenizer": "Tokenizer id or directory.", "batch_size": None}),
        ("sparse.reproduce.grid", grid.main, {"smoke": "The scaled-down CPU grid", "set": None}),
        ("sparse.reproduce.runner", runner.main, {"dry_run": "Print the commands, run nothing.", "smoke": None}),
        ("sparse.reproduce.aggregate", aggregate.main, {"output_root": None}),
        ("sparse.reproduce.subset", subset.main, {"distractors": "Unjudged documents kept."}),
        ("sparse.reproduce.demo", demo.main, {"prep_args": "Extra data_preparation.py arguments"}),
        ("sparse.config.docs", docs_main, {"check": None}),
    ]


@pytest.mark.parametrize("index", range(13))
def test_every_command_help_lists_keys_with_help_and_defaults(index, capsys):
    name, main, keys = _commands()[index]
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    assert "default" in out and "--debug" in out
    for k, help_text in keys.items():
        assert (f"--{k} " in out or k in out), f"{name}: {k}"
        if help_text:
            assert help_text in flat, f"{name}: help of {k}"


@pytest.mark.parametrize("index", range(13))
def test_every_command_reports_a_bad_key_in_one_line(index, capsys):
    name, main, _ = _commands()[index]
    with pytest.raises(SystemExit) as exit_:
        main(["--no_such_key_anywhere", "1"])
    assert exit_.value.code == 2, name
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_such_key_anywhere" in err and "Traceback" not in err


def test_export_keeps_its_command_line():
    from sparse.config import parse_command
    from sparse.export.command import COMMAND

    _, args = parse_command(COMMAND, ["run/ckpt", "--to", "onnx", "--output", "out", "--no_onnx", "--results", "a",
                                      "--results", "b", "--license", "mit", "--sample_size", "5"])
    assert (args.checkpoint, args.to, args.output, args.no_onnx, args.results) == ("run/ckpt", "onnx", "out", True,
                                                                                  ["a", "b"])
    assert args.license == "mit" and args.sample_size == 5 and args.overwrite is False
    with pytest.raises(ConfigError, match="--output is required"):
        parse_command(COMMAND, ["run/ckpt", "--to", "onnx"])
    with pytest.raises(ConfigError, match="to must be one of"):
        parse_command(COMMAND, ["run/ckpt", "--to", "tflite", "--output", "o"])
    with pytest.raises(ConfigError, match="cannot parse argument 'extra'"):
        parse_command(COMMAND, ["run/ckpt", "extra", "--output", "o"])


def test_debug_shows_the_traceback_of_every_command():
    from sparse.errors import UserError
    from sparse.reproduce.subset import main

    with pytest.raises(UserError, match="--source is required"):
        main(["--output", "o", "--debug"])


def test_configuration_docs_match_the_code():
    from sparse.config.docs import DOCS_PATH, HEADER, render

    text = DOCS_PATH.read_text(encoding="utf-8")
    assert text.startswith(HEADER)
    assert text == render(), "docs/configuration.md is out of date: run python -m sparse.config.docs"


def test_sparse_console_script_runs_every_command_by_name(capsys):
    from sparse.commands import SUBCOMMANDS, main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)
    assert main(["trian"]) == 2 and "did you mean 'train'" in capsys.readouterr().err
    for name in ("train", "mine", "subset"):
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0 and "default" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["train", "max_steps=0"])
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith("error: max_steps must be")


def test_text_keys_keep_the_command_line_text():
    from sparse.config import parse_command
    from sparse.export.command import COMMAND
    from sparse.training.run import COMMAND as TRAIN

    _, args = parse_command(COMMAND, ["ckpt", "--version", "1.10", "--name", "007", "--output", "o", "--to", "onnx"])
    assert (args.version, args.name) == ("1.10", "007")  # not the YAML numbers 1.1 and 7
    cfg, _ = parse_command(TRAIN, ["--beir_datasets", "007", "--idf_path", "null", "--loss_weights", "[1e-1]",
                                   "loss_types=[kldiv]", "--inf_free", "no"])
    assert (cfg.data.beir_datasets, cfg.model.idf_path, cfg.loss.loss_weights, cfg.model.inf_free) == \
        ("007", None, [0.1], False)


def test_an_older_name_on_the_command_line_overrides_the_file(tmp_path):
    from sparse.config import parse_command
    from sparse.datagen.args import MiningArguments, parse_script_args
    from sparse.training.run import COMMAND

    path = tmp_path / "c.yaml"
    path.write_text("corpus_max_seq_length: 512\nactivation_type: relu\n")
    cfg, _ = parse_command(COMMAND, [str(path), "eval_max_seq_length=96", "use_l0=true"])
    assert cfg.eval.corpus_max_seq_length == 96 and cfg.model.activation_type == "l1_relu"
    assert parse_config([str(path), "eval_max_seq_length=64"]).eval.corpus_max_seq_length == 64
    path.write_text("eval_max_seq_length: 128\n")
    assert parse_command(COMMAND, [str(path), "corpus_max_seq_length=96"])[0].eval.corpus_max_seq_length == 96
    cfg, _ = parse_script_args([str(path), "--max_seq_length", "80"], MiningArguments)
    assert cfg.eval.corpus_max_seq_length == 80


def test_grid_layers_override_each_other_across_older_names():
    from sparse.config import canonical_values
    from sparse.reproduce import grid

    assert canonical_values({"use_l0": "true", "eval_max_seq_length": 5}) == {"activation_type": "l1_relu",
                                                                              "corpus_max_seq_length": 5}
    assert canonical_values({"use_l0": False}) == {} and canonical_values({"use_l0": "maybe"}) == {"use_l0": "maybe"}
    runs = grid.generate(str(grid.DEFAULT_GRID), str(grid.DEFAULT_BASE), output_root="/nonexistent", smoke=True,
                         write=False, overrides={"eval_max_seq_length": 96})
    assert runs and all(r.values["corpus_max_seq_length"] == 96 and "eval_max_seq_length" not in r.values
                        for r in runs)

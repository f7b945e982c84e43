"""The second stage of a grid run: the query-side IDF fit on top of the run's model.

``train_ir.py <config> model_name_or_path=<the run's model> idf_path=null ...`` (the preset's
``second_stage.config``, ``config/adapt_idf.yaml``: the IDF fitted to the teachers over the
frozen document vectors, starting from the model's own ``idf.json``), on the run's training data,
seed and BEIR folder, into ``<run>/idf_fit``; then evaluated like the run, with the fitted IDF.
A stamp (``steps.STAMP``) records what the stage was made from; a changed run or config redoes it.
"""

from __future__ import annotations

import json
import os

from sparse.config import canonical_values
from sparse.reproduce import steps
from sparse.reproduce.grid import merge

STAGE_DIR = "idf_fit"


def stage_dir(run) -> str:
    """Where the run's second stage (model and evaluation) goes."""
    return os.path.join(run.output_dir, STAGE_DIR)


def _arg(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return json.dumps(value)  # numbers, booleans and lists as the config reader parses them


def overrides(run, model: str, spec: dict, extra: dict, beir_dir) -> dict:
    """The stage's training keys: from ``model``, on the run's data and seed, then the preset's
    ``second_stage.set``, then the command line's (``extra``)."""
    v = canonical_values(run.values)
    keys = {"model_name_or_path": model, "tokenizer_name": model, "idf_path": None,
            **{k: v[k] for k in ("train_file", "train_file_dir") if v.get(k)},
            "beir_dir": beir_dir or v.get("beir_dir"), "beir_datasets": v.get("beir_datasets"),
            "seed": v.get("seed"), "output_dir": stage_dir(run)}
    return merge(merge(keys, spec.get("set") or {}), extra or {})


def train_command(run, model: str, spec: dict, extra: dict, beir_dir, nproc: int) -> list[str]:
    """``train_ir.py <second_stage.config> key=value ...`` for the run's second stage."""
    keys = overrides(run, model, spec, extra, beir_dir)
    # a key the run leaves unset is left to the stage's config; idf_path=null is the point (the model's idf.json)
    args = [f"{k}={_arg(v)}" for k, v in keys.items() if v is not None or k == "idf_path"]
    return steps.launcher(nproc, "train_ir.py") + [spec["config"]] + args


def stage_key(cmd: list[str], config_path: str, run_stamp: str) -> str:
    """What the stage is made from: its command, its config file and the run's training stamp."""
    return steps.digest(cmd[cmd.index(config_path):], steps.file_digest(config_path), steps.file_digest(run_stamp))


def is_trained(run, key: str) -> bool:
    """The stage's model exists and was made from ``key``."""
    return steps.is_model(stage_dir(run)) and steps.stamp_ok(stage_dir(run), key)

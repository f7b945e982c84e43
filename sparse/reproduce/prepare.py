"""The data step of a grid preset, run once before its first run: what the preset's runs train on.

* ``subset`` + ``mine`` (smoke): a SciFact subset under ``<output_root>/beir`` and hard negatives
  mined from its train split (``demo_train_data.py``) into each run's ``train_file``;
* ``adapt`` (scifact): ``python -m sparse.adapt <BEIR>/<dataset> --output <output_root>/adapt
  --stop_after rows`` (a child process: ``sparse.adapt`` sits above this package), which writes the
  corpus IDF (``adapt/idf/idf.json``) and the distillation rows (``adapt/kd``). It runs only while
  a run's data under ``<output_root>/adapt`` is missing; runs pointed elsewhere (``--set
  train_file_dir=... idf_path=...``) bring their own.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Optional

from sparse.config import canonical_values
from sparse.errors import UserError
from sparse.paths import REPO_ROOT
from sparse.reproduce import steps



def _run(step: str, cmd: list[str], dry_run: bool) -> None:
    if dry_run:
        print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        return
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    steps.run_command(step, cmd, str(REPO_ROOT), env)


def data_paths(run) -> list[str]:
    """The files and folders a run reads its training data and query IDF from."""
    v = run.values
    tfd = v.get("train_file_dir")
    paths = [v.get("train_file"), *(tfd if isinstance(tfd, (list, tuple)) else [tfd]), v.get("idf_path")]
    return [str(p) for p in paths if p]


def check_train_data(runs) -> None:
    """Every run's training data and IDF exist (after the data step), else one error naming them."""
    missing = sorted({p for r in runs for p in data_paths(r) if not os.path.exists(p)})
    if missing:
        raise UserError(f"training data not found: {missing}. For the paper's grid build the MS MARCO KD data "
                        "first: 'torchrun --nproc_per_node=N data_preparation.py ...' (README, section Training data), "
                        "or point the runs elsewhere with --set train_file=PATH (or train_file_dir=DIR idf_path=FILE)")


def prepare_smoke(section: dict, root: str, runs, beir_dir: Optional[str], nproc: int,
                  dry_run: bool) -> Optional[str]:
    """The smoke grid's SciFact subset and mined training data (made once); returns the beir_dir.

    With an explicit ``--beir_dir`` the subset is not made (the caller brings its datasets)."""
    from sparse.reproduce.subset import make_subset

    sub = section["subset"]
    if beir_dir is not None:
        return beir_dir
    from sparse.assets import beir_dataset

    beir_dir = os.path.join(root, "beir")
    target = os.path.join(beir_dir, sub["name"])
    if dry_run:
        print(f"smoke: would write the {sub['source']} subset {target} (unless present)", flush=True)
    elif not os.path.isfile(os.path.join(target, "corpus.jsonl")):
        counts = make_subset(str(beir_dataset(sub["source"])), target, int(sub.get("queries", 50)),
                             int(sub.get("distractors", 400)), tuple(sub.get("splits", ("test", "train"))))
        print(f"smoke: wrote the {sub['source']} subset {target}: {counts}", flush=True)
    for run in runs:
        tf = run.values.get("train_file")
        if not tf or os.path.exists(tf):
            continue
        v = canonical_values(run.values)
        cmd = steps.launcher(nproc, "demo_train_data.py") + [
            "--model_name_or_path", v["model_name_or_path"], "--idf_path", v["idf_path"],
            "--beir_datasets", sub["name"], "--beir_dir", beir_dir, "--output", tf,
            "--corpus_max_seq_length", str(v.get("corpus_max_seq_length", 512)),
            "--cache_dir", os.path.join(root, "cache")]
        for key, value in (section.get("mine") or {}).items():
            cmd += [f"--{key}", str(value)]
        print(f"smoke: mining training data into {tf}", flush=True)
        _run(f"mining the smoke training data into {tf}", cmd, dry_run)
    return beir_dir


def adapt_command(section: dict, root: str, beir_dir: Optional[str], dry_run: bool) -> list[str]:
    """``python -m sparse.adapt`` in its data-only mode, into ``<root>/adapt``."""
    from sparse import assets

    spec = section["adapt"]
    name = spec["dataset"]
    corpus = str(assets.beir_root(beir_dir) / name) if dry_run else str(assets.beir_dataset(name, beir_dir))
    return [sys.executable, "-m", "sparse.adapt", corpus, "--output", os.path.join(root, "adapt"),
            "--stop_after", "rows", *[str(a) for a in spec.get("args") or []]]


def prepare_adapt(section: dict, root: str, runs, beir_dir: Optional[str], dry_run: bool) -> None:
    """Run the adaptation's data steps when a run's data under ``<root>/adapt`` is missing."""
    out = os.path.abspath(os.path.join(root, "adapt")) + os.sep
    missing = sorted({p for r in runs for p in data_paths(r)
                      if os.path.abspath(p).startswith(out) and not os.path.exists(p)})
    if not missing:
        return
    print(f"data: {', '.join(missing)} missing: the adaptation's data steps (corpus IDF, queries, "
          "distillation rows) make them", flush=True)
    _run("the adaptation's data steps", adapt_command(section, root, beir_dir, dry_run), dry_run)


def prepare(section: dict, root: str, runs, beir_dir: Optional[str], nproc: int, dry_run: bool) -> Optional[str]:
    """The preset's data step (none without a preset); returns the beir_dir the runs evaluate on."""
    if section.get("subset"):
        beir_dir = prepare_smoke(section, root, runs, beir_dir, nproc, dry_run)
    if section.get("adapt"):
        prepare_adapt(section, root, runs, beir_dir, dry_run)
    if not dry_run:
        check_train_data(runs)
    return beir_dir

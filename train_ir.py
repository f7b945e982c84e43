"""Train a sparse encoder: ``[torchrun --nproc_per_node=N] python train_ir.py config/xxx.yaml [key=value ...]``.

See ``sparse/training/run.py`` for what is written where, and README (section Training).
"""

from sparse.config import run_cli
from sparse.training.run import main

if __name__ == "__main__":
    run_cli(main, usage=__doc__)

"""Train a sparse encoder: ``[torchrun --nproc_per_node=N] python train_ir.py config/xxx.yaml [key=value ...]``.

See ``sparse/training/run.py`` for what is written where, and README (section Training).
"""

import logging
import os
import sys

from sparse.config import run_cli
from sparse.training.run import main

if __name__ == "__main__":
    run_cli(main, usage=__doc__)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Every file is saved and the process group is gone; on a loaded machine a library thread can
        # still be alive at interpreter teardown and abort this rank (std::terminate), failing a run
        # whose work is complete. Leave without the teardown.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

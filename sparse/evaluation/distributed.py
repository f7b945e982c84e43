"""Process rank and world size of a ``torchrun`` launch, read from the environment.

Sharding is strided: rank r of w handles positions r, r + w, r + 2w, ... (no drop, no shuffle).
Synchronisation goes through files (see ``corpus_cache``) so no process group is required; when
``torch.distributed`` is initialised its barrier is used as well.
"""

from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def shard_positions(n: int, rank_: int, world: int) -> range:
    return range(rank_, n, world)


def barrier() -> None:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
    except ImportError:  # pragma: no cover
        pass

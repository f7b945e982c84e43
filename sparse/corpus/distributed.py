"""The one distributed module: who this process is, and how processes share work and tensors.

Two sources of "rank" exist and are kept apart by name:

* ``launch_*``: read from the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``); valid before any process group exists. Corpus encoding, mining and KD data
  preparation shard their work by these and meet through files, so they need no process group.
* ``group_*``: read from the initialised ``torch.distributed`` process group (1 process and
  rank 0 without one). Training gathers tensors by these.

Sharding is strided: rank r of w handles positions r, r + w, r + 2w, ... (no drop, no shuffle).

``gather_with_grad(x)``: every rank's x concatenated in global-rank order; the local slice is the
caller's tensor itself, so it keeps its gradient, the other slices are constants. With the loss
computed on the gathered (global) batch and multiplied by W, DDP's gradient *mean* over the W
ranks equals the gradient of one process training on the whole global batch:

    (1/W) * sum_r W * dL/dx_r = sum_r dL/dx_r = dL/dx

Every gather and every shard uses the global rank (the local rank is only a GPU index, and is
wrong as a rank on more than one node).
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist

from sparse.errors import UserError


# ------------------------------------------------------------------ from the launcher's environment
def launch_rank() -> int:
    """Global rank of this process in a ``torchrun`` launch ($RANK; 0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def launch_world_size() -> int:
    """Number of processes of the ``torchrun`` launch ($WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launch_local_rank() -> int:
    """Rank of this process on its machine ($LOCAL_RANK; 0 without torchrun): its GPU index."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_launch_main() -> bool:
    """True on the process of launch rank 0 (the one that writes results)."""
    return launch_rank() == 0


def local_device() -> str:
    """This process's device: ``cuda:<local rank>`` when a GPU is available, else ``cpu``."""
    return f"cuda:{launch_local_rank()}" if torch.cuda.is_available() else "cpu"


def shard_positions(n: int, rank: int, world: int) -> range:
    """The positions of ``n`` items that rank ``rank`` of ``world`` handles (strided)."""
    return range(rank, n, world)


def wait_for_files(paths: list[str], timeout: float, what: str, poll: float = 0.5, newer_than: float = 0.0) -> None:
    """Wait until every path is a file modified at or after ``newer_than`` (how launched processes
    meet without a process group), or raise a ``UserError`` naming ``what`` and the first missing
    paths after ``timeout`` seconds."""
    def ready(path: str) -> bool:
        try:
            return os.path.isfile(path) and os.path.getmtime(path) >= newer_than
        except OSError:  # removed between the two looks
            return False

    def missing() -> list[str]:
        return [p for p in paths if not ready(p)]

    deadline = time.monotonic() + timeout
    while missing():
        if time.monotonic() > deadline:
            raise UserError(f"timed out after {timeout:.0f}s waiting for {what}: {missing()[:3]}")
        time.sleep(poll)


# ------------------------------------------------------------------ from the process group
def in_process_group() -> bool:
    """True when a ``torch.distributed`` process group of more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def group_world_size() -> int:
    """Number of processes of the initialised process group (1 without one)."""
    return dist.get_world_size() if in_process_group() else 1


def group_rank() -> int:
    """Global rank of this process in the initialised process group (0 without one)."""
    return dist.get_rank() if in_process_group() else 0


def barrier() -> None:
    """Wait for every process of the process group, if one is initialised (else return at once)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group once every rank is done: a process that exits with the group's
    threads still running can abort at exit, failing a run whose work is all saved."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' x (same shape everywhere) concatenated along dim 0 in global-rank order;
    the local slice is ``x`` itself, carrying its gradient."""
    if not in_process_group():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def gather_nograd(x: torch.Tensor) -> torch.Tensor:
    """Like ``gather_with_grad``, without gradient."""
    return gather_with_grad(x.detach())


def gather_objects(items: list) -> list:
    """All ranks' lists concatenated in global-rank order (for texts)."""
    if not in_process_group():
        return list(items)
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, list(items))
    return [x for part in out for x in part]

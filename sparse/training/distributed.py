"""Cross-process gathers by *global* rank (the reference used the local rank: wrong on many nodes).

``gather_with_grad(x)``: every rank's x concatenated in global-rank order; the local slice is
the caller's tensor itself, so it keeps its gradient, the other slices are constants. With the
loss computed on the gathered (global) batch and multiplied by W, DDP's gradient *mean* over the
W ranks equals the gradient of one process training on the whole global batch:

    (1/W) * sum_r W * dL/dx_r = sum_r dL/dx_r = dL/dx
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def global_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather_nograd(x: torch.Tensor) -> torch.Tensor:
    """All ranks' x (same shape everywhere) concatenated along dim 0 in global-rank order."""
    return gather_with_grad(x.detach())


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Like ``gather_nograd`` but the local slice is ``x`` itself, carrying its gradient."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def gather_objects(items: list) -> list:
    """All ranks' lists concatenated in global-rank order (for texts)."""
    if not is_distributed():
        return list(items)
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, list(items))
    return [x for part in out for x in part]

"""Exact max over a document's tokens of the vocabulary logits, at bf16 matmul cost (CPU).

A bf16 matmul o = bf16(x) . bf16(W_j) (fp32 accumulation, bf16 output) is within
|o - x.W_j| <= C ||W_j|| ||x|| of the fp32 product (input rounding 2 * 2^-9, output rounding
2^-9, accumulation H * 2^-24; C adds a safety factor). An entry j of document d can be positive
only if max_t o_tj + b_j + C ||W_j|| max_t ||x_t|| > 0; those candidates (a few hundred per
document) are recomputed in fp32, every other entry is provably <= 0, so relu(max) is exact.

Documents go one at a time: a (tokens x V) bf16 block stays in cache, no padding is projected and
nothing is scattered. Used by ``SparseEncoder.encode_documents`` and by the fused training forward
(``maxpool``), which also needs the position of each maximum.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with avx512_bf16 or AMX, where bf16 matmuls beat fp32 ones."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class BF16Weights:
    """bf16 copy and row norms of a projection weight, recomputed only when the weight changes."""

    def __init__(self):
        self._key = None
        self._value: tuple[torch.Tensor, torch.Tensor] | None = None

    def get(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (weight.data_ptr(), weight._version, weight.device)
        if self._value is None or self._key != key:
            w = weight.detach().float()
            self._key, self._value = key, (w.to(torch.bfloat16), w.norm(dim=1))
        return self._value


@torch.no_grad()
def screened_max(hidden: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                 bf16: BF16Weights, with_index: bool = False):
    """(relu(max_t x_t.W_j + b_j) per document (B, V) fp32, and the arg-max position (B, V) or None).

    ``hidden`` (B, L, H), ``mask`` (B, L). Positions are those of ``hidden``; entries whose maximum
    is not positive get weight 0 and position 0.
    """
    with torch.autocast(hidden.device.type, enabled=False):  # the bound assumes an fp32 recompute
        w_bf16, w_norm = bf16.get(weight)
        c = 2.0 ** -7 + weight.shape[1] * 2.0 ** -23
        bias = bias.float() if bias is not None else None
        pooled = torch.zeros(hidden.shape[0], weight.shape[0], device=hidden.device)
        index = torch.zeros(hidden.shape[0], weight.shape[0], dtype=torch.long, device=hidden.device) \
            if with_index else None
        for d in range(hidden.shape[0]):
            positions = torch.nonzero(mask[d], as_tuple=True)[0]
            x = hidden[d, positions].float()
            screen = torch.nn.functional.linear(x.to(torch.bfloat16), w_bf16).amax(dim=0).float()
            screen += c * x.norm(dim=1).max() * w_norm
            if bias is not None:
                screen += bias
            cand = torch.nonzero(screen > 0, as_tuple=True)[0]
            if not len(cand):
                continue
            exact = x @ weight[cand].float().T
            if bias is not None:
                exact += bias[cand]
            best, arg = exact.max(dim=0)
            pooled[d, cand] = best.clamp_min(0)
            if with_index:
                index[d, cand] = positions[arg]
    return pooled, index

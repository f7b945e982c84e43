"""Sparsity regularizers: FLOPS with the l0 mask, and the quadratic warm-up of its weight.

FLOPS (Paria et al. 2020, as the reference computes it in ``SparseModelTrainer.flops_value``).
R is (N*G, V), rows query-major, G = documents per query (1 for queries):

  grouped (reference default): view R as (N, G, V) and sum the FLOPS of each position g,
      FLOPS(R) = sum_g sum_j ( (1/N) sum_i m_{i,g} |R_{i,g,j}| )^2
  mean (standard SPLADE): one mean over all N*G rows,
      FLOPS(R) = sum_j ( (1/(N*G)) sum_r m_r |R_{r,j}| )^2

l0 mask (``flops_threshold`` = t): m = 1[#{j : R_j != 0} > t] per row, a hard mask without
gradient; without a threshold m = 1. The denominator stays N (masked rows count), as in the
reference. Worked example: R = [[1, .2, 0, 0], [.5, .6, .7, .8]], G = 2 -> 2.78; t = 2 -> 1.74.

Weight schedule (reference ``get_lambda``), s = optimizer steps completed:
  lambda(s) = lambda * ((s + 1) / T)^2  if s < T,  else lambda.
"""

from __future__ import annotations

from typing import Optional

import torch

FLOPS_FORMS = ("grouped", "mean")


def flops_lambda(step: int, lam: float, T: float) -> float:
    if T and step < T:
        return lam * ((step + 1) / T) ** 2
    return lam


def l0_mask(rep: torch.Tensor, threshold: Optional[float]) -> torch.Tensor:
    """(rows,) float mask: 1 where a row has more than ``threshold`` non-zero entries."""
    if threshold is None:
        return torch.ones(rep.shape[0], device=rep.device, dtype=rep.dtype)
    return ((rep != 0).sum(dim=1) > threshold).to(rep.dtype).detach()


def flops(rep: torch.Tensor, groups: int = 1, threshold: Optional[float] = None,
          form: str = "grouped") -> torch.Tensor:
    """FLOPS of ``rep`` (see the module docstring), optionally with the l0 mask."""
    if rep.shape[0] % groups:
        raise ValueError(f"{rep.shape[0]} rows do not split into groups of {groups}")
    masked = rep.abs() * l0_mask(rep, threshold).unsqueeze(1)
    if form == "mean":
        return (masked.mean(dim=0) ** 2).sum()
    if form != "grouped":
        raise ValueError(f"flops form must be one of {FLOPS_FORMS}, got {form!r}")
    n = rep.shape[0] // groups
    return (masked.view(n, groups, -1).mean(dim=0) ** 2).sum()


class FlopsRegularizer:
    """lambda(s) * FLOPS(R) for one side (documents or siamese queries)."""

    def __init__(self, lam: float, T: float, threshold: Optional[float] = None, form: str = "grouped"):
        self.lam, self.T, self.threshold, self.form = float(lam), float(T), threshold, form

    def weight(self, step: int) -> float:
        return flops_lambda(step, self.lam, self.T)

    def __call__(self, rep: torch.Tensor, groups: int, step: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(weighted loss, raw FLOPS value, lambda) at optimizer step ``step``."""
        value = flops(rep, groups, self.threshold, self.form)
        lam = self.weight(step)
        return lam * value, value, lam

"""Ranking losses (infonce, kldiv, marginmse) and sparsity regularizers (FLOPS, l0 mask)."""

from sparse.losses.flops import FlopsRegularizer, flops, flops_lambda, l0_mask
from sparse.losses.ranking import (RankingLoss, infonce_loss, kldiv_loss, marginmse_loss, student_scores)

__all__ = ["FlopsRegularizer", "flops", "flops_lambda", "l0_mask", "RankingLoss", "infonce_loss", "kldiv_loss",
           "marginmse_loss", "student_scores"]

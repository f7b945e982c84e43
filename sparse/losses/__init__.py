"""Ranking losses (infonce, kldiv, marginmse) and sparsity regularizers (FLOPS, l0 mask)."""

from sparse.losses.flops import FLOPS_FORMS, FlopsRegularizer, flops, flops_lambda, l0_mask
from sparse.losses.ranking import (LOSS_TYPES, RankingLoss, infonce_loss, kldiv_loss, marginmse_loss,
                                   student_scores)

__all__ = ["FLOPS_FORMS", "FlopsRegularizer", "flops", "flops_lambda", "l0_mask", "LOSS_TYPES", "RankingLoss",
           "infonce_loss", "kldiv_loss", "marginmse_loss", "student_scores"]

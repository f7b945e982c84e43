"""The module the Trainer (and DDP) wraps: one forward for queries and documents.

One ``forward`` computes both sides, so DDP sees a single forward per backward (as the
reference's ``ModelWrapper``). It returns the scored representations and the views the sparsity
regularizer sees (``SparseEncoder.sparsity_view``: the l0-activated weights when
``decouple_activation``). With max pooling the MLM side runs through ``sparse.modeling.maxpool`` (projection
fused with pooling, exact sparse backward); ``fused: False`` uses ``SparseEncoder.forward``.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from sparse.modeling.encoder import SparseEncoder
from sparse.modeling.maxpool import fused_document_forward, supports_fused


class SparseTrainingModel(nn.Module):
    """The encoder as the Trainer sees it: ``forward`` returns (q_rep, d_rep) for one batch."""

    accepts_loss_kwargs = False  # the Trainer divides the loss by gradient_accumulation_steps

    def __init__(self, encoder: SparseEncoder, fused: bool = True, screen: Optional[bool] = None):
        super().__init__()
        self.encoder = encoder
        self.fused = fused and supports_fused(encoder)
        self.screen = screen  # the fused path's bf16 screen; None: on CPUs with native bf16

    def _mlm(self, input_ids, attention_mask):
        if self.fused:
            return fused_document_forward(self.encoder, input_ids, attention_mask, screen=self.screen)
        return self.encoder(input_ids, attention_mask, inf_free=False)

    def forward(self, q_input_ids, q_attention_mask, d_input_ids, d_attention_mask):
        inf_free = self.encoder.settings.inf_free
        d_rep = self._mlm(d_input_ids, d_attention_mask)
        if inf_free:
            q_rep = self.encoder(q_input_ids, q_attention_mask, inf_free=True)
        else:
            q_rep = self._mlm(q_input_ids, q_attention_mask)
        return q_rep, d_rep

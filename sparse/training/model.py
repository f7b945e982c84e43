"""The module the Trainer (and DDP) wraps: one forward for queries and documents.

One ``forward`` computes both sides, so DDP sees a single forward per backward (as the
reference's ``ModelWrapper``). It returns the scored representations and the views the sparsity
regularizer sees (``SparseEncoder.sparsity_view``: the l0-activated weights when
``decouple_activation``).
"""

from __future__ import annotations

from torch import nn

from sparse.modeling.encoder import SparseEncoder


class SparseTrainingModel(nn.Module):
    accepts_loss_kwargs = False  # the Trainer divides the loss by gradient_accumulation_steps

    def __init__(self, encoder: SparseEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, q_input_ids, q_attention_mask, d_input_ids, d_attention_mask):
        inf_free = self.encoder.settings.inf_free
        d_rep = self.encoder(d_input_ids, d_attention_mask, inf_free=False)
        q_rep = self.encoder(q_input_ids, q_attention_mask, inf_free=inf_free)
        return q_rep, d_rep

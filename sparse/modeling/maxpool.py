"""Memory- and time-saving document forward (used in training): vocabulary projection fused with max pooling.

The document vector of the encoder (``SparseEncoder.forward`` with max pooling) is

    w_j = log(1 + relu( max_{l real} z_{l,j} )),   z_l = W h_l + b   (the MLM's last projection)

equal to the reference's max over ``log(1 + relu(z)) * mask`` because log(1 + relu(.)) is monotone
and non-negative. ``MaxPoolProjection`` computes max_l z_{l,j} in chunks without keeping the
(B, L, V) logits, and remembers only the arg-max position of each (document, token). Its
backward is exact and sparse: only entries with a non-zero incoming gradient (w_j > 0, a few
hundred per document) touch W, b and the hidden state of their arg-max position:

    dL/dh_{b, l*}  += g_{b,j} W_j,   dL/dW_j += g_{b,j} h_{b, l*},   dL/db_j += g_{b,j}

instead of two dense (B*L) x V x H products. Values and gradients equal the plain path (tested in
tests/test_training_maxpool.py); ties between positions send the gradient to one of them.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from sparse.modeling.activations import saturate
from sparse.modeling.encoder import SparseEncoder, vocab_projection_detached
from sparse.modeling.screen import BF16Weights, cpu_has_native_bf16, screened_max


class MaxPoolProjection(torch.autograd.Function):
    """max over real tokens of the vocabulary logits, with the exact sparse backward of the module docstring."""

    @staticmethod
    def forward(ctx, hidden, mask, weight, bias, screen: Optional[BF16Weights] = None, chunk_elems: int = 1 << 26):
        if screen is not None:  # CPU with native bf16: exact relu(max) and its position (``screen``)
            values, index = screened_max(hidden, mask.bool(), weight, bias, screen, with_index=True)
        else:
            values, index = _chunked_max(hidden, mask, weight, bias, chunk_elems)
        ctx.save_for_backward(hidden, weight, index)
        ctx.has_bias = bias is not None
        return values

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, index = ctx.saved_tensors
        rows, cols = torch.nonzero(grad, as_tuple=True)
        g = grad[rows, cols].to(hidden.dtype)
        pos = index[rows, cols]
        grad_hidden = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_hidden = torch.zeros_like(hidden)
            grad_hidden.index_put_((rows, pos), g.unsqueeze(1) * weight[cols].to(hidden.dtype), accumulate=True)
        if ctx.needs_input_grad[2]:
            grad_weight = torch.zeros_like(weight)
            grad_weight.index_add_(0, cols, (g.unsqueeze(1) * hidden[rows, pos]).to(weight.dtype))
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
            grad_bias.index_add_(0, cols, g.to(weight.dtype))
        return grad_hidden, None, grad_weight, grad_bias, None, None


def _chunked_max(hidden, mask, weight, bias, chunk_elems: int):
    """max over real tokens of the logits and its position, a few documents at a time."""
    b, length, _ = hidden.shape
    v = weight.shape[0]
    per = max(1, chunk_elems // max(1, length * v))
    values = hidden.new_empty(b, v, dtype=torch.float32)
    index = torch.empty(b, v, dtype=torch.long, device=hidden.device)
    pad = (mask == 0).unsqueeze(-1)
    for s in range(0, b, per):
        z = torch.matmul(hidden[s:s + per], weight.T)
        if bias is not None:
            z = z + bias
        z = z.float().masked_fill(pad[s:s + per], float("-inf"))
        values[s:s + per], index[s:s + per] = z.max(dim=1)
    return values, index


def supports_fused(encoder: SparseEncoder) -> bool:
    """Whether ``fused_document_forward`` applies: max pooling and a linear vocabulary projection."""
    decoder = encoder.mlm.get_output_embeddings()
    return encoder.settings.pooling == "max" and isinstance(decoder, nn.Linear)


def fused_document_forward(encoder: SparseEncoder, input_ids, attention_mask, screen: Optional[bool] = None):
    """Same output as ``encoder(input_ids, attention_mask)`` for max pooling, with the sparse backward.

    ``screen`` (default: on CPUs with native bf16, in fp32) finds the maxima with the bf16 screen
    of ``sparse.modeling.screen``: the same values and positions where the weight is positive, the
    only entries a gradient reaches.
    """
    with vocab_projection_detached(encoder.mlm) as decoder:
        hidden = encoder.mlm(input_ids=input_ids, attention_mask=attention_mask).logits
        if screen is None:
            screen = hidden.device.type == "cpu" and hidden.dtype == torch.float32 and cpu_has_native_bf16()
        pooled = MaxPoolProjection.apply(hidden, attention_mask, decoder.weight, decoder.bias,
                                         encoder._bf16 if screen else None)
    return encoder.finish_pooled(saturate(pooled), encoder.settings.scoring_activation)

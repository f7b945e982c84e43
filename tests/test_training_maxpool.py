"""The fused projection + max-pool training path equals the encoder's plain forward, values and gradients."""

from __future__ import annotations

import pytest
import torch

from sparse.modeling.encoder import SparseEncoder, SparseSettings
from sparse.modeling.maxpool import fused_document_forward, supports_fused


@pytest.mark.parametrize("screen", [False, True])  # chunked fp32 max, and the bf16 screen of CPUs
def test_fused_forward_and_backward_match_plain(tiny_bert, screen):
    mlm, tok = tiny_bert
    mlm.config.hidden_dropout_prob = 0.0
    for m in mlm.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    enc = SparseEncoder(mlm, tok, SparseSettings(activation="l1_relu", idf_requires_grad=False)).train()
    assert supports_fused(enc)
    batch = enc.tokenize(["the cat sat on the mat", "a bird", "big red house is small blue green dog"], 16)
    with torch.no_grad():  # make some logits positive so that gradients flow through many entries
        enc.mlm.get_output_embeddings().bias.add_(0.5)

    def grads(fn):
        enc.zero_grad()
        out = fn()
        weights = torch.linspace(0.1, 1.0, out.shape[1])
        (out * weights).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}

    plain, g_plain = grads(lambda: enc(batch["input_ids"], batch["attention_mask"]))
    fused, g_fused = grads(lambda: fused_document_forward(enc, batch["input_ids"], batch["attention_mask"],
                                                          screen=screen))
    assert (plain > 0).sum() > 10
    assert torch.allclose(plain, fused, atol=1e-6)
    assert g_plain.keys() == g_fused.keys()
    for name in g_plain:
        assert torch.allclose(g_plain[name], g_fused[name], atol=1e-5, rtol=1e-4), name

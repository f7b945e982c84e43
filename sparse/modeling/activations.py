"""Document-side activations: the one place their formulas live.

With h the pooled MLM logit of a vocabulary entry:

| name      | weight w(h)                                   | reference                          |
|-----------|-----------------------------------------------|------------------------------------|
| relu      | log(1 + relu(h))                              | SPLADE; all reference branches     |
| l1_relu   | log(1 + log(1 + relu(h)))                     | l0 paper activation; ``use_l0``    |
| l2_relu   | log(1 + log(1 + log(1 + relu(h))))            | l0_enhance ``l2_relu``             |
| l3_relu   | four nested log(1 + .) around relu(h)         | l0_enhance ``l3_relu``             |

Every activation is ``log1p(relu(h))`` followed by ``depth - 1`` extra ``log1p``: the extra
applications are monotone and keep zero at zero, so they change the weights but never the set
of non-zero entries. Max pooling commutes with them, so pooling before or after is the same.

``decouple_activation`` (l0 paper): the ranking score uses the
plain ``relu`` weights w, while the sparsity regularizer sees ``l0_transform(w, depth - 1)``,
the weights of the chosen l0 activation.
"""

from __future__ import annotations

import torch

ACTIVATION_DEPTH = {"relu": 1, "l1_relu": 2, "l2_relu": 3, "l3_relu": 4}
ACTIVATIONS = tuple(ACTIVATION_DEPTH)  # the activation names, in table order


def activation_depth(name: str) -> int:
    try:
        return ACTIVATION_DEPTH[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATION_DEPTH)}") from None


def saturate(logits: torch.Tensor) -> torch.Tensor:
    """log(1 + relu(x)): the SPLADE saturation applied to raw MLM logits."""
    return torch.log1p(torch.relu(logits))


def l0_transform(weights: torch.Tensor, extra: int) -> torch.Tensor:
    """Apply ``extra`` more log(1 + .) to already saturated (non-negative) weights."""
    for _ in range(extra):
        weights = torch.log1p(weights)
    return weights


def activate(logits: torch.Tensor, name: str) -> torch.Tensor:
    """The full activation of the table above, applied to pooled logits."""
    return l0_transform(saturate(logits), activation_depth(name) - 1)

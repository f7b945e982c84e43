"""Dense bi-encoder teacher (reference ``DenseModel``): ``AutoModel``, pooled, L2-normalized.

    e(x) = pool(h(x)) / ||pool(h(x))||_2,   score(q, d) = e(q) . e(d)   (cosine)

``pooling`` is ``cls`` (the first token's state) or ``mean`` (mean over real tokens,
as sentence-transformers models such as all-MiniLM-L6-v2 are trained).
"""

from __future__ import annotations

import torch

from sparse.errors import ConfigError
from sparse.teachers.base import BiEncoderTeacher, register_teacher

POOLINGS = ("cls", "mean")


@register_teacher("dense")
class DenseTeacher(BiEncoderTeacher):
    """Dense bi-encoder teacher: pooled, L2-normalized ``AutoModel`` states; the score is their cosine."""

    def __init__(self, model, tokenizer, pooling: str = "cls", **kwargs):
        if pooling not in POOLINGS:
            raise ConfigError(f"dense teacher pooling must be one of {POOLINGS}, got {pooling!r}")
        super().__init__(model, tokenizer, **kwargs)
        self.pooling = pooling

    @classmethod
    def load(cls, model_id, tokenizer_id=None, trust_remote_code=False, pooling="cls", **kwargs):
        from transformers import AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(model_id, trust_remote_code=trust_remote_code)
        tok = AutoTokenizer.from_pretrained(tokenizer_id or model_id, trust_remote_code=trust_remote_code)
        return cls(model, tok, pooling=pooling, name=model_id, **kwargs)

    def _embed_batch(self, texts):
        enc = self._tokenize(texts)
        hidden = self.model(**enc)[0].float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)

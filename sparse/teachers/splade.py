"""Sparse siamese MLM teacher (reference ``BiSparseModel``), type ``sparse``.

Queries and documents both go through the masked-LM:

    w_j(x) = max_l ( log(1 + relu(logit_{l,j})) * mask_l ),  w_j = 0 for special tokens j,
    score(q, d) = w(q) . w(d)
"""

from __future__ import annotations

import torch

from sparse.teachers.base import BiEncoderTeacher, register_teacher


@register_teacher("sparse")
class SparseTeacher(BiEncoderTeacher):
    def __init__(self, model, tokenizer, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        special = sorted(set(i for i in tokenizer.all_special_ids if i is not None))
        self.special_ids = torch.tensor(special, dtype=torch.long, device=self.device)

    @classmethod
    def load(cls, model_id, tokenizer_id=None, trust_remote_code=False, **kwargs):
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        model = AutoModelForMaskedLM.from_pretrained(model_id, trust_remote_code=trust_remote_code)
        tok = AutoTokenizer.from_pretrained(tokenizer_id or model_id, trust_remote_code=trust_remote_code)
        return cls(model, tok, name=model_id, **kwargs)

    def _embed_batch(self, texts):
        enc = self._tokenize(texts)
        enc.pop("token_type_ids", None)
        logits = self.model(**enc).logits.float()
        weights = torch.log1p(torch.relu(logits)) * enc["attention_mask"].unsqueeze(-1).float()
        rep = weights.amax(dim=1)
        special = self.special_ids[self.special_ids < rep.shape[1]]
        return rep.index_fill(1, special, 0.0)

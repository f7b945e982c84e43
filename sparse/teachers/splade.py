"""Sparse siamese MLM teacher (reference ``BiSparseModel``), type ``sparse``.

Queries and documents both go through the masked-LM, encoded by the toolkit's own
``SparseEncoder`` (one implementation of the formula, with its fast length-sorted, screened
projection):

    w_j(x) = max_l ( log(1 + relu(logit_{l,j})) * mask_l ),  w_j = 0 for special tokens j,
    score(q, d) = w(q) . w(d)
"""

from __future__ import annotations


from sparse.modeling.encoder import SparseEncoder, SparseSettings
from sparse.teachers.base import BiEncoderTeacher, register_teacher


@register_teacher("sparse")
class SparseTeacher(BiEncoderTeacher):
    """Siamese sparse MLM teacher: queries and documents both encoded by the masked-LM (module docstring)."""

    def __init__(self, model, tokenizer, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        settings = SparseSettings(inf_free=False, max_seq_length=self.max_length)
        self.encoder = SparseEncoder(self.model, tokenizer, settings).to(self.device).eval()

    @classmethod
    def load(cls, model_id, tokenizer_id=None, trust_remote_code=False, **kwargs):
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        model = AutoModelForMaskedLM.from_pretrained(model_id, trust_remote_code=trust_remote_code)
        tok = AutoTokenizer.from_pretrained(tokenizer_id or model_id, trust_remote_code=trust_remote_code)
        return cls(model, tok, name=model_id, **kwargs)

    def _embed_batch(self, texts):
        vectors = self.encoder.encode_documents(list(texts), batch_size=len(texts), dtype=self.dtype)
        return vectors.to_dense().to(self.device)

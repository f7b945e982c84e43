"""Cross-encoder teacher, type ``cross``: ``AutoModelForSequenceClassification`` on (query, doc).

    score(q, d) = logit                       if the model has one label
                = logit_1 - logit_0           if it has two (log-odds of "relevant")
                = log_softmax(logits)[-1]     otherwise (log-probability of the last label)
"""

from __future__ import annotations

import torch

from sparse.teachers.base import Teacher, register_teacher


@register_teacher("cross")
class CrossEncoderTeacher(Teacher):
    """Cross-encoder teacher: one forward pass per (query, document) pair (module docstring)."""

    @classmethod
    def load(cls, model_id, tokenizer_id=None, trust_remote_code=False, **kwargs):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(model_id, trust_remote_code=trust_remote_code)
        tok = AutoTokenizer.from_pretrained(tokenizer_id or model_id, trust_remote_code=trust_remote_code)
        return cls(model, tok, name=model_id, **kwargs)

    @torch.no_grad()
    def score_pairs(self, queries, docs):
        if len(queries) != len(docs):
            raise ValueError(f"score_pairs needs as many queries as docs ({len(queries)} vs {len(docs)})")
        out = []
        for i in range(0, len(queries), self.batch_size):
            enc = self._tokenize(queries[i:i + self.batch_size], docs[i:i + self.batch_size])
            logits = self.model(**enc).logits.float()
            if logits.shape[1] == 1:
                out.append(logits[:, 0])
            elif logits.shape[1] == 2:
                out.append(logits[:, 1] - logits[:, 0])
            else:
                out.append(torch.log_softmax(logits, dim=1)[:, -1])
        return torch.cat(out) if out else torch.zeros(0)

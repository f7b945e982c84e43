"""A seq2seq relevance teacher in the monoT5 style (Nogueira et al., 2020).

Score of a (query, document) pair with a ``castorini/monot5-*-msmarco`` model:

  1. the encoder reads ``"Query: {q} Document: {d} Relevant:"`` in at most ``max_length``
     tokens: a long document loses its tail, the prompt keeps its closing "Relevant:";
  2. the decoder runs one step from its start token;
  3. the score is ``softmax([logit("true"), logit("false")])[0]``: the probability of "true"
     against "false" at that first step, in [0, 1].

The softmax is over the two answer tokens only: what monoT5 was trained for and what its authors
rank with.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from sparse.errors import UserError
from sparse.teachers.base import Teacher, register_teacher

PROMPT = "Query: {query} Document: {document} Relevant:"


def _answer_token_id(tokenizer, word: str) -> int:
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise UserError(f"the seq2seq teacher's tokenizer splits {word!r} into {len(ids)} tokens "
                        f"({ids}); a monoT5-style model needs it to be one token")
    return int(ids[0])


@register_teacher("seq2seq")
class Seq2SeqTeacher(Teacher):
    """monoT5-style relevance model: ``score_pairs(queries, docs)`` -> P("true") per pair.

    Registered as teacher type ``seq2seq`` (``build_teacher("seq2seq", model_id)``).
    """

    def __init__(self, model, tokenizer, max_length: int = 512, batch_size: int = 16,
                 true_token: str = "true", false_token: str = "false", **kwargs):
        super().__init__(model, tokenizer, max_length=max_length, batch_size=batch_size, **kwargs)
        self.true_id = _answer_token_id(tokenizer, true_token)
        self.false_id = _answer_token_id(tokenizer, false_token)
        start = getattr(model.config, "decoder_start_token_id", None)
        if start is None:
            start = tokenizer.pad_token_id
        if start is None:
            raise UserError("the seq2seq teacher has no decoder_start_token_id and no pad token")
        self.decoder_start = int(start)

    @classmethod
    def load(cls, model_id: str, tokenizer_id: Optional[str] = None, trust_remote_code: bool = False,
             **kwargs) -> "Seq2SeqTeacher":
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(model_id, trust_remote_code=trust_remote_code)
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_id or model_id, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load a seq2seq teacher from {model_id!r}: {exc}") from None
        kwargs.setdefault("name", model_id)
        return cls(model, tokenizer, **kwargs)

    from_pretrained = load

    def _prompt_ids(self, query: str, document: str) -> list[int]:
        """Token ids of the prompt; when too long, the document is cut so "Relevant:" survives."""
        tok = self.tokenizer
        head = tok.encode(f"Query: {query} Document:", add_special_tokens=False)
        body = tok.encode(f" {document}", add_special_tokens=False)
        tail = tok.encode(" Relevant:", add_special_tokens=False)
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        room = self.max_length - len(head) - len(tail) - len(eos)
        if room < 0:  # an enormous query: keep its start and the prompt's end
            head = head[:max(0, self.max_length - len(tail) - len(eos))]
            room = 0
        return head + body[:room] + tail + eos

    @torch.inference_mode()
    def score_pairs(self, queries: Sequence[str], docs: Sequence[str], batch_size: Optional[int] = None,
                    progress: bool = False) -> torch.Tensor:
        """P("true") for each (queries[i], docs[i]); a float tensor of len(queries) in [0, 1]."""
        if len(queries) != len(docs):
            raise ValueError(f"score_pairs needs as many queries as docs ({len(queries)} != {len(docs)})")
        bs = batch_size or self.batch_size
        out = torch.empty(len(queries), dtype=torch.float32)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(queries), desc="seq2seq teacher", unit="pair")
        for s in range(0, len(queries), bs):
            ids = [self._prompt_ids(q, d) for q, d in zip(queries[s:s + bs], docs[s:s + bs])]
            width = max(len(x) for x in ids)
            input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for i, x in enumerate(ids):
                input_ids[i, :len(x)] = torch.tensor(x, dtype=torch.long)
                mask[i, :len(x)] = 1
            start = torch.full((len(ids), 1), self.decoder_start, dtype=torch.long)
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                decoder_input_ids=start.to(self.device)).logits[:, 0, :]
            pair = logits[:, [self.true_id, self.false_id]].float()
            out[s:s + len(ids)] = torch.softmax(pair, dim=-1)[:, 0].cpu()
            if bar is not None:
                bar.update(len(ids))
        if bar is not None:
            bar.close()
        return out

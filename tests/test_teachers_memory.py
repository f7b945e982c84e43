"""Bi-encoder teachers look up remembered (cached corpus) document embeddings instead of re-embedding."""

import torch

from sparse.teachers.dense import DenseTeacher
from sparse.teachers.ensemble import candidate_scores


def test_remembered_documents_are_looked_up_and_the_rest_embedded(tiny_bert):
    model, tok = tiny_bert
    teacher = DenseTeacher(model.bert, tok, pooling="mean", name="tiny", max_length=16)
    docs = ["the cat sat", "a dog ran", "red birds fly"]
    fresh = teacher.embed(docs)
    fake = torch.full((2, fresh.shape[1]), 0.5)
    teacher.remember_documents(docs[:2], fake)  # stand-ins, so a lookup is visible
    got = teacher.embed_docs(docs)
    assert torch.equal(got[:2], fake)
    torch.testing.assert_close(got[2], fresh[2], rtol=1e-5, atol=1e-6)
    # candidate scoring goes through embed_docs: the remembered rows decide the scores
    q = teacher.embed_queries(["cat"])[0]
    scores = candidate_scores(teacher, ["cat"], [docs])[0]
    torch.testing.assert_close(torch.from_numpy(scores), torch.cat([fake @ q, (fresh[2:] @ q)]), rtol=1e-5, atol=1e-6)

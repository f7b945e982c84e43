"""The corpus-vector cache key follows what decides document vectors, and nothing query-side."""

import torch

from sparse.corpus import encode_corpus
from sparse.modeling.encoder import SparseEncoder


def test_a_new_idf_reuses_document_vectors_but_new_weights_do_not(tiny_bert, tmp_path):
    model, tok = tiny_bert
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    enc = SparseEncoder.from_pretrained(str(tmp_path / "m"), settings={"max_seq_length": 32})
    ids, texts = ["a", "b"], ["the cat sat on the mat", "a dog ran"]
    cache = str(tmp_path / "cache")
    first = encode_corpus(enc, ids, texts, cache, progress=False)
    assert not first.cache_hit
    with torch.no_grad():
        enc.idf.mul_(3.0)                           # another (learned) query IDF
    enc.settings.inf_free = not enc.settings.inf_free
    again = encode_corpus(enc, ids, texts, cache, progress=False)
    assert again.cache_hit
    assert (again.vectors.to_csr() != first.vectors.to_csr()).nnz == 0
    with torch.no_grad():
        enc.mlm.get_output_embeddings().bias.add_(0.5)  # document weights change
    changed = encode_corpus(enc, ids, texts, cache, progress=False)
    assert not changed.cache_hit
    assert (changed.vectors.to_csr() != first.vectors.to_csr()).nnz > 0

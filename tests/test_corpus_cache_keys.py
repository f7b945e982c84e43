"""The corpus-vector cache key follows what decides document vectors, and nothing query-side."""

import json
import os

import numpy as np

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


class _FakeDenseTeacher:
    """A bi-encoder teacher stand-in: embeds a text as its normalized letter counts; counts its calls."""

    def __init__(self):
        self.model = torch.nn.Linear(2, 2)
        self.name, self.max_length, self.dtype, self.pooling, self.calls = "fake", 16, torch.float32, "mean", 0

    def embed_queries(self, texts):
        counts = torch.tensor([[t.count(c) for c in "aeiost"] for t in texts], dtype=torch.float32) + 1
        return torch.nn.functional.normalize(counts, dim=-1)

    def embed_docs(self, texts):
        self.calls += 1
        return self.embed_queries(texts)

    def remember_documents(self, texts, embeddings):
        pass


def test_the_same_corpus_under_another_folder_name_reuses_every_cache(tiny_checkpoint_factory, beir_writer,
                                                                      tmp_path):
    """Caches are keyed by the corpus content: a dataset copied under another name is not encoded,
    indexed or embedded again (sparse vectors, BM25 index, dense teacher embeddings)."""
    from sparse.datagen.retrievers import BM25Retriever, DenseRetriever, SparseRetriever
    from sparse.datagen.sources import load_source

    tiny_checkpoint_factory(tmp_path, seed=0)
    enc = SparseEncoder.from_pretrained(str(tmp_path / "model"), settings={"max_seq_length": 32})
    corpus = {f"d{i}": {"title": "", "text": t} for i, t in
              enumerate(["the cat sat on the mat", "a dog ran", "the bird flew over the house", "red is big"])}
    for name in ("alpha", "beta"):
        beir_writer(tmp_path / name, corpus, {"q1": "the cat"}, {"q1": {"d0": 1}}, split="train")
    cache = str(tmp_path / "cache")
    teacher = _FakeDenseTeacher()
    built = []
    for name in ("alpha", "beta"):
        data = load_source(str(tmp_path / name), "train")
        assert data.name == name
        sparse = SparseRetriever(enc, data.doc_ids, data.doc_texts, cache_dir=cache, key_parts=(data.name,),
                                 progress=False)
        bm25 = BM25Retriever(data.doc_ids, data.doc_texts, cache_dir=cache, progress=False)
        calls = teacher.calls
        dense = DenseRetriever(teacher, data.doc_ids, data.doc_texts, cache, progress=False)
        built.append((sparse.cache_entry, bm25.index.entry, bm25.index.cache_hit, teacher.calls - calls,
                      dense.search(["the cat"], 2)))
    (s1, b1, hit1, calls1, top1), (s2, b2, hit2, calls2, top2) = built
    assert s2 == s1 and b2 == b1 and top2 == top1
    assert not hit1 and hit2
    assert calls1 > 0 and calls2 == 0
    assert sorted(n.split("-")[0] for n in os.listdir(cache)) == ["bm25", "dense", "sparse"]  # one entry each


def test_a_corpus_with_a_few_documents_changed_computes_only_those(tiny_bert, tmp_path, monkeypatch):
    """Edited, added and removed documents: only the new texts are encoded (embedded), the rest is
    reused from the entry of the same model, and the result equals a fresh computation."""
    from sparse.corpus import cache, embed_corpus

    model, tok = tiny_bert
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    enc = SparseEncoder.from_pretrained(str(tmp_path / "m"), settings={"max_seq_length": 32})
    ids = [f"d{i}" for i in range(8)]
    texts = [f"document {i} about cats and dogs number {i}" for i in range(8)]
    store = str(tmp_path / "cache")
    encode_corpus(enc, ids, texts, store, progress=False)
    encoded = []
    real = enc.encode_documents
    monkeypatch.setattr(enc, "encode_documents", lambda part, **kw: encoded.append(list(part)) or real(part, **kw))
    # d2 edited, d5 removed, d9 added, order changed
    new_ids = ["d9"] + [i for i in ids if i != "d5"]
    new_texts = ["a new document about birds"] + [("an edited text" if i == "d2" else t)
                                                 for i, t in zip(ids, texts) if i != "d5"]
    got = encode_corpus(enc, new_ids, new_texts, store, progress=False)
    assert not got.cache_hit and encoded == [["a new document about birds", "an edited text"]]
    fresh = encode_corpus(enc, new_ids, new_texts, None, progress=False)
    assert (got.vectors.to_csr() != fresh.vectors.to_csr()).nnz == 0
    meta = json.load(open(os.path.join(got.entry, "meta.json")))
    assert meta["reused_rows"] == 6 and meta["n_docs"] == 8
    # another model (here: another length) never lends its rows
    encoded.clear()
    encode_corpus(enc, new_ids, new_texts, store, max_length=16, progress=False)
    assert len(encoded) == 1 and len(encoded[0]) == 8
    # too little in common (under half the documents): computed whole
    encoded.clear()
    few = ids[:3] + [f"x{i}" for i in range(5)]
    encode_corpus(enc, few, texts[:3] + [f"other {i}" for i in range(5)], store, progress=False)
    assert sum(map(len, encoded)) == 8
    # dense embeddings too
    teacher = _FakeDenseTeacher()
    embed_corpus(teacher, ids, texts, store, progress=False)
    calls = teacher.calls
    again = embed_corpus(teacher, new_ids, new_texts, store, progress=False)
    assert teacher.calls == calls + 1
    assert np.allclose(again.vectors, cache.embed_texts(teacher, new_texts))

"""The corpus-vector cache key follows what decides document vectors, and nothing query-side."""

import os

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

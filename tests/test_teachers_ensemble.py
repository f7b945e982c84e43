"""Teachers: real dense (all-MiniLM-L6-v2) and sparse (offline SPLADE) models, a tiny cross-encoder."""

from __future__ import annotations

import pytest
import torch

from sparse.errors import ConfigError
from sparse.teachers import (TEACHER_TYPES, TeacherEnsemble, build_ensemble, build_teacher, minmax_per_row,
                             register_teacher)
from sparse.teachers.base import Teacher

QUERIES = ["what causes type 2 diabetes", "where do cats sleep"]
DOCS = ["insulin resistance is the main cause of type 2 diabetes", "the cat sleeps on the warm mat",
        "stock markets fell sharply on monday"]


def test_minmax_per_row_numbers():
    s = torch.tensor([[1.0, 3.0, 2.0], [-1.0, -1.0, 4.0]])
    expected = torch.tensor([[0.0, 2 / (2 + 1e-6), 1 / (2 + 1e-6)], [0.0, 0.0, 5 / (5 + 1e-6)]])
    assert torch.allclose(minmax_per_row(s), expected)


@pytest.fixture(scope="module")
def dense_teacher(minilm_path):
    return build_teacher("dense", minilm_path, pooling="mean", max_length=128)


@pytest.fixture(scope="module")
def sparse_teacher(splade_path):
    return build_teacher("sparse", splade_path, max_length=128)


def test_dense_teacher_matches_sentence_transformers(dense_teacher, minilm_path):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm_path, device="cpu")
    q = torch.tensor(st.encode(QUERIES, normalize_embeddings=True))
    d = torch.tensor(st.encode(DOCS, normalize_embeddings=True))
    assert torch.allclose(dense_teacher.score_matrix(QUERIES, DOCS), q @ d.T, atol=1e-4)
    pairs = dense_teacher.score_pairs(QUERIES, DOCS[:2])
    assert torch.allclose(pairs, (q * d[:2]).sum(-1), atol=1e-4)
    # relevant pairs win
    m = dense_teacher.score_matrix(QUERIES, DOCS)
    assert m[0].argmax() == 0 and m[1].argmax() == 1


def test_sparse_teacher_matches_independent_computation(sparse_teacher, splade_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    mlm = AutoModelForMaskedLM.from_pretrained(splade_path).eval()
    tok = AutoTokenizer.from_pretrained(splade_path)

    def rep(text):
        enc = tok(text, return_tensors="pt", truncation=True, max_length=128)
        with torch.no_grad():
            logits = mlm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0]
        w = torch.log1p(torch.relu(logits)).max(dim=0).values  # one text: no padding
        w[list(set(tok.all_special_ids))] = 0.0
        return w

    expected = torch.stack([torch.stack([rep(q) @ rep(d) for d in DOCS]) for q in QUERIES])
    got = sparse_teacher.score_matrix(QUERIES, DOCS)  # batched: padding must not change anything
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-3)
    assert got[0].argmax() == 0 and got[1].argmax() == 1


def make_cross(tmp_path, tok, name="cross", classifier_scale=1.0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=1)
    model = BertForSequenceClassification(cfg).eval()
    with torch.no_grad():  # a larger scale spreads the random scores apart
        model.classifier.weight.mul_(classifier_scale)
    path = tmp_path / name
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path), model, tok


@pytest.fixture
def tiny_cross(tmp_path, tiny_bert):
    return make_cross(tmp_path, tiny_bert[1])


def test_cross_teacher_scores_pairs(tiny_cross):
    path, model, tok = tiny_cross
    teacher = build_teacher("cross", path, max_length=32)
    qs, ds = ["the cat", "a dog"], ["the cat sat on the mat", "a bird flew over the house"]
    enc = tok(qs, ds, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        expected = model(**enc).logits[:, 0]
    assert torch.allclose(teacher.score_pairs(qs, ds), expected, atol=1e-5)
    full = teacher.score_matrix(qs, ds)
    assert full.shape == (2, 2)
    assert torch.allclose(full.diagonal(), expected, atol=1e-5)


def test_ensemble_is_scaled_mean_of_normalized_scores(dense_teacher, sparse_teacher, tmp_path, tiny_bert):
    # the random cross-encoder's raw scores are spread apart (classifier x100) so that min-max
    # normalisation does not blow up float noise between differently padded batches
    cross = build_teacher("cross", make_cross(tmp_path, tiny_bert[1], "wide", classifier_scale=100.0)[0],
                          max_length=32)
    ens = TeacherEnsemble([dense_teacher, sparse_teacher, cross], score_scale=30)
    raw = [t.score_matrix(QUERIES, DOCS) for t in (dense_teacher, sparse_teacher, cross)]

    def norm(s):
        lo, hi = s.min(1, keepdim=True).values, s.max(1, keepdim=True).values
        return (s - lo) / (hi - lo + 1e-6)

    expected = 30 * (norm(raw[0]) + norm(raw[1]) + norm(raw[2])) / 3
    assert torch.allclose(ens.score_all(QUERIES, DOCS), expected, atol=1e-4)
    # grouped mode: each query against its own two documents
    groups = ens.score_groups(QUERIES, [DOCS[0], DOCS[2], DOCS[1], DOCS[2]])
    exp_g = 30 * sum(norm(torch.stack([r[0, [0, 2]], r[1, [1, 2]]])) for r in raw) / 3
    assert torch.allclose(groups, exp_g, atol=1e-4)


def test_build_ensemble_from_reference_kwargs(minilm_path, splade_path):
    ens = build_ensemble({"types": ["dense", "sparse"], "model_ids": [minilm_path, splade_path],
                          "teacher_tokenizer_ids": [minilm_path, splade_path], "score_scale": 10,
                          "poolings": ["mean", "cls"]}, max_length=64)
    assert ens.score_scale == 10 and ens.teachers[0].pooling == "mean" and ens.teachers[1].max_length == 64
    with pytest.raises(ConfigError, match="model_ids"):
        build_ensemble({"types": ["dense", "sparse"], "model_ids": [minilm_path]})
    with pytest.raises(ConfigError, match="unknown teacher type"):
        build_teacher("nope", minilm_path)
    with pytest.raises(ConfigError, match="remote"):
        build_ensemble({"types": ["remote"], "model_ids": ["1"]})


def test_registry_accepts_new_types():
    @register_teacher("constant_for_test")
    class Constant(Teacher):
        def __init__(self):
            pass

        @classmethod
        def load(cls, model_id, **kwargs):
            return cls()

        def score_pairs(self, queries, docs):
            return torch.arange(len(queries), dtype=torch.float32)

    try:
        t = build_teacher("constant_for_test", "x")
        assert torch.equal(t.score_matrix(["a", "b"], ["c", "d", "e"]), torch.arange(6.0).view(2, 3))
    finally:
        TEACHER_TYPES.pop("constant_for_test")

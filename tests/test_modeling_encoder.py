"""The model layer: activations, pooling, special tokens, pruning, inference-free queries,
the optimized encoding path and checkpoints, against independent computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sparse.errors import UserError
from sparse.modeling.activations import activate
from sparse.modeling.encoder import SparseEncoder, SparseSettings
from sparse.modeling.vectors import SparseBatch

TEXTS = ["the cat sat on the mat", "a red bird flew over the big house",
         "dog", "the small green dog is blue blue blue and the cat is big"]


# ------------------------------------------------------------------ activations
@pytest.mark.parametrize("name,depth", [("relu", 1), ("l1_relu", 2), ("l2_relu", 3), ("l3_relu", 4)])
def test_activations_match_nested_log1p(name, depth):
    xs = [-2.0, -0.1, 0.0, 0.3, 1.0, 7.5]
    got = activate(torch.tensor(xs), name).tolist()
    for x, g in zip(xs, got):
        want = max(x, 0.0)
        for _ in range(depth):
            want = math.log(1.0 + want)
        assert g == pytest.approx(want, rel=1e-6, abs=1e-7)


def test_use_l0_is_alias_of_l1_relu():
    from sparse.config import resolve

    assert resolve({"use_l0": True}).model.activation_type == "l1_relu"
    assert resolve({"activation_type": "l3_relu"}).model.activation_type == "l3_relu"


# ------------------------------------------------------------------ independent reference
def reference_doc_vectors(mlm, tokenizer, texts, special_ids, activation="relu", pooling="max",
                          keep_special=False, prune_ratio=None):
    """Straightforward numpy computation: full logits, masked pooling, activation, specials, pruning."""
    enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt",
                    return_token_type_ids=False)
    with torch.no_grad():
        logits = mlm(**enc).logits.double().numpy()
    mask = enc["attention_mask"].numpy().astype(bool)
    depth = {"relu": 1, "l1_relu": 2, "l2_relu": 3, "l3_relu": 4}[activation]
    out = []
    for b in range(len(texts)):
        per_token = np.log1p(np.maximum(logits[b][mask[b]], 0))
        w = per_token.max(axis=0) if pooling == "max" else per_token.sum(axis=0)
        for _ in range(depth - 1):
            w = np.log1p(w)
        if not keep_special:
            w[special_ids] = 0
        if prune_ratio:
            w = w * (w > prune_ratio * w.max())
        out.append(w)
    return np.stack(out)


def make_encoder(model_tok, **settings):
    mlm, tok = model_tok
    return SparseEncoder(mlm, tok, SparseSettings(max_seq_length=64, **settings))


@pytest.mark.parametrize("arch", ["tiny_bert", "tiny_distilbert"])
@pytest.mark.parametrize("opts", [
    {},
    {"activation": "l1_relu"},
    {"activation": "l3_relu", "pooling": "sum"},
    {"keep_special_tokens": True},
    {"prune_ratio": 0.5},
])
def test_forward_and_encode_documents_match_reference(request, arch, opts):
    mlm, tok = request.getfixturevalue(arch)
    enc = make_encoder((mlm, tok), **opts)
    want = reference_doc_vectors(mlm, tok, TEXTS, tok.all_special_ids, activation=opts.get("activation", "relu"),
                                 pooling=opts.get("pooling", "max"), keep_special=opts.get("keep_special_tokens", False),
                                 prune_ratio=opts.get("prune_ratio"))
    feats = enc.tokenize(TEXTS)
    with torch.no_grad():
        dense = enc(feats["input_ids"], feats["attention_mask"]).double().numpy()
    np.testing.assert_allclose(dense, want, atol=1e-5)
    for projection in ("exact", "screened"):
        got = enc.encode_documents(TEXTS, batch_size=3, token_chunk=5, projection=projection).to_dense().double().numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)
    specials = tok.all_special_ids
    if not opts.get("keep_special_tokens"):
        assert np.all(dense[:, specials] == 0)


def test_special_tokens_zeroed_unless_kept(tiny_bert):
    mlm, tok = tiny_bert
    with torch.no_grad():  # make [CLS] and [SEP] strongly predicted so they would get weight
        mlm.get_output_embeddings().bias[tok.cls_token_id] = 50.0
        mlm.get_output_embeddings().bias[tok.sep_token_id] = 50.0
    kept = make_encoder(tiny_bert, keep_special_tokens=True).encode_documents(TEXTS).to_dense()
    dropped = make_encoder(tiny_bert).encode_documents(TEXTS).to_dense()
    assert torch.all(kept[:, tok.cls_token_id] > 3)
    assert torch.all(dropped[:, tok.all_special_ids] == 0)


def test_inference_free_queries_are_idf_of_unique_non_special_tokens(tiny_bert):
    mlm, tok = tiny_bert
    idf = torch.linspace(-1.0, 5.0, len(tok))  # some negative weights: relu drops them
    enc = SparseEncoder(mlm, tok, SparseSettings(inf_free=True), idf=idf)
    queries = ["the cat the cat dog", "blue", "[UNK] zzz red"]
    got = enc.encode_queries(queries).to_dense()
    vocab = tok.get_vocab()
    for q, row in zip(queries, got):
        ids = set(tok(q, add_special_tokens=True)["input_ids"]) - set(tok.all_special_ids)
        want = torch.zeros(len(tok))
        for i in ids:
            want[i] = max(float(idf[i]), 0.0)
        torch.testing.assert_close(row, want)
    assert got[1, vocab["blue"]] == pytest.approx(float(idf[vocab["blue"]]))
    # the dense training path agrees and carries gradient into a learnable IDF
    enc.idf.requires_grad_(True)
    feats = enc.tokenize(queries)
    dense = enc(feats["input_ids"], feats["attention_mask"], inf_free=True)
    torch.testing.assert_close(dense.detach(), got)
    dense.sum().backward()
    assert enc.idf.grad[vocab["cat"]] == 1.0 and enc.idf.grad[tok.cls_token_id] == 0.0


def test_queries_without_idf_are_binary(tiny_bert):
    mlm, tok = tiny_bert
    enc = SparseEncoder(mlm, tok, SparseSettings(inf_free=True))
    row = enc.encode_queries(["cat cat dog"]).to_dense()[0]
    assert sorted(row.nonzero().flatten().tolist()) == sorted(tok.convert_tokens_to_ids(["cat", "dog"]))
    assert set(row[row > 0].tolist()) == {1.0}


def test_siamese_queries_use_the_mlm(tiny_bert):
    mlm, tok = tiny_bert
    enc = make_encoder(tiny_bert, inf_free=False)
    torch.testing.assert_close(enc.encode_queries(TEXTS).to_dense(), enc.encode_documents(TEXTS).to_dense())


def test_encode_documents_keeps_input_order_and_handles_empty(tiny_bert):
    enc = make_encoder(tiny_bert)
    texts = TEXTS * 3
    full = enc.encode_documents(texts, batch_size=2, sort_block=5)
    one_by_one = SparseBatch.concat([enc.encode_documents([t]) for t in texts])
    torch.testing.assert_close(full.to_dense(), one_by_one.to_dense(), atol=1e-5, rtol=0)
    assert len(enc.encode_documents([])) == 0


def test_preprocess_func_lowercases_before_tokenizing(tiny_bert):
    mlm, tok = tiny_bert
    a = make_encoder(tiny_bert, preprocess_func="to_lower").encode_queries(["CAT Dog"]).to_dense()
    b = make_encoder(tiny_bert).encode_queries(["cat dog"]).to_dense()
    torch.testing.assert_close(a, b)


def test_decoupled_activation_scores_relu_and_regularizes_l0(tiny_bert):
    enc = make_encoder(tiny_bert, activation="l1_relu", decouple_activation=True)
    plain = make_encoder(tiny_bert, activation="relu")
    feats = enc.tokenize(TEXTS)
    with torch.no_grad():
        rep = enc(feats["input_ids"], feats["attention_mask"])
        torch.testing.assert_close(rep, plain(feats["input_ids"], feats["attention_mask"]))
        torch.testing.assert_close(enc.sparsity_view(rep), torch.log1p(rep))
        assert torch.equal(plain.sparsity_view(rep), rep)


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_gives_identical_vectors(tiny_bert, tmp_path):
    mlm, tok = tiny_bert
    idf = torch.rand(len(tok)) * 5
    enc = SparseEncoder(mlm, tok, SparseSettings(activation="l2_relu", prune_ratio=0.1, max_seq_length=32,
                                                 inf_free=True), idf=idf)
    enc.save_pretrained(str(tmp_path / "ckpt"))
    saved = json.loads((tmp_path / "ckpt" / "sparse_config.json").read_text())
    assert saved["activation"] == "l2_relu" and saved["prune_ratio"] == 0.1 and saved["inf_free"] is True
    back = SparseEncoder.from_pretrained(str(tmp_path / "ckpt"))
    assert back.settings == enc.settings
    torch.testing.assert_close(back.idf.data, enc.idf.data)
    torch.testing.assert_close(back.encode_documents(TEXTS).to_dense(), enc.encode_documents(TEXTS).to_dense())
    torch.testing.assert_close(back.encode_queries(TEXTS).to_dense(), enc.encode_queries(TEXTS).to_dense())
    # explicit settings override the checkpoint's
    over = SparseEncoder.from_pretrained(str(tmp_path / "ckpt"), settings={"activation": "relu"})
    assert over.settings.activation == "relu" and over.settings.prune_ratio == 0.1


def test_plain_hf_directory_loads_with_settings(tiny_bert, tmp_path):
    mlm, tok = tiny_bert
    mlm.save_pretrained(tmp_path / "plain")
    tok.save_pretrained(tmp_path / "plain")
    enc = SparseEncoder.from_pretrained(str(tmp_path / "plain"), settings={"activation": "l1_relu", "max_seq_length": 64})
    want = reference_doc_vectors(mlm, tok, TEXTS, tok.all_special_ids, activation="l1_relu")
    np.testing.assert_allclose(enc.encode_documents(TEXTS).to_dense().double().numpy(), want, atol=1e-5)


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found|cannot load"):
        SparseEncoder.from_pretrained(str(tmp_path / "nope" / "model"))


# ------------------------------------------------------------------ the real SPLADE model
def straightforward_splade(encoder, texts, batch_size=16):
    """Full logits, masked max, log1p(relu), specials zeroed: no chunking, no screening."""
    out = []
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            enc = encoder.tokenizer(texts[s:s + batch_size], padding=True, truncation=True, max_length=512,
                                    return_tensors="pt")
            logits = encoder.mlm(**enc).logits
            masked = logits.masked_fill(enc["attention_mask"][..., None] == 0, float("-inf"))
            w = torch.log1p(torch.relu(masked.amax(dim=1)))
            w[:, encoder.tokenizer.all_special_ids] = 0
            out.append(w)
    return torch.cat(out)


@pytest.fixture(scope="module")
def scifact_texts(scifact_dir):
    texts = []
    with open(f"{scifact_dir}/corpus.jsonl", encoding="utf-8") as f:
        for line, _ in zip(f, range(200)):
            doc = json.loads(line)
            texts.append((doc["title"] + " " + doc["text"]).strip())
    return texts


@pytest.mark.slow
def test_real_splade_encode_documents_equals_straightforward(splade_encoder, scifact_texts):
    want = straightforward_splade(splade_encoder.eval(), scifact_texts)
    got = splade_encoder.encode_documents(scifact_texts, batch_size=32)
    assert torch.allclose(got.to_dense(), want, atol=1e-4)
    assert got.nnz == int((want > 0).sum())
    assert 50 < got.lengths().mean() < 1000


def test_real_splade_top_tokens_are_sensible(splade_encoder):
    text = "Aspirin reduces the risk of heart attack and stroke in patients with cardiovascular disease."
    vec = splade_encoder.encode_documents([text]).to_token_dicts(splade_encoder.id_to_token)[0]
    top = [t for t, _ in sorted(vec.items(), key=lambda kv: -kv[1])[:15]]
    assert {"heart", "stroke", "attack", "risk"} <= set(top), top  # "aspirin" is as##pi##rin in BERT
    assert not any(t in ("[CLS]", "[SEP]", "[PAD]") for t in vec)


def test_real_splade_queries_with_msmarco_idf(splade_encoder, idf_path):
    idf = json.load(open(idf_path))
    row = splade_encoder.encode_queries(["What is the role of p53 in cancer?"]).to_token_dicts(splade_encoder.id_to_token)[0]
    assert set(row) == {"what", "is", "the", "role", "of", "p", "##53", "in", "cancer", "?"}
    for tok, w in row.items():
        assert w == pytest.approx(idf[tok], rel=1e-6)


def test_encode_dtype_fp32_is_plain_fp32_on_every_device(tiny_bert):
    """fp32 (the default) never autocasts, GPUs included; bf16 is approximate, bad names are errors."""
    import contextlib

    from sparse.modeling.encoder import _autocast, encode_dtype

    assert encode_dtype("fp32") is None and encode_dtype(None) is None and encode_dtype(torch.float32) is None
    assert encode_dtype("bf16") is torch.bfloat16 and encode_dtype(torch.float16) is torch.float16
    for device in ("cuda", "cpu"):
        assert isinstance(_autocast(torch.device(device), encode_dtype("fp32")), contextlib.nullcontext)
    with pytest.raises(UserError, match="fp32, bf16 or fp16|one of"):
        encode_dtype("fp64")
    enc = make_encoder(tiny_bert)
    exact = enc.encode_documents(TEXTS, projection="exact").to_dense()
    assert torch.equal(enc.encode_documents(TEXTS, dtype="fp32", projection="exact").to_dense(), exact)
    for projection in ("exact", "screened"):  # the screen recomputes in fp32 even under autocast
        approx = enc.encode_documents(TEXTS, dtype="bf16", projection=projection).to_dense()
        assert 0 < (approx - exact).abs().max() < 0.1


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_untied_output_embeddings_are_their_own_and_reload_as_saved(tmp_path, tiny_mlm_factory, arch):
    from transformers import AutoModelForMaskedLM

    from sparse.modeling.encoder import untie_output_embeddings

    mlm, _ = tiny_mlm_factory(tmp_path, arch)
    decoder = mlm.get_output_embeddings()
    with torch.no_grad():
        decoder.bias.normal_()  # a trained output bias, not the zeros a fresh model starts with
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    before = mlm(input_ids=ids).logits
    assert untie_output_embeddings(mlm) and not untie_output_embeddings(mlm)  # the second call finds it apart
    decoder = mlm.get_output_embeddings()
    assert decoder.weight is not mlm.get_input_embeddings().weight
    assert torch.equal(mlm(input_ids=ids).logits, before)  # a copy: nothing changes until training
    with torch.no_grad():
        decoder.weight[7] += 1.0  # moves the output vector only
    moved = mlm(input_ids=ids).logits
    mlm.save_pretrained(tmp_path / "untied")
    again = AutoModelForMaskedLM.from_pretrained(tmp_path / "untied").eval()
    assert again.get_output_embeddings().weight is not again.get_input_embeddings().weight
    assert torch.allclose(again(input_ids=ids).logits, moved, atol=1e-6)

"""IDF loading / computing and the sparse-vector conversions, against independent computations."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sparse.errors import UserError
from sparse.modeling.idf import bm25_idf, compute_idf, idf_vector, load_idf_file
from sparse.modeling.vectors import SparseBatch


def test_msmarco_idf_loads_onto_bert_vocab(splade_encoder, idf_path):
    raw = json.load(open(idf_path))
    vec = splade_encoder.idf.detach()
    vocab = splade_encoder.tokenizer.get_vocab()
    for tok in ("the", "cancer", ".", "[PAD]", "##53"):
        assert float(vec[vocab[tok]]) == pytest.approx(raw[tok], rel=1e-6)
    assert float(vec[vocab["[unused0]"]]) == 1.0


def test_tokens_missing_from_file_get_one(tiny_bert, tmp_path):
    _, tok = tiny_bert
    path = tmp_path / "idf.json"
    path.write_text(json.dumps({"cat": 3.5, "dog": 0.25}))
    vec = idf_vector(load_idf_file(str(path)), tok, len(tok))
    vocab = tok.get_vocab()
    assert vec[vocab["cat"]] == 3.5 and vec[vocab["dog"]] == 0.25
    assert vec[vocab["mat"]] == 1.0


def test_idf_for_another_tokenizer_is_an_error(tiny_bert):
    _, tok = tiny_bert
    with pytest.raises(UserError, match=r"2 of 3 tokens .* not in the tokenizer's vocabulary"):
        idf_vector({"cat": 1.0, "zebra": 2.0, "▁the": 3.0}, tok, len(tok))


def test_compute_idf_matches_bm25_formula(tiny_bert):
    _, tok = tiny_bert
    docs = ["the cat sat", "the dog", "the cat and the bird", "[CLS]", ""]
    idf = compute_idf(docs, tok, batch_size=2)
    # independent count: 3 documents have a non-special token ("and" is [UNK], a special token)
    n = 3
    assert idf["the"] == pytest.approx(math.log(1 + (n - 3 + 0.5) / (3 + 0.5)))
    assert idf["cat"] == pytest.approx(math.log(1 + (n - 2 + 0.5) / (2 + 0.5)))
    assert idf["bird"] == pytest.approx(bm25_idf(n, 1))
    assert "[UNK]" not in idf and "[CLS]" not in idf


def test_idf_cli_writes_a_loadable_file(tmp_path, splade_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"_id": str(i), "title": "t", "text": t})
                                for i, t in enumerate(["heart attack", "heart stroke", "cancer"])))
    out = tmp_path / "idf.json"
    subprocess.run([sys.executable, "-m", "sparse.idf", "--tokenizer", splade_path, "--corpus", str(corpus),
                    "--output", str(out)], check=True, capture_output=True)
    idf = json.loads(out.read_text())
    assert idf["heart"] == pytest.approx(bm25_idf(3, 2)) and idf["t"] == pytest.approx(bm25_idf(3, 3))


def test_sparse_batch_conversions_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.random((7, 50)).astype(np.float32)
    dense[dense < 0.8] = 0
    dense[3] = 0  # an empty vector
    batch = SparseBatch.from_dense(torch.from_numpy(dense))
    np.testing.assert_array_equal(batch.to_dense().numpy(), dense)
    np.testing.assert_array_equal(batch.lengths(), (dense > 0).sum(1))
    np.testing.assert_array_equal(SparseBatch.from_csr(sp.csr_matrix(dense)).to_dense().numpy(), dense)
    names = [f"t{i}" for i in range(50)]
    dicts = batch.to_token_dicts(names)
    assert dicts[3] == {} and dicts[0] == {f"t{j}": pytest.approx(float(dense[0, j])) for j in np.nonzero(dense[0])[0]}
    back = SparseBatch.from_token_dicts(dicts, {n: i for i, n in enumerate(names)}, 50)
    np.testing.assert_array_equal(back.to_dense().numpy(), dense)
    both = SparseBatch.concat([batch, batch.take([6, 0])])
    np.testing.assert_array_equal(both.to_dense().numpy(), np.vstack([dense, dense[[6, 0]]]))
    batch.save(str(tmp_path / "v.npz"))
    np.testing.assert_array_equal(SparseBatch.load(str(tmp_path / "v.npz")).to_dense().numpy(), dense)


def test_from_rows_sums_duplicates_and_drops_non_positive():
    b = SparseBatch.from_rows([([3, 1, 3], [1.0, -2.0, 0.5]), ([], [])], vocab_size=5)
    assert b.to_dense().tolist() == [[0, 0, 0, 1.5, 0], [0, 0, 0, 0, 0]]

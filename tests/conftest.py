"""Shared fixtures: tiny in-test models and the small real assets (fetched once, cached)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BERT_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat", "on", "mat",
               "a", "bird", "flew", "over", "house", "##s", "red", "blue", "green", "is", "big", "small"]


def make_tiny_mlm(tmp_path, arch: str = "bert", seed: int = 0):
    """A randomly initialised tiny masked-LM + a real WordPiece tokenizer over a toy vocabulary."""
    from transformers import (BertConfig, BertForMaskedLM, BertTokenizerFast, DistilBertConfig,
                              DistilBertForMaskedLM)

    torch.manual_seed(seed)
    vocab_map = {tok: i for i, tok in enumerate(BERT_TOKENS)}
    try:  # transformers >= 5 takes the vocabulary itself
        tokenizer = BertTokenizerFast(vocab=vocab_map, do_lower_case=True)
    except TypeError:  # transformers 4.x reads a vocab file
        path = tmp_path / "vocab.txt"
        path.write_text("\n".join(BERT_TOKENS) + "\n")
        tokenizer = BertTokenizerFast(vocab_file=str(path), do_lower_case=True)
    assert len(tokenizer) == len(BERT_TOKENS)
    vocab = len(BERT_TOKENS)
    if arch == "bert":
        config = BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=64)
        model = BertForMaskedLM(config)
    elif arch == "distilbert":
        config = DistilBertConfig(vocab_size=vocab, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                                  max_position_embeddings=64)
        model = DistilBertForMaskedLM(config)
    else:
        raise ValueError(arch)
    return model.eval(), tokenizer


@pytest.fixture
def tiny_bert(tmp_path):
    return make_tiny_mlm(tmp_path, "bert")


@pytest.fixture
def tiny_distilbert(tmp_path):
    return make_tiny_mlm(tmp_path, "distilbert")


@pytest.fixture(scope="session")
def splade_path() -> str:
    from sparse.assets import splade_model

    return str(splade_model())


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from sparse.assets import minilm_model

    return str(minilm_model())


@pytest.fixture(scope="session")
def idf_path() -> str:
    from sparse.assets import idf_file

    return str(idf_file())


@pytest.fixture(scope="session")
def scifact_dir() -> str:
    from sparse.assets import beir_dataset

    return str(beir_dataset("scifact"))


@pytest.fixture(scope="session")
def splade_encoder(splade_path, idf_path):
    from sparse.modeling.encoder import SparseEncoder

    return SparseEncoder.from_pretrained(splade_path, idf_path=idf_path)

"""The monoT5-style seq2seq teacher on a tiny random T5 and an in-test word-level tokenizer."""

from __future__ import annotations

import pytest
import torch

from sparse.errors import UserError
from sparse.teachers.seq2seq import Seq2SeqTeacher

WORDS = ["<pad>", "</s>", "<unk>", "true", "false", "Query:", "Document:", "Relevant:",
         "the", "cat", "dog", "sat", "on", "mat", "a", "bird"]


def tiny_t5(tmp_path, seed=0):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(WORDS), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                      num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5ForConditionalGeneration(config).eval(), tok


def test_scores_are_true_probabilities_of_the_first_decoder_step(tmp_path):
    model, tok = tiny_t5(tmp_path)
    teacher = Seq2SeqTeacher(model, tok, max_length=32, batch_size=2)
    queries = ["the cat", "a dog", "the bird"]
    docs = ["the cat sat on the mat", "a bird", "dog dog dog"]
    scores = teacher.score_pairs(queries, docs)
    assert scores.shape == (3,)
    assert torch.all((scores >= 0) & (scores <= 1))
    # the same computation by hand for the first pair
    ids = tok.encode("Query: the cat Document: the cat sat on the mat Relevant:", add_special_tokens=False) + [1]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([[0]])).logits[0, 0]
    expected = torch.softmax(logits[[3, 4]], dim=-1)[0]
    assert scores[0].item() == pytest.approx(expected.item(), abs=1e-5)
    # batching and padding change nothing
    one_by_one = torch.cat([teacher.score_pairs([q], [d]) for q, d in zip(queries, docs)])
    assert torch.allclose(scores, one_by_one, atol=1e-5)


def test_long_documents_keep_the_prompt_end(tmp_path):
    model, tok = tiny_t5(tmp_path)
    teacher = Seq2SeqTeacher(model, tok, max_length=12)
    ids = teacher._prompt_ids("the cat", " ".join(["mat"] * 50))
    assert len(ids) == 12
    assert ids[-2:] == [WORDS.index("Relevant:"), 1]


def test_answer_words_must_be_single_tokens(tmp_path):
    model, tok = tiny_t5(tmp_path)
    with pytest.raises(UserError, match="one token"):
        Seq2SeqTeacher(model, tok, true_token="true true")


def test_from_pretrained_roundtrip(tmp_path):
    model, tok = tiny_t5(tmp_path)
    model.save_pretrained(tmp_path / "t5")
    tok.save_pretrained(tmp_path / "t5")
    loaded = Seq2SeqTeacher.from_pretrained(str(tmp_path / "t5"), max_length=32)
    direct = Seq2SeqTeacher(model, tok, max_length=32)
    q, d = ["the cat"], ["a cat sat"]
    assert torch.allclose(loaded.score_pairs(q, d), direct.score_pairs(q, d), atol=1e-6)
    with pytest.raises(UserError, match="cannot load"):
        Seq2SeqTeacher.from_pretrained(str(tmp_path / "missing"))


def test_seq2seq_teacher_in_the_kd_ensemble(tmp_path):
    """data_preparation.py builds it from ``--teachers seq2seq:PATH`` and normalizes its scores per query."""
    import numpy as np

    from sparse.datagen.args import KDPrepArguments
    from sparse.datagen.kd import build_kd_ensemble

    model, tok = tiny_t5(tmp_path)
    model.save_pretrained(tmp_path / "t5")
    tok.save_pretrained(tmp_path / "t5")
    ensemble = build_kd_ensemble(KDPrepArguments(teachers=[f"seq2seq:{tmp_path / 't5'}"], teacher_max_length=32))
    teachers = ensemble.teachers
    assert [t.teacher_type for t in teachers] == ["seq2seq"]
    means, per = ensemble.score_candidates(["the cat", "a dog"], [["the mat", "a bird", "cat"], ["dog", "the"]])
    raw = teachers[0].score_pairs(["the cat"] * 3, ["the mat", "a bird", "cat"]).numpy()
    expected = (raw - raw.min()) / (raw.max() - raw.min() + 1e-6)
    assert np.allclose(per[0][0], expected, atol=1e-5) and np.allclose(means[0], expected, atol=1e-5)
    assert all(0 <= v <= 1 for row in means for v in row)

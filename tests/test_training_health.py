"""Training health: train_log.jsonl at every logging step, vocabulary activity, the collapse watch."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from sparse.training.health import TrainingHealth
from sparse.training.run import main

WORDS = "the cat dog sat on mat a bird flew over house red blue green is big small".split()


def test_inactive_fraction_counts_entries_unused_in_the_window():
    h = TrainingHealth(vocab_size=6, output_dir=None, window=2)
    h.observe(torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 2.0, 0, 0, 0, 0]]))  # batch 0 uses 0, 1
    h.observe(torch.tensor([[0, 0, 3.0, 0, 0, 0]]))                        # batch 1 uses 2
    assert h.inactive_fraction() == pytest.approx(3 / 6)                   # 3, 4, 5 never used
    h.observe(torch.tensor([[0, 0, 0, 1.0, 0, 0]]))                        # batch 2 uses 3; 0, 1 leave the window
    assert h.inactive_fraction() == pytest.approx(4 / 6)                   # only 2 and 3 are recent


def test_collapse_is_measured_against_the_start_or_the_target():
    h = TrainingHealth(vocab_size=4, output_dir=None, collapse_ratio=0.5)
    assert h.check(10, 200.0) is None          # the first log sets the reference
    assert h.check(20, 120.0) is None
    assert "COLLAPSE" in h.check(30, 99.0)     # below 0.5 x 200
    assert "set target_doc_nnz" in h.check(31, 99.0)  # the way to say the shrinking is wanted
    asked = TrainingHealth(vocab_size=4, output_dir=None, collapse_ratio=0.5, target_doc_nnz=60)
    asked.check(10, 200.0)
    assert asked.check(20, 40.0) is None       # shrinking towards the requested size is no collapse
    assert "COLLAPSE" in asked.check(30, 29.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_mlm_factory):
    import datasets

    root = tmp_path_factory.mktemp("health")
    model, tok = tiny_mlm_factory(root, "bert", seed=5)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    rng = random.Random(1)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(40)]
    rows = [{"query": " ".join(rng.choice(texts).split()[:4]), "pos": rng.choice(texts),
             "negs": [rng.choice(texts) for _ in range(2)]} for _ in range(16)]
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "posnegs"))
    return {"model": str(root / "model"), "data": str(root / "posnegs")}


def _train(tiny, out, **kw):
    args = {"model_name_or_path": tiny["model"], "train_file": tiny["data"], "data_type": "posnegs",
            "loss_types": "[infonce]", "sample_num_one_query": 1, "output_dir": str(out), "max_seq_length": 16,
            "per_device_train_batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 0, "seed": 3,
            "logging_steps": 1, "max_steps": 3, "save_strategy": "steps", "save_steps": 1000, "report_to": "[]", "flops_d_lambda": 0}
    args.update(kw)
    return main([f"{k}={v}" for k, v in args.items()])


def test_every_logging_step_writes_a_full_precision_json_line(tiny, tmp_path):
    _train(tiny, tmp_path / "run", idf_requires_grad="true", idf_lr=0.01, learning_rate=1.234567e-7)
    lines = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    logged = [x for x in lines if "loss_infonce" in x]
    assert [x["step"] for x in logged] == [1, 2, 3]
    for rec in logged:
        for key in ("loss", "grad_norm", "ranking_loss", "flops_loss", "doc_nnz", "query_nnz", "vocab_inactive",
                    "lr_decay", "lr_idf"):
            assert key in rec, key
        assert 0.0 <= rec["vocab_inactive"] <= 1.0
        assert rec["lr_idf"] == pytest.approx(0.01 * (1 - rec["step"] / 3))  # linear decay of its own lr
    assert logged[0]["lr_decay"] == pytest.approx(1.234567e-7 * 2 / 3)  # not rounded away


def test_stop_on_collapse_ends_the_run(tiny, tmp_path):
    # collapse_ratio 2: any log is 'below 2 x the first', so the first log is a collapse by construction
    out = _train(tiny, tmp_path / "run", max_steps=6, collapse_ratio=2.0, stop_on_collapse="true")
    assert out["global_step"] == 1
    log = (tmp_path / "run" / "train.log").read_text()
    assert "COLLAPSE" in log and "stop_on_collapse: stopping at step 1" in log
    assert (tmp_path / "run" / "model.safetensors").is_file()  # the model at the stop is saved


# ---------------------------------------------------------------------- freeze_document_encoder: IDF fit
def _kd_rows(path, rng):
    rows = []
    for n in range(12):
        docs = [" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(5)]
        rows.append({"query": " ".join(rng.choice(WORDS) for _ in range(3)), "docs": docs,
                     "d_ids": [f"r{n}d{j}" for j in range(5)], "scores": [rng.random() for _ in docs]})
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return rows


def _kl_std(idf, rows, enc):
    """Independent loss: numpy KL(P_t || P_s) of the std-normalized student over each full row."""
    total = 0.0
    for r in rows:
        docs = enc.encode_documents(r["docs"]).to_dense().numpy()
        ids = enc.tokenizer(r["query"], truncation=True)["input_ids"]
        q = np.zeros(enc.vocab_size)
        for t in set(ids) - set(enc.tokenizer.all_special_ids):
            q[t] = max(idf[t], 0.0)
        s = docs @ q
        t = np.array(r["scores"]) * 30
        s = (s - s.mean()) / (s.std() + 1e-8) * t.std()
        ps = np.exp(s - s.max()); ps /= ps.sum()
        pt = np.exp(t - t.max()); pt /= pt.sum()
        total += float((pt * (np.log(pt) - np.log(ps))).sum())
    return total / len(rows)


def test_idf_fit_trains_only_the_query_idf_and_lowers_the_loss(tiny, tmp_path):
    from sparse.modeling.encoder import SparseEncoder

    rows = _kd_rows(tmp_path / "kd.jsonl", random.Random(4))
    base = SparseEncoder.from_pretrained(tiny["model"], settings={"max_seq_length": 16})
    out = _train(tiny, tmp_path / "fit", train_file=str(tmp_path / "kd.jsonl"), data_type="kd", loss_types="[kldiv]",
                 freeze_document_encoder="true", idf_requires_grad="true", idf_lr=0.05, score_scale=30,
                 eval_max_seq_length=16, num_train_epochs=5, max_steps=-1, logging_steps=2)
    assert out["mode"] == "freeze_document_encoder" and out["global_step"] == 15  # 12 rows / 4 per step x 5
    fitted = SparseEncoder.from_pretrained(str(tmp_path / "fit"))
    for (name, a), b in zip(base.mlm.state_dict().items(), fitted.mlm.state_dict().values()):
        assert torch.equal(a, b), name                        # the document encoder is untouched
    before, after = base.idf.detach().numpy(), fitted.idf.detach().numpy()
    query_tokens = {t for r in rows for t in base.tokenizer(r["query"])["input_ids"]}
    changed = set(np.nonzero(before != after)[0].tolist())
    assert changed and changed <= query_tokens                # only tokens of training queries move
    assert _kl_std(after, rows, base) < _kl_std(before, rows, base) - 1e-3
    log = [json.loads(x) for x in (tmp_path / "fit" / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [2, 4, 6, 8, 10, 12, 14, 15]
    trained = sorted(query_tokens - set(base.tokenizer.all_special_ids))
    assert log[-1]["idf_shift"] == pytest.approx(float(np.abs(after[trained] - before[trained]).mean()), rel=1e-5)


def test_idf_fit_reuses_the_corpus_cache_and_keeps_the_checkpoints_activation(tiny, tmp_path, monkeypatch):
    """A second stage on an l0-activation model fits the IDF over that model's documents (not relu's), and
    encodes them once: the IDF fit reads and fills the corpus cache evaluation uses."""
    from sparse.modeling.encoder import SparseEncoder

    monkeypatch.setenv("SPARSE_CACHE_DIR", str(tmp_path / "cache"))
    _kd_rows(tmp_path / "kd.jsonl", random.Random(5))
    trained = SparseEncoder.from_pretrained(tiny["model"], settings={"activation": "l1_relu",
                                                                     "decouple_activation": True})
    trained.save_pretrained(str(tmp_path / "l0"))
    fit = dict(model_name_or_path=str(tmp_path / "l0"), train_file=str(tmp_path / "kd.jsonl"), data_type="kd",
               loss_types="[kldiv]", freeze_document_encoder="true", idf_requires_grad="true", idf_lr=0.05,
               score_scale=30, eval_max_seq_length=16, num_train_epochs=1, max_steps=-1)
    first = _train(tiny, tmp_path / "a", **fit)
    second = _train(tiny, tmp_path / "b", **fit)
    assert (first["doc_cache_hit"], second["doc_cache_hit"]) == (False, True)
    saved = json.loads((tmp_path / "a" / "sparse_config.json").read_text())
    assert (saved["activation"], saved["decouple_activation"]) == ("l1_relu", True)
    relu = _train(tiny, tmp_path / "c", activation_type="relu", **fit)  # given explicitly: the config wins
    assert json.loads((tmp_path / "c" / "sparse_config.json").read_text())["activation"] == "relu"
    assert not relu["doc_cache_hit"]  # other documents, another cache entry

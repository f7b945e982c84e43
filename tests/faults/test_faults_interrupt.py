"""Interruptions and numerical faults in training, in-process on CPU with a tiny model:
SIGTERM saves a checkpoint and a resumed run ends with the parameters of an uninterrupted one;
a non-finite loss stops naming the step, the loss terms and the last good checkpoint."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from sparse.training.trainer import SparseTrainer


def _args(env, out, **kw):
    values = {"model_name_or_path": env["model"], "train_file": env["posnegs"], "data_type": "posnegs",
              "loss_types": "[infonce]", "output_dir": str(out), "max_seq_length": 16, "logging_steps": 1,
              "per_device_train_batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 2, "seed": 11,
              "max_steps": 9, "save_strategy": "no", "report_to": "none", "flops_d_T": 4}
    values.update(kw)
    return [f"{k}={v}" for k, v in values.items()]


def _weights(folder) -> dict:
    return load_file(os.path.join(folder, "model.safetensors"))


def _signal_at(monkeypatch, step: int, signum=signal.SIGTERM) -> None:
    """Send ``signum`` to this process during the training step after ``step`` finished steps."""
    original = SparseTrainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.global_step == step:
            os.kill(os.getpid(), signum)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SparseTrainer, "training_step", training_step)


def _count_steps(monkeypatch) -> dict:
    original = SparseTrainer.training_step
    steps = {"n": 0}

    def training_step(self, *args, **kwargs):
        steps["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SparseTrainer, "training_step", training_step)
    return steps


def test_sigterm_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(cli, faults_env, tmp_path, monkeypatch):
    # 24 rows / 4 per batch = 6 steps per epoch: the kill falls in epoch 1, the run ends in epoch 2
    full, cut = tmp_path / "full", tmp_path / "cut"
    code, _, err = cli("train_ir", *_args(faults_env, full))
    assert code == 0, err
    with monkeypatch.context() as m:
        _signal_at(m, 4)
        code, _, err = cli("train_ir", *_args(faults_env, cut))
    assert code == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM at step 5; checkpoint saved in" in err and "resume_from_checkpoint=true" in err
    assert (cut / "checkpoint-5" / "trainer_state.json").is_file()
    assert not (cut / "train_results.json").exists()  # an interrupted run never looks finished
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again

    steps = _count_steps(monkeypatch)
    code, _, err = cli("train_ir", *_args(faults_env, cut, resume_from_checkpoint="true"))
    assert code == 0, err
    assert steps["n"] == 9 - 5  # it resumed: only the remaining steps ran
    want, got = _weights(full), _weights(cut)
    assert want.keys() == got.keys()
    moved = max(float((_weights(faults_env["model"])[k].float() - want[k].float()).abs().max()) for k in want
                if k in _weights(faults_env["model"]))
    assert moved > 1e-3  # training changed the weights, so equality below means something
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=0, msg=k)


def test_nonfinite_loss_names_step_terms_and_last_good_checkpoint(cli, faults_env, tmp_path, monkeypatch):
    from sparse.losses.ranking import RankingLoss

    original = RankingLoss.__call__
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        loss, parts = original(self, *args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), parts) if calls["n"] == 4 else (loss, parts)

    monkeypatch.setattr(RankingLoss, "__call__", poisoned)
    out = tmp_path / "nan"
    code, _, err = cli("train_ir", *_args(faults_env, out, save_strategy="steps", save_steps=2))
    assert code == 2
    assert "the training loss is nan at step 3 (loss terms: ranking_loss=nan" in err
    assert f"the last good checkpoint is {out / 'checkpoint-2'}" in err
    assert (out / "checkpoint-3-nonfinite" / "model.safetensors").is_file()


def test_resume_true_takes_the_latest_local_checkpoint(faults_env, tmp_path):
    from sparse.config import parse_config
    from sparse.training.run import resolve_resume

    for step in (2, 10, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    cfg = parse_config(_args(faults_env, tmp_path, resume_from_checkpoint="true"))
    resolve_resume(cfg.training)
    assert cfg.training.resume_from_checkpoint == str(tmp_path / "checkpoint-10")


@pytest.mark.parametrize("value", ["false", "null"])
def test_resume_false_or_null_starts_fresh(faults_env, tmp_path, value):
    from sparse.config import parse_config
    from sparse.training.run import resolve_resume

    cfg = parse_config(_args(faults_env, tmp_path, resume_from_checkpoint=value))
    resolve_resume(cfg.training)
    assert cfg.training.resume_from_checkpoint is None


def test_corpus_encode_killed_mid_corpus_resumes_from_its_finished_blocks(tiny_bert, tmp_path):
    """A kill during the third block keeps the two finished blocks; the rerun encodes only the rest
    and gives the vectors of an uninterrupted encode."""
    from sparse.corpus import encode_corpus
    from sparse.modeling.encoder import SparseEncoder

    mlm, tok = tiny_bert
    enc = SparseEncoder(mlm, tok).eval()
    texts = [f"document {i} about topic {i % 7} and item {i * 3}" for i in range(25)]
    ids = [f"d{i}" for i in range(25)]
    want = enc.encode_documents(texts).to_dense()
    calls = []
    real = enc.encode_documents

    def killed_on_third_block(batch_texts, **kw):
        calls.append(len(batch_texts))
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C or a scheduler's kill does mid-corpus
        return real(batch_texts, **kw)

    enc.encode_documents = killed_on_third_block
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(enc, ids, texts, str(tmp_path), key_parts=("toy",), block_docs=10, progress=False)
    calls.clear()
    enc.encode_documents = lambda batch_texts, **kw: calls.append(len(batch_texts)) or real(batch_texts, **kw)
    got = encode_corpus(enc, ids, texts, str(tmp_path), key_parts=("toy",), block_docs=10, progress=False)
    assert calls == [5]  # only the unfinished last block (documents 20-24) is encoded again
    assert torch.equal(got.vectors.to_dense(), want)
    assert not any(n.startswith("block-") for n in os.listdir(got.entry))  # cleaned once complete

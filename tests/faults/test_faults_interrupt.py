"""Interruptions and numerical faults in training, in-process on CPU with a tiny model:
SIGTERM saves a checkpoint and a resumed run ends with the parameters of an uninterrupted one;
a non-finite loss stops naming the step, the loss terms and the last good checkpoint; corpus
encoding (evaluation, mining) killed mid-corpus resumes from its saved blocks."""

from __future__ import annotations

import json
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


def _encoding_calls(monkeypatch, kill_at=None) -> list:
    """Count ``encode_documents`` calls (their sizes); raise KeyboardInterrupt on call ``kill_at``."""
    from sparse.modeling.encoder import SparseEncoder

    real = SparseEncoder.encode_documents
    calls: list = []

    def counted(self, texts, *args, **kwargs):
        calls.append(len(texts))
        if len(calls) == kill_at:
            raise KeyboardInterrupt  # a kill in the middle of the corpus
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(SparseEncoder, "encode_documents", counted)
    return calls


def _run_killed_then_resumed(cli, monkeypatch, entry: str, argv: list) -> list:
    """Run ``entry`` killed during its third encode block, then again; the second run's encode calls."""
    import sparse.corpus.cache as cache

    monkeypatch.setattr(cache, "BLOCK_DOCS", 10)
    _encoding_calls(monkeypatch, kill_at=3)
    try:
        code = cli(entry, *argv)[0]
    except KeyboardInterrupt:
        code = 130
    assert code != 0
    calls = _encoding_calls(monkeypatch)
    assert cli(entry, *argv)[0] == 0
    return calls


def test_evaluation_killed_mid_corpus_resumes_with_the_same_results(cli, faults_env, tmp_path, monkeypatch):
    def argv(name):
        return ["--model_name_or_path", faults_env["model"], "--beir_dir", faults_env["beir_dir"],
                "--beir_datasets", "tinyset", "--output_dir", str(tmp_path / name), "--cache_dir",
                str(tmp_path / f"{name}-cache")]

    assert cli("evaluate_beir", *argv("uninterrupted"))[0] == 0
    calls = _run_killed_then_resumed(cli, monkeypatch, "evaluate_beir", argv("killed"))
    assert calls == [10, 10]  # 40 documents: blocks 1-2 were saved before the kill, 3-4 are encoded now
    results = [json.loads((tmp_path / n / "beir_eval" / "results" / "tinyset.json").read_text())
               for n in ("uninterrupted", "killed")]
    assert results[0]["metrics"] == results[1]["metrics"]
    assert results[0]["sparsity"]["flops"] == results[1]["sparsity"]["flops"]
    runs = [(tmp_path / n / "beir_eval" / "runs" / "tinyset.trec").read_text() for n in ("uninterrupted", "killed")]
    assert runs[0] == runs[1]


def test_mining_killed_mid_corpus_resumes_with_the_same_rows(cli, faults_env, tmp_path, monkeypatch, beir_writer):
    from datasets import load_from_disk

    texts = [json.loads(line)["text"] for line in open(os.path.join(faults_env["beir_dir"], "tinyset", "corpus.jsonl"))]
    corpus = {f"d{i}": {"title": "", "text": t} for i, t in enumerate(texts)}
    beir_writer(tmp_path / "beir" / "tinytrain", corpus, {f"q{i}": texts[i][:20] for i in range(8)},
                {f"q{i}": {f"d{i}": 1} for i in range(8)}, split="train")

    def argv(name):
        return ["--model_name_or_path", faults_env["model"], "--beir_dir", str(tmp_path / "beir"), "--beir_datasets",
                "tinytrain", "--output", str(tmp_path / name), "--cache_dir", str(tmp_path / f"{name}-cache"),
                "--top_k", "6"]

    assert cli("demo_train_data", *argv("uninterrupted"))[0] == 0
    calls = _run_killed_then_resumed(cli, monkeypatch, "demo_train_data", argv("killed"))
    assert calls == [10, 10]
    rows = [load_from_disk(str(tmp_path / n)).to_list() for n in ("uninterrupted", "killed")]
    assert rows[0] == rows[1] and len(rows[0]) > 0


def test_fp16_overflow_skips_are_logged_with_the_scale(caplog):
    """The loss scaler's skipped update (fp16 overflow) is logged with the step, the new scale and a count."""
    from types import SimpleNamespace

    from sparse.training.trainer import LogSkippedSteps

    scaler = SimpleNamespace(get_scale=lambda: 32768.0)
    trainer = SimpleNamespace(accelerator=SimpleNamespace(optimizer_step_was_skipped=False, scaler=scaler))
    callback = LogSkippedSteps(trainer)
    with caplog.at_level("WARNING", logger="sparse.training.trainer"):
        callback.on_step_end(None, SimpleNamespace(global_step=6), None)
        trainer.accelerator.optimizer_step_was_skipped = True
        callback.on_step_end(None, SimpleNamespace(global_step=7), None)
        callback.on_step_end(None, SimpleNamespace(global_step=8), None)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "step 7" in messages[0] and "scale now 32768" in messages[0]
    assert "2 skipped so far" in messages[1]

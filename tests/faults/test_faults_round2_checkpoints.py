"""Round 2, checkpoints: a save is written into a staging folder and renamed when complete, so a
kill or a full disk never leaves a folder that looks like a complete checkpoint; a full disk is one
``error:`` line naming the path; ``resume_from_checkpoint=true`` passes over incomplete checkpoints
(no ``trainer_state.json``) to the last complete one, saying so."""

from __future__ import annotations

import errno
import os
import shutil


from sparse.training.trainer import SparseTrainer, complete_checkpoint


def _args(env, out, **kw):
    values = {"model_name_or_path": env["model"], "train_file": env["posnegs"], "data_type": "posnegs",
              "loss_types": "[infonce]", "output_dir": str(out), "max_seq_length": 16, "logging_steps": 1,
              "per_device_train_batch_size": 4, "learning_rate": 1e-3, "seed": 11, "max_steps": 6,
              "save_strategy": "steps", "save_steps": 2, "report_to": "none"}
    values.update(kw)
    return [f"{k}={v}" for k, v in values.items()]


def _checkpoints(out) -> list[str]:
    return sorted(e for e in os.listdir(out) if "checkpoint" in e)


def test_disk_full_during_a_checkpoint_save(cli, faults_env, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = SparseTrainer._save_rng_state
    calls = {"n": 0}

    def full_disk(self, output_dir):
        calls["n"] += 1
        if calls["n"] == 2:  # the second save (step 4): weights written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", os.path.join(output_dir, "rng_state.pth"))
        return original(self, output_dir)

    monkeypatch.setattr(SparseTrainer, "_save_rng_state", full_disk)
    code, _, err = cli("train_ir", *_args(faults_env, out))
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(message) == 1 and "Traceback" not in err, err[-3000:]
    assert f"saving checkpoint {out / 'checkpoint-4'} failed: No space left on device" in message[0]
    assert f"the last complete checkpoint is {out / 'checkpoint-2'}" in message[0]
    assert _checkpoints(out) == ["checkpoint-2"]  # nothing incomplete left under any name
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()

    monkeypatch.setattr(SparseTrainer, "_save_rng_state", original)
    code, _, err = cli("train_ir", *_args(faults_env, out, resume_from_checkpoint="true"))
    assert code == 0, err[-3000:]
    assert _checkpoints(out) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_a_checkpoint_appears_only_when_complete(cli, faults_env, tmp_path, monkeypatch):
    from transformers.trainer_callback import TrainerState

    out = tmp_path / "run"
    seen = []
    original = TrainerState.save_to_json

    def save_to_json(self, json_path):
        folder = os.path.dirname(json_path)
        seen.append((os.path.basename(folder), os.path.isdir(out / f"checkpoint-{self.global_step}")))
        return original(self, json_path)

    monkeypatch.setattr(TrainerState, "save_to_json", save_to_json)
    code, _, err = cli("train_ir", *_args(faults_env, out, max_steps=4))
    assert code == 0, err[-3000:]
    assert seen and all(not visible for _, visible in seen), seen  # trainer_state.json written before the rename
    assert _checkpoints(out) == ["checkpoint-2", "checkpoint-4"]


def test_resume_true_passes_over_incomplete_checkpoints(cli, faults_env, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli("train_ir", *_args(faults_env, out, max_steps=4))
    assert code == 0, err[-3000:]
    # a save killed half-way (by an older version, or a copy cut short): weights but no trainer_state.json
    (out / "checkpoint-4" / "trainer_state.json").unlink()
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-6")
    (out / "checkpoint-6" / "trainer_state.json").unlink()
    code, _, err = cli("train_ir", *_args(faults_env, out, resume_from_checkpoint="true"))
    assert code == 0, err[-3000:]
    assert "are incomplete (no trainer_state.json" in err and f"resuming from the last complete checkpoint, {out / 'checkpoint-2'}" in err, err[-3000:]
    log = (out / "train.log").read_text()
    assert f"resuming from the last complete checkpoint, {out / 'checkpoint-2'}" in log
    assert (out / "checkpoint-6" / "trainer_state.json").is_file()  # step 6 saved again, complete now


def test_resume_true_with_only_incomplete_checkpoints_is_an_error(cli, faults_env, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoint-3" / "config.json").write_text("{}")
    code, _, err = cli("train_ir", *_args(faults_env, out, resume_from_checkpoint="true"))
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(message) == 1, err[-2000:]
    assert "only incomplete ones (checkpoint-3: no trainer_state.json)" in message[0]
    assert sorted(os.listdir(out)) == ["checkpoint-3"]  # nothing written


def test_complete_checkpoint_picks_the_highest_complete_step(tmp_path):
    for step, complete in ((2, True), (10, True), (12, False), (9, True)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / ".saving-checkpoint-14").mkdir()
    skipped = []
    assert complete_checkpoint(str(tmp_path), skipped) == str(tmp_path / "checkpoint-10")
    assert skipped == [str(tmp_path / "checkpoint-12")]
    assert complete_checkpoint(str(tmp_path / "absent")) is None


def test_resume_from_a_checkpoint_with_damaged_weights(cli, faults_env, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli("train_ir", *_args(faults_env, out, max_steps=2))
    assert code == 0, err[-3000:]
    weights = out / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    before = sorted(os.listdir(out))
    log = (out / "train.log").read_text()
    code, _, err = cli("train_ir", *_args(faults_env, out, max_steps=4, resume_from_checkpoint="true"))
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(message) == 1 and "Traceback" not in err, err[-3000:]
    assert f"the weights in {weights} are damaged" in message[0] and "re-copy" in message[0]
    assert sorted(os.listdir(out)) == before and (out / "train.log").read_text() == log  # nothing written


def test_disk_full_saving_the_final_model(cli, faults_env, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = SparseTrainer.save_model

    def full(self, output_dir=None, _internal_call=False):
        if not _internal_call and output_dir == str(out):
            raise OSError(errno.ENOSPC, "No space left on device", str(out / "model.safetensors"))
        return original(self, output_dir, _internal_call)

    monkeypatch.setattr(SparseTrainer, "save_model", full)
    code, _, err = cli("train_ir", *_args(faults_env, out, max_steps=4))
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(message) == 1 and "Traceback" not in err, err[-3000:]
    assert f"saving the final model into {out} failed: No space left on device" in message[0]
    assert f"the last complete checkpoint is {out / 'checkpoint-4'}" in message[0]
    assert not (out / "train_results.json").exists()  # it never looks finished

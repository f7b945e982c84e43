"""Round 2, an oversubscribed CPU: with other processes keeping some of this process's CPUs busy,
torch's default thread count makes a small model many times slower. The decision (how many threads
for how many free CPUs) is tested as a function, and training / evaluation apply it and say so in
the log; a thread count the user set is kept."""

from __future__ import annotations

import pytest

from sparse.corpus import threads
from sparse.corpus.threads import SMALL_MODEL_PARAMS, choose_threads


@pytest.mark.parametrize("current,cpus,busy,params,device,user,local,want", [
    (2, 2, 1.0, 10_000, "cpu", None, 1, 1),         # the reported case: one of two cores busy -> 1 thread
    (2, 2, 0.0, 10_000, "cpu", None, 1, None),      # an idle machine: torch's count is kept
    (2, 2, 0.3, 10_000, "cpu", None, 1, None),      # a little background load is not a busy core
    (2, 2, 2.0, 10_000, "cpu", None, 1, 1),         # every core busy: still one thread, never zero
    (16, 16, 6.0, 10_000, "cpu", None, 1, 10),      # 10 free of 16
    (16, 16, 6.0, 10_000, "cpu", None, 2, 5),       # torchrun with 2 processes share the free CPUs
    (2, 2, 1.0, 10_000, "cpu", "OMP_NUM_THREADS=2", 1, None),  # the user's choice is kept
    (2, 2, 1.0, 10_000, "cuda", None, 1, None),     # GPU runs are not touched
    (2, 2, 1.0, SMALL_MODEL_PARAMS + 1, "cpu", None, 1, None),  # a large model keeps torch's count
])
def test_choose_threads(current, cpus, busy, params, device, user, local, want):
    got, reason = choose_threads(current, cpus, busy, device, params, user, local)
    assert got == want, reason
    if want is not None:
        assert f"torch threads {current} -> {want}" in reason and "OMP_NUM_THREADS" in reason
    if user:
        assert "kept" in reason


def test_busy_elsewhere_measures_a_number_of_cpus():
    value = threads.busy_elsewhere(interval=0.05)
    assert 0.0 <= value <= len(threads._affinity())


def _train_args(env, out):
    return [f"model_name_or_path={env['model']}", f"train_file={env['posnegs']}", "data_type=posnegs",
            "loss_types=[infonce]", f"output_dir={out}", "max_steps=1", "report_to=none", "max_seq_length=16"]


@pytest.fixture
def busy_cpu(monkeypatch):
    """Two CPUs, one of them busy with another process, torch at 2 threads and no thread count
    set by the user (a test may set one afterwards)."""
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_affinity", lambda: {0, 1})
    monkeypatch.setattr(threads, "busy_elsewhere", lambda cpus=None, interval=0.25: 1.0)
    torch.set_num_threads(2)


def test_training_lowers_threads_on_a_busy_cpu_and_logs_it(busy_cpu, cli, faults_env, tmp_path, monkeypatch):
    import torch

    code, _, err = cli("train_ir", *_train_args(faults_env, tmp_path / "run"))
    assert code == 0, err[-2000:]
    assert torch.get_num_threads() == 1
    log = (tmp_path / "run" / "train.log").read_text()
    assert "1.0 of 2 CPUs are busy with other processes: torch threads 2 -> 1" in log


def test_training_keeps_the_users_thread_count(busy_cpu, cli, faults_env, tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    code, _, err = cli("train_ir", *_train_args(faults_env, tmp_path / "run"))
    assert code == 0, err[-2000:]
    assert torch.get_num_threads() == 2
    assert "thread count set by the user (OMP_NUM_THREADS=2): kept at 2" in (tmp_path / "run" / "train.log").read_text()


def test_evaluation_lowers_threads_on_a_busy_cpu_and_logs_it(busy_cpu, cli, faults_env, tmp_path, monkeypatch):
    import torch

    code, _, err = cli("evaluate_beir", "--model_name_or_path", faults_env["model"], "--beir_dir",
                       faults_env["beir_dir"], "--beir_datasets", "tinyset", "--output_dir", str(tmp_path / "out"))
    assert code == 0, err[-2000:]
    assert torch.get_num_threads() == 1
    assert "torch threads 2 -> 1" in (tmp_path / "out" / "beir_eval" / "eval_beir.log").read_text()

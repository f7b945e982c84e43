"""2 processes (gloo, torchrun) vs 1 process on the same global batch: same losses, same weights.

Each process trains with per_device_train_batch_size=2; the single process with 4. After two
optimizer steps the logged losses and every parameter must agree to 1e-5. The learning rate is
large so that a wrong loss scale or a wrong gather would move the weights visibly apart.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch


REPO = Path(__file__).resolve().parent.parent
WORDS = "the cat dog sat on mat a bird flew over house red blue green is big small".split()


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_checkpoint_factory):
    import datasets

    root = tmp_path_factory.mktemp("ddp")
    tiny_checkpoint_factory(root, seed=3)
    rng = random.Random(0)

    def sent(n):
        return " ".join(rng.choice(WORDS) for _ in range(n))

    rows = [{"query": sent(3), "pos": sent(8), "negs": [sent(8) for _ in range(4)]} for _ in range(24)]
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "posnegs"))
    with open(root / "kd.jsonl", "w") as f:
        for _ in range(24):
            f.write(json.dumps({"query": sent(3), "docs": [sent(rng.randint(2, 12)) for _ in range(6)],
                                "scores": [rng.uniform(0, 10) for _ in range(6)]}) + "\n")
    return root


def _train(root: Path, name: str, nproc: int, extra: list[str]) -> Path:
    out = root / name
    args = [f"model_name_or_path={root / 'model'}", f"output_dir={out}", "max_steps=2", "logging_steps=1",
            "save_strategy=steps", "save_steps=2", "max_seq_length=32", "learning_rate=0.001", "warmup_steps=0",
            "seed=7", f"per_device_train_batch_size={4 // nproc}", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    if nproc == 1:
        cmd = [sys.executable, str(REPO / "train_ir.py"), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               str(REPO / "train_ir.py"), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _compare(root: Path, extra: list[str], loss_keys: tuple[str, ...]):
    from safetensors.torch import load_file

    one = _train(root, "one_" + extra[0].split("=")[1], 1, extra)
    two = _train(root, "two_" + extra[0].split("=")[1], 2, extra)
    logs = []
    for out in (one, two):
        hist = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
        logs.append([h for h in hist if "loss" in h])
    assert len(logs[0]) == len(logs[1]) == 2
    for a, b in zip(*logs):
        for key in loss_keys:
            assert a[key] == pytest.approx(b[key], abs=1e-5, rel=1e-5), key
    w_init = load_file(str(root / "model" / "model.safetensors"))
    w1 = load_file(str(one / "model.safetensors"))
    w2 = load_file(str(two / "model.safetensors"))
    moved = max((w1[k] - w_init[k]).abs().max().item() for k in w1)
    assert moved > 1e-3  # the steps really changed the weights
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-5), k
    return logs, one, two


def test_infonce_in_batch_two_processes_equal_one(assets):
    extra = ["data_type=posnegs", f"train_file={assets / 'posnegs'}", "loss_types=[infonce]",
             "use_in_batch_negatives=true", "sample_num_one_query=2", "flops_d_lambda=0.5", "flops_d_T=1",
             "idf_requires_grad=true", "idf_lr=0.01"]
    logs, one, two = _compare(assets, extra, ("loss", "ranking_loss", "flops_loss", "doc_nnz"))
    idf1 = json.loads((one / "idf.json").read_text())
    idf2 = json.loads((two / "idf.json").read_text())
    assert idf1.keys() == idf2.keys()
    assert max(abs(idf1[t] - idf2[t]) for t in idf1) < 1e-5
    assert max(abs(v - 1.0) for v in idf1.values()) > 1e-3  # the learned IDF moved


def test_kldiv_flops_l0_mask_two_processes_equal_one(assets):
    extra = ["data_type=kd", f"train_file={assets / 'kd.jsonl'}", "loss_types=[kldiv]", "sample_num_one_query=3",
             "flops_d_lambda=0.5", "flops_d_T=1", "flops_threshold=12", "use_l0=true", "temperature=2"]
    logs, _, _ = _compare(assets, extra, ("loss", "ranking_loss", "flops_loss", "flops_d"))
    assert all(h["flops_d"] > 0 for h in logs[0])

"""The training step, optimizer, guards, checkpoints and the reference configs, in one process."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from sparse.errors import UserError
from sparse.losses import flops, flops_lambda, infonce_loss
from sparse.training.run import main

REF_CONFIGS = Path(__file__).resolve().parent / "fixtures" / "reference_configs"  # copied from shared/reference
WORDS = "the cat dog sat on mat a bird flew over house red blue green is big small".split()


def _write_data(root: Path, texts: list[str], n_rows: int = 16, seed: int = 0) -> tuple[str, str]:
    """A posnegs save_to_disk directory and a kd JSONL file (with scores) built from ``texts``."""
    import datasets

    rng = random.Random(seed)
    rows = [{"query": " ".join(rng.choice(texts).split()[:6]), "pos": rng.choice(texts),
             "negs": [rng.choice(texts) for _ in range(4)]} for _ in range(n_rows)]
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "posnegs"))
    with open(root / "kd.jsonl", "w") as f:
        for r in rows:
            docs = [r["pos"], *r["negs"]]
            f.write(json.dumps({"query": r["query"], "docs": docs,
                                "scores": sorted((rng.uniform(0, 10) for _ in docs), reverse=True)}) + "\n")
    return str(root / "posnegs"), str(root / "kd.jsonl")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_checkpoint_factory):
    root = tmp_path_factory.mktemp("tiny")
    tiny_checkpoint_factory(root, seed=5)
    rng = random.Random(1)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(50)]
    posnegs, kd = _write_data(root, texts)
    return {"root": root, "model": str(root / "model"), "posnegs": posnegs, "kd": kd}


def _common(tiny, out, **kw):
    args = {"model_name_or_path": tiny["model"], "output_dir": str(out), "max_seq_length": 32, "logging_steps": 1,
            "per_device_train_batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 0, "seed": 3,
            "save_strategy": "steps", "save_steps": 1000, "max_steps": 2}
    args.update(kw)
    return [f"{k}={v}" for k, v in args.items()]


def _history(out: Path) -> list[dict]:
    ckpts = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return json.loads((ckpts[-1] / "trainer_state.json").read_text())["log_history"]


# ---------------------------------------------------------------------- one step, by hand
def test_training_step_composes_ranking_and_flops(tiny, tmp_path):
    """loss = infonce(in-batch) + lambda(0) * FLOPS(l0 view of d) with decouple_activation."""
    from sparse.config import parse_config
    from sparse.data.collators import TrainingCollator
    from sparse.data.datasets import build_dataset
    from sparse.losses import FlopsRegularizer, RankingLoss
    from sparse.modeling.encoder import SparseEncoder
    from sparse.training.model import SparseTrainingModel
    from sparse.training.trainer import SparseTrainer

    cfg = parse_config(_common(tiny, tmp_path, report_to="[]"))
    enc = SparseEncoder.from_pretrained(tiny["model"], settings={"activation": "l1_relu", "decouple_activation": True,
                                                                 "max_seq_length": 32}).train()
    data = build_dataset(tiny["posnegs"], "posnegs", 2)
    trainer = SparseTrainer(SparseTrainingModel(enc), cfg.training, [data], TrainingCollator(enc.tokenize, 32),
                            RankingLoss(["infonce"], in_batch=True), FlopsRegularizer(0.3, 10, threshold=5))
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        q = enc(batch["q_input_ids"], batch["q_attention_mask"], inf_free=True)
        d = enc(batch["d_input_ids"], batch["d_attention_mask"])
    # scored weights are plain log(1 + relu) (decoupled); FLOPS sees one more log1p
    expected_flops = flops(torch.log1p(d), groups=3, threshold=5)
    expected = infonce_loss(q, d, in_batch=True) + flops_lambda(0, 0.3, 10) * expected_flops
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert trainer._stats["flops_d"][0] == pytest.approx(expected_flops.item(), rel=1e-5)


def test_optimizer_groups_no_decay_and_idf_lr(tiny, tmp_path):
    from sparse.config import parse_config
    from sparse.data.collators import TrainingCollator
    from sparse.data.datasets import build_dataset
    from sparse.losses import FlopsRegularizer, RankingLoss
    from sparse.modeling.encoder import SparseEncoder
    from sparse.training.model import SparseTrainingModel
    from sparse.training.trainer import SparseTrainer

    cfg = parse_config(_common(tiny, tmp_path, weight_decay=0.01, report_to="[]"))
    enc = SparseEncoder.from_pretrained(tiny["model"], settings={"idf_requires_grad": True})
    trainer = SparseTrainer(SparseTrainingModel(enc), cfg.training, [build_dataset(tiny["posnegs"], "posnegs", 2)],
                            TrainingCollator(enc.tokenize, 32), RankingLoss(["infonce"]), FlopsRegularizer(0, 1),
                            idf_lr=0.05)
    opt = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decay, no_decay, idf = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all("bias" not in names[id(p)] and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert any("LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert idf["params"] == [enc.idf] and idf["lr"] == 0.05 and idf["weight_decay"] == 0.0


def test_head_lr_gives_the_mlm_head_its_own_rate_and_keeps_tied_embeddings_in_the_body(tiny, tmp_path):
    from sparse.config import parse_config
    from sparse.data.collators import TrainingCollator
    from sparse.data.datasets import build_dataset
    from sparse.losses import FlopsRegularizer, RankingLoss
    from sparse.modeling.encoder import SparseEncoder
    from sparse.training.model import SparseTrainingModel
    from sparse.training.trainer import SparseTrainer

    cfg = parse_config(_common(tiny, tmp_path, weight_decay=0.01, report_to="[]"))
    enc = SparseEncoder.from_pretrained(tiny["model"])
    trainer = SparseTrainer(SparseTrainingModel(enc), cfg.training, [build_dataset(tiny["posnegs"], "posnegs", 2)],
                            TrainingCollator(enc.tokenize, 32), RankingLoss(["infonce"]), FlopsRegularizer(0, 1),
                            head_lr=0.02)
    opt = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"decay", "no_decay", "head_decay", "head_no_decay"}
    head = {names[id(p)] for g in ("head_decay", "head_no_decay") for p in groups[g]["params"]}
    body = {names[id(p)] for g in ("decay", "no_decay") for p in groups[g]["params"]}
    mlm = enc.mlm
    output_bias = mlm.get_output_embeddings().bias
    assert names[id(output_bias)] in head and all(".cls." in n for n in head)
    assert mlm.get_output_embeddings().weight is mlm.get_input_embeddings().weight  # tied in the tiny model
    assert names[id(mlm.get_input_embeddings().weight)] in body and not any(".cls." in n for n in body)
    assert len(head) + len(body) == sum(p.requires_grad for p in trainer.model.parameters())  # IDF not trained
    assert groups["head_decay"]["lr"] == groups["head_no_decay"]["lr"] == 0.02
    assert groups["head_decay"]["weight_decay"] == 0.01 and groups["head_no_decay"]["weight_decay"] == 0.0
    assert "lr" not in groups["decay"] or groups["decay"]["lr"] == 1e-3
    trainer.create_scheduler(10, opt)  # the schedule scales each group from its own rate
    assert {g["name"]: g["lr"] for g in opt.param_groups}["head_no_decay"] == pytest.approx(0.02)


def test_dataset_repeats_reach_the_sampler_and_a_wrong_name_stops_before_writing(tiny, tmp_path):
    import shutil

    mixed = tmp_path / "mixed"
    for name in ("labelled", "pseudo"):  # 32 items each: 8 batches of 4 a pass
        shutil.copytree(tiny["posnegs"], mixed / name)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="dataset_repeats names labeled, but the training datasets are labelled, pseudo"):
        main(_common(tiny, out, data_type="posnegs", train_file_dir=str(mixed), loss_types="[infonce]",
                     dataset_repeats="{labeled: 3}"))
    assert not out.exists()
    summary = main(_common(tiny, out, data_type="posnegs", train_file_dir=str(mixed), loss_types="[infonce]",
                           dataset_repeats="{labelled: 3}", sample_num_one_query=2, max_steps=1, report_to="[]"))
    assert summary["global_step"] == 1
    log = (out / "train.log").read_text()
    assert "labelled: 32 items x 3 passes an epoch, 75.0% of the items" in log
    assert "pseudo: 32 items x 1 pass an epoch, 25.0% of the items" in log
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(1 / (3 * 8 + 8))  # the epoch's batches: 3 passes, then 1


def test_untie_output_embeddings_trains_the_output_vectors_apart_and_saves_them(tiny, tmp_path):
    from sparse.modeling.encoder import SparseEncoder

    out = tmp_path / "untied"
    main(_common(tiny, out, data_type="posnegs", train_file=tiny["posnegs"], loss_types="[infonce]",
                 sample_num_one_query=2, untie_output_embeddings="true", head_lr=0.05, report_to="[]"))
    assert "output projection untied from the word embeddings" in (out / "train.log").read_text()
    start = SparseEncoder.from_pretrained(tiny["model"]).mlm
    trained = SparseEncoder.from_pretrained(str(out)).mlm
    assert start.get_output_embeddings().weight is start.get_input_embeddings().weight
    decoder, words = trained.get_output_embeddings(), trained.get_input_embeddings()
    assert decoder.weight is not words.weight
    # from one start, the output vectors moved at head_lr (50x) and the input embeddings at learning_rate
    out_move = (decoder.weight - start.get_input_embeddings().weight).abs().max()
    in_move = (words.weight - start.get_input_embeddings().weight).abs().max()
    assert out_move > 5 * in_move > 0
    # the trained output bias came back (an untied bias that is not saved reloads as zeros)
    assert (decoder.bias - start.get_output_embeddings().bias).abs().max() > 1e-3


def test_untie_output_embeddings_refuses_transformers_4_before_writing(tiny, tmp_path, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "__version__", "4.57.1")
    out = tmp_path / "old"
    with pytest.raises(UserError, match="needs transformers >= 5"):
        main(_common(tiny, out, data_type="posnegs", train_file=tiny["posnegs"], loss_types="[infonce]",
                     untie_output_embeddings="true"))
    assert not out.exists()


# ---------------------------------------------------------------------- whole runs
def test_checkpoints_are_self_describing_and_resume_exactly(tiny, tmp_path):
    from safetensors.torch import load_file

    from sparse.modeling.encoder import SparseEncoder

    common = dict(data_type="kd", train_file=tiny["kd"], loss_types="[kldiv,marginmse]", loss_weights="[1.0,0.1]",
                  sample_num_one_query=2, use_l0="true", flops_threshold=6, flops_d_lambda=0.1, flops_d_T=3,
                  save_strategy="steps", save_steps=2, max_steps=4, lr_scheduler_type="cosine", warmup_steps=1)
    full = tmp_path / "full"
    summary = main(_common(tiny, full, **common))
    assert summary["global_step"] == 4
    ckpt = full / "checkpoint-2"
    enc = SparseEncoder.from_pretrained(str(ckpt))
    assert enc.settings.activation == "l1_relu" and enc.settings.max_seq_length == 32
    assert (ckpt / "idf.json").is_file() and (full / "train_config.yaml").is_file() and (full / "train.log").is_file()
    hist = _history(full)
    lrs = [h["learning_rate"] for h in hist if "learning_rate" in h]
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(1e-3) and 0 < lrs[3] < lrs[2] < lrs[1]  # warm-up, cosine
    assert {"ranking_loss", "flops_loss", "lambda_d", "doc_nnz", "query_nnz", "doc_weight_mean", "doc_weight_max",
            "loss_kldiv", "loss_marginmse"} <= set(hist[0])
    assert hist[0]["lambda_d"] == pytest.approx(0.1 / 9)  # lambda * ((0 + 1) / 3)^2
    log_text = (full / "train.log").read_text()
    assert "ranking_loss" in log_text and "doc_nnz" in log_text

    resumed = tmp_path / "resumed"
    main(_common(tiny, resumed, **common, resume_from_checkpoint=str(ckpt)))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_siamese_training_uses_default_query_flops(tiny, tmp_path):
    out = tmp_path / "siamese"
    main(_common(tiny, out, data_type="posnegs", train_file=tiny["posnegs"], loss_types="[infonce]", inf_free="false",
                 flops_form="mean", save_strategy="steps", save_steps=2))
    hist = _history(out)
    assert hist[0]["lambda_q"] == pytest.approx(1e-3 * (1 / 10000) ** 2)  # defaults 1e-3 / 10000
    assert hist[0]["flops_q"] > 0 and hist[0]["query_nnz"] > 0


def test_nan_loss_stops_with_message_and_checkpoint(tiny, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(UserError, match="training loss is nan at step 0") as err:
        main(_common(tiny, out, data_type="posnegs", train_file=tiny["posnegs"], loss_types="[infonce]",
                     ranking_loss_weight=".nan"))
    assert "checkpoint-0-nonfinite" in str(err.value)
    assert (out / "checkpoint-0-nonfinite" / "sparse_config.json").is_file()


def test_missing_scores_is_a_config_error(tiny, tmp_path):
    with pytest.raises(UserError, match="need teacher scores"):
        main(_common(tiny, tmp_path / "x", data_type="posnegs", train_file=tiny["posnegs"], loss_types="[kldiv]"))


# ---------------------------------------------------------------------- the reference's YAML files
@pytest.fixture(scope="module")
def scifact_data(tmp_path_factory, scifact_dir):
    root = tmp_path_factory.mktemp("scifact_small")
    texts = []
    with open(Path(scifact_dir) / "corpus.jsonl") as f:
        for line, _ in zip(f, range(60)):
            row = json.loads(line)
            texts.append((row.get("title", "") + " " + row["text"])[:400])
    posnegs, kd = _write_data(root, texts, n_rows=8)
    return {"posnegs": posnegs, "kd": kd}


@pytest.mark.parametrize("name", ["config_infonce.yaml", "config_kd.yaml", "config_l0.yaml", "l0_sample.yaml"])
def test_reference_configs_run_unchanged(name, tmp_path, scifact_data, splade_path, minilm_path, idf_path):
    cfg = REF_CONFIGS / name
    is_kd = name.startswith(("config_l0", "l0_sample"))
    overrides = [f"model_name_or_path={splade_path}", f"tokenizer_name={splade_path}", f"idf_path={idf_path}",
                 f"train_file={scifact_data['kd'] if is_kd else scifact_data['posnegs']}",
                 f"output_dir={tmp_path / 'out'}", "max_steps=2", "per_device_train_batch_size=2",
                 "max_seq_length=64", "save_steps=2", "logging_steps=1"]
    if name == "config_kd.yaml":
        overrides.append("kd_ensemble_teacher_kwargs={types: [dense, sparse], model_ids: [%s, %s], "
                         "teacher_tokenizer_ids: [%s, %s], score_scale: 30, poolings: [mean, cls]}"
                         % (minilm_path, splade_path, minilm_path, splade_path))
    summary = main([str(cfg), *overrides])
    assert summary["global_step"] == 2
    hist = _history(tmp_path / "out")
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in hist if "loss" in h)
    from sparse.modeling.encoder import SparseEncoder

    enc = SparseEncoder.from_pretrained(str(tmp_path / "out"))
    expected_act = "l1_relu" if is_kd else "relu"
    assert enc.settings.activation == expected_act and enc.settings.inf_free

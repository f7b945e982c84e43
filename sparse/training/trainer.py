"""``SparseTrainer``: the HF ``Trainer`` with the method's training step (the reference trainer's ``compute_loss``).

One step, for the local batch of B queries with k documents each:
  1. online teacher scores, if a teacher ensemble is configured (they replace dataset scores);
  2. q_rep (B, V), d_rep (B*k, V) from the encoder (one forward, see ``model.py``);
  3. gather q_rep, d_rep (local slice with gradient) and the scores across ranks by global rank;
  4. ranking  = ranking_loss_weight * sum_l w_l * L_l(q_g, d_g, scores_g)       (``losses.ranking``)
     flops    = lambda_d(s) * FLOPS(view(d_g), G=k)  [+ lambda_q(s) * FLOPS(view(q_g), G=1) siamese]
  5. return (ranking + flops) * W, so DDP's gradient mean equals the single-process gradient
     of the global batch (``sparse.corpus.distributed``).

Every ``logging_steps`` the averages since the last log of the ranking and FLOPS losses, the
current lambdas, the mean non-zeros per document / query and the mean / max non-zero document
weight are added to the Trainer's logs (log file, console, TensorBoard when it reports there).
Collapse guard: a warning when documents are empty or use more than half of the vocabulary; a
non-finite loss saves ``checkpoint-<step>-nonfinite`` and stops with ``TrainingDiverged``, naming
the step, the loss terms and the last good checkpoint. SIGTERM / SIGINT (``StopOnSignal``): the
current step finishes, a checkpoint is saved and training stops with ``TrainingInterrupted``;
``resume_from_checkpoint=true`` continues at that step with the same data order.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import defaultdict
from typing import Optional

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from sparse.corpus.distributed import (gather_nograd, gather_objects, gather_with_grad, group_rank,
                                       group_world_size)
from sparse.data.sampler import ConcatItems, GlobalBatchSampler
from sparse.errors import UserError
from sparse.losses.flops import FlopsRegularizer
from sparse.losses.ranking import RankingLoss
from sparse.modeling.encoder import head_parameters
from sparse.modeling.idf import idf_vector, load_idf_file
from sparse.training.health import TrainingHealth
from sparse.training.model import SparseTrainingModel

logger = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(UserError):
    """Training was stopped by a signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for "killed by signal N"


class StopOnSignal(TrainerCallback):
    """SIGTERM / SIGINT: finish the current step, save a checkpoint, stop. A second signal kills at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: Optional[int] = None
        self._previous: dict = {}

    def install(self) -> "StopOnSignal":
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # asked twice: stop now, without a checkpoint
            self.uninstall()
            signal.raise_signal(signum)
            return
        self.received = signum
        logger.warning("%s received: saving a checkpoint after the current step, then stopping "
                       "(send it again to stop at once)", signal.Signals(signum).name)

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True
        return control


class LogSkippedSteps(TrainerCallback):
    """fp16: the loss scaler skips an update whose gradients overflowed; each skip is logged with the
    new scale and a count, so a run that keeps skipping is visible (lower the learning rate or use bf16)."""

    def __init__(self, trainer: "SparseTrainer"):
        self.trainer = trainer
        self.skipped = 0

    def on_step_end(self, args, state, control, **kwargs):
        accelerator = getattr(self.trainer, "accelerator", None)
        if accelerator is None or not getattr(accelerator, "optimizer_step_was_skipped", False):
            return control
        self.skipped += 1
        scaler = getattr(accelerator, "scaler", None)
        scale = scaler.get_scale() if scaler is not None else float("nan")
        logger.warning("step %d: fp16 gradients overflowed, the loss scaler skipped this update "
                       "(scale now %g; %d skipped so far)", state.global_step, scale, self.skipped)
        return control


class _EpochDataLoader(DataLoader):
    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


class SparseTrainer(Trainer):
    """The HF ``Trainer`` with this method's loss, global-batch sampling, optimizer groups and checkpoints."""

    def __init__(self, model: SparseTrainingModel, args, train_datasets: list, data_collator,
                 ranking_loss: RankingLoss, doc_flops: FlopsRegularizer,
                 query_flops: Optional[FlopsRegularizer] = None, teacher=None, idf_lr: Optional[float] = None,
                 head_lr: Optional[float] = None, dataset_repeats: Optional[list[int]] = None,
                 health: Optional[TrainingHealth] = None, stop_on_collapse: bool = False, **kwargs):
        super().__init__(model=model, args=args, train_dataset=ConcatItems(train_datasets),
                         data_collator=data_collator, processing_class=model.encoder.tokenizer, **kwargs)
        self.encoder = model.encoder
        self.train_datasets = list(train_datasets)
        self.ranking_loss = ranking_loss
        self.doc_flops = doc_flops
        self.query_flops = query_flops
        self.teacher = teacher
        self.idf_lr = idf_lr
        self.head_lr = head_lr
        self.dataset_repeats = dataset_repeats
        self._stats: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        self._maxes: dict[str, float] = {}
        self.last_metrics: dict[str, float] = {}
        self.health = health or TrainingHealth(self.encoder.vocab_size, None)
        self.stop_on_collapse = stop_on_collapse
        self.add_callback(LogSkippedSteps(self))

    # ------------------------------------------------------------------ data
    def get_train_dataloader(self) -> DataLoader:
        """Global batches, identical on every rank and sliced by global rank (``data.sampler``)."""
        sampler = GlobalBatchSampler([len(d) for d in self.train_datasets], self.args.per_device_train_batch_size,
                                     world_size=group_world_size(), rank=group_rank(), seed=self.args.seed,
                                     drop_last=self.args.dataloader_drop_last, repeats=self.dataset_repeats)
        if len(sampler) == 0:
            raise UserError(f"the training data ({len(self.train_dataset)} items) is smaller than one global batch "
                            f"({self.args.per_device_train_batch_size} x {group_world_size()} processes)")
        workers = self.args.dataloader_num_workers
        return _EpochDataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                                num_workers=workers, pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available(),
                                persistent_workers=workers > 0 and self.args.dataloader_persistent_workers)

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, model=None):
        """AdamW; no weight decay on biases, LayerNorm weights and the IDF vector; IDF at ``idf_lr``; the MLM
        head (``head_parameters``) at ``head_lr`` when set."""
        if self.optimizer is not None:
            return self.optimizer
        model = self.model
        decay_names = set(self.get_decay_parameter_names(model))
        idf = self.encoder.idf
        try:
            head = {id(p) for p in head_parameters(self.encoder.mlm)} if self.head_lr is not None else set()
        except UserError as exc:
            raise UserError(f"{exc}: head_lr cannot be set") from None
        groups = {name: [] for name in ("decay", "no_decay", "head_decay", "head_no_decay", "idf")}
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if p is idf:
                groups["idf"].append(p)
                continue
            part = "head_" if id(p) in head else ""
            groups[part + ("decay" if name in decay_names else "no_decay")].append(p)
        decay = self.args.weight_decay
        params = [{"name": "decay", "params": groups["decay"], "weight_decay": decay},
                  {"name": "no_decay", "params": groups["no_decay"], "weight_decay": 0.0},
                  {"name": "head_decay", "params": groups["head_decay"], "weight_decay": decay, "lr": self.head_lr},
                  {"name": "head_no_decay", "params": groups["head_no_decay"], "weight_decay": 0.0,
                   "lr": self.head_lr},
                  {"name": "idf", "params": groups["idf"], "weight_decay": 0.0,
                   "lr": self.idf_lr if self.idf_lr is not None else self.args.learning_rate}]
        params = [g for g in params if g["params"]]
        self.optimizer = torch.optim.AdamW(params, lr=self.args.learning_rate,
                                           betas=(self.args.adam_beta1, self.args.adam_beta2), eps=self.args.adam_epsilon)
        logger.info("AdamW: %s", ", ".join(f"{g['name']} {len(g['params'])} tensors (lr {g.get('lr', 'learning_rate')}, "
                                           f"weight decay {g['weight_decay']:g})" for g in params))
        return self.optimizer

    # ------------------------------------------------------------------ loss
    def _teacher_scores(self, queries: list[str], docs: list[str]) -> torch.Tensor:
        if self.ranking_loss.in_batch:
            return self.teacher.score_all(queries, docs, gather_tensor=gather_nograd, gather_texts=gather_objects)
        return self.teacher.score_groups(queries, docs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        q_rep, d_rep = model(inputs["q_input_ids"], inputs["q_attention_mask"],
                             inputs["d_input_ids"], inputs["d_attention_mask"])
        b = q_rep.shape[0]
        k = d_rep.shape[0] // b
        scores = inputs.get("scores")
        if self.teacher is not None:
            scores = self._teacher_scores(inputs["queries"], inputs["docs"])
        if scores is not None:
            scores = gather_nograd(scores.to(q_rep.device, torch.float32))
        elif self.ranking_loss.needs_scores:
            raise UserError(f"losses {self.ranking_loss.loss_types} need scores: use kd data with a 'scores' "
                            "column or configure kd_ensemble_teacher_kwargs")
        q_g = gather_with_grad(q_rep)
        d_g = gather_with_grad(d_rep)
        ranking, parts = self.ranking_loss(q_g, d_g, scores)
        step = self.state.global_step
        flops_loss, d_flops, lam_d = self.doc_flops(self.encoder.sparsity_view(d_g), k, step)
        metrics = {"ranking_loss": float(ranking.detach()), "flops_d": float(d_flops.detach()), "lambda_d": lam_d,
                   **parts}
        if self.query_flops is not None:
            q_loss, q_flops, lam_q = self.query_flops(self.encoder.sparsity_view(q_g), 1, step)
            flops_loss = flops_loss + q_loss
            metrics.update(flops_q=float(q_flops.detach()), lambda_q=lam_q)
        metrics["flops_loss"] = float(flops_loss.detach())
        loss = ranking + flops_loss
        if not torch.isfinite(loss.detach()):
            self._diverged(float(loss.detach()), metrics)
        self._record(metrics, q_g.detach(), d_g.detach())
        if model.training:
            self.health.observe(d_g.detach())
        loss = loss * group_world_size()
        return (loss, {"q_rep": q_rep, "d_rep": d_rep}) if return_outputs else loss

    # ------------------------------------------------------------------ logging and guards
    def _record(self, metrics: dict, q: torch.Tensor, d: torch.Tensor) -> None:
        d_nz = d > 0
        metrics = dict(metrics, doc_nnz=float(d_nz.sum(1).float().mean()), query_nnz=float((q > 0).sum(1).float().mean()))
        if d_nz.any():
            metrics["doc_weight_mean"] = float(d[d_nz].mean())
            self._maxes["doc_weight_max"] = max(self._maxes.get("doc_weight_max", 0.0), float(d[d_nz].max()))
        for key, value in metrics.items():
            acc = self._stats[key]
            acc[0] += value
            acc[1] += 1

    def log(self, logs: dict, start_time=None) -> None:
        w = group_world_size()
        for key in ("loss", "train_loss"):  # the returned loss is x W for DDP's gradient mean
            if key in logs and w > 1:
                logs[key] = logs[key] / w
        if self._stats:
            for key, (total, count) in self._stats.items():
                logs[key] = total / max(count, 1)
            logs.update(self._maxes)
            self._stats.clear()
            self._maxes.clear()
            if self.optimizer is not None:
                for i, group in enumerate(self.optimizer.param_groups):
                    logs[f"lr_{group.get('name', i)}"] = group["lr"]
            logs["vocab_inactive"] = self.health.inactive_fraction()
            self.last_metrics = dict(logs)
            self._collapse_guard(logs)
            if self.is_world_process_zero():
                self.health.write(self.state.global_step, logs)
                shown = {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in logs.items()}
                logger.info("step %d: %s", self.state.global_step, shown)
        super().log(logs, start_time)

    def _collapse_guard(self, logs: dict) -> None:
        nnz = logs.get("doc_nnz")
        if nnz is None or not self.is_world_process_zero():
            return
        step = self.state.global_step
        warning = self.health.check(step, nnz)
        if warning:
            logger.warning(warning)
            if self.stop_on_collapse:
                logger.warning("stop_on_collapse: stopping at step %d; the model is saved to %s", step,
                               self.args.output_dir)
                self.control.should_training_stop = True
        elif nnz > self.encoder.vocab_size / 2:
            logger.warning("!!! DENSE: documents use %.0f of %d vocabulary entries at step %d; the FLOPS weight is "
                           "too weak (or still warming up: flops_d_T=%g)", nnz, self.encoder.vocab_size, step,
                           self.doc_flops.T)

    def _diverged(self, value: float, metrics: dict) -> None:
        step = self.state.global_step
        path = os.path.join(self.args.output_dir, f"checkpoint-{step}-nonfinite")
        self.save_model(path)
        parts = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        good = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None
        resume = (f"the last good checkpoint is {good} (resume_from_checkpoint={good})" if good
                  else "no checkpoint was saved before it")
        raise TrainingDiverged(f"the training loss is {value} at step {step} (loss terms: {parts}); {resume}; "
                               f"the weights before this step are in {path}. Lower the learning rate, use bf16 "
                               "instead of fp16, or check the data of this batch")

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, trial) -> None:
        """Trainer's checkpoint, written into ``<output_dir>/.saving-checkpoint-<step>/`` and renamed to
        ``checkpoint-<step>`` once complete (weights, optimizer, RNG and ``trainer_state.json``): a kill
        or a full disk during a save never leaves a folder that looks like a complete checkpoint. A
        failed save (e.g. no space left) removes its staging folder and is one error naming the path."""
        import shutil

        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

        run_dir = self._get_output_dir(trial=trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final = os.path.join(run_dir, name)
        staging = os.path.join(run_dir, f".saving-{name}")
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # what a killed earlier save left
        self.accelerator.wait_for_everyone()
        self._get_output_dir = lambda trial=None: staging  # the parent saves into staging/checkpoint-<step>
        try:
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                if os.path.isdir(final):  # the same step saved before (a resumed run): replaced whole
                    shutil.rmtree(final)
                os.replace(os.path.join(staging, name), final)
                shutil.rmtree(staging, ignore_errors=True)
                rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                                   best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            last = complete_checkpoint(run_dir)
            raise UserError(f"saving checkpoint {final} failed: {exc.strerror or exc}"
                            f"{f' ({exc.filename})' if exc.filename else ''}; the incomplete save was removed; "
                            f"{f'the last complete checkpoint is {last}' if last else 'no checkpoint is complete'}"
                            ) from None
        finally:
            del self._get_output_dir  # the class's method again
        self.accelerator.wait_for_everyone()

    def _save(self, output_dir: Optional[str] = None, state_dict=None) -> None:
        """Self-describing checkpoint (``SparseEncoder.save_pretrained``); teachers are never saved."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        logger.info("saving the sparse encoder to %s", output_dir)
        self.encoder.save_pretrained(output_dir, safe_serialization=getattr(self.args, "save_safetensors", True))
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        from transformers import AutoModelForMaskedLM

        logger.info("loading model weights from %s", resume_from_checkpoint)
        try:
            saved = AutoModelForMaskedLM.from_pretrained(resume_from_checkpoint)
        except OSError as exc:
            raise UserError(f"cannot resume from {resume_from_checkpoint}: {exc}") from None
        self.encoder.mlm.load_state_dict(saved.state_dict())
        idf_path = os.path.join(resume_from_checkpoint, "idf.json")
        if self.encoder.settings.idf_requires_grad and os.path.isfile(idf_path):
            self.encoder.idf.data.copy_(idf_vector(load_idf_file(idf_path), self.encoder.tokenizer,
                                                   self.encoder.vocab_size, source=idf_path))


def complete_checkpoint(output_dir: str, skipped: Optional[list] = None) -> Optional[str]:
    """The ``checkpoint-<step>`` of ``output_dir`` with the highest step that is complete (holds
    ``trainer_state.json``, which the Trainer writes last); the incomplete ones passed over are
    appended to ``skipped``. None when there is none."""
    import re

    if not os.path.isdir(output_dir):
        return None
    found = []
    for entry in os.listdir(output_dir):
        match = re.fullmatch(r"checkpoint-(\d+)", entry)
        if match and os.path.isdir(os.path.join(output_dir, entry)):
            found.append((int(match.group(1)), os.path.join(output_dir, entry)))
    for _, path in sorted(found, reverse=True):
        if os.path.isfile(os.path.join(path, "trainer_state.json")):
            return path
        if skipped is not None:
            skipped.append(path)
    return None

"""The training recipe behind ``train_ir.py``: config -> encoder, data, losses, teachers -> Trainer.

    python train_ir.py config/xxx.yaml [key=value ...]
    torchrun --nproc_per_node=N train_ir.py config/xxx.yaml [key=value ...]

Writes into ``output_dir``: ``train_config.yaml`` (the resolved config), ``train.log``,
``checkpoint-<step>/`` (self-describing; ``evaluate_beir.py`` needs only the path), the final
model, and ``train_results.json`` (steps, wall time, last logged metrics). Nothing is written
before the inputs are checked (``check_inputs``), so a bad command leaves no files behind.
``resume_from_checkpoint=true`` continues from the latest ``checkpoint-<step>`` of ``output_dir``.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import torch

from sparse.config import (FALSE_STRINGS, TRUE_STRINGS, Command, ConfigError, ResolvedConfig, check_training_keys,
                           parse_command)
from sparse.corpus import check_input_path, check_model_path, training_sparse_settings
from sparse.corpus import distributed
from sparse.corpus.distributed import group_rank, launch_world_size
from sparse.errors import check_output_dir, write_json

logger = logging.getLogger("sparse.train")

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"
COMMAND = Command("train_ir.py", __doc__, config=True, training=True)


def setup_logging(output_dir: str, is_main: bool, level: str = "info") -> None:
    import transformers

    lvl = logging.INFO if level in ("info", "passive", None) else getattr(logging, str(level).upper(), logging.INFO)
    lvl = lvl if is_main else logging.WARNING
    handlers = [logging.StreamHandler(sys.stdout)]
    if is_main:
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, "train.log"), encoding="utf-8"))
    logging.basicConfig(format=LOG_FORMAT, datefmt="%m/%d/%Y %H:%M:%S", level=lvl, handlers=handlers, force=True)
    transformers.utils.logging.set_verbosity(logging.WARNING)  # its per-file save messages drown ours
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()


def check_config(cfg: ResolvedConfig) -> None:
    """The rules between training keys (a key the mode ignores is named), before anything is written."""
    check_training_keys(cfg)
    d, args = cfg.data, cfg.training
    if d.data_type == "kd-ids":
        raise ConfigError("data_type kd-ids needs the reference's remote embedding service, which is not supported; "
                          "use kd")
    if args.max_steps is None or args.max_steps <= 0:
        logger.info("max_steps is not set: training for num_train_epochs=%s", args.num_train_epochs)
    if cfg.idf.idf_lr is not None and not cfg.idf.idf_requires_grad:
        logger.warning("idf_lr is set but idf_requires_grad is false: the IDF is not trained")
    if cfg.optimizer.head_lr is not None and cfg.idf.freeze_document_encoder:
        logger.warning("head_lr is set but freeze_document_encoder is true: the MLM head is not trained")
    if cfg.optimizer.untie_output_embeddings and cfg.idf.freeze_document_encoder:
        logger.warning("untie_output_embeddings is set but freeze_document_encoder is true: the model is not trained")
    elif cfg.optimizer.untie_output_embeddings:
        from sparse.modeling.encoder import check_untie_supported

        check_untie_supported()
    if d.dataset_repeats and cfg.idf.freeze_document_encoder:
        logger.warning("dataset_repeats is set but freeze_document_encoder is true: the query-side fit reads "
                       "every row once")
    if cfg.regularizer.decouple_activation and cfg.model.activation_type == "relu":
        logger.warning("decouple_activation with the relu activation changes nothing (no l0 activation to "
                       "decouple); set activation_type")


RESUME_NOTES: list[str] = []  # what resolve_resume said before train.log existed; logged there too


def resolve_resume(args) -> None:
    """``resume_from_checkpoint``: true = the latest checkpoint of ``output_dir`` (never the hub); a
    path must be a checkpoint directory."""
    value = args.resume_from_checkpoint
    if value is None or str(value).lower() in FALSE_STRINGS + ("",):
        args.resume_from_checkpoint = None
        return
    if str(value).lower() in TRUE_STRINGS + ("latest",):
        from sparse.training.trainer import complete_checkpoint

        skipped: list[str] = []
        last = complete_checkpoint(args.output_dir, skipped)
        if last is None:
            what = (f"only incomplete ones ({', '.join(os.path.basename(p) for p in skipped)}: no trainer_state.json)"
                    if skipped else "no checkpoint-<step> directory")
            raise ConfigError(f"resume_from_checkpoint=true, but {args.output_dir} holds {what}; drop the key to "
                              "start from scratch or pass a checkpoint path")
        if skipped:  # said now (stderr) and again in train.log once it exists
            note = (f"{', '.join(skipped)} {'is' if len(skipped) == 1 else 'are'} incomplete (no trainer_state.json: "
                    f"a save was interrupted); resuming from the last complete checkpoint, {last}")
            print(f"warning: {note}", file=sys.stderr)  # logging is not set up yet
            RESUME_NOTES.append(note)
        args.resume_from_checkpoint = last
    elif not os.path.isfile(os.path.join(str(value), "trainer_state.json")):
        raise ConfigError(f"resume_from_checkpoint: {value} is not a checkpoint directory (no trainer_state.json)")
    from sparse.modeling.encoder import check_weight_files

    check_weight_files(args.resume_from_checkpoint)  # damaged weights: one error now, not a traceback later


def untie(encoder, name: str) -> None:
    """untie_output_embeddings: the vocabulary projection gets its own weights, or is already apart."""
    from sparse.modeling.encoder import untie_output_embeddings

    if untie_output_embeddings(encoder.mlm):
        extra = sum(p.numel() for p in encoder.mlm.get_output_embeddings().parameters())
        logger.info("output projection untied from the word embeddings: %d weights of its own", extra)
    else:
        logger.warning("untie_output_embeddings: the output projection of %s is not tied to its word "
                       "embeddings; nothing to untie", name)


def check_reporters(args) -> None:
    """A reporter that is not installed is a clear error, not a traceback in the middle of setup."""
    for name in args.report_to or []:
        if name not in ("tensorboard", "wandb", "mlflow", "trackio"):  # integrations named like their package
            continue
        try:
            __import__(name)
        except ImportError:
            raise ConfigError(f"report_to={name}, but the '{name}' package is not installed; install it "
                              f"(pip install {name}) or set report_to=none") from None


def check_inputs(cfg: ResolvedConfig) -> list[str]:
    """Every input file and option that can be checked before anything is written or loaded; returns
    the training datasets' paths."""
    from sparse.data.datasets import dataset_paths, dataset_repeats

    m, d, args = cfg.model, cfg.data, cfg.training
    check_model_path(m.model_name_or_path)
    if m.idf_path:
        check_input_path("idf_path", m.idf_path)
    paths = dataset_paths(d.train_file, d.train_file_dir)  # a train_file_dir entry is checked there
    for path in paths:
        check_input_path("train_file", path, kind="file or directory")
    dataset_repeats(paths, d.dataset_repeats)  # its names and counts
    check_output_dir("output_dir", args.output_dir)
    if m.model_name_or_path and os.path.isdir(m.model_name_or_path) and os.path.isdir(args.output_dir) and \
            os.path.samefile(m.model_name_or_path, args.output_dir):
        raise ConfigError(f"output_dir {args.output_dir} is the model being trained ({m.model_name_or_path}): the "
                          f"final save would overwrite it; choose another output_dir")
    check_reporters(args)
    resolve_resume(args)
    return paths


def load_training_data(cfg: ResolvedConfig, paths: list[str]) -> list:
    """The training datasets at ``paths``, checked row by row (columns, list lengths, scores) before training starts."""
    from sparse.data.datasets import build_dataset

    d, args = cfg.data, cfg.training
    datasets = []
    for path in paths:
        ds = build_dataset(path, d.data_type, d.sample_num_one_query, d.swap_times, d.first_rank_thresh, args.seed,
                           d.score_scale)
        if len(ds) == 0:
            raise ConfigError(f"training data {path} holds no rows; check the file (or data_type={d.data_type})")
        datasets.append(ds)
    return datasets


def log_training_mix(datasets: list, d) -> list[int]:
    """Each dataset's passes per epoch and share of the training items, logged; returns the passes."""
    from sparse.data.datasets import dataset_repeats

    repeats = dataset_repeats([ds.source for ds in datasets], d.dataset_repeats)
    total = sum(len(ds) * r for ds, r in zip(datasets, repeats))
    for ds, r in zip(datasets, repeats):
        logger.info("training data %s: %d items x %d pass%s an epoch, %.1f%% of the items", ds.source, len(ds), r,
                    "" if r == 1 else "es", 100 * len(ds) * r / total)
    return repeats


def adapt_precision(args) -> None:
    """fp16 / bf16 need a GPU here; on CPU they are switched off with a warning (configs stay portable)."""
    if not torch.cuda.is_available() and (args.fp16 or args.bf16):
        logger.warning("fp16/bf16 requested but no GPU is available: training in float32")
        args.fp16 = False
        args.bf16 = False


def main(argv=None) -> dict:
    from transformers import set_seed

    from sparse.data.collators import TrainingCollator
    from sparse.losses.flops import FlopsRegularizer
    from sparse.losses.ranking import RankingLoss
    from sparse.modeling.encoder import SparseEncoder, saved_settings
    from sparse.training.health import TrainingHealth
    from sparse.training.model import SparseTrainingModel
    from sparse.training.trainer import SparseTrainer, StopOnSignal, TrainingInterrupted

    if not torch.cuda.is_available() and launch_world_size() > 1:
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")  # torchrun on CPU: DDP over gloo
    cfg, _ = parse_command(COMMAND, argv)
    m, d, args = cfg.model, cfg.data, cfg.training
    loss, reg, h = cfg.loss, cfg.regularizer, cfg.health
    if "report_to" not in cfg.explicit_keys:
        try:
            import tensorboard  # noqa: F401

            args.report_to = ["tensorboard"]
        except ImportError:
            pass
    # every check and every load that can fail on bad input comes before the first file is written
    paths = check_inputs(cfg)
    check_config(cfg)
    datasets = None if cfg.idf.freeze_document_encoder else load_training_data(cfg, paths)
    set_seed(args.seed)
    settings, kept = training_sparse_settings(cfg, saved_settings(m.model_name_or_path))
    if kept:
        logger.info("%s was trained with %s: kept (give the keys to change them)", m.model_name_or_path,
                    ", ".join(f"{k}={v!r}" for k, v in kept.items()))
    encoder = SparseEncoder.from_pretrained(m.model_name_or_path, settings=settings, idf_path=m.idf_path,
                                            tokenizer_name=m.tokenizer_name, trust_remote_code=m.trust_remote_code)
    is_main = args.process_index == 0  # also sets up the process group under torchrun
    if torch.cuda.device_count() > 1 and args.n_gpu > 1:
        raise ConfigError(f"{torch.cuda.device_count()} GPUs in one process: launch with "
                          "'torchrun --nproc_per_node=N train_ir.py ...' (nn.DataParallel is not supported)")
    # the query-side fit's rows, the losses, the regularizers and the teachers are set up (and so
    # checked) before the first file is written: a bad setting leaves no train.log / train_config.yaml
    fit_rows = ranking = teacher = doc_flops = query_flops = None
    if cfg.idf.freeze_document_encoder:
        from sparse.training.idf_fit import load_fit_rows

        fit_rows = load_fit_rows(cfg, encoder, paths)
    else:
        ranking = RankingLoss(loss.loss_types, loss.loss_weights, in_batch=loss.use_in_batch_negatives,
                              temperature=loss.temperature, exclude_other_positives=loss.infonce_exclude_other_positives,
                              ranking_loss_weight=loss.ranking_loss_weight, score_norm=loss.score_norm)
        if cfg.teachers.kd_ensemble_teacher_kwargs:
            from sparse.teachers.ensemble import build_ensemble

            teacher = build_ensemble(cfg.teachers.kd_ensemble_teacher_kwargs, max_length=d.max_seq_length,
                                     device=args.device)
            from sparse.teachers.bm25 import fit_on_training_data

            fit_on_training_data(teacher, datasets)  # a bm25 teacher without a collection: the training documents
        elif ranking.needs_scores and not all(getattr(ds, "has_scores", False) for ds in datasets):
            raise ConfigError(f"loss_types {loss.loss_types} need teacher scores, but the {d.data_type} data has no "
                              "'scores' column and kd_ensemble_teacher_kwargs is empty")
        doc_flops = FlopsRegularizer(reg.flops_d_lambda, reg.flops_d_T, reg.flops_threshold, reg.flops_form)
        query_flops = None if m.inf_free else FlopsRegularizer(reg.flops_q_lambda, reg.flops_q_T, reg.flops_threshold,
                                                               reg.flops_form)
    setup_logging(args.output_dir, is_main, args.log_level)
    adapt_precision(args)
    if is_main:
        path = cfg.save(args.output_dir, "train_config.yaml")
        logger.info("resolved config written to %s", path)
    while RESUME_NOTES:
        logger.warning(RESUME_NOTES.pop(0))
    logger.info("process %d of %d, device %s", group_rank(), args.world_size, args.device)
    if cfg.optimizer.untie_output_embeddings and not cfg.idf.freeze_document_encoder:
        untie(encoder, m.model_name_or_path)
    encoder.train()
    logger.info("student: %s, %d parameters, settings %s", m.model_name_or_path,
                sum(p.numel() for p in encoder.parameters()), encoder.settings)
    from sparse.corpus.threads import adapt_threads

    adapt_threads(args.device, sum(p.numel() for p in encoder.parameters()))  # oversubscribed CPU: fewer threads

    health = TrainingHealth(encoder.vocab_size, args.output_dir if is_main else None, window=h.health_window,
                            collapse_ratio=h.collapse_ratio, target_doc_nnz=h.target_doc_nnz)
    if health.path and not args.resume_from_checkpoint and os.path.isfile(health.path):
        os.remove(health.path)  # a fresh run starts a fresh log; a resumed one appends
    if cfg.idf.freeze_document_encoder:
        from sparse.training.idf_fit import fit_idf

        return fit_idf(cfg, encoder, health, fit_rows)

    collator = TrainingCollator(encoder.tokenize, d.max_seq_length, m.query_max_seq_length)
    repeats = log_training_mix(datasets, d)
    trainer = SparseTrainer(SparseTrainingModel(encoder), args, datasets, collator, ranking, doc_flops, query_flops,
                            teacher=teacher, idf_lr=cfg.idf.idf_lr, head_lr=cfg.optimizer.head_lr,
                            dataset_repeats=repeats, health=health,
                            stop_on_collapse=h.stop_on_collapse)
    start = time.time()
    stopper = StopOnSignal().install()
    trainer.add_callback(stopper)
    try:
        result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    finally:
        stopper.uninstall()
    wall = time.time() - start
    if stopper.received is not None:
        raise TrainingInterrupted(interrupted_message(trainer, stopper.received), stopper.received)
    summary = {"global_step": trainer.state.global_step, "wall_time_s": round(wall, 1),
               "world_size": args.world_size, "train_loss": result.training_loss / max(args.world_size, 1),
               "last_logged": trainer.last_metrics, "output_dir": args.output_dir}
    try:
        trainer.save_model(args.output_dir)
        if is_main:
            write_json(os.path.join(args.output_dir, "train_results.json"), summary)
    except OSError as exc:  # a full disk at the very end: the checkpoints are intact, say where
        from sparse.errors import UserError
        from sparse.training.trainer import complete_checkpoint

        last = complete_checkpoint(args.output_dir)
        raise UserError(f"saving the final model into {args.output_dir} failed: {exc.strerror or exc}"
                        f"{f' ({exc.filename})' if exc.filename else ''}; "
                        f"{f'the last complete checkpoint is {last}' if last else 'no checkpoint was saved'}"
                        ) from None
    logger.info("done: %d steps in %.1f s; model saved to %s", trainer.state.global_step, wall, args.output_dir)
    distributed.shutdown()
    return summary


def interrupted_message(trainer, signum: int) -> str:
    import signal

    step = trainer.state.global_step
    path = os.path.join(trainer.args.output_dir, f"checkpoint-{step}")
    saved = f"checkpoint saved in {path}" if os.path.isdir(path) else "no checkpoint could be saved"
    return (f"stopped by {signal.Signals(signum).name} at step {step}; {saved}. Resume with the same command "
            f"plus resume_from_checkpoint=true")

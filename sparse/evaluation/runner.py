"""``evaluate_beir.py``: evaluate one model, or every checkpoint of a training run, on BEIR sets.

CLI mode  ``evaluate_beir.py --model_name_or_path M --beir_datasets scifact,nfcorpus ...``
          evaluates M; outputs go to ``<output_dir>/beir_eval<suffix>/``.
YAML mode ``evaluate_beir.py run.yaml [key=value ...]`` (no ``model_name_or_path`` override)
          evaluates every ``checkpoint-*`` of the run's ``output_dir`` and the final model saved
          in ``output_dir`` itself; outputs go to ``<output_dir>/beir_eval<suffix>/<checkpoint>/``
          plus a table over checkpoints.

The suffix names the settings that change the results: ``_2p`` (two-phase) + ``_<query_prune>`` (if > 0) +
``_<corpus_max_seq_length>`` (if != 512) + ``_<prune_ratio>`` (if set) + ``_<doc_prune_type>-<value>`` (if set)
+ ``_win<length>[s<stride>][_pool]`` (documents in token windows).

Per model: ``results/<dataset>.json``, ``runs/<dataset>.trec``, ``summary.csv`` / ``summary.md``
(with the average row). At the root: ``eval_config.yaml`` (resolved, credentials redacted) and
``eval_beir.log``. Under ``torchrun`` every rank encodes a shard of each corpus; rank 0 indexes,
searches, scores and writes.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import sys
import time
from typing import Optional

import yaml

from sparse.config import Command, ResolvedConfig, parse_command, split_overrides
from sparse.corpus import check_model_path, corpus_cache_dir, distributed, engine_options, load_encoder
from sparse.errors import ConfigError, UserError, check_output_dir, write_atomic
from sparse.evaluation.beir_eval import EvalOptions, evaluate_dataset
from sparse.evaluation.report import write_checkpoint_summary, write_dataset_summary
from sparse.retrieval.opensearch import redact_url
from sparse.retrieval.pruning import check_prune

logger = logging.getLogger("sparse.evaluation")
COMMAND = Command("evaluate_beir.py", __doc__, config=True, training=True)


def suffix_of(cfg: ResolvedConfig) -> str:
    e, m, sv, w = cfg.eval, cfg.model, cfg.serving, cfg.windows
    s = "_2p" if sv.use_two_phase else ""
    if sv.query_prune and sv.query_prune > 0:
        s += f"_{sv.query_prune}"
    if e.corpus_max_seq_length != 512:
        s += f"_{e.corpus_max_seq_length}"
    if m.prune_ratio is not None:
        s += f"_{m.prune_ratio}"
    if sv.doc_prune_type != "none":
        s += f"_{sv.doc_prune_type}-{sv.doc_prune_value:g}"
    if w.doc_window_length:  # windows change the vectors: their results never land in a truncation's folder
        s += f"_win{w.doc_window_length}" + (f"s{w.doc_window_stride}" if w.doc_window_stride else "")
        s += "_pool" if w.doc_window_combine == "max_pool" else ""
    return s


def _step(path: str) -> int:
    match = re.search(r"checkpoint-(\d+)$", path.rstrip("/"))
    return int(match.group(1)) if match else -1


def models_to_evaluate(cfg: ResolvedConfig, yaml_mode: bool) -> list[tuple[str, str]]:
    """(label, path) of each model: the checkpoints and final model (YAML mode) or the one model."""
    if not yaml_mode:
        if not cfg.model.model_name_or_path:
            raise ConfigError("--model_name_or_path is required (or give a training YAML to evaluate its checkpoints)")
        return [("model", cfg.model.model_name_or_path)]
    out_dir = cfg.training.output_dir
    ckpts = sorted((p for p in glob.glob(os.path.join(out_dir, "checkpoint-*")) if os.path.isdir(p)), key=_step)
    models = [(os.path.basename(p), p) for p in ckpts]
    if os.path.isfile(os.path.join(out_dir, "config.json")):
        models.append(("final", out_dir))
    if not models:
        raise UserError(f"{out_dir} has no checkpoint-* directories and no saved final model; "
                        f"train first or pass --model_name_or_path")
    return models


def check_splits(dataset_dirs: dict[str, str], split: str) -> None:
    """Every dataset has qrels for the split, checked before any model is loaded or file written."""
    for name, folder in dataset_dirs.items():
        if not os.path.isfile(os.path.join(folder, "qrels", f"{split}.tsv")):
            have = sorted(f[:-4] for f in os.listdir(os.path.join(folder, "qrels")) if f.endswith(".tsv")) \
                if os.path.isdir(os.path.join(folder, "qrels")) else []
            raise UserError(f"{name}: {folder}/qrels/{split}.tsv not found, so split {split!r} cannot be evaluated; "
                            f"splits here: {have or 'none'}; set eval_split")


def _setup_logging(root: str) -> None:
    level = logging.INFO if distributed.is_launch_main() else logging.WARNING
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%m/%d/%Y %H:%M:%S")
    pkg = logging.getLogger("sparse")
    pkg.setLevel(level)
    for old in [h for h in pkg.handlers if getattr(h, "_sparse_eval", False)]:  # an earlier run in this process
        pkg.removeHandler(old)
        old.close()
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    stream._sparse_eval = True
    pkg.addHandler(stream)
    if distributed.is_launch_main():
        os.makedirs(root, exist_ok=True)
        fh = logging.FileHandler(os.path.join(root, "eval_beir.log"))
        fh.setFormatter(fmt)
        fh._sparse_eval = True
        pkg.addHandler(fh)


def redacted_config(cfg: ResolvedConfig) -> dict:
    data = cfg.to_dict()
    url = data["opensearch"].get("opensearch_url")
    if url:
        data["opensearch"]["opensearch_url"] = redact_url(url)
    return data


DEFAULT_ENCODE_BATCH = 64  # length-sorted batches: large ones carry little padding and fill a GPU


def encode_batch_size(cfg: ResolvedConfig) -> int:
    """``encode_batch_size``, else ``per_device_eval_batch_size`` when given, else 64 (the HF default 8
    starves a GPU)."""
    if cfg.eval.encode_batch_size:
        return cfg.eval.encode_batch_size
    if "per_device_eval_batch_size" in cfg.explicit_keys:
        return cfg.training.per_device_eval_batch_size
    return DEFAULT_ENCODE_BATCH


def check_serving(cfg: ResolvedConfig, precisions: Optional[list[str]] = None) -> None:
    """The serving keys that only make sense together, checked before any model is loaded; ``precisions``:
    the ones evaluated (a sweep's grid), else ``index_precision``."""
    e, sv = cfg.eval, cfg.serving
    precisions = precisions or [sv.index_precision]
    check_prune(sv.doc_prune_type, sv.doc_prune_value)
    if e.engine == "embedded" and sv.use_two_phase:
        raise ConfigError("use_two_phase is an OpenSearch search pipeline; it needs --engine opensearch")
    if e.engine != "embedded" and sv.index_precision in ("seismic", "impact"):
        raise ConfigError(f"index_precision {sv.index_precision} is emulated by the embedded engine; the opensearch "
                          f"engine stores rank_features (9 bits): use --engine embedded")
    for name, precision in (("seismic_ceiling_ingest", "seismic"), ("impact_scale", "impact")):
        if name in cfg.explicit_keys and precision not in precisions:
            raise ConfigError(f"{name} applies to index_precision {precision}, but the precision evaluated is "
                              f"{' / '.join(precisions)}")


def eval_options(cfg: ResolvedConfig, precisions: Optional[list[str]] = None) -> EvalOptions:
    """The ``EvalOptions`` of the eval and serving keys, checked before any model is loaded (``precisions``:
    see ``check_serving``)."""
    e, sv, w = cfg.eval, cfg.serving, cfg.windows
    check_serving(cfg, precisions)
    engine_opts = {**engine_options(cfg), "progress": True}
    if e.engine != "embedded":
        engine_opts["two_phase"] = sv.use_two_phase
    if w.doc_window_stride and not w.doc_window_length:
        raise ConfigError("doc_window_stride needs doc_window_length (the windows' length)")
    if w.doc_window_length and w.doc_window_combine == "max_window" and e.engine != "embedded":
        raise ConfigError("doc_window_combine max_window scores documents by their best window on the embedded "
                          "engine; with --engine opensearch use doc_window_combine max_pool")
    return EvalOptions(split=e.eval_split, top_k=e.eval_top_k, engine=e.engine, engine_opts=engine_opts,
                       query_prune=sv.query_prune, doc_prune_type=sv.doc_prune_type,
                       doc_prune_value=sv.doc_prune_value, latency_queries=sv.latency_queries,
                       cache_dir=corpus_cache_dir(cfg),
                       batch_size=encode_batch_size(cfg), dtype=e.encode_dtype, max_length=e.corpus_max_seq_length,
                       index_prefix=cfg.opensearch.opensearch_index_prefix, skip_ingest=e.skip_ingest,
                       delete_index=cfg.opensearch.delete_index, write_run=e.write_run_files,
                       window_length=w.doc_window_length, window_stride=w.doc_window_stride,
                       window_combine=w.doc_window_combine, explain_top_k=e.explain_top_k)


def load_model(cfg: ResolvedConfig, path: str, yaml_mode: bool):
    """The encoder of one checkpoint; in YAML mode its own tokenizer, and its own (trained) IDF if learned."""
    return load_encoder(cfg, path, device=distributed.local_device(),
                        config_idf=not (yaml_mode and cfg.idf.idf_requires_grad), config_tokenizer=not yaml_mode)


def check_reachable(conn: dict, attempts: int = 3, wait_s: float = 1.0) -> None:
    """The cluster answers (a few tries, a short timeout), before anything is written: an unreachable
    cluster or refused credentials are one error, and no output folder is left behind."""
    from opensearchpy import exceptions as ex

    from sparse.retrieval.opensearch import open_client

    client = open_client({**conn, "timeout": min(float(conn["timeout"]), 10.0)})
    quiet = logging.getLogger("opensearch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # opensearch-py logs every failed attempt with a traceback
    try:
        for attempt in range(attempts):
            try:
                client.info()
                return
            except (ex.ConnectionError, ex.ConnectionTimeout) as exc:
                if attempt == attempts - 1:
                    raise UserError(f"cannot reach OpenSearch at {conn['url']} ({type(exc).__name__}): is the cluster "
                                    f"running and opensearch_url right?") from None
                time.sleep(wait_s * 2 ** attempt)
            except ex.TransportError as exc:
                status = exc.status_code if isinstance(exc.status_code, int) else 0
                if status in (401, 403):
                    raise UserError(f"OpenSearch at {conn['url']} refused the credentials ({status}): check "
                                    f"OPENSEARCH_USER / OPENSEARCH_PASSWORD") from None
                return  # anything else is retried and reported by the index itself
    finally:
        quiet.setLevel(level)


def preflight(cfg: ResolvedConfig, models: list[tuple[str, str]], dataset_dirs: dict[str, str],
              yaml_mode: bool) -> None:
    """Every check of a later stage that bad input can fail, run before the first file is written:
    each model's files (weights, IDF, tokenizer size), the OpenSearch connection settings, and each
    dataset's files (UTF-8, JSON, qrels) read once."""
    from sparse.data.beir import check_beir_dataset
    from sparse.modeling.encoder import check_model_files

    m = cfg.model
    config_idf = not (yaml_mode and cfg.idf.idf_requires_grad)
    for _, path in models:
        check_model_files(path, idf_path=m.idf_path if config_idf else None,
                          tokenizer_name=None if yaml_mode else m.tokenizer_name,
                          trust_remote_code=m.trust_remote_code)
        if cfg.windows.doc_window_length:
            from transformers import AutoTokenizer

            from sparse.modeling.windows import check_window

            tokenizer_name = (None if yaml_mode else m.tokenizer_name) or path
            check_window(AutoTokenizer.from_pretrained(tokenizer_name, trust_remote_code=m.trust_remote_code),
                         cfg.windows.doc_window_length, cfg.windows.doc_window_stride)
    if cfg.eval.engine == "opensearch":
        from sparse.retrieval.opensearch import connection_settings

        o = cfg.opensearch
        conn = connection_settings(o.opensearch_url, verify_certs=o.opensearch_verify_certs,
                                   timeout=o.opensearch_timeout)
        if distributed.is_launch_main():
            check_reachable(conn)
    for folder in dataset_dirs.values():
        check_beir_dataset(folder, cfg.eval.eval_split)


def main(argv: Optional[list[str]] = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    yaml_mode = bool(argv) and argv[0].endswith((".yaml", ".yml")) and \
        "model_name_or_path" not in split_overrides(argv[1:])
    cfg, _ = parse_command(COMMAND, argv)
    from sparse.assets import beir_dataset, check_beir_names
    from transformers import set_seed

    # every check comes before the first file is written: a bad command leaves nothing behind
    opts = eval_options(cfg)
    root = os.path.join(cfg.training.output_dir, f"beir_eval{suffix_of(cfg)}")
    datasets = [s.strip() for s in str(cfg.data.beir_datasets).split(",") if s.strip()]
    if not datasets:
        raise ConfigError("beir_datasets is empty")
    check_beir_names(datasets, cfg.data.beir_dir)
    models = models_to_evaluate(cfg, yaml_mode)
    for _, path in models:
        check_model_path(path)
    dataset_dirs = {name: str(beir_dataset(name, cfg.data.beir_dir)) for name in datasets} \
        if distributed.is_launch_main() else {}
    distributed.barrier()
    if not distributed.is_launch_main():  # the main process may have downloaded; resolve again locally
        dataset_dirs = {name: str(beir_dataset(name, cfg.data.beir_dir)) for name in datasets}
    check_splits(dataset_dirs, cfg.eval.eval_split)
    preflight(cfg, models, dataset_dirs, yaml_mode)
    check_output_dir("output_dir", root)
    _setup_logging(root)
    if distributed.is_launch_main():
        write_atomic(os.path.join(root, "eval_config.yaml"),
                     lambda f: yaml.safe_dump(redacted_config(cfg), f, sort_keys=False, allow_unicode=True))
    set_seed(cfg.training.seed)
    try:
        return _evaluate_models(cfg, models, datasets, dataset_dirs, opts, root, yaml_mode)
    except OSError as exc:  # a full disk, a folder made read-only meanwhile: one line naming the path
        if exc.filename is None:
            raise
        raise UserError(f"writing {exc.filename} failed: {exc.strerror or exc}; the results finished so far "
                        f"are in {root}, and a rerun reuses the encoded corpora") from None


def _evaluate_models(cfg: ResolvedConfig, models, datasets, dataset_dirs, opts, root: str, yaml_mode: bool) -> dict:
    per_model: dict[str, list[dict]] = {}
    for label, path in models:
        t0 = time.perf_counter()
        logger.info("evaluating %s (%s) on %s", label, path, ", ".join(datasets))
        encoder = load_model(cfg, path, yaml_mode)
        if label == models[0][0]:  # once, for the first model: an oversubscribed CPU gets fewer threads
            from sparse.corpus.threads import adapt_threads

            adapt_threads(distributed.local_device(), sum(p.numel() for p in encoder.parameters()))
        out_dir = os.path.join(root, label) if yaml_mode else root
        results = []
        for name in datasets:
            res = evaluate_dataset(encoder, name, dataset_dirs[name], out_dir, opts,
                                   extra={"model": path, "checkpoint": label, "config": redacted_config(cfg)})
            if res is not None:
                results.append(res)
        if distributed.is_launch_main():
            avg = write_dataset_summary(out_dir, results)
            per_model[label] = results
            logger.info("%s: average NDCG@10 %.4f over %d datasets (%.1fs); table in %s", label,
                        avg.get("NDCG@10") or float("nan"), len(results), time.perf_counter() - t0,
                        os.path.join(out_dir, "summary.md"))
        del encoder
    if distributed.is_launch_main() and yaml_mode:
        write_checkpoint_summary(root, per_model)
        logger.info("table over checkpoints in %s", os.path.join(root, "checkpoints.md"))
    return per_model

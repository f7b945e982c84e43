"""From a resolved config to an encoder and an index: sparse settings, cache folder, engine options, loading.

The rule for sparse settings (``SparseSettings`` fields, saved with every checkpoint):

* training builds a new model, so every setting comes from the config (``sparse_settings``), except
  that training on from a checkpoint saved by this toolkit (a second stage, a further fine-tune) keeps
  the settings its training fixed (activation, pooling, ...) unless the config gives them explicitly
  (``training_sparse_settings``): a config's defaults must not silently swap a model's activation;
* evaluation, mining and KD preparation load a trained model, so only the settings the user gave
  explicitly (on the command line or in the YAML file) override what the checkpoint says, and the
  checkpoint's own settings fill the rest (``explicit_sparse_settings``). A siamese checkpoint is
  therefore searched with siamese queries unless ``--inf_free true`` is given. Evaluation and data
  generation use the same rule, so a model mined and evaluated with the same keys has the same
  fingerprint and shares cached vectors.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from sparse.config import ConfigError, ResolvedConfig

# SparseSettings field -> the config keys that set it
SETTING_KEYS = {
    "inf_free": ("inf_free",),
    "activation": ("activation_type",),
    "pooling": ("pooling",),
    "prune_ratio": ("prune_ratio",),
    "keep_special_tokens": ("keep_special_tokens",),
    "max_seq_length": ("max_seq_length",),
    "query_max_seq_length": ("query_max_seq_length",),
    "preprocess_func": ("preprocess_func",),
    "decouple_activation": ("decouple_activation",),
    "idf_requires_grad": ("idf_requires_grad",),
}
# settings a user may override on a trained checkpoint (the others are fixed by its training)
OVERRIDABLE = ("inf_free", "pooling", "prune_ratio", "keep_special_tokens", "preprocess_func",
               "query_max_seq_length", "decouple_activation", "activation")


def sparse_settings(cfg: ResolvedConfig) -> dict[str, Any]:
    """Every sparse setting as the config says (given or default): what a new model is built with."""
    m = cfg.model
    return {"inf_free": m.inf_free, "activation": m.activation_type, "pooling": m.pooling,
            "prune_ratio": m.prune_ratio, "keep_special_tokens": m.keep_special_tokens,
            "max_seq_length": cfg.data.max_seq_length, "query_max_seq_length": m.query_max_seq_length,
            "preprocess_func": m.preprocess_func, "decouple_activation": cfg.regularizer.decouple_activation,
            "idf_requires_grad": cfg.idf.idf_requires_grad}


def explicit_sparse_settings(cfg: ResolvedConfig) -> dict[str, Any]:
    """The overridable settings the user gave explicitly; a checkpoint's own settings fill the rest."""
    given = cfg.explicit_keys
    every = sparse_settings(cfg)
    return {name: every[name] for name in OVERRIDABLE if any(key in given for key in SETTING_KEYS[name])}


def training_sparse_settings(cfg: ResolvedConfig, saved: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings training builds its model with, the checkpoint's settings kept over the config's defaults);
    ``saved``: the settings the starting checkpoint was saved with ({} for a plain model)."""
    every = sparse_settings(cfg)
    given = explicit_sparse_settings(cfg)
    kept = {name: saved[name] for name in OVERRIDABLE
            if name in saved and name not in given and saved[name] != every[name]}
    return {**every, **kept}, kept


def default_cache_dir() -> str:
    """Where corpus vectors are cached by default: ``$SPARSE_CACHE_DIR``, else ``~/.cache/sparse/corpus_vectors``."""
    return os.environ.get("SPARSE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sparse",
                                                               "corpus_vectors")


def corpus_cache_dir(cfg: ResolvedConfig) -> str:
    """The ``cache_dir`` key, else the default: the same for evaluation, mining and KD preparation, so
    one model on one corpus (same truncation length) is encoded once."""
    return cfg.eval.cache_dir or default_cache_dir()


def engine_options(cfg: ResolvedConfig) -> dict[str, Any]:
    """The ``Index`` options the eval and serving keys give the chosen engine: the embedded engine's precision,
    or the OpenSearch connection (callers add what is theirs: index name, progress, two-phase)."""
    e, s = cfg.eval, cfg.serving
    if e.engine == "embedded":
        return {"precision": s.index_precision, "ingest_ceiling": s.seismic_ceiling_ingest,
                "impact_scale": s.impact_scale}
    o = cfg.opensearch
    return {"url": o.opensearch_url, "query_form": o.opensearch_query_form, "verify_certs": o.opensearch_verify_certs,
            "timeout": o.opensearch_timeout, "bulk_size": o.opensearch_bulk_size}


def load_encoder(cfg: ResolvedConfig, path: Optional[str] = None, device: Optional[str] = None,
                 config_idf: bool = True, config_tokenizer: bool = True):
    """A trained ``SparseEncoder`` from ``path`` (default ``model_name_or_path``) with the explicit settings.

    ``config_idf`` / ``config_tokenizer``: whether the ``idf_path`` / ``tokenizer_name`` keys apply
    (False: the checkpoint's own ``idf.json`` / tokenizer).
    """
    from sparse.modeling.encoder import SparseEncoder

    m = cfg.model
    path = path or m.model_name_or_path
    if not path:
        raise ConfigError("--model_name_or_path is required")
    return SparseEncoder.from_pretrained(path, settings=explicit_sparse_settings(cfg),
                                         idf_path=m.idf_path if config_idf else None,
                                         tokenizer_name=m.tokenizer_name if config_tokenizer else None,
                                         trust_remote_code=m.trust_remote_code, device=device)

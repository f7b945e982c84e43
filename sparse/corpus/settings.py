"""From a resolved config to an encoder: its sparse settings, where corpus vectors are cached, loading.

The rule for sparse settings (``SparseSettings`` fields, saved with every checkpoint):

* training builds a new model, so every setting comes from the config (``sparse_settings``);
* evaluation, mining and KD preparation load a trained model, so only the settings the user gave
  explicitly (on the command line or in the YAML file) override what the checkpoint says, and the
  checkpoint's own settings fill the rest (``explicit_sparse_settings``). A siamese checkpoint is
  therefore searched with siamese queries unless ``--inf_free true`` is given (the reference
  always searched inference-free). Evaluation and data generation use the same rule, so a model
  mined and evaluated with the same keys has the same fingerprint and shares cached vectors.
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


def default_cache_dir() -> str:
    """Where corpus vectors are cached by default: ``$SPARSE_CACHE_DIR``, else ``~/.cache/sparse/corpus_vectors``."""
    return os.environ.get("SPARSE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sparse",
                                                               "corpus_vectors")


def corpus_cache_dir(cfg: ResolvedConfig) -> str:
    """The ``cache_dir`` key, else the default: the same for evaluation, mining and KD preparation, so
    one model on one corpus (same truncation length) is encoded once."""
    return cfg.eval.cache_dir or default_cache_dir()


_PATH_KINDS = {"file": os.path.isfile, "directory": os.path.isdir, "file or directory": os.path.exists}


def check_input_path(key: str, path: str, kind: str = "file") -> None:
    """Before any work: the ``kind`` of input ``key`` names must exist (the message names key and path)."""
    if not _PATH_KINDS[kind](path):
        raise ConfigError(f"{key}: {kind} not found: {path}")


def check_model_path(path: Optional[str], key: str = "model_name_or_path") -> None:
    """Before any work: a local model directory must hold a model (config.json), and a value that
    looks like a path (not a hub id ``org/name``) must exist."""
    if not path:
        raise ConfigError(f"{key} is required: a checkpoint or model directory, or a hub id")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            inside = sorted(os.listdir(path))[:5]
            raise ConfigError(f"{key}: {path} holds no model (no config.json; it has {inside or 'nothing'}); pass "
                              "a checkpoint-* directory or a saved model")
    elif path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ConfigError(f"{key}: model directory not found: {path}")


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

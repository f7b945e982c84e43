"""Configuration: dataclasses for model / data / eval settings, YAML files and CLI overrides.

The reference implementation's YAML keys (those of its argument dataclasses) keep their names
and meanings, so its configs run here unchanged.
A config is one flat YAML mapping; every key belongs to one (or more) of the argument
dataclasses. Command-line overrides come after the YAML path as ``key=value`` or
``--key value``; values are parsed as YAML scalars (``true``, ``1e-3``, ``[a, b]``, ``null``).

Unknown keys are errors that name the key and suggest the closest known one; a value of the
wrong type is an error naming the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import yaml

from sparse.errors import ConfigError, UserError, read_user_file  # noqa: F401  (errors re-exported)

NULL_STRINGS = {"null", "Null", "NULL", "None", "~", ""}  # "none" stays a string (report_to: none)

DEFAULT_BEIR_DATASETS = (
    "trec-covid,nfcorpus,nq,hotpotqa,fiqa,arguana,webis-touche2020,dbpedia-entity,scidocs,"
    "fever,climate-fever,scifact,quora"
)


@dataclass
class ModelArguments:
    """How the sparse encoder is built (reference ModelArguments, main and l0_enhance)."""

    model_name_or_path: Optional[str] = None
    tokenizer_name: Optional[str] = None
    inf_free: bool = True
    idf_path: Optional[str] = None
    idf_requires_grad: bool = False
    prune_ratio: Optional[float] = None
    preprocess_func: Optional[str] = None
    use_l0: bool = False  # alias of activation_type: l1_relu
    activation_type: str = "relu"
    pooling: str = "max"
    keep_special_tokens: bool = False  # True reproduces the reference's doc side exactly
    trust_remote_code: bool = False
    split_batch: int = 1  # accepted for old configs; the encoder always projects in token chunks
    query_max_seq_length: Optional[int] = None  # siamese queries; defaults to max_seq_length

    def resolved_activation(self) -> str:
        if self.use_l0 and self.activation_type not in ("relu", "l1_relu"):
            raise ConfigError(
                f"use_l0: true means activation_type l1_relu, but activation_type is "
                f"{self.activation_type!r}; set only one of them"
            )
        return "l1_relu" if self.use_l0 else self.activation_type


@dataclass
class DataArguments:
    """Training data, losses and regularizers (reference DataTrainingArguments)."""

    max_seq_length: int = 512
    eval_max_seq_length: int = 512
    train_file: Optional[str] = None
    train_file_dir: Optional[Any] = None  # a directory or a list of directories
    data_type: str = "kd"
    loss_types: list = field(default_factory=lambda: ["kldiv"])
    loss_weights: Optional[list] = None  # one weight per loss type (new); default all 1
    sample_num_one_query: int = 2
    use_in_batch_negatives: bool = False
    infonce_exclude_other_positives: bool = False  # True restores the reference's exclusion
    flops_d_lambda: float = 1e-3
    flops_d_T: float = 10000
    flops_q_lambda: float = 1e-3  # reference default None crashed siamese training
    flops_q_T: float = 10000
    flops_form: str = "grouped"  # "grouped" = reference per-position groups; "mean" = SPLADE
    flops_threshold: Optional[float] = None
    decouple_activation: bool = False
    ranking_loss_weight: float = 1.0
    kd_ensemble_teacher_kwargs: dict = field(default_factory=dict)
    idf_lr: Optional[float] = None
    first_rank_thresh: int = 10000
    swap_times: int = 0
    temperature: float = 1.0
    score_norm: str = "std"  # distillation losses see student scores with the teacher's spread; "none" = reference
    score_scale: float = 1.0  # scales dataset scores (unused in the reference; used here)
    # training health (new): train_log.jsonl, vocabulary activity window, collapse watch
    health_window: int = 100
    collapse_ratio: float = 0.5
    target_doc_nnz: Optional[float] = None  # a document size the FLOPS regularizer is meant to reach
    stop_on_collapse: bool = False
    freeze_document_encoder: bool = False  # train only the query IDF over fixed document vectors (training/idf_fit.py)
    beir_dir: str = "data/beir"
    beir_datasets: str = DEFAULT_BEIR_DATASETS
    miracl_dir: Optional[str] = None  # accepted, unused (reference dead key)
    miracl_datasets: Optional[str] = None  # accepted, unused (reference dead key)
    use_two_phase: bool = False
    skip_ingest: bool = False
    do_search: bool = True
    query_prune: float = 0.0
    lelu_alpha: Optional[float] = None  # old-main keys: rejected with a message if set
    lelu_alpha_steps: Optional[int] = None


@dataclass
class EvalArguments:
    """Evaluation and retrieval settings (new keys of this toolkit)."""

    engine: str = "embedded"
    eval_split: str = "test"
    eval_top_k: int = 1000
    index_precision: str = "float"  # "float" exact, or "opensearch" (rank_features 9-bit)
    cache_dir: Optional[str] = None
    opensearch_url: Optional[str] = None
    opensearch_query_form: str = "rank_feature"  # or "neural_sparse"
    opensearch_index_prefix: str = "sparse-eval"
    delete_index: bool = False
    # evaluation/retrieval additions (issue 3): TLS check and timeout of the OpenSearch client
    # (null = $OPENSEARCH_VERIFY_CERTS / $OPENSEARCH_TIMEOUT, else true / 60 s; user and password
    # come only from the environment), _bulk chunk size, and whether to write TREC run files
    opensearch_verify_certs: Optional[bool] = None
    opensearch_timeout: Optional[float] = None
    opensearch_bulk_size: int = 500
    write_run_files: bool = True


ALL_SECTIONS = ("model", "data", "eval", "training")


def _strip_optional(tp):
    """Optional[X] -> (X, True); other types -> (tp, False)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        return Union[tuple(args)], True
    return tp, False


def _type_name(tp) -> str:
    base, optional = _strip_optional(tp)
    name = getattr(base, "__name__", None) or str(base).replace("typing.", "")
    return f"{name} or null" if optional else name


def coerce_value(key: str, value: Any, tp) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming the key."""
    base, optional = _strip_optional(tp)
    if value is None or (isinstance(value, str) and value in NULL_STRINGS and base is not str):
        if optional or base is Any:
            return None
        if value is None:
            raise ConfigError(f"config key '{key}' cannot be null (expected {_type_name(tp)})")
    if isinstance(value, str) and optional and value in ("null", "None"):
        return None  # the reference writes idf_path: "null"
    if base is Any or base is typing.Any:
        return value
    origin = typing.get_origin(base) or base
    bad = ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}")
    try:
        if origin is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise bad
        if origin is int:
            if isinstance(value, bool):
                raise bad
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                parsed = yaml.safe_load(value)
                if isinstance(parsed, (int, float)) and float(parsed).is_integer():
                    return int(parsed)
                raise bad
            if isinstance(value, int):
                return value
            raise bad
        if origin is float:
            if isinstance(value, bool):
                raise bad
            if isinstance(value, (int, float)):
                return float(value)
            return float(value)
        if origin is str:
            if isinstance(value, (dict, list)):
                raise bad
            return str(value)
        if origin in (list, tuple):
            if isinstance(value, str):
                parsed = yaml.safe_load(value)
                value = parsed if isinstance(parsed, list) else [v.strip() for v in value.split(",")]
            if not isinstance(value, (list, tuple)):
                raise bad
            return list(value)
        if origin is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value) if value.strip() else {}
            if not isinstance(value, dict):
                raise bad
            return value
        if isinstance(base, type) and issubclass(base, enum.Enum):
            return base(value)
    except ConfigError:
        raise
    except (TypeError, ValueError):
        raise bad from None
    return value  # unknown/complex annotations (HF TrainingArguments unions): pass through


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


_KEY_VALUE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*=")


def split_overrides(argv: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` / ``--key value`` / ``--key=value`` / bare ``--flag`` into a dict."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            body = arg[2:]
            if "=" in body:
                key, val = body.split("=", 1)
                out[key] = _parse_scalar(val)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--") and not _KEY_VALUE.match(argv[i + 1]):
                out[body] = _parse_scalar(argv[i + 1])
                i += 1
            else:
                out[body] = True
        elif "=" in arg:
            key, val = arg.split("=", 1)
            out[key] = _parse_scalar(val)
        else:
            raise ConfigError(f"cannot parse argument {arg!r}: use key=value or --key value")
        i += 1
    return {k.replace("-", "_"): v for k, v in out.items()}


def load_yaml(path: str) -> dict[str, Any]:
    """The mapping of a YAML config file (empty for an empty file)."""
    data = read_user_file(path, yaml.safe_load, yaml.YAMLError, "config file not found: {path}",
                          "{path} is not valid YAML: {exc}", ConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    return data


def _training_arguments_cls():
    from transformers import TrainingArguments

    return TrainingArguments


def _fields_of(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


@dataclass
class ResolvedConfig:
    """The resolved argument groups of one run, where they came from, and which keys were given explicitly."""

    model: ModelArguments
    data: DataArguments
    eval: EvalArguments
    training: Any = None  # transformers.TrainingArguments when requested
    source: Optional[str] = None
    explicit_keys: set = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "model": dataclasses.asdict(self.model),
            "data": dataclasses.asdict(self.data),
            "eval": dataclasses.asdict(self.eval),
        }
        if self.training is not None:
            out["training"] = json.loads(self.training.to_json_string())
        return out

    def save(self, output_dir: str, name: str = "resolved_config.yaml") -> str:
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, name)
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False, allow_unicode=True)
        return path


# HF TrainingArguments keys the reference sets to null, and the HF value that means the same
TRAINING_NULL_AS = {"max_grad_norm": 0.0}

SECTION_CLASSES = {"model": ModelArguments, "data": DataArguments, "eval": EvalArguments}


def resolve(values: dict[str, Any], sections=("model", "data", "eval"), source: str | None = None,
            extra_known: tuple[str, ...] = ()) -> ResolvedConfig:
    """Build the argument dataclasses from one flat mapping of keys.

    ``sections`` says which groups the calling entry point understands ("training" adds HF
    TrainingArguments); a key that belongs to none of them is an error.
    """
    field_types: dict[str, dict[str, Any]] = {
        name: _fields_of(SECTION_CLASSES[name]) for name in sections if name in SECTION_CLASSES
    }
    if "training" in sections:
        field_types["training"] = _fields_of(_training_arguments_cls())
    known = set().union(*field_types.values()) | set(extra_known)
    where = f" in {source}" if source else ""
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key}'{where}{hint}")

    built: dict[str, Any] = {}
    for name, fields_ in field_types.items():
        if name == "training":
            # training keys written as null in the reference configs (max_grad_norm: null = no clipping)
            values = {k: (TRAINING_NULL_AS.get(k, v) if v is None else v) for k, v in values.items()}
        kwargs = {k: coerce_value(k, v, fields_[k]) for k, v in values.items() if k in fields_}
        if name == "training":
            kwargs.setdefault("output_dir", "output/run")
            kwargs.setdefault("report_to", "none")
            try:
                built[name] = _training_arguments_cls()(**kwargs)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"invalid training arguments{where}: {exc}") from None
        else:
            built[name] = SECTION_CLASSES[name](**kwargs)
    cfg = ResolvedConfig(
        model=built.get("model", ModelArguments()),
        data=built.get("data", DataArguments()),
        eval=built.get("eval", EvalArguments()),
        training=built.get("training"),
        source=source,
        explicit_keys=set(values),
    )
    validate(cfg)
    return cfg


def _check_one_of(key: str, value, allowed: tuple, entries: bool = False) -> None:
    if value not in allowed:
        what = f"{key} entries must be among" if entries else f"{key} must be one of"
        raise ConfigError(f"{what} {allowed}, got {value!r}")


def validate(cfg: ResolvedConfig) -> None:
    """Check the values of the keys; the allowed names come from the modules that implement them."""
    # imported here: those modules import torch / numpy, and none of them imports this one
    from sparse.data.datasets import DATA_TYPES
    from sparse.losses import FLOPS_FORMS, LOSS_TYPES
    from sparse.modeling.activations import ACTIVATIONS
    from sparse.modeling.encoder import POOLINGS, PREPROCESS_FUNCS
    from sparse.retrieval.base import ENGINES
    from sparse.retrieval.opensearch import QUERY_FORMS
    from sparse.retrieval.precision import PRECISIONS

    m, d, e = cfg.model, cfg.data, cfg.eval
    m.resolved_activation()
    _check_one_of("activation_type", m.activation_type, ACTIVATIONS)
    _check_one_of("pooling", m.pooling, POOLINGS)
    if m.preprocess_func is not None:
        _check_one_of("preprocess_func", m.preprocess_func, tuple(PREPROCESS_FUNCS))
    if m.prune_ratio is not None and not 0 <= m.prune_ratio < 1:
        raise ConfigError(f"prune_ratio must be in [0, 1), got {m.prune_ratio}")
    _check_one_of("data_type", d.data_type, DATA_TYPES)
    for name in d.loss_types:
        _check_one_of("loss_types", name, LOSS_TYPES, entries=True)
    if d.loss_weights is not None and len(d.loss_weights) != len(d.loss_types):
        raise ConfigError("loss_weights needs one weight per entry of loss_types")
    _check_one_of("flops_form", d.flops_form, FLOPS_FORMS)
    if d.lelu_alpha is not None:
        raise ConfigError("lelu_alpha (old reference 'lelu' activation) is not supported; "
                          f"use activation_type {'/'.join(ACTIVATIONS)}")
    if d.swap_times < 0:
        raise ConfigError("swap_times must be a non-negative integer count")
    _check_one_of("engine", e.engine, ENGINES)
    _check_one_of("index_precision", e.index_precision, PRECISIONS)
    _check_one_of("opensearch_query_form", e.opensearch_query_form, QUERY_FORMS)


def parse_config(argv: list[str] | None = None, sections=("model", "data", "eval", "training"),
                 extra_known: tuple[str, ...] = ()) -> ResolvedConfig:
    """Entry-point parser: ``[cfg.yaml] [key=value | --key value ...]``."""
    values, source = read_values(sys.argv[1:] if argv is None else argv)
    return resolve(values, sections=sections, source=source, extra_known=extra_known)


def read_values(argv: list[str]) -> tuple[dict[str, Any], Optional[str]]:
    """The flat key/value mapping of ``[cfg.yaml] [overrides ...]`` and the YAML path (or None)."""
    argv = list(argv)
    values: dict[str, Any] = {}
    source = None
    if argv and argv[0].endswith((".yaml", ".yml")):
        source = argv.pop(0)
        values.update(load_yaml(source))
    values.update(split_overrides(argv))
    return values, source


def run_cli(main):
    """Run an entry point's main(), turning user errors into one message and exit code 2."""
    try:
        return main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

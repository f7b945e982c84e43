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

from sparse.errors import (ConfigError, HelpRequested, UserError, read_user_file,  # noqa: F401  (re-exported)
                           write_atomic)

NULL_STRINGS = {"null", "Null", "NULL", "None", "~", ""}  # "none" stays a string (report_to: none)
TRUE_STRINGS = ("true", "1", "yes", "on")
FALSE_STRINGS = ("false", "0", "no", "off")


class ConfigLoader(yaml.SafeLoader):
    """YAML with YAML 1.2 booleans: only true/false are booleans; yes/no/on/off stay strings
    (``save_strategy: no`` is the string "no"); a bool-typed key still accepts them (``coerce_value``)."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))


def load_yaml_text(stream) -> Any:
    """A YAML document (a string or an open file) parsed with ``ConfigLoader``."""
    return yaml.load(stream, Loader=ConfigLoader)  # noqa: S506  (a SafeLoader subclass)

def key(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None,  # noqa: A002
        choices: Any = None, low: Optional[float] = None, high: Optional[float] = None,
        low_open: bool = False, aliases: tuple = ()) -> Any:
    """A configuration key: default, one-line help and allowed values, kept in the field's metadata.

    ``choices`` is a tuple, or ``"module:NAME"`` naming a tuple in the module that implements the
    choice (imported only when checked). ``low``/``high`` bound a number (inclusive; ``low_open``
    excludes ``low``). ``aliases`` are older names accepted for the key. ``--help``, the
    configuration page of the docs and validation all read this metadata.
    """
    meta = {"help": help, "choices": choices, "low": low, "high": high, "low_open": low_open,
            "aliases": tuple(aliases)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


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
    activation_type: str = "relu"  # SparseSettings.activation (the Python API accepts either name)
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
    beir_dir: Optional[str] = None  # null: $BEIR_DIR, ../shared/data/beir, else data/beir (sparse.assets)
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
    # corpus encoding in evaluation (issue 14): documents per batch (null: per_device_eval_batch_size
    # when given, else 64; batches are length-sorted, so a large one carries little padding) and
    # dtype (fp32 exact on every device; bf16 / fp16 autocast, faster on GPUs, approximate)
    encode_batch_size: Optional[int] = None
    encode_dtype: str = "fp32"


ALL_SECTIONS = ("model", "data", "eval", "training")

# reference keys accepted so its configs run, but without effect here: a warning names each one given
IGNORED_KEYS = {
    "split_batch": "the encoder always projects in token chunks",
    "miracl_dir": "MIRACL evaluation is not supported",
    "miracl_datasets": "MIRACL evaluation is not supported",
    "do_search": "evaluation always searches (use skip_ingest to reuse an index)",
    "lelu_alpha_steps": "the lelu activation is not supported",
}
_warned_ignored: set = set()


def warn_ignored(keys) -> None:
    """One warning per ignored reference key given (once per process)."""
    import logging

    for key in sorted(set(keys) & set(IGNORED_KEYS) - _warned_ignored):
        _warned_ignored.add(key)
        logging.getLogger("sparse.config").warning("config key '%s' is accepted for reference configs but "
                                                   "ignored: %s", key, IGNORED_KEYS[key])


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
            if isinstance(value, str) and value.lower() in TRUE_STRINGS + FALSE_STRINGS:
                return value.lower() in TRUE_STRINGS
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise bad
        if origin is int:
            if isinstance(value, bool):
                raise bad
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                parsed = load_yaml_text(value)
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
                parsed = load_yaml_text(value)
                value = parsed if isinstance(parsed, list) else [v.strip() for v in value.split(",")]
            if not isinstance(value, (list, tuple)):
                raise bad
            return list(value)
        if origin is dict:
            if isinstance(value, str):
                value = load_yaml_text(value) if value.strip() else {}
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
        return load_yaml_text(text)
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
    data = read_user_file(path, load_yaml_text, yaml.YAMLError, "config file not found: {path}",
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
        """The resolved config as YAML (atomically); it never holds credentials (``validate``)."""
        return write_atomic(os.path.join(output_dir, name),
                            lambda f: yaml.safe_dump(self.to_dict(), f, sort_keys=False, allow_unicode=True))


# HF TrainingArguments keys the reference sets to null, and the HF value that means the same
TRAINING_NULL_AS = {"max_grad_norm": 0.0}

SECTION_CLASSES = {"model": ModelArguments, "data": DataArguments, "eval": EvalArguments}


def _section_fields(sections) -> dict[str, dict[str, Any]]:
    """{section: {key: type}} of the argument groups an entry point understands."""
    field_types = {name: _fields_of(SECTION_CLASSES[name]) for name in sections if name in SECTION_CLASSES}
    if "training" in sections:
        field_types["training"] = _fields_of(_training_arguments_cls())
    return field_types


def origin_of(key: str, source: str | None, cli_keys=()) -> str:
    """Where a key was given, for messages: "on the command line" or "in <file>"."""
    if key in cli_keys or not source:
        return "on the command line"
    return f"in {source}"


def check_known(values, known, source: str | None = None, cli_keys=()) -> None:
    """Unknown keys are errors naming the key, where it was given and the closest known key."""
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else "; --help lists the keys"
            raise ConfigError(f"unknown config key '{key}' {origin_of(key, source, cli_keys)}{hint}")


def coerce_all(values: dict[str, Any], types_: dict[str, Any], source: str | None = None, cli_keys=()) -> dict:
    """``coerce_value`` for every key of ``values`` in ``types_``; errors say where the key was given."""
    out = {}
    for k, v in values.items():
        if k in types_:
            try:
                out[k] = coerce_value(k, v, types_[k])
            except ConfigError as exc:
                raise ConfigError(f"{exc} ({origin_of(k, source, cli_keys)})") from None
    return out


def resolve(values: dict[str, Any], sections=("model", "data", "eval"), source: str | None = None,
            extra_known: tuple[str, ...] = (), cli_keys=()) -> ResolvedConfig:
    """Build the argument dataclasses from one flat mapping of keys.

    ``sections`` says which groups the calling entry point understands ("training" adds HF
    TrainingArguments); a key that belongs to none of them is an error. ``cli_keys`` are the keys
    given on the command line (messages say so instead of naming the YAML file).
    """
    field_types = _section_fields(sections)
    known = set().union(*field_types.values()) | set(extra_known)
    where = f" in {source}" if source else ""
    check_known(values, known, source, cli_keys)
    warn_ignored(values)

    built: dict[str, Any] = {}
    for name, fields_ in field_types.items():
        if name == "training":
            # training keys written as null in the reference configs (max_grad_norm: null = no clipping)
            values = {k: (TRAINING_NULL_AS.get(k, v) if v is None else v) for k, v in values.items()}
        kwargs = coerce_all(values, fields_, source, cli_keys)
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
    from sparse.modeling.encoder import ENCODE_DTYPES, POOLINGS, PREPROCESS_FUNCS
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
    if e.opensearch_url and "@" in e.opensearch_url.split("//", 1)[-1].split("/", 1)[0]:
        raise ConfigError("opensearch_url must not hold credentials (they would be written into resolved configs "
                          "and logs); set OPENSEARCH_USER and OPENSEARCH_PASSWORD in the environment")
    _check_one_of("index_precision", e.index_precision, PRECISIONS)
    _check_one_of("encode_dtype", e.encode_dtype, tuple(ENCODE_DTYPES))
    if e.encode_batch_size is not None and e.encode_batch_size < 1:
        raise ConfigError(f"encode_batch_size must be >= 1, got {e.encode_batch_size}")
    _check_one_of("opensearch_query_form", e.opensearch_query_form, QUERY_FORMS)


def parse_config(argv: list[str] | None = None, sections=("model", "data", "eval", "training"),
                 extra_known: tuple[str, ...] = ()) -> ResolvedConfig:
    """Entry-point parser: ``[cfg.yaml] [key=value | --key value ...]``."""
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        raise HelpRequested(keys_help(sections))
    values, source, cli_keys = read_values(argv)
    return resolve(values, sections=sections, source=source, extra_known=extra_known, cli_keys=cli_keys)


def read_values(argv: list[str]) -> tuple[dict[str, Any], Optional[str], set]:
    """The flat key/value mapping of ``[cfg.yaml] [overrides ...]``, the YAML path (or None) and
    the keys given on the command line."""
    argv = list(argv)
    values: dict[str, Any] = {}
    source = None
    if argv and argv[0].endswith((".yaml", ".yml")):
        source = argv.pop(0)
        values.update(load_yaml(source))
    overrides = split_overrides(argv)
    values.update(overrides)
    return values, source, set(overrides)


# ----------------------------------------------------------------------------- entry points
HELP_FLAGS = ("-h", "--help", "-help")


def wants_help(argv) -> bool:
    return any(a in HELP_FLAGS for a in argv)


def _describe_fields(title: str, cls) -> list[str]:
    lines = [f"{title}:"]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"  {f.name:<34} {_type_name(hints.get(f.name, Any)):<16} default {default!r}")
    return lines


def keys_help(sections, script_cls=None) -> str:
    """The keys an entry point accepts, by group, with type and default (what ``--help`` prints)."""
    import textwrap

    lines = ["Keys (in the YAML file, or as key=value / --key value; values are YAML scalars):"]
    if script_cls is not None:
        lines += _describe_fields(f"this script ({script_cls.__name__})", script_cls)
    for name in sections:
        if name in SECTION_CLASSES:
            lines += _describe_fields(f"{name} ({SECTION_CLASSES[name].__name__})", SECTION_CLASSES[name])
    if "training" in sections:
        names = ", ".join(sorted(_fields_of(_training_arguments_cls())))
        lines.append("training (Hugging Face TrainingArguments; see its documentation):")
        lines += textwrap.wrap(names, 100, initial_indent="  ", subsequent_indent="  ")
    lines.append("Ignored reference keys (accepted, warned about): " + ", ".join(IGNORED_KEYS))
    lines.append("--debug shows the full traceback of an error.")
    return "\n".join(lines)


def run_cli(main, argv: list[str] | None = None, usage: str | None = None):
    """Run an entry point's ``main(argv)``: ``--help`` prints the usage and keys (exit 0); a user
    error prints one message and exits with 2 (the traceback only with ``--debug``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return main(argv)
    except HelpRequested as req:
        print(((usage or "").strip() + "\n\n" + req.text).strip())
        sys.exit(0)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))

"""From one flat mapping of keys to the grouped, checked configuration of a run (``ResolvedConfig``).

Older key names are read as their new names (one note per name and process); unknown keys are
errors naming the key and the closest known one; every value is converted to its key's type and
checked against the range or values its ``key()`` declares, before any entry point writes a file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from sparse.config.groups import GROUPS, IGNORED_KEYS, TRAINING_DEFAULTS, TRAINING_NULL_AS, TRAINING_RANGES
from sparse.config.keys import bounds_text, coerce_value, fields_of, in_bounds, meta_of, resolve_choices
from sparse.errors import ConfigError, write_atomic

logger = logging.getLogger("sparse.config")
_noted: set = set()


def _training_arguments_cls():
    from transformers import TrainingArguments

    return TrainingArguments


@dataclass
class ResolvedConfig:
    """The resolved argument groups of one run, where they came from, and which keys were given explicitly."""

    model: Any
    data: Any
    loss: Any
    regularizer: Any
    teachers: Any
    idf: Any
    optimizer: Any
    health: Any
    eval: Any
    serving: Any
    windows: Any
    opensearch: Any
    training: Any = None  # transformers.TrainingArguments when requested
    source: Optional[str] = None
    explicit_keys: set = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        """{group: {key: value}}, Hugging Face training arguments under "training"."""
        out = {name: dataclasses.asdict(getattr(self, name)) for name in GROUPS}
        if self.training is not None:
            out["training"] = json.loads(self.training.to_json_string())
        return out

    def save(self, output_dir: str, name: str = "resolved_config.yaml") -> str:
        """The resolved config as YAML (atomically); it never holds credentials (``validate``)."""
        return write_atomic(os.path.join(output_dir, name),
                            lambda f: yaml.safe_dump(self.to_dict(), f, sort_keys=False, allow_unicode=True))


def flat_view(saved: dict) -> dict:
    """The keys of a saved (grouped) config as one mapping: what ``train_config.yaml`` readers need."""
    return {k: v for group in saved.values() if isinstance(group, dict) for k, v in group.items()}


def group_fields() -> dict[str, dict[str, Any]]:
    """{group: {key: type}} of the toolkit's groups."""
    return {name: fields_of(cls) for name, cls in GROUPS.items()}


def key_fields(classes) -> dict[str, dataclasses.Field]:
    """{key name: field} of the dataclasses ``classes``."""
    return {f.name: f for cls in classes for f in dataclasses.fields(cls) if f.init}


def alias_table(classes) -> dict[str, tuple[str, dict]]:
    """{old name: (key name, {old value: new value})} declared by the fields of ``classes``."""
    table: dict[str, tuple[str, dict]] = {}
    for name, f in key_fields(classes).items():
        meta = meta_of(f)
        for alias in meta["aliases"]:
            table[alias] = (name, meta["alias_values"].get(alias, {}))
    return table


def apply_aliases(values: dict[str, Any], classes, cli_keys=()) -> tuple[dict[str, Any], set]:
    """``values`` with older names replaced by their keys (a note per name), and the CLI keys renamed too.

    An old name mapped through values (``use_l0: true`` -> ``activation_type: l1_relu``) conflicts
    with a different explicit value of the new key: that is an error naming both.
    """
    table = alias_table(classes)
    types = {k: t for cls in classes for k, t in fields_of(cls).items()}
    out = {k: v for k, v in values.items() if k not in table}
    cli = {k for k in cli_keys if k not in table}
    for old, value in values.items():
        if old not in table:
            continue
        new, mapping = table[old]
        note_once(f"alias:{old}", "config key '%s' is an older name of '%s'; read as '%s'", old, new, new)
        if mapping:
            flag = coerce_value(old, value, bool) if all(isinstance(k, bool) for k in mapping) else value
            if flag not in mapping:
                raise ConfigError(f"config key '{old}' (an older name of '{new}') must be one of "
                                  f"{tuple(mapping)}, got {value!r}")
            value = mapping[flag]
            if value is None:
                continue
            if new in out and out[new] != value and not (new in types and out[new] in (None, _default_of(classes, new))):
                raise ConfigError(f"'{old}: {values[old]}' means {new} {value}, but {new} is {out[new]!r}; "
                                  f"set only {new}")
        elif new in out and out[new] != value:
            raise ConfigError(f"config keys '{old}' and '{new}' name the same setting with different values "
                              f"({value!r} and {out[new]!r}); set only '{new}'")
        out[new] = value
        if old in cli_keys:
            cli.add(new)
    return out, cli


def _default_of(classes, name):
    f = key_fields(classes).get(name)
    return None if f is None or f.default is dataclasses.MISSING else f.default


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


class KeyValueError(ConfigError):
    """A value outside its key's declared range or choices; ``key`` names the key."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def check_value(name: str, value: Any, meta: dict) -> None:
    """``value`` lies in the range and among the choices ``meta`` declares, else a ConfigError naming both."""
    if value is None:
        return
    entries = value if isinstance(value, list) else [value]
    allowed = resolve_choices(meta.get("choices"))
    for v in entries:
        if allowed is not None and v not in allowed:
            what = f"{name} entries must be among" if isinstance(value, list) else f"{name} must be one of"
            raise KeyValueError(name, f"{what} {allowed}, got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not in_bounds(v, meta):
            text = bounds_text(meta)
            raise KeyValueError(name, f"{name} must be {'in ' if text[0] in '[(' else ''}{text}, got {v!r}")


def check_group(obj) -> None:
    """Every key of one argument group against its declared range and choices."""
    for f in dataclasses.fields(obj):
        check_value(f.name, getattr(obj, f.name), meta_of(f))


def check_training(args) -> None:
    """The Hugging Face keys of ``TRAINING_RANGES``; ``max_steps`` is -1 (unset) or a positive count, and
    ``num_train_epochs`` must be positive when it decides the length of training."""
    for name, (low, high, low_open) in TRAINING_RANGES.items():
        value = getattr(args, name, None)
        if name == "num_train_epochs" and (args.max_steps or 0) > 0:
            continue  # max_steps decides
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            check_value(name, value, {"low": low, "high": high, "low_open": low_open})
    steps = args.max_steps
    if steps is not None and (steps == 0 or steps < -1):
        raise ConfigError(f"max_steps must be -1 (unset: num_train_epochs decides) or >= 1, got {args.max_steps}")


def resolve(values: dict[str, Any], sections=("model", "data", "eval"), source: str | None = None,
            extra_known: tuple[str, ...] = (), cli_keys=()) -> ResolvedConfig:
    """Build the argument groups from one flat mapping of keys.

    Every toolkit group is always read; ``"training" in sections`` adds Hugging Face
    ``TrainingArguments``. A key that belongs to no group (nor to ``extra_known``) is an error.
    ``cli_keys`` are the keys given on the command line (messages say so instead of naming the file).
    """
    classes = list(GROUPS.values())
    values, cli_keys = apply_aliases(values, classes, cli_keys)
    field_types = group_fields()
    if "training" in sections:
        field_types["training"] = fields_of(_training_arguments_cls())
    known = set().union(*field_types.values()) | set(extra_known)
    check_known(values, known, source, cli_keys)
    warn_ignored(values)

    built: dict[str, Any] = {}
    for name, types_ in field_types.items():
        if name == "training":
            values_t = {k: (TRAINING_NULL_AS.get(k, v) if v is None else v) for k, v in values.items()}
            kwargs = coerce_all(values_t, types_, source, cli_keys)
            kwargs = {**TRAINING_DEFAULTS, **kwargs}
            where = f" in {source}" if source else ""
            try:
                built[name] = _training_arguments_cls()(**kwargs)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"invalid training arguments{where}: {exc}") from None
        else:
            built[name] = GROUPS[name](**coerce_all(values, types_, source, cli_keys))
    cfg = ResolvedConfig(**{name: built[name] for name in GROUPS}, training=built.get("training"), source=source,
                         explicit_keys=set(values))
    try:
        validate(cfg)
    except KeyValueError as exc:
        raise ConfigError(f"{exc} ({origin_of(exc.key, source, cli_keys)})") from None
    return cfg


def validate(cfg: ResolvedConfig) -> None:
    """Every key against its declared range and choices, then the rules that tie keys together."""
    for name in GROUPS:
        check_group(getattr(cfg, name))
    if cfg.training is not None:
        check_training(cfg.training)
    loss, reg, o = cfg.loss, cfg.regularizer, cfg.opensearch
    if loss.loss_weights is not None and len(loss.loss_weights) != len(loss.loss_types):
        raise ConfigError(f"loss_weights needs one weight per entry of loss_types ({len(loss.loss_types)}), "
                          f"got {len(loss.loss_weights)}")
    if reg.lelu_alpha is not None:
        raise ConfigError("lelu_alpha (old reference 'lelu' activation) is not supported; use activation_type "
                          f"{'/'.join(resolve_choices('sparse.modeling.activations:ACTIVATIONS'))}")
    if o.opensearch_url and "@" in o.opensearch_url.split("//", 1)[-1].split("/", 1)[0]:
        raise ConfigError("opensearch_url must not hold credentials (they would be written into resolved configs "
                          "and logs); set OPENSEARCH_USER and OPENSEARCH_PASSWORD in the environment")


def warn_ignored(keys) -> None:
    """One warning per ignored reference key given (once per process)."""
    for k in sorted(set(keys) & set(IGNORED_KEYS) - _noted):
        _noted.add(k)
        logger.warning("config key '%s' is accepted for reference configs but ignored: %s", k, IGNORED_KEYS[k])


# keys the query-side fit (freeze_document_encoder) never reads, and why
UNREAD_WHEN_FROZEN = {
    "flops_d_lambda": "the document encoder is frozen, so no FLOPS regularizer is built",
    "flops_d_T": "the document encoder is frozen, so no FLOPS regularizer is built",
    "flops_q_lambda": "the document encoder is frozen, so no FLOPS regularizer is built",
    "flops_q_T": "the document encoder is frozen, so no FLOPS regularizer is built",
    "flops_threshold": "the document encoder is frozen, so no FLOPS regularizer is built",
    "flops_form": "the document encoder is frozen, so no FLOPS regularizer is built",
    "use_in_batch_negatives": "the query-side fit scores each query against its own documents only",
    "infonce_exclude_other_positives": "the query-side fit scores each query against its own documents only",
    "sample_num_one_query": "the query-side fit reads every document of each row",
    "swap_times": "the query-side fit reads every document of each row, in order",
    "first_rank_thresh": "the query-side fit reads every row",
}
NO_QUERY_FLOPS = "queries are inference-free (inf_free: true), so no query FLOPS regularizer is built"


def check_training_keys(cfg: ResolvedConfig) -> None:
    """Training: a warning for each key given that the chosen mode never reads, an error where going on
    would be wrong (teachers configured for the query-side fit, which never runs them)."""
    given = cfg.explicit_keys
    if cfg.idf.freeze_document_encoder:
        if cfg.teachers.kd_ensemble_teacher_kwargs:
            raise ConfigError("kd_ensemble_teacher_kwargs is set, but freeze_document_encoder: true fits the query "
                              "IDF to the scores stored in the kd rows and never runs teachers; store the teachers' "
                              "scores in the data (data_preparation.py --teachers) or drop one of the two keys")
        for k in sorted(given & set(UNREAD_WHEN_FROZEN)):
            note_once(f"unread:{k}", "config key '%s' is ignored with freeze_document_encoder: true: %s", k,
                      UNREAD_WHEN_FROZEN[k])
        return
    if set(cfg.loss.loss_types) <= {"infonce"}:  # infonce reads neither a temperature nor teacher scores
        for k in sorted(given & {"temperature", "score_norm"}):
            note_once(f"unread:{k}", "config key '%s' is ignored: loss_types %s reads no %s (only kldiv and "
                      "marginmse do)", k, cfg.loss.loss_types, "temperature" if k == "temperature" else "scores")
        if cfg.teachers.kd_ensemble_teacher_kwargs:
            note_once("unread:kd_ensemble_teacher_kwargs", "config key 'kd_ensemble_teacher_kwargs': the teachers "
                      "score every batch, but loss_types %s reads no teacher scores (only kldiv and marginmse do)",
                      cfg.loss.loss_types)
    if "infonce_exclude_other_positives" in given and not cfg.loss.use_in_batch_negatives:
        note_once("unread:infonce_exclude_other_positives", "config key 'infonce_exclude_other_positives' is "
                  "ignored: without use_in_batch_negatives no other query's positive is among the negatives")
    if cfg.model.inf_free:
        for k in sorted(given & {"flops_q_lambda", "flops_q_T"}):
            note_once(f"unread:{k}", "config key '%s' is ignored: %s", k, NO_QUERY_FLOPS)


def forget_notes() -> None:
    """Forget which notes were logged (each is logged once per process); for tests."""
    _noted.clear()


def note_once(tag: str, msg: str, *args, level: int = logging.WARNING) -> None:
    """Log ``msg`` once per process for ``tag`` (notes about older names, ignored or unread keys)."""
    if tag not in _noted:
        _noted.add(tag)
        logger.log(level, msg, *args)


def canonical_values(values: dict[str, Any]) -> dict[str, Any]:
    """A raw flat mapping with older key names replaced by their keys (no notes, no checks)."""
    table = alias_table(GROUPS.values())
    out = {}
    for k, v in values.items():
        if k not in table:
            out[k] = v
            continue
        new, mapping = table[k]
        if mapping:
            try:
                flag = coerce_value(k, v, bool) if all(isinstance(m, bool) for m in mapping) else v
            except ConfigError:
                out[k] = v  # left for resolve to report
                continue
            if flag not in mapping or mapping[flag] is None:
                if flag not in mapping:
                    out[k] = v
                continue
            v = mapping[flag]
        out[new] = v
    return out

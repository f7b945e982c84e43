"""What a configuration key is (``key()``: default, help, allowed values, older names) and how a
YAML or command-line value becomes the key's type.

Nothing here imports the project above ``sparse.errors``: choices that live in the modules that
implement them are named as ``"module:NAME"`` strings and imported only when checked.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import re
import types
import typing
from dataclasses import field
from typing import Any, Optional, Union

import yaml

from sparse.errors import ConfigError

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
        low_open: bool = False, high_open: bool = False, aliases: tuple = (),
        alias_values: Optional[dict] = None, nargs: Optional[str] = None, positional: bool = False) -> Any:
    """A configuration key: default, one-line help and allowed values, kept in the field's metadata.

    ``choices`` is a tuple, or ``"module:NAME"`` naming a tuple (or mapping) in the module that
    implements the choice (imported only when checked); for a list-typed key it applies to every
    entry. ``low``/``high`` bound a number (inclusive; ``low_open``/``high_open`` exclude the bound).
    ``aliases`` are older names accepted for the key (a one-time note says so); ``alias_values``
    maps an alias to ``{old value: new value}`` when the old key spoke in other values (an old value
    mapped to ``None`` sets nothing). ``nargs`` ("*" or "...") and ``positional`` are for command
    options: ``--key a b c`` collects values up to the next ``--option`` ("*") or to the end
    ("..."); a positional key takes a bare argument. ``--help``, the configuration page of the docs
    and validation all read this metadata. No default makes the key required.
    """
    meta = {"help": help, "choices": choices, "low": low, "high": high, "low_open": low_open,
            "high_open": high_open, "aliases": tuple(aliases), "alias_values": dict(alias_values or {}),
            "nargs": nargs, "positional": positional}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def meta_of(f: dataclasses.Field) -> dict:
    """The ``key()`` metadata of a field (empty help and no bounds for a plain field)."""
    m = dict(f.metadata)
    m.setdefault("help", "")
    for name in ("choices", "low", "high", "nargs"):
        m.setdefault(name, None)
    for name in ("low_open", "high_open", "positional"):
        m.setdefault(name, False)
    m.setdefault("aliases", ())
    m.setdefault("alias_values", {})
    return m


def default_of(f: dataclasses.Field) -> Any:
    """The default of a field (``dataclasses.MISSING`` for a required one)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def resolve_choices(choices: Any) -> Optional[tuple]:
    """The allowed values of ``choices``: a tuple as is, a ``"module:NAME"`` imported now."""
    if choices is None or isinstance(choices, (tuple, list)):
        return None if choices is None else tuple(choices)
    module, _, name = str(choices).partition(":")
    value = getattr(importlib.import_module(module), name)
    return tuple(value)


def bounds_text(meta: dict) -> str:
    """``[0, 1)``-style text of a key's range, or "" when it has none."""
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return ""
    if high is None:
        return f"> {low:g}" if meta.get("low_open") else f">= {low:g}"
    if low is None:
        return f"< {high:g}" if meta.get("high_open") else f"<= {high:g}"
    return f"{'(' if meta.get('low_open') else '['}{low:g}, {high:g}{')' if meta.get('high_open') else ']'}"


def in_bounds(value: float, meta: dict) -> bool:
    """Whether ``value`` lies in the key's range."""
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta.get("low_open") and value == low)):
        return False
    if high is not None and (value > high or (meta.get("high_open") and value == high)):
        return False
    return True


def strip_optional(tp):
    """Optional[X] -> (X, True); other types -> (tp, False)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        return Union[tuple(args)], True
    return tp, False


def type_name(tp) -> str:
    """A key's type for messages and ``--help``: ``int``, ``list[float] or null``."""
    base, optional = strip_optional(tp)
    if typing.get_origin(base) in (list, tuple, dict):
        name = str(base).replace("typing.", "")
    else:
        name = getattr(base, "__name__", None) or str(base).replace("typing.", "")
    name = {"Any": "any"}.get(name, name)
    return f"{name} or null" if optional else name


def coerce_value(key: str, value: Any, tp) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming the key."""
    base, optional = strip_optional(tp)
    if value is None or (isinstance(value, str) and value in NULL_STRINGS and base is not str):
        if optional or base is Any:
            return None
        if value is None:
            raise ConfigError(f"config key '{key}' cannot be null (expected {type_name(tp)})")
    if isinstance(value, str) and optional and value in ("null", "None"):
        return None  # the reference writes idf_path: "null"
    if base is Any or base is typing.Any:
        return value
    origin = typing.get_origin(base) or base
    bad = ConfigError(f"config key '{key}' expects {type_name(tp)}, got {value!r}")
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
                if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) and float(parsed).is_integer():
                    return int(parsed)
                if isinstance(parsed, str):  # 1e3: YAML 1.2 reads it as a string, Python as a number
                    number = float(parsed)
                    if number.is_integer():
                        return int(number)
                raise bad
            if isinstance(value, int):
                return value
            raise bad
        if origin is float:
            if isinstance(value, bool):
                raise bad
            if isinstance(value, (int, float)):
                return float(value)
            if isinstance(value, (list, dict)):
                raise bad
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
            inner = typing.get_args(base)
            if inner and inner[0] is not Any:
                return [coerce_value(f"{key}[{i}]", v, inner[0]) for i, v in enumerate(value)]
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
    except (TypeError, ValueError, yaml.YAMLError):
        raise bad from None
    return value  # unknown/complex annotations (HF TrainingArguments unions): pass through


def parse_scalar(text: str) -> Any:
    """A command-line value read as a YAML scalar (``true``, ``1e-3``, ``[a, b]``, ``null``)."""
    try:
        return load_yaml_text(text)
    except yaml.YAMLError:
        return text


def fields_of(cls) -> dict[str, Any]:
    """{field name: annotated type} of a dataclass's init fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}

"""The one command-line reader of every entry point (root scripts, ``python -m`` commands, ``sparse``).

    command [config.yaml] [POSITIONAL ...] [key=value | --key value | --key=value | --flag ...]

A ``Command`` names what an entry point reads: its own options (a dataclass whose fields are
declared with ``key()``), the toolkit's configuration groups, and Hugging Face
``TrainingArguments``. Values are YAML scalars (``true``, ``1e-3``, ``[a, b]``, ``null``).
``--help`` lists every key with its type, default and help, by group; ``run_cli`` turns a user
error into one ``error: ...`` line on stderr and exit status 2 (the traceback only with ``--debug``).
"""

from __future__ import annotations

import dataclasses
import re
import sys
import textwrap
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sparse.config.groups import GROUPS, IGNORED_KEYS
from sparse.config.keys import bounds_text, default_of, fields_of, meta_of, parse_scalar, strip_optional, type_name
from sparse.config.resolve import (ResolvedConfig, _training_arguments_cls, alias_table, apply_aliases,
                                   check_group, check_known, coerce_all, note_once, resolve)
from sparse.errors import ConfigError, HelpRequested, UserError, read_user_file

HELP_FLAGS = ("-h", "--help", "-help")
_KEY_VALUE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*=")


@dataclass
class Command:
    """What one entry point reads: its own options, the toolkit's groups, Hugging Face training keys."""

    prog: str
    usage: str = ""
    options: Optional[type] = None  # the command's own dataclass of key() fields
    config: bool = False  # the toolkit's configuration groups (sparse.config.groups)
    training: bool = False  # Hugging Face TrainingArguments
    key_aliases: dict = dataclasses.field(default_factory=dict)  # this command's own older names of keys

    def sections(self) -> tuple:
        """The ``sections`` of ``resolve``."""
        return ("model", "data", "eval", "training") if self.training else ("model", "data", "eval")


def wants_help(argv) -> bool:
    """Whether ``argv`` asks for ``--help``."""
    return any(a in HELP_FLAGS for a in argv)


def _option_fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init} if cls else {}


def tokenize(argv: list[str], options: Optional[type] = None,
             parse: Callable[[str], Any] = parse_scalar) -> tuple[list[tuple[str, Any]], list[str]]:
    """(``[(key, value), ...]`` in order, bare positional arguments) of ``argv``.

    ``--key value`` / ``--key=value`` / ``key=value`` give ``parse(text)`` (a YAML scalar); a bare ``--flag`` gives
    true; an option declared with ``nargs="*"`` takes the raw words up to the next ``--option``,
    ``nargs="..."`` every word after it.
    """
    fields = _option_fields(options)
    aliases = {a: n for n, f in fields.items() for a in meta_of(f)["aliases"]}
    pairs: list[tuple[str, Any]] = []
    bare: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and len(arg) > 2:
            body = arg[2:]
            name = body.split("=", 1)[0].replace("-", "_")
            f = fields.get(aliases.get(name, name))
            nargs = meta_of(f)["nargs"] if f is not None else None
            if "=" in body:
                pairs.append((name, parse(body.split("=", 1)[1])))
            elif nargs == "...":
                pairs.append((name, list(argv[i + 1:])))
                i = len(argv)
            elif nargs == "*":
                j = i + 1
                while j < len(argv) and not argv[j].startswith("--"):
                    j += 1
                pairs.append((name, list(argv[i + 1:j])))
                i = j - 1
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--") and not _KEY_VALUE.match(argv[i + 1]):
                pairs.append((name, parse(argv[i + 1])))
                i += 1
            else:
                pairs.append((name, True))
        elif _KEY_VALUE.match(arg):
            k, val = arg.split("=", 1)
            pairs.append((k.replace("-", "_"), parse(val)))
        else:
            bare.append(arg)
        i += 1
    return pairs, bare


def split_overrides(argv: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` / ``--key value`` / ``--key=value`` / bare ``--flag`` into a dict."""
    pairs, bare = tokenize(list(argv))
    if bare:
        raise ConfigError(f"cannot parse argument {bare[0]!r}: use key=value or --key value")
    return dict(pairs)


def load_yaml(path: str) -> dict[str, Any]:
    """The mapping of a YAML config file (empty for an empty file)."""
    import yaml

    from sparse.config.keys import load_yaml_text

    data = read_user_file(path, load_yaml_text, yaml.YAMLError, "config file not found: {path}",
                          "{path} is not valid YAML: {exc}", ConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    return data


def read_values(argv: list[str]) -> tuple[dict[str, Any], Optional[str], set]:
    """The flat key/value mapping of ``[cfg.yaml] [overrides ...]``, the YAML path (or None) and
    the keys given on the command line."""
    argv = list(argv)
    values: dict[str, Any] = {}
    source = None
    if argv and argv[0].endswith((".yaml", ".yml")):
        source = argv.pop(0)
        values.update(load_yaml(source))
    command = Command("", config=True)
    values, _ = canonical_names(command, values, set())
    overrides, _ = canonical_names(command, split_overrides(argv), set())
    values.update(overrides)
    return values, source, set(overrides)


def _merge(pairs, list_keys) -> dict[str, Any]:
    """Later values win; a list-typed option given several times collects every value."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in list_keys and k in out:
            out[k] = (out[k] if isinstance(out[k], list) else [out[k]]) + (v if isinstance(v, list) else [v])
        else:
            out[k] = v
    return out


def parse_command(command: Command, argv: list[str]) -> tuple[Optional[ResolvedConfig], Any]:
    """(resolved configuration groups or None, the command's options or None) of ``argv``.

    ``--help`` raises ``HelpRequested`` with the keys; a bad argument raises ``ConfigError``.
    """
    argv = list(argv)
    if wants_help(argv):
        raise help_requested(command)
    values, source, cli_keys = command_values(command, argv)
    check_known(values, known_keys(command), source, cli_keys)
    opts = build_options(command, values, source, cli_keys) if command.options is not None else None
    cfg = resolve(values, sections=command.sections(), source=source, cli_keys=cli_keys) if command.config else None
    return cfg, opts


def command_values(command: Command, argv: list[str]) -> tuple[dict[str, Any], Optional[str], set]:
    """The flat mapping of ``[cfg.yaml] [POSITIONAL ...] [overrides ...]`` with older names read as their
    keys, the YAML path, and the keys given on the command line (which win over the file's)."""
    source = None
    from_file: dict[str, Any] = {}
    if command.config and argv and argv[0].endswith((".yaml", ".yml")):
        source = argv.pop(0)
        from_file = load_yaml(source)
    fields = _option_fields(command.options)
    hints = fields_of(command.options) if command.options else {}
    list_keys = {n for n, t in hints.items() if (typing.get_origin(strip_optional(t)[0]) or strip_optional(t)[0])
                 is list}
    pairs, bare = tokenize(argv, command.options, parse=str)
    types = key_types(command)
    pairs = [(k, parse_scalar(v) if isinstance(v, str) and not _is_text(types.get(k)) else v) for k, v in pairs]
    positional = [n for n, f in fields.items() if meta_of(f)["positional"]]
    if len(bare) > len(positional):
        raise ConfigError(f"cannot parse argument {bare[len(positional)]!r}: use key=value or --key value")
    overrides = {**_merge(pairs, list_keys), **dict(zip(positional, bare))}
    from_file, _ = canonical_names(command, from_file, set())
    overrides, cli_keys = canonical_names(command, overrides, set(overrides))
    return {**from_file, **overrides}, source, cli_keys


def canonical_names(command: Command, values: dict[str, Any], cli_keys: set) -> tuple[dict[str, Any], set]:
    """``values`` of one source (the file, or the command line) with older names read as their keys: the
    command's own ``key_aliases``, then the fields' ``aliases``; both names in one source is an error."""
    values = dict(values)
    for old, new in command.key_aliases.items():
        if old not in values:
            continue
        if new in values and values[new] != values[old]:
            raise ConfigError(f"{command.prog} reads '{old}' as '{new}', and both are given with different values "
                              f"({values[old]!r} and {values[new]!r}); set only '{new}'")
        note_once(f"alias:{command.prog}:{old}", "%s reads '%s' as '%s'", command.prog, old, new)
        values[new] = values.pop(old)
        if old in cli_keys:
            cli_keys = cli_keys | {new}
    return apply_aliases(values, command_classes(command), cli_keys)


def command_classes(command: Command) -> list:
    """The dataclasses whose keys ``command`` reads (its options, then the toolkit's groups)."""
    return ([command.options] if command.options else []) + (list(GROUPS.values()) if command.config else [])


def build_options(command: Command, values: dict[str, Any], source: Optional[str], cli_keys: set):
    """The command's options dataclass from ``values`` (its keys are taken out of ``values``), checked
    against each field's range and choices; a required option left out is an error naming it."""
    cls = command.options
    fields = _option_fields(cls)
    own = set(fields) | set(alias_table([cls]))
    raw, cli_own = apply_aliases({k: values.pop(k) for k in list(values) if k in own}, [cls], cli_keys)
    given = coerce_all(raw, fields_of(cls), source, cli_own)
    for name, f in fields.items():
        if default_of(f) is dataclasses.MISSING and name not in given:
            flag = name.upper() if meta_of(f)["positional"] else f"--{name}"
            raise ConfigError(f"{flag} is required ({meta_of(f)['help'] or 'see --help'})")
    opts = cls(**given)
    check_group(opts)
    return opts


def key_types(command: Command) -> dict[str, Any]:
    """{key or older name: annotated type} of the command's options and groups (Hugging Face keys left out)."""
    classes = command_classes(command)
    types = {k: t for cls in classes for k, t in fields_of(cls).items()}
    types.update({old: types[new] for old, (new, mapping) in alias_table(classes).items() if not mapping})
    types.update({old: types.get(new) for old, new in command.key_aliases.items()})
    return types


def _is_text(tp) -> bool:
    """A str-typed key keeps the command-line text as typed (``--version 1.10`` stays "1.10")."""
    return tp is not None and strip_optional(tp)[0] is str


def known_keys(command: Command) -> set:
    """Every key name ``command`` accepts: its options, the groups' keys and older names, training keys."""
    classes = command_classes(command)
    known = {n for cls in classes for n in fields_of(cls)} | set(alias_table(classes))
    if command.training:
        known |= set(fields_of(_training_arguments_cls()))
    return known


def parse_config(argv: list[str] | None = None, sections=("model", "data", "eval", "training"),
                 extra_known: tuple[str, ...] = ()) -> ResolvedConfig:
    """Entry-point parser of the configuration alone: ``[cfg.yaml] [key=value | --key value ...]``."""
    argv = sys.argv[1:] if argv is None else argv
    command = Command("", config=True, training="training" in sections)
    if wants_help(argv):
        raise help_requested(command)
    values, source, cli_keys = read_values(argv)
    return resolve(values, sections=sections, source=source, extra_known=extra_known, cli_keys=cli_keys)


# ----------------------------------------------------------------------------- help
def _default_text(f: dataclasses.Field) -> str:
    d = default_of(f)
    return "required" if d is dataclasses.MISSING else "null" if d is None else repr(d)


def allowed_text(meta: dict) -> str:
    """The allowed values or range of a key, as shown by ``--help`` and the docs."""
    from sparse.config.keys import resolve_choices

    parts = []
    if meta.get("choices") is not None:
        try:
            parts.append(" | ".join(str(c) for c in resolve_choices(meta["choices"])))
        except ImportError:
            parts.append(str(meta["choices"]))
    if bounds_text(meta):
        parts.append(bounds_text(meta))
    return "; ".join(parts)


def describe_group(title: str, cls) -> list[str]:
    """``--help`` lines of one dataclass: each key with type, default, allowed values, help and aliases."""
    lines = ["", title]
    hints = fields_of(cls)
    for f in dataclasses.fields(cls):
        meta = meta_of(f)
        name = f"{f.name.upper()} (positional)" if meta["positional"] else f"--{f.name}"
        lines.append(f"  {name:<34} {type_name(hints.get(f.name, Any)):<18} default {_default_text(f)}")
        text = meta["help"]
        allowed = allowed_text(meta)
        if allowed:
            text += f" Allowed: {allowed}."
        if meta["aliases"]:
            text += f" Older name: {', '.join(meta['aliases'])}."
        lines += textwrap.wrap(text, 100, initial_indent="      ", subsequent_indent="      ")
    return lines


# Hugging Face TrainingArguments keys --help describes (the others are listed by name)
TRAINING_SHOWN = ("output_dir", "max_steps", "num_train_epochs", "learning_rate", "per_device_train_batch_size",
                  "per_device_eval_batch_size", "gradient_accumulation_steps", "warmup_steps", "weight_decay",
                  "lr_scheduler_type", "max_grad_norm", "fp16", "bf16", "seed", "logging_steps", "save_strategy",
                  "save_steps", "save_total_limit", "resume_from_checkpoint", "report_to", "dataloader_drop_last")


def training_help() -> list[str]:
    """``--help`` lines of the Hugging Face training keys: the common ones with default, range and help."""
    from sparse.config.groups import TRAINING_DEFAULTS, TRAINING_HELP, TRAINING_RANGES

    cls = _training_arguments_cls()
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    lines = ["", "[training] Hugging Face TrainingArguments (same names and meanings as in transformers)."]
    for name in TRAINING_SHOWN:
        f = fields[name]
        default = repr(TRAINING_DEFAULTS[name]) if name in TRAINING_DEFAULTS else _default_text(f)
        lines.append(f"  --{name:<32} {'':<18} default {default}")
        text = TRAINING_HELP.get(name) or f.metadata.get("help", "").split(". ")[0].rstrip(".") + "."
        if name in TRAINING_RANGES and name not in TRAINING_HELP:
            low, high, low_open = TRAINING_RANGES[name]
            text += f" Allowed: {bounds_text({'low': low, 'high': high, 'low_open': low_open})}."
        lines += textwrap.wrap(text, 100, initial_indent="      ", subsequent_indent="      ")
    rest = ", ".join(sorted(set(fields) - set(TRAINING_SHOWN)))
    lines.append("  Also accepted (see the transformers documentation):")
    lines += textwrap.wrap(rest, 100, initial_indent="    ", subsequent_indent="    ")
    return lines


def help_requested(command: Command) -> HelpRequested:
    """The ``HelpRequested`` of ``command``: its keys, and its usage (which an entry point's own replaces)."""
    req = HelpRequested(command_help(command, usage=False))
    req.usage = command.usage
    return req


def command_help(command: Command, usage: bool = True) -> str:
    """What ``--help`` prints: usage, then the keys by group with type, default and help."""
    lines = [command.usage.strip(), ""] if usage and command.usage.strip() else []
    if command.config:
        lines.append("Keys (in the YAML file, or as key=value / --key value; values are YAML scalars):")
    else:
        lines.append("Options (--key value, --key=value or key=value; values are YAML scalars):")
    if command.options is not None:
        lines += describe_group(f"{command.prog or 'this command'} ({command.options.__name__})", command.options)
    if command.config:
        for name, cls in GROUPS.items():
            lines += describe_group(f"[{name}] {cls.__doc__.strip()}", cls)
    if command.training:
        lines += training_help()
    if command.config:
        lines.append("Ignored reference keys (accepted, warned about): " + ", ".join(IGNORED_KEYS))
    lines.append("--debug shows the full traceback of an error.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- running
def run_cli(main: Callable, argv: list[str] | None = None, usage: str | None = None):
    """Run an entry point's ``main(argv)``: ``--help`` prints the usage and keys (exit 0); a user
    error prints one ``error: ...`` line on stderr and exits with 2 (the traceback only with ``--debug``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return main(argv)
    except HelpRequested as req:
        print(((usage or getattr(req, "usage", "") or "").strip() + "\n\n" + req.text).strip())
        sys.exit(0)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))


def run_command(command: Command, body: Callable, argv: list[str] | None = None):
    """``run_cli`` of ``body(cfg, opts)`` with the arguments read by ``parse_command``; returns its result.

    A ``body`` that returns an int is an exit status (``python -m`` commands).
    """
    def main(args):
        cfg, opts = parse_command(command, args)
        return body(cfg, opts) if command.config else body(opts)

    return run_cli(main, argv, usage=command.usage)


__all__ = ["Command", "parse_command", "parse_config", "run_cli", "run_command", "command_help",
           "split_overrides", "read_values", "load_yaml", "wants_help", "tokenize", "allowed_text"]

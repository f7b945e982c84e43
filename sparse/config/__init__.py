"""Configuration: the toolkit's keys grouped by the part they configure, one flat YAML mapping plus
command-line overrides, and the one command-line reader of every entry point.

* ``keys``: ``key()`` (default, help, allowed values, older names) and value conversion;
* ``groups``: the argument dataclasses (model, data, loss, regularizer, teachers, idf, health,
  eval, serving, windows, opensearch) and the ranges of Hugging Face training keys;
* ``resolve``: a flat mapping -> ``ResolvedConfig``, every key checked before anything is written;
* ``cli``: ``Command``, ``parse_command``, ``--help``, ``run_cli`` (error line, exit status 2);
* ``docs``: ``python -m sparse.config.docs`` writes docs/configuration.md from the metadata.

A config is one flat YAML mapping; command-line overrides come after the YAML path as
``key=value`` or ``--key value``. Unknown keys are errors naming the key and the closest known one.
"""

from sparse.config.cli import (HELP_FLAGS, Command, command_help, load_yaml, parse_command,  # noqa: F401
                               parse_config, read_values, run_cli, run_command, split_overrides, tokenize,
                               wants_help)
from sparse.config.groups import (DEFAULT_BEIR_DATASETS, GROUPS, IGNORED_KEYS, TRAINING_NULL_AS,  # noqa: F401
                                  TRAINING_RANGES, DataArguments, EvalArguments, HealthArguments,
                                  IdfTrainingArguments, LossArguments, ModelArguments, OpenSearchArguments,
                                  OptimizerArguments, RegularizerArguments, ServingArguments, TeacherArguments, WindowArguments)
from sparse.config.keys import (FALSE_STRINGS, NULL_STRINGS, TRUE_STRINGS, ConfigLoader, coerce_value,  # noqa: F401
                                key, load_yaml_text)
from sparse.config.resolve import (ResolvedConfig, canonical_values, check_known, check_training_keys,  # noqa: F401
                                   coerce_all, flat_view, forget_notes, note_once, origin_of, resolve, validate, warn_ignored)
from sparse.errors import ConfigError, HelpRequested, UserError, read_user_file, write_atomic  # noqa: F401

"""Errors a user can cause and fix; entry points print their message and exit with status 2."""

from __future__ import annotations

import os
from typing import IO, Any, Callable


class UserError(Exception):
    """Bad input, a missing file, an unreachable server: the message says what and where."""


class ConfigError(UserError, ValueError):
    """A configuration problem; the message names the key and what is expected."""


def read_user_file(path: str, parse: Callable[[IO[str]], Any], parse_errors, not_found: str, malformed: str,
                   error: type = UserError) -> Any:
    """``parse`` applied to the open file ``path`` (UTF-8). A missing file raises ``error(not_found)``,
    a parse error ``error(malformed)``; both messages are formatted with ``path`` (and ``exc``)."""
    if not os.path.isfile(path):
        raise error(not_found.format(path=path))
    with open(path, encoding="utf-8") as f:
        try:
            return parse(f)
        except parse_errors as exc:
            raise error(malformed.format(path=path, exc=exc)) from None

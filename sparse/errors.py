"""Errors a user can cause and fix; entry points print their message and exit with status 2."""


class UserError(Exception):
    """Bad input, a missing file, an unreachable server: the message says what and where."""


class ConfigError(UserError, ValueError):
    """A configuration problem; the message names the key and what is expected."""

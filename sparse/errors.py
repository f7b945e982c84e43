"""Errors a user can cause and fix (entry points print their message and exit with status 2), the
checks of the paths a user gives, and the one way files and folders are written (atomically)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import IO, Any, Callable, Optional


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


class HelpRequested(Exception):
    """``--help`` / ``-h`` was given; ``text`` lists the keys the entry point accepts."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def write_atomic(path: str, write: Callable[[IO[str]], Any]) -> str:
    """Write a results file through ``write(f)`` into a temporary file in the same folder, then
    rename it over ``path``: a crash or a kill never leaves a half-written file under that name."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are shared like any other file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_atomic(path: str, save: Callable[[str], Any], keep_existing: bool = False) -> str:
    """``save(tmp)`` writes a file or a folder at a temporary path beside ``path`` (same extension,
    for writers that add one), which is then renamed over ``path``: no reader, and no other rank,
    ever sees half of it. ``keep_existing``: when another process published ``path`` first, keep
    theirs and drop ours (for caches whose entries are equal by construction)."""
    tmp = f"{path}.tmp{os.getpid()}{os.path.splitext(path)[1]}"
    _remove(tmp)
    try:
        save(tmp)
        if os.path.isdir(path) and not keep_existing:
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError:
            if not (keep_existing and os.path.exists(path)):
                raise
            _remove(tmp)
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)


def write_json(path: str, obj: Any, indent: int = 2, **kwargs) -> str:
    """``obj`` as JSON at ``path``, atomically (``write_atomic``)."""
    return write_atomic(path, lambda f: json.dump(obj, f, indent=indent, **kwargs))


def write_text(path: str, text: str) -> str:
    """``text`` at ``path``, atomically (``write_atomic``)."""
    return write_atomic(path, lambda f: f.write(text))


def file_sha256(path) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_PATH_KINDS = {"file": os.path.isfile, "directory": os.path.isdir, "file or directory": os.path.exists}


def check_input_path(key: str, path: str, kind: str = "file") -> None:
    """Before any work: the ``kind`` of input ``key`` names must exist (the message names key and path)."""
    if not _PATH_KINDS[kind](path):
        raise ConfigError(f"{key}: {kind} not found: {path}")


def check_model_path(path: Optional[str], key: str = "model_name_or_path") -> None:
    """The one rule for a model path: a local directory must hold a model (``config.json``), and a
    value that looks like a path rather than a hub id ``org/name`` must exist."""
    if not path:
        raise ConfigError(f"{key} is required: a checkpoint or model directory, or a hub id")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            inside = sorted(os.listdir(path))[:5]
            raise ConfigError(f"{key}: {path} holds no model (no config.json; it has {inside or 'nothing'}); pass "
                              "a checkpoint-* directory or a saved model")
    elif path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ConfigError(f"{key}: model directory not found: {path}")


def check_output_dir(key: str, path: str) -> None:
    """An output folder that cannot be made or written is one error naming it, before any work:
    a file where the folder should be, a file among its parents, a read-only parent."""
    if not path:
        return
    real = os.path.abspath(path)
    if os.path.exists(real) and not os.path.isdir(real):
        raise UserError(f"{key} {path} is a file, not a folder: choose another path")
    parent = real
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{key} {path} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{key} {path} cannot be written: {parent} is read-only (permission denied)")


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _within(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_output_apart(key: str, output: str, sources: dict[str, Any]) -> None:
    """``output`` must not be, hold or lie inside any of ``sources`` ({key: path}): a command that
    replaces its output folder would otherwise delete its own input (symlinks and relative paths
    are resolved)."""
    if not output:
        return
    out = _real(output)
    for name, source in sources.items():
        if not source or not os.path.exists(str(source)):
            continue
        src = _real(str(source))
        if out == src:
            raise UserError(f"{key} {output} is the {name} {source}: choose another folder (the output is replaced, "
                            f"the input would be lost)")
        if _within(src, out):
            raise UserError(f"{key} {output} holds the {name} {source}: choose a folder outside it")
        if os.path.isfile(src) and _within(out, src):
            raise UserError(f"{key} {output} lies under the file {name} {source}")


def check_replaceable(key: str, output: str, markers: tuple[str, ...]) -> None:
    """An existing, non-empty ``output`` folder that a command would replace must hold one of
    ``markers`` (files it writes itself): a folder it did not write is never deleted."""
    if not output or not os.path.isdir(output) or not os.listdir(output):
        return
    if not any(os.path.exists(os.path.join(output, m)) for m in markers):
        raise UserError(f"{key} {output} exists and was not written by this command (none of {', '.join(markers)} "
                        f"in it): it would be replaced; choose a new or empty folder")

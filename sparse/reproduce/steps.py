"""Resumable pipeline steps: each writes a stamp of its inputs, and a rerun with the same inputs reuses it.

A stamp (``step.json`` in the step's output folder) records a digest of everything the step was
made from and how long it took; a step whose stamp matches and whose output exists is skipped.
Steps run the toolkit's entry points as child processes, so a kill loses at most the step in
progress, and that step resumes from its own saved parts where it has them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from sparse.errors import UserError, write_json
from sparse.paths import REPO_ROOT

STAMP = "step.json"
MODEL_MARKERS = ("sparse_config.json", "config.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def digest(*parts, roots: Sequence[tuple[str, str]] = ()) -> str:
    """A short digest of JSON-serializable parts (the inputs of a step); each (folder, name) of ``roots``
    is written as its name, so that moving the folder keeps the keys of what lies inside it."""
    folders = sorted(((os.path.abspath(folder).rstrip(os.sep), name) for folder, name in roots), key=lambda r: -len(r[0]))
    patterns = [(re.compile(r"(?<![\w.~-])" + re.escape(folder) + r"(?![\w.~-])"), name) for folder, name in folders]
    h = hashlib.sha256()
    for p in parts:
        text = json.dumps(p, sort_keys=True, default=str)
        for pattern, name in patterns:
            text = pattern.sub(name, text)
        h.update(text.encode())
    return h.hexdigest()[:16]


def portable_digest(output: str, cache: str) -> Callable[..., str]:
    """``digest`` with the output folder, the cache and this clone written by name: a pipeline whose
    output, cache or clone moves keeps its steps."""
    return functools.partial(digest, roots=((output, "<output>"), (cache, "<cache>"), (str(REPO_ROOT), "<repo>")))


def file_digest(path: str) -> str:
    """A short digest of a file's bytes, or "missing"."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if os.path.isfile(path) else "missing"


def stamp_ok(directory: str, key: str) -> bool:
    """True when ``directory`` holds a stamp made from the inputs ``key``."""
    try:
        return json.loads(Path(directory, STAMP).read_text()).get("key") == key
    except (OSError, json.JSONDecodeError):
        return False


def write_stamp(directory: str, key: str, seconds: float, **extra) -> None:
    """Record that ``directory`` was made from ``key`` in ``seconds``."""
    os.makedirs(directory, exist_ok=True)
    write_json(os.path.join(directory, STAMP), {"key": key, "seconds": round(seconds, 1), **extra}, indent=1)


def stamp_seconds(directory: str) -> Optional[float]:
    """The seconds recorded in ``directory``'s stamp, or None."""
    try:
        return json.loads(Path(directory, STAMP).read_text()).get("seconds")
    except (OSError, json.JSONDecodeError):
        return None


def run_command(step: str, cmd: list[str], cwd: str, env: dict) -> float:
    """Run one child command, echoed first; a non-zero exit is a UserError naming the step."""
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.time()
    rc = subprocess.call(cmd, cwd=cwd, env=env)
    if rc != 0:
        raise UserError(f"step '{step}' failed (exit status {rc}); its output is above")
    return time.time() - t0


def is_model(folder: str) -> bool:
    """True when ``folder`` holds a saved model (a training step's output): its config and its weights
    (a folder whose weights were removed, or copied without them, is not one)."""
    def has(names):
        return any(os.path.isfile(os.path.join(folder, m)) for m in names)
    return has(MODEL_MARKERS) and has(WEIGHT_FILES)


def visible_gpus() -> int:
    """CUDA devices this process sees (0 without a usable torch/CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable torch/CUDA means CPU
        return 0


def launcher(nproc: int, script: str) -> list[str]:
    """``torchrun`` over the GPUs, plain python on CPU (one process)."""
    if nproc >= 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}", script]
    return [sys.executable, script]

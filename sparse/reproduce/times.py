"""Wall times of a grid run's steps, kept in ``<run>/reproduce_times.json`` (seconds per step)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sparse.errors import write_json

TIMES = "reproduce_times.json"
STEPS = ("train", "eval", "stage2 train", "stage2 eval")  # the columns of the aggregate, in order


def read(run_dir: str) -> dict:
    """The recorded seconds per step ({} when none)."""
    try:
        return json.loads(Path(run_dir, TIMES).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def record(run_dir: str, step: str, seconds: float, **extra) -> None:
    """Record ``step``'s wall time (a rerun of the step replaces it) and any ``extra`` facts."""
    data = {**read(run_dir), step: round(seconds, 1), **extra}
    os.makedirs(run_dir, exist_ok=True)
    write_json(os.path.join(run_dir, TIMES), data, indent=1)

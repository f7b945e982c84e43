"""Resumable, shardable work in numbered parts, merged at the end into one ``save_to_disk`` dir.

A long job is cut into parts (a fixed number of queries each, in sorted query order, so the
cut does not depend on the number of processes). Under ``torchrun`` rank r of w does the parts
i with i mod w = r. A finished part is a ``save_to_disk`` directory ``<output>.parts/part-00012``
(written to a temporary name, then renamed: a crash never leaves a half part that looks done).
A rerun skips finished parts; rank 0 waits for every part (through the file system, so no
process group and no collective timeout is involved), concatenates them in order and writes the
final directory with ``num_shards`` arrow files (``data-000xx-of-000NN.arrow``,
``dataset_info.json``, ``state.json``).

``plan.json`` records what the parts were made with; a rerun with other settings is refused
instead of mixing incompatible parts.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Optional

from sparse.corpus.distributed import wait_for_files
from sparse.errors import UserError, save_atomic, write_json


class PartStore:
    """The numbered parts of one resumable job under ``<output>.parts/`` and their merge into ``<output>``."""

    def __init__(self, output: str):
        self.output = os.path.normpath(output)
        self.root = self.output + ".parts"

    def part_dir(self, i: int) -> str:
        """The folder of part ``i``."""
        return os.path.join(self.root, f"part-{i:05d}")

    def is_done(self, i: int) -> bool:
        """Whether part ``i`` is finished."""
        return os.path.isfile(os.path.join(self.part_dir(i), "state.json"))

    def finished_parts(self) -> list[str]:
        """The folder names of the finished parts."""
        return sorted(n for n in os.listdir(self.root) if n.startswith("part-") and "." not in n
                      and self.is_done(int(n[5:]))) if os.path.isdir(self.root) else []

    def check_plan(self, plan: dict) -> None:
        """Create ``plan.json`` or make sure the existing parts were made with the same plan."""
        os.makedirs(self.root, exist_ok=True)
        path = os.path.join(self.root, "plan.json")
        normalized = json.loads(json.dumps(plan, sort_keys=True, default=str))
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
            if old != normalized and self.finished_parts():
                diff = sorted(k for k in set(old) | set(normalized) if old.get(k) != normalized.get(k))
                raise UserError(f"{self.root} holds parts of a run with other settings ({diff}); "
                                f"pass --overwrite true to start over")
            if old == normalized:
                return
        write_json(path, normalized, sort_keys=True)  # a new plan, or an old one no part was finished with

    def save(self, i: int, dataset, stats: dict) -> None:
        """Part ``i``: its rows and stats, published at once (a half-written part is never seen)."""
        def save(tmp: str) -> None:
            dataset.save_to_disk(tmp, num_shards=1 if not len(dataset) else None)  # an empty part: 1 empty shard
            write_json(os.path.join(tmp, "part_stats.json"), stats, indent=None)

        save_atomic(self.part_dir(i), save)

    def load(self, i: int):
        """The rows of part ``i``."""
        from datasets import load_from_disk

        return load_from_disk(self.part_dir(i))

    def stats(self, i: int) -> dict:
        """The stats of part ``i``."""
        with open(os.path.join(self.part_dir(i), "part_stats.json"), encoding="utf-8") as f:
            return json.load(f)

    def wait_all(self, n_parts: int, timeout: float = 7 * 24 * 3600.0, poll: float = 2.0) -> None:
        """Wait until parts 0..n-1 are finished (by any rank)."""
        wait_for_files([os.path.join(self.part_dir(i), "state.json") for i in range(n_parts)], timeout,
                       f"the parts of {self.root}", poll=poll)

    def merge(self, n_parts: int, num_shards: Optional[int] = None):
        """Concatenate parts 0..n-1 in order into ``output``; returns the merged dataset."""
        from datasets import concatenate_datasets

        parts = [self.load(i) for i in range(n_parts)]
        merged = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        if os.path.isdir(self.output):
            shutil.rmtree(self.output)
        shards = num_shards or None
        if shards is not None or not len(merged):
            shards = max(1, min(int(shards or 1), len(merged)))
        merged.save_to_disk(self.output, num_shards=shards)
        return merged

    def remove(self) -> None:
        """Delete every part (once merged, or to start over)."""
        if os.path.isdir(self.root):
            shutil.rmtree(self.root)


def assigned_parts(n_parts: int, rank: int, world: int) -> list[int]:
    """The parts rank ``rank`` of ``world`` does: i with i mod world = rank."""
    return list(range(rank, n_parts, world))

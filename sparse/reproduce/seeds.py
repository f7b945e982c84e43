"""The seed phase of a preset: each method's runs nearest given FLOPS, repeated with more seeds.

Once every frontier run of a method is evaluated, the run whose measured FLOPS is nearest each
of ``seeds.near_flops`` (``frontier.nearest``: by FLOPS only, never by NDCG@10) runs again with
each seed of ``seeds.values``: ``<block>/<run>_seed<N>``, the same config with ``seed: N``, its
``parent`` the frontier run, so the aggregate groups the repeats with the run they repeat.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Optional

from sparse.reproduce.frontier import nearest


def picks(runs, flops: dict[str, Optional[float]], near: list[float]) -> dict[str, dict[float, str]]:
    """{method: {target FLOPS: run key}} for the methods whose frontier runs all have a FLOPS."""
    by_method: dict[str, list] = {}
    for run in runs:
        if run.parent is None:
            by_method.setdefault(run.method, []).append(run)
    out = {}
    for method, members in by_method.items():
        if any(flops.get(r.key) is None for r in members):
            continue  # the method's frontier is not complete yet: the nearest run could still change
        points = [(r.key, flops[r.key]) for r in members]
        out[method] = {f: nearest(points, f) for f in near}
    return out


def waiting(runs, flops: dict[str, Optional[float]]) -> list[str]:
    """The methods whose frontier runs are not all evaluated yet (their repeats are not made yet)."""
    return list(dict.fromkeys(r.method for r in runs if r.parent is None and flops.get(r.key) is None))


def seed_run(run, seed: int, output_root: str):
    """``run`` repeated with ``seed``: its own name, folder and config file."""
    name = f"{run.name}_seed{seed}"
    out_dir = os.path.join(output_root, "runs", run.block, name)
    values = {**run.values, "seed": seed, "output_dir": out_dir}
    return replace(run, name=name, config_path=os.path.join(output_root, "configs", run.block, f"{name}.yaml"),
                   output_dir=out_dir, values=values, parent=run.name)


def seed_runs(runs, flops: dict[str, Optional[float]], spec: dict, output_root: str) -> list:
    """The repeats the seed phase adds, in the order of ``runs`` (each picked run once)."""
    chosen = {key for targets in picks(runs, flops, list(spec.get("near_flops") or [])).values()
              for key in targets.values()}
    return [seed_run(r, int(s), output_root) for r in runs if r.key in chosen for s in spec.get("values") or []]

"""A method's FLOPS-NDCG@10 frontier, read at a given FLOPS, and the spread of repeated seeds.

The frontier of a method is the upper envelope of its runs: the runs sorted by FLOPS, keeping
each run that scores higher than every cheaper one (``evaluation.plots.pareto_front``, the line
of the Pareto plot). Its value at FLOPS ``f``:

* out of range (None) when ``f`` lies outside the FLOPS span of the method's runs;
* between two frontier runs, the straight line between them:
  ``y = y0 + (y1 - y0) * (f - x0) / (x1 - x0)``;
* past the last frontier run (a costlier run exists but scores lower), that run's NDCG@10:
  the best the method reaches at that cost or less.

Worked example: runs (0.5, 0.60), (1.5, 0.70), (2.5, 0.65); frontier (0.5, 0.60), (1.5, 0.70);
at 1.0: 0.65; at 2.0: 0.70; at 0.4 or 2.6: out of range.
"""

from __future__ import annotations

import statistics
from typing import Optional, Sequence

from sparse.evaluation.plots import pareto_front


def at_flops(points: Sequence[tuple[float, float]], flops: float) -> Optional[float]:
    """NDCG@10 on the frontier of ``points`` ((FLOPS, NDCG@10) pairs) at ``flops``; None out of range."""
    if not points:
        return None
    xs = [x for x, _ in points]
    if not min(xs) <= flops <= max(xs):
        return None
    front = pareto_front(points)  # starts at the cheapest run, FLOPS strictly increasing
    for (x0, y0), (x1, y1) in zip(front, front[1:]):
        if flops <= x1:
            return y0 + (y1 - y0) * (flops - x0) / (x1 - x0)
    return front[-1][1]  # past the last frontier run


def nearest(points: Sequence[tuple[str, float]], flops: float) -> Optional[str]:
    """The name whose FLOPS is nearest ``flops`` (ties: the cheaper, then the first name); None if none."""
    if not points:
        return None
    return min(points, key=lambda p: (abs(p[1] - flops), p[1], p[0]))[0]


def spread(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation and minimum of repeated seeds' values."""
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values)}

"""Wall time of ``python -m sparse.adapt`` on a corpus, step by step, against the 45-minute budget.

    python bench/adapt.py                                   # SciFact, label-free, 2 threads, fresh output
    python bench/adapt.py --labels auto --threads 1 --output output/bench-adapt/lab

Runs the command once in a child process with a fresh corpus-vector cache (so every encode is
counted), then reads its ``report/adapt_results.json``: seconds per step, seconds per stage-1
training step, the whole run and the ratio to the budget. Writes ``<output>/bench_adapt.json``.
There is no baseline to compare with: no other toolkit adapts a sparse model to a corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 45 * 60


def main() -> int:
    """Run the adaptation once and print its per-step timings."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=None, help="BEIR-layout folder (default: SciFact, from sparse.assets)")
    p.add_argument("--labels", default="none", choices=("none", "auto"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default=str(ROOT / "output" / "bench-adapt" / "lf"))
    p.add_argument("--extra", nargs="*", default=[], help="more arguments for sparse.adapt (key=value ...)")
    args = p.parse_args()
    if args.corpus is None:
        sys.path.insert(0, str(ROOT))
        from sparse.assets import beir_dataset

        args.corpus = str(beir_dataset("scifact"))
    if os.path.exists(args.output):
        print(f"error: {args.output} exists; the benchmark times a fresh run (choose another --output)",
              file=sys.stderr)
        return 2
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "sparse.adapt", args.corpus, "--labels", args.labels, "--output", args.output,
           "--cache_dir", os.path.join(args.output, "cache"), *args.extra]
    print("+", " ".join(cmd), flush=True)
    t0 = time.time()
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    wall = time.time() - t0
    if rc != 0:
        print(f"error: sparse.adapt exited with {rc}", file=sys.stderr)
        return 1
    res = json.load(open(os.path.join(args.output, "report", "adapt_results.json")))
    timings = res["timings_s"]
    stage1 = timings.get("stage 1: document side")
    steps = next((int(a.split("=")[1]) for a in args.extra if a.startswith("encoder_steps=")), 1500)
    out = {"command": cmd, "threads": args.threads, "load_average_after": os.getloadavg(),
           "wall_s": round(wall, 1), "budget_s": BUDGET_S, "ratio_to_budget": round(wall / BUDGET_S, 3),
           "steps_s": timings, "stage1_s_per_step": round(stage1 / steps, 3) if stage1 else None,
           "chosen": res["chosen"], "results": res["results"]}
    Path(args.output, "bench_adapt.json").write_text(json.dumps(out, indent=2) + "\n")
    print("\n| step | seconds |\n|---|---:|")
    for step, secs in timings.items():
        print(f"| {step} | {secs:.0f} |")
    print(f"| **whole run** | **{wall:.0f}** ({wall / 60:.1f} min, {wall / BUDGET_S:.2f}x the 45-min budget) |")
    if stage1:
        print(f"stage 1: {stage1 / steps:.2f} s per training step ({steps} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

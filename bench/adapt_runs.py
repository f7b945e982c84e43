"""What the adaptation benchmarks share (``bench/adapt_cv.py``, ``bench/adapt_seeds.py``): stage-1
variants from the command line, the two training stages of ``sparse.adapt`` and their evaluations,
each run logged beside its output and skipped when its output is there."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparse.adapt.stages import encoder_args, query_side_args  # noqa: E402
from sparse.evaluation.compare import eval_folder, load_run, query_values  # noqa: E402


def fail(message: str) -> None:
    """One clear error, exit 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def add_run_arguments(p: argparse.ArgumentParser, output: str) -> None:
    """The options both benchmarks take: variants, parallel runs, threads, output folder, dry run."""
    p.add_argument("--variant", action="append", default=[], help="NAME:key=value[,key=value] stage-1 overrides")
    p.add_argument("--lanes", type=int, default=2, help="runs at once")
    p.add_argument("--threads", type=int, default=1, help="threads per run")
    p.add_argument("--output", default=str(ROOT / "output" / output))
    p.add_argument("--dry", action="store_true", help="2 training steps, 32-token corpus: checks the wiring")


def parse_run_arguments(p: argparse.ArgumentParser) -> tuple[argparse.Namespace, dict[str, list[str]]]:
    """The parsed command line and its variants (``parse_variants``); bad lanes or threads are one clear error."""
    args = p.parse_args()
    if args.lanes < 1 or args.threads < 1:
        fail("--lanes and --threads must be at least 1")
    return args, parse_variants(args.variant)


def run_all(job, jobs: list[tuple], lanes: int) -> None:
    """``job(*args)`` for every tuple of ``jobs``, ``lanes`` at a time; a failed run is one clear error."""
    try:
        with ThreadPoolExecutor(lanes) as pool:
            list(pool.map(lambda args: job(*args), jobs))
    except RuntimeError as exc:
        fail(str(exc))


def parse_variants(texts: list[str]) -> dict[str, list[str]]:
    """``name:key=value,key=value`` -> ``{name: [key=value, ...]}``; the recipe comes first."""
    variants = {"recipe": []}
    for text in texts:
        name, _, rest = text.partition(":")
        overrides = [o for o in rest.split(",") if o]
        if not name or name in variants or not overrides or not all("=" in o for o in overrides):
            fail(f"--variant {text!r}: expected NAME:key=value[,key=value] with a new name")
        variants[name] = overrides
    return variants


def query_scores(run: str, dataset: str) -> tuple[dict[str, float], dict]:
    """Per-query NDCG@10 of one evaluation folder, and its document length and FLOPS."""
    loaded = load_run(eval_folder(run), dataset)
    sizes = {k: loaded["result"].get("sparsity", {}).get(k) for k in ("d_length", "flops")}
    if None in sizes.values():
        fail(f"{run}: the evaluation result has no document length or FLOPS")
    return query_values(loaded), sizes


class Stages:
    """The adaptation's training stages and evaluations as child processes of one thread count."""

    def __init__(self, base_model: str, dataset: str, cache: Path, threads: int, dry: bool):
        self.base, self.dataset, self.cache = base_model, dataset, cache
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                    "TOKENIZERS_PARALLELISM": "false"}
        # --dry: two training steps and a 32-token corpus, to check the wiring in seconds
        self.short = ["max_steps=2"] if dry else []
        self.length = ["corpus_max_seq_length=32"] if dry else []
        self.eval_length = ["--corpus_max_seq_length", "32"] if dry else []

    def run(self, cmd: list[str], log: Path) -> None:
        """One command, its output in ``log``; a failure raises RuntimeError naming the log."""
        with open(log, "w") as handle:
            if subprocess.run([sys.executable, *cmd], cwd=ROOT, env=self.env, stdout=handle,
                              stderr=subprocess.STDOUT).returncode:
                raise RuntimeError(f"{cmd[0]} failed: see {log}")

    def train(self, args: list[str], out: Path, seed: int) -> None:
        """One ``train_ir.py`` run unless its model is there."""
        if not (out / "sparse_config.json").exists():
            self.run(["train_ir.py", *args, f"output_dir={out}", f"seed={seed}", f"cache_dir={self.cache}"],
                     Path(f"{out}.log"))

    def evaluate(self, model: Path, out: Path, beir_dir: Path, split: str) -> None:
        """NDCG@10 of ``model`` on ``split`` of the dataset under ``beir_dir``, unless evaluated already."""
        if not list(out.glob("beir_eval*/results/*.json")):
            self.run(["evaluate_beir.py", "--model_name_or_path", str(model), "--output_dir", str(out),
                      "--beir_dir", str(beir_dir), "--beir_datasets", self.dataset, "--eval_split", split,
                      "--cache_dir", str(self.cache), *self.eval_length], Path(f"{out}.log"))

    def query_side_only(self, run: Path, idf: str, idf_rows: Path, where: list[str], seed: int) -> Path:
        """The control: the IDF fitted over the frozen base documents; returns the model."""
        run.mkdir(parents=True, exist_ok=True)
        self.train([*query_side_args(self.base, idf, str(idf_rows)), *where, *self.length], run / "both", seed)
        return run / "both"

    def both_stages(self, run: Path, idf: str, rows_dir: Path, idf_rows: Path, where: list[str],
                    overrides: list[str], seed: int, after_stage_1=None) -> tuple[Path, Path]:
        """Stage 1 with ``overrides`` (then ``after_stage_1(encoder)``), then the IDF fit on ``idf_rows``;
        returns the two models (document side only, both sides)."""
        run.mkdir(parents=True, exist_ok=True)
        self.train([*encoder_args(self.base, idf, str(rows_dir)), *where, *overrides, *self.short], run / "enc", seed)
        if after_stage_1 is not None:
            after_stage_1(run / "enc")
        self.train([*query_side_args(str(run / "enc"), None, str(idf_rows)), *where, *self.length], run / "both", seed)
        return run / "enc", run / "both"


def interval_text(d: Optional[dict]) -> str:
    """``+0.0012 [-0.0030, +0.0051]`` of a ``paired_interval`` result; ``-`` for None."""
    return "-" if d is None else f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"

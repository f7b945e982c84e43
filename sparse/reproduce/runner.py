"""Run the reproduction grid: generate configs, train, evaluate, aggregate; resumable.

``python -m sparse.reproduce.runner [--preset NAME | --smoke] [--only BLOCK,...] [--per_block N]
[--beir_datasets a,b] [--beir_dir D] [--set key=value ...] [--dry_run]``
(``scripts/run_reproduce.sh`` calls it). First the preset's data step (``sparse.reproduce.prepare``),
then for every run of the grid:

1. train with ``torchrun --nproc_per_node=<visible GPUs> train_ir.py <cfg>`` (plain
   ``python train_ir.py <cfg>`` without a GPU), unless the run's final model exists and its
   ``reproduce_train.done`` stamp matches the config (a changed config trains again); an
   interrupted run resumes from its latest ``checkpoint-*``;
2. evaluate the final model with ``evaluate_beir.py --output_dir <run>`` on the chosen
   datasets, unless every dataset already has ``<run>/beir_eval<suffix>/results/<dataset>.json``;
3. with a preset's ``second_stage``: the query-side IDF fit on top of the model, then its
   evaluation (``sparse.reproduce.second_stage``), unless its stamp and results are there;
4. with a preset's ``seeds``: once every run of a method is evaluated, its runs nearest the
   preset's FLOPS again with more seeds (``sparse.reproduce.seeds``), through steps 1-3;
5. at the end (also after failures), aggregate every run into ``results.{json,csv,md}`` and
   ``pareto.png`` under the output root.

The wall time of every step is kept in ``<run>/reproduce_times.json`` (``sparse.reproduce.times``).

A failing run is reported and the next one starts; the exit status is non-zero if any failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from sparse.config import Command, canonical_values, key, load_yaml, run_command, split_overrides
from sparse.errors import UserError, write_json
from sparse.paths import REPO_ROOT
from sparse.reproduce import aggregate as agg
from sparse.reproduce import grid as grid_mod
from sparse.reproduce import second_stage as stage2
from sparse.reproduce import seeds, steps, times
from sparse.reproduce.prepare import prepare
from sparse.reproduce.results import result_path
from sparse.reproduce.steps import launcher, visible_gpus

TRAIN_STAMP = "reproduce_train.done"


def config_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def final_model_dir(run: grid_mod.Run) -> Optional[str]:
    """The trained model: the run's output_dir (final save) or its checkpoint-<max_steps>."""
    candidates = [run.output_dir]
    if run.values.get("max_steps"):
        candidates.append(os.path.join(run.output_dir, f"checkpoint-{run.values['max_steps']}"))
    for c in candidates:
        if steps.is_model(c):
            return c
    return None


def trained_with_this_config(run: grid_mod.Run) -> bool:
    """The run's training stamp exists and names the config it has now."""
    stamp = os.path.join(run.output_dir, TRAIN_STAMP)
    if not os.path.isfile(stamp):
        return False
    try:
        return json.loads(Path(stamp).read_text()).get("config_sha") == config_digest(run.config_path)
    except (OSError, json.JSONDecodeError):
        return False


def is_trained(run: grid_mod.Run) -> bool:
    return final_model_dir(run) is not None and trained_with_this_config(run)


def results_only(run: grid_mod.Run, datasets: list[str]) -> bool:
    """Trained with this config and evaluated, but its model is gone (trained on another machine and only
    its results copied, or its weights deleted for space): done, not trained again."""
    return final_model_dir(run) is None and trained_with_this_config(run) and is_evaluated(run, datasets)


def is_evaluated(run: grid_mod.Run, datasets: list[str], output_dir: Optional[str] = None) -> bool:
    """Every dataset has a result under the run's (or ``output_dir``'s) evaluation folder."""
    return all(os.path.isfile(result_path(agg.eval_dir(run, output_dir), ds)) for ds in datasets)


def latest_checkpoint(output_dir: str) -> Optional[str]:
    steps = []
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else []:
        tail = name[len("checkpoint-"):] if name.startswith("checkpoint-") else ""
        if tail.isdigit() and os.path.isfile(os.path.join(output_dir, name, "trainer_state.json")):
            steps.append(int(tail))
    return os.path.join(output_dir, f"checkpoint-{max(steps)}") if steps else None


def train_command(run: grid_mod.Run, nproc: int) -> list[str]:
    """Train; an interrupted run (checkpoints but no stamp) resumes from its latest checkpoint."""
    cmd = launcher(nproc, "train_ir.py") + [run.config_path]
    ckpt = latest_checkpoint(run.output_dir)
    if ckpt and not os.path.isfile(os.path.join(run.output_dir, TRAIN_STAMP)):
        cmd.append(f"resume_from_checkpoint={ckpt}")
    return cmd


def eval_command(run: grid_mod.Run, datasets: list[str], nproc: int, beir_dir: Optional[str],
                 extra: list[str], model: Optional[str] = None, output_dir: Optional[str] = None) -> list[str]:
    """``evaluate_beir.py`` of the run's model (or ``model``, a second stage's, with its own fitted IDF)."""
    v = canonical_values(run.values)
    cmd = launcher(nproc, "evaluate_beir.py") + [
        "--model_name_or_path", model or final_model_dir(run) or run.output_dir,
        "--output_dir", output_dir or run.output_dir, "--beir_datasets", ",".join(datasets),
    ]
    for name in ("idf_path", "corpus_max_seq_length", "per_device_eval_batch_size"):
        if v.get(name) is not None and not (name == "idf_path" and model):
            cmd += [f"--{name}", str(v[name])]
    if beir_dir or v.get("beir_dir"):
        cmd += ["--beir_dir", beir_dir or v["beir_dir"]]
    return cmd + list(extra)


def _run(cmd: list[str], dry_run: bool) -> int:
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    if dry_run:
        return 0
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return subprocess.call(cmd, cwd=str(REPO_ROOT), env=env)


def _timed(cmd: list[str], dry_run: bool) -> tuple[int, float]:
    t0 = time.time()
    return _run(cmd, dry_run), time.time() - t0


@dataclass
class Plan:
    """How every run of one invocation is trained and evaluated."""

    datasets: Optional[list[str]] = None
    beir_dir: Optional[str] = None
    nproc: int = 0
    eval_args: list = field(default_factory=list)
    dry_run: bool = False
    second_stage: Optional[dict] = None  # the preset's second_stage section
    second_set: dict = field(default_factory=dict)  # --second_stage_set
    jobs: int = 1  # runs at once (CPU)


def new_summary() -> dict:
    """Counters of one invocation, by what happened to each run."""
    return {"trained": [], "evaluated": [], "skipped_train": [], "skipped_eval": [], "stage2": [],
            "skipped_stage2": [], "failed": []}


def train_and_evaluate(run: grid_mod.Run, head: str, plan: Plan, summary: dict) -> bool:
    """Train the run (unless done), evaluate it (unless done); False when a step failed."""
    ds = agg.run_datasets(run, plan.datasets)
    if results_only(run, ds):
        print(f"{head}: trained and evaluated already (its model is not here), skipping it", flush=True)
        summary["skipped_train"].append(run.key)
        summary["skipped_eval"].append(run.key)
        return True
    if is_trained(run):
        print(f"{head}: trained already, skipping training", flush=True)
        summary["skipped_train"].append(run.key)
    else:
        print(f"{head}: training", flush=True)
        cmd = train_command(run, plan.nproc)
        resumed = next((c.split("=", 1)[1] for c in cmd if c.startswith("resume_from_checkpoint=")), None)
        rc, secs = _timed(cmd, plan.dry_run)
        if rc != 0 or (not plan.dry_run and final_model_dir(run) is None):
            why = f"exit status {rc}" if rc else f"no model found in {run.output_dir}"
            print(f"{head}: training FAILED ({why})", file=sys.stderr, flush=True)
            summary["failed"].append(f"{run.key}: training {why}")
            return False
        if not plan.dry_run:
            write_json(os.path.join(run.output_dir, TRAIN_STAMP),
                       {"config_sha": config_digest(run.config_path), "seconds": round(secs, 1),
                        "model": final_model_dir(run)}, indent=None)
            times.record(run.output_dir, "train", secs, train_resumed_from=resumed)
        summary["trained"].append(run.key)
    if is_evaluated(run, ds) and run.key not in summary["trained"]:
        print(f"{head}: evaluated already on {','.join(ds)}, skipping evaluation", flush=True)
        summary["skipped_eval"].append(run.key)
        return True
    print(f"{head}: evaluating on {','.join(ds)}", flush=True)
    rc, secs = _timed(eval_command(run, ds, plan.nproc, plan.beir_dir, plan.eval_args), plan.dry_run)
    if rc != 0 or (not plan.dry_run and not is_evaluated(run, ds)):
        why = f"exit status {rc}" if rc else "results missing after evaluation"
        print(f"{head}: evaluation FAILED ({why})", file=sys.stderr, flush=True)
        summary["failed"].append(f"{run.key}: evaluation {why}")
        return False
    if not plan.dry_run:
        times.record(run.output_dir, "eval", secs)
    summary["evaluated"].append(run.key)
    return True


def second_stage(run: grid_mod.Run, head: str, plan: Plan, summary: dict) -> None:
    """The IDF fit on top of the run's model, then its evaluation (each unless done)."""
    ds = agg.run_datasets(run, plan.datasets)
    folder = stage2.stage_dir(run)
    model = final_model_dir(run)
    if model is None and not plan.dry_run:
        if not is_evaluated(run, ds, folder):
            print(f"{head}: second stage not possible, the run's model is not here", file=sys.stderr, flush=True)
            summary["failed"].append(f"{run.key}: second stage needs the run's model, which is not here")
        return
    model = model or run.output_dir
    cmd = stage2.train_command(run, model, plan.second_stage, plan.second_set, plan.beir_dir, plan.nproc)
    key = stage2.stage_key(cmd, plan.second_stage["config"], os.path.join(run.output_dir, TRAIN_STAMP))
    if stage2.is_trained(run, key) and is_evaluated(run, ds, folder):
        print(f"{head}: second stage done already, skipping it", flush=True)
        summary["skipped_stage2"].append(run.key)
        return
    print(f"{head}: second stage (query-side IDF fit) -> {folder}", flush=True)
    if not plan.dry_run and os.path.isdir(folder):
        shutil.rmtree(folder)  # an older or unfinished attempt: the fit takes minutes, it starts afresh
    rc, secs = _timed(cmd, plan.dry_run)
    if rc != 0 or (not plan.dry_run and not steps.is_model(folder)):
        why = f"exit status {rc}" if rc else f"no model found in {folder}"
        print(f"{head}: second stage FAILED ({why})", file=sys.stderr, flush=True)
        summary["failed"].append(f"{run.key}: second stage {why}")
        return
    if not plan.dry_run:
        steps.write_stamp(folder, key, secs)
        times.record(run.output_dir, "stage2 train", secs)
    rc, secs = _timed(eval_command(run, ds, plan.nproc, plan.beir_dir, plan.eval_args, model=folder,
                                   output_dir=folder), plan.dry_run)
    if rc != 0 or (not plan.dry_run and not is_evaluated(run, ds, folder)):
        why = f"exit status {rc}" if rc else "results missing after evaluation"
        print(f"{head}: second-stage evaluation FAILED ({why})", file=sys.stderr, flush=True)
        summary["failed"].append(f"{run.key}: second-stage evaluation {why}")
        return
    if not plan.dry_run:
        times.record(run.output_dir, "stage2 eval", secs)
    summary["stage2"].append(run.key)


def run_all(runs: list[grid_mod.Run], plan: Plan, summary: dict) -> None:
    """Every run in order (``plan.jobs`` at once): train, evaluate, then its second stage (a preset's);
    a failure skips to the next run."""
    def one(i: int, run: grid_mod.Run) -> None:
        head = f"[{i}/{len(runs)}] {run.key} ({run.method})"
        if train_and_evaluate(run, head, plan, summary) and plan.second_stage:
            second_stage(run, head, plan, summary)

    if plan.jobs <= 1:
        for i, run in enumerate(runs, 1):
            one(i, run)
        return
    from concurrent.futures import ThreadPoolExecutor

    # each run is a chain of child processes; the threads only wait on them (list appends are atomic)
    with ThreadPoolExecutor(max_workers=plan.jobs) as pool:
        for future in [pool.submit(one, i, run) for i, run in enumerate(runs, 1)]:
            future.result()


def seed_phase(runs: list[grid_mod.Run], output_root: str, spec: dict, plan: Plan) -> list[grid_mod.Run]:
    """The repeats of each complete method's runs nearest the preset's FLOPS, added to the manifest."""
    flops = {r.key: agg.run_row(r, agg.run_datasets(r, plan.datasets))["FLOPS"] for r in runs}
    for method, targets in seeds.picks(runs, flops, list(spec.get("near_flops") or [])).items():
        print("seeds: " + method + ": " + ", ".join(f"FLOPS {f} -> {k} ({flops[k]:.3f})" for f, k in targets.items()),
              flush=True)
    extra = seeds.seed_runs(runs, flops, spec, output_root)
    waiting = seeds.waiting(runs, flops)
    if waiting:
        print(f"seeds: waiting for every run of {waiting} to be evaluated", flush=True)
    for run in extra:
        grid_mod.validate(run)
        if not plan.dry_run:
            grid_mod.write_config(run, f"# generated by sparse.reproduce.runner's seed phase: {run.parent} of block "
                                       f"{run.block} with seed {run.seed}. Edit the grid files, not this one.\n")
    if extra and not plan.dry_run:
        grid_mod.add_to_manifest(output_root, extra)
    return extra


def run_grid(runs: list[grid_mod.Run], output_root: str, datasets: Optional[list[str]] = None,
             beir_dir: Optional[str] = None, nproc: Optional[int] = None, eval_args: Optional[list[str]] = None,
             dry_run: bool = False, section: Optional[dict] = None, second_set: Optional[dict] = None,
             jobs: int = 1) -> dict:
    """Train and evaluate every run that is not done yet (then a preset's seed phase), then aggregate."""
    section = section or {}
    stage = section.get("second_stage")
    if stage:  # its keys may name the preset's folders (${output_root}) like the runs' keys do
        stage = {**stage, "set": grid_mod.substitute(stage.get("set") or {}, {"output_root": output_root},
                                                     grid_mod._resolvers(fetch=not dry_run))}
    plan = Plan(datasets, beir_dir, visible_gpus() if nproc is None else nproc, list(eval_args or []), dry_run,
                stage, dict(second_set or {}), jobs)
    summary = new_summary()
    t_start = time.time()
    if section.get("seeds"):  # repeats made by an earlier call join the manifest now, so an aggregate sees them
        seed_phase(runs, output_root, section["seeds"], plan)
    run_all(runs, plan, summary)
    if section.get("seeds"):
        extra = seed_phase(runs, output_root, section["seeds"], plan)
        print(f"seeds: {len(extra)} repeats", flush=True)
        run_all(extra, plan, summary)
    summary["seconds"] = round(time.time() - t_start, 1)
    if not dry_run:
        summary["aggregate"] = agg.aggregate(output_root, datasets)
    return summary


@dataclass
class RunnerArguments(grid_mod.GridArguments):
    """Options of ``python -m sparse.reproduce.runner``: the grid's selection plus how to run it."""

    beir_datasets: Optional[str] = key(None, "Comma list to evaluate on; null: each config's beir_datasets (the "
                                             "smoke grid uses scifact).")
    beir_dir: Optional[str] = key(None, "Directory holding the BEIR datasets.")
    nproc: Optional[int] = key(None, "Processes per run; null: the visible GPUs; 0: CPU, no torchrun.", low=0)
    second_stage_set: list[str] = key(help="KEY=VALUE overrides of the second stage's training (a preset with "
                                           "second_stage), e.g. train_file_dir=DIR.", factory=list, nargs="*")
    eval_args: list[str] = key(help="Extra arguments passed to evaluate_beir.py (must come last).", factory=list,
                               nargs="...")
    jobs: int = key(1, "Runs trained at once, each a single process with cores/jobs threads (unless "
                       "OMP_NUM_THREADS is set): on a CPU, or sharing one GPU with --nproc 0; torchrun runs "
                       "(nproc >= 1) take every GPU: 1.", low=1)
    dry_run: bool = key(False, "Print the commands, run nothing.")


COMMAND = Command("python -m sparse.reproduce.runner", "Train, evaluate and aggregate the l0 paper's grid "
                  "(resumable).", options=RunnerArguments)


def main(argv=None) -> int:
    """``python -m sparse.reproduce.runner``: the one command-line reader, then ``reproduce``."""
    return run_command(COMMAND, reproduce, argv)


def reproduce(args: RunnerArguments) -> int:
    """Train and evaluate the selected runs (or print the commands), then aggregate."""
    os.chdir(REPO_ROOT)
    section = grid_mod.preset_section(load_yaml(args.grid), grid_mod.preset_of(args), args.grid)
    second_set = split_overrides(args.second_stage_set)
    if second_set and not section.get("second_stage"):
        raise UserError("--second_stage_set needs a preset with a second_stage section (e.g. --preset scifact)")
    nproc = visible_gpus() if args.nproc is None else args.nproc
    if args.jobs > 1 and nproc > 0:
        raise UserError(f"--jobs {args.jobs} runs several single-process runs at once; a torchrun run (nproc {nproc}) "
                        f"takes every GPU: use --jobs 1, or --nproc 0 for single-process runs that share the GPU")
    if args.jobs > 1:  # every child process inherits its share of the cores
        threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, threads)
    runs, root = grid_mod.runs_from_args(args, write=not args.dry_run)
    datasets = args.beir_datasets.split(",") if args.beir_datasets else None
    beir_dir = prepare(section, root, runs, args.beir_dir, nproc, args.dry_run)
    print(f"reproduce: {len(runs)} runs under {root}; "
          f"{'GPUs: ' + str(visible_gpus()) if args.nproc is None else 'nproc: ' + str(args.nproc)}", flush=True)
    summary = run_grid(runs, root, datasets, beir_dir, nproc, args.eval_args, args.dry_run, section, second_set,
                       args.jobs)
    if "aggregate" in summary:
        out = summary["aggregate"]
        print(Path(out["markdown"]).read_text())
        for missing in out["missing"]:
            print(f"missing: {missing}", file=sys.stderr)
        print(f"reproduce: table {out['csv']} and {out['markdown']}"
              + (f", plot {out['png']}" if "png" in out else ""))
    if args.dry_run:
        print(f"reproduce (dry run, nothing was run or written): would train {len(summary['trained'])}, "
              f"evaluate {len(summary['evaluated'])}; {len(summary['skipped_train'])} trained and "
              f"{len(summary['skipped_eval'])} evaluated already")
        return 0
    print(f"reproduce: trained {len(summary['trained'])}, evaluated {len(summary['evaluated'])}, "
          f"reused {len(summary['skipped_train'])} trained / {len(summary['skipped_eval'])} evaluated, "
          f"failed {len(summary['failed'])}, {summary['seconds']} s"
          + (f"; second stage: ran {len(summary['stage2'])}, reused {len(summary['skipped_stage2'])}"
             if section.get("second_stage") else ""))
    for f in summary["failed"]:
        print(f"failed: {f}", file=sys.stderr)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

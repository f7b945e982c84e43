"""A small BEIR-format subset of a dataset, for smoke runs and tests.

``python -m sparse.reproduce.subset --source <beir>/scifact --output data/beir/scifact_small
[--queries 20] [--distractors 200] [--splits test,train]``

Keeps the first ``queries`` queries (by id) of each split that have qrels, every document they
judge, and ``distractors`` further documents (corpus order), so retrieval is not trivial.
The result is a normal ``<dir>/{corpus.jsonl, queries.jsonl, qrels/<split>.tsv}`` dataset that
``evaluate_beir.py --beir_dir`` and ``demo_train_data.py --beir_dir`` read.
"""

from __future__ import annotations

import csv
import json
import os
import sys

from dataclasses import dataclass

from sparse.config import Command, key, run_command
from sparse.errors import UserError


def _read_qrels(path: str) -> list[tuple[str, str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows:
        raise UserError(f"{path} is empty")
    return [tuple(r[:3]) for r in rows[1:] if len(r) >= 3]


def _id_key(x: str):
    return (0, int(x), x) if x.isdigit() else (1, 0, x)


def make_subset(source: str, output: str, queries: int = 20, distractors: int = 200,
                splits: tuple[str, ...] = ("test",)) -> dict:
    """Write the subset; returns counts ``{"docs", "queries", "<split>_queries", ...}``."""
    if not os.path.isfile(os.path.join(source, "corpus.jsonl")):
        raise UserError(f"{source} is not a BEIR dataset directory (no corpus.jsonl)")
    os.makedirs(os.path.join(output, "qrels"), exist_ok=True)
    counts: dict = {}
    keep_q: set[str] = set()
    keep_d: set[str] = set()
    for split in splits:
        path = os.path.join(source, "qrels", f"{split}.tsv")
        if not os.path.isfile(path):
            raise UserError(f"{source} has no qrels for split {split!r} ({path})")
        qrels = _read_qrels(path)
        chosen = set(sorted({q for q, _, _ in qrels}, key=_id_key)[:queries])
        rows = [r for r in qrels if r[0] in chosen]
        keep_q |= chosen
        keep_d |= {d for _, d, _ in rows}
        with open(os.path.join(output, "qrels", f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines("\t".join(r) + "\n" for r in rows)
        counts[f"{split}_queries"] = len(chosen)
    n_docs = extra = 0
    with open(os.path.join(source, "corpus.jsonl"), encoding="utf-8") as src, \
            open(os.path.join(output, "corpus.jsonl"), "w", encoding="utf-8") as out:
        for line in src:
            if not line.strip():
                continue
            doc_id = str(json.loads(line)["_id"])
            if doc_id in keep_d or extra < distractors:
                if doc_id not in keep_d:
                    extra += 1
                out.write(line if line.endswith("\n") else line + "\n")
                n_docs += 1
    n_q = 0
    with open(os.path.join(source, "queries.jsonl"), encoding="utf-8") as src, \
            open(os.path.join(output, "queries.jsonl"), "w", encoding="utf-8") as out:
        for line in src:
            if line.strip() and str(json.loads(line)["_id"]) in keep_q:
                out.write(line if line.endswith("\n") else line + "\n")
                n_q += 1
    counts.update(docs=n_docs, queries=n_q)
    return counts


@dataclass(kw_only=True)
class SubsetArguments:
    """Options of ``python -m sparse.reproduce.subset``."""

    source: str = key(help="A BEIR dataset directory.")
    output: str = key(help="Where the subset is written.")
    queries: int = key(20, "Queries kept per split.", low=1)
    distractors: int = key(200, "Unjudged documents kept.", low=0)
    splits: str = key("test", "Comma list of qrels splits to keep.")


COMMAND = Command("python -m sparse.reproduce.subset", __doc__.splitlines()[0], options=SubsetArguments)


def main(argv=None) -> int:
    """``python -m sparse.reproduce.subset``: the one command-line reader, then ``write``."""
    return run_command(COMMAND, write, argv)


def write(a: SubsetArguments) -> int:
    """Write the subset and print its counts."""
    counts = make_subset(a.source, a.output, a.queries, a.distractors, tuple(a.splits.split(",")))
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

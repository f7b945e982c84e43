"""The training dataset of an adaptation: a BEIR-layout folder over the user's corpus.

``<out>/data/<name>/`` holds ``corpus.jsonl`` (a link to the user's file), ``queries.jsonl`` (the
pseudo-queries and, when labels are used, the user's train queries), one train split per source of
queries (``qrels/train_labelled.tsv``, ``qrels/train_pseudo.tsv``: the query side is fitted on the
labelled ones alone when there are any), ``qrels/dev.tsv`` (the queries that choose settings, never trained on) and
``split.json`` (which query is which, the seeds and the counts), so a run can be reproduced.

Label-free, the held-out pseudo-queries are matched against ``<out>/dev/<name>/``: the same
corpus with each dev query's own text cut out of the document it came from
(``write_cut_dev_corpus``). Uncut, a pseudo-query finds its document through the words it copies
(NDCG@10 near 0.99 for every model) and the dev split cannot rank the trained variants.

A pseudo-query's qrels line names the document it was made from: provenance, not a human label.
In label-free mode the user's queries and qrels are never opened.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Optional, Sequence

from sparse.data.beir import load_beir, read_jsonl, read_qrels_tsv
from sparse.datagen.pseudo_queries import Document, PseudoQuery, cut_from_document
from sparse.errors import UserError, write_atomic, write_json, write_text

PSEUDO_PREFIX = "pq-"
SOURCES = ("labelled", "pseudo")  # train split ``train_<source>`` per source of queries
DEV_SEED = 20240613  # fixed: the dev split of a dataset never changes with the training seed


def read_documents(corpus_path: str) -> list[Document]:
    """The documents of a BEIR ``corpus.jsonl`` (id, title, text), in file order."""
    docs = []
    for _, row in read_jsonl(corpus_path):
        docs.append(Document(str(row["_id"]), row.get("title") or "", row.get("text") or ""))
    if not docs:
        raise UserError(f"{corpus_path} holds no documents")
    return docs


def dev_split(query_ids: Sequence[str], n_dev: int) -> tuple[list[str], list[str]]:
    """(train ids, dev ids): a fixed ``n_dev`` of the sorted ids, drawn with ``DEV_SEED``."""
    ids = sorted(query_ids)
    if not 0 <= n_dev < len(ids):
        raise UserError(f"a dev split of {n_dev} queries needs more than {n_dev} queries; there are {len(ids)}")
    order = ids[:]
    random.Random(DEV_SEED).shuffle(order)
    dev = set(order[:n_dev])
    return [q for q in ids if q not in dev], sorted(dev)


def labelled_train(corpus_dir: str, split: str = "train") -> Optional[tuple[dict, dict]]:
    """(queries, qrels) of the user's labelled split, or None when the folder has none."""
    if not os.path.isfile(os.path.join(corpus_dir, "qrels", f"{split}.tsv")):
        return None
    _, queries, qrels = load_beir(corpus_dir, split)
    return queries, qrels


@dataclass
class AdaptData:
    """What was written: the folder, its query counts and the dev split's origin."""

    folder: str
    n_train: int
    n_dev: int
    n_pseudo: int
    n_labelled: int
    dev_from: str


def _write_queries(path: str, queries: dict[str, str]) -> None:
    write_atomic(path, lambda f: f.writelines(json.dumps({"_id": q, "text": queries[q]}, ensure_ascii=False) + "\n"
                                              for q in sorted(queries)))


def _qrels_lines(qrels: dict[str, dict[str, int]]) -> str:
    lines = ["query-id\tcorpus-id\tscore"]
    for qid in sorted(qrels):
        lines += [f"{qid}\t{did}\t{grade}" for did, grade in sorted(qrels[qid].items())]
    return "\n".join(lines) + "\n"


def write_adapt_data(folder: str, corpus_path: str, pseudo: Sequence[PseudoQuery],
                     labelled: Optional[tuple[dict, dict]], n_dev: int, info: dict) -> AdaptData:
    """Write the adaptation dataset; the dev queries are labelled ones when there are labels,
    else held-out pseudo-queries (the last ``n_dev`` generated)."""
    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    link = os.path.join(folder, "corpus.jsonl")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.path.abspath(corpus_path), link)
    queries: dict[str, str] = {}
    train_qrels: dict[str, dict[str, int]] = {}
    dev_qrels: dict[str, dict[str, int]] = {}
    pseudo_ids = [f"{PSEUDO_PREFIX}{i:06d}" for i in range(len(pseudo))]
    for qid, q in zip(pseudo_ids, pseudo):
        queries[qid] = q.text
    if labelled is not None:
        lq, lqrels = labelled
        clash = [q for q in lq if q.startswith(PSEUDO_PREFIX)]
        if clash:
            raise UserError(f"query ids starting with {PSEUDO_PREFIX!r} are reserved for pseudo-queries: {clash[:3]}")
        fit_ids, dev_ids = dev_split(list(lqrels), n_dev)
        for qid in fit_ids + dev_ids:
            queries[qid] = lq[qid]
        train_qrels.update({q: lqrels[q] for q in fit_ids})
        dev_qrels.update({q: lqrels[q] for q in dev_ids})
        dev_from = "labelled"
        held = 0
    else:
        held = n_dev
        if len(pseudo) <= held:
            raise UserError(f"{len(pseudo)} pseudo-queries cannot spare {held} for a dev split")
        dev_from = "pseudo"
    for i, (qid, q) in enumerate(zip(pseudo_ids, pseudo)):
        target = dev_qrels if i >= len(pseudo) - held else train_qrels
        target[qid] = {q.doc_id: 1}
    _write_queries(os.path.join(folder, "queries.jsonl"), queries)
    for source in SOURCES:
        part = {q: r for q, r in train_qrels.items() if q.startswith(PSEUDO_PREFIX) == (source == "pseudo")}
        if part:
            write_text(os.path.join(folder, "qrels", f"train_{source}.tsv"), _qrels_lines(part))
    write_text(os.path.join(folder, "qrels", "dev.tsv"), _qrels_lines(dev_qrels))
    n_labelled = sum(1 for q in train_qrels if not q.startswith(PSEUDO_PREFIX))
    data = AdaptData(folder, len(train_qrels), len(dev_qrels), len(train_qrels) - n_labelled, n_labelled, dev_from)
    kinds: dict[str, int] = {}
    for qid, q in zip(pseudo_ids, pseudo):
        if qid in train_qrels:
            kinds[q.kind] = kinds.get(q.kind, 0) + 1
    write_json(os.path.join(folder, "split.json"), {
        **info, "train_queries": data.n_train, "dev_queries": data.n_dev, "pseudo_train_queries": data.n_pseudo,
        "labelled_train_queries": data.n_labelled, "dev_from": dev_from, "pseudo_kinds_in_train": kinds,
        "dev_ids": sorted(dev_qrels), "dev_seed": DEV_SEED,
        "train_splits": [f"train_{s}" for s, n in zip(SOURCES, (data.n_labelled, data.n_pseudo)) if n]})
    return data


def write_cut_dev_corpus(folder: str, data_dir: str) -> dict[str, int]:
    """A BEIR folder for the dev split of ``data_dir`` (``write_adapt_data``'s output): its dev
    queries and qrels, and the corpus with each dev query's text cut from the documents it names
    (``cut_from_document``). Returns how many queries were cut verbatim, by words, or not at all."""
    from collections import Counter

    qrels = read_qrels_tsv(os.path.join(data_dir, "qrels", "dev.tsv"))
    queries = {str(row["_id"]): row.get("text") or "" for _, row in read_jsonl(os.path.join(data_dir, "queries.jsonl"))
               if str(row["_id"]) in qrels}
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise UserError(f"{data_dir}: dev queries {missing[:3]} are in qrels/dev.tsv but not in queries.jsonl")
    cuts: dict[str, list[str]] = {}
    for qid in sorted(qrels):
        for doc_id in qrels[qid]:
            cuts.setdefault(doc_id, []).append(queries[qid])
    how: Counter = Counter()

    def rows(f):
        for _, row in read_jsonl(os.path.join(data_dir, "corpus.jsonl")):
            doc_id = str(row["_id"])
            if doc_id in cuts:
                doc = Document(doc_id, row.get("title") or "", row.get("text") or "")
                for query in cuts.pop(doc_id):
                    doc, way = cut_from_document(doc, query)
                    how[way] += 1
                row = {**row, "title": doc.title, "text": doc.text}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    write_atomic(os.path.join(folder, "corpus.jsonl"), rows)
    if cuts:
        raise UserError(f"{data_dir}: dev qrels name documents that are not in the corpus: {sorted(cuts)[:3]}")
    _write_queries(os.path.join(folder, "queries.jsonl"), queries)
    write_text(os.path.join(folder, "qrels", "dev.tsv"), _qrels_lines(qrels))
    counts = {way: how.get(way, 0) for way in ("verbatim", "words", "none")}
    write_json(os.path.join(folder, "cuts.json"), counts)
    return counts

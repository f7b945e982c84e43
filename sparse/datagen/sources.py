"""Retrieval datasets for data generation: BEIR-format or MS MARCO-format directories.

MS MARCO format (the files of msmarco.org's passage ranking task):
  * ``collection.tsv``        ``pid<TAB>passage``
  * ``queries.<split>.tsv``   ``qid<TAB>query``
  * ``qrels.<split>.tsv``     ``qid<TAB>0<TAB>pid<TAB>grade`` (TREC) or ``qid<TAB>pid<TAB>grade``

BEIR format is read by ``sparse.data.beir.load_beir``; a document's text is ``doc_text``
(title + " " + text). Only the queries that have qrels in the split are kept, as BEIR does.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass

from sparse.errors import UserError

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class RetrievalData:
    """One split of a retrieval dataset: the sorted corpus, the queries that have qrels, and the qrels."""

    name: str
    doc_ids: list[str]  # sorted
    doc_texts: list[str]
    queries: dict[str, str]  # only queries with qrels
    qrels: dict[str, dict[str, int]]

    def text_of(self) -> dict[str, str]:
        """doc id -> text."""
        return dict(zip(self.doc_ids, self.doc_texts))


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 bytes decoded as latin-1 (MS MARCO's "Ã©" for "é"); other text is returned as is.

    Only texts that can be mojibake are tried (all characters below 256, at least one above 127),
    so clean text is never touched.
    """
    if text.isascii() or any(ord(c) > 255 for c in text):
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def _tsv_rows(path: str):
    from sparse.data.beir import utf8_lines  # bytes that are not UTF-8: one error with line and offset

    lines = (line for _, line in utf8_lines(path))
    for n, row in enumerate(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
        if row:
            yield n, row


def read_id_text_tsv(path: str, fix_encoding: bool = True) -> dict[str, str]:
    """``id<TAB>text`` rows as {id: text} (mojibake repaired with ``fix_encoding``)."""
    out: dict[str, str] = {}
    for n, row in _tsv_rows(path):
        if len(row) < 2:
            raise UserError(f"{path}:{n}: expected 'id<TAB>text', got {row!r}")
        text = "\t".join(row[1:])
        out[row[0]] = fix_mojibake(text) if fix_encoding else text
    return out


def read_msmarco_qrels(path: str) -> dict[str, dict[str, int]]:
    """MS MARCO qrels (TREC 4 columns or 3 columns, optional header) as {qid: {pid: grade}}."""
    qrels: dict[str, dict[str, int]] = {}
    for n, row in _tsv_rows(path):
        if n == 1 and row[0].strip().lower() in ("query-id", "qid", "query_id"):
            continue
        if len(row) == 4:
            qid, _, pid, grade = row
        elif len(row) == 3:
            qid, pid, grade = row
        else:
            raise UserError(f"{path}:{n}: expected 'qid<TAB>0<TAB>pid<TAB>grade', got {row!r}")
        try:
            qrels.setdefault(qid, {})[pid] = int(float(grade))
        except ValueError:
            raise UserError(f"{path}:{n}: grade {grade!r} is not a number") from None
    return qrels


def is_msmarco_dir(path: str) -> bool:
    """Whether ``path`` is an MS MARCO-format directory (it has ``collection.tsv``)."""
    return os.path.isfile(os.path.join(path, "collection.tsv"))


def load_msmarco(path: str, split: str = "train", fix_encoding: bool = True) -> RetrievalData:
    """One split of an MS MARCO-format directory."""
    files = {name: os.path.join(path, name) for name in
             ("collection.tsv", f"queries.{split}.tsv", f"qrels.{split}.tsv")}
    for name, full in files.items():
        if not os.path.isfile(full):
            raise UserError(f"{full} not found: an MS MARCO-format directory needs {sorted(files)}")
    collection = read_id_text_tsv(files["collection.tsv"], fix_encoding)
    queries = read_id_text_tsv(files[f"queries.{split}.tsv"], fix_encoding)
    qrels = read_msmarco_qrels(files[f"qrels.{split}.tsv"])
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise UserError(f"{path}: {len(missing)} qrels query ids have no query text, e.g. {missing[:5]}")
    ids = sorted(collection)
    return RetrievalData(os.path.basename(os.path.normpath(path)), ids, [collection[i] for i in ids],
                         {q: queries[q] for q in qrels}, qrels)


def load_beir_data(path: str, split: str = "train") -> RetrievalData:
    """One split of a BEIR-format directory."""
    from sparse.data.beir import load_beir, sorted_corpus

    corpus, queries, qrels = load_beir(path, split)
    ids, texts = sorted_corpus(corpus)
    return RetrievalData(os.path.basename(os.path.normpath(path)), ids, texts, queries, qrels)


def beir_dataset_dir(cfg) -> tuple[str, str]:
    """(name, folder) of the one BEIR dataset ``--beir_datasets`` names (fetched if needed)."""
    names = [n.strip() for n in str(cfg.data.beir_datasets).split(",") if n.strip()]
    if len(names) != 1:
        raise UserError(f"--beir_datasets must name exactly one dataset to mine, got {names}")
    from sparse.assets import beir_dataset

    return names[0], str(beir_dataset(names[0], cfg.data.beir_dir))


def load_source(path: str, split: str = "train", fix_encoding: bool = True) -> RetrievalData:
    """An MS MARCO-format directory (has ``collection.tsv``) or a BEIR-format one."""
    if not path:
        raise UserError("a data directory is required (--data_dir, or --beir_dir with --beir_datasets)")
    if not os.path.isdir(path):
        raise UserError(f"data directory not found: {path}")
    if is_msmarco_dir(path):
        return load_msmarco(path, split, fix_encoding)
    return load_beir_data(path, split)

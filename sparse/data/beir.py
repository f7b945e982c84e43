"""BEIR-format datasets on disk: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

Also reads the NanoBEIR layout (Hugging Face parquet folders ``corpus/``, ``queries/``,
``qrels/``; no titles, every qrel relevant with grade 1) when a set is present on disk.

As BEIR's ``GenericDataLoader`` does, only the queries that have qrels in the split are kept;
qrels are kept whatever their grade (pytrec_eval treats grade <= 0 as not relevant). Documents
are all kept, blank ones too (they encode to empty vectors and are never retrieved).
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
from typing import Iterable, Iterator

from sparse.errors import UserError

logger = logging.getLogger(__name__)

Corpus = dict[str, dict[str, str]]
Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]


def doc_text(doc: dict) -> str:
    """The text a document is encoded from: ``(title + " " + text).strip()``."""
    return ((doc.get("title") or "") + " " + (doc.get("text") or "")).strip()


def sorted_corpus(corpus: Corpus) -> tuple[list[str], list[str]]:
    """Document ids in sorted order and their texts (``doc_text``)."""
    ids = sorted(corpus)
    return ids, [doc_text(corpus[i]) for i in ids]


def utf8_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number from 1, text) of each line of ``path``; bytes that are not UTF-8 are one
    ``UserError`` naming the file, the line and the byte offset in the file (a leading BOM is dropped)."""
    offset = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{path}: line {n} is not UTF-8 (byte offset {offset + exc.start}: "
                                f"0x{raw[exc.start]:02x}); convert the file to UTF-8 "
                                f"(e.g. iconv -f latin1 -t utf-8)") from None
            if n == 1 and line.startswith("\ufeff"):
                line = line[1:]
            offset += len(raw)
            yield n, line


def check_utf8(path: str, chunk_bytes: int = 1 << 24) -> None:
    """The whole file is UTF-8, read in large blocks (fast); otherwise the ``UserError`` of
    ``utf8_lines`` with the line and byte offset of the first bad byte."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(chunk_bytes), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        for _ in utf8_lines(path):  # raises, naming the line and offset
            pass


def iter_corpus_texts(path: str) -> Iterator[str]:
    """Document texts of a BEIR ``corpus.jsonl`` (``doc_text``), a ``.tsv`` collection (id<TAB>text,
    MS MARCO style) or a plain text file (one document per line); blank lines are skipped."""
    if not os.path.isfile(path):
        raise UserError(f"corpus file not found: {path}")
    for n, line in utf8_lines(path):
        line = line.rstrip("\r\n")
        if not line:
            continue
        if path.endswith(".jsonl"):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{n} is not valid JSON: {exc}") from None
            yield doc_text(doc)
        elif path.endswith(".tsv"):
            yield line.split("\t", 1)[-1]
        else:
            yield line


def read_jsonl(path: str) -> Iterable[tuple[int, dict]]:
    """(line number, row) of each non-blank line of a BEIR ``.jsonl`` file; bytes that are not UTF-8,
    a line that is not JSON or a row without ``_id`` are one ``UserError`` naming the file and line."""
    for n, line in utf8_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n} is not valid JSON ({exc})") from None
        if not isinstance(row, dict) or "_id" not in row:
            raise UserError(f"{path}:{n} has no '_id' field")
        yield n, row


def read_qrels_tsv(path: str) -> Qrels:
    """{query id: {document id: grade}} of a BEIR ``qrels/<split>.tsv`` (header optional)."""
    qrels: Qrels = {}
    # lines decoded by utf8_lines: a byte that is not UTF-8 is named with its line and offset
    reader = csv.reader((line for _, line in utf8_lines(path)), delimiter="\t", quoting=csv.QUOTE_NONE)
    for n, row in enumerate(reader, 1):
        if not row or (n == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid")):
            continue
        if len(row) < 3:
            raise UserError(f"{path}:{n}: expected 'query-id<TAB>corpus-id<TAB>score', got {row!r}")
        try:
            score = int(float(row[2]))
        except ValueError:
            raise UserError(f"{path}:{n}: score {row[2]!r} is not a number") from None
        qrels.setdefault(row[0], {})[row[1]] = score
    return qrels


def _parquet_rows(folder: str) -> list[dict]:
    import pyarrow.parquet as pq

    files = sorted(glob.glob(os.path.join(folder, "**", "*.parquet"), recursive=True))
    rows: list[dict] = []
    for path in files:
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def _load_parquet_layout(dataset_dir: str) -> tuple[Corpus, Queries, Qrels]:
    corpus = load_corpus(dataset_dir)
    queries = {str(r["_id"]): r.get("text") or "" for r in _parquet_rows(os.path.join(dataset_dir, "queries"))}
    qrels: Qrels = {}
    for r in _parquet_rows(os.path.join(dataset_dir, "qrels")):
        qrels.setdefault(str(r["query-id"]), {})[str(r["corpus-id"])] = int(r.get("score", 1) or 1)
    return corpus, queries, qrels


def is_parquet_layout(dataset_dir: str) -> bool:
    return all(glob.glob(os.path.join(dataset_dir, part, "**", "*.parquet"), recursive=True)
               for part in ("corpus", "queries", "qrels"))


def _read_corpus_jsonl(corpus_path: str) -> Corpus:
    corpus: Corpus = {}
    for n, row in read_jsonl(corpus_path):
        did = str(row["_id"])
        if did in corpus:
            raise UserError(f"{corpus_path}:{n}: duplicate document id {did!r}")
        corpus[did] = {"title": row.get("title") or "", "text": row.get("text") or ""}
    return corpus


def load_corpus(dataset_dir: str) -> Corpus:
    """The corpus of a BEIR dataset folder alone (no split needed), either layout."""
    dataset_dir = str(dataset_dir)
    if is_parquet_layout(dataset_dir):
        return {str(r["_id"]): {"title": r.get("title") or "", "text": r.get("text") or ""}
                for r in _parquet_rows(os.path.join(dataset_dir, "corpus"))}
    path = os.path.join(dataset_dir, "corpus.jsonl")
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: {dataset_dir} is not a BEIR dataset directory")
    return _read_corpus_jsonl(path)


def load_beir(dataset_dir: str, split: str = "test") -> tuple[Corpus, Queries, Qrels]:
    """(corpus {id: {"title", "text"}}, queries {id: text}, qrels {qid: {docid: grade}}) of a split."""
    dataset_dir = str(dataset_dir)
    if not os.path.isdir(dataset_dir):
        raise UserError(f"BEIR dataset directory not found: {dataset_dir}")
    if is_parquet_layout(dataset_dir):
        corpus, queries, qrels = _load_parquet_layout(dataset_dir)
    else:
        corpus_path = os.path.join(dataset_dir, "corpus.jsonl")
        queries_path = os.path.join(dataset_dir, "queries.jsonl")
        qrels_path = os.path.join(dataset_dir, "qrels", f"{split}.tsv")
        for path in (corpus_path, queries_path):
            if not os.path.isfile(path):
                raise UserError(f"{path} not found: {dataset_dir} is not a BEIR dataset directory")
        if not os.path.isfile(qrels_path):
            have = sorted(os.path.splitext(p)[0] for p in os.listdir(os.path.join(dataset_dir, "qrels"))) \
                if os.path.isdir(os.path.join(dataset_dir, "qrels")) else []
            raise UserError(f"{qrels_path} not found: split {split!r} is missing (splits here: {have})")
        corpus = _read_corpus_jsonl(corpus_path)
        queries = {str(row["_id"]): row.get("text") or "" for _, row in read_jsonl(queries_path)}
        qrels = read_qrels_tsv(qrels_path)
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise UserError(f"{dataset_dir}: {len(missing)} qrels query ids have no query text, e.g. {missing[:5]}")
    queries = {q: queries[q] for q in qrels}
    if not qrels:
        raise UserError(f"{dataset_dir}: split {split!r} has no qrels")
    warn_corpus_gaps(dataset_dir, split, corpus, qrels)
    return corpus, queries, qrels


def warn_corpus_gaps(dataset_dir: str, split: str, corpus: Corpus, qrels: Qrels) -> dict[str, int]:
    """Warn (with counts) about what silently changes the metrics: qrels naming documents that are not
    in the corpus (never retrievable: they lower Recall and NDCG) and empty documents (their vectors
    come from special-token positions only). Returns the counts."""
    pairs = [(q, d) for q, docs in qrels.items() for d in docs if d not in corpus]
    counts = {"qrels_docs_absent": len(pairs), "empty_documents": sum(1 for doc in corpus.values()
                                                                       if not doc_text(doc))}
    if pairs:
        total = sum(len(docs) for docs in qrels.values())
        logger.warning("%s: %d of %d qrels (%s split, %d queries) name documents that are not in the corpus, e.g. "
                       "%r: they can never be retrieved and lower Recall/NDCG", dataset_dir, len(pairs), total, split,
                       len({q for q, _ in pairs}), pairs[0][1])
    if counts["empty_documents"]:
        logger.warning("%s: %d of %d documents are empty (no title, no text): their vectors come from special "
                       "tokens only", dataset_dir, counts["empty_documents"], len(corpus))
    return counts


def check_beir_dataset(dataset_dir: str, split: str = "test") -> None:
    """Read every file of a dataset once (UTF-8, JSON, qrels format, query ids) without keeping the
    corpus: the checks ``load_beir`` makes, run before an evaluation writes anything."""
    dataset_dir = str(dataset_dir)
    if not os.path.isdir(dataset_dir) or is_parquet_layout(dataset_dir):
        return  # a missing folder is reported by load_beir; parquet files are typed and checked when read
    corpus_path = os.path.join(dataset_dir, "corpus.jsonl")
    queries_path = os.path.join(dataset_dir, "queries.jsonl")
    qrels_path = os.path.join(dataset_dir, "qrels", f"{split}.tsv")
    for path in (corpus_path, queries_path, qrels_path):
        if not os.path.isfile(path):
            return  # load_beir says what is missing
    for _ in read_jsonl(corpus_path):
        pass
    query_ids = {str(row["_id"]) for _, row in read_jsonl(queries_path)}
    qrels = read_qrels_tsv(qrels_path)
    missing = [q for q in qrels if q not in query_ids]
    if missing:
        raise UserError(f"{dataset_dir}: {len(missing)} qrels query ids have no query text, e.g. {missing[:5]}")
    if not qrels:
        raise UserError(f"{dataset_dir}: split {split!r} has no qrels")

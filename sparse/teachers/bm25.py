"""BM25 teacher, type ``bm25``: Lucene BM25 of (query, document text) with a collection's statistics.

    score(q, d) = sum_{t in q} idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl)),
    idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

(``sparse.retrieval.bm25``: the toolkit's one BM25, bm25s tokenization with stop words and the
Snowball stemmer). N, df and avgdl come from a collection; |d| and tf from the scored text itself,
so texts that came from training rows are scored even when they are not in that collection.

Its "model id" names the collection:

* a BEIR dataset directory (``corpus.jsonl``), an MS MARCO-format directory (``collection.tsv``),
  or a ``.jsonl`` (BEIR rows) / ``.tsv`` (``id<TAB>text``) file;
* none (``null`` in ``kd_ensemble_teacher_kwargs.model_ids``, bare ``bm25`` in
  ``data_preparation.py --teachers``): online, the distinct documents of the training data
  (``fit_on_training_data``, called by ``train_ir.py``); in ``data_preparation.py``, the
  collection being processed.

Settings (``teacher_options`` entry of the teacher, or ``data_preparation.py --bm25_*``): ``k1``
(0.9), ``b`` (0.4), ``stemmer`` ("english"; null: none), ``stopwords`` ("en"; null: none),
``cache_dir`` (default: the corpus cache directory, ``$SPARSE_CACHE_DIR`` or
``~/.cache/sparse/corpus_vectors``). The ensemble min-max normalizes its scores per query like
every other teacher's. It runs on the CPU and has no weights.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional, Sequence

import torch

from sparse.errors import UserError
from sparse.teachers.base import Teacher, register_teacher

logger = logging.getLogger(__name__)

PARAM_KEYS = ("k1", "b", "stemmer", "stopwords")


def read_collection(path: str) -> tuple[list[str], list[str]]:
    """(doc ids sorted, texts) of a BEIR dir / MS MARCO dir / ``corpus.jsonl`` / ``id<TAB>text`` file.

    A BEIR document's text is ``(title + " " + text).strip()`` (``sparse.data.beir.doc_text``).
    """
    from sparse.data.beir import doc_text

    path = str(path)
    if os.path.isdir(path):
        for name in ("corpus.jsonl", "collection.tsv"):
            if os.path.isfile(os.path.join(path, name)):
                return read_collection(os.path.join(path, name))
        raise UserError(f"bm25 teacher: {path} holds neither corpus.jsonl (BEIR) nor collection.tsv (MS MARCO)")
    if not os.path.isfile(path):
        raise UserError(f"bm25 teacher: collection not found: {path} (a BEIR or MS MARCO directory, "
                        "a corpus.jsonl or an id<TAB>text .tsv file)")
    docs: dict[str, str] = {}
    from sparse.data.beir import utf8_lines  # bytes that are not UTF-8: file, line and byte offset

    for n, line in utf8_lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if path.endswith(".jsonl"):
            try:
                row = json.loads(line)
                docs[str(row["_id"])] = doc_text(row)
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise UserError(f"{path}:{n} is not a BEIR corpus row with an '_id' ({exc})") from None
        elif path.endswith(".tsv"):
            doc_id, sep, text = line.partition("\t")
            if not sep:
                raise UserError(f"{path}:{n}: expected 'id<TAB>text'")
            docs[doc_id] = text
        else:
            raise UserError(f"bm25 teacher: {path} is neither a .jsonl nor a .tsv collection")
    ids = sorted(docs)
    return ids, [docs[i] for i in ids]


def _bm25_options(options: dict):
    from sparse.retrieval.bm25 import BM25Params

    return BM25Params.from_dict({k: options[k] for k in PARAM_KEYS if k in options})


def _default_cache_dir() -> str:
    from sparse.corpus import default_cache_dir

    return default_cache_dir()


@register_teacher("bm25")
class BM25Teacher(Teacher):
    """BM25 scores of (query, text) pairs with one collection's statistics (module docstring)."""

    needs_model_id = False  # no model id: the documents of the data at hand (module docstring)

    def __init__(self, index=None, params=None, cache_dir: Optional[str] = None, name: str = "bm25",
                 batch_size: int = 64):
        # no HF model: Teacher.__init__ is skipped
        from sparse.retrieval.bm25 import BM25Params

        self.index = index
        self.params = index.params if index is not None else (params or BM25Params())
        self.cache_dir = cache_dir
        self.name = name
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.batch_size = batch_size
        self.max_length = None

    def __repr__(self) -> str:
        where = f"{self.index.n_docs} documents" if self.index is not None else "no collection yet"
        return f"BM25Teacher({self.name!r}, {where}, {self.params})"

    @classmethod
    def load(cls, model_id=None, tokenizer_id=None, trust_remote_code=False, index=None, cache_dir=None,
             progress: bool = False, batch_size: int = 64, **kwargs):
        """``model_id``: the collection (module docstring); ``index``: an already built ``BM25Index``
        (``data_preparation.py`` shares its own); ``k1``, ``b``, ``stemmer``, ``stopwords`` in kwargs."""
        from sparse.errors import ConfigError
        from sparse.retrieval.bm25 import BM25Index

        unknown = sorted(set(kwargs) - set(PARAM_KEYS) - {"max_length", "device", "dtype"})
        if unknown:
            raise ConfigError(f"bm25 teacher: unknown options {unknown}; known: "
                              f"{sorted(PARAM_KEYS + ('cache_dir', 'progress'))}")
        params = _bm25_options(kwargs)
        if index is not None:
            if index.params != params:
                raise UserError(f"bm25 teacher: the shared index has settings {index.params}, asked {params}")
            return cls(index, name=str(model_id or "bm25:collection"), batch_size=batch_size)
        cache_dir = cache_dir or _default_cache_dir()
        if not model_id:
            return cls(None, params, cache_dir=cache_dir, name="bm25:training-data", batch_size=batch_size)
        ids, texts = read_collection(model_id)
        idx = BM25Index(ids, texts, params, cache_dir=cache_dir, progress=progress)
        return cls(idx, name=str(model_id), batch_size=batch_size)

    def fit(self, texts: Sequence[str], progress: bool = False) -> None:
        """Collection statistics from ``texts`` (the distinct ones, sorted; e.g. the training documents)."""
        from sparse.retrieval.bm25 import BM25Index

        distinct = sorted(set(texts))
        if not distinct:
            raise UserError("bm25 teacher: no documents to take statistics from")
        self.index = BM25Index([str(i) for i in range(len(distinct))], distinct, self.params,
                               cache_dir=self.cache_dir, progress=progress)

    @torch.no_grad()
    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        if self.index is None:
            raise UserError("bm25 teacher has no collection: give its collection as the model id, or let "
                            "train_ir.py take the statistics of the training documents (fit_on_training_data)")
        return torch.from_numpy(self.index.score_pairs(list(queries), list(docs))).float()


def training_documents(datasets) -> list[str]:
    """Every document text of training datasets (``posnegs``: pos + negs; ``kd``: docs), read from Arrow."""
    import pyarrow.compute as pc

    texts: set[str] = set()
    for d in datasets:
        ds = getattr(d, "ds", d)
        for column in ("pos", "negs", "docs"):
            if column not in ds.column_names:
                continue
            col = ds.data.column(column)
            if column != "pos":
                col = pc.list_flatten(col)
            texts.update(t for t in col.to_pylist() if t is not None)
    return sorted(texts)


def fit_on_training_data(ensemble, datasets, progress: bool = False) -> int:
    """Give every ``bm25`` teacher of ``ensemble`` without a collection the training documents'
    statistics; returns how many teachers were fitted."""
    todo = [t for t in getattr(ensemble, "teachers", []) if isinstance(t, BM25Teacher) and t.index is None]
    if not todo:
        return 0
    texts = training_documents(datasets)
    logger.info("bm25 teacher: collection statistics from the %d distinct training documents", len(texts))
    for t in todo:
        t.fit(texts, progress=progress)
    return len(todo)

"""BM25 over a collection: the one BM25 of the toolkit (mining, KD candidates, the ``bm25`` teacher).

Built on ``bm25s`` (Lucene variant) with ``PyStemmer``. For a query q (a list of tokens, repeats
counted) and a document d of the collection C (N documents, average length avgdl tokens):

    score(q, d) = sum_{t in q} idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

where df(t) is the number of documents of C that hold t and |d| the number of tokens of d. This
is bm25s's ``method="lucene"`` (Lucene >= 8 drops the constant (k1 + 1) factor). Tokens come
from ``bm25s.tokenize``: lower case, words of two or more characters (``\\b\\w\\w+\\b``), stop
words removed (``stopwords``, default bm25s's English list; None keeps every word), then the
Snowball stemmer of ``stemmer`` (default "english"; None: no stemming).

Defaults k1 = 0.9, b = 0.4 are Anserini's (the BM25 baselines of BEIR and MS MARCO).

* ``search(queries, k)``: per query the top k documents with score > 0, best first, ties
  broken by document id (one sparse product per batch of queries over bm25s's precomputed
  per-(token, document) scores, accumulated in float32 as bm25s does);
* ``score_pairs(queries, texts)``: the formula above for arbitrary texts, with the collection's
  N, df and avgdl and |d| = the token count of the given text, so a teacher can score texts
  that are not in the collection (a token the collection never holds has df = 0). For a text
  of the collection it equals bm25s's own ``get_scores`` (computed here in float64).

An index is cached on disk under ``<cache_dir>/bm25-<key>/`` where ``key`` hashes the collection
(ids and texts in order), k1, b, stemmer, stop words and the bm25s version (not the dataset's
name: the same collection under another name reuses the entry); the entry holds bm25s's saved
index plus ``meta.json`` (N, avgdl, settings). Entries are written under a temporary name and
renamed, so concurrent ``torchrun`` ranks never see half an entry.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

from sparse.errors import ConfigError, UserError, save_atomic

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META = "meta.json"
SEARCH_BATCH = 1024  # queries per sparse product


@dataclass(frozen=True)
class BM25Params:
    """BM25 settings: Lucene k1 and b, the Snowball stemmer language and bm25s's stop word list."""

    k1: float = 0.9
    b: float = 0.4
    stemmer: Optional[str] = "english"  # a PyStemmer language; None: no stemming
    stopwords: Optional[str] = "en"  # a bm25s stop word list ("en", "de", ...); None: keep every word

    def __post_init__(self):
        if not (self.k1 >= 0):
            raise ConfigError(f"BM25 k1 must be >= 0, got {self.k1}")
        if not (0 <= self.b <= 1):
            raise ConfigError(f"BM25 b must be in [0, 1], got {self.b}")

    @classmethod
    def from_dict(cls, values: Optional[dict]) -> "BM25Params":
        """Settings from ``{k1, b, stemmer, stopwords}`` (any subset; "none"/"null" turn a list off)."""
        values = dict(values or {})
        known = {"k1", "b", "stemmer", "stopwords"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown BM25 settings {unknown}; known: {sorted(known)}")
        for key in ("stemmer", "stopwords"):
            if isinstance(values.get(key), str) and values[key].lower() in ("", "none", "null"):
                values[key] = None
        for key in ("k1", "b"):
            if key in values:
                values[key] = float(values[key])
        return cls(**values)


def make_stemmer(language: Optional[str]):
    """A PyStemmer ``Stemmer`` (bm25s calls its ``stemWords`` on a list of words), or None."""
    if not language:
        return None
    try:
        import Stemmer
    except ImportError:
        raise UserError("BM25 stemming needs PyStemmer (pip install PyStemmer), or set the stemmer to none") from None
    try:
        return Stemmer.Stemmer(language)
    except KeyError:
        raise ConfigError(f"unknown BM25 stemmer language {language!r}; PyStemmer knows "
                          f"{Stemmer.algorithms()}") from None


def collection_key(doc_ids: Sequence[str], texts: Sequence[str], params: BM25Params) -> str:
    """The cache key of a BM25 index: the collection (ids and texts, in order) and the settings."""
    import bm25s

    from sparse.data.digest import corpus_digest

    return corpus_digest([FORMAT_VERSION, bm25s.__version__, asdict(params), len(doc_ids)], doc_ids, texts)


class BM25Index:
    """BM25 statistics and index of one collection (see the module docstring).

    ``cache_dir=None``: built in memory only.
    """

    def __init__(self, doc_ids: Sequence[str], doc_texts: Sequence[str], params: Optional[BM25Params] = None,
                 cache_dir: Optional[str] = None, progress: bool = True):
        import bm25s

        if len(doc_ids) != len(doc_texts):
            raise ValueError(f"{len(doc_ids)} ids for {len(doc_texts)} texts")
        if not len(doc_ids):
            raise UserError("a BM25 index needs at least one document")
        self._bm25s = bm25s
        self.params = params or BM25Params()
        self.stemmer = make_stemmer(self.params.stemmer)
        self.doc_ids = [str(d) for d in doc_ids]
        self.progress = progress
        self.cache_hit = False
        self.entry = None
        t0 = time.perf_counter()
        texts = list(doc_texts)
        if cache_dir:
            key = collection_key(self.doc_ids, texts, self.params)
            self.entry = os.path.join(cache_dir, f"bm25-{key}")
            self.cache_hit = self._load(self.entry)
        if not self.cache_hit:
            self._build(texts)
            if self.entry:
                self._save(self.entry)
        self._finish()
        self.seconds = time.perf_counter() - t0
        logger.info("BM25 index of %d documents (%s) %s in %.1fs%s", self.n_docs, self.params,
                    "loaded" if self.cache_hit else "built", self.seconds, f": {self.entry}" if self.entry else "")

    # ------------------------------------------------------------------ build / cache
    def _build(self, texts: list[str]) -> None:
        tokens = self._bm25s.tokenize(texts, stopwords=self.params.stopwords, stemmer=self.stemmer,
                                      show_progress=self.progress)
        self.avgdl = float(np.mean([len(ids) for ids in tokens.ids]))
        self.model = self._bm25s.BM25(k1=self.params.k1, b=self.params.b, method="lucene")
        self.model.index(tokens, show_progress=self.progress)

    def _save(self, entry: str) -> None:
        def save(tmp: str) -> None:
            self.model.save(tmp, show_progress=False)
            meta = {"format": FORMAT_VERSION, "n_docs": self.n_docs_built, "avgdl": self.avgdl,
                    "params": asdict(self.params), "bm25s": self._bm25s.__version__}
            with open(os.path.join(tmp, META), "w", encoding="utf-8") as f:
                json.dump(meta, f)

        save_atomic(entry, save, keep_existing=True)  # another process that wrote it first wrote the same

    @property
    def n_docs_built(self) -> int:
        """N of the bm25s index."""
        return int(self.model.scores["num_docs"])

    def _load(self, entry: str) -> bool:
        meta_path = os.path.join(entry, META)
        if not os.path.isfile(meta_path):
            return False
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            model = self._bm25s.BM25.load(entry, show_progress=False)
            why = None if int(meta["n_docs"]) == len(self.doc_ids) else \
                f"it holds {meta['n_docs']} documents for {len(self.doc_ids)}"
        except (OSError, ValueError, KeyError) as exc:
            why = f"it cannot be read ({type(exc).__name__}: {exc})"
        if why is not None:
            logger.warning("BM25 cache entry %s is unusable, %s: building the index again", entry, why)
            shutil.rmtree(entry, ignore_errors=True)
            return False
        self.model, self.avgdl = model, float(meta["avgdl"])
        return True

    def _finish(self) -> None:
        import scipy.sparse as sp

        s = self.model.scores
        self.n_docs = int(s["num_docs"])
        self.vocab = self.model.vocab_dict  # token -> column
        indptr = np.asarray(s["indptr"])
        df = np.diff(indptr)
        self.df = {tok: int(df[i]) for tok, i in self.vocab.items() if i < len(df)}
        # bm25s stores a (documents x tokens) CSC matrix of per-pair scores: its arrays read as
        # CSR are the (tokens x documents) matrix, one posting list per token
        self._postings = sp.csr_matrix((np.asarray(s["data"]), np.asarray(s["indices"]), indptr),
                                       shape=(len(indptr) - 1, self.n_docs))
        order = sorted(range(self.n_docs), key=self.doc_ids.__getitem__)
        self._id_rank = np.empty(self.n_docs, np.int64)
        self._id_rank[order] = np.arange(self.n_docs)

    # ------------------------------------------------------------------ tokens and statistics
    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """The tokens of each text, as the index tokenizes documents (stop words, stemming)."""
        if not len(texts):
            return []
        return self._bm25s.tokenize(list(texts), stopwords=self.params.stopwords, stemmer=self.stemmer,
                                    return_ids=False, show_progress=False)

    def idf(self, token: str) -> float:
        """Lucene's BM25 idf of a (stemmed) token: log(1 + (N - df + 0.5) / (df + 0.5))."""
        df = self.df.get(token, 0)
        return math.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))

    # ------------------------------------------------------------------ scoring
    def score_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """(n,) float64 BM25 scores of ``(queries[i], texts[i])`` with this collection's statistics."""
        if len(queries) != len(texts):
            raise ValueError(f"score_pairs needs as many queries as texts ({len(queries)} vs {len(texts)})")
        uq, ut = sorted(set(queries)), sorted(set(texts))
        q_tokens = dict(zip(uq, self.tokenize(uq)))
        t_tokens = dict(zip(ut, self.tokenize(ut)))
        tfs = {t: (Counter(tok), len(tok)) for t, tok in t_tokens.items()}
        idf: dict[str, float] = {}
        k1, b = self.params.k1, self.params.b
        out = np.zeros(len(queries), np.float64)
        for i, (q, t) in enumerate(zip(queries, texts)):
            tf, dl = tfs[t]
            norm = k1 * (1.0 - b + b * dl / self.avgdl)
            total = 0.0
            for tok in q_tokens[q]:
                f = tf.get(tok)
                if f:
                    if tok not in idf:
                        idf[tok] = self.idf(tok)
                    total += idf[tok] * f / (f + norm)
            out[i] = total
        return out

    def search(self, query_texts: Sequence[str], k: int) -> tuple[list[list[str]], list[list[float]]]:
        """Per query: (doc ids, scores) of its top ``k`` (score > 0), best first, ties by doc id."""
        import scipy.sparse as sp

        out_ids: list[list[str]] = []
        out_scores: list[list[float]] = []
        tokens = self.tokenize(query_texts)
        for s in range(0, len(tokens), SEARCH_BATCH):
            batch = tokens[s:s + SEARCH_BATCH]
            rows, cols, vals = [], [], []
            for r, toks in enumerate(batch):
                for tok, count in Counter(t for t in toks if t in self.vocab).items():
                    rows.append(r)
                    cols.append(self.vocab[tok])
                    vals.append(count)  # a repeated query token counts once per repeat, as in bm25s
            q = sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)),
                              shape=(len(batch), self._postings.shape[0]))
            hits = (q @ self._postings).tocsr()
            for r in range(len(batch)):
                lo, hi = hits.indptr[r], hits.indptr[r + 1]
                docs, scores = hits.indices[lo:hi], hits.data[lo:hi]
                keep = scores > 0
                docs, scores = docs[keep], scores[keep]
                top = top_k_positions(scores, self._id_rank[docs], k)
                out_ids.append([self.doc_ids[d] for d in docs[top]])
                out_scores.append([float(x) for x in scores[top]])
        return out_ids, out_scores

    def close(self) -> None:
        """Drop the index."""
        self.model = None
        self._postings = None


def top_k_positions(scores: np.ndarray, id_rank: np.ndarray, k: int) -> np.ndarray:
    """Positions of the top ``k`` scores, best first, ties by ``id_rank`` (the doc id's sorted rank)."""
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th largest score
        cand = np.flatnonzero(scores >= kth)  # every document tied with the k-th one too
    else:
        cand = np.arange(len(scores))
    order = np.lexsort((id_rank[cand], -scores[cand]))
    return cand[order[:k]]

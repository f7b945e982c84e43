"""Pseudo-queries from a corpus with no labels: each generator turns one document into one query.

Kinds, chosen by name and mixed with weights (``parse_mix("title:1,span:2,keyterms:1")``):

* ``title``: the document's title, or its first sentence when it has none;
* ``span``: a sentence (or a run of words from a long one) cut from the document, inverse-cloze
  style; the record keeps the span so a caller can remove it from the document it is matched against;
* ``keyterms``: the document's highest-weighted BM25 terms (term frequency saturated with ``k1``/``b``,
  times the corpus IDF), in the order they first appear;
* ``seq2seq``: a doc2query-style sequence-to-sequence model (``Seq2SeqQueries``), for users who have one.

Every choice comes from a ``random.Random`` seeded by (seed, document id), so the same corpus and
seed give the same queries whatever the order or subset of documents asked for.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

from sparse.errors import UserError

KINDS = ("title", "span", "keyterms", "seq2seq")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9\-]*[A-Za-z0-9]|[A-Za-z]")

# common English words that carry no topic; a key-term query never consists of these
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each either et few for from further had has
have having he her here hers herself him himself his how however i if in into is it its itself just may
me might more most must my myself no nor not now of off on once only or other our ours ourselves out
over own per same she should so some such than that the their theirs them themselves then there these
they this those through thus to too under until up upon us very via was we were what when where which
while who whom why will with within without would you your yours yourself yourselves al fig using used
use based shown show shows showed found study studies result results however among across whether
""".split())


@dataclass(frozen=True)
class PseudoQuery:
    """One generated query: its text, the document it came from, the kind, and the cut span if any."""

    text: str
    doc_id: str
    kind: str
    span: Optional[str] = None


@dataclass(frozen=True)
class Document:
    """A corpus document as the generators see it."""

    doc_id: str
    title: str
    text: str


class QueryGenerator(Protocol):
    """Turns one document into one pseudo-query, or None when the document offers none of its kind."""

    name: str

    def generate(self, doc: Document, rng: random.Random) -> Optional[PseudoQuery]:
        """The query for ``doc``; every random choice comes from ``rng``."""


def doc_rng(seed: int, doc_id: str) -> random.Random:
    """A generator seeded by (seed, document id): independent of which other documents are drawn."""
    digest = hashlib.sha256(f"{seed}\x00{doc_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def sentences(text: str) -> list[str]:
    """``text`` cut at sentence ends (., !, ? followed by space and a capital, digit or bracket)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def words(text: str) -> list[str]:
    """The words of ``text`` (letters, digits and inner hyphens), case kept."""
    return _WORD.findall(text)


def _clip_words(text: str, max_words: int) -> str:
    parts = text.split()
    return " ".join(parts[:max_words])


@dataclass
class TitleQueries:
    """The title, or the first sentence of a document without one, cut to ``max_words``."""

    max_words: int = 24
    min_words: int = 2
    name: str = "title"

    def generate(self, doc: Document, rng: random.Random) -> Optional[PseudoQuery]:
        """The title (or first sentence) of ``doc``; None when it is shorter than ``min_words``."""
        source = doc.title.strip()
        if len(source.split()) < self.min_words:
            first = sentences(doc.text)
            source = first[0] if first else ""
        text = _clip_words(source, self.max_words).rstrip(".")
        if len(text.split()) < self.min_words:
            return None
        return PseudoQuery(text, doc.doc_id, self.name)


@dataclass
class SpanQueries:
    """A sentence cut from the document; a sentence longer than ``max_words`` gives a random run of
    ``max_words`` of its words. Sentences shorter than ``min_words`` are never chosen."""

    min_words: int = 5
    max_words: int = 24
    skip_first: bool = True  # the first sentence often restates the title: prefer the others
    name: str = "span"

    def generate(self, doc: Document, rng: random.Random) -> Optional[PseudoQuery]:
        """A span of ``doc``'s text, recorded in ``span`` so it can be removed from the document."""
        pool = [s for s in sentences(doc.text) if len(s.split()) >= self.min_words]
        if self.skip_first and len(pool) > 1:
            pool = pool[1:]
        if not pool:
            return None
        sentence = rng.choice(pool)
        parts = sentence.split()
        if len(parts) > self.max_words:
            start = rng.randrange(len(parts) - self.max_words + 1)
            parts = parts[start:start + self.max_words]
        span = " ".join(parts)
        return PseudoQuery(span.rstrip("."), doc.doc_id, self.name, span=span)


class CorpusTermStats:
    """Document frequencies and the mean length (in words) of a corpus, for BM25 term weights."""

    def __init__(self, docs: Sequence[Document]):
        self.n_docs = len(docs)
        self.df: Counter = Counter()
        total = 0
        for doc in docs:
            terms = [w.lower() for w in words(doc.title + " " + doc.text)]
            total += len(terms)
            self.df.update(set(terms))
        self.avg_len = total / max(1, self.n_docs)

    def idf(self, term: str) -> float:
        """BM25's idf, log(1 + (N - df + 0.5) / (df + 0.5)): positive for every term."""
        df = self.df.get(term, 0)
        return math.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))


@dataclass
class KeyTermQueries:
    """The ``min_terms``..``max_terms`` highest BM25-weighted terms of a document, in text order."""

    stats: CorpusTermStats
    min_terms: int = 3
    max_terms: int = 6
    k1: float = 0.9
    b: float = 0.4
    name: str = "keyterms"

    def weights(self, doc: Document, terms: Optional[list[str]] = None) -> dict[str, float]:
        """BM25 weight of each non-stop-word term of ``doc`` (as if the term were the query);
        ``terms`` are its lower-cased words when the caller has them already."""
        terms = terms if terms is not None else [w.lower() for w in words(doc.title + " " + doc.text)]
        tf = Counter(t for t in terms if t not in STOPWORDS and len(t) > 2 and not t.isdigit())
        norm = self.k1 * (1 - self.b + self.b * len(terms) / max(self.stats.avg_len, 1e-9))
        return {t: self.stats.idf(t) * f * (self.k1 + 1) / (f + norm) for t, f in tf.items()}

    def generate(self, doc: Document, rng: random.Random) -> Optional[PseudoQuery]:
        """A query of ``doc``'s top terms; the count is drawn between ``min_terms`` and ``max_terms``."""
        terms = [w.lower() for w in words(doc.title + " " + doc.text)]
        weights = self.weights(doc, terms)
        if len(weights) < self.min_terms:
            return None
        count = rng.randint(self.min_terms, self.max_terms)
        top = sorted(weights, key=lambda t: (-weights[t], t))[:count]
        order = {}
        for position, term in enumerate(terms):
            order.setdefault(term, position)
        return PseudoQuery(" ".join(sorted(top, key=order.__getitem__)), doc.doc_id, self.name)


class Seq2SeqQueries:
    """Queries sampled from a sequence-to-sequence model (doc2query style) given the document text."""

    name = "seq2seq"

    def __init__(self, model_name_or_path: str, max_input_tokens: int = 256, max_new_tokens: int = 32,
                 top_k: int = 25, device: str = "cpu", trust_remote_code: bool = False):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(model_name_or_path,
                                                               trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the query generator {model_name_or_path}: {exc}") from None
        self.model.to(device).eval()
        self.device = device
        self.max_input_tokens, self.max_new_tokens, self.top_k = max_input_tokens, max_new_tokens, top_k

    def generate(self, doc: Document, rng: random.Random) -> Optional[PseudoQuery]:
        """One sampled query; the sampling seed is drawn from ``rng``."""
        import torch

        enc = self.tokenizer([(doc.title + " " + doc.text).strip()], truncation=True,
                             max_length=self.max_input_tokens, return_tensors="pt").to(self.device)
        torch.manual_seed(rng.randrange(2**31))
        with torch.no_grad():
            out = self.model.generate(**enc, do_sample=True, top_k=self.top_k, max_new_tokens=self.max_new_tokens)
        text = self.tokenizer.decode(out[0], skip_special_tokens=True).strip()
        return PseudoQuery(text, doc.doc_id, self.name) if text else None


def _verbatim(query: str) -> re.Pattern:
    return re.compile(r"\s+".join(re.escape(w) for w in query.split()))


def _tidy(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def cut_from_document(doc: Document, query: str) -> tuple[Document, str]:
    """``doc`` with ``query``'s own text cut out, and how: ``"verbatim"`` (the query is a run of the
    title or text, e.g. a title or a cut span: that run is removed), ``"words"`` (every whole-word
    occurrence of each of its non-stop-words removed, e.g. key terms) or ``"none"`` (nothing to cut).

    A held-out pseudo-query matched against its document so cut must be found through what the
    rest of the document says, as a real question must, instead of through the words it copies.
    """
    if query.split():
        pattern = _verbatim(query)
        if pattern.search(doc.title):
            return Document(doc.doc_id, _tidy(pattern.sub(" ", doc.title, count=1)), doc.text), "verbatim"
        if pattern.search(doc.text):
            return Document(doc.doc_id, doc.title, _tidy(pattern.sub(" ", doc.text, count=1))), "verbatim"
    terms = sorted({w.lower() for w in words(query)} - STOPWORDS)
    if not terms:
        return doc, "none"
    term = re.compile(r"(?<![A-Za-z0-9\-])(?:" + "|".join(map(re.escape, terms)) + r")(?![A-Za-z0-9\-])",
                      re.IGNORECASE)
    title, text = term.sub(" ", doc.title), term.sub(" ", doc.text)
    if (title, text) == (doc.title, doc.text):
        return doc, "none"
    return Document(doc.doc_id, _tidy(title), _tidy(text)), "words"


def parse_mix(spec) -> dict[str, float]:
    """``"title:1,span:2"`` (or a list of such entries, or a mapping) -> {kind: weight}, weights > 0."""
    if isinstance(spec, dict):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        entries = spec.split(",") if isinstance(spec, str) else list(spec)
        items = []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            name, _, weight = entry.partition(":")
            items.append((name.strip(), weight.strip() or 1))
    mix: dict[str, float] = {}
    for name, weight in items:
        if name not in KINDS:
            raise UserError(f"unknown pseudo-query kind {name!r}; kinds: {', '.join(KINDS)}")
        try:
            value = float(weight)
        except (TypeError, ValueError):
            raise UserError(f"pseudo-query kind {name}: weight {weight!r} is not a number") from None
        if not value > 0 or math.isinf(value):
            raise UserError(f"pseudo-query kind {name}: weight must be a positive number, got {weight!r}")
        mix[name] = mix.get(name, 0.0) + value
    if not mix:
        raise UserError("the pseudo-query mix names no kind")
    return mix


def build_generators(mix: dict[str, float], docs: Sequence[Document], seq2seq_model: Optional[str] = None,
                     device: str = "cpu") -> dict[str, QueryGenerator]:
    """One generator per kind of ``mix``; ``keyterms`` reads the corpus statistics of ``docs``."""
    out: dict[str, QueryGenerator] = {}
    for kind in mix:
        if kind == "title":
            out[kind] = TitleQueries()
        elif kind == "span":
            out[kind] = SpanQueries()
        elif kind == "keyterms":
            out[kind] = KeyTermQueries(CorpusTermStats(docs))
        elif kind == "seq2seq":
            if not seq2seq_model:
                raise UserError("the seq2seq pseudo-query kind needs a query generator model (seq2seq_model)")
            out[kind] = Seq2SeqQueries(seq2seq_model, device=device)
    return out


def generate_queries(docs: Sequence[Document], mix: dict[str, float], generators: dict[str, QueryGenerator],
                     n_queries: int, seed: int = 42, progress: bool = False) -> tuple[list[PseudoQuery], Counter]:
    """Up to ``n_queries`` pseudo-queries, one per document, from documents drawn without replacement.

    Each drawn document picks a kind by weight (from its own seeded generator); a document with no
    query of that kind tries the other kinds in weight order, and is skipped (counted under
    ``"none"``) when none yields one. Returns the queries and a count per kind.
    """
    order = sorted(docs, key=lambda d: d.doc_id)
    random.Random(seed).shuffle(order)
    kinds, weights = list(mix), [mix[k] for k in mix]
    queries: list[PseudoQuery] = []
    counts: Counter = Counter()
    seen: set[str] = set()
    iterator = order
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(order, desc="pseudo-queries", unit="doc")
    for doc in iterator:
        if len(queries) >= n_queries:
            break
        rng = doc_rng(seed, doc.doc_id)
        first = rng.choices(kinds, weights=weights)[0]
        fallback = sorted((k for k in kinds if k != first), key=lambda k: -mix[k])
        query = None
        for kind in [first] + fallback:
            query = generators[kind].generate(doc, rng)
            if query is not None and query.text.lower() not in seen:
                break
            query = None
        if query is None:
            counts["none"] += 1
            continue
        seen.add(query.text.lower())
        queries.append(query)
        counts[query.kind] += 1
    return queries, counts

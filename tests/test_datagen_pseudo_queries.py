"""Pseudo-query generators on small hand-made corpora: what each kind yields, determinism by seed,
mixing by weight, and a seq2seq generator built from a tiny random model in the test."""

from __future__ import annotations

import random

import pytest

from sparse.datagen.pseudo_queries import (CorpusTermStats, Document, KeyTermQueries, SpanQueries, TitleQueries,
                                           build_generators, cut_from_document, doc_rng, generate_queries,
                                           parse_mix, sentences, words)
from sparse.errors import UserError

DOCS = [
    Document("d1", "Vitamin D deficiency in elderly patients",
             "Vitamin D levels were measured in 300 patients. Deficiency was common among residents of care "
             "homes. Supplementation raised serum levels within eight weeks of treatment."),
    Document("d2", "", "Ribosomes translate messenger RNA into proteins. The small subunit decodes the codon "
                       "sequence while the large subunit forms peptide bonds between amino acids."),
    Document("d3", "Graphene transistors", "Graphene has high carrier mobility. Transistors built from graphene "
                                           "switch at terahertz frequencies in laboratory prototypes today."),
    Document("d4", "Sleep", "Short."),
]


def test_sentences_split_at_sentence_ends_only():
    assert sentences("A b c. D e f! G h? i j. (K) l.") == ["A b c.", "D e f!", "G h? i j.", "(K) l."]
    assert sentences("Values of 3.5 mg were seen. Next one.") == ["Values of 3.5 mg were seen.", "Next one."]


def test_title_kind_takes_the_title_else_the_first_sentence():
    gen = TitleQueries()
    rng = random.Random(0)
    assert gen.generate(DOCS[0], rng).text == "Vitamin D deficiency in elderly patients"
    assert gen.generate(DOCS[1], rng).text == "Ribosomes translate messenger RNA into proteins"
    assert gen.generate(Document("x", "", ""), rng) is None


def test_span_kind_cuts_a_sentence_of_the_text_and_records_it():
    gen = SpanQueries(min_words=4, max_words=6)
    q = gen.generate(DOCS[0], doc_rng(1, "d1"))
    assert q.span is not None and q.span in DOCS[0].text
    assert 4 <= len(q.span.split()) <= 6
    # the first sentence is skipped while others qualify
    assert not DOCS[0].text.startswith(q.span)
    assert gen.generate(DOCS[3], random.Random(0)) is None  # no sentence long enough


def test_keyterm_kind_ranks_terms_by_bm25_weight_and_keeps_text_order():
    stats = CorpusTermStats(DOCS)
    gen = KeyTermQueries(stats, min_terms=3, max_terms=3)
    q = gen.generate(DOCS[2], random.Random(0))
    terms = q.text.split()
    weights = gen.weights(DOCS[2])
    assert len(terms) == 3
    assert sorted(weights.values(), reverse=True)[2] <= min(weights[t] for t in terms)
    assert "graphene" in terms  # three occurrences of a term found in no other document
    positions = [(DOCS[2].title + " " + DOCS[2].text).lower().find(t) for t in terms]
    assert positions == sorted(positions)
    assert not {"has", "from", "the"} & set(terms)  # stop words never count


def test_idf_is_higher_for_rarer_terms():
    stats = CorpusTermStats(DOCS)
    assert stats.df["in"] == 2 and stats.df["graphene"] == 1
    assert stats.idf("graphene") > stats.idf("in") > 0


def test_each_kind_is_cut_from_its_document_so_its_words_are_gone():
    """The label-free dev split: a held-out query matched against its document without the query."""
    gens = build_generators({"title": 1, "span": 1, "keyterms": 1}, DOCS)
    for doc in DOCS[:3]:
        for kind, gen in gens.items():
            query = gen.generate(doc, random.Random(1))
            cut, how = cut_from_document(doc, query.text)
            assert how == ("words" if kind == "keyterms" else "verbatim"), (kind, doc.doc_id)
            assert cut.doc_id == doc.doc_id
            left = (cut.title + " " + cut.text).lower()
            assert " ".join(query.text.lower().split()) not in left
            if kind == "keyterms":
                assert not set(query.text.split()) & {w.lower() for w in words(left)}
            # only the query is cut: the rest of the document stays, in order
            assert len(left.split()) >= len((doc.title + " " + doc.text).split()) - 2 * len(query.text.split())
    title, how = cut_from_document(DOCS[0], "Vitamin D deficiency in elderly patients")
    assert (title.title, title.text, how) == ("", DOCS[0].text, "verbatim")  # the title goes, the text stays
    span, _ = cut_from_document(DOCS[2], "Graphene has high   carrier mobility")  # spacing is not a word
    assert span.title == "Graphene transistors" and span.text.startswith(". Transistors built")
    keys, _ = cut_from_document(DOCS[0], "vitamin elderly")  # whole words, any case; "D" stays
    assert keys.title == "D deficiency in patients" and "Vitamin" not in keys.text
    assert cut_from_document(DOCS[0], "the of in") == (DOCS[0], "none")  # stop-words only: nothing to cut
    assert cut_from_document(DOCS[0], "zebra") == (DOCS[0], "none")


def test_mix_parsing_and_errors():
    assert parse_mix("title:1, span:2,keyterms") == {"title": 1.0, "span": 2.0, "keyterms": 1.0}
    assert parse_mix(["title:0.5"]) == {"title": 0.5}
    for bad in ("titel:1", "title:0", "title:x", "", "span:-1"):
        with pytest.raises(UserError):
            parse_mix(bad)


def test_generation_is_deterministic_by_seed_and_independent_of_corpus_order():
    mix = parse_mix("title:1,span:1,keyterms:1")
    gens = build_generators(mix, DOCS)
    a, _ = generate_queries(DOCS, mix, gens, 10, seed=7)
    b, _ = generate_queries(list(reversed(DOCS)), mix, gens, 10, seed=7)
    c, _ = generate_queries(DOCS, mix, gens, 10, seed=8)
    assert a == b
    assert [q.text for q in a] != [q.text for q in c] or [q.doc_id for q in a] != [q.doc_id for q in c]


def test_mix_weights_set_the_share_of_each_kind():
    names = ["".join(chr(97 + (i // 26 ** k) % 26) for k in range(3)) for i in range(600)]
    docs = [Document(f"d{i}", f"Title number {i} about topic {i % 7}",
                     f"First sentence of document {w}zyme here. Second sentence about {w}ase and more words. "
                     f"Third sentence with enough words for a span {w}ol.") for i, w in enumerate(names)]
    mix = parse_mix("title:3,keyterms:1")
    queries, counts = generate_queries(docs, mix, build_generators(mix, docs), 600, seed=1)
    assert counts["title"] + counts["keyterms"] + counts.get("none", 0) == 600
    assert 0.65 < counts["title"] / len(queries) < 0.85
    assert {q.kind for q in queries} == {"title", "keyterms"}
    assert len({q.doc_id for q in queries}) == len(queries)  # one query per document
    assert len({q.text.lower() for q in queries}) == len(queries)  # no duplicate query


def test_a_document_without_its_kind_falls_back_to_another():
    mix = parse_mix("span:1,title:0.1")
    docs = [Document("s", "", "Sleep loss impairs memory."), DOCS[3]]
    queries, counts = generate_queries(docs, mix, build_generators(mix, docs), 5, seed=0)
    # four words make no span (min 5) but do make a first sentence; "Short." gives nothing at all
    assert [(q.kind, q.text) for q in queries] == [("title", "Sleep loss impairs memory")]
    assert counts["none"] == 1


def test_seq2seq_kind_needs_a_model():
    with pytest.raises(UserError, match="seq2seq"):
        build_generators({"seq2seq": 1.0}, DOCS)


def test_seq2seq_kind_with_a_tiny_random_model(tmp_path):
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>"] + sorted({w.lower() for d in DOCS
                                                                                for w in (d.title + " " + d.text).split()}))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(vocab), d_model=16, d_ff=32, num_layers=1,
                                                num_heads=2, d_kv=8, decoder_start_token_id=0, pad_token_id=0,
                                                eos_token_id=1))
    model.save_pretrained(tmp_path / "t5")
    fast.save_pretrained(tmp_path / "t5")
    mix = parse_mix("seq2seq:1")
    gens = build_generators(mix, DOCS, seq2seq_model=str(tmp_path / "t5"))
    a, counts = generate_queries(DOCS[:3], mix, gens, 3, seed=3)
    b, _ = generate_queries(DOCS[:3], mix, gens, 3, seed=3)
    assert a == b and a
    assert all(q.kind == "seq2seq" and q.text for q in a)
    words_known = set(vocab)
    assert all(set(q.text.split()) <= words_known for q in a)

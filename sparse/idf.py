"""Command line of ``sparse.modeling.idf``: compute a BM25 IDF file for any corpus and tokenizer.

    python -m sparse.idf --tokenizer bert-base-uncased --corpus corpus.jsonl --output idf.json

``--corpus`` takes a BEIR ``corpus.jsonl`` (title + " " + text), a ``.tsv`` collection
(id<TAB>text, MS MARCO style) or a plain text file (one document per line), read by
``sparse.data.beir.iter_corpus_texts``. The formula and its conventions are documented in
``sparse.modeling.idf``.
"""

from __future__ import annotations

import argparse
import os
import sys

from sparse.data.beir import iter_corpus_texts
from sparse.errors import UserError
from sparse.modeling.idf import compute_idf, write_idf_file


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Compute a BM25 idf.json for a corpus and tokenizer")
    parser.add_argument("--tokenizer", required=True, help="tokenizer id or directory")
    parser.add_argument("--corpus", required=True, help="corpus.jsonl, collection .tsv or text file")
    parser.add_argument("--output", required=True, help="where to write idf.json")
    parser.add_argument("--batch_size", type=int, default=1000)
    parser.add_argument("--trust_remote_code", action="store_true")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, trust_remote_code=args.trust_remote_code)
        idf = compute_idf(iter_corpus_texts(args.corpus), tokenizer, batch_size=args.batch_size, progress=True)
    except (UserError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_idf_file(idf, args.output)
    print(f"wrote {len(idf)} token weights to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compute a BM25 IDF file for any corpus and tokenizer.

    python -m sparse.idf --tokenizer bert-base-uncased --corpus corpus.jsonl --output idf.json

``--corpus`` takes a BEIR ``corpus.jsonl`` (title + " " + text), a ``.tsv`` collection
(id<TAB>text, MS MARCO style) or a plain text file (one document per line). The formula and its
conventions are documented in ``sparse.modeling.idf``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterator

from sparse.data.beir import doc_text
from sparse.errors import UserError
from sparse.modeling.idf import compute_idf


def iter_corpus(path: str) -> Iterator[str]:
    if not os.path.isfile(path):
        raise UserError(f"corpus file not found: {path}")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
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
        idf = compute_idf(iter_corpus(args.corpus), tokenizer, batch_size=args.batch_size, progress=True)
    except (UserError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(idf, f, ensure_ascii=False)
    print(f"wrote {len(idf)} token weights to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
